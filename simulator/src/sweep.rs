//! Sweeps: the cartesian product of `--vary key=v1,v2,...` values, each run with several seeds in
//! parallel, ranked by a stated objective, the best written as a node config.
//!
//! Objective: first every target complete in every run; then the lowest mean `T_measured` (film 0), where
//! means within 1% of each other count as equal; then the lowest mean transit ratio.

use std::fmt::Write as _;

use cinemesh_core::config::{GossipConfig, PolicyConfig, TransferConfig};
use serde::Serialize;

use crate::error::Error;
use crate::scenario::Scenario;

/// One `--vary key=v1,v2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vary {
    /// Dotted key.
    pub key: String,
    /// Values, as they would be given to `--set`.
    pub values: Vec<String>,
}

impl std::str::FromStr for Vary {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let err = |reason: &str| Error::Set { set: s.to_owned(), reason: reason.to_owned() };
        let (key, vals) = s.split_once('=').ok_or_else(|| err("expected key=v1,v2,..."))?;
        let values: Vec<String> =
            vals.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        if key.trim().is_empty() || values.is_empty() {
            return Err(err("expected key=v1,v2,..."));
        }
        Ok(Vary { key: key.trim().to_owned(), values })
    }
}

/// Largest number of configurations in one sweep.
pub const MAX_CONFIGS: usize = 4096;

/// The configurations of a sweep: each is a list of `key=value` overrides.
pub fn product(varies: &[Vary]) -> Result<Vec<Vec<String>>, Error> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for v in varies {
        out = out
            .into_iter()
            .flat_map(|base| {
                v.values.iter().map(move |val| {
                    let mut c = base.clone();
                    c.push(format!("{}={val}", v.key));
                    c
                })
            })
            .collect();
        if out.len() > MAX_CONFIGS {
            return Err(Error::Set {
                set: format!("--vary {}", v.key),
                reason: format!("more than {MAX_CONFIGS} configurations; vary fewer values"),
            });
        }
    }
    Ok(out)
}

/// One configuration's results over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    /// The overrides.
    pub sets: Vec<String>,
    /// Runs.
    pub runs: u32,
    /// Runs where some target did not complete.
    pub incomplete_runs: u32,
    /// Mean T_measured of film 0 over the complete runs, seconds.
    pub mean_t_measured: f64,
    /// Mean efficiency over the complete runs.
    pub mean_efficiency: f64,
    /// Mean transit ratio.
    pub mean_transit_ratio: f64,
}

/// One run's figures: (T_measured, efficiency, transit ratio).
pub type RunFigures = (Option<f64>, Option<f64>, f64);

/// Aggregates per-run figures into a [`Ranked`].
pub fn aggregate(sets: Vec<String>, runs: &[RunFigures]) -> Ranked {
    let complete: Vec<_> = runs.iter().filter(|r| r.0.is_some()).collect();
    let mean =
        |v: Vec<f64>| if v.is_empty() { f64::INFINITY } else { v.iter().sum::<f64>() / v.len() as f64 };
    Ranked {
        sets,
        runs: runs.len() as u32,
        incomplete_runs: (runs.len() - complete.len()) as u32,
        mean_t_measured: mean(complete.iter().filter_map(|r| r.0).collect()),
        mean_efficiency: mean(complete.iter().filter_map(|r| r.1).collect()),
        mean_transit_ratio: mean(runs.iter().map(|r| r.2).collect()),
    }
}

/// Sorts best first by the objective in the module doc.
pub fn rank(mut r: Vec<Ranked>) -> Vec<Ranked> {
    let best =
        r.iter().filter(|x| x.incomplete_runs == 0).map(|x| x.mean_t_measured).fold(f64::INFINITY, f64::min);
    let bucket = |t: f64| {
        if best.is_finite() && best > 0.0 && t.is_finite() {
            (t / best * 100.0).floor() as u64
        } else {
            u64::MAX
        }
    };
    r.sort_by(|a, b| {
        (a.incomplete_runs, bucket(a.mean_t_measured))
            .cmp(&(b.incomplete_runs, bucket(b.mean_t_measured)))
            .then(a.mean_transit_ratio.total_cmp(&b.mean_transit_ratio))
            .then(a.mean_t_measured.total_cmp(&b.mean_t_measured))
    });
    r
}

/// The ranking as CSV.
pub fn ranking_csv(r: &[Ranked]) -> String {
    let mut s = String::from(
        "rank,config,runs,incomplete_runs,mean_t_measured_s,mean_efficiency,mean_transit_ratio\n",
    );
    for (i, x) in r.iter().enumerate() {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.1},{:.4},{:.3}",
            i + 1,
            x.sets.join(" "),
            x.runs,
            x.incomplete_runs,
            x.mean_t_measured,
            x.mean_efficiency,
            x.mean_transit_ratio
        );
    }
    s
}

/// The node config sections of a scenario, as `cinemesh run --config` accepts them.
#[derive(Debug, Serialize)]
struct NodeSections<'a> {
    gossip: &'a GossipConfig,
    transfer: &'a TransferConfig,
    policy: &'a PolicyConfig,
}

/// A node config file holding the scenario's `[gossip]`, `[transfer]` and `[policy]` sections.
pub fn node_config(sc: &Scenario, comment: &str) -> Result<String, Error> {
    let body =
        toml::to_string(&NodeSections { gossip: &sc.gossip, transfer: &sc.transfer, policy: &sc.policy })
            .map_err(|e| Error::Set { set: "--emit-config".to_owned(), reason: e.to_string() })?;
    let mut s = String::new();
    for line in comment.lines() {
        let _ = writeln!(s, "# {line}");
    }
    s.push_str(&body);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_and_rank() {
        let v: Vec<Vary> = ["a=1,2".parse().unwrap(), "b=x,y,z".parse().unwrap()].to_vec();
        let p = product(&v).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], vec!["a=1", "b=x"]);
        assert!("a".parse::<Vary>().is_err());
        let r = rank(vec![
            aggregate(vec!["slow".into()], &[(Some(200.0), Some(0.5), 1.0)]),
            aggregate(vec!["fast-leaky".into()], &[(Some(100.0), Some(0.9), 3.0)]),
            aggregate(vec!["fast-local".into()], &[(Some(100.5), Some(0.9), 1.2)]),
            aggregate(vec!["broken".into()], &[(None, None, 1.0)]),
        ]);
        let order: Vec<&str> = r.iter().map(|x| x.sets[0].as_str()).collect();
        assert_eq!(order, ["fast-local", "fast-leaky", "slow", "broken"]);
    }

    #[test]
    fn node_config_round_trips_into_the_sections() {
        let sc =
            Scenario::parse(crate::testing::MINI, "mini", &["transfer.upload_slots=12".to_owned()]).unwrap();
        let text = node_config(&sc, "best of a sweep").unwrap();
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Back {
            gossip: GossipConfig,
            transfer: TransferConfig,
            policy: PolicyConfig,
        }
        let back: Back = toml::from_str(&text).unwrap();
        assert_eq!(back.transfer.upload_slots, 12);
        assert_eq!(back.gossip, sc.gossip);
        assert!(text.starts_with("# best of a sweep\n"));
    }
}
