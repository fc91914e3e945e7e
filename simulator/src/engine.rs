//! The discrete-event engine: virtual time, one event queue, and the overlay's own sans-io core in every
//! node ([`Scheduler`] for which chunk from whom, [`UploadSlots`] for serve / busy).
//!
//! Events are ordered by `(time, sequence number)` so equal times resolve in insertion order; all
//! randomness comes from one ChaCha8 RNG seeded by `--seed` (and each node's scheduler from a seed derived
//! from it): the same scenario and seed give the same bytes out.
//!
//! A chunk request travels one-way latency to the uploader, which serves it (a flow in
//! [`bandwidth::Network`](crate::bandwidth::Network)) or answers busy with its load (back after one-way
//! latency, fed to the scheduler as `Failure::Busy`). A finished flow is a verified chunk for the
//! downloader's scheduler (`chunk_received`), and a `have` to its neighbours one latency later.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use cinemesh_overlay::core::{
    Bitfield, ContentSpec, Failure, Output, Scheduler, UploadDecision, UploadSlots,
};
use cinemesh_overlay::{ContentId, Time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bandwidth::{FlowId, LinkId, Network};
use crate::churn::{self, exp};
use crate::error::Error;
use crate::gossip;
use crate::kad::{self, Lookup};
use crate::scenario::Scenario;
use crate::topology::{mix64, NodeIx, Topology};

/// Width of the bins the superseeder egress is first accumulated in, microseconds.
const EGRESS_BIN_US: u64 = 10_000_000;

/// Film index within the scenario.
pub type FilmIx = u16;

/// The content id the simulator gives film `i`.
pub fn content_id(film: FilmIx) -> ContentId {
    let mut b = [0u8; 32];
    b[..2].copy_from_slice(&film.to_le_bytes());
    b[2..8].copy_from_slice(b"cinesi");
    ContentId(b)
}

fn film_of(id: &ContentId) -> FilmIx {
    u16::from_le_bytes([id.0[0], id.0[1]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Recompute bandwidth shares.
    Tick,
    /// A flow may have finished.
    FlowDone { flow: FlowId },
    /// A chunk request reaches its uploader.
    Request { dl: NodeIx, ul: NodeIx, film: FilmIx, chunk: u32 },
    /// A cancel reaches its uploader.
    Cancel { dl: NodeIx, ul: NodeIx, film: FilmIx, chunk: u32 },
    /// A failure answer reaches the downloader (busy carries the load in thousandths).
    Failed { dl: NodeIx, ul: NodeIx, film: FilmIx, chunk: u32, kind: FailKind },
    /// `node`'s `have` for a chunk reaches its neighbours.
    Have { node: NodeIx, film: FilmIx, chunk: u32 },
    /// A node's scheduler timer.
    Timer { node: NodeIx },
    /// The distributor publishes a film.
    Publish { film: FilmIx },
    /// A node has the catalogue entry and its providers: it starts fetching.
    Start { node: NodeIx, film: FilmIx },
    /// A node comes online.
    Online { node: NodeIx },
    /// A node goes offline.
    Offline { node: NodeIx },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FailKind {
    Busy { milli_load: u32 },
    Missing,
    Io,
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    dl: NodeIx,
    ul: NodeIx,
    film: FilmIx,
    chunk: u32,
    bytes: u64,
    start: Time,
}

/// Per-node outcome, one row of the CSV.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStats {
    /// Completion time of each film (seconds since its publish), `None` when not targeted or incomplete.
    pub complete: Vec<Option<f64>>,
    /// True when targeted by each film.
    pub targeted: Vec<bool>,
    /// Catalogue entry delivery (seconds after publish) per film.
    pub gossip: Vec<Option<f64>>,
    /// True when the entry came through the gossipsub mesh (online at publish), false for a catch-up.
    pub via_mesh: Vec<bool>,
    /// Duplicate gossip deliveries per film.
    pub duplicates: Vec<u32>,
    /// Provider lookup per film.
    pub lookup: Vec<Option<Lookup>>,
    /// Bytes uploaded.
    pub bytes_up: u64,
    /// Bytes downloaded.
    pub bytes_down: u64,
    /// Bytes downloaded from peers of the same ISP.
    pub down_same_isp: u64,
    /// Bytes downloaded from other ISPs.
    pub down_other_isp: u64,
    /// When the node first came online, seconds of virtual time.
    pub online: Option<f64>,
}

struct NodeState {
    sched: Option<Scheduler<NodeIx>>,
    slots: UploadSlots<NodeIx>,
    have: Vec<Bitfield>,
    started: Vec<bool>,
    got_entry: Vec<bool>,
    done: Vec<bool>,
    online: bool,
    up: LinkId,
    down: LinkId,
    timer_at: Option<Time>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState").field("online", &self.online).finish_non_exhaustive()
    }
}

/// Everything the run measured, before formatting.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The world that was simulated.
    pub topo: Topology,
    /// Per node.
    pub stats: Vec<NodeStats>,
    /// Bytes from ISP `i` to ISP `j`.
    pub isp_matrix: Vec<Vec<u64>>,
    /// Superseeder egress per [`EGRESS_BIN_US`] bin, bytes.
    pub egress_bins: Vec<u64>,
    /// Width of an egress bin, seconds.
    pub egress_bin_secs: f64,
    /// Virtual time at the end, seconds.
    pub end_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Chunk transfers completed (duplicates included).
    pub transfers: u64,
    /// Chunk transfers that delivered a chunk the downloader already had.
    pub duplicate_transfers: u64,
    /// Busy answers.
    pub busy: u64,
    /// Penalise outputs.
    pub penalties: u64,
    /// Targets that did not complete by the end.
    pub incomplete: u32,
    /// Bandwidth recomputations.
    pub ticks: u64,
}

/// Progress callback: (chunks received so far, chunks needed in all).
pub type ProgressFn<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// One simulation run.
pub struct Engine<'a> {
    sc: &'a Scenario,
    topo: Topology,
    rng: ChaCha8Rng,
    net: Network,
    nodes: Vec<NodeState>,
    stats: Vec<NodeStats>,
    transfers: Vec<Option<Transfer>>,
    active: HashMap<(NodeIx, NodeIx, FilmIx, u32), FlowId>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    now: Time,
    tick_at: Option<Time>,
    egress_link: Vec<Option<LinkId>>,
    ingress_link: Vec<Option<LinkId>>,
    isp_matrix: Vec<Vec<u64>>,
    egress_bins: Vec<u64>,
    chunk_bytes: u64,
    chunks: Vec<u32>,
    published: Vec<bool>,
    remaining_targets: u64,
    needed_chunks: u64,
    received_chunks: u64,
    events: u64,
    transfers_done: u64,
    duplicate_transfers: u64,
    busy: u64,
    penalties: u64,
    ticks: u64,
    progress: Option<ProgressFn<'a>>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("now", &self.now).field("events", &self.events).finish_non_exhaustive()
    }
}

/// The world of a run: topology, `targets[film][node]`, and the RNG positioned after building them. The
/// `bound` command uses it without running.
pub fn world(sc: &Scenario, seed: u64) -> (Topology, Vec<Vec<bool>>, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let topo = Topology::build(sc, &mut rng);
    let cinemas = sc.cinemas as usize;
    let mut targets = Vec::new();
    for film in &sc.film {
        let k = ((film.targets * cinemas as f64).round() as usize).clamp(1, cinemas);
        let mut t = vec![false; topo.len()];
        for i in rand::seq::index::sample(&mut rng, cinemas, k) {
            t[i] = true;
        }
        targets.push(t);
    }
    (topo, targets, rng)
}

impl<'a> Engine<'a> {
    /// Builds the world for `sc` with `seed`.
    pub fn new(sc: &'a Scenario, seed: u64) -> Self {
        let (topo, targets, rng) = world(sc, seed);
        let mut net = Network::new(sc.sim.rate_quantum.as_micros() as u64);
        let n = topo.len();
        let films = sc.film.len();
        let chunks: Vec<u32> = sc.film.iter().map(|f| sc.chunks(f)).collect();
        let mut egress_link = Vec::new();
        let mut ingress_link = Vec::new();
        for isp in &sc.isp {
            let t = isp.transit.map(|r| r.0);
            egress_link.push(t.map(|c| net.add_link(c)));
            ingress_link.push(t.map(|c| net.add_link(c)));
        }
        let mut nodes = Vec::with_capacity(n);
        for (i, node) in topo.nodes.iter().enumerate() {
            let up = net.add_link(node.up);
            let down = net.add_link(node.down);
            let sched = (!node.seeder).then(|| {
                Scheduler::new(
                    &sc.transfer,
                    &sc.policy,
                    node.locality.clone(),
                    mix64(seed ^ ((i as u64) << 1)),
                )
            });
            let slots = if node.seeder {
                sc.seeders.upload_slots.unwrap_or(sc.transfer.upload_slots)
            } else {
                sc.transfer.upload_slots
            };
            let have = chunks
                .iter()
                .map(|&c| if node.seeder { Bitfield::full(c) } else { Bitfield::new(c) })
                .collect();
            nodes.push(NodeState {
                sched,
                slots: UploadSlots::new(slots),
                have,
                started: vec![false; films],
                got_entry: vec![false; films],
                done: vec![false; films],
                online: false,
                up,
                down,
                timer_at: None,
            });
        }
        let mut stats = vec![NodeStats::default(); n];
        for s in &mut stats {
            s.complete = vec![None; films];
            s.targeted = vec![false; films];
            s.gossip = vec![None; films];
            s.duplicates = vec![0; films];
            s.via_mesh = vec![false; films];
            s.lookup = vec![None; films];
        }
        let mut remaining_targets = 0;
        let mut needed_chunks = 0;
        for (f, t) in targets.iter().enumerate() {
            for (i, _) in t.iter().enumerate().filter(|(_, &t)| t) {
                stats[i].targeted[f] = true;
                remaining_targets += 1;
                needed_chunks += u64::from(chunks[f]);
            }
        }
        let isps = sc.isp.len();
        let mut e = Engine {
            sc,
            topo,
            rng,
            net,
            nodes,
            stats,
            transfers: Vec::new(),
            active: HashMap::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            tick_at: None,
            egress_link,
            ingress_link,
            isp_matrix: vec![vec![0; isps]; isps],
            egress_bins: Vec::new(),
            chunk_bytes: sc.transfer.chunk_size.0,
            chunks,
            published: vec![false; films],
            remaining_targets,
            needed_chunks,
            received_chunks: 0,
            events: 0,
            transfers_done: 0,
            duplicate_transfers: 0,
            busy: 0,
            penalties: 0,
            ticks: 0,
            progress: None,
        };
        e.schedule_churn();
        for (f, film) in sc.film.iter().enumerate() {
            e.push(Time::from_duration(film.publish), Ev::Publish { film: f as FilmIx });
        }
        e
    }

    /// Reports progress through `f` (called every few hundred chunks).
    pub fn with_progress(mut self, f: ProgressFn<'a>) -> Self {
        self.progress = Some(f);
        self
    }

    fn schedule_churn(&mut self) {
        for (i, at) in churn::first_online(self.sc, &mut self.rng) {
            self.push(at, Ev::Online { node: i });
        }
        for s in self.sc.cinemas as usize..self.topo.len() {
            self.push(Time::ZERO, Ev::Online { node: s as NodeIx });
        }
    }

    fn push(&mut self, t: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    fn request_tick(&mut self, t: Time) {
        let t = self.net.ceil_tick(t);
        if self.tick_at.is_none_or(|x| t < x) {
            self.tick_at = Some(t);
            self.push(t, Ev::Tick);
        }
    }

    /// Runs to the end: every target complete, the horizon, or the event budget.
    pub fn run(mut self) -> Result<Outcome, Error> {
        let horizon = Time::from_duration(self.sc.sim.horizon);
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            if t > horizon || self.remaining_targets == 0 {
                break;
            }
            self.now = t;
            self.events += 1;
            if self.events > self.sc.sim.max_events {
                return Err(Error::Aborted {
                    events: self.events,
                    at_secs: t.as_secs_f64(),
                    reason: "sim.max_events reached; raise it or shorten the scenario".to_owned(),
                });
            }
            self.handle(ev);
        }
        Ok(self.finish())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                if self.tick_at != Some(self.now) {
                    return;
                }
                self.tick_at = None;
                self.ticks += 1;
                let (done, next) = self.net.tick(self.now);
                for (flow, at) in done {
                    self.push(at, Ev::FlowDone { flow });
                }
                if let Some(next) = next {
                    self.request_tick(next.max(Time(self.now.0 + 1)));
                }
            }
            Ev::FlowDone { flow } => self.flow_done(flow),
            Ev::Request { dl, ul, film, chunk } => self.request(dl, ul, film, chunk),
            Ev::Cancel { dl, ul, film, chunk } => {
                if let Some(flow) = self.active.remove(&(dl, ul, film, chunk)) {
                    self.net.remove_flow(flow);
                    self.transfers[flow.index as usize] = None;
                    self.nodes[ul as usize].slots.finished(&dl);
                    self.request_tick(self.now);
                }
            }
            Ev::Failed { dl, ul, film, chunk, kind } => {
                if !self.nodes[dl as usize].online {
                    return;
                }
                let failure = match kind {
                    FailKind::Busy { milli_load } => Failure::Busy { load: milli_load as f32 / 1000.0 },
                    FailKind::Missing => Failure::Missing,
                    FailKind::Io => Failure::Io,
                };
                let now = self.now;
                if let Some(s) = self.nodes[dl as usize].sched.as_mut() {
                    s.chunk_failed(now, &ul, &content_id(film), chunk, failure);
                }
                self.drive(dl);
            }
            Ev::Have { node, film, chunk } => self.have(node, film, chunk),
            Ev::Timer { node } => {
                let n = &mut self.nodes[node as usize];
                if n.timer_at != Some(self.now) {
                    return;
                }
                n.timer_at = None;
                if let Some(s) = n.sched.as_mut() {
                    s.handle_timeout(self.now);
                }
                self.drive(node);
            }
            Ev::Publish { film } => self.publish(film),
            Ev::Start { node, film } => self.start(node, film),
            Ev::Online { node } => self.online(node),
            Ev::Offline { node } => self.offline(node),
        }
    }

    /// Polls a node's scheduler until it has nothing more to say, carrying out its outputs; re-arms its
    /// timer.
    fn drive(&mut self, x: NodeIx) {
        let now = self.now;
        while let Some(out) = self.nodes[x as usize].sched.as_mut().and_then(|s| s.poll_output(now)) {
            match out {
                Output::Request { peer, content, chunk } => {
                    let lat = self.topo.latency(x, peer);
                    self.push(
                        Time(now.0 + lat),
                        Ev::Request { dl: x, ul: peer, film: film_of(&content), chunk },
                    );
                }
                Output::Cancel { peer, content, chunk } => {
                    let lat = self.topo.latency(x, peer);
                    self.push(
                        Time(now.0 + lat),
                        Ev::Cancel { dl: x, ul: peer, film: film_of(&content), chunk },
                    );
                }
                Output::Penalise { .. } => self.penalties += 1,
                Output::Complete { content } => self.complete(x, film_of(&content)),
            }
        }
        let n = &mut self.nodes[x as usize];
        if let Some(t) = n.sched.as_ref().and_then(|s| s.poll_timeout()) {
            let t = t.max(Time(now.0 + 1));
            if n.timer_at.is_none_or(|cur| t < cur) {
                n.timer_at = Some(t);
                self.push(t, Ev::Timer { node: x });
            }
        }
    }

    fn complete(&mut self, x: NodeIx, film: FilmIx) {
        let f = film as usize;
        if f >= self.chunks.len() || self.nodes[x as usize].done[f] {
            return;
        }
        self.nodes[x as usize].done[f] = true;
        let publish = self.sc.film[f].publish.as_secs_f64();
        self.stats[x as usize].complete[f] = Some(self.now.as_secs_f64() - publish);
        if self.stats[x as usize].targeted[f] {
            self.remaining_targets -= 1;
        }
    }

    fn request(&mut self, dl: NodeIx, ul: NodeIx, film: FilmIx, chunk: u32) {
        if !self.nodes[dl as usize].online {
            return;
        }
        let back = Time(self.now.0 + self.topo.latency(dl, ul));
        let u = &mut self.nodes[ul as usize];
        if !u.online {
            self.push(back, Ev::Failed { dl, ul, film, chunk, kind: FailKind::Io });
            return;
        }
        if !u.have.get(film as usize).is_some_and(|h| h.get(chunk)) {
            self.push(back, Ev::Failed { dl, ul, film, chunk, kind: FailKind::Missing });
            return;
        }
        match u.slots.request(&dl) {
            UploadDecision::Busy { load } => {
                self.busy += 1;
                let milli_load = (load.clamp(0.0, 100.0) * 1000.0) as u32;
                self.push(back, Ev::Failed { dl, ul, film, chunk, kind: FailKind::Busy { milli_load } });
            }
            UploadDecision::Serve => {
                let (a, b) = (&self.topo.nodes[ul as usize], &self.topo.nodes[dl as usize]);
                let mut links = vec![self.nodes[ul as usize].up];
                if a.isp != b.isp {
                    links.extend(self.egress_link[a.isp as usize]);
                    links.extend(self.ingress_link[b.isp as usize]);
                }
                links.push(self.nodes[dl as usize].down);
                let total = self.sc.film[film as usize].size.0;
                let bytes = self.chunk_bytes.min(total - u64::from(chunk) * self.chunk_bytes);
                let flow = self.net.add_flow(&links, bytes);
                let ix = flow.index as usize;
                if self.transfers.len() <= ix {
                    self.transfers.resize(ix + 1, None);
                }
                self.transfers[ix] = Some(Transfer { dl, ul, film, chunk, bytes, start: self.now });
                self.active.insert((dl, ul, film, chunk), flow);
                self.request_tick(self.now);
            }
        }
    }

    fn flow_done(&mut self, flow: FlowId) {
        if !self.net.remove_flow(flow) {
            return;
        }
        self.request_tick(self.now);
        let Some(t) = self.transfers[flow.index as usize].take() else {
            return;
        };
        self.active.remove(&(t.dl, t.ul, t.film, t.chunk));
        self.transfers_done += 1;
        let (dl, ul) = (t.dl as usize, t.ul as usize);
        self.nodes[ul].slots.finished(&t.dl);
        let (ui, di) = (self.topo.nodes[ul].isp as usize, self.topo.nodes[dl].isp as usize);
        self.isp_matrix[ui][di] += t.bytes;
        self.stats[ul].bytes_up += t.bytes;
        self.stats[dl].bytes_down += t.bytes;
        if ui == di {
            self.stats[dl].down_same_isp += t.bytes;
        } else {
            self.stats[dl].down_other_isp += t.bytes;
        }
        if self.topo.nodes[ul].seeder {
            self.add_egress(t.start, self.now, t.bytes);
        }
        let load = self.nodes[ul].slots.load();
        let now = self.now;
        let new = self.nodes[dl].have[t.film as usize].set(t.chunk);
        if new {
            self.received_chunks += 1;
            if let Some(p) = self.progress {
                if self.received_chunks % 512 == 0 {
                    p(self.received_chunks, self.needed_chunks);
                }
            }
            let lat = self.topo.latency(t.dl, t.ul);
            self.push(Time(now.0 + lat), Ev::Have { node: t.dl, film: t.film, chunk: t.chunk });
            if self.nodes[dl].have[t.film as usize].is_complete() {
                self.complete(t.dl, t.film);
            }
        } else {
            self.duplicate_transfers += 1;
        }
        if let Some(s) = self.nodes[dl].sched.as_mut() {
            s.chunk_received(now, &t.ul, &content_id(t.film), t.chunk, t.bytes);
            s.peer_load(now, &t.ul, load);
        }
        self.drive(t.dl);
    }

    /// Spreads `bytes` uniformly over `[start, end]` in the egress bins.
    fn add_egress(&mut self, start: Time, end: Time, bytes: u64) {
        let (a, b) = (start.0 / EGRESS_BIN_US, end.0 / EGRESS_BIN_US);
        if self.egress_bins.len() <= b as usize {
            self.egress_bins.resize(b as usize + 1, 0);
        }
        let span = (end.0 - start.0).max(1) as f64;
        let mut given = 0;
        for bin in a..=b {
            let lo = start.0.max(bin * EGRESS_BIN_US);
            let hi = end.0.min((bin + 1) * EGRESS_BIN_US);
            let part = if bin == b { bytes - given } else { (bytes as f64 * (hi - lo) as f64 / span) as u64 };
            self.egress_bins[bin as usize] += part;
            given += part;
        }
    }

    fn have(&mut self, x: NodeIx, film: FilmIx, chunk: u32) {
        if !self.nodes[x as usize].online {
            return;
        }
        let now = self.now;
        let id = content_id(film);
        let f = film as usize;
        for k in 0..self.topo.neighbours[x as usize].len() {
            let j = self.topo.neighbours[x as usize][k];
            let n = &mut self.nodes[j as usize];
            if !n.online || !n.started[f] || n.done[f] {
                continue;
            }
            if let Some(s) = n.sched.as_mut() {
                s.peer_has(now, &x, &id, chunk);
            }
            self.drive(j);
        }
    }

    fn publish(&mut self, film: FilmIx) {
        let f = film as usize;
        self.published[f] = true;
        let online: Vec<bool> = self.nodes.iter().map(|n| n.online).collect();
        let origin = self.topo.first_seeder;
        let d = gossip::disseminate(&self.topo, &online, origin, &self.sc.gossip, &mut self.rng);
        let anti_entropy = self.sc.gossip.anti_entropy_interval.as_micros() as u64;
        for (i, &up) in online.iter().enumerate() {
            self.stats[i].duplicates[f] = d.duplicates[i];
            if !up {
                continue;
            }
            self.stats[i].via_mesh[f] = d.delivered[i].is_some();
            // Not reached by the mesh: the next anti-entropy round picks it up.
            let delay = d.delivered[i].unwrap_or_else(|| self.rng.gen_range(0..anti_entropy.max(1)));
            self.entry_received(i as NodeIx, film, delay);
        }
    }

    /// `x` holds the catalogue entry `delay` µs from now: look up providers, then start.
    fn entry_received(&mut self, x: NodeIx, film: FilmIx, delay: u64) {
        let f = film as usize;
        let xi = x as usize;
        if self.nodes[xi].got_entry[f] {
            return;
        }
        self.nodes[xi].got_entry[f] = true;
        let at = self.now.0 + delay;
        let publish = Time::from_duration(self.sc.film[f].publish);
        self.stats[xi].gossip[f] = Some(Time(at).saturating_since(publish).as_secs_f64());
        if self.topo.nodes[xi].seeder || !self.stats[xi].targeted[f] {
            return;
        }
        let l = kad::lookup(&self.topo, x, self.sc.sim.kad_k, self.sc.sim.kad_alpha, &mut self.rng);
        self.stats[xi].lookup[f] = Some(l);
        self.push(Time(at + l.micros), Ev::Start { node: x, film });
    }

    fn start(&mut self, x: NodeIx, film: FilmIx) {
        let (xi, f) = (x as usize, film as usize);
        if !self.nodes[xi].online || self.nodes[xi].started[f] {
            return;
        }
        self.nodes[xi].started[f] = true;
        let now = self.now;
        let id = content_id(film);
        let publish = Time::from_duration(self.sc.film[f].publish);
        let spec = ContentSpec {
            id,
            chunks: self.chunks[f],
            deadline: self.sc.film[f].deadline.map(|d| publish + d),
        };
        let have = self.nodes[xi].have[f].clone();
        if let Some(s) = self.nodes[xi].sched.as_mut() {
            s.add_content(now, spec, have);
        }
        for k in 0..self.topo.neighbours[xi].len() {
            let j = self.topo.neighbours[xi][k];
            let ji = j as usize;
            if !self.nodes[ji].online {
                continue;
            }
            let seeder = self.topo.nodes[ji].seeder;
            if seeder || self.nodes[ji].started[f] {
                let theirs = self.nodes[ji].have[f].clone();
                if let Some(s) = self.nodes[xi].sched.as_mut() {
                    s.peer_bitfield(now, &j, &id, theirs);
                }
            }
            if !seeder && self.nodes[ji].started[f] && !self.nodes[ji].done[f] {
                let mine = self.nodes[xi].have[f].clone();
                if let Some(s) = self.nodes[ji].sched.as_mut() {
                    s.peer_bitfield(now, &x, &id, mine);
                }
                self.drive(j);
            }
        }
        self.drive(x);
    }

    fn online(&mut self, x: NodeIx) {
        let xi = x as usize;
        if self.nodes[xi].online {
            return;
        }
        self.nodes[xi].online = true;
        let now = self.now;
        self.stats[xi].online.get_or_insert(now.as_secs_f64());
        let mut nearest = u64::MAX;
        for k in 0..self.topo.neighbours[xi].len() {
            let j = self.topo.neighbours[xi][k];
            let ji = j as usize;
            if !self.nodes[ji].online {
                continue;
            }
            nearest = nearest.min(self.topo.latency(x, j));
            let (lx, lj) = (self.topo.nodes[xi].locality.clone(), self.topo.nodes[ji].locality.clone());
            if let Some(s) = self.nodes[xi].sched.as_mut() {
                s.peer_joined(now, j, lj);
            }
            if let Some(s) = self.nodes[ji].sched.as_mut() {
                s.peer_joined(now, x, lx);
            }
            for f in 0..self.chunks.len() {
                let id = content_id(f as FilmIx);
                let (sx, sj) =
                    (self.nodes[xi].started[f], self.nodes[ji].started[f] || self.topo.nodes[ji].seeder);
                if sx && sj {
                    let theirs = self.nodes[ji].have[f].clone();
                    if let Some(s) = self.nodes[xi].sched.as_mut() {
                        s.peer_bitfield(now, &j, &id, theirs);
                    }
                }
                if sx && self.nodes[ji].started[f] {
                    let mine = self.nodes[xi].have[f].clone();
                    if let Some(s) = self.nodes[ji].sched.as_mut() {
                        s.peer_bitfield(now, &x, &id, mine);
                    }
                }
            }
            self.drive(j);
        }
        // Anti-entropy on connect: catalogue entries published while offline arrive one round trip later.
        if nearest != u64::MAX {
            for f in 0..self.chunks.len() {
                if self.published[f] && !self.nodes[xi].got_entry[f] {
                    self.entry_received(x, f as FilmIx, 2 * nearest);
                }
            }
        }
        // A start that found the node offline is retried.
        for f in 0..self.chunks.len() {
            if self.nodes[xi].got_entry[f] && !self.nodes[xi].started[f] && self.stats[xi].targeted[f] {
                let l = kad::lookup(&self.topo, x, self.sc.sim.kad_k, self.sc.sim.kad_alpha, &mut self.rng);
                self.stats[xi].lookup[f] = Some(l);
                self.push(Time(now.0 + l.micros), Ev::Start { node: x, film: f as FilmIx });
            }
        }
        self.drive(x);
        if let (Some(mean), false) = (self.sc.churn.session_mean, self.topo.nodes[xi].seeder) {
            let at = now + exp(&mut self.rng, mean);
            self.push(at, Ev::Offline { node: x });
        }
    }

    fn offline(&mut self, x: NodeIx) {
        let xi = x as usize;
        if !self.nodes[xi].online {
            return;
        }
        self.nodes[xi].online = false;
        let now = self.now;
        for ix in 0..self.transfers.len() {
            let Some(t) = self.transfers[ix] else { continue };
            if t.dl != x && t.ul != x {
                continue;
            }
            if let Some(flow) = self.active.remove(&(t.dl, t.ul, t.film, t.chunk)) {
                self.net.remove_flow(flow);
            }
            self.transfers[ix] = None;
            self.nodes[t.ul as usize].slots.finished(&t.dl);
        }
        self.request_tick(now);
        for k in 0..self.topo.neighbours[xi].len() {
            let j = self.topo.neighbours[xi][k];
            let ji = j as usize;
            if !self.nodes[ji].online {
                continue;
            }
            self.nodes[ji].slots.peer_left(&x);
            self.nodes[xi].slots.peer_left(&j);
            if let Some(s) = self.nodes[ji].sched.as_mut() {
                s.peer_left(now, &x);
            }
            if let Some(s) = self.nodes[xi].sched.as_mut() {
                s.peer_left(now, &j);
            }
            self.drive(j);
        }
        let back = now + exp(&mut self.rng, self.sc.churn.offline_mean);
        self.push(back, Ev::Online { node: x });
    }

    fn finish(self) -> Outcome {
        let mut incomplete = 0;
        for s in &self.stats {
            for (t, c) in s.targeted.iter().zip(&s.complete) {
                if *t && c.is_none() {
                    incomplete += 1;
                }
            }
        }
        Outcome {
            topo: self.topo,
            stats: self.stats,
            isp_matrix: self.isp_matrix,
            egress_bins: self.egress_bins,
            egress_bin_secs: EGRESS_BIN_US as f64 / 1e6,
            end_secs: self.now.as_secs_f64(),
            events: self.events,
            transfers: self.transfers_done,
            duplicate_transfers: self.duplicate_transfers,
            busy: self.busy,
            penalties: self.penalties,
            incomplete,
            ticks: self.ticks,
        }
    }
}
