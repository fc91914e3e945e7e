//! What a run tells the planner: `report.json`, the per-node CSV, the SVG plots and the terminal summary.
//!
//! The headline figures are for the first film: Kumar-Ross `T_min`, `T_measured` (publish -> last target
//! complete), efficiency, transit bytes against the per-ISP minimum, superseeder egress, gossip delivery
//! p50/p99 and duplicates, and the completion-CDF yardstick (point slowdown `T(k)/B(k)` at p50/p90/max,
//! overall and per access class, see [`bound`]) with the superseeders' utilisation. Per-film figures are
//! in `films`. [`NodeRow`], [`nodes_csv`] and [`cdf_summary`] are shared with the lab, so both bodies write
//! the same columns and print the same figures.

use std::fmt::Write as _;
use std::path::Path;

use cinemesh_core::config::{GossipConfig, PolicyConfig, TransferConfig};
use serde::Serialize;

use crate::bound::{self, Bound, CdfFigures, Downloader, Slowdown};
use crate::engine::Outcome;
use crate::error::Error;
use crate::plot::{self, Series};
use crate::scenario::Scenario;
use crate::topology::Topology;

/// Quantiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Values in the sample.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of `v` (zeros when empty).
    pub fn of(v: &[f64]) -> Self {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Quantiles { n: v.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1.0) }
    }
}

/// One film's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FilmReport {
    /// Title.
    pub name: String,
    /// Size, bytes.
    pub size: u64,
    /// Chunks.
    pub chunks: u32,
    /// Cinemas targeted.
    pub targets: u32,
    /// Targets complete at the end.
    pub complete: u32,
    /// The Kumar-Ross bound over the targets, seconds.
    pub bound: Bound,
    /// Publish -> last target complete, seconds (`None` when some target never completed).
    pub t_measured: Option<f64>,
    /// `t_min / t_measured`.
    pub efficiency: Option<f64>,
    /// Completion times of the targets after publish, seconds.
    pub completion: Quantiles,
    /// Minimum transit: size x ISPs holding a target and no superseeder.
    pub transit_min_bytes: u64,
}

/// Gossip figures over all (node, film) deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct GossipReport {
    /// Delivery delay after publish through the mesh (nodes online at publish), milliseconds.
    pub delivery_ms: Quantiles,
    /// Entries received later by anti-entropy (nodes offline at publish or missed by the mesh).
    pub catch_ups: u32,
    /// Mean duplicate deliveries per node and entry.
    pub duplicates_mean: f64,
    /// Most duplicates at one node for one entry.
    pub duplicates_max: u32,
}

/// Kademlia lookup figures.
#[derive(Debug, Clone, Serialize)]
pub struct KadReport {
    /// Mean rounds.
    pub hops_mean: f64,
    /// Lookup duration, milliseconds.
    pub latency_ms: Quantiles,
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// RNG seed.
    pub seed: u64,
    /// Cinemas.
    pub cinemas: u32,
    /// Superseeders.
    pub seeders: u32,
    /// Film 0's bound, seconds.
    pub t_min: f64,
    /// Film 0's measured time, seconds.
    pub t_measured: Option<f64>,
    /// Film 0's efficiency: `t_min` over the time from its publish to the last completion, so a cinema that
    /// comes online late (or is offline for hours) weighs on it with time no schedule could use.
    pub efficiency: Option<f64>,
    /// Film 0's efficiency at the completion CDF's last point: `B(N) / T(N)`, each cinema's time counted
    /// from when it came online (the completion-CDF yardstick's Kumar-Ross; `1 / cdf.last_point`).
    pub last_point_efficiency: Option<f64>,
    /// Per film.
    pub films: Vec<FilmReport>,
    /// Bytes that crossed an ISP border.
    pub transit_bytes: u64,
    /// Sum of the films' transit minimums.
    pub transit_min_bytes: u64,
    /// `transit_bytes / transit_min_bytes` (1.0 is the limit).
    pub transit_ratio: f64,
    /// Bytes uploaded by superseeders.
    pub seeder_egress_bytes: u64,
    /// Superseeder egress / total film bytes (copies pushed by the distributor).
    pub seeder_egress_copies: f64,
    /// Peak superseeder egress over one bin, bytes/s.
    pub seeder_egress_peak: f64,
    /// Film 0's completion-CDF yardstick: `B(k)` and the point slowdowns, overall and per access class.
    pub cdf: CdfFigures,
    /// Superseeder egress over their capacity from the first publish until the last target completed
    /// (or the run ended).
    pub seeder_utilisation: f64,
    /// Gossip dissemination.
    pub gossip: GossipReport,
    /// Provider lookups.
    pub kad: KadReport,
    /// ISP names (rows and columns of `isp_matrix`).
    pub isps: Vec<String>,
    /// Bytes from ISP row to ISP column.
    pub isp_matrix: Vec<Vec<u64>>,
    /// Virtual time at the end, seconds.
    pub end_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Events per kind (`engine::EVENT_KINDS` names them): where the simulator's time goes.
    pub events_by_kind: std::collections::BTreeMap<String, u64>,
    /// Chunk transfers completed.
    pub transfers: u64,
    /// Of which delivered a chunk already held (end-game duplicates).
    pub duplicate_transfers: u64,
    /// Busy answers.
    pub busy_answers: u64,
    /// Chunk requests sent to a peer beyond the count its load allows, to keep its link busy across the
    /// round trip.
    pub pipelined_requests: u64,
    /// Cinemas that found their own uplink full and paced their answers by it (`transfer.find_uplink`;
    /// only with queues modelled long enough, `sim.uplink_queue`).
    pub uplinks_found: u64,
    /// Their findings in all: each 10 s bin in which a node's queue was long counts once.
    pub uplink_findings: u64,
    /// Peers penalised.
    pub penalties: u64,
    /// Dials refused because one end held `peers.max_connections` connections.
    pub dials_refused: u64,
    /// Bandwidth recomputations.
    pub rate_ticks: u64,
    /// The bandwidth model's grid (`sim.rate_quantum`, resolved), seconds.
    pub rate_quantum_s: f64,
    /// Median chunk transfer time, seconds (about 9% resolution).
    pub transfer_p50_s: Option<f64>,
    /// What makes the figures less trustworthy than they look (e.g. a quantum too coarse for the chunks).
    pub warnings: Vec<String>,
    /// Targets that did not complete.
    pub incomplete: u32,
    /// The `[gossip]` section used.
    pub gossip_config: GossipConfig,
    /// The `[transfer]` section used.
    pub transfer_config: TransferConfig,
    /// The `[policy]` section used.
    pub policy_config: PolicyConfig,
}

/// The bound of film `f` over the nodes of `topo` for which `targeted(node)` holds.
pub fn film_bound(sc: &Scenario, topo: &Topology, f: usize, targeted: impl Fn(usize) -> bool) -> Bound {
    film_bound_at(sc, topo, f, targeted, [1.0; 3])
}

/// [`film_bound`] with every link at a share of its rate: `[superseeders' upload, targets' upload,
/// targets' download]` (the content share of what the links carry, in the lab).
pub fn film_bound_at(
    sc: &Scenario,
    topo: &Topology,
    f: usize,
    targeted: impl Fn(usize) -> bool,
    [seeder_up, up, down]: [f64; 3],
) -> Bound {
    let targets: Vec<usize> = (0..topo.len()).filter(|&i| targeted(i)).collect();
    let ups: Vec<f64> = targets.iter().map(|&i| topo.nodes[i].up * up).collect();
    let downs: Vec<f64> = targets.iter().map(|&i| topo.nodes[i].down * down).collect();
    let u_s = sc.seeders.up.0 * f64::from(sc.seeders.count) * seeder_up;
    bound::kumar_ross(sc.film[f].size.0 as f64, u_s, &ups, &downs)
}

/// Film 0's targets as the completion-CDF yardstick sees them, in node order: access class, links, when
/// each came online and its completion time counted from then.
pub fn film0_downloaders(sc: &Scenario, o: &Outcome) -> Vec<Downloader> {
    let publish0 = sc.film[0].publish.as_secs_f64();
    let borders = isp_borders(sc, &o.topo);
    (0..o.stats.len())
        .filter(|&i| o.stats[i].targeted[0])
        .map(|i| {
            let n = &o.topo.nodes[i];
            let online = online_after(o.stats[i].online, publish0);
            Downloader {
                class: n.class.clone(),
                up: n.up,
                down: n.down,
                time: o.stats[i].complete[0].map(|c| c - online),
                border: borders[n.isp as usize],
                online,
            }
        })
        .collect()
}

impl Report {
    /// Computes the report of a run.
    pub fn new(sc: &Scenario, seed: u64, o: &Outcome) -> Report {
        let seeder_isp = o.topo.nodes[o.topo.first_seeder as usize].isp;
        let mut films = Vec::new();
        for (f, film) in sc.film.iter().enumerate() {
            let targets: Vec<usize> = (0..o.stats.len()).filter(|&i| o.stats[i].targeted[f]).collect();
            let times: Vec<f64> = targets.iter().filter_map(|&i| o.stats[i].complete[f]).collect();
            let b = film_bound(sc, &o.topo, f, |i| o.stats[i].targeted[f]);
            let t_measured =
                (times.len() == targets.len()).then(|| times.iter().copied().fold(0.0, f64::max));
            let mut isps_with_targets = vec![false; o.topo.isps.len()];
            for &i in &targets {
                isps_with_targets[o.topo.nodes[i].isp as usize] = true;
            }
            let importing =
                isps_with_targets.iter().enumerate().filter(|&(k, &t)| t && k != seeder_isp as usize).count();
            films.push(FilmReport {
                name: film.name.clone(),
                size: film.size.0,
                chunks: sc.chunks(film),
                targets: targets.len() as u32,
                complete: times.len() as u32,
                bound: b,
                t_measured,
                efficiency: t_measured.map(|t| bound::efficiency(b.t_min, t)),
                completion: Quantiles::of(&times),
                transit_min_bytes: bound::transit_minimum(film.size.0, importing),
            });
        }
        let transit_bytes: u64 = o
            .isp_matrix
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.iter().enumerate().filter(move |&(j, _)| j != i).map(|(_, &b)| b))
            .sum();
        let transit_min_bytes: u64 = films.iter().map(|f| f.transit_min_bytes).sum();
        let seeder_egress_bytes: u64 =
            o.stats.iter().zip(&o.topo.nodes).filter(|(_, n)| n.seeder).map(|(s, _)| s.bytes_up).sum();
        let total_film_bytes: u64 = sc.film.iter().map(|f| f.size.0).sum();
        let delivery = mesh_delivery_ms(o);
        let catch_ups = o
            .stats
            .iter()
            .flat_map(|s| s.gossip.iter().zip(&s.via_mesh))
            .filter(|(t, &m)| t.is_some() && !m)
            .count();
        let dups: Vec<u32> = o.stats.iter().flat_map(|s| s.duplicates.iter().copied()).collect();
        let lookups: Vec<_> = o.stats.iter().flat_map(|s| s.lookup.iter().flatten().copied()).collect();
        let f0 = &films[0];
        let first_publish = sc.film.iter().map(|f| f.publish.as_secs_f64()).fold(f64::INFINITY, f64::min);
        let downloaders = film0_downloaders(sc, o);
        let u_s = sc.seeders.up.0 * f64::from(sc.seeders.count);
        let cdf = CdfFigures::compute(sc.film[0].size.0 as f64, u_s, &downloaders);
        Report {
            seeder_utilisation: bound::utilisation(
                seeder_egress_bytes as f64,
                u_s,
                o.end_secs - first_publish,
            ),
            scenario: sc.name.clone(),
            seed,
            cinemas: sc.cinemas,
            seeders: sc.seeders.count,
            t_min: f0.bound.t_min,
            t_measured: f0.t_measured,
            efficiency: f0.efficiency,
            last_point_efficiency: cdf.last_point_efficiency(),
            transit_bytes,
            transit_min_bytes,
            transit_ratio: if transit_min_bytes > 0 {
                transit_bytes as f64 / transit_min_bytes as f64
            } else {
                0.0
            },
            seeder_egress_bytes,
            seeder_egress_copies: seeder_egress_bytes as f64 / total_film_bytes.max(1) as f64,
            seeder_egress_peak: o.egress_bins.iter().copied().max().unwrap_or(0) as f64 / o.egress_bin_secs,
            gossip: GossipReport {
                delivery_ms: Quantiles::of(&delivery),
                catch_ups: catch_ups as u32,
                duplicates_mean: dups.iter().map(|&d| f64::from(d)).sum::<f64>() / dups.len().max(1) as f64,
                duplicates_max: dups.iter().copied().max().unwrap_or(0),
            },
            kad: KadReport {
                hops_mean: lookups.iter().map(|l| f64::from(l.hops)).sum::<f64>()
                    / lookups.len().max(1) as f64,
                latency_ms: Quantiles::of(&lookups.iter().map(|l| l.micros as f64 / 1e3).collect::<Vec<_>>()),
            },
            films,
            isps: o.topo.isps.clone(),
            isp_matrix: o.isp_matrix.clone(),
            end_secs: o.end_secs,
            events: o.events,
            events_by_kind: crate::engine::EVENT_KINDS
                .iter()
                .zip(&o.events_by_kind)
                .filter(|(_, &n)| n > 0)
                .map(|(k, &n)| ((*k).to_owned(), n))
                .collect(),
            transfers: o.transfers,
            duplicate_transfers: o.duplicate_transfers,
            busy_answers: o.busy,
            pipelined_requests: o.pipelined,
            uplinks_found: o.uplinks_found,
            uplink_findings: o.uplink_findings,
            penalties: o.penalties,
            dials_refused: o.dials_refused,
            rate_ticks: o.ticks,
            rate_quantum_s: o.rate_quantum_secs,
            transfer_p50_s: o.transfer_p50_secs,
            warnings: quantum_warning(o.rate_quantum_secs, o.transfer_p50_secs)
                .into_iter()
                .chain(narrow_uplink_warning(sc, &o.topo))
                .collect(),
            incomplete: o.incomplete,
            gossip_config: sc.gossip.clone(),
            transfer_config: sc.transfer.clone(),
            policy_config: sc.policy.clone(),
            cdf,
        }
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let h = |x: f64| format!("{:.2} h ({x:.0} s)", x / 3600.0);
        let gb = |b: u64| format!("{:.1} GB", b as f64 / 1e9);
        let _ = writeln!(
            s,
            "scenario {} seed {}: {} cinemas, {} superseeders",
            self.scenario, self.seed, self.cinemas, self.seeders
        );
        for f in &self.films {
            let b = &f.bound;
            let _ = writeln!(
                s,
                "film {:?} ({}, {} chunks): {}/{} targets complete",
                f.name,
                gb(f.size),
                f.chunks,
                f.complete,
                f.targets
            );
            let _ = writeln!(
                s,
                "  bound T_min = {} = max(F/u_s {:.0} s, F/d_min {:.0} s, N*F/(u_s+sum u_i) {:.0} s)",
                h(b.t_min),
                b.seeder_term,
                b.download_term,
                b.aggregate_term
            );
            match (f.t_measured, f.efficiency) {
                (Some(t), Some(e)) => {
                    let _ = writeln!(s, "  T_measured = {}, efficiency {:.3}", h(t), e);
                }
                _ => {
                    let _ = writeln!(s, "  T_measured: not every target completed");
                }
            }
            let c = &f.completion;
            let _ = writeln!(s, "  completion p50 {} p90 {} max {}", h(c.p50), h(c.p90), h(c.max));
        }
        let _ = writeln!(
            s,
            "transit {} vs minimum {} (ratio {:.2}); superseeder egress {} ({:.2} copies, peak {:.0} Mbit/s)",
            gb(self.transit_bytes),
            gb(self.transit_min_bytes),
            self.transit_ratio,
            gb(self.seeder_egress_bytes),
            self.seeder_egress_copies,
            self.seeder_egress_peak * 8.0 / 1e6
        );
        s.push_str(&cdf_summary(&self.cdf, self.seeder_utilisation));
        let g = &self.gossip;
        let _ = writeln!(
            s,
            "gossip delivery (mesh) p50 {:.0} ms p99 {:.0} ms max {:.0} ms; {} catch-ups; duplicates mean {:.2} max {}",
            g.delivery_ms.p50,
            g.delivery_ms.p99,
            g.delivery_ms.max,
            g.catch_ups,
            g.duplicates_mean,
            g.duplicates_max
        );
        let _ = writeln!(
            s,
            "kad lookup {:.2} hops, p50 {:.0} ms p99 {:.0} ms",
            self.kad.hops_mean, self.kad.latency_ms.p50, self.kad.latency_ms.p99
        );
        let _ = writeln!(
            s,
            "{} events, {} chunk transfers ({} duplicate), {} busy answers, {} requests pipelined over round trips, {} rate ticks, {} incomplete",
            self.events,
            self.transfers,
            self.duplicate_transfers,
            self.busy_answers,
            self.pipelined_requests,
            self.rate_ticks,
            self.incomplete
        );
        if self.uplinks_found > 0 {
            let _ = writeln!(
                s,
                "{} nodes found their uplink full (transfer.find_uplink; {} findings)",
                self.uplinks_found, self.uplink_findings
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let mut kinds: Vec<(&String, &u64)> = self.events_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(s, "events by kind: {}", kinds.join(", "));
        s
    }
}

/// A quantum above this share of the median chunk transfer is reported: every transfer loses up to a
/// quantum at each end, so the run's completion times are pessimistic by one to one and a half times that
/// share (`cinemas-350`, 4 MiB chunks: 1.5% of it moved the point slowdown p90 1%, 2.9% 4%, 24% 39%).
pub const QUANTUM_SHARE_MAX: f64 = 0.05;

/// The share of the median transfer a warning recommends.
pub const QUANTUM_SHARE_ADVISED: f64 = 0.02;

/// The warning for a bandwidth grid of `quantum` seconds against a median transfer of `p50` seconds.
pub fn quantum_warning(quantum: f64, p50: Option<f64>) -> Option<String> {
    let p50 = p50?;
    (quantum > QUANTUM_SHARE_MAX * p50).then(|| {
        format!(
            "sim.rate_quantum {:.0} ms is {:.0}% of the median chunk transfer ({:.0} ms): each transfer waits up \
             to a quantum at its start and its end, so rates and completion times are pessimistic; set \
             sim.rate_quantum to {:.0} ms or less (or auto)",
            quantum * 1e3,
            100.0 * quantum / p50,
            p50 * 1e3,
            (QUANTUM_SHARE_ADVISED * p50 * 1e3).max(1.0)
        )
    })
}

/// Cinemas whose uplink is narrow ([`cinemesh_core::engine::narrow_line`]: their downloads'
/// acknowledgements need a third of it or more) and undeclared (`sim.declared_uplinks` off), in a run that
/// models no queues (`sim.full_queue` and `sim.uplink_queue` unset): such a run never holds acknowledgements
/// behind a cinema's own answers, so it predicts those lines near their own time, where real daemons behind
/// short queues took 1.24-1.64 times it unpaced. With queues modelled, a short full uplink holds them
/// ([`crate::bandwidth`]; docs/benchmarks.md, "Acknowledgements held at a short full uplink").
pub fn narrow_uplink_warning(sc: &Scenario, topo: &crate::topology::Topology) -> Option<String> {
    if sc.sim.declared_uplinks || !sc.sim.full_queue.is_zero() || sc.sim.uplink_queue.is_some() {
        return None;
    }
    let cinemas = topo.nodes.iter().filter(|n| !n.seeder);
    let narrow = cinemas.filter(|n| cinemesh_core::engine::narrow_line(n.up, n.down)).count();
    (narrow > 0).then(|| {
        format!(
            "{narrow} cinemas have narrow uplinks (their downloads' acknowledgements need a third of the line or \
             more) and none is declared: this prediction models no queues, so it does not hold their \
             acknowledgements behind their own answers, and real ADSL cinemas behind short queues took \
             1.24-1.64 times their line's time unpaced (1.12-1.16 with sim.declared_uplinks=true, \
             transfer.uplink on the node): expect them later than predicted, model the queues \
             (sim.full_queue=30ms, as the lab's prediction does), or declare them"
        )
    })
}

/// Delivery delays through the mesh, milliseconds, over all (node, film).
fn mesh_delivery_ms(o: &Outcome) -> Vec<f64> {
    o.stats
        .iter()
        .flat_map(|s| {
            s.gossip.iter().zip(&s.via_mesh).filter(|(_, &m)| m).filter_map(|(t, _)| t.map(|t| t * 1e3))
        })
        .collect()
}

/// Seconds from a film's publish until a node first came online (0 when it was online before).
pub fn online_after(online: Option<f64>, publish: f64) -> f64 {
    online.map(|t| (t - publish).max(0.0)).unwrap_or(0.0)
}

/// Per ISP of `topo`, its border's rate (bytes/s) when the scenario shapes it and no seeder sits inside it:
/// what [`Downloader::border`] says of the cinemas behind it.
pub fn isp_borders(sc: &Scenario, topo: &Topology) -> Vec<Option<f64>> {
    topo.isps
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let seeded = topo.nodes.iter().any(|n| n.seeder && n.isp as usize == j);
            let transit = sc.isp.iter().find(|i| &i.name == name).and_then(|i| i.transit);
            transit.filter(|_| !seeded).map(|t| t.0)
        })
        .collect()
}

/// The yardstick lines of a summary: point slowdown overall and per access class, superseeder utilisation.
pub fn cdf_summary(c: &CdfFigures, utilisation: f64) -> String {
    let f = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "inf".to_owned());
    let q = |q: &Slowdown| format!("p50 {} p90 {} max {}", f(q.p50), f(q.p90), f(q.max));
    let mut s = format!("point slowdown T(k)/B(k) {} over {} cinemas", q(&c.slowdown), c.slowdown.n);
    for (class, x) in &c.per_class {
        let _ = write!(s, "; {class} ({}) {}", x.n, q(x));
    }
    if let Some(b) = &c.bordered {
        let _ = write!(s, "\npoint slowdown against B(k) with the shaped ISP borders {}", q(b));
    }
    if let Some(x) = c.last_point {
        let _ = write!(
            s,
            "\nlast point T(N)/B(N) {x:.2}: Kumar-Ross efficiency {:.3} with each cinema counted from when it came online",
            1.0 / x
        );
    }
    if let Some(j) = c.joint_max {
        let _ = write!(
            s,
            "\nthe best any schedule does for every cinema at once: within {j:.2} of its own B(k) (fluid model, joint_max)"
        );
    }
    let _ = writeln!(
        s,
        "\nsuperseeder utilisation {utilisation:.3} (egress / capacity while a target is incomplete)"
    );
    s
}

/// One row of `nodes.csv`, from either body (the simulator or the lab).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRow {
    /// Display name.
    pub name: String,
    /// ISP name.
    pub isp: String,
    /// Access class (`seeder` for superseeders).
    pub class: String,
    /// Superseeder.
    pub seeder: bool,
    /// Upload, bytes/s.
    pub up: f64,
    /// Download, bytes/s.
    pub down: f64,
    /// Film 0: seconds after its publish when the node first came online (0 if before).
    pub online_s: f64,
    /// Completion of each film, seconds after its publish.
    pub complete_s: Vec<Option<f64>>,
    /// Film 0: seconds offline (churn) after its publish and before its completion, which the point
    /// slowdown counts like any other (simulator only: the lab's daemons run throughout).
    pub offline_s: Option<f64>,
    /// Content bytes uploaded.
    pub bytes_up: u64,
    /// Content bytes downloaded.
    pub bytes_down: u64,
    /// Of which from the same ISP.
    pub down_same_isp: u64,
    /// Of which from other ISPs.
    pub down_other_isp: u64,
    /// Film 0's catalogue entry delivery after publish, ms.
    pub gossip_ms: Option<f64>,
    /// Duplicate gossip deliveries (simulator only).
    pub duplicates: Option<u32>,
    /// Provider lookup rounds (simulator only).
    pub lookup_hops: Option<u32>,
    /// Provider lookup duration, ms (simulator only).
    pub lookup_ms: Option<f64>,
    /// Chunk requests this node answered busy (the engine's `busy_answers`; the node's
    /// `cinemesh_busy_answers_total`).
    pub busy_answers: Option<u64>,
    /// Busy answers this node received to its chunk requests (the scheduler's `busy`; the node's
    /// `cinemesh_chunks_failed_total{reason="busy"}`).
    pub busy_received: Option<u64>,
}

/// The simulator's rows.
pub fn rows(sc: &Scenario, o: &Outcome) -> Vec<NodeRow> {
    let publish0 = sc.film[0].publish.as_secs_f64();
    o.topo
        .nodes
        .iter()
        .zip(&o.stats)
        .map(|(n, st)| {
            let l = st.lookup[0];
            NodeRow {
                name: n.name.clone(),
                isp: o.topo.isps[n.isp as usize].clone(),
                class: n.class.clone(),
                seeder: n.seeder,
                up: n.up,
                down: n.down,
                online_s: online_after(st.online, publish0),
                complete_s: st.complete.clone(),
                offline_s: Some(st.offline),
                bytes_up: st.bytes_up,
                bytes_down: st.bytes_down,
                down_same_isp: st.down_same_isp,
                down_other_isp: st.down_other_isp,
                gossip_ms: st.gossip[0].map(|g| g * 1e3),
                duplicates: Some(st.duplicates[0]),
                lookup_hops: l.map(|l| l.hops),
                lookup_ms: l.map(|l| l.micros as f64 / 1e3),
                busy_answers: Some(st.busy_answers),
                busy_received: Some(st.busy_received),
            }
        })
        .collect()
}

/// The per-node CSV: one row per node, `complete_s_<f>` columns for films after the first.
pub fn nodes_csv(rows: &[NodeRow]) -> String {
    let films = rows.iter().map(|r| r.complete_s.len()).max().unwrap_or(1).max(1);
    let mut s = String::from(
        "node,name,isp,class,seeder,up_mbit,down_mbit,online_s,complete_s,offline_s,bytes_up,bytes_down,down_same_isp,down_other_isp,gossip_ms,duplicates,lookup_hops,lookup_ms,busy_answers,busy_received",
    );
    for f in 1..films {
        let _ = write!(s, ",complete_s_{f}");
    }
    s.push('\n');
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    let num = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            s,
            "{i},{},{},{},{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.name,
            r.isp,
            r.class,
            r.seeder,
            r.up * 8.0 / 1e6,
            r.down * 8.0 / 1e6,
            r.online_s,
            opt(r.complete_s.first().copied().flatten()),
            opt(r.offline_s),
            r.bytes_up,
            r.bytes_down,
            r.down_same_isp,
            r.down_other_isp,
            opt(r.gossip_ms),
            num(r.duplicates),
            num(r.lookup_hops),
            opt(r.lookup_ms),
            r.busy_answers.map(|x| x.to_string()).unwrap_or_default(),
            r.busy_received.map(|x| x.to_string()).unwrap_or_default(),
        );
        for f in 1..films {
            let _ = write!(s, ",{}", opt(r.complete_s.get(f).copied().flatten()));
        }
        s.push('\n');
    }
    s
}

/// `timeline.csv`: what moved in each bin of the run (chunk transfers spread evenly over their duration),
/// in Mbit/s: the superseeders' egress, the cinemas' upload, the cinemas' download by access class, and the
/// fleet's upload utilisation, (superseeders + cinemas) / (u_s + sum of u_i), the capacity the Kumar-Ross
/// bound counts. Where a plan loses time against the bound shows here: an idle start, capacity left unused
/// while cinemas wait, a long tail.
pub fn timeline_csv(o: &Outcome) -> String {
    let secs = o.egress_bin_secs;
    let capacity: f64 = o.topo.nodes.iter().map(|n| n.up).sum();
    let bins = o
        .download_bins
        .iter()
        .map(|(_, b)| b.len())
        .chain([o.egress_bins.len(), o.upload_bins.len()])
        .max()
        .unwrap_or(0);
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    let mbit = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
    let mut s = String::from("t_s,superseeders_out_mbit_s,cinemas_up_mbit_s");
    for (class, _) in &o.download_bins {
        let _ = write!(s, ",{class}_down_mbit_s");
    }
    s.push_str(
        ",fleet_up_utilisation
",
    );
    for i in 0..bins {
        let (seeders, cinemas) = (at(&o.egress_bins, i), at(&o.upload_bins, i));
        let _ = write!(s, "{:.0},{:.1},{:.1}", i as f64 * secs, mbit(seeders), mbit(cinemas));
        for (_, b) in &o.download_bins {
            let _ = write!(s, ",{:.1}", mbit(at(b, i)));
        }
        let used = (seeders + cinemas) as f64 / secs;
        let _ = writeln!(s, ",{:.3}", if capacity > 0.0 { used / capacity } else { 0.0 });
    }
    s
}

/// The completion-CDF series of film `f`'s targets with `B(k)` dashed beside them, in `unit` seconds.
pub fn completion_series(
    label: &str,
    times: &[Option<f64>],
    bound: &[f64],
    unit: f64,
    colour: usize,
) -> Vec<Series> {
    let t: Vec<f64> = times.iter().flatten().map(|x| x / unit).collect();
    let n = bound.len().max(1) as f64;
    let mut b = vec![(0.0, 0.0)];
    for (k, &x) in bound.iter().enumerate() {
        b.push((x / unit, k as f64 / n));
        b.push((x / unit, (k + 1) as f64 / n));
    }
    vec![
        Series::solid(label, plot::cdf(&t, times.len()), colour),
        Series::dashed("CDF bound B(k)", b, colour + 1),
    ]
}

/// The completion times of film 0's targets counted from when each came online.
fn times_from_online(sc: &Scenario, o: &Outcome) -> Vec<Option<f64>> {
    let publish0 = sc.film[0].publish.as_secs_f64();
    o.stats
        .iter()
        .filter(|s| s.targeted[0])
        .map(|s| s.complete[0].map(|c| c - online_after(s.online, publish0)))
        .collect()
}

/// The superseeder egress chart: rate per bin against their capacity, Mbit/s over `unit` seconds.
pub fn egress_chart(
    rates_bps: &[f64],
    bin_secs: f64,
    capacity_bps: f64,
    unit: (f64, String),
) -> Result<String, Error> {
    let mbit: Vec<f64> = rates_bps.iter().map(|r| r * 8.0 / 1e6).collect();
    let end = rates_bps.len() as f64 * bin_secs / unit.0;
    let cap = capacity_bps * 8.0 / 1e6;
    plot::lines(
        "Superseeder egress",
        &unit.1,
        "Mbit/s (all superseeders)",
        &[
            Series::solid("egress", plot::steps(&mbit, bin_secs / unit.0), 0),
            Series::dashed("capacity", vec![(0.0, cap), (end, cap)], 1),
        ],
    )
}

/// The four plots, as (file name, SVG).
pub fn plots(sc: &Scenario, o: &Outcome, r: &Report) -> Result<Vec<(&'static str, String)>, Error> {
    let unit = plot::time_unit(o.end_secs, "after coming online");
    let mut completion = completion_series(
        &format!("{} (simulator)", sc.film[0].name),
        &times_from_online(sc, o),
        &r.cdf.bound,
        unit.0,
        0,
    );
    for (f, film) in sc.film.iter().enumerate().skip(1) {
        let t: Vec<f64> = o
            .stats
            .iter()
            .filter(|s| s.targeted[f])
            .map(|s| s.complete[f].unwrap_or(f64::INFINITY) / unit.0)
            .collect();
        completion.push(Series::solid(
            format!("{} (after publish)", film.name),
            plot::cdf(&t, t.len()),
            f + 1,
        ));
    }
    let rates: Vec<f64> = o.egress_bins.iter().map(|&b| b as f64 / o.egress_bin_secs).collect();
    let u_s = sc.seeders.up.0 * f64::from(sc.seeders.count);
    let delivery = mesh_delivery_ms(o);
    let reached = o.stats.len() * sc.film.len();
    Ok(vec![
        (
            "completion-cdf.svg",
            plot::lines("Completion time CDF", &unit.1, "fraction of targets", &completion)?,
        ),
        (
            "seeder-egress.svg",
            egress_chart(&rates, o.egress_bin_secs, u_s, plot::time_unit(o.end_secs, "after start"))?,
        ),
        ("isp-matrix.svg", plot::heatmap("Bytes between ISPs", &o.topo.isps, &o.isp_matrix)?),
        (
            "gossip-cdf.svg",
            plot::lines(
                "Catalogue entry delivery CDF",
                "ms after publish",
                "fraction of nodes",
                &[Series::solid("delivery", plot::cdf(&delivery, reached), 0)],
            )?,
        ),
    ])
}

/// Writes `report.json`, `nodes.csv`, `timeline.csv`, `requests.csv` (runs of at most
/// [`REQUESTS_CSV_MAX_NODES`](crate::engine::REQUESTS_CSV_MAX_NODES) nodes) and the plots into `dir`.
pub fn write(dir: &Path, sc: &Scenario, o: &Outcome, r: &Report) -> Result<(), Error> {
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Write {
        path: dir.join("report.json").display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let files = [
        ("report.json", json + "\n"),
        ("nodes.csv", nodes_csv(&rows(sc, o))),
        ("timeline.csv", timeline_csv(o)),
    ]
    .into_iter()
    .chain((!o.requests.is_empty()).then(|| {
        let names = o.topo.nodes.iter().map(|n| n.name.as_str());
        ("requests.csv", crate::lab::outputs::requests_csv(names.zip(o.requests.iter().map(Vec::as_slice))))
    }))
    .chain(plots(sc, o, r)?);
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(werr(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let q = Quantiles::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((q.p50, q.p90, q.max, q.n), (3.0, 5.0, 5.0, 5));
        assert_eq!(Quantiles::of(&[]).max, 0.0);
    }

    #[test]
    fn a_quantum_coarse_against_the_transfers_is_flagged() {
        assert_eq!(quantum_warning(0.02, Some(1.0)), None);
        assert_eq!(quantum_warning(0.05, Some(1.0)), None, "at the limit");
        let w = quantum_warning(1.0, Some(4.096)).expect("a 1 s grid against 4.1 s transfers");
        assert!(w.contains("1000 ms is 24%") && w.contains("82 ms or less"), "{w}");
        assert_eq!(quantum_warning(1.0, None), None, "no transfer, nothing to judge");
    }
}
