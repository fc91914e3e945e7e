//! SVG plots drawn with `plotters` (SVG backend only): line and step charts with round ticks and a legend
//! (completion CDFs with the CDF bound beside them, superseeder egress against capacity, gossip delivery)
//! and the ISP-to-ISP byte matrix. Shared by the simulator's report, the lab's and `compare`.

use plotters::prelude::*;

use crate::error::Error;

const SIZE: (u32, u32) = (760, 460);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    /// A solid line in the `n`-th colour of the palette.
    Solid(usize),
    /// A dashed line in the `n`-th colour (bounds, capacities).
    Dashed(usize),
}

/// One named series of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Line style.
    pub stroke: Stroke,
}

impl Series {
    /// A solid series.
    pub fn solid(name: impl Into<String>, points: Vec<(f64, f64)>, colour: usize) -> Self {
        Series { name: name.into(), points, stroke: Stroke::Solid(colour) }
    }

    /// A dashed series.
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>, colour: usize) -> Self {
        Series { name: name.into(), points, stroke: Stroke::Dashed(colour) }
    }
}

/// A tick label without trailing zeros: `20`, `0.25`, `1.5`.
fn tick(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// A chart of several series; the axes start at 0 and end a little past the largest value.
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> Result<String, Error> {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let x1 = pts().map(|p| p.0).filter(|x| x.is_finite()).fold(0.0, f64::max);
    let y1 = pts().map(|p| p.1).filter(|y| y.is_finite()).fold(0.0, f64::max);
    let x1 = if x1 > 0.0 { x1 * 1.05 } else { 1.0 };
    let y1 = if y1 > 0.0 { y1 * 1.05 } else { 1.0 };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x1, 0f64..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for s in series {
            let (Stroke::Solid(c) | Stroke::Dashed(c)) = s.stroke;
            let colour = PALETTE[c % PALETTE.len()];
            let style = colour.stroke_width(2);
            let points = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite());
            let drawn = match s.stroke {
                Stroke::Solid(_) => chart.draw_series(LineSeries::new(points, style)),
                Stroke::Dashed(_) => chart.draw_series(DashedLineSeries::new(points, 6, 4, style)),
            };
            drawn
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// The empirical CDF of `values` as step points `(value, fraction <= value)` out of `total` (the curve
/// stops below 1 when some never got there).
pub fn cdf(values: &[f64], total: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = total.max(1) as f64;
    let mut out = Vec::with_capacity(v.len() * 2 + 1);
    out.push((0.0, 0.0));
    for (i, x) in v.iter().enumerate() {
        out.push((*x, i as f64 / n));
        out.push((*x, (i + 1) as f64 / n));
    }
    out
}

/// A step series through `(t, rate)` bins of width `bin`: `rates[i]` holds over `[i·bin, (i+1)·bin)`.
pub fn steps(rates: &[f64], bin: f64) -> Vec<(f64, f64)> {
    rates.iter().enumerate().flat_map(|(i, &r)| [(i as f64 * bin, r), ((i + 1) as f64 * bin, r)]).collect()
}

/// Seconds or hours, whichever reads better for times up to `max_secs`: (divisor, axis label).
pub fn time_unit(max_secs: f64, what: &str) -> (f64, String) {
    if max_secs > 3.0 * 3600.0 {
        (3600.0, format!("hours {what}"))
    } else {
        (1.0, format!("seconds {what}"))
    }
}

/// A heatmap of `matrix[row][col]` (bytes from ISP row to ISP column), cells annotated in GB, or in MB
/// when no cell reaches 1 GB; the unit is appended to `title`.
pub fn heatmap(title: &str, labels: &[String], matrix: &[Vec<u64>]) -> Result<String, Error> {
    let n = labels.len().max(1);
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let (scale, unit) = if max >= 1e9 { (1e9, "GB") } else { (1e6, "MB") };
    let title = format!("{title} ({unit})");
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(110)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&label)
            .y_label_formatter(&label)
            .x_desc("to ISP")
            .y_desc("from ISP (first row at the bottom)")
            .draw()
            .map_err(plot_err)?;
        for (i, row) in matrix.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let f = (v as f64 / max).sqrt();
                let shade = (255.0 - f * 200.0).round() as u8;
                let cell = [
                    (SegmentValue::Exact(j), SegmentValue::Exact(i)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(i + 1)),
                ];
                chart
                    .draw_series([Rectangle::new(cell, RGBColor(shade, shade, 255).filled())])
                    .map_err(plot_err)?;
                chart
                    .draw_series([Text::new(
                        format!("{:.2}", v as f64 / scale),
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(i)),
                        ("sans-serif", 13),
                    )])
                    .map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_reach_the_reached_fraction() {
        let c = cdf(&[3.0, 1.0, f64::INFINITY], 4);
        assert_eq!(c, vec![(0.0, 0.0), (1.0, 0.0), (1.0, 0.25), (3.0, 0.25), (3.0, 0.5)]);
        assert_eq!(steps(&[2.0, 4.0], 10.0), vec![(0.0, 2.0), (10.0, 2.0), (10.0, 4.0), (20.0, 4.0)]);
        assert_eq!(time_unit(100.0, "after publish").0, 1.0);
        assert_eq!(time_unit(36_000.0, "x").1, "hours x");
    }

    #[test]
    fn charts_are_svg_with_round_ticks_and_a_legend() {
        let s = lines(
            "Completion",
            "seconds",
            "fraction",
            &[
                Series::solid("lab", vec![(0.0, 0.0), (87.3, 1.0)], 0),
                Series::dashed("CDF bound", vec![(0.0, 0.0), (66.1, 1.0)], 1),
            ],
        )
        .unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"), "{s}");
        assert!(s.contains("\nlab\n") && s.contains("\nCDF bound\n"), "legend: {s}");
        // Round tick labels (plotters picks 0, 10, 20, ... here), never 87.3 * 1.05 / 4.
        assert!(s.contains("\n20\n") && s.contains("\n0.2\n"), "{s}");
        assert_eq!((tick(&20.0), tick(&0.25), tick(&-0.0)), ("20".into(), "0.25".into(), "0".into()));
        let h = heatmap("m", &["a".into(), "b".into()], &[vec![1, 2], vec![3, 4]]).unwrap();
        assert!(h.matches("<rect").count() >= 4 && h.contains("\na\n") && h.contains("m (MB)"), "{h}");
    }
}
