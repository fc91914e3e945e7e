//! The dashboard's JSON (`GET /dashboard/state`): films, the per-cinema grid, the mesh and the catalogue
//! log, built from one [`Snapshot`] of the node plus its own status, films, peers and hook runs. Pure
//! functions of their inputs, so they are tested without a network.

use std::collections::BTreeMap;

use cinemesh_overlay::net::client::{FilmStatus, PeerStatus, Status};
use cinemesh_overlay::net::fleet::OTHER_ISP;
use cinemesh_overlay::net::snapshot::{LogEntry, Snapshot};
use serde::{Deserialize, Serialize};

use super::history::EgressSample;
use crate::hooks::Record;

/// Everything the page shows, as of `generated_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardState {
    /// Unix seconds.
    pub generated_at: u64,
    /// This node.
    pub node: Status,
    /// This node's content upload and download rates, bytes/s, from its own latest report.
    pub node_rates: Option<NodeRates>,
    /// This node's recent hook runs.
    pub hooks: Vec<Record>,
    /// This node's films with local progress.
    pub local_films: Vec<FilmStatus>,
    /// This node's connected peers.
    pub peers: Vec<PeerStatus>,
    /// Every film across the fleet.
    pub films: Vec<FilmRow>,
    /// Every node that reports (cinemas and superseeders; distributors are the sources).
    pub cinemas: Vec<CinemaRow>,
    /// Traffic between ISPs and seeder egress.
    pub mesh: MeshView,
    /// The catalogue log, newest first.
    pub log: Vec<LogEntry>,
}

/// A node's content rates, bytes/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeRates {
    /// Sent.
    pub up: f64,
    /// Received.
    pub down: f64,
}

/// One film across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilmRow {
    /// Content id, hex.
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Bytes.
    pub size: u64,
    /// `all`, `groups: ...`, `N nodes`.
    pub targets: String,
    /// Unix seconds.
    pub deadline: Option<u64>,
    /// Nodes that reported it.
    pub reporting: usize,
    /// Complete.
    pub complete: usize,
    /// Behind the fleet or stalled.
    pub behind: usize,
    /// Will miss the deadline at their current rate.
    pub late: usize,
    /// Refused it (no room).
    pub refused: usize,
    /// The command that withdraws it (run by the key holder).
    pub withdraw_command: String,
}

/// One film on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CinemaFilm {
    /// Content id, hex.
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Bytes/s.
    pub rate: f64,
    /// Seconds to completion at that rate.
    pub eta_secs: Option<f64>,
    /// `complete`, `on-track`, `behind`, `will-miss-deadline`, `waiting`, `refused`.
    pub state: String,
}

/// One row of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CinemaRow {
    /// libp2p peer id.
    pub peer_id: String,
    /// Name.
    pub name: Option<String>,
    /// `cinema` or `superseeder`.
    pub role: String,
    /// ISP (signed in a private mesh).
    pub isp: Option<String>,
    /// The worst state over its films: `late`, `refused`, `behind`, `waiting`, `fetching`, `complete`, or
    /// `idle` (nothing targeted).
    pub state: String,
    /// Bytes held over bytes targeted, 0..=1 (1 when nothing is targeted).
    pub progress: f64,
    /// Download rate, bytes/s.
    pub rate: f64,
    /// Seconds until its last unfinished film completes at current rates.
    pub eta_secs: Option<f64>,
    /// Will miss a deadline.
    pub late: bool,
    /// How others can reach it, from its report (`public`, `mapped`, `hole-punched`, `relayed-only`,
    /// `unreachable`, `unknown`); for a node whose report does not say: `connected` when this node has a
    /// connection to it; `None`: not known here.
    pub reachability: Option<String>,
    /// Free bytes on its disk.
    pub disk_free: Option<u64>,
    /// Age of its last report, seconds.
    pub report_age_secs: u64,
    /// Its hook's last result.
    pub hook: Option<String>,
    /// Its films.
    pub films: Vec<CinemaFilm>,
    /// The command that revokes it (run by the key holder).
    pub revoke_command: String,
}

/// Bytes received by nodes of ISP `to` from senders of ISP `from`, summed over the reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IspPair {
    /// Sender ISP (`unknown` when not known).
    pub from: String,
    /// Receiver ISP.
    pub to: String,
    /// Bytes.
    pub bytes: u64,
    /// Both ends in the same known ISP.
    pub inside: bool,
}

/// The mesh's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshView {
    /// Per ISP pair, largest first.
    pub pairs: Vec<IspPair>,
    /// Bytes that stayed inside one ISP.
    pub inside_bytes: u64,
    /// Bytes that crossed ISPs (or whose ISPs are unknown).
    pub inter_bytes: u64,
    /// Seeder egress over time, oldest first.
    pub egress: Vec<EgressSample>,
}

const UNKNOWN: &str = "unknown";

/// Builds the page's state.
pub fn build(
    snapshot: Snapshot,
    node: Status,
    hooks: Vec<Record>,
    local_films: Vec<FilmStatus>,
    peers: Vec<PeerStatus>,
    egress: Vec<EgressSample>,
) -> DashboardState {
    let films = snapshot
        .films
        .iter()
        .map(|f| FilmRow {
            content_id: f.content_id.clone(),
            title: f.title.clone(),
            size: f.size,
            targets: f.targets.clone(),
            deadline: f.deadline,
            reporting: f.nodes.len(),
            complete: f.complete,
            behind: f.behind,
            late: f.will_miss_deadline,
            refused: f.refused,
            withdraw_command: format!("cinemesh withdraw --key DISTRIBUTOR.key {}", f.content_id),
        })
        .collect();
    let cinemas = grid(&snapshot, &peers);
    let mesh = mesh(&snapshot, egress);
    let node_rates = snapshot
        .reports
        .iter()
        .find(|r| r.peer_id == node.peer_id)
        .map(|r| NodeRates { up: r.report.up_rate, down: r.report.down_rate });
    DashboardState {
        generated_at: snapshot.now,
        node,
        node_rates,
        hooks,
        local_films,
        peers,
        films,
        cinemas,
        mesh,
        log: snapshot.log,
    }
}

/// One row per reporting node that is not a distributor.
fn grid(snapshot: &Snapshot, peers: &[PeerStatus]) -> Vec<CinemaRow> {
    let mut per_node: BTreeMap<&str, Vec<(CinemaFilm, u64)>> = BTreeMap::new();
    for f in &snapshot.films {
        for n in &f.nodes {
            let film = CinemaFilm {
                content_id: f.content_id.clone(),
                title: f.title.clone(),
                have: n.have,
                total: n.total,
                rate: n.rate,
                eta_secs: n.eta_secs,
                state: n.state.clone(),
            };
            per_node.entry(n.peer_id.as_str()).or_default().push((film, f.size));
        }
    }
    let connected: BTreeMap<&str, &PeerStatus> = peers.iter().map(|p| (p.peer_id.as_str(), p)).collect();
    snapshot
        .reports
        .iter()
        .filter(|r| r.report.role != "distributor")
        .map(|r| {
            let films = per_node.remove(r.peer_id.as_str()).unwrap_or_default();
            let (mut held, mut wanted) = (0.0, 0.0);
            for (f, size) in &films {
                held += *size as f64 * f.have as f64 / f.total.max(1) as f64;
                wanted += *size as f64;
            }
            let has = |s: &str| films.iter().any(|(f, _)| f.state == s);
            let late = has("will-miss-deadline");
            let state = if films.is_empty() {
                "idle"
            } else if late {
                "late"
            } else if has("refused") {
                "refused"
            } else if has("behind") {
                "behind"
            } else if has("waiting") {
                "waiting"
            } else if has("on-track") {
                "fetching"
            } else {
                "complete"
            };
            let unfinished = films.iter().filter(|(f, _)| f.have < f.total);
            let eta_secs = unfinished
                .map(|(f, _)| f.eta_secs)
                .try_fold(None, |max: Option<f64>, e| e.map(|e| Some(max.map_or(e, |m| m.max(e)))))
                .flatten();
            CinemaRow {
                peer_id: r.peer_id.clone(),
                name: r.report.name.clone(),
                role: r.report.role.clone(),
                isp: r.report.isp.clone(),
                state: state.to_owned(),
                progress: if wanted > 0.0 { held / wanted } else { 1.0 },
                rate: r.report.down_rate,
                eta_secs,
                late,
                reachability: r
                    .reachability
                    .clone()
                    .or_else(|| connected.get(r.peer_id.as_str()).map(|_| "connected".to_owned())),
                disk_free: r.report.disk_free,
                report_age_secs: r.report_age_secs,
                hook: r.report.hook.clone(),
                films: films.into_iter().map(|(f, _)| f).collect(),
                revoke_command: format!("cinemesh revoke --key DISTRIBUTOR.key {}", r.peer_id),
            }
        })
        .collect()
}

fn mesh(snapshot: &Snapshot, egress: Vec<EgressSample>) -> MeshView {
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &snapshot.reports {
        let to = r.report.isp.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| UNKNOWN.to_owned());
        for rx in &r.report.received {
            let from = if rx.isp.is_empty() { UNKNOWN.to_owned() } else { rx.isp.clone() };
            *pairs.entry((from, to.clone())).or_default() += rx.bytes;
        }
    }
    let mut pairs: Vec<IspPair> = pairs
        .into_iter()
        .map(|((from, to), bytes)| {
            let inside = from == to && from != UNKNOWN && from != OTHER_ISP;
            IspPair { from, to, bytes, inside }
        })
        .collect();
    pairs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to))));
    let inside_bytes = pairs.iter().filter(|p| p.inside).map(|p| p.bytes).sum();
    let inter_bytes = pairs.iter().filter(|p| !p.inside).map(|p| p.bytes).sum();
    MeshView { pairs, inside_bytes, inter_bytes, egress }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cinemesh_overlay::net::fleet::{FilmFleet, IspBytes, NodeProgress, Report};
    use cinemesh_overlay::net::snapshot::PeerReport;

    pub(crate) fn status() -> Status {
        Status {
            peer_id: "me".into(),
            listen: vec![],
            role: "distributor".into(),
            name: None,
            isp: Some("dc".into()),
            site: None,
            catalogue_heads: vec![],
            disk_free: 1,
            peers: 0,
            films: 1,
            reachability: "public".into(),
            external_addresses: vec![],
            bytes_by_link: Default::default(),
        }
    }

    fn node(peer: &str, have: u32, rate: f64, eta: Option<f64>, state: &str) -> NodeProgress {
        NodeProgress {
            peer_id: peer.into(),
            name: Some(peer.into()),
            isp: None,
            have,
            total: 100,
            rate,
            eta_secs: eta,
            state: state.into(),
            report_age_secs: 3,
            reachability: None,
        }
    }

    fn report(peer: &str, role: &str, isp: &str, received: &[(&str, u64)]) -> PeerReport {
        PeerReport {
            peer_id: peer.into(),
            report_age_secs: 3,
            report: Report {
                name: Some(peer.into()),
                isp: Some(isp.into()),
                disk_free: Some(5 << 30),
                down_rate: 7.0,
                received: received.iter().map(|(i, b)| IspBytes { isp: (*i).into(), bytes: *b }).collect(),
                hook: Some("ok: A".into()),
                ..Report::empty(role, 100)
            },
            // c3 says how it is reachable; the others predate it.
            reachability: (peer == "c3").then(|| "relayed-only".to_owned()),
        }
    }

    /// A fleet of `n` cinemas on `isps` ISPs, one film each, every fifth late.
    pub(crate) fn fleet(n: usize, isps: usize) -> Snapshot {
        let nodes = (0..n)
            .map(|i| {
                let state = if i % 5 == 0 { "will-miss-deadline" } else { "on-track" };
                node(&format!("c{i}"), (i % 100) as u32, 1e6, Some(60.0), state)
            })
            .collect();
        let film = FilmFleet {
            content_id: "ab".into(),
            title: "A".into(),
            deadline: Some(1000),
            size: 100 << 20,
            targets: "all".into(),
            complete: 0,
            behind: 0,
            will_miss_deadline: n.div_ceil(5),
            refused: 0,
            nodes,
        };
        let mut reports: Vec<PeerReport> = (0..n)
            .map(|i| {
                report(&format!("c{i}"), "cinema", &format!("isp{}", i % isps), &[("dc", 10), ("isp0", 1)])
            })
            .collect();
        reports.push(report("dist", "distributor", "dc", &[]));
        Snapshot { now: 100, films: vec![film], reports, log: vec![] }
    }

    #[test]
    fn films_carry_their_counts_and_the_withdraw_command() {
        let s = build(fleet(10, 2), status(), vec![], vec![], vec![], vec![]);
        assert_eq!(s.node_rates, None, "no report of this node (\"me\") yet");
        assert_eq!(s.films.len(), 1);
        let f = &s.films[0];
        assert_eq!((f.reporting, f.late, f.targets.as_str()), (10, 2, "all"));
        assert_eq!(f.withdraw_command, "cinemesh withdraw --key DISTRIBUTOR.key ab");
    }

    #[test]
    fn the_grid_has_one_row_per_cinema_with_its_state_progress_and_late_flag() {
        let peers = vec![PeerStatus {
            peer_id: "c1".into(),
            role: None,
            name: None,
            isp: None,
            site: None,
            load: 0.0,
            bytes_up: 0,
            bytes_down: 0,
            address: None,
            link: Some("tcp".into()),
        }];
        let s = build(fleet(10, 2), status(), vec![], vec![], peers, vec![]);
        assert_eq!(s.cinemas.len(), 10, "the distributor is a source, not a row");
        let own =
            build(fleet(3, 1), Status { peer_id: "dist".into(), ..status() }, vec![], vec![], vec![], vec![]);
        assert_eq!(own.node_rates, Some(NodeRates { up: 0.0, down: 7.0 }), "from its own report");
        let row = |p: &str| s.cinemas.iter().find(|c| c.peer_id == p).unwrap();
        assert!(row("c0").late && row("c0").state == "late");
        assert!(!row("c1").late && row("c1").state == "fetching");
        assert!((row("c7").progress - 0.07).abs() < 1e-9);
        assert_eq!(row("c1").reachability.as_deref(), Some("connected"));
        assert_eq!(row("c2").reachability, None);
        assert_eq!(row("c3").reachability.as_deref(), Some("relayed-only"), "from its report");
        assert_eq!(row("c3").eta_secs, Some(60.0));
        assert_eq!(row("c3").disk_free, Some(5 << 30));
        assert_eq!(row("c3").hook.as_deref(), Some("ok: A"));
        assert_eq!(row("c3").films[0].title, "A");
    }

    #[test]
    fn a_cinema_without_films_is_idle_and_an_unknown_eta_stays_unknown() {
        let mut snap = fleet(2, 1);
        snap.films[0].nodes[1].eta_secs = None;
        snap.reports.push(report("new", "cinema", "isp0", &[]));
        let s = build(snap, status(), vec![], vec![], vec![], vec![]);
        let row = |p: &str| s.cinemas.iter().find(|c| c.peer_id == p).unwrap();
        assert_eq!((row("new").state.as_str(), row("new").progress), ("idle", 1.0));
        assert_eq!(row("c1").eta_secs, None);
    }

    #[test]
    fn the_mesh_sums_bytes_per_isp_pair_and_splits_inside_from_inter() {
        let s = build(fleet(4, 2), status(), vec![], vec![], vec![], vec![]);
        let pair = |f: &str, t: &str| s.mesh.pairs.iter().find(|p| p.from == f && p.to == t).cloned();
        // c0, c2 on isp0; c1, c3 on isp1; each got 10 from dc and 1 from isp0.
        assert_eq!(pair("dc", "isp0").unwrap().bytes, 20);
        assert_eq!(pair("dc", "isp1").unwrap().bytes, 20);
        let inside = pair("isp0", "isp0").unwrap();
        assert!(inside.inside && inside.bytes == 2);
        assert!(!pair("isp0", "isp1").unwrap().inside);
        assert_eq!((s.mesh.inside_bytes, s.mesh.inter_bytes), (2, 42));
        assert_eq!(s.mesh.pairs[0].bytes, 20, "largest first");
    }
}
