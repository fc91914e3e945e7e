//! The discrete-event engine: virtual time, one event queue, and in every node the overlay's own transfer
//! engine ([`cinemesh_core::engine::Engine`]), the very code the node daemon runs.
//!
//! The simulator is one more body of that engine, beside the node: it calls the same inputs and carries
//! out the same outputs, with a network model instead of sockets and an instant disk. Events are ordered by
//! `(time, sequence number)` so equal times resolve in insertion order; all randomness comes from one
//! ChaCha8 RNG seeded by `--seed` (and each node's scheduler from a seed derived from it): the same
//! scenario and seed give the same bytes out.
//!
//! Every message the node puts on the wire is an event here, delivered one-way latency later: hello,
//! manifest and bitfield requests and their answers, chunk requests, busy / missing / cancelled answers
//! (with the uploader's load), have batches (the engine batches them as in the node), cancels. A chunk
//! answer with data is a flow in [`bandwidth::Network`](crate::bandwidth::Network) from the uploader's
//! link through the ISP borders to the downloader's link; when the flow ends the chunk is delivered,
//! written at once (the disk is not modelled) and the uploader's slot freed. A cancel that reaches an
//! uploader still sending aborts the flow. Control messages take latency but no bandwidth.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use cinemesh_core::engine::{
    self, Answer, Held, ManifestReply, Offer, Output, PeerInfo, Reply, Request, Role, UploadId, Written,
};
use cinemesh_core::schedule::Limits;
use cinemesh_core::{Bitfield, ContentId, Time};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bandwidth::{FlowId, LinkId, Network};
use crate::churn::{self, exp};
use crate::error::Error;
use crate::gossip;
use crate::kad::{self, Lookup};
use crate::lab::observe::RequestSample;
use crate::scenario::Scenario;
use crate::topology::{mix64, NodeIx, Topology};

/// Width of the bins the superseeder egress is first accumulated in, microseconds.
const EGRESS_BIN_US: u64 = 10_000_000;

/// Adds `bytes`, spread evenly over `[start, end]`, to the [`EGRESS_BIN_US`] bins (exactly: the last bin
/// takes what rounding left).
fn spread(bins: &mut Vec<u64>, start: Time, end: Time, bytes: u64) {
    let (a, b) = (start.0 / EGRESS_BIN_US, end.0 / EGRESS_BIN_US);
    if bins.len() <= b as usize {
        bins.resize(b as usize + 1, 0);
    }
    let span = (end.0 - start.0).max(1) as f64;
    let mut given = 0;
    for bin in a..=b {
        let lo = start.0.max(bin * EGRESS_BIN_US);
        let hi = end.0.min((bin + 1) * EGRESS_BIN_US);
        let part = if bin == b { bytes - given } else { (bytes as f64 * (hi - lo) as f64 / span) as u64 };
        bins[bin as usize] += part;
        given += part;
    }
}

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
    /// A flow's last `sim.send_buffer` bytes are in the sender's buffers: its upload slot is free.
    FlowRelease { flow: FlowId },
    /// A message reaches its receiver (`wires[slot]`).
    Deliver { slot: u32 },
    /// A node's engine timer.
    Timer { node: NodeIx },
    /// The distributor publishes a film.
    Publish { film: FilmIx },
    /// A node has the catalogue entry and its providers: it is offered the film.
    Start { node: NodeIx, film: FilmIx },
    /// A node comes online.
    Online { node: NodeIx },
    /// A node goes offline.
    Offline { node: NodeIx },
    /// A provider lookup's answer reaches `node`.
    Providers { node: NodeIx, film: FilmIx },
    /// A dial from `from` to `to` completes (or fails when `to` is offline).
    Connect { from: NodeIx, to: NodeIx },
    /// A fetching node measures the round trip to each of its peers ([`engine::PING_INTERVAL`]).
    Ping { node: NodeIx },
}

/// Runs of at most this many nodes write `requests.csv` (a sample per node per second: a lab's size, not a
/// fleet's).
pub const REQUESTS_CSV_MAX_NODES: usize = 64;

/// Samples of `requests.csv` kept per node: its first 4 hours of virtual time.
pub const REQUESTS_CSV_MAX_SAMPLES: usize = 4 * 3600;

/// The kinds of events counted in [`Outcome::events_by_kind`], in its order.
pub const EVENT_KINDS: [&str; 13] = [
    "rate tick",
    "flow done or released",
    "engine timer",
    "hello",
    "manifest",
    "bitfield",
    "chunk request",
    "have",
    "cancel",
    "chunk answer",
    "lost message",
    "publish, start, churn, lookups, dials",
    "ping",
];

fn kind_of(ev: &Ev, wires: &[Option<Wire>]) -> usize {
    match ev {
        Ev::Tick => 0,
        Ev::FlowDone { .. } | Ev::FlowRelease { .. } => 1,
        Ev::Timer { .. } => 2,
        Ev::Deliver { slot } => match wires.get(*slot as usize).and_then(Option::as_ref).map(|w| &w.msg) {
            Some(Msg::Hello | Msg::Request(Request::Hello)) => 3,
            Some(Msg::Manifest { .. } | Msg::Request(Request::Manifest { .. })) => 4,
            Some(Msg::Bitfield { .. } | Msg::Request(Request::Bitfield { .. })) => 5,
            Some(Msg::Request(Request::Chunk { .. })) => 6,
            Some(Msg::Request(Request::Have { .. })) => 7,
            Some(Msg::Request(Request::Cancel { .. })) => 8,
            Some(Msg::Answer { .. }) => 9,
            None => 10,
        },
        Ev::Publish { .. }
        | Ev::Start { .. }
        | Ev::Online { .. }
        | Ev::Offline { .. }
        | Ev::Providers { .. }
        | Ev::Connect { .. } => 11,
        Ev::Ping { .. } => 12,
    }
}

/// A message on its way, with the sessions it belongs to (a message from before a restart is dropped).
#[derive(Debug, Clone)]
struct Wire {
    from: NodeIx,
    to: NodeIx,
    epochs: (u32, u32),
    msg: Msg,
}

#[derive(Debug, Clone)]
enum Msg {
    Request(Request),
    Hello,
    Manifest { content: ContentId, good: Option<u64> },
    Bitfield { content: ContentId, have: Option<Bitfield> },
    Answer { content: ContentId, index: u32, answer: Answer },
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    upload: UploadId,
    dl: NodeIx,
    ul: NodeIx,
    film: FilmIx,
    chunk: u32,
    bytes: u64,
    load: f32,
    start: Time,
    /// The uploader was told the upload ended (`sim.send_buffer`), before the flow finished.
    released: bool,
}

/// An inbound chunk request being served: who asked for what.
#[derive(Debug, Clone, Copy)]
struct Upload {
    dl: NodeIx,
    ul: NodeIx,
    content: ContentId,
    index: u32,
    epochs: (u32, u32),
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
    /// Seconds it spent offline (churn) after film 0's publish and before it completed film 0.
    pub offline: f64,
    /// The most connections it held at once (topology links and dials), counted when a dial connects.
    pub links_max: u32,
    /// Chunk requests its engine answered busy.
    pub busy_answers: u64,
    /// Busy answers its engine received.
    pub busy_received: u64,
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
    /// Superseeder egress per `EGRESS_BIN_US` bin, bytes.
    pub egress_bins: Vec<u64>,
    /// Cinemas' upload per bin, bytes (chunk transfers, each spread evenly over its duration).
    pub upload_bins: Vec<u64>,
    /// Cinemas' download per bin, by access class (sorted by name), bytes.
    pub download_bins: Vec<(String, Vec<u64>)>,
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
    /// Each online node's request window and requests once a second of virtual time, as the lab reads
    /// them from the daemons (`requests.csv`); above [`REQUESTS_CSV_MAX_NODES`] nodes only those `sim.trace`
    /// names have samples, and with none named it is empty.
    pub requests: Vec<Vec<RequestSample>>,
    /// Busy answers.
    pub busy: u64,
    /// Chunk requests sent beyond the count the peer's load allows, to cover its round trip (the
    /// schedulers' `pipelined`, summed).
    pub pipelined: u64,
    /// Nodes that found their own uplink full at least once (`transfer.find_uplink`).
    pub uplinks_found: u64,
    /// Their findings in all (each bin the queue stayed long counts once: the engines' `uplinks_found`,
    /// summed).
    pub uplink_findings: u64,
    /// Penalise outputs.
    pub penalties: u64,
    /// Dials that failed because one end already held `peers.max_connections` connections.
    pub dials_refused: u64,
    /// Targets that did not complete by the end.
    pub incomplete: u32,
    /// Bandwidth recomputations.
    pub ticks: u64,
    /// The kinds of engine inputs and outputs the nodes saw (empty unless `sim.record_engine`).
    pub recorded: Vec<String>,
    /// Events processed per kind, in the order of [`EVENT_KINDS`]: where the simulator's time goes.
    pub events_by_kind: Vec<u64>,
    /// The bandwidth model's grid, seconds.
    pub rate_quantum_secs: f64,
    /// Median chunk transfer time (flow start to end, about 9% resolution), seconds; `None` without any.
    pub transfer_p50_secs: Option<f64>,
}

/// Progress callback: (chunks received so far, chunks needed in all).
pub type ProgressFn<'a> = &'a (dyn Fn(u64, u64) + Sync);

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

struct NodeState {
    engine: engine::Engine<NodeIx>,
    /// The line it declares in its hello (`transfer.downlink`), bytes/s.
    declared: Option<u64>,
    started: Vec<bool>,
    got_entry: Vec<bool>,
    done: Vec<bool>,
    online: bool,
    /// When it last went offline (churn), seconds of virtual time.
    offline_since: Option<f64>,
    epoch: u32,
    up: LinkId,
    down: LinkId,
    /// Its answers' pace (`Engine::upload_pace`): a link every upload of its crosses first, holding no
    /// queue (the bytes wait in the sender, as the node's paced writes do), and the rate it was set to.
    pace: LinkId,
    pace_rate: Option<f64>,
    timer_at: Option<Time>,
    /// When its next round of pings is due (armed while it has a film to fetch).
    ping_at: Option<Time>,
    /// Connections made by the engine's dials ([`Output::Dial`]), beside the topology's neighbours.
    dialed: BTreeSet<NodeIx>,
    /// Per film: the first lookup's answer was paid for by the delay before the offer.
    lookup_paid: Vec<bool>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState").field("online", &self.online).finish_non_exhaustive()
    }
}

/// One simulation run.
pub struct Engine<'a> {
    /// Per node, the samples of `requests.csv` ([`Outcome::requests`]), and when the next is due.
    requests: Vec<Vec<RequestSample>>,
    /// Which nodes are sampled: every node of a run of at most [`REQUESTS_CSV_MAX_NODES`], else those
    /// `sim.trace` names.
    sampled: Vec<bool>,
    next_sample: f64,
    sc: &'a Scenario,
    topo: Topology,
    rng: ChaCha8Rng,
    net: Network,
    nodes: Vec<NodeState>,
    stats: Vec<NodeStats>,
    transfers: Vec<Option<Transfer>>,
    uploads: HashMap<UploadId, Upload>,
    flows: HashMap<UploadId, FlowId>,
    next_upload: UploadId,
    wires: Vec<Option<Wire>>,
    free_wires: Vec<u32>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    now: Time,
    tick_at: Option<Time>,
    egress_link: Vec<Option<LinkId>>,
    ingress_link: Vec<Option<LinkId>>,
    isp_matrix: Vec<Vec<u64>>,
    egress_bins: Vec<u64>,
    upload_bins: Vec<u64>,
    /// Per access class (index into `classes`), the cinemas' download per bin.
    download_bins: Vec<Vec<u64>>,
    classes: Vec<String>,
    /// Each node's index into `classes` (superseeders: none).
    class_of: Vec<Option<usize>>,
    chunks: Vec<u32>,
    published: Vec<bool>,
    /// Per film, the nodes whose provider record is in the DHT (online or not: a record outlives its node).
    providing: Vec<BTreeSet<NodeIx>>,
    remaining_targets: u64,
    needed_chunks: u64,
    received_chunks: u64,
    events: u64,
    transfers_done: u64,
    duplicate_transfers: u64,
    busy: u64,
    penalties: u64,
    dials_refused: u64,
    ticks: u64,
    progress: Option<ProgressFn<'a>>,
    kinds: [u64; EVENT_KINDS.len()],
    /// Chunk transfers by duration ([`DURATION_BUCKETS`] per octave from 1 ms): the quantum's self-check.
    durations: Vec<u64>,
}

/// Buckets per octave of the transfer-duration histogram (about 9% wide).
const DURATION_BUCKETS: f64 = 8.0;

/// The histogram bucket of a transfer of `secs`.
fn duration_bucket(secs: f64) -> usize {
    ((secs.max(1e-3) / 1e-3).log2() * DURATION_BUCKETS).floor().min(400.0) as usize
}

/// The median of a duration histogram, seconds (the bucket's upper edge); `None` when empty.
fn histogram_median(hist: &[u64]) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    let mut seen = 0;
    for (b, &n) in hist.iter().enumerate() {
        seen += n;
        if total > 0 && seen * 2 >= total {
            return Some(1e-3 * 2f64.powf((b + 1) as f64 / DURATION_BUCKETS));
        }
    }
    None
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("now", &self.now).field("events", &self.events).finish_non_exhaustive()
    }
}

impl<'a> Engine<'a> {
    /// Builds the world for `sc` with `seed`.
    pub fn new(sc: &'a Scenario, seed: u64) -> Self {
        let (topo, targets, rng) = world(sc, seed);
        let mut net = Network::new(sc.rate_quantum().as_micros() as u64)
            .with_full_queue(sc.sim.full_queue.as_secs_f64());
        let n = topo.len();
        let films = sc.film.len();
        let chunks: Vec<u32> = sc.film.iter().map(|f| sc.chunks(f)).collect();
        // Links carry payload: every capacity is scaled by the payload's share of the bytes on the wire.
        let ps = sc.sim.payload_share;
        let mut egress_link = Vec::new();
        let mut ingress_link = Vec::new();
        for isp in &sc.isp {
            let t = isp.transit.map(|r| r.0 * ps);
            egress_link.push(t.map(|c| net.add_link(c)));
            ingress_link.push(t.map(|c| net.add_link(c)));
        }
        let mut nodes = Vec::with_capacity(n);
        for (i, node) in topo.nodes.iter().enumerate() {
            let up = net.add_link(node.up * ps);
            let down = net.add_link(node.down * ps);
            if let (false, Some(q)) = (node.seeder, sc.sim.uplink_queue) {
                net.set_queue(up, q.as_secs_f64());
            }
            let pace = net.add_link(f64::INFINITY);
            net.set_queue(pace, 0.0);
            let role = if node.seeder { Role::Superseeder } else { Role::Cinema };
            let mut transfer = sc.transfer.clone();
            if node.seeder {
                transfer.upload_slots = sc.seeders.upload_slots.unwrap_or(sc.transfer.upload_slots);
            } else {
                if sc.sim.declared_downlinks {
                    transfer.downlink = Some(cinemesh_core::config::Rate(node.down));
                }
                if sc.sim.declared_uplinks {
                    transfer.uplink = Some(cinemesh_core::config::Rate(node.up));
                }
            }
            let declared = transfer.downlink.map(|r| r.0 as u64);
            let mut cfg = engine::Config::new(role, transfer, sc.policy.clone());
            cfg.locality = node.locality.clone();
            cfg.max_peers = sc.peers.max_connections;
            cfg.seed = mix64(seed ^ ((i as u64) << 1));
            if sc.sim.engine_salt != 0 {
                cfg.seed = mix64(cfg.seed ^ mix64(sc.sim.engine_salt));
            }
            let mut e = engine::Engine::new(cfg);
            e.identify(&(i as NodeIx));
            if sc.sim.record_engine {
                e.record_kinds();
            }
            // A cinema's own limits: the topology caps its links, and its engine paces its requests and
            // answers by them as the node's does.
            let limits = Limits {
                upload: sc.transfer.upload_limit.map(|r| r.0),
                download: sc.transfer.download_limit.map(|r| r.0),
            };
            if !node.seeder && limits != Limits::default() {
                e.set_limits(Time::ZERO, limits);
            }
            if node.seeder {
                for (f, film) in sc.film.iter().enumerate() {
                    let held = Held { have: Bitfield::full(chunks[f]), size: film.size.0, pinned: true };
                    e.hold(Time::ZERO, content_id(f as FilmIx), held);
                }
                // Provide outputs: `providing` starts with every superseeder.
                while e.poll_output().is_some() {}
            }
            nodes.push(NodeState {
                engine: e,
                declared,
                started: vec![false; films],
                got_entry: vec![false; films],
                done: vec![false; films],
                online: false,
                offline_since: None,
                epoch: 0,
                up,
                down,
                pace,
                pace_rate: None,
                timer_at: None,
                ping_at: None,
                dialed: BTreeSet::new(),
                lookup_paid: vec![false; films],
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
        let mut classes: Vec<String> =
            topo.nodes.iter().filter(|n| !n.seeder).map(|n| n.class.clone()).collect();
        classes.sort();
        classes.dedup();
        let class_of = topo
            .nodes
            .iter()
            .map(|n| (!n.seeder).then(|| classes.binary_search(&n.class).ok()).flatten())
            .collect();
        let sampled: Vec<bool> = topo
            .nodes
            .iter()
            .map(|node| n <= REQUESTS_CSV_MAX_NODES || sc.sim.trace.contains(&node.name))
            .collect();
        let mut e = Engine {
            requests: vec![Vec::new(); if sampled.iter().any(|&s| s) { n } else { 0 }],
            sampled,
            next_sample: 0.0,
            sc,
            topo,
            rng,
            net,
            nodes,
            stats,
            transfers: Vec::new(),
            uploads: HashMap::new(),
            flows: HashMap::new(),
            next_upload: 0,
            wires: Vec::new(),
            free_wires: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            tick_at: None,
            egress_link,
            ingress_link,
            isp_matrix: vec![vec![0; isps]; isps],
            egress_bins: Vec::new(),
            upload_bins: Vec::new(),
            download_bins: vec![Vec::new(); classes.len()],
            classes,
            class_of,
            chunks,
            published: vec![false; films],
            providing: vec![(sc.cinemas..n as NodeIx).collect(); films],
            remaining_targets,
            needed_chunks,
            received_chunks: 0,
            events: 0,
            transfers_done: 0,
            duplicate_transfers: 0,
            busy: 0,
            penalties: 0,
            dials_refused: 0,
            ticks: 0,
            progress: None,
            kinds: [0; EVENT_KINDS.len()],
            durations: vec![0; 402],
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

    /// Puts `msg` from `from` to `to` on the wire: delivered one-way latency from now.
    fn send(&mut self, from: NodeIx, to: NodeIx, msg: Msg) {
        let epochs = (self.nodes[from as usize].epoch, self.nodes[to as usize].epoch);
        let wire = Wire { from, to, epochs, msg };
        let slot = match self.free_wires.pop() {
            Some(s) => {
                self.wires[s as usize] = Some(wire);
                s
            }
            None => {
                self.wires.push(Some(wire));
                (self.wires.len() - 1) as u32
            }
        };
        let at = Time(self.now.0 + self.topo.latency(from, to));
        self.push(at, Ev::Deliver { slot });
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
            self.kinds[kind_of(&ev, &self.wires)] += 1;
            self.handle(ev);
        }
        Ok(self.finish())
    }

    fn handle(&mut self, ev: Ev) {
        self.sample_requests();
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
                for (flow, at) in self.net.take_released() {
                    self.push(at, Ev::FlowRelease { flow });
                }
                if let Some(next) = next {
                    self.request_tick(next.max(Time(self.now.0 + 1)));
                }
            }
            Ev::FlowDone { flow } => self.flow_done(flow),
            Ev::FlowRelease { flow } => self.flow_release(flow),
            Ev::Deliver { slot } => {
                let wire = self.wires[slot as usize].take();
                self.free_wires.push(slot);
                if let Some(w) = wire {
                    self.deliver(w);
                }
            }
            Ev::Timer { node } => {
                let now = self.now;
                let n = &mut self.nodes[node as usize];
                if n.timer_at != Some(now) {
                    return;
                }
                n.timer_at = None;
                n.engine.handle_timeout(now);
                self.drive(node);
            }
            Ev::Publish { film } => self.publish(film),
            Ev::Start { node, film } => self.start(node, film),
            Ev::Online { node } => self.online(node),
            Ev::Offline { node } => self.offline(node),
            Ev::Providers { node, film } => self.providers(node, film),
            Ev::Connect { from, to } => self.connect(from, to),
            Ev::Ping { node } => self.ping(node),
        }
    }

    fn live(&self, from: NodeIx, to: NodeIx, epochs: (u32, u32)) -> bool {
        let (a, b) = (&self.nodes[from as usize], &self.nodes[to as usize]);
        a.online && b.online && a.epoch == epochs.0 && b.epoch == epochs.1
    }

    /// A message reaches its receiver: the matching engine input, and the answer on the wire.
    fn deliver(&mut self, w: Wire) {
        if !self.live(w.from, w.to, w.epochs) {
            return;
        }
        let (from, to, now) = (w.from, w.to, self.now);
        let info = |s: &Self, x: NodeIx| {
            let n = &s.topo.nodes[x as usize];
            let role = if n.seeder { Role::Superseeder } else { Role::Cinema };
            PeerInfo {
                role: Some(role),
                locality: n.locality.clone(),
                downlink: s.nodes[x as usize].declared,
            }
        };
        match w.msg {
            Msg::Request(req) => {
                let e = &mut self.nodes[to as usize].engine;
                match req {
                    Request::Hello => {
                        let i = info(self, from);
                        self.nodes[to as usize].engine.hello(now, from, i);
                        self.send(to, from, Msg::Hello);
                    }
                    Request::Manifest { content } => {
                        let good = e.held(&content).map(|h| h.size);
                        self.send(to, from, Msg::Manifest { content, good });
                    }
                    Request::Bitfield { content } => {
                        let have = e.bitfield_request(now, &from, &content);
                        self.send(to, from, Msg::Bitfield { content, have });
                    }
                    Request::Chunk { content, index, rate } => {
                        self.next_upload += 1;
                        let upload = self.next_upload;
                        self.uploads.insert(
                            upload,
                            Upload { dl: from, ul: to, content, index, epochs: (w.epochs.1, w.epochs.0) },
                        );
                        e.chunk_request(now, &from, upload, content, index, rate);
                    }
                    Request::Have { content, chunks } => e.have(now, &from, &content, &chunks),
                    Request::Cancel { content, index } => e.cancel(now, &from, &content, index),
                }
                self.drive(to);
            }
            Msg::Hello => {
                let i = info(self, from);
                self.nodes[to as usize].engine.hello(now, from, i);
                // The hello's answer took a round trip: each end learns it, as the node's first ping tells both.
                let rtt = self.ping_rtt(from, to);
                self.nodes[to as usize].engine.round_trip(now, &from, rtt);
                self.nodes[from as usize].engine.round_trip(now, &to, rtt);
                self.drive(to);
                self.drive(from);
            }
            Msg::Manifest { content, good } => {
                let reply = match good {
                    Some(size) => ManifestReply::Good { size },
                    None => ManifestReply::Missing,
                };
                self.nodes[to as usize].engine.manifest(now, &from, content, reply);
                self.drive(to);
            }
            Msg::Bitfield { content, have } => {
                self.nodes[to as usize].engine.bitfield(now, &from, &content, have);
                self.drive(to);
            }
            Msg::Answer { content, index, answer } => {
                let e = &mut self.nodes[to as usize].engine;
                let kept = e.chunk_reply(now, &from, &content, index, Reply::Answer(answer));
                if let Answer::Data { len, .. } = answer {
                    if kept {
                        e.chunk_written(now, &from, &content, index, len, Written::Ok);
                    } else {
                        self.duplicate_transfers += 1;
                    }
                }
                self.drive(to);
            }
        }
    }

    /// Drains a node's engine, carrying out its outputs; re-arms its timer.
    fn drive(&mut self, x: NodeIx) {
        let now = self.now;
        while let Some(out) = self.nodes[x as usize].engine.poll_output() {
            match out {
                Output::Send { peer, request } => self.send(x, peer, Msg::Request(request)),
                Output::Answer { upload, answer } => self.answer(x, upload, answer),
                Output::Read { upload, .. } => {
                    let bytes = self.uploads.get(&upload).map(|u| self.chunk_len(u.content, u.index));
                    let result = bytes.ok_or_else(|| "unknown upload".to_owned());
                    self.nodes[x as usize].engine.chunk_read(now, upload, result);
                }
                // The node cannot take back a chunk answer handed to request-response: the flow runs on
                // and ends as any other (`sim.abortable_uploads`).
                Output::Abort { .. } if !self.sc.sim.abortable_uploads => {}
                Output::Abort { upload } => {
                    if let Some(flow) = self.flows.remove(&upload) {
                        self.net.remove_flow(flow);
                        self.transfers[flow.index as usize] = None;
                        self.uploads.remove(&upload);
                        self.request_tick(now);
                    }
                    // The flow is gone: the uploader's slot is free.
                    self.nodes[x as usize].engine.upload_done(now, upload, false);
                }
                Output::Install { content } => {
                    let chunks = self.chunks[film_of(&content) as usize];
                    self.nodes[x as usize].engine.installed(now, content, Ok(Bitfield::new(chunks)));
                }
                Output::Lookup { content } => {
                    let f = film_of(&content);
                    let paid = std::mem::take(&mut self.nodes[x as usize].lookup_paid[f as usize]);
                    let delay = if paid {
                        0
                    } else {
                        kad::lookup(&self.topo, x, self.sc.sim.kad_k, self.sc.sim.kad_alpha, &mut self.rng)
                            .micros
                    };
                    self.push(Time(now.0 + delay), Ev::Providers { node: x, film: f });
                }
                Output::Dial { peer } => {
                    // Transport and security handshakes: two round trips.
                    let at = Time(now.0 + 4 * self.topo.latency(x, peer));
                    self.push(at, Ev::Connect { from: x, to: peer });
                }
                Output::Provide { content } => {
                    self.providing[film_of(&content) as usize].insert(x);
                }
                Output::Unprovide { content } => {
                    self.providing[film_of(&content) as usize].remove(&x);
                }
                // Content is never removed.
                Output::Remove { .. } => {}
                Output::Event(e) => match e {
                    engine::Event::Complete { content } => self.complete(x, film_of(&content)),
                    engine::Event::Penalised { .. } => self.penalties += 1,
                    engine::Event::ChunkStored { .. } => {
                        self.received_chunks += 1;
                        if let Some(p) = self.progress {
                            if self.received_chunks % 512 == 0 {
                                p(self.received_chunks, self.needed_chunks);
                            }
                        }
                    }
                    engine::Event::Joined { .. }
                    | engine::Event::Fetching { .. }
                    | engine::Event::Refused { .. }
                    | engine::Event::Served { .. } => {}
                },
            }
        }
        let n = &mut self.nodes[x as usize];
        // The bytes of its answers keep to the engine's pace, as the node's writes do.
        let pace = n.engine.upload_pace();
        if pace != n.pace_rate {
            n.pace_rate = pace;
            let link = n.pace;
            self.net.set_capacity(link, pace.unwrap_or(f64::INFINITY));
            self.request_tick(now);
        }
        let n = &mut self.nodes[x as usize];
        if let Some(t) = n.engine.poll_timeout() {
            let t = t.max(Time(now.0 + 1));
            if n.timer_at.is_none_or(|cur| t < cur || cur <= now) {
                n.timer_at = Some(t);
                self.push(t, Ev::Timer { node: x });
            }
        }
    }

    fn chunk_len(&self, content: ContentId, index: u32) -> u64 {
        let f = film_of(&content) as usize;
        let size = self.sc.chunk_size(&self.sc.film[f]);
        let total = self.sc.film[f].size.0;
        size.min(total.saturating_sub(u64::from(index) * size))
    }

    /// The uploader `x` answers `upload`: data becomes a flow, anything else a message.
    fn answer(&mut self, x: NodeIx, upload: UploadId, answer: Answer) {
        let Some(u) = self.uploads.get(&upload).copied() else { return };
        if !self.live(u.ul, u.dl, u.epochs) {
            self.uploads.remove(&upload);
            return;
        }
        debug_assert_eq!(u.ul, x);
        match answer {
            Answer::Data { len, load } => {
                let (a, b) = (&self.topo.nodes[u.ul as usize], &self.topo.nodes[u.dl as usize]);
                let mut links = vec![self.nodes[u.ul as usize].pace, self.nodes[u.ul as usize].up];
                if a.isp != b.isp {
                    links.extend(self.egress_link[a.isp as usize]);
                    links.extend(self.ingress_link[b.isp as usize]);
                }
                links.push(self.nodes[u.dl as usize].down);
                // The ACKs coming back load the downloader's uplink (links carry payload: see `Engine::new`).
                let acks = (self.sc.sim.ack_share > 0.0).then(|| {
                    (self.nodes[u.dl as usize].up, self.sc.sim.ack_share * self.sc.sim.payload_share)
                });
                let path = self.sc.sim.per_connection.then(|| (u64::from(u.ul) << 32) | u64::from(u.dl));
                let flow = self.net.add_flow_on_path(&links, acks, path, len);
                self.net.set_round_trip(flow, 2.0 * self.topo.latency(u.ul, u.dl) as f64 / 1e6);
                let ix = flow.index as usize;
                if self.transfers.len() <= ix {
                    self.transfers.resize(ix + 1, None);
                }
                let film = film_of(&u.content);
                self.transfers[ix] = Some(Transfer {
                    upload,
                    dl: u.dl,
                    ul: u.ul,
                    film,
                    chunk: u.index,
                    bytes: len,
                    load,
                    start: self.now,
                    released: false,
                });
                self.flows.insert(upload, flow);
                if let Some(b) = self.sc.sim.send_buffer {
                    self.net.set_release(flow, b.0);
                }
                self.request_tick(self.now);
            }
            other => {
                if matches!(other, Answer::Busy { .. }) {
                    self.busy += 1;
                }
                self.uploads.remove(&upload);
                self.send(x, u.dl, Msg::Answer { content: u.content, index: u.index, answer: other });
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

    /// The uploader's transport holds the rest of the flow: its engine frees the slot, as a node's does when
    /// the answer has been written to the stream (`ResponseSent`), before the asker has it all.
    fn flow_release(&mut self, flow: FlowId) {
        if !self.net.contains(flow) {
            return;
        }
        let Some(t) = self.transfers[flow.index as usize].as_mut() else { return };
        if t.released {
            return;
        }
        t.released = true;
        let (ul, upload) = (t.ul, t.upload);
        let now = self.now;
        self.nodes[ul as usize].engine.upload_done(now, upload, true);
        self.drive(ul);
    }

    fn flow_done(&mut self, flow: FlowId) {
        if !self.net.remove_flow(flow) {
            return;
        }
        self.request_tick(self.now);
        let Some(t) = self.transfers[flow.index as usize].take() else {
            return;
        };
        self.flows.remove(&t.upload);
        self.uploads.remove(&t.upload);
        self.transfers_done += 1;
        self.durations[duration_bucket(self.now.saturating_since(t.start).as_secs_f64())] += 1;
        let (dl, ul) = (t.dl as usize, t.ul as usize);
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
            spread(&mut self.egress_bins, t.start, self.now, t.bytes);
        } else {
            spread(&mut self.upload_bins, t.start, self.now, t.bytes);
        }
        if let Some(c) = self.class_of[dl] {
            spread(&mut self.download_bins[c], t.start, self.now, t.bytes);
        }
        let now = self.now;
        if !t.released {
            self.nodes[ul].engine.upload_done(now, t.upload, true);
            self.drive(t.ul);
        }
        // The last byte reaches the downloader one-way latency after the uploader's link sent it.
        let answer = Answer::Data { len: t.bytes, load: t.load };
        self.send(t.ul, t.dl, Msg::Answer { content: content_id(t.film), index: t.chunk, answer });
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
        self.nodes[xi].lookup_paid[f] = true;
        self.push(Time(at + l.micros), Ev::Start { node: x, film });
    }

    /// A lookup's answer: every provider record of the film but `x`'s own, in random order (as the DHT
    /// returns them), offline ones included.
    fn providers(&mut self, x: NodeIx, film: FilmIx) {
        if !self.nodes[x as usize].online {
            return;
        }
        let mut found: Vec<NodeIx> =
            self.providing[film as usize].iter().copied().filter(|&p| p != x).collect();
        found.shuffle(&mut self.rng);
        self.nodes[x as usize].engine.providers(self.now, &content_id(film), &found);
        self.drive(x);
    }

    /// The nodes `x` is connected to, each once: its online topology neighbours (when online itself), then
    /// the nodes it dialed or was dialed by that are not among them.
    fn peers_of(&self, x: NodeIx) -> Vec<NodeIx> {
        let n = &self.nodes[x as usize];
        let neighbours = &self.topo.neighbours[x as usize];
        let mut peers: Vec<NodeIx> = if n.online {
            neighbours.iter().copied().filter(|&y| self.nodes[y as usize].online).collect()
        } else {
            Vec::new()
        };
        let dialed: Vec<NodeIx> = n.dialed.iter().copied().filter(|y| !peers.contains(y)).collect();
        peers.extend(dialed);
        peers
    }

    /// Connections `x` holds ([`peers_of`](Self::peers_of)).
    fn links(&self, x: NodeIx) -> usize {
        self.peers_of(x).len()
    }

    /// Whether `a` and `b` are connected: topology neighbours both online, or a dial between them.
    fn linked(&self, a: NodeIx, b: NodeIx) -> bool {
        self.nodes[a as usize].dialed.contains(&b)
            || (self.nodes[a as usize].online
                && self.nodes[b as usize].online
                && self.topo.neighbours[a as usize].binary_search(&b).is_ok())
    }

    /// `from`'s dial to `to` completes: both engines are told, or `from`'s is told it failed.
    fn connect(&mut self, from: NodeIx, to: NodeIx) {
        let now = self.now;
        if !self.nodes[from as usize].online {
            return;
        }
        if !self.nodes[to as usize].online {
            self.nodes[from as usize].engine.dial_failed(now, &to);
        } else if !self.linked(from, to) {
            // Either end at its connection limit refuses, as libp2p's `connection_limits` does in the node.
            let max = self.sc.peers.max_connections as usize;
            if self.links(from) >= max || self.links(to) >= max {
                self.dials_refused += 1;
                self.nodes[from as usize].engine.dial_failed(now, &to);
                self.drive(from);
                return;
            }
            self.nodes[from as usize].dialed.insert(to);
            self.nodes[to as usize].dialed.insert(from);
            for x in [from, to] {
                let n = self.links(x) as u32;
                let s = &mut self.stats[x as usize];
                s.links_max = s.links_max.max(n);
            }
            self.nodes[from as usize].engine.connected(now, to);
            self.nodes[to as usize].engine.connected(now, from);
            self.drive(to);
        } else {
            // Already connected: the engine learns it (it has the session, or gets it now).
            self.nodes[from as usize].engine.connected(now, to);
        }
        self.drive(from);
    }

    /// The node's engine is offered the film, as the node's catalogue does on a Publish.
    fn start(&mut self, x: NodeIx, film: FilmIx) {
        let (xi, f) = (x as usize, film as usize);
        if !self.nodes[xi].online || self.nodes[xi].started[f] {
            return;
        }
        self.nodes[xi].started[f] = true;
        let now = self.now;
        let publish = Time::from_duration(self.sc.film[f].publish);
        let offer = Offer {
            content: content_id(film),
            chunks: self.chunks[f],
            size: self.sc.film[f].size.0,
            chunk_size: self.sc.chunk_size(&self.sc.film[f]),
            deadline: self.sc.film[f].deadline.map(|d| publish + d),
            targeted: self.stats[xi].targeted[f],
        };
        self.nodes[xi].engine.offer(now, offer);
        self.drive(x);
        self.arm_ping(x);
    }

    /// Whether `x` has a film started and not complete: it pings its peers then.
    fn has_fetch(&self, x: NodeIx) -> bool {
        let n = &self.nodes[x as usize];
        n.started.iter().zip(&n.done).any(|(&s, &d)| s && !d)
    }

    fn arm_ping(&mut self, x: NodeIx) {
        let n = &self.nodes[x as usize];
        if n.online && n.ping_at.is_none() && self.has_fetch(x) {
            let at = self.now + engine::PING_INTERVAL;
            self.nodes[x as usize].ping_at = Some(at);
            self.push(at, Ev::Ping { node: x });
        }
    }

    /// The round trip from `x` to `y` now: the latency both ways, and the queue of every full link a ping
    /// and its answer cross (each node's uplink and downlink, both ISPs' borders when they differ).
    fn ping_rtt(&self, x: NodeIx, y: NodeIx) -> Duration {
        let mut queue = 0.0;
        for (a, b) in [(x, y), (y, x)] {
            let (na, nb) = (&self.topo.nodes[a as usize], &self.topo.nodes[b as usize]);
            queue += self.net.queue_delay(self.nodes[a as usize].up)
                + self.net.queue_delay(self.nodes[b as usize].down);
            if na.isp != nb.isp {
                for l in self.egress_link[na.isp as usize].iter().chain(&self.ingress_link[nb.isp as usize]) {
                    queue += self.net.queue_delay(*l);
                }
            }
        }
        Duration::from_micros(2 * self.topo.latency(x, y)) + Duration::from_secs_f64(queue)
    }

    /// `x`'s pings: each peer's round trip, with the queues on the way, reaches its engine as the node's
    /// ping results do; again [`engine::PING_INTERVAL`] later while it fetches. (The node pings every
    /// connection always; a node with nothing to fetch takes no decision from a round trip, so the
    /// simulator saves those events.)
    fn ping(&mut self, x: NodeIx) {
        if self.nodes[x as usize].ping_at != Some(self.now) {
            return;
        }
        self.nodes[x as usize].ping_at = None;
        if !self.nodes[x as usize].online || !self.has_fetch(x) {
            return;
        }
        let now = self.now;
        for y in self.peers_of(x) {
            let rtt = self.ping_rtt(x, y);
            self.nodes[x as usize].engine.round_trip(now, &y, rtt);
        }
        self.drive(x);
        self.arm_ping(x);
    }

    fn online(&mut self, x: NodeIx) {
        let xi = x as usize;
        if self.nodes[xi].online {
            return;
        }
        self.nodes[xi].online = true;
        self.nodes[xi].epoch += 1;
        self.nodes[xi].ping_at = None;
        self.arm_ping(x);
        let now = self.now;
        self.stats[xi].online.get_or_insert(now.as_secs_f64());
        if let Some(since) = self.nodes[xi].offline_since.take() {
            // Only the time film 0's fetch could have used: after its publish, before its completion.
            let publish0 = self.sc.film.first().map_or(0.0, |f| f.publish.as_secs_f64());
            if self.stats[xi].complete.first().is_some_and(Option::is_none) {
                self.stats[xi].offline += (now.as_secs_f64() - since.max(publish0)).max(0.0);
            }
        }
        let mut nearest = u64::MAX;
        for k in 0..self.topo.neighbours[xi].len() {
            let j = self.topo.neighbours[xi][k];
            if !self.nodes[j as usize].online {
                continue;
            }
            nearest = nearest.min(self.topo.latency(x, j));
            self.nodes[xi].engine.connected(now, j);
            self.nodes[j as usize].engine.connected(now, x);
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
                self.nodes[xi].lookup_paid[f] = true;
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
        self.nodes[xi].offline_since = Some(now.as_secs_f64());
        for ix in 0..self.transfers.len() {
            let Some(t) = self.transfers[ix] else { continue };
            if t.dl != x && t.ul != x {
                continue;
            }
            if let Some(flow) = self.flows.remove(&t.upload) {
                self.net.remove_flow(flow);
            }
            self.uploads.remove(&t.upload);
            self.transfers[ix] = None;
        }
        self.uploads.retain(|_, u| u.dl != x && u.ul != x);
        self.request_tick(now);
        for j in self.peers_of(x) {
            self.nodes[j as usize].dialed.remove(&x);
            self.nodes[j as usize].engine.disconnected(now, &x);
            self.nodes[xi].engine.disconnected(now, &j);
            self.drive(j);
        }
        self.nodes[xi].dialed.clear();
        // Outputs of an offline node go nowhere.
        while self.nodes[xi].engine.poll_output().is_some() {}
        let back = now + exp(&mut self.rng, self.sc.churn.offline_mean);
        self.push(back, Ev::Online { node: x });
    }

    /// The kinds of engine inputs and outputs every node saw (with `sim.record_engine`), merged.
    pub fn recorded(&self) -> Vec<String> {
        let mut all: Vec<String> = self.nodes.iter().flat_map(|n| n.engine.recorded()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Takes the samples of `requests.csv` due by now: each online node's request window, requests in
    /// flight (and to other ISPs) and its scheduler's counters, once a second of virtual time.
    fn sample_requests(&mut self) {
        if self.requests.is_empty() {
            return;
        }
        let now = self.now.as_secs_f64();
        // The state at a whole second, after every event at it: taken when the first later event comes.
        while self.next_sample < now {
            for (x, samples) in self.requests.iter_mut().enumerate() {
                let n = &self.nodes[x];
                if !self.sampled[x] || !n.online || samples.len() >= REQUESTS_CSV_MAX_SAMPLES {
                    continue;
                }
                let s = n.engine.scheduler_stats();
                samples.push(RequestSample {
                    t: self.next_sample,
                    window: f64::from(n.engine.request_window()),
                    in_flight: n.engine.in_flight() as f64,
                    in_flight_other_isp: n.engine.in_flight_other_isp() as f64,
                    sent: s.requests as f64,
                    beyond_window: s.beyond_window as f64,
                    yielded: s.yielded as f64,
                    pipelined: s.pipelined as f64,
                    endgame: s.endgame_requests as f64,
                    timed_out: s.timeouts as f64,
                    cancels: s.cancels as f64,
                    duplicate: s.duplicates as f64,
                    received: (s.received + s.unsolicited) as f64,
                    busy: s.busy as f64,
                });
            }
            self.next_sample += 1.0;
        }
    }

    fn finish(mut self) -> Outcome {
        for (s, n) in self.stats.iter_mut().zip(&self.nodes) {
            s.busy_answers = n.engine.stats().busy_answers;
            s.busy_received = n.engine.scheduler_stats().busy;
        }
        let mut incomplete = 0;
        for s in &self.stats {
            for (t, c) in s.targeted.iter().zip(&s.complete) {
                if *t && c.is_none() {
                    incomplete += 1;
                }
            }
        }
        let recorded = self.recorded();
        Outcome {
            topo: self.topo,
            stats: self.stats,
            isp_matrix: self.isp_matrix,
            egress_bins: self.egress_bins,
            upload_bins: self.upload_bins,
            download_bins: self.classes.into_iter().zip(self.download_bins).collect(),
            egress_bin_secs: EGRESS_BIN_US as f64 / 1e6,
            end_secs: self.now.as_secs_f64(),
            events: self.events,
            transfers: self.transfers_done,
            duplicate_transfers: self.duplicate_transfers,
            requests: std::mem::take(&mut self.requests),
            busy: self.busy,
            pipelined: self.nodes.iter().map(|n| n.engine.scheduler_stats().pipelined).sum(),
            uplinks_found: self.nodes.iter().filter(|n| n.engine.stats().uplinks_found > 0).count() as u64,
            uplink_findings: self.nodes.iter().map(|n| n.engine.stats().uplinks_found).sum(),
            penalties: self.penalties,
            dials_refused: self.dials_refused,
            incomplete,
            ticks: self.ticks,
            recorded,
            events_by_kind: self.kinds.to_vec(),
            rate_quantum_secs: self.sc.rate_quantum().as_secs_f64(),
            transfer_p50_secs: histogram_median(&self.durations),
        }
    }
}
