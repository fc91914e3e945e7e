//! Seeder egress over time for the dashboard's mesh chart: every [`SAMPLE_EVERY`] the upload rates that
//! superseeders and distributors put in their latest fleet reports are summed and kept, the last
//! [`MAX_SAMPLES`] of them (an hour).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cinemesh_overlay::net::snapshot::Snapshot;
use cinemesh_overlay::net::Client;
use serde::{Deserialize, Serialize};

/// Time between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept; the oldest is dropped beyond.
pub const MAX_SAMPLES: usize = 720;
/// Reports older than this are left out of a sample (their rate is stale).
pub const FRESH_FOR_SECS: u64 = 180;

/// Seeder egress at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EgressSample {
    /// Unix seconds.
    pub at: u64,
    /// Sum of the superseeders' upload rates, bytes/s.
    pub superseeders: f64,
    /// Sum of the distributors' upload rates, bytes/s.
    pub distributors: f64,
}

impl EgressSample {
    /// The sample a snapshot gives.
    pub fn of(snapshot: &Snapshot) -> Self {
        let sum = |role: &str| {
            snapshot
                .reports
                .iter()
                .filter(|r| r.report.role == role && r.report_age_secs <= FRESH_FOR_SECS)
                .map(|r| r.report.up_rate)
                .sum()
        };
        Self { at: snapshot.now, superseeders: sum("superseeder"), distributors: sum("distributor") }
    }
}

/// The shared, bounded list of samples.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<VecDeque<EgressSample>>>);

impl History {
    /// A history sampled from `client` every [`SAMPLE_EVERY`] by a task that ends with the node.
    pub fn spawn(client: Client) -> Self {
        let history = Self::default();
        let h = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                match client.snapshot().await {
                    Ok(s) => h.push(EgressSample::of(&s)),
                    Err(_) => break, // the node stopped
                }
            }
        });
        history
    }

    /// Adds a sample (dropping the oldest beyond [`MAX_SAMPLES`]).
    pub fn push(&self, sample: EgressSample) {
        if let Ok(mut s) = self.0.lock() {
            if s.len() >= MAX_SAMPLES {
                s.pop_front();
            }
            s.push_back(sample);
        }
    }

    /// The samples, oldest first.
    pub fn list(&self) -> Vec<EgressSample> {
        self.0.lock().map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinemesh_overlay::net::fleet::Report;
    use cinemesh_overlay::net::snapshot::PeerReport;

    #[test]
    fn a_sample_sums_fresh_seeder_rates_by_role_and_the_history_is_bounded() {
        let r = |role: &str, rate: f64, age: u64| PeerReport {
            peer_id: format!("{role}{rate}"),
            report_age_secs: age,
            report: Report { up_rate: rate, ..Report::empty(role, 1) },
            reachability: None,
        };
        let snap = Snapshot {
            now: 50,
            films: vec![],
            reports: vec![
                r("superseeder", 3.0, 1),
                r("superseeder", 4.0, 2),
                r("superseeder", 100.0, FRESH_FOR_SECS + 1),
                r("distributor", 5.0, 1),
                r("cinema", 9.0, 1),
            ],
            log: vec![],
        };
        let s = EgressSample::of(&snap);
        assert_eq!((s.at, s.superseeders, s.distributors), (50, 7.0, 5.0));
        let h = History::default();
        for i in 0..MAX_SAMPLES + 3 {
            h.push(EgressSample { at: i as u64, ..s });
        }
        let list = h.list();
        assert_eq!(list.len(), MAX_SAMPLES);
        assert_eq!(list[0].at, 3, "the oldest are dropped");
    }
}
