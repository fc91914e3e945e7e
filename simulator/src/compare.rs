//! `cinemesh-sim compare SIM_OUT LAB_OUT`: the simulator's prediction beside the lab's measurement, from
//! the two output directories (`report.json`, `nodes.csv`): headline figures with their relative error,
//! each cinema's completion time (counted from when it came online) with its error and the p50/p90/max of
//! the per-node errors, and one chart with both completion CDFs and the CDF bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::Error;
use crate::plot::{self, Series};
use crate::report::Quantiles;

/// One run's outputs.
#[derive(Debug, Clone)]
pub struct Side {
    /// `report.json`.
    pub report: serde_json::Value,
    /// `nodes.csv` rows, column -> value.
    pub rows: Vec<BTreeMap<String, String>>,
}

/// Parses CSV text with a header line (no quoting: the project's CSVs have none).
pub fn parse_csv(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_owned)).collect())
        .collect()
}

impl Side {
    /// Reads `dir/report.json` and `dir/nodes.csv`.
    pub fn load(dir: &Path) -> Result<Side, Error> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map_err(|source| Error::Read { path: p.display().to_string(), source })
        };
        let report = serde_json::from_str(&read("report.json")?).map_err(|e| Error::Parse {
            origin: dir.join("report.json").display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Side { report, rows: parse_csv(&read("nodes.csv")?) })
    }

    fn num(&self, path: &[&str]) -> Option<f64> {
        let mut v = &self.report;
        for p in path {
            v = match p.parse::<usize>() {
                Ok(i) => v.get(i)?,
                Err(_) => v.get(p)?,
            };
        }
        v.as_f64()
    }

    /// Each cinema's film-0 completion time counted from when it came online, by name (`None`: never).
    pub fn times(&self) -> BTreeMap<String, (String, Option<f64>)> {
        self.cinemas().into_iter().map(|(n, c, t)| (n, (c, t))).collect()
    }

    /// A numeric `nodes.csv` column by node name (every node, superseeders too); rows without it are left out.
    pub fn by_name(&self, col: &str) -> BTreeMap<String, f64> {
        self.rows
            .iter()
            .filter_map(|r| Some((r.get("name")?.clone(), r.get(col)?.parse::<f64>().ok()?)))
            .collect()
    }

    /// A numeric `nodes.csv` column summed over every node; `None` when no row has it (older outputs).
    pub fn total(&self, col: &str) -> Option<f64> {
        let v = self.by_name(col);
        (!v.is_empty()).then(|| v.values().sum())
    }

    /// As [`times`](Self::times), in `nodes.csv` order: (name, class, time).
    pub fn cinemas(&self) -> Vec<(String, String, Option<f64>)> {
        self.rows
            .iter()
            .filter(|r| r.get("seeder").map(String::as_str) != Some("true"))
            .map(|r| {
                let f = |k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
                let t = f("complete_s").map(|c| c - f("online_s").unwrap_or(0.0));
                (r.get("name").cloned().unwrap_or_default(), r.get("class").cloned().unwrap_or_default(), t)
            })
            .collect()
    }
}

/// `(sim - lab) / lab`.
pub fn rel_err(sim: f64, lab: f64) -> Option<f64> {
    (lab != 0.0 && sim.is_finite() && lab.is_finite()).then(|| (sim - lab) / lab)
}

/// The headline figures compared: (name, JSON path).
pub const FIGURES: [(&str, &[&str]); 12] = [
    ("T_min (s)", &["t_min"]),
    ("T_measured (s)", &["t_measured"]),
    ("efficiency", &["efficiency"]),
    ("completion p50 (s)", &["films", "0", "completion", "p50"]),
    ("completion p90 (s)", &["films", "0", "completion", "p90"]),
    ("completion max (s)", &["films", "0", "completion", "max"]),
    ("point slowdown p50", &["cdf", "slowdown", "p50"]),
    ("point slowdown p90", &["cdf", "slowdown", "p90"]),
    ("point slowdown max", &["cdf", "slowdown", "max"]),
    ("p90 against B with borders", &["cdf", "bordered", "p90"]),
    ("superseeder utilisation", &["seeder_utilisation"]),
    ("transit ratio", &["transit_ratio"]),
];

/// The comparison as text.
pub fn render(sim: &Side, lab: &Side) -> String {
    let mut s = String::new();
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    let opt0 = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    let pct = |e: Option<f64>| e.map(|e| format!("{:+.1}%", e * 100.0)).unwrap_or_else(|| "-".into());
    let _ = writeln!(s, "{:<26} {:>12} {:>12} {:>9}", "figure", "simulator", "lab", "sim err");
    for (name, path) in FIGURES {
        let (a, b) = (sim.num(path), lab.num(path));
        let e = a.zip(b).and_then(|(a, b)| rel_err(a, b));
        let _ = writeln!(s, "{name:<26} {:>12} {:>12} {:>9}", opt(a), opt(b), pct(e));
    }
    for (name, col) in [("busy answers given", "busy_answers"), ("busy answers received", "busy_received")] {
        let (a, b) = (sim.total(col), lab.total(col));
        let e = a.zip(b).and_then(|(a, b)| rel_err(a, b));
        let _ = writeln!(s, "{name:<26} {:>12} {:>12} {:>9}", opt0(a), opt0(b), pct(e));
    }
    let (st, lt) = (sim.times(), lab.cinemas());
    let (sb, lb) = (sim.by_name("busy_received"), lab.by_name("busy_received"));
    let _ = writeln!(
        s,
        "\n{:<14} {:<10} {:>10} {:>10} {:>9} {:>12} {:>12}",
        "cinema", "class", "sim (s)", "lab (s)", "sim err", "busy sim", "busy lab"
    );
    let mut errs = Vec::new();
    // Per access class: the sum of both runs' times over the cinemas complete in both, and their count.
    let mut classes: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    for (name, class, l) in &lt {
        let si = st.get(name).and_then(|x| x.1);
        let e = si.zip(*l).and_then(|(a, b)| rel_err(a, b));
        errs.extend(e.map(f64::abs));
        if let Some((a, b)) = si.zip(*l) {
            let c = classes.entry(class.as_str()).or_default();
            (c.0, c.1, c.2) = (c.0 + a, c.1 + b, c.2 + 1);
        }
        let (bs, bl) = (sb.get(name).copied(), lb.get(name).copied());
        let _ = writeln!(
            s,
            "{name:<14} {class:<10} {:>10} {:>10} {:>9} {:>12} {:>12}",
            opt(si),
            opt(*l),
            pct(e),
            opt0(bs),
            opt0(bl)
        );
    }
    let q = Quantiles::of(&errs);
    let _ = writeln!(
        s,
        "per-node |error|: p50 {:.1}% p90 {:.1}% max {:.1}% over {} cinemas",
        q.p50 * 100.0,
        q.p90 * 100.0,
        q.max * 100.0,
        q.n
    );
    let means: Vec<String> = classes
        .iter()
        .map(|(class, &(a, b, n))| {
            let (a, b) = (a / n as f64, b / n as f64);
            format!("{class} ({n}) {a:.1} / {b:.1} ({})", pct(rel_err(a, b)))
        })
        .collect();
    let _ = writeln!(s, "class means, simulator / lab (s): {}", means.join(", "));
    s
}

/// Both completion CDFs (counted from coming online) and the CDF bound on one chart.
pub fn chart(sim: &Side, lab: &Side) -> Result<String, Error> {
    let t = |side: &Side| -> Vec<f64> { side.times().values().filter_map(|x| x.1).collect() };
    let (st, lt) = (t(sim), t(lab));
    let bound: Vec<f64> = lab.report["cdf"]["bound"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let max = st.iter().chain(&lt).chain(&bound).copied().fold(0.0, f64::max);
    let unit = plot::time_unit(max, "after coming online");
    let scale = |v: &[f64]| v.iter().map(|x| x / unit.0).collect::<Vec<_>>();
    let n = lab.times().len();
    let mut b = vec![(0.0, 0.0)];
    for (k, &x) in bound.iter().enumerate() {
        b.push((x / unit.0, k as f64 / bound.len() as f64));
        b.push((x / unit.0, (k + 1) as f64 / bound.len() as f64));
    }
    plot::lines(
        "Completion time CDF: simulator vs lab",
        &unit.1,
        "fraction of targets",
        &[
            Series::solid("simulator", plot::cdf(&scale(&st), sim.times().len()), 0),
            Series::solid("lab", plot::cdf(&scale(&lt), n), 2),
            Series::dashed("CDF bound B(k)", b, 1),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(t_measured: f64, rows: &str) -> Side {
        Side {
            report: serde_json::json!({"t_measured": t_measured, "films": [{"completion": {"p50": 10.0}}],
                "cdf": {"bound": [5.0, 10.0]}}),
            rows: parse_csv(&format!("name,class,seeder,online_s,complete_s\n{rows}")),
        }
    }

    #[test]
    fn errors_are_relative_to_the_lab() {
        assert_eq!(rel_err(110.0, 100.0), Some(0.1));
        assert_eq!(rel_err(1.0, 0.0), None);
        let sim = side(90.0, "c0,fibre,false,0.000,45.000\nc1,fibre,false,10.000,70.000\ns,seeder,true,0,\n");
        let lab = side(100.0, "c0,fibre,false,0.000,50.000\nc1,fibre,false,10.000,\ns,seeder,true,0,\n");
        assert_eq!(sim.times()["c1"].1, Some(60.0), "counted from online_s");
        assert_eq!(lab.times()["c1"].1, None);
        let text = render(&sim, &lab);
        assert!(text.contains("T_measured (s)") && text.contains("-10.0%"), "{text}");
        // c0: 45 vs 50 = -10%; c1 never completed in the lab: no error counted.
        assert!(text.contains("per-node |error|: p50 10.0% p90 10.0% max 10.0% over 1 cinemas"), "{text}");
        // The class mean counts the cinemas complete in both runs only.
        assert!(text.contains("class means, simulator / lab (s): fibre (1) 45.0 / 50.0 (-10.0%)"), "{text}");
        let svg = chart(&sim, &lab).unwrap();
        assert!(svg.contains("\nsimulator\n") && svg.contains("\nlab\n"), "{svg}");
    }
}
