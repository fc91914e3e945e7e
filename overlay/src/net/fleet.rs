//! The fleet view: every node gossips a small, bounded progress summary on the `cinemesh/fleet/1` topic
//! every `gossip.fleet_interval`; any node (in practice the distributor's) keeps the latest report of each
//! peer (bounded) and answers, per content, which nodes have it, which are behind, and which will miss
//! the deadline at their current rate.
//!
//! Reports are authenticated by gossipsub's message signature (the source peer id), not by the
//! distributor key: they describe the sender, and a node can only lie about itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;
use crate::ContentId;

/// The gossipsub topic of progress reports.
pub const FLEET_TOPIC: &str = "cinemesh/fleet/1";
/// Most contents in one report.
pub const MAX_REPORT_CONTENTS: usize = 64;
/// Largest encoded report.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// Most peers whose reports are kept; the stalest is dropped beyond.
pub const MAX_REPORTS: usize = 10_000;

/// One content in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentProgress {
    /// The content.
    pub content: ContentId,
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Download rate for it since the previous report, bytes/s.
    pub rate: f64,
}

/// A node's progress summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Role.
    pub role: String,
    /// Name.
    pub name: Option<String>,
    /// ISP in use.
    pub isp: Option<String>,
    /// When it was made, unix seconds.
    pub issued_at: u64,
    /// Progress per content, at most [`MAX_REPORT_CONTENTS`].
    pub contents: Vec<ContentProgress>,
}

impl Report {
    /// Encodes with bincode, bounded.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    /// Decodes and checks the bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        use bincode::Options;
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(format!("fleet report of {} bytes exceeds {MAX_REPORT_BYTES}", bytes.len()));
        }
        let r: Report = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(MAX_REPORT_BYTES as u64)
            .deserialize(bytes)
            .map_err(|e| format!("malformed fleet report: {e}"))?;
        if r.contents.len() > MAX_REPORT_CONTENTS {
            return Err("fleet report lists too many contents".into());
        }
        if r.contents.iter().any(|c| c.have > c.total || !c.rate.is_finite() || c.rate < 0.0) {
            return Err("fleet report with impossible progress".into());
        }
        Ok(r)
    }
}

/// Where one node stands on one content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    /// Peer id.
    pub peer_id: String,
    /// Name.
    pub name: Option<String>,
    /// ISP.
    pub isp: Option<String>,
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Current download rate, bytes/s.
    pub rate: f64,
    /// Seconds to completion at the current rate (`None`: complete, or no progress).
    pub eta_secs: Option<f64>,
    /// `complete`, `on-track`, `behind` (well below the fleet's median progress, or stalled) or
    /// `will-miss-deadline`.
    pub state: String,
    /// Age of its report, seconds.
    pub report_age_secs: u64,
}

/// One content across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilmFleet {
    /// Content id, hex.
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Deadline, unix seconds.
    pub deadline: Option<u64>,
    /// Nodes holding it complete.
    pub complete: usize,
    /// Nodes behind.
    pub behind: usize,
    /// Nodes that will miss the deadline at their current rate.
    pub will_miss_deadline: usize,
    /// Every node that reported it.
    pub nodes: Vec<NodeProgress>,
}

/// The latest report of each peer.
#[derive(Debug, Default)]
pub struct Fleet {
    reports: BTreeMap<String, Report>,
}

impl Fleet {
    /// Records a peer's report (the newest wins; the stalest peer is dropped beyond [`MAX_REPORTS`]).
    pub fn record(&mut self, peer: String, report: Report) {
        if self.reports.get(&peer).is_some_and(|old| old.issued_at > report.issued_at) {
            return;
        }
        if !self.reports.contains_key(&peer) && self.reports.len() >= MAX_REPORTS {
            if let Some(stalest) =
                self.reports.iter().min_by_key(|(_, r)| r.issued_at).map(|(p, _)| p.clone())
            {
                self.reports.remove(&stalest);
            }
        }
        self.reports.insert(peer, report);
    }

    /// Forgets a peer (e.g. revoked).
    pub fn forget(&mut self, peer: &str) {
        self.reports.remove(peer);
    }

    /// Number of peers with a report.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// True when no report is held.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// The fleet view of every published content, at `now` (unix seconds). Distributor nodes, the
    /// sources, are left out.
    pub fn view(&self, catalogue: &Catalogue, now: u64) -> Vec<FilmFleet> {
        catalogue
            .films()
            .map(|film| {
                let p = &film.publish;
                let chunk = p.chunk_size as f64;
                let mut nodes: Vec<NodeProgress> = self
                    .reports
                    .iter()
                    .filter(|(_, r)| r.role != "distributor")
                    .filter_map(|(peer, r)| {
                        let c = r.contents.iter().find(|c| c.content == p.content)?;
                        let remaining = (c.total - c.have) as f64 * chunk;
                        let eta_secs = (c.have < c.total && c.rate > 0.0).then(|| remaining / c.rate);
                        Some(NodeProgress {
                            peer_id: peer.clone(),
                            name: r.name.clone(),
                            isp: r.isp.clone(),
                            have: c.have,
                            total: c.total,
                            rate: c.rate,
                            eta_secs,
                            state: String::new(),
                            report_age_secs: now.saturating_sub(r.issued_at),
                        })
                    })
                    .collect();
                let mut fractions: Vec<f64> =
                    nodes.iter().map(|n| n.have as f64 / n.total.max(1) as f64).collect();
                fractions.sort_by(f64::total_cmp);
                let median = fractions.get(fractions.len() / 2).copied().unwrap_or(0.0);
                for n in &mut nodes {
                    let fraction = n.have as f64 / n.total.max(1) as f64;
                    let left = p.deadline.map(|d| d.saturating_sub(now) as f64);
                    n.state = if n.have == n.total {
                        "complete"
                    } else if left.is_some_and(|left| n.eta_secs.is_none_or(|eta| eta > left)) {
                        "will-miss-deadline"
                    } else if n.rate == 0.0 || fraction + 0.10 < median {
                        "behind"
                    } else {
                        "on-track"
                    }
                    .to_owned();
                }
                let count = |s: &str| nodes.iter().filter(|n| n.state == s).count();
                FilmFleet {
                    content_id: p.content.to_hex(),
                    title: p.title.clone(),
                    deadline: p.deadline,
                    complete: count("complete"),
                    behind: count("behind"),
                    will_miss_deadline: count("will-miss-deadline"),
                    nodes,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Body, Entry, Keypair, Publish, Targets};

    fn catalogue_with(content: ContentId, deadline: Option<u64>) -> Catalogue {
        let key = Keypair::from_secret([7; 32]);
        let mut c = Catalogue::new([key.public()]);
        let body = Body::Publish(Publish {
            content,
            title: "f".into(),
            size: 100 << 20,
            chunk_size: 1 << 20,
            chunks: 100,
            targets: Targets::All,
            deadline,
        });
        c.apply(Entry { key: key.public(), seq: 1, issued_at: 1, body }.sign(&key).unwrap(), 1).unwrap();
        c
    }

    fn report(at: u64, content: ContentId, have: u32, rate: f64) -> Report {
        Report {
            role: "cinema".into(),
            name: None,
            isp: None,
            issued_at: at,
            contents: vec![ContentProgress { content, have, total: 100, rate }],
        }
    }

    #[test]
    fn complete_on_track_behind_and_late_nodes() {
        let id = ContentId([1; 32]);
        let mut fleet = Fleet::default();
        fleet.record("a".into(), report(1000, id, 100, 0.0));
        fleet.record("b".into(), report(1000, id, 60, 1e6));
        fleet.record("c".into(), report(1000, id, 55, 1e6));
        fleet.record("d".into(), report(1000, id, 10, 1e6)); // far below the median
        fleet.record("e".into(), report(1000, id, 58, 0.0)); // stalled
        let view = fleet.view(&catalogue_with(id, None), 1000);
        let state = |p: &str| view[0].nodes.iter().find(|n| n.peer_id == p).unwrap().state.clone();
        assert_eq!(state("a"), "complete");
        assert_eq!(state("b"), "on-track");
        assert_eq!(state("c"), "on-track");
        assert_eq!(state("d"), "behind");
        assert_eq!(state("e"), "behind");
        assert_eq!((view[0].complete, view[0].behind), (1, 2));

        // With a deadline 20 s away, 40 MiB left at 1 MB/s (42 s) will miss it; 10 MiB at 1 MB/s will not.
        let mut fleet = Fleet::default();
        fleet.record("slow".into(), report(1000, id, 60, 1e6));
        fleet.record("fast".into(), report(1000, id, 90, 1e6));
        let view = fleet.view(&catalogue_with(id, Some(1020)), 1000);
        let state = |p: &str| view[0].nodes.iter().find(|n| n.peer_id == p).unwrap().state.clone();
        assert_eq!(state("slow"), "will-miss-deadline");
        assert_eq!(state("fast"), "on-track");
        assert_eq!(view[0].will_miss_deadline, 1);
    }

    #[test]
    fn reports_are_bounded_and_the_newest_wins() {
        let id = ContentId([2; 32]);
        let mut fleet = Fleet::default();
        fleet.record("a".into(), report(10, id, 5, 0.0));
        fleet.record("a".into(), report(5, id, 1, 0.0));
        assert_eq!(fleet.view(&catalogue_with(id, None), 10)[0].nodes[0].have, 5);
        let bad = Report {
            contents: vec![ContentProgress { content: id, have: 9, total: 1, rate: 0.0 }],
            ..report(1, id, 0, 0.0)
        };
        assert!(Report::decode(&bad.encode()).is_err());
        assert!(Report::decode(&[0xff; 10]).is_err());
        assert_eq!(Report::decode(&report(1, id, 3, 2.0).encode()).unwrap(), report(1, id, 3, 2.0));
    }
}
