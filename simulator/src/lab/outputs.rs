//! The lab's outputs, the simulator's own formats: `report.json` (the same field names where the figure
//! is the same), `nodes.csv` ([`crate::report::nodes_csv`]) and the plots, from what the daemons said.

use std::path::Path;

use cinemesh_core::config::{GossipConfig, PolicyConfig, TransferConfig};
use serde::Serialize;

use super::observe::RequestSample;
use super::{LabError, Measured};
use crate::bound::{self, CdfFigures, Downloader};
use crate::plot::{self, Series};
use crate::report::{self, film_bound, film_bound_at, FilmReport, NodeRow, Quantiles};
use crate::scenario::Scenario;
use crate::topology::Topology;

/// What the lab's links are and are not.
pub const SHAPING: &str =
    "tc tbf on every upload, download and ISP border (burst 4 ms at the rate, at least 4 KiB; queue 50 ms)";

/// The lab's `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// `lab`.
    pub body: &'static str,
    /// Scenario name.
    pub scenario: String,
    /// Seed (topology, targets, late cinemas).
    pub seed: u64,
    /// Cinemas.
    pub cinemas: u32,
    /// Superseeders.
    pub seeders: u32,
    /// Film 0's Kumar-Ross bound, seconds.
    pub t_min: f64,
    /// Film 0: publish -> last target complete, seconds.
    pub t_measured: Option<f64>,
    /// Film 0's efficiency.
    pub efficiency: Option<f64>,
    /// `B(N) / T(N)`, each cinema counted from when it came online (as the simulator's report).
    pub last_point_efficiency: Option<f64>,
    /// Per film.
    pub films: Vec<FilmReport>,
    /// Film 0's completion-CDF yardstick.
    pub cdf: CdfFigures,
    /// Superseeder egress / capacity from film 0's publish to its last target's completion (or the end).
    pub seeder_utilisation: f64,
    /// Content bytes received from another ISP (the daemons' `OtherIsp` counters).
    pub transit_bytes: u64,
    /// Sum of the films' transit minimums.
    pub transit_min_bytes: u64,
    /// `transit_bytes / transit_min_bytes`.
    pub transit_ratio: f64,
    /// Bytes the superseeders sent.
    pub seeder_egress_bytes: u64,
    /// In film copies.
    pub seeder_egress_copies: f64,
    /// Highest superseeder egress over one bin, bytes/s.
    pub seeder_egress_peak: f64,
    /// What the links carried beside the content, from the kernel's counters (`None` when unread).
    pub wire: Option<WireFigures>,
    /// The nodes' TCP: its congestion control and what it retransmitted.
    pub tcp: TcpFigures,
    /// The machine's memory: free page reporting held off, the page cache warmed (`lab::memory`).
    pub memory: super::memory::MemoryFigures,
    /// Catalogue entry first listed by `/films` after publish, ms (poll resolution).
    pub gossip_delivery_ms: Quantiles,
    /// ISP names.
    pub isps: Vec<String>,
    /// Bytes from ISP row to ISP column (from `/peers`, connected peers only).
    pub isp_matrix: Vec<Vec<u64>>,
    /// Seconds from time 0 to the end of the run.
    pub end_secs: f64,
    /// Every target completed before the timeout.
    pub finished: bool,
    /// Targets that did not complete.
    pub incomplete: u32,
    /// The links.
    pub shaping: &'static str,
    /// Every daemon's upload limit as a share of its link's rate (`cinemesh-sim lab --upload-limit-share`);
    /// `None`: the scenario's `transfer.upload_limit` (in `transfer_config`).
    pub upload_limit_share: Option<f64>,
    /// Every cinema's upload queue, ms (`cinemesh-sim lab --uplink-queue`); `None`: the 50 ms of every link.
    pub uplink_queue_ms: Option<f64>,
    /// Network sysctls the lab set in every node's namespace (`cinemesh-sim lab --sysctl`).
    pub sysctls: Vec<(String, String)>,
    /// The scenario's latency as the lab applied it: what its delay line did (`lab::delay`); `None`: no
    /// latency added (`--no-latency`).
    pub latency: Option<super::delay::DelayFigures>,
    /// The `[gossip]` section the daemons ran.
    pub gossip_config: GossipConfig,
    /// The `[transfer]` section the daemons ran.
    pub transfer_config: TransferConfig,
    /// The `[policy]` section the daemons ran.
    pub policy_config: PolicyConfig,
}

/// The nodes' TCP, from their namespaces: which congestion control ran and what share of the segments it
/// resent. A shaper's queue that overflows drops segments; the resent ones take link time that carried no
/// new content, and the flows that lose more get less of the link. The simulator models neither.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpFigures {
    /// `net.ipv4.tcp_congestion_control` in the nodes' namespaces (`cinemesh-sim lab
    /// --congestion-control`, or the host's); `None` when unread.
    pub congestion_control: Option<String>,
    /// Segments the superseeders' TCP retransmitted over the segments it sent (`RetransSegs / OutSegs`).
    pub seeder_retransmitted: Option<f64>,
    /// The same for the cinemas.
    pub cinema_retransmitted: Option<f64>,
}

impl TcpFigures {
    /// From every node's `(OutSegs, RetransSegs)`; a class's share is `None` when a counter of it is
    /// missing or it sent nothing.
    pub fn compute(rows: &[NodeRow], tcp: &[Option<(u64, u64)>], congestion_control: Option<String>) -> Self {
        let share = |seeders: bool| -> Option<f64> {
            let (mut out, mut resent) = (0u64, 0u64);
            for (_, t) in rows.iter().zip(tcp).filter(|(r, _)| r.seeder == seeders) {
                let (o, r) = (*t)?;
                out += o;
                resent += r;
            }
            (out > 0).then(|| resent as f64 / out as f64)
        };
        TcpFigures {
            congestion_control,
            seeder_retransmitted: share(true),
            cinema_retransmitted: share(false),
        }
    }
}

/// The content's share of what the links carried, and the bound on links that carry content at that share.
///
/// Kumar-Ross counts a link's whole rate as content; a TCP link also carries headers (about 3.5% of a
/// full-size frame), the ACKs of the node's own downloads and the overlay's control traffic. Splitting the
/// efficiency in two tells the wire's cost from the schedule's: `efficiency` here is how fully the run
/// used the content rate its links did carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WireFigures {
    /// Content bytes the superseeders delivered over the bytes their links sent.
    pub seeder_payload_share: f64,
    /// Content bytes the cinemas delivered over the bytes their links sent (ACKs of their downloads
    /// included).
    pub cinema_payload_share: f64,
    /// Content bytes the cinemas received over the bytes their links received.
    pub cinema_down_payload_share: f64,
    /// Film 0's Kumar-Ross bound with every upload and download at its class's share of its rate, seconds.
    pub t_min: f64,
    /// `t_min / t_measured`.
    pub efficiency: Option<f64>,
}

/// [`WireFigures`] from the nodes' rows and their links' `(sent, received)` bytes, for film 0's targets
/// (`targeted`); `None` when a counter is missing or a class sent nothing.
pub fn wire_figures(
    sc: &Scenario,
    topo: &Topology,
    rows: &[NodeRow],
    wire: &[Option<(u64, u64)>],
    targeted: impl Fn(usize) -> bool,
    t_measured: Option<f64>,
) -> Option<WireFigures> {
    let share = |seeders: bool, down: bool| -> Option<f64> {
        let (mut content, mut carried) = (0u64, 0u64);
        for (r, w) in rows.iter().zip(wire).filter(|(r, _)| r.seeder == seeders) {
            let (tx, rx) = (*w)?;
            content += if down { r.bytes_down } else { r.bytes_up };
            carried += if down { rx } else { tx };
        }
        (carried > 0 && content > 0).then(|| (content as f64 / carried as f64).min(1.0))
    };
    let (ss, cs, cds) = (share(true, false)?, share(false, false)?, share(false, true)?);
    let t_min = film_bound_at(sc, topo, 0, targeted, [ss, cs, cds]).t_min;
    Some(WireFigures {
        seeder_payload_share: ss,
        cinema_payload_share: cs,
        cinema_down_payload_share: cds,
        t_min,
        efficiency: t_measured.map(|t| bound::efficiency(t_min, t)),
    })
}

/// Linear interpolation of a sorted `(t, value)` series at `t`.
pub fn at(samples: &[(f64, f64)], t: f64) -> f64 {
    match samples.iter().position(|s| s.0 >= t) {
        None => samples.last().map_or(0.0, |s| s.1),
        Some(0) => samples[0].1 * if samples[0].0 > 0.0 { (t / samples[0].0).clamp(0.0, 1.0) } else { 1.0 },
        Some(j) => {
            let (a, b) = (samples[j - 1], samples[j]);
            a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0).max(1e-9)
        }
    }
}

/// A round bin width giving at most about 60 bins over `secs`.
pub fn bin_width(secs: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|w| secs / w <= 60.0)
        .unwrap_or(3600.0)
}

/// Per-bin rates (bytes/s) of a cumulative series from 0 to `end`.
pub fn rates(samples: &[(f64, f64)], end: f64, bin: f64) -> Vec<f64> {
    let bins = (end / bin).ceil().max(1.0) as usize;
    (0..bins).map(|j| (at(samples, (j + 1) as f64 * bin) - at(samples, j as f64 * bin)) / bin).collect()
}

/// Everything the lab writes, built from the measurements.
#[derive(Debug, Clone)]
pub struct Built {
    /// `nodes.csv` rows.
    pub rows: Vec<NodeRow>,
    /// `report.json`.
    pub report: LabReport,
    /// Superseeder egress per bin, bytes/s, and the bin width in seconds.
    pub egress: (Vec<f64>, f64),
    /// Film 0's completion times counted from coming online, per target.
    pub times: Vec<Option<f64>>,
    /// `timeline.csv`.
    pub timeline: String,
    /// `requests.csv`.
    pub requests: String,
}

/// `requests.csv`: each node's request window and requests, about once a second (the daemons'
/// `cinemesh_request_window`, `cinemesh_requests_in_flight`, `cinemesh_chunk_requests*_total`,
/// `cinemesh_chunk_cancels_total`, `cinemesh_chunks_duplicate_total` and, last, the requests in flight to
/// other ISPs, `cinemesh_requests_in_flight_other_isp`, then the chunks received, verified and stored,
/// `cinemesh_chunks_verified_total`, and the busy answers received, `cinemesh_chunks_failed_total{reason="busy"}`;
/// the counters restart with a daemon).
pub fn requests_csv<'a>(nodes: impl Iterator<Item = (&'a str, &'a [RequestSample])>) -> String {
    let mut out = String::from(
        "node,t_s,window,in_flight,requests,beyond_window,yielded,pipelined,endgame,timed_out,cancels,duplicate,in_flight_other_isp,received,busy\n",
    );
    for (name, samples) in nodes {
        for s in samples {
            out += &format!(
                "{name},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                s.t,
                s.window,
                s.in_flight,
                s.sent,
                s.beyond_window,
                s.yielded,
                s.pipelined,
                s.endgame,
                s.timed_out,
                s.cancels,
                s.duplicate,
                s.in_flight_other_isp,
                s.received,
                s.busy
            );
        }
    }
    out
}

/// Per-bin rates (bytes/s) of several cumulative series, summed: each node's own samples, whenever they
/// were taken (a late or restarted daemon has fewer).
fn summed_rates<'a>(series: impl Iterator<Item = &'a [(f64, f64)]>, end: f64, bin: f64) -> Vec<f64> {
    let mut sum = vec![0.0; (end / bin).ceil().max(1.0) as usize];
    for s in series {
        for (acc, r) in sum.iter_mut().zip(rates(s, end, bin)) {
            *acc += r;
        }
    }
    sum
}

/// `timeline.csv` of the lab, as the simulator writes it for its run: per bin of `bin` seconds from time 0,
/// the superseeders' and the cinemas' upload rates `s` and `c` (bytes/s, from the daemons' bytes handed to
/// streams, polled every second) in Mbit/s, and the fleet's upload utilisation against `capacity` bytes/s
/// (u_s + sum of u_i). Side by side with the prediction's it shows where the real daemons lose time.
pub fn timeline_csv(s: &[f64], c: &[f64], wire: &[f64], capacity: f64, bin: f64) -> String {
    let mut out = String::from(
        "t_s,superseeders_out_mbit_s,cinemas_up_mbit_s,fleet_up_utilisation,fleet_wire_utilisation\n",
    );
    let share = |x: f64| if capacity > 0.0 { x / capacity } else { 0.0 };
    for (i, (a, b)) in s.iter().zip(c).enumerate() {
        let w = wire.get(i).copied().unwrap_or(0.0);
        out.push_str(&format!(
            "{:.0},{:.1},{:.1},{:.3},{:.3}\n",
            i as f64 * bin,
            a * 8e-6,
            b * 8e-6,
            share(a + b),
            share(w)
        ));
    }
    out
}

/// Builds rows and report.
pub fn build(sc: &Scenario, seed: u64, topo: &Topology, targets: &[Vec<bool>], m: &Measured) -> Built {
    let n = topo.len();
    let publish: Vec<Option<(String, f64)>> = m.published.clone();
    let p0 = publish[0].as_ref().map_or(0.0, |p| p.1);
    let complete = |i: usize, k: usize| -> Option<f64> {
        let (id, t) = publish[k].as_ref()?;
        let hook = m.hook_done[i].get(id).copied();
        let seen = m.nodes[i].first_complete.get(id).copied();
        let c = match (hook, seen) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((c - t).max(0.0))
    };
    // Delivered bytes: what the other nodes received from each node (their `/peers`), since a daemon's
    // `bytes_sent` counts chunks handed to streams, delivered or not (a slow uploader's queue).
    let mut delivered = vec![0u64; n];
    for (i, o) in m.nodes.iter().enumerate() {
        let Some(id) = &o.peer_id else { continue };
        for (j, other) in m.nodes.iter().enumerate() {
            if j != i {
                delivered[i] +=
                    other.from_peer.iter().filter(|((_, p), _)| p == id).map(|(_, v)| v.1).sum::<u64>();
            }
        }
    }
    let mut rows = Vec::with_capacity(n);
    for (i, node) in topo.nodes.iter().enumerate() {
        let b = m.nodes[i].total();
        let gossip = publish[0]
            .as_ref()
            .and_then(|(id, t)| m.nodes[i].first_seen.get(id).map(|s| ((s - t).max(0.0)) * 1e3));
        rows.push(NodeRow {
            name: node.name.clone(),
            isp: topo.isps[node.isp as usize].clone(),
            class: node.class.clone(),
            seeder: node.seeder,
            up: node.up,
            down: node.down,
            online_s: report::online_after(m.first_start[i], p0),
            complete_s: (0..sc.film.len()).map(|k| if node.seeder { None } else { complete(i, k) }).collect(),
            offline_s: None,
            bytes_up: if m.nodes[i].peer_id.is_some() { delivered[i] } else { b.up as u64 },
            bytes_down: b.down as u64,
            down_same_isp: b.down_same_isp as u64,
            down_other_isp: b.down_other_isp as u64,
            gossip_ms: if node.seeder { None } else { gossip },
            duplicates: None,
            lookup_hops: None,
            lookup_ms: None,
            busy_answers: Some(b.busy_answers as u64),
            busy_received: Some(b.busy_received as u64),
        });
    }
    let seeder_isp = topo.nodes[topo.first_seeder as usize].isp as usize;
    let films: Vec<FilmReport> = sc
        .film
        .iter()
        .enumerate()
        .map(|(k, film)| {
            let ts: Vec<usize> = (0..n).filter(|&i| targets[k][i]).collect();
            let times: Vec<f64> = ts.iter().filter_map(|&i| rows[i].complete_s[k]).collect();
            let b = film_bound(sc, topo, k, |i| targets[k][i]);
            let t_measured = (times.len() == ts.len()).then(|| times.iter().copied().fold(0.0, f64::max));
            let mut importing = vec![false; topo.isps.len()];
            for &i in &ts {
                importing[topo.nodes[i].isp as usize] = true;
            }
            let importing = importing.iter().enumerate().filter(|&(j, &x)| x && j != seeder_isp).count();
            FilmReport {
                name: film.name.clone(),
                size: film.size.0,
                chunks: sc.chunks(film),
                targets: ts.len() as u32,
                complete: times.len() as u32,
                bound: b,
                t_measured,
                efficiency: t_measured.map(|t| bound::efficiency(b.t_min, t)),
                completion: Quantiles::of(&times),
                transit_min_bytes: bound::transit_minimum(film.size.0, importing),
            }
        })
        .collect();
    let t0_targets: Vec<usize> = (0..n).filter(|&i| targets[0][i]).collect();
    let times: Vec<Option<f64>> =
        t0_targets.iter().map(|&i| rows[i].complete_s[0].map(|c| c - rows[i].online_s)).collect();
    let borders = report::isp_borders(sc, topo);
    let downloaders: Vec<Downloader> = t0_targets
        .iter()
        .zip(&times)
        .map(|(&i, &time)| Downloader {
            class: rows[i].class.clone(),
            up: rows[i].up,
            down: rows[i].down,
            time,
            border: borders[topo.nodes[i].isp as usize],
            online: rows[i].online_s,
        })
        .collect();
    let u_s = sc.seeders.up.0 * f64::from(sc.seeders.count);
    let seeders: Vec<usize> = (0..n).filter(|&i| topo.nodes[i].seeder).collect();
    let capacity: f64 = topo.nodes.iter().map(|x| x.up).sum();
    let bin = bin_width(m.end);
    let egress = summed_rates(seeders.iter().map(|&s| m.nodes[s].sent.as_slice()), m.end, bin);
    let cinemas = (0..n).filter(|&i| !topo.nodes[i].seeder).map(|i| m.nodes[i].sent.as_slice());
    let wire = summed_rates(m.nodes.iter().map(|o| o.wire_sent.as_slice()), m.end, bin);
    let timeline = timeline_csv(&egress, &summed_rates(cinemas, m.end, bin), &wire, capacity, bin);
    let last = films[0].t_measured.map_or(m.end, |t| p0 + t);
    let busy_sent: f64 = seeders.iter().map(|&s| at(&m.nodes[s].sent, last) - at(&m.nodes[s].sent, p0)).sum();
    let mut isp_matrix = vec![vec![0u64; topo.isps.len()]; topo.isps.len()];
    for (i, node) in topo.nodes.iter().enumerate() {
        for (isp, bytes) in m.nodes[i].from_peer.values() {
            if let Some(j) = topo.isps.iter().position(|x| x == isp) {
                isp_matrix[j][node.isp as usize] += bytes;
            }
        }
    }
    let transit_bytes: u64 = rows.iter().map(|r| r.down_other_isp).sum();
    let transit_min_bytes: u64 = films.iter().map(|f| f.transit_min_bytes).sum();
    let seeder_egress_bytes: u64 = seeders.iter().map(|&s| rows[s].bytes_up).sum();
    let total_film: u64 = sc.film.iter().map(|f| f.size.0).sum();
    let gossip: Vec<f64> = rows.iter().filter_map(|r| r.gossip_ms).collect();
    let incomplete = films.iter().map(|f| f.targets - f.complete).sum();
    let wire = wire_figures(sc, topo, &rows, &m.wire, |i| targets[0][i], films[0].t_measured);
    let cdf = CdfFigures::compute(sc.film[0].size.0 as f64, u_s, &downloaders);
    let report = LabReport {
        body: "lab",
        scenario: sc.name.clone(),
        seed,
        cinemas: sc.cinemas,
        seeders: sc.seeders.count,
        t_min: films[0].bound.t_min,
        t_measured: films[0].t_measured,
        efficiency: films[0].efficiency,
        last_point_efficiency: cdf.last_point_efficiency(),
        cdf,
        seeder_utilisation: bound::utilisation(busy_sent, u_s, last - p0),
        films,
        transit_bytes,
        transit_min_bytes,
        transit_ratio: if transit_min_bytes > 0 {
            transit_bytes as f64 / transit_min_bytes as f64
        } else {
            0.0
        },
        seeder_egress_bytes,
        seeder_egress_copies: seeder_egress_bytes as f64 / total_film.max(1) as f64,
        seeder_egress_peak: egress.iter().copied().fold(0.0, f64::max),
        wire,
        tcp: TcpFigures::compute(&rows, &m.tcp, m.congestion_control.clone()),
        memory: m.memory.clone(),
        gossip_delivery_ms: Quantiles::of(&gossip),
        isps: topo.isps.clone(),
        isp_matrix,
        end_secs: m.end,
        finished: m.finished,
        incomplete,
        shaping: SHAPING,
        upload_limit_share: None,
        uplink_queue_ms: None,
        sysctls: Vec::new(),
        latency: m.latency,
        gossip_config: sc.gossip.clone(),
        transfer_config: sc.transfer.clone(),
        policy_config: sc.policy.clone(),
    };
    let requests =
        requests_csv(rows.iter().zip(&m.nodes).map(|(r, o)| (r.name.as_str(), o.requests.as_slice())));
    Built { rows, report, egress: (egress, bin), times, timeline, requests }
}

/// The summary's line on the machine's memory: a VM that hands free memory back to its host makes the
/// daemons' first writes fault on the host, so a run with reporting on measured the host too.
fn memory_line(m: &super::memory::MemoryFigures) -> String {
    let warmed = format!("page cache warmed: {:.2} GB in {:.1} s", m.warmed_bytes as f64 / 1e9, m.warm_secs);
    let reported = m.reported_kib.map_or(String::new(), |k| {
        format!("; the guest reported {:.0} MiB of free memory to its host during the run", k as f64 / 1024.0)
    });
    match m.reporting_order {
        Some((before, during)) => format!(
            "memory: free page reporting held off (page_reporting_order {before} -> {during}, restored); {warmed}{reported}\n"
        ),
        None if m.reported_kib.is_some_and(|k| k > 0) => format!(
            "memory: free page reporting could not be held off; {warmed}{reported}: first writes into that memory fault on the host, and the figures measure it too\n"
        ),
        None => format!("memory: {warmed}{reported}\n"),
    }
}

/// The terminal summary.
pub fn summary(r: &LabReport) -> String {
    let f = &r.films[0];
    let opt = |x: Option<f64>, d: usize| x.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "lab {} seed {}: {} cinemas, {}/{} complete in {:.1} s{}\n",
        r.scenario,
        r.seed,
        r.cinemas,
        f.complete,
        f.targets,
        r.end_secs,
        if r.finished { "" } else { " (timeout)" }
    );
    s += &format!(
        "  bound T_min {:.1} s, T_measured {} s, efficiency {}; completion p50 {:.1} s p90 {:.1} s max {:.1} s\n",
        r.t_min,
        opt(r.t_measured, 1),
        opt(r.efficiency, 3),
        f.completion.p50,
        f.completion.p90,
        f.completion.max
    );
    s += &report::cdf_summary(&r.cdf, r.seeder_utilisation);
    s += &format!(
        "transit {:.3} GB vs minimum {:.3} GB (ratio {:.2}); superseeder egress {:.2} copies, peak {:.0} Mbit/s\n{}\n",
        r.transit_bytes as f64 / 1e9,
        r.transit_min_bytes as f64 / 1e9,
        r.transit_ratio,
        r.seeder_egress_copies,
        r.seeder_egress_peak * 8.0 / 1e6,
        SHAPING
    );
    let pct = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{:.1}%", 100.0 * x));
    s += &format!(
        "TCP congestion control {}; segments retransmitted: {} of the superseeders', {} of the cinemas'\n",
        r.tcp.congestion_control.as_deref().unwrap_or("unknown"),
        pct(r.tcp.seeder_retransmitted),
        pct(r.tcp.cinema_retransmitted)
    );
    s += &memory_line(&r.memory);
    if let Some(share) = r.upload_limit_share {
        s += &format!("daemons' upload limit: {share} of each link's rate (--upload-limit-share)\n");
    }
    if let Some(ms) = r.uplink_queue_ms {
        s += &format!("cinemas' upload queues: {ms:.0} ms (--uplink-queue)\n");
    }
    if !r.sysctls.is_empty() {
        let set: Vec<String> = r.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s += &format!("sysctls in every node's namespace (--sysctl): {}\n", set.join(", "));
    }
    s += &match &r.latency {
        Some(d) => format!(
            "latency: the scenario's one-way latency per pair, held at the receiver: {} packets held, \
             let through at most {:.2} ms late ({} more than 1 ms late), at most {} held at once, {} overruns, \
             {} without the kernel's stamp, {} CPU-s{}\n",
            d.packets,
            d.late_max_ms,
            d.late_over_1ms,
            d.held_max,
            d.overruns,
            d.unstamped,
            d.cpu_s.map_or("-".to_owned(), |c| format!("{c:.1}")),
            if d.realtime { "" } else { " (at normal priority: SCHED_FIFO refused)" }
        ),
        None => "latency: none added (--no-latency; veth and bridges only)\n".to_owned(),
    };
    if let Some(w) = &r.wire {
        s += &format!(
            "wire: content is {:.3} of the bytes the superseeders' links sent, {:.3} of the cinemas' ({:.3} of \
             what they received); Kumar-Ross at those content rates {:.1} s, efficiency against it {}\n",
            w.seeder_payload_share,
            w.cinema_payload_share,
            w.cinema_down_payload_share,
            w.t_min,
            opt(w.efficiency, 3)
        );
    }
    s
}

/// Writes `report.json`, `nodes.csv` and the plots into `dir`.
pub fn write(dir: &Path, sc: &Scenario, b: &Built) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(LabError::io(format!("cannot create {}", dir.display())))?;
    let json = serde_json::to_string_pretty(&b.report).map_err(|e| LabError::Config(e.to_string()))? + "\n";
    let r = &b.report;
    let unit = plot::time_unit(r.end_secs, "after coming online");
    let completion =
        report::completion_series(&format!("{} (lab)", sc.film[0].name), &b.times, &r.cdf.bound, unit.0, 0);
    let gossip: Vec<f64> = b.rows.iter().filter_map(|r| r.gossip_ms).collect();
    let u_s = sc.seeders.up.0 * f64::from(sc.seeders.count);
    let files = vec![
        ("report.json", json),
        ("nodes.csv", report::nodes_csv(&b.rows)),
        ("timeline.csv", b.timeline.clone()),
        ("requests.csv", b.requests.clone()),
        (
            "completion-cdf.svg",
            plot::lines("Completion time CDF (lab)", &unit.1, "fraction of targets", &completion)?,
        ),
        (
            "seeder-egress.svg",
            report::egress_chart(&b.egress.0, b.egress.1, u_s, plot::time_unit(r.end_secs, "after start"))?,
        ),
        ("isp-matrix.svg", plot::heatmap("Bytes between ISPs in the lab", &r.isps, &r.isp_matrix)?),
        (
            "gossip-cdf.svg",
            plot::lines(
                "Catalogue entry first listed (lab)",
                "ms after publish",
                "fraction of nodes",
                &[Series::solid("delivery", plot::cdf(&gossip, gossip.len()), 0)],
            )?,
        ),
    ];
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(LabError::io(format!("cannot write {}", p.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_and_rates() {
        let s = [(1.0, 10.0), (3.0, 30.0)];
        assert_eq!(at(&s, 2.0), 20.0);
        assert_eq!(at(&s, 0.5), 5.0);
        assert_eq!(at(&s, 9.0), 30.0);
        assert_eq!(at(&[], 1.0), 0.0);
        assert_eq!(rates(&s, 4.0, 2.0), vec![10.0, 5.0]);
        assert_eq!((bin_width(50.0), bin_width(100.0), bin_width(1000.0)), (1.0, 2.0, 20.0));
    }

    /// A node's row on a 100/100 Mbit/s link that completed at 10 s, having sent `up` and received `down`.
    fn row(seeder: bool, up: u64, down: u64) -> NodeRow {
        NodeRow {
            name: String::new(),
            isp: String::new(),
            class: String::new(),
            seeder,
            up: 12.5e6,
            down: 12.5e6,
            online_s: 0.0,
            complete_s: vec![Some(10.0)],
            offline_s: None,
            bytes_up: up,
            bytes_down: down,
            down_same_isp: down,
            down_other_isp: 0,
            gossip_ms: None,
            duplicates: None,
            lookup_hops: None,
            lookup_ms: None,
            busy_answers: None,
            busy_received: None,
        }
    }

    #[test]
    fn retransmitted_shares_per_class() {
        let rows = vec![row(false, 0, 0), row(false, 0, 0), row(true, 0, 0)];
        let t = TcpFigures::compute(
            &rows,
            &[Some((100, 10)), Some((300, 50)), Some((1000, 2))],
            Some("cubic".into()),
        );
        assert_eq!(t.congestion_control.as_deref(), Some("cubic"));
        assert_eq!(t.cinema_retransmitted, Some(60.0 / 400.0));
        assert_eq!(t.seeder_retransmitted, Some(0.002));
        let t = TcpFigures::compute(&rows, &[Some((100, 10)), None, Some((0, 0))], None);
        assert_eq!((t.cinema_retransmitted, t.seeder_retransmitted), (None, None), "one unread, none sent");
    }

    #[test]
    fn wire_figures_scale_every_link_by_its_class_content_share() {
        // MINI: a 100 Mbit/s superseeder and four 100/100 Mbit/s cinemas, a 64 MiB film. Kumar-Ross:
        // max(F/u_s, F/d, 4F/(5 x 12.5 MB/s)) = 4F/62.5e6.
        let sc = Scenario::parse(crate::testing::MINI, "mini", &[]).unwrap();
        let topo = crate::engine::world(&sc, 1).0;
        assert_eq!(topo.first_seeder, 4, "cinemas 0-3, then the superseeder");
        let f = sc.film[0].size.0 as f64;
        let mut rows = vec![row(false, 90, 90), row(false, 90, 95), row(false, 90, 0), row(false, 90, 95)];
        rows.push(row(true, 160, 0));
        // The superseeder's link sent 200 bytes for its 160 (0.8); the cinemas' 400 for 360 (0.9), and
        // received 400 for 280 (0.7).
        let mut wire = vec![Some((100, 100)); 4];
        wire.push(Some((200, 0)));
        let w = wire_figures(&sc, &topo, &rows, &wire, |i| i < 4, Some(20.0)).unwrap();
        assert_eq!((w.seeder_payload_share, w.cinema_payload_share), (0.8, 0.9));
        assert!((w.cinema_down_payload_share - 0.7).abs() < 1e-12);
        // Content rates: u_s 10 MB/s, u_i 11.25 MB/s, d_i 8.75 MB/s: max(F/10e6, F/8.75e6, 4F/55e6).
        let t_min = f / 8.75e6;
        assert!((w.t_min - t_min).abs() < 1e-9, "{} {t_min}", w.t_min);
        assert!(w.t_min > 4.0 * f / 62.5e6, "the wire's cost raises the bound");
        assert!((w.efficiency.unwrap() - t_min / 20.0).abs() < 1e-12);
        // A node whose counters could not be read: no figures rather than wrong ones.
        wire[2] = None;
        assert_eq!(wire_figures(&sc, &topo, &rows, &wire, |i| i < 4, Some(20.0)), None);
    }

    #[test]
    fn the_request_metrics_of_every_node_become_one_csv() {
        let m = "# TYPE cinemesh_request_window gauge\ncinemesh_request_window 16\ncinemesh_requests_in_flight 19\n\
                 cinemesh_requests_in_flight_other_isp 7\n\
                 cinemesh_chunk_requests_total 120\ncinemesh_chunk_requests_beyond_window_total 30\n\
                 cinemesh_chunk_requests_yielded_total 0\ncinemesh_chunk_requests_endgame_total 2\n\
                 cinemesh_chunk_requests_pipelined_total 3\ncinemesh_chunk_requests_timed_out_total 1\n\
                 cinemesh_chunk_cancels_total 4\ncinemesh_chunks_duplicate_total 5\n\
                 cinemesh_chunks_verified_total 90\ncinemesh_chunks_failed_total{reason=\"busy\"} 11\n\
                 cinemesh_chunks_failed_total{reason=\"timeout\"} 1\n";
        let s = RequestSample::from_metrics(1.5, m);
        assert_eq!(
            (s.window, s.in_flight, s.sent, s.beyond_window, s.yielded, s.pipelined),
            (16.0, 19.0, 120.0, 30.0, 0.0, 3.0)
        );
        assert_eq!(
            (s.endgame, s.timed_out, s.cancels, s.duplicate, s.in_flight_other_isp),
            (2.0, 1.0, 4.0, 5.0, 7.0)
        );
        assert_eq!((s.received, s.busy), (90.0, 11.0));
        let csv = requests_csv([("cinema-0", &[s][..]), ("cinema-1", &[][..])].into_iter());
        assert_eq!(
            csv,
            "node,t_s,window,in_flight,requests,beyond_window,yielded,pipelined,endgame,timed_out,cancels,duplicate,in_flight_other_isp,received,busy\n\
             cinema-0,1.50,16,19,120,30,0,3,2,1,4,5,7,90,11\n"
        );
    }

    #[test]
    fn the_lab_timeline_bins_what_the_daemons_sent() {
        // Superseeders: 1 MB/s for 4 s. Two cinemas: 0.5 MB/s each for the first 2 s, then idle; the first
        // was polled from 1 s on, the second only until 2 s.
        let seeders = summed_rates([&[(0.0, 0.0), (4.0, 4e6)][..]].into_iter(), 4.0, 2.0);
        let cinemas = summed_rates(
            [&[(1.0, 0.5e6), (2.0, 1e6), (4.0, 1e6)][..], &[(0.0, 0.0), (2.0, 1e6)][..]].into_iter(),
            4.0,
            2.0,
        );
        assert_eq!(cinemas, vec![1e6, 0.0]);
        // Capacity 3 MB/s: 2 MB/s used in the first bin, 1 MB/s in the second.
        // The links' frames: 2.4 MB/s in the first bin, 1.2 in the second (and no third bin).
        let csv = timeline_csv(&seeders, &cinemas, &[2.4e6, 1.2e6, 9e6], 3e6, 2.0);
        assert_eq!(
            csv,
            "t_s,superseeders_out_mbit_s,cinemas_up_mbit_s,fleet_up_utilisation,fleet_wire_utilisation\n\
             0,8.0,8.0,0.667,0.800\n2,8.0,0.0,0.333,0.400\n"
        );
    }
}
