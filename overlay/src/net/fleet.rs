//! The fleet view: every node gossips a small, bounded progress summary on the `cinemesh/fleet/2` topic
//! every `gossip.fleet_interval` and soon after each change of state ([`pacer`](super::pacer) decides
//! when); any node (in practice the distributor's) keeps the latest report of each peer (bounded) and
//! answers, per content, which nodes have it, which are behind, which will miss the deadline at their
//! current rate and which refused it.
//!
//! Reports are authenticated by gossipsub's message signature (the source peer id), not by the
//! distributor key: they describe the sender, and a node can only lie about itself.
//!
//! What is kept is bounded by admission and by time ([`Fleet::accept`]): a revoked signer, and on a
//! private mesh with an admission list any signer not admitted, is ignored; reports of signers not
//! admitted (an open mesh, or a private one before its first Admit) are kept at most
//! [`MAX_UNADMITTED_REPORTS`] and never push out an admitted node's report; a report issued more than
//! [`MAX_CLOCK_SKEW`] after the receiver's clock is refused (it would never be the stalest, so never
//! evicted), and one older than [`MAX_REPORT_AGE`] is refused, left out of the view and evicted first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, Targets};
use crate::core::Reachability;
use crate::ContentId;

pub use crate::catalogue::state::MAX_CLOCK_SKEW;

/// The gossipsub topic of progress reports.
pub const FLEET_TOPIC: &str = "cinemesh/fleet/2";
/// Most contents in one report.
pub const MAX_REPORT_CONTENTS: usize = 64;
/// Largest encoded report.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// Most peers whose reports are kept; the stalest is dropped beyond.
pub const MAX_REPORTS: usize = 10_000;
/// Most sender ISPs in one report's traffic list; bytes from further ISPs are counted under
/// [`OTHER_ISP`].
pub const MAX_REPORT_ISPS: usize = 32;
/// Longest text (role, name, ISP, hook result) in a report, bytes.
pub const MAX_REPORT_TEXT: usize = 128;
/// The traffic entry that collects ISPs beyond [`MAX_REPORT_ISPS`].
pub const OTHER_ISP: &str = "(other)";

/// Where a content stands on the reporting node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentState {
    /// Targeted, manifest not yet obtained or being installed.
    Waiting,
    /// Chunks being fetched.
    Fetching,
    /// Every chunk held.
    Complete,
    /// Could not be stored (no disk space, over `storage.capacity`); retried later.
    Refused,
}

/// Most reports kept from signers that are not admitted (see the module doc); the stalest of them is
/// dropped beyond.
pub const MAX_UNADMITTED_REPORTS: usize = 1_000;
/// Reports older than this (seconds) are refused, left out of the view, and evicted first: a week, so
/// a cinema offline over a weekend still shows with its last report's age.
pub const MAX_REPORT_AGE: u64 = 7 * 86_400;

/// Why a gossiped report was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes are not a valid report: the sender is to blame (gossipsub `Reject`).
    #[error("{0}")]
    Malformed(String),
    /// The message carries no source peer id (unsigned).
    #[error("fleet report without a signed source")]
    Unsigned,
    /// The signer is revoked, or not admitted to this private mesh.
    #[error("fleet report from {peer}, which is revoked or not admitted")]
    NotAdmitted {
        /// The signer.
        peer: String,
    },
    /// Issued too far after the receiver's clock.
    #[error("fleet report issued at {issued_at}, more than {MAX_CLOCK_SKEW} s after this node's clock ({now}): check the clocks (NTP)")]
    FromTheFuture {
        /// Its issued_at.
        issued_at: u64,
        /// The receiver's clock.
        now: u64,
    },
    /// Older than [`MAX_REPORT_AGE`], or than the report already held for that peer.
    #[error("fleet report issued at {issued_at} is stale")]
    Stale {
        /// Its issued_at.
        issued_at: u64,
    },
    /// Every place is taken by admitted nodes' reports.
    #[error("fleet view full ({MAX_REPORTS} admitted nodes); report of a node not admitted dropped")]
    Full,
}

impl Refusal {
    /// Whether no honest node could have sent it (gossipsub `Reject` and a penalty, else `Ignore`).
    pub fn blames_sender(&self) -> bool {
        matches!(self, Refusal::Malformed(_))
    }
}

/// One content in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentProgress {
    /// The content.
    pub content: ContentId,
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Download rate for it, bytes/s, over at least the last 10 s ([`rates`](super::rates)).
    pub rate: f64,
    /// Where it stands.
    pub state: ContentState,
}

/// Content bytes a node received from senders of one ISP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IspBytes {
    /// The senders' ISP (`""`: unknown; [`OTHER_ISP`]: beyond the list's bound).
    pub isp: String,
    /// Bytes received since the node started.
    pub bytes: u64,
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
    /// Free bytes on its data directory's disk, when known.
    pub disk_free: Option<u64>,
    /// Content upload rate, bytes/s, over at least the last 10 s.
    pub up_rate: f64,
    /// Content download rate, bytes/s, over at least the last 10 s.
    pub down_rate: f64,
    /// Content bytes received since start, by the sender's ISP, at most [`MAX_REPORT_ISPS`].
    pub received: Vec<IspBytes>,
    /// Its post-download hook's last result (e.g. `ok: <title>`), at most [`MAX_REPORT_TEXT`] bytes.
    pub hook: Option<String>,
    /// How others can reach it. Carried as a trailer after the bincode body ([`REACHABILITY_TAG`] and a
    /// code), so reports of nodes without it still decode (as `None`); not part of the serde form.
    #[serde(skip)]
    pub reachability: Option<Reachability>,
}

/// The first byte of a report's reachability trailer (see [`Report::reachability`]).
pub const REACHABILITY_TAG: u8 = 0xCE;

impl Report {
    /// A report of `role` made at `issued_at` (unix seconds) that says nothing else yet.
    pub fn empty(role: &str, issued_at: u64) -> Self {
        Self {
            role: role.to_owned(),
            name: None,
            isp: None,
            issued_at,
            contents: Vec::new(),
            disk_free: None,
            up_rate: 0.0,
            down_rate: 0.0,
            received: Vec::new(),
            hook: None,
            reachability: None,
        }
    }

    /// Encodes with bincode, bounded, then the reachability trailer when there is one.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = bincode::serialize(self).unwrap_or_default();
        if let Some(r) = self.reachability {
            bytes.extend([REACHABILITY_TAG, r.code()]);
        }
        bytes
    }

    /// Decodes and checks the bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        use bincode::Options;
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(format!("fleet report of {} bytes exceeds {MAX_REPORT_BYTES}", bytes.len()));
        }
        let options = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(MAX_REPORT_BYTES as u64)
            .allow_trailing_bytes();
        let mut r: Report = options.deserialize(bytes).map_err(|e| format!("malformed fleet report: {e}"))?;
        let body = options.serialized_size(&r).map_err(|e| format!("malformed fleet report: {e}"))?;
        r.reachability = match bytes.get(body as usize..).unwrap_or_default() {
            [] => None,
            // A code from a newer version: reachable somehow, but not known how.
            [REACHABILITY_TAG, code] => Some(Reachability::from_code(*code).unwrap_or_default()),
            _ => return Err("fleet report with trailing bytes".into()),
        };
        if r.contents.len() > MAX_REPORT_CONTENTS {
            return Err("fleet report lists too many contents".into());
        }
        if r.received.len() > MAX_REPORT_ISPS {
            return Err("fleet report lists too many ISPs".into());
        }
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        if r.contents.iter().any(|c| c.have > c.total || !rate_ok(c.rate))
            || !rate_ok(r.up_rate)
            || !rate_ok(r.down_rate)
        {
            return Err("fleet report with impossible progress".into());
        }
        let texts = [Some(&r.role), r.name.as_ref(), r.isp.as_ref(), r.hook.as_ref()];
        if texts
            .into_iter()
            .flatten()
            .chain(r.received.iter().map(|i| &i.isp))
            .any(|t| t.len() > MAX_REPORT_TEXT)
        {
            return Err(format!("fleet report with a text over {MAX_REPORT_TEXT} bytes"));
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
    /// `complete`, `on-track`, `behind` (well below the fleet's median progress, or stalled),
    /// `will-miss-deadline`, `waiting` (no manifest yet) or `refused` (no room on its disk).
    pub state: String,
    /// Age of its report, seconds.
    pub report_age_secs: u64,
    /// How others can reach it (`public`, `mapped`, `hole-punched`, `relayed-only`, `unreachable`,
    /// `unknown`), when its report says.
    #[serde(default)]
    pub reachability: Option<String>,
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
    /// Total bytes.
    pub size: u64,
    /// Who must have it: `all`, `groups: a, b` or `N nodes`.
    pub targets: String,
    /// Nodes holding it complete.
    pub complete: usize,
    /// Nodes behind.
    pub behind: usize,
    /// Nodes that will miss the deadline at their current rate.
    pub will_miss_deadline: usize,
    /// Nodes that refused it (no room).
    pub refused: usize,
    /// Every node that reported it.
    pub nodes: Vec<NodeProgress>,
}

/// The latest report of each peer.
#[derive(Debug, Default)]
pub struct Fleet {
    reports: BTreeMap<String, Kept>,
    /// How many of `reports` are not admitted.
    unadmitted: usize,
}

#[derive(Debug)]
struct Kept {
    report: Report,
    admitted: bool,
}

impl Fleet {
    /// Records a report known to be genuine and admitted (this node's own); the newest per peer wins.
    pub fn record(&mut self, peer: String, report: Report) {
        let _ = self.insert(peer, report, true);
    }

    /// Checks a gossiped report signed by `peer` against admission (`private`: this node runs a private
    /// mesh) and time (`now`, unix seconds) and keeps it. See the module doc.
    pub fn accept(
        &mut self,
        peer: &str,
        data: &[u8],
        catalogue: &Catalogue,
        private: bool,
        now: u64,
    ) -> Result<(), Refusal> {
        let report = Report::decode(data).map_err(Refusal::Malformed)?;
        let admitted = catalogue.is_admitted(peer);
        if catalogue.is_revoked(peer) || (private && catalogue.has_members() && !admitted) {
            return Err(Refusal::NotAdmitted { peer: peer.to_owned() });
        }
        if report.issued_at > now.saturating_add(MAX_CLOCK_SKEW) {
            return Err(Refusal::FromTheFuture { issued_at: report.issued_at, now });
        }
        if now.saturating_sub(report.issued_at) > MAX_REPORT_AGE {
            return Err(Refusal::Stale { issued_at: report.issued_at });
        }
        self.insert(peer.to_owned(), report, admitted)
    }

    fn insert(&mut self, peer: String, report: Report, admitted: bool) -> Result<(), Refusal> {
        if let Some(old) = self.reports.get(&peer) {
            if old.report.issued_at > report.issued_at {
                return Err(Refusal::Stale { issued_at: report.issued_at });
            }
            self.remove(&peer);
        } else {
            if !admitted && self.unadmitted >= MAX_UNADMITTED_REPORTS {
                self.evict(false);
            }
            if self.reports.len() >= MAX_REPORTS && !self.evict(false) && (!admitted || !self.evict(true)) {
                return Err(Refusal::Full);
            }
        }
        self.unadmitted += usize::from(!admitted);
        self.reports.insert(peer, Kept { report, admitted });
        Ok(())
    }

    /// Drops the stalest report among the admitted or the others; `false` if there is none.
    fn evict(&mut self, admitted: bool) -> bool {
        let stalest = self
            .reports
            .iter()
            .filter(|(_, k)| k.admitted == admitted)
            .min_by_key(|(_, k)| k.report.issued_at)
            .map(|(p, _)| p.clone());
        stalest.is_some_and(|p| self.remove(&p))
    }

    fn remove(&mut self, peer: &str) -> bool {
        let Some(kept) = self.reports.remove(peer) else { return false };
        self.unadmitted -= usize::from(!kept.admitted);
        true
    }

    /// Forgets a peer (e.g. revoked).
    pub fn forget(&mut self, peer: &str) {
        self.remove(peer);
    }

    /// Number of peers with a report.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// True when no report is held.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// Every peer's latest report, by peer id.
    pub fn reports(&self) -> impl Iterator<Item = (&String, &Report)> {
        self.reports.iter().map(|(p, k)| (p, &k.report))
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
                    .map(|(peer, k)| (peer, &k.report))
                    .filter(|(_, r)| r.role != "distributor")
                    .filter(|(_, r)| now.saturating_sub(r.issued_at) <= MAX_REPORT_AGE)
                    .filter_map(|(peer, r)| {
                        let c = r.contents.iter().find(|c| c.content == p.content)?;
                        let remaining = (c.total - c.have) as f64 * chunk;
                        let eta_secs = (c.have < c.total && c.rate > 0.0).then(|| remaining / c.rate);
                        let state = match c.state {
                            ContentState::Waiting => "waiting",
                            ContentState::Refused => "refused",
                            _ => "",
                        };
                        Some(NodeProgress {
                            peer_id: peer.clone(),
                            name: r.name.clone(),
                            isp: r.isp.clone(),
                            have: c.have,
                            total: c.total,
                            rate: c.rate,
                            eta_secs,
                            state: state.to_owned(),
                            report_age_secs: now.saturating_sub(r.issued_at),
                            reachability: r.reachability.map(|x| x.as_str().to_owned()),
                        })
                    })
                    .collect();
                let mut fractions: Vec<f64> =
                    nodes.iter().map(|n| n.have as f64 / n.total.max(1) as f64).collect();
                fractions.sort_by(f64::total_cmp);
                let median = fractions.get(fractions.len() / 2).copied().unwrap_or(0.0);
                for n in nodes.iter_mut().filter(|n| n.state.is_empty() || n.have == n.total) {
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
                    size: p.size,
                    targets: describe_targets(&p.targets),
                    complete: count("complete"),
                    behind: count("behind"),
                    will_miss_deadline: count("will-miss-deadline"),
                    refused: count("refused"),
                    nodes,
                }
            })
            .collect()
    }
}

/// A short description of a Publish's targets.
pub fn describe_targets(targets: &Targets) -> String {
    match targets {
        Targets::All => "all".to_owned(),
        Targets::Groups(g) => format!("groups: {}", g.join(", ")),
        Targets::Nodes(n) => format!("{} node{}", n.len(), if n.len() == 1 { "" } else { "s" }),
    }
}

/// Content bytes received per sender ISP since start, bounded: what a node's report says in `received`.
#[derive(Debug, Default)]
pub struct Traffic {
    by_isp: BTreeMap<String, u64>,
}

impl Traffic {
    /// Counts `bytes` received from a sender on `isp` (`None`: unknown).
    pub fn add(&mut self, isp: Option<&str>, bytes: u64) {
        let mut isp = isp.unwrap_or("");
        if isp.len() > MAX_REPORT_TEXT {
            isp = OTHER_ISP;
        }
        if !self.by_isp.contains_key(isp) && self.by_isp.len() >= MAX_REPORT_ISPS - 1 {
            isp = OTHER_ISP;
        }
        *self.by_isp.entry(isp.to_owned()).or_default() += bytes;
    }

    /// The list for a report.
    pub fn list(&self) -> Vec<IspBytes> {
        self.by_isp.iter().map(|(isp, bytes)| IspBytes { isp: isp.clone(), bytes: *bytes }).collect()
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
        let state = if have == 100 { ContentState::Complete } else { ContentState::Fetching };
        Report {
            contents: vec![ContentProgress { content, have, total: 100, rate, state }],
            ..Report::empty("cinema", at)
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
            contents: vec![ContentProgress {
                content: id,
                have: 9,
                total: 1,
                rate: 0.0,
                state: ContentState::Fetching,
            }],
            ..report(1, id, 0, 0.0)
        };
        assert!(Report::decode(&bad.encode()).is_err());
        assert!(Report::decode(&[0xff; 10]).is_err());
        assert_eq!(Report::decode(&report(1, id, 3, 2.0).encode()).unwrap(), report(1, id, 3, 2.0));
    }

    #[test]
    fn waiting_and_refused_nodes_are_counted_apart() {
        let id = ContentId([3; 32]);
        let mut fleet = Fleet::default();
        let mut r = report(1000, id, 0, 0.0);
        r.contents[0].state = ContentState::Refused;
        fleet.record("full-disk".into(), r);
        let mut r = report(1000, id, 0, 0.0);
        r.contents[0].state = ContentState::Waiting;
        fleet.record("new".into(), r);
        fleet.record("moving".into(), report(1000, id, 50, 1e6));
        let view = fleet.view(&catalogue_with(id, None), 1000);
        let state = |p: &str| view[0].nodes.iter().find(|n| n.peer_id == p).unwrap().state.clone();
        assert_eq!(state("full-disk"), "refused");
        assert_eq!(state("new"), "waiting");
        assert_eq!(state("moving"), "on-track");
        assert_eq!((view[0].refused, view[0].behind, view[0].complete), (1, 0, 0));
        assert_eq!(view[0].targets, "all");
    }

    #[test]
    fn the_largest_report_fits_the_byte_bound() {
        let text = "x".repeat(MAX_REPORT_TEXT);
        let full = Report {
            role: text.clone(),
            name: Some(text.clone()),
            isp: Some(text.clone()),
            issued_at: u64::MAX,
            contents: (0..MAX_REPORT_CONTENTS)
                .map(|i| ContentProgress {
                    content: ContentId([i as u8; 32]),
                    have: 1,
                    total: 2,
                    rate: 1.0,
                    state: ContentState::Fetching,
                })
                .collect(),
            disk_free: Some(u64::MAX),
            up_rate: 1.0,
            down_rate: 1.0,
            received: (0..MAX_REPORT_ISPS).map(|_| IspBytes { isp: text.clone(), bytes: u64::MAX }).collect(),
            hook: Some(text.clone()),
            reachability: Some(Reachability::Unreachable),
        };
        let bytes = full.encode();
        assert!(bytes.len() <= MAX_REPORT_BYTES, "{} bytes", bytes.len());
        assert_eq!(Report::decode(&bytes).unwrap(), full);
        let over = Report { hook: Some(format!("{text}y")), ..full.clone() };
        assert!(Report::decode(&over.encode()).is_err());
        let too_many = Report {
            received: (0..=MAX_REPORT_ISPS).map(|_| IspBytes { isp: "a".into(), bytes: 1 }).collect(),
            ..full
        };
        assert!(Report::decode(&too_many.encode()).is_err());
    }

    #[test]
    fn traffic_is_bounded_and_keeps_counting_beyond() {
        let mut t = Traffic::default();
        for i in 0..100 {
            t.add(Some(&format!("isp{i}")), 10);
        }
        t.add(None, 5);
        let list = t.list();
        assert_eq!(list.len(), MAX_REPORT_ISPS);
        assert_eq!(list.iter().map(|i| i.bytes).sum::<u64>(), 1005);
        assert!(list.iter().any(|i| i.isp == OTHER_ISP));
    }

    fn peer(n: u32) -> String {
        let mut secret = [0u8; 32];
        secret[..4].copy_from_slice(&n.to_be_bytes());
        libp2p::identity::Keypair::ed25519_from_bytes(secret).unwrap().public().to_peer_id().to_string()
    }

    /// A catalogue that admits `admitted` (peer ids), signed at `T`.
    fn admitting(admitted: &[String]) -> Catalogue {
        let key = Keypair::from_secret([7; 32]);
        let mut c = Catalogue::new([key.public()]);
        for (i, p) in admitted.iter().enumerate() {
            let body = Body::Admit(crate::catalogue::Member {
                peer: p.clone(),
                name: String::new(),
                isp: String::new(),
                site: String::new(),
                groups: vec![],
            });
            let seq = i as u64 + 1;
            c.apply(Entry { key: key.public(), seq, issued_at: T, body }.sign(&key).unwrap(), T).unwrap();
        }
        c
    }

    const T: u64 = 1_700_000_000;

    #[test]
    fn fake_signers_cannot_push_out_admitted_nodes_on_an_open_mesh() {
        let id = ContentId([3; 32]);
        let real: Vec<String> = (0..5).map(peer).collect();
        let catalogue = admitting(&real);
        let mut fleet = Fleet::default();
        for p in &real {
            fleet.accept(p, &report(T, id, 50, 1.0).encode(), &catalogue, false, T).unwrap();
        }
        // 12,000 signers nobody admitted, each with a newer report than the real cinemas'.
        for n in 1000..13_000u32 {
            let fake = format!("fake-{n}");
            let _ = fleet.accept(&fake, &report(T + 60, id, 1, 1.0).encode(), &catalogue, false, T + 60);
        }
        assert_eq!(fleet.len(), real.len() + MAX_UNADMITTED_REPORTS);
        for p in &real {
            assert!(fleet.reports.contains_key(p), "admitted {p} was pushed out");
        }
    }

    #[test]
    fn private_mesh_keeps_only_admitted_signers() {
        let id = ContentId([4; 32]);
        let catalogue = admitting(&[peer(1)]);
        let mut fleet = Fleet::default();
        let data = report(T, id, 1, 1.0).encode();
        assert_eq!(
            fleet.accept(&peer(2), &data, &catalogue, true, T),
            Err(Refusal::NotAdmitted { peer: peer(2) })
        );
        fleet.accept(&peer(1), &data, &catalogue, true, T).unwrap();
        assert_eq!(fleet.len(), 1);
        assert!(fleet.accept("x", &[0xff; 3], &catalogue, true, T).unwrap_err().blames_sender());
    }

    #[test]
    fn reports_from_the_future_are_refused_and_old_ones_age_out() {
        let id = ContentId([5; 32]);
        let catalogue = admitting(&[peer(1), peer(2)]);
        let mut fleet = Fleet::default();
        let far = report(T + 365 * 86_400, id, 1, 1.0).encode();
        let err = fleet.accept(&peer(1), &far, &catalogue, false, T).unwrap_err();
        assert!(matches!(err, Refusal::FromTheFuture { .. }) && !err.blames_sender());
        fleet
            .accept(&peer(1), &report(T + MAX_CLOCK_SKEW, id, 1, 1.0).encode(), &catalogue, false, T)
            .unwrap();
        // A report already older than MAX_REPORT_AGE is refused; one that ages past it leaves the view.
        let old = report(T - MAX_REPORT_AGE - 1, id, 1, 1.0).encode();
        assert!(matches!(fleet.accept(&peer(2), &old, &catalogue, false, T), Err(Refusal::Stale { .. })));
        let film = catalogue_with(id, None);
        assert_eq!(fleet.view(&film, T)[0].nodes.len(), 1);
        assert!(fleet.view(&film, T + MAX_CLOCK_SKEW + MAX_REPORT_AGE + 1)[0].nodes.is_empty());
    }

    /// Reports of nodes that predate the reachability trailer still decode; the trailer round-trips;
    /// anything else after the body is refused.
    #[test]
    fn the_reachability_trailer_is_optional() {
        let old = Report::empty("cinema", 5);
        let old_bytes = bincode::serialize(&old).unwrap();
        assert_eq!(old.encode(), old_bytes, "no trailer without a reachability");
        assert_eq!(Report::decode(&old_bytes).unwrap().reachability, None);
        let new = Report { reachability: Some(Reachability::RelayedOnly), ..old.clone() };
        let bytes = new.encode();
        assert_eq!(bytes.len(), old_bytes.len() + 2);
        assert_eq!(Report::decode(&bytes).unwrap(), new);
        let mut unknown = old_bytes.clone();
        unknown.extend([REACHABILITY_TAG, 99]);
        assert_eq!(Report::decode(&unknown).unwrap().reachability, Some(Reachability::Unknown));
        for junk in [vec![0u8], vec![REACHABILITY_TAG, 1, 2], vec![1, 1]] {
            let mut b = old_bytes.clone();
            b.extend(junk);
            assert!(Report::decode(&b).is_err());
        }
    }
}
