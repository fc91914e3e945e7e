//! Hand-written SVG plots: line charts (CDFs, time series) and a heatmap. Numbers are printed with fixed
//! precision so the same data gives the same bytes.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        esc(title)
    );
}

fn nice(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A step/line chart of several series of `(x, y)` points.
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), f * y1);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{TOP}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            sx(xv),
            sx(xv),
            TOP + ph,
            sx(xv),
            TOP + ph + 16.0,
            nice(xv)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            sy(yv),
            LEFT + pw,
            sy(yv),
            LEFT - 6.0,
            sy(yv) + 4.0,
            nice(yv)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(ylabel)
    );
    for (k, (name, p)) in series.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        let mut d = String::new();
        for (i, &(x, y)) in p.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, sx(x), sy(y));
        }
        let _ = writeln!(out, r#"<path d="{}" fill="none" stroke="{c}" stroke-width="1.5"/>"#, d.trim_end());
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#,
            LEFT + 10.0,
            TOP + 16.0 + 14.0 * k as f64,
            esc(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The empirical CDF of `values` as step points `(value, fraction <= value)`, optionally scaled so the
/// last step reaches `reached` (< 1 when some never got there).
pub fn cdf(values: &[f64], total: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = total.max(1) as f64;
    let mut out = Vec::with_capacity(v.len() * 2 + 1);
    if let Some(&first) = v.first() {
        out.push((first, 0.0));
    }
    for (i, x) in v.iter().enumerate() {
        out.push((*x, i as f64 / n));
        out.push((*x, (i + 1) as f64 / n));
    }
    out
}

/// A heatmap of `matrix[row][col]` with row and column labels; cells are annotated with `fmt(value)`.
pub fn heatmap(title: &str, labels: &[String], matrix: &[Vec<u64>], fmt: impl Fn(u64) -> String) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let n = labels.len().max(1);
    let left = 110.0;
    let top = 60.0;
    let cell = ((W - left - 20.0).min(H - top - 40.0) / n as f64).floor();
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    for (j, l) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + (j as f64 + 0.5) * cell,
            top - 6.0,
            esc(l)
        );
    }
    for (i, row) in matrix.iter().enumerate() {
        let y = top + i as f64 * cell;
        let label = labels.get(i).map(String::as_str).unwrap_or("?");
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + cell / 2.0 + 4.0,
            esc(label)
        );
        for (j, &v) in row.iter().enumerate() {
            let f = (v as f64 / max).sqrt();
            let shade = (255.0 - f * 200.0).round() as u8;
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({shade},{shade},255)" stroke="white"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                left + j as f64 * cell,
                y,
                left + (j as f64 + 0.5) * cell,
                y + cell / 2.0 + 4.0,
                esc(&fmt(v))
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">rows: from ISP, columns: to ISP</text>"#,
        W / 2.0,
        H - 12.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_reach_the_reached_fraction() {
        let c = cdf(&[3.0, 1.0], 4);
        assert_eq!(c, vec![(1.0, 0.0), (1.0, 0.0), (1.0, 0.25), (3.0, 0.25), (3.0, 0.5)]);
    }

    #[test]
    fn documents_are_well_formed_enough() {
        let s = lines("t<1>", "x", "y", &[("a".into(), vec![(0.0, 0.0), (1.0, 1.0)])]);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n") && s.contains("t&lt;1&gt;"));
        let h = heatmap("m", &["a".into(), "b".into()], &[vec![1, 2], vec![3, 4]], |v| v.to_string());
        assert_eq!(h.matches("<rect").count(), 5);
    }
}
