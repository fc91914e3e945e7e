//! What the dashboard reads from the event loop in one command ([`Client::snapshot`](super::Client)):
//! the fleet view, every peer's latest report and the tail of the catalogue log, all as of one moment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fleet::{describe_targets, FilmFleet, Fleet, Report};
use crate::catalogue::{Body, Catalogue, SignedEntry};

/// Most catalogue entries in a snapshot (the most recent).
pub const MAX_LOG: usize = 200;

/// One peer's latest report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// libp2p peer id.
    pub peer_id: String,
    /// Age of the report, seconds.
    pub report_age_secs: u64,
    /// The report.
    pub report: Report,
    /// How others can reach that peer, when its report says (`public`, `mapped`, `hole-punched`,
    /// `relayed-only`, `unreachable`, `unknown`).
    #[serde(default)]
    pub reachability: Option<String>,
}

/// One catalogue entry, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The signing distributor key, `cmpk1...`.
    pub key: String,
    /// Its seq in that key's log.
    pub seq: u64,
    /// When the distributor issued it, unix seconds.
    pub issued_at: u64,
    /// `publish`, `withdraw`, `admit`, `revoke` or `policy`.
    pub kind: String,
    /// What it is about: a title, a content id, a node's name or peer id, a group.
    pub subject: String,
    /// Details: targets and deadline, ISP and groups, windows.
    pub detail: String,
}

/// The dashboard's read of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken, unix seconds.
    pub now: u64,
    /// The fleet view per content.
    pub films: Vec<FilmFleet>,
    /// Every peer's latest report (this node's own included).
    pub reports: Vec<PeerReport>,
    /// The most recent catalogue entries (at most [`MAX_LOG`]), newest first.
    pub log: Vec<LogEntry>,
}

impl Snapshot {
    /// Takes the snapshot at `now` (unix seconds).
    pub fn take(fleet: &Fleet, catalogue: &Catalogue, now: u64) -> Self {
        let reports = fleet
            .reports()
            .map(|(peer, r)| PeerReport {
                peer_id: peer.clone(),
                report_age_secs: now.saturating_sub(r.issued_at),
                report: r.clone(),
                reachability: r.reachability.map(|x| x.as_str().to_owned()),
            })
            .collect();
        let mut entries: Vec<&SignedEntry> = catalogue
            .heads()
            .into_iter()
            .flat_map(|(key, head)| {
                let from = head.saturating_sub(MAX_LOG as u64);
                catalogue.entries_after(&key, from, MAX_LOG).iter()
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse((e.entry.issued_at, e.entry.seq)));
        entries.truncate(MAX_LOG);
        Self { now, films: fleet.view(catalogue, now), reports, log: describe(catalogue, &entries) }
    }
}

/// Describes entries (newest first), naming films by title where the log or the catalogue knows it.
fn describe(catalogue: &Catalogue, entries: &[&SignedEntry]) -> Vec<LogEntry> {
    let titles: BTreeMap<_, _> = entries
        .iter()
        .filter_map(|e| match &e.entry.body {
            Body::Publish(p) => Some((p.content, p.title.clone())),
            _ => None,
        })
        .collect();
    let name_of =
        |peer: &str| catalogue.member(peer).map(|m| m.name.clone()).unwrap_or_else(|| peer.to_owned());
    entries
        .iter()
        .map(|e| {
            let (kind, subject, detail) = match &e.entry.body {
                Body::Publish(p) => (
                    "publish",
                    p.title.clone(),
                    format!(
                        "{} · targets {}{}",
                        p.content.to_hex(),
                        describe_targets(&p.targets),
                        p.deadline.map(|d| format!(" · deadline {d}")).unwrap_or_default()
                    ),
                ),
                Body::Withdraw { content } => (
                    "withdraw",
                    titles
                        .get(content)
                        .cloned()
                        .or_else(|| catalogue.film(content).map(|f| f.publish.title.clone()))
                        .unwrap_or_else(|| content.to_hex()),
                    content.to_hex(),
                ),
                Body::Admit(m) => (
                    "admit",
                    if m.name.is_empty() { m.peer.clone() } else { m.name.clone() },
                    format!(
                        "{} · ISP {:?} · site {:?} · groups [{}]",
                        m.peer,
                        m.isp,
                        m.site,
                        m.groups.join(", ")
                    ),
                ),
                Body::Revoke { peer } => ("revoke", name_of(peer), peer.clone()),
                Body::Policy(p) => (
                    "policy",
                    p.group.clone().map(|g| format!("group {g}")).unwrap_or_else(|| "every node".into()),
                    format!("{} window{}", p.schedule.len(), if p.schedule.len() == 1 { "" } else { "s" }),
                ),
            };
            LogEntry {
                key: e.entry.key.to_string(),
                seq: e.entry.seq,
                issued_at: e.entry.issued_at,
                kind: kind.to_owned(),
                subject,
                detail,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Entry, Keypair, Member, Publish, Targets};
    use crate::ContentId;

    #[test]
    fn the_log_is_newest_first_and_names_what_each_entry_is_about() {
        let key = Keypair::from_secret([9; 32]);
        let mut c = Catalogue::new([key.public()]);
        let content = ContentId([4; 32]);
        let bodies = [
            Body::Publish(Publish {
                content,
                title: "Le Film".into(),
                size: 10,
                chunk_size: 1 << 20,
                chunks: 1,
                targets: Targets::Groups(vec!["paris".into()]),
                deadline: Some(999),
            }),
            Body::Admit(Member {
                peer: "12D3KooWpeer".into(),
                name: "Rex".into(),
                isp: "orange".into(),
                site: String::new(),
                groups: vec!["paris".into()],
            }),
            Body::Revoke { peer: "12D3KooWpeer".into() },
            Body::Withdraw { content },
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let seq = i as u64 + 1;
            c.apply(Entry { key: key.public(), seq, issued_at: 100 + seq, body }.sign(&key).unwrap(), 1_000)
                .unwrap();
        }
        let s = Snapshot::take(&Fleet::default(), &c, 200);
        let kinds: Vec<&str> = s.log.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["withdraw", "revoke", "admit", "publish"]);
        assert_eq!(s.log[0].subject, "Le Film", "a withdrawal names the film it withdraws");
        assert_eq!(s.log[2].subject, "Rex");
        assert!(s.log[3].detail.contains("groups: paris") && s.log[3].detail.contains("deadline 999"));
        assert_eq!(s.log[0].key, key.public().to_string());
        assert_eq!(s.log[0].issued_at, 104);
        assert!(s.films.is_empty(), "a withdrawn film is no longer in the view");
    }
}
