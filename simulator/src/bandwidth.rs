//! Flow-level bandwidth sharing: max-min fairness by progressive filling.
//!
//! Every chunk transfer is a flow crossing a few links (the uploader's upload link, the transit borders of
//! both ISPs when set, the downloader's download link). Rates are the max-min fair allocation: fill every
//! flow's rate equally until some link saturates, freeze the flows crossing it, go on with the rest.
//!
//! A flow may also load a link it does not cross, by a share of its rate (the ACKs of a download on the
//! downloader's upload link): that load is taken off the link's capacity before the filling, at the rate
//! the flow had after the previous recomputation (a quantum old), and never limits the flow itself, as
//! small ACK packets are not held to the data flows' share of a busy uplink.
//!
//! With queues modelled ([`Network::with_full_queue`], `sim.full_queue`), a link that was a bottleneck at the
//! last recomputation holds that queue, and a flow's weight in the filling is the inverse of its round trip:
//! its own, plus the queue of every full link it crosses and of the full link its acknowledgements load. So
//! a download whose acknowledgements wait behind the downloader's own uploads gets less, as TCP gives it.
//!
//! A full uplink whose queue holds only a few packets ([`SHORT_QUEUE_BYTES`]: the lab's 1 Mbit/s ADSL
//! uplinks behind 50 ms queues) drops the downloads' acknowledgements as it drops the uploads' segments:
//! with queues modelled, the acknowledgements of the downloads of the node behind it then get no more than
//! one connection's part of it, as if they were one more upload (a gate of that capacity over the share
//! the acknowledgements take, [`Network::with_full_queue`]). Real ADSL cinemas fetched at a third to half of
//! their line while their uplinks were full, and at their line once paced below it (docs/benchmarks.md,
//! "Acknowledgements held at a short full uplink").
//!
//! Rates are recomputed on a time grid (`sim.rate_quantum`), not on every flow start and end: a flow
//! started between two ticks gets rate 0 until the next tick, a finished flow frees its share at the next
//! tick. Between ticks rates are constant, so a completion inside the window is exact. This keeps the cost
//! at one O(F log L) recomputation per tick however many flows start and end, at a small, bounded loss of
//! utilisation (at most one quantum per flow start and end).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cinemesh_core::{Bitfield, Time};

/// Index of a link.
pub type LinkId = u32;

/// Handle of a flow; stale handles (flow removed, slot reused) are detected by the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    /// Slot.
    pub index: u32,
    /// Generation of the slot.
    pub gen: u32,
}

/// Rate used for a flow that crosses no finite link (bytes/s).
const UNLIMITED: f64 = 1e15;

/// At most this many links per flow.
pub const MAX_LINKS: usize = 6;

/// A full link's queue shorter than this many bytes (eight full-size segments) drops acknowledgements
/// with the data: the gate of the acknowledgements that load it applies (see the module's notes).
pub const SHORT_QUEUE_BYTES: f64 = 8.0 * 1514.0;

#[derive(Debug, Clone)]
struct Flow {
    links: [LinkId; MAX_LINKS],
    n_links: u8,
    remaining: f64,
    rate: f64,
    gen: u32,
    alive: bool,
    /// A link loaded by `share x rate` that does not limit the flow (its ACKs).
    side: Option<(LinkId, f64)>,
    /// Bytes left at which the flow is reported released ([`Network::set_release`]), until it is.
    release: Option<f64>,
    /// The slot of its path's count in [`Network::paths`], when it shares its path's one share.
    path: Option<u32>,
    /// Its round trip with every queue empty, seconds ([`Network::set_round_trip`]).
    rtt: f64,
}

impl Flow {
    /// `dt` seconds at the current rate.
    fn advance(&mut self, dt: f64) {
        self.remaining = (self.remaining - self.rate * dt).max(0.0);
    }
}

/// Links, flows and their rates.
#[derive(Debug)]
pub struct Network {
    caps: Vec<f64>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    live: u32,
    quantum: u64,
    last_tick: Time,
    dirty: bool,
    // Scratch space reused by every recomputation.
    rem: Vec<f64>,
    cnt: Vec<u32>,
    /// Per link: the sum of its unfrozen flows' weights.
    wsum: Vec<f64>,
    on_link: Vec<Vec<u32>>,
    touched: Vec<LinkId>,
    frozen: Vec<bool>,
    /// Which slots hold a flow in progress, one bit each: every pass walks these alone, in slot order, so a
    /// tick late in a run (a few slow flows left in a table sized by the busiest moment) costs little.
    alive: Bitfield,
    /// Flows whose release point falls before the next grid time, with its exact time ([`Network::tick`]).
    released: Vec<(FlowId, Time)>,
    /// Flows in progress per path key (see [`Network::add_flow_on_path`]): the key's count slot.
    path_slot: std::collections::HashMap<u64, u32>,
    /// Per count slot: the key and how many flows in progress share it.
    paths: Vec<(u64, u32)>,
    free_paths: Vec<u32>,
    /// The queue a full link holds, seconds, for links added from now on ([`Network::with_full_queue`]).
    full_queue: f64,
    /// Per link: the queue it holds when full, seconds ([`Network::set_queue`]).
    queue: Vec<f64>,
    /// Some link holds a queue: bottlenecks are tracked and flows weighted by their round trips.
    modelled: bool,
    /// Per link: whether it was a bottleneck at the last recomputation (its queue full), and the same as
    /// being found in this one.
    full: Vec<bool>,
    full_now: Vec<bool>,
    /// Per link: the gate its side loads' flows cross (acknowledgements held at a short full queue).
    gate_of: Vec<Option<LinkId>>,
    /// Gates: the link whose queue holds the acknowledgements, the gate, the acknowledgements' share.
    gates: Vec<(LinkId, LinkId, f64)>,
    /// Per link: connections crossing it (a path's flows count as one), gated links only.
    conns: Vec<f64>,
}

impl Network {
    /// A network with no links; rates are recomputed every `quantum` microseconds (at least 1).
    pub fn new(quantum: u64) -> Self {
        Self {
            caps: Vec::new(),
            flows: Vec::new(),
            free: Vec::new(),
            live: 0,
            quantum: quantum.max(1),
            last_tick: Time::ZERO,
            dirty: false,
            rem: Vec::new(),
            cnt: Vec::new(),
            wsum: Vec::new(),
            on_link: Vec::new(),
            touched: Vec::new(),
            frozen: Vec::new(),
            alive: Bitfield::new(0),
            released: Vec::new(),
            path_slot: std::collections::HashMap::new(),
            paths: Vec::new(),
            free_paths: Vec::new(),
            full_queue: 0.0,
            queue: Vec::new(),
            modelled: false,
            full: Vec::new(),
            full_now: Vec::new(),
            gate_of: Vec::new(),
            gates: Vec::new(),
            conns: Vec::new(),
        }
    }

    /// Models the queues of full links: a link that was a bottleneck at the last recomputation holds
    /// `secs` of queue, and every flow's share at a shared link is weighted by the inverse of its round
    /// trip (its own, [`set_round_trip`](Self::set_round_trip), plus the queues of the full links it
    /// crosses, plus that of the link its acknowledgements load), as TCP shares a queue. So the downloads
    /// of a node whose uplink is kept full by its uploads get less than an equal share, as measured on real
    /// daemons (docs/benchmarks.md, "A declared uplink"). Flows added from then on with a side load also
    /// cross the gate of its link, which holds their acknowledgements at a short full queue (the module's
    /// notes). 0 (the default): equal shares, no queues, no gates.
    pub fn with_full_queue(mut self, secs: f64) -> Self {
        self.full_queue = secs.max(0.0);
        for l in 0..self.queue.len() {
            self.set_queue(l as LinkId, secs);
        }
        self.modelled = self.modelled || self.full_queue > 0.0;
        self
    }

    /// Sets the queue `link` holds when full, seconds (a modem's uplink buffer, `sim.uplink_queue`; 0: a
    /// link that never delays, such as a sender's own pace). Any queue turns the modelling on.
    pub fn set_queue(&mut self, link: LinkId, secs: f64) {
        let secs = secs.max(0.0);
        self.queue[link as usize] = secs;
        if secs > 0.0 && !self.modelled {
            self.modelled = true;
            self.dirty = true;
        }
    }

    /// The delay `link`'s queue adds now, seconds: its queue when it was a bottleneck at the last
    /// recomputation, else 0 (always 0 while no queue is modelled).
    pub fn queue_delay(&self, link: LinkId) -> f64 {
        let l = link as usize;
        if self.modelled && self.full[l] {
            self.queue[l]
        } else {
            0.0
        }
    }

    /// Changes a link's capacity (bytes/s; infinite = unlimited) from the next recomputation on.
    pub fn set_capacity(&mut self, link: LinkId, capacity: f64) {
        let c = &mut self.caps[link as usize];
        if *c != capacity {
            *c = capacity;
            self.dirty = true;
        }
    }

    /// Sets a flow's round trip with every queue empty (seconds); read only with
    /// [`with_full_queue`](Self::with_full_queue).
    pub fn set_round_trip(&mut self, id: FlowId, secs: f64) {
        if self.contains(id) {
            self.flows[id.index as usize].rtt = secs.max(0.0);
            self.dirty = self.dirty || self.modelled;
        }
    }

    /// Adds a link of `capacity` bytes/s (infinite = unlimited).
    pub fn add_link(&mut self, capacity: f64) -> LinkId {
        self.full.push(false);
        self.full_now.push(false);
        self.queue.push(self.full_queue);
        self.caps.push(capacity);
        self.rem.push(0.0);
        self.cnt.push(0);
        self.wsum.push(0.0);
        self.on_link.push(Vec::new());
        self.gate_of.push(None);
        self.conns.push(0.0);
        (self.caps.len() - 1) as LinkId
    }

    /// Capacity of a link.
    pub fn capacity(&self, link: LinkId) -> f64 {
        self.caps[link as usize]
    }

    /// Flows in progress.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// The first grid time at or after `t`.
    pub fn ceil_tick(&self, t: Time) -> Time {
        Time(t.0.div_ceil(self.quantum).saturating_mul(self.quantum))
    }

    /// Starts a flow of `bytes` over `links` (at most [`MAX_LINKS`]; extra links are ignored). Its rate is 0
    /// until the next [`tick`](Self::tick), which the caller must schedule at [`ceil_tick`](Self::ceil_tick).
    pub fn add_flow(&mut self, links: &[LinkId], bytes: u64) -> FlowId {
        self.add_flow_with_side_load(links, None, bytes)
    }

    /// As [`add_flow`](Self::add_flow), and the flow loads `side` (a link, a share of its rate) without
    /// being limited by it.
    pub fn add_flow_with_side_load(
        &mut self,
        links: &[LinkId],
        side: Option<(LinkId, f64)>,
        bytes: u64,
    ) -> FlowId {
        self.add_flow_on_path(links, side, None, bytes)
    }

    /// As [`add_flow_with_side_load`](Self::add_flow_with_side_load); flows given the same `path` key
    /// share one fair share between them, split equally (weighted max-min fairness), as the streams of one
    /// connection share its TCP flow. `None`: a share of its own.
    pub fn add_flow_on_path(
        &mut self,
        links: &[LinkId],
        side: Option<(LinkId, f64)>,
        path: Option<u64>,
        bytes: u64,
    ) -> FlowId {
        let path = path.map(|key| {
            let slot = *self.path_slot.entry(key).or_insert_with(|| match self.free_paths.pop() {
                Some(i) => {
                    self.paths[i as usize] = (key, 0);
                    i
                }
                None => {
                    self.paths.push((key, 0));
                    (self.paths.len() - 1) as u32
                }
            });
            self.paths[slot as usize].1 += 1;
            slot
        });
        let mut l = [0; MAX_LINKS];
        let mut n = links.len().min(MAX_LINKS);
        l[..n].copy_from_slice(&links[..n]);
        // With queues modelled, the flow also crosses the gate of the link its acknowledgements load.
        if let (true, Some((up, share)), true) = (self.modelled, side, n < MAX_LINKS) {
            if share > 0.0 {
                l[n] = self.gate(up, share);
                n += 1;
            }
        }
        let flow = |gen| Flow {
            links: l,
            n_links: n as u8,
            remaining: bytes as f64,
            rate: 0.0,
            gen,
            alive: true,
            side,
            release: None,
            path,
            rtt: 0.0,
        };
        self.dirty = true;
        self.live += 1;
        let id = if let Some(i) = self.free.pop() {
            let gen = self.flows[i as usize].gen.wrapping_add(1);
            self.flows[i as usize] = flow(gen);
            FlowId { index: i, gen }
        } else {
            self.flows.push(flow(0));
            self.frozen.push(false);
            if self.alive.len() < self.flows.len() as u32 {
                // Grow the live set by doubling (the flow table never shrinks).
                let mut grown = Bitfield::new((self.flows.len() as u32).max(64).next_power_of_two());
                for i in self.alive.iter_ones() {
                    grown.set(i);
                }
                self.alive = grown;
            }
            FlowId { index: (self.flows.len() - 1) as u32, gen: 0 }
        };
        self.alive.set(id.index);
        id
    }

    /// Reports the flow released ([`take_released`](Self::take_released)) once at most `bytes_left` of it
    /// remain: the sender has handed the rest to its transport's buffers (at once when the flow is no longer
    /// than that).
    pub fn set_release(&mut self, id: FlowId, bytes_left: u64) {
        if self.contains(id) {
            self.flows[id.index as usize].release = Some(bytes_left as f64);
            self.dirty = true;
        }
    }

    /// The flows whose release point [`tick`](Self::tick) found before the next grid time, with its time.
    pub fn take_released(&mut self) -> Vec<(FlowId, Time)> {
        std::mem::take(&mut self.released)
    }

    /// True when the handle names a flow in progress.
    pub fn contains(&self, id: FlowId) -> bool {
        self.flows.get(id.index as usize).is_some_and(|f| f.alive && f.gen == id.gen)
    }

    /// Current rate of a flow (bytes/s), if in progress.
    pub fn rate(&self, id: FlowId) -> Option<f64> {
        self.contains(id).then(|| self.flows[id.index as usize].rate)
    }

    /// Ends a flow (completed or cancelled). Returns false for a stale handle.
    pub fn remove_flow(&mut self, id: FlowId) -> bool {
        if !self.contains(id) {
            return false;
        }
        let f = &mut self.flows[id.index as usize];
        f.alive = false;
        f.rate = 0.0;
        if let Some(slot) = f.path.take() {
            let (key, n) = &mut self.paths[slot as usize];
            *n -= 1;
            if *n == 0 {
                self.path_slot.remove(key);
                self.free_paths.push(slot);
            }
        }
        self.alive.clear(id.index);
        self.free.push(id.index);
        self.live -= 1;
        self.dirty = true;
        true
    }

    /// Advances every flow to `now` at its current rate, recomputes the rates if flows started or ended,
    /// and returns the flows that finish before the next grid time (with their exact finish times), plus
    /// the grid time at which the next tick is needed if nothing changes (`None` without flows).
    pub fn tick(&mut self, now: Time) -> (Vec<(FlowId, Time)>, Option<Time>) {
        let dt = now.0.saturating_sub(self.last_tick.0) as f64 / 1e6;
        self.last_tick = now;
        // Every flow advances at the rate it had since the last tick: in the recomputation's first pass when
        // rates change, else in the pass below (one walk of the flows fewer either way).
        let dirty = self.dirty;
        if dirty {
            self.recompute(dt);
            self.dirty = false;
        }
        let window_end = now.0.saturating_add(self.quantum);
        let mut done = Vec::new();
        let mut earliest = u64::MAX;
        for i in self.alive.iter_ones().map(|i| i as usize) {
            let f = &mut self.flows[i];
            if !dirty {
                f.advance(dt);
            }
            let id = FlowId { index: i as u32, gen: f.gen };
            if let Some(left) = f.release {
                let at = if f.remaining <= left {
                    Some(now.0)
                } else if f.rate > 0.0 {
                    Some(now.0.saturating_add(((f.remaining - left) / f.rate * 1e6).ceil() as u64))
                } else {
                    None
                };
                match at {
                    Some(at) if at < window_end => {
                        self.released.push((id, Time(at)));
                        f.release = None;
                    }
                    Some(at) => earliest = earliest.min(at),
                    None => {}
                }
            }
            if f.rate <= 0.0 {
                continue;
            }
            let finish = now.0.saturating_add((f.remaining / f.rate * 1e6).ceil() as u64);
            if finish < window_end {
                done.push((id, Time(finish)));
            } else {
                earliest = earliest.min(finish);
            }
        }
        let next = (earliest != u64::MAX).then(|| Time(earliest / self.quantum * self.quantum));
        (done, next)
    }

    /// The gate of the acknowledgements that load `up` (made on first use): unlimited until `up` is full
    /// behind a short queue ([`set_gates`](Self::set_gates)). It holds no queue of its own.
    fn gate(&mut self, up: LinkId, share: f64) -> LinkId {
        if let Some(g) = self.gate_of[up as usize] {
            return g;
        }
        let g = self.add_link(f64::INFINITY);
        self.queue[g as usize] = 0.0;
        self.gate_of[up as usize] = Some(g);
        self.gates.push((up, g, share));
        g
    }

    /// Sets every gate's capacity for this recomputation: where its link was full at the last one and its
    /// queue holds fewer than [`SHORT_QUEUE_BYTES`], the acknowledgements get one connection's part of the
    /// link (its capacity over the connections crossing it, plus one), so the downloads behind the gate
    /// together get that over the acknowledgements' share; elsewhere the gate is unlimited.
    fn set_gates(&mut self) {
        if self.gates.is_empty() {
            return;
        }
        for &(up, _, _) in &self.gates {
            self.conns[up as usize] = 0.0;
        }
        for i in self.alive.iter_ones().map(|i| i as usize) {
            let f = &self.flows[i];
            let w = f.path.map_or(1.0, |p| 1.0 / f64::from(self.paths[p as usize].1));
            for &l in &f.links[..f.n_links as usize] {
                if self.gate_of[l as usize].is_some() {
                    self.conns[l as usize] += w;
                }
            }
        }
        for &(up, g, share) in &self.gates {
            let (u, cap) = (up as usize, self.caps[up as usize]);
            let held = self.full[u] && cap.is_finite() && self.queue[u] * cap < SHORT_QUEUE_BYTES;
            self.caps[g as usize] = if held { cap / (self.conns[u] + 1.0) / share } else { f64::INFINITY };
        }
    }

    /// Max-min fair rates by progressive filling, after advancing every flow by `dt` seconds at its old rate.
    fn recompute(&mut self, dt: f64) {
        self.set_gates();
        for &l in &self.touched {
            self.on_link[l as usize].clear();
            self.cnt[l as usize] = 0;
        }
        self.touched.clear();
        // Only alive flows are ever on a link's list, so only their `frozen` marks are read.
        for i in self.alive.iter_ones().map(|i| i as usize) {
            self.frozen[i] = false;
            let f = &mut self.flows[i];
            f.advance(dt);
            let w = weight(&self.paths, &self.full, self.modelled.then_some(&self.queue[..]), f);
            for &l in &f.links[..f.n_links as usize] {
                let li = l as usize;
                if self.caps[li].is_finite() {
                    if self.cnt[li] == 0 {
                        self.touched.push(l);
                        self.rem[li] = self.caps[li];
                        self.wsum[li] = 0.0;
                    }
                    self.cnt[li] += 1;
                    self.wsum[li] += w;
                    self.on_link[li].push(i as u32);
                }
            }
        }
        // Side loads at the previous rates come off the capacity of the links flows cross.
        for i in self.alive.iter_ones().map(|i| i as usize) {
            let f = &self.flows[i];
            if let Some((l, share)) = f.side {
                let li = l as usize;
                if self.cnt[li] > 0 && f.rate < UNLIMITED {
                    self.rem[li] -= share * f.rate;
                }
            }
        }
        let key = |rem: f64, wsum: f64| (rem.max(0.0) / wsum.max(f64::MIN_POSITIVE)).to_bits();
        let mut heap: BinaryHeap<Reverse<(u64, LinkId)>> = self
            .touched
            .iter()
            .map(|&l| Reverse((key(self.rem[l as usize], self.wsum[l as usize]), l)))
            .collect();
        while let Some(Reverse((k, l))) = heap.pop() {
            let li = l as usize;
            if self.cnt[li] == 0 {
                continue;
            }
            // Freezing flows elsewhere only raises a link's share, so a stale entry pops early: re-queue it
            // with its current share instead of pushing on every change.
            let cur = key(self.rem[li], self.wsum[li]);
            if cur != k {
                heap.push(Reverse((cur, l)));
                continue;
            }
            let share = f64::from_bits(k);
            if self.modelled {
                self.full_now[li] = true;
            }
            for j in 0..self.on_link[li].len() {
                let fi = self.on_link[li][j] as usize;
                if self.frozen[fi] {
                    continue;
                }
                self.frozen[fi] = true;
                let f = &mut self.flows[fi];
                let w = weight(&self.paths, &self.full, self.modelled.then_some(&self.queue[..]), f);
                f.rate = share * w;
                for &m in &f.links[..f.n_links as usize] {
                    let mi = m as usize;
                    if m == l || !self.caps[mi].is_finite() {
                        continue;
                    }
                    self.rem[mi] -= share * w;
                    self.cnt[mi] -= 1;
                    self.wsum[mi] -= w;
                }
            }
            self.cnt[li] = 0;
        }
        for i in self.alive.iter_ones().map(|i| i as usize) {
            if !self.frozen[i] {
                self.flows[i].rate = UNLIMITED;
            }
        }
        if self.modelled {
            std::mem::swap(&mut self.full, &mut self.full_now);
            self.full_now.iter_mut().for_each(|f| *f = false);
        }
    }
}

/// Round trips are weighed against this one (any scale would do; this keeps weights near 1).
const REF_RTT: f64 = 0.05;

/// A flow's weight in the filling: 1, or an equal part of its path's one share; with queues modelled
/// (`queue`: each link's), divided by its round trip (its own, plus the queue of every full link it
/// crosses and of the full link its acknowledgements load) against [`REF_RTT`].
fn weight(paths: &[(u64, u32)], full: &[bool], queue: Option<&[f64]>, f: &Flow) -> f64 {
    let w = f.path.map_or(1.0, |p| 1.0 / f64::from(paths[p as usize].1));
    let Some(queue) = queue else { return w };
    let links = f.links[..f.n_links as usize].iter().chain(f.side.as_ref().map(|(l, _)| l));
    let rtt = f.rtt + links.filter(|&&l| full[l as usize]).map(|&l| queue[l as usize]).sum::<f64>();
    w * REF_RTT / rtt.max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(net: &mut Network, flows: &[FlowId]) -> Vec<f64> {
        net.tick(Time::ZERO);
        flows.iter().map(|&f| net.rate(f).unwrap()).collect()
    }

    #[test]
    fn a_flow_is_released_when_its_last_bytes_fit_the_buffer_and_done_when_it_ends() {
        // 1,000 bytes at 100 B/s on a 1 s grid, released with 200 bytes left: at 8 s, done at 10 s.
        let mut net = Network::new(1_000_000);
        let l = net.add_link(100.0);
        let f = net.add_flow(&[l], 1000);
        net.set_release(f, 200);
        let (mut released, mut done, mut t) = (None, None, Time::ZERO);
        for _ in 0..20 {
            let (d, next) = net.tick(t);
            if let Some(&(_, at)) = net.take_released().first() {
                assert!(released.is_none(), "released once");
                released = Some(at);
            }
            if let Some(&(_, at)) = d.first() {
                done = Some(at);
                break;
            }
            t = next.expect("a flow in progress needs a tick");
        }
        assert_eq!(released, Some(Time(8_000_000)));
        assert_eq!(done, Some(Time(10_000_000)));
        // A flow no longer than the buffer is released at once.
        let g = net.add_flow(&[l], 100);
        net.set_release(g, 200);
        net.tick(Time(10_000_000));
        assert_eq!(net.take_released(), vec![(g, Time(10_000_000))]);
    }

    #[test]
    fn a_link_delays_by_its_own_queue_only_while_it_is_a_bottleneck_and_a_pace_caps_its_flows() {
        // An uplink of 10 B/s with a 1 s queue (a modem), a fast downlink without one, and a pace in front.
        let mut net = Network::new(1_000_000);
        let (pace, up, down) = (net.add_link(f64::INFINITY), net.add_link(10.0), net.add_link(1000.0));
        net.set_queue(up, 1.0);
        assert_eq!(net.queue_delay(up), 0.0, "no flow yet: an empty queue");
        let f = net.add_flow(&[pace, up, down], 1_000_000);
        assert_eq!(rates(&mut net, &[f]), vec![10.0]);
        assert_eq!(net.queue_delay(up), 1.0, "the uplink is the bottleneck: its queue is full");
        assert_eq!(net.queue_delay(down), 0.0, "the downlink has room and no queue of its own");
        // Paced below the line, the flow no longer fills the uplink: the bytes wait in the sender.
        net.set_capacity(pace, 8.0);
        assert_eq!(rates(&mut net, &[f]), vec![8.0]);
        assert_eq!(net.queue_delay(up), 0.0);
        assert_eq!(net.queue_delay(pace), 0.0, "a pace holds no queue on the path");
        net.set_capacity(pace, f64::INFINITY);
        assert_eq!(rates(&mut net, &[f]), vec![10.0]);
        assert_eq!(net.queue_delay(up), 1.0);
    }

    #[test]
    fn with_queues_a_download_whose_acks_wait_in_a_full_uplink_gets_less_of_a_shared_link() {
        // A 40 B/s border into an ISP, a fast and a slow downloader behind it; the slow one's 1 B/s uplink is
        // kept full by its own upload. Round trips of 1 ms with empty queues.
        let run = |queue: f64| {
            let mut net = Network::new(1_000_000).with_full_queue(queue);
            let border = net.add_link(40.0);
            let (fast_down, fast_up) = (net.add_link(300.0), net.add_link(100.0));
            let (slow_down, slow_up) = (net.add_link(50.0), net.add_link(1.0));
            let far = net.add_link(1000.0);
            let fast = net.add_flow_with_side_load(&[border, fast_down], Some((fast_up, 0.01)), 1_000_000);
            let slow = net.add_flow_with_side_load(&[border, slow_down], Some((slow_up, 0.01)), 1_000_000);
            let upload = net.add_flow(&[slow_up, far], 1_000_000);
            for f in [fast, slow, upload] {
                net.set_round_trip(f, 0.001);
            }
            // The first filling finds the border and the slow uplink full; the next one weighs by them.
            let first = rates(&mut net, &[fast, slow]);
            net.set_round_trip(fast, 0.001);
            net.tick(Time(1_000_000));
            (first, [net.rate(fast).unwrap(), net.rate(slow).unwrap()])
        };
        let (first, off) = run(0.0);
        assert_eq!(first, vec![20.0, 20.0]);
        assert_eq!(off, [20.0, 20.0], "no queues: equal shares");
        let (first, on) = run(0.03);
        assert_eq!(first, vec![20.0, 20.0], "nothing known full yet");
        // Round trips 31 ms and 61 ms: 40 split 61:31.
        let expect_fast = 40.0 * 61.0 / 92.0;
        assert!((on[0] - expect_fast).abs() < 1e-9 && (on[1] - (40.0 - expect_fast)).abs() < 1e-9, "{on:?}");
    }

    #[test]
    fn a_short_full_uplink_holds_the_downloads_acknowledgements_to_one_connection_s_part_of_it() {
        // An ADSL line: 125,000 B/s up (1 Mbit/s), 1,875,000 B/s down (15 Mbit/s). Three uploads keep the
        // uplink full; two downloads' acknowledgements load it by 0.02 of their rate.
        let run = |full_queue: f64, pace: f64| {
            let mut net = Network::new(1_000_000).with_full_queue(full_queue);
            let (pace_link, up, down, far) =
                (net.add_link(pace), net.add_link(125_000.0), net.add_link(1_875_000.0), net.add_link(1e9));
            let uploads: Vec<_> = (0..3).map(|_| net.add_flow(&[pace_link, up, far], 1 << 40)).collect();
            let downloads: Vec<_> = (0..2)
                .map(|_| net.add_flow_with_side_load(&[far, down], Some((up, 0.02)), 1 << 40))
                .collect();
            for &f in uploads.iter().chain(&downloads) {
                net.set_round_trip(f, 0.001);
            }
            // The first filling finds the uplink full; the next one holds the acknowledgements at it.
            net.tick(Time::ZERO);
            net.set_round_trip(downloads[0], 0.001);
            net.tick(Time(1_000_000));
            (downloads.iter().map(|&f| net.rate(f).unwrap()).sum::<f64>(), net.rate(uploads[0]).unwrap())
        };
        // 50 ms of queue holds 6,250 bytes, four segments: the acknowledgements get a quarter of the uplink
        // (three uploads and them), and the downloads 125,000 / 4 / 0.02 together.
        let (held, _) = run(0.05, f64::INFINITY);
        assert!((held - 125_000.0 / 4.0 / 0.02).abs() < 1e-6, "{held}");
        // No queues modelled, or a modem's second of queue (125,000 bytes): the downloads fill the downlink.
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(near(run(0.0, f64::INFINITY).0, 1_875_000.0));
        assert!(near(run(1.0, f64::INFINITY).0, 1_875_000.0));
        // Uploads paced below the line less the acknowledgements' 37,500 leave the uplink's queue empty:
        // nothing is held.
        let (paced, upload) = run(0.05, 3.0 * 25_000.0);
        assert!(near(paced, 1_875_000.0) && near(upload, 25_000.0), "{paced} {upload}");
    }

    #[test]
    fn equal_split_on_one_link() {
        let mut net = Network::new(1_000_000);
        let l = net.add_link(10.0);
        let f = [net.add_flow(&[l], 100), net.add_flow(&[l], 100)];
        assert_eq!(rates(&mut net, &f), vec![5.0, 5.0]);
    }

    #[test]
    fn flows_on_one_path_share_one_share() {
        // An uploader of 90 answers A three chunks over one connection and B one: A's three get 15 each
        // (45 together), B 45; each its own flow, A would take 67.5.
        let mut net = Network::new(1_000_000);
        let up = net.add_link(90.0);
        let (a, b) = (net.add_link(1000.0), net.add_link(1000.0));
        let mut f: Vec<FlowId> = (0..3).map(|_| net.add_flow_on_path(&[up, a], None, Some(1), 100)).collect();
        f.push(net.add_flow_on_path(&[up, b], None, Some(2), 100));
        assert_eq!(rates(&mut net, &f), vec![15.0, 15.0, 15.0, 45.0]);
        // A path's share is its flows' together: one ends, the other two take 22.5 each.
        net.remove_flow(f[0]);
        assert_eq!(rates(&mut net, &f[1..]), vec![22.5, 22.5, 45.0]);
        // A third path, two answers to a downloader whose link takes 12: 6 each; the other paths share the
        // remaining 78 of the uplink, 39 each.
        let slow = net.add_link(12.0);
        let g = [
            net.add_flow_on_path(&[up, slow], None, Some(3), 100),
            net.add_flow_on_path(&[up, slow], None, Some(3), 100),
        ];
        let r = rates(&mut net, &[f[1], f[2], f[3], g[0], g[1]]);
        assert_eq!(r, vec![19.5, 19.5, 39.0, 6.0, 6.0]);
    }

    #[test]
    fn leftover_goes_to_the_unconstrained_flow() {
        // An uploader of 100 serves A (download 10) and B (download 1000): A = 10, B = 90 (not 50).
        let mut net = Network::new(1_000_000);
        let up = net.add_link(100.0);
        let a = net.add_link(10.0);
        let b = net.add_link(1000.0);
        let f = [net.add_flow(&[up, a], 1), net.add_flow(&[up, b], 1)];
        assert_eq!(rates(&mut net, &f), vec![10.0, 90.0]);
    }

    #[test]
    fn classic_three_flows_two_links() {
        // L1 = 10 carries f1, f2; L2 = 3 carries f2, f3. L2 saturates first: f2 = f3 = 1.5; f1 = 8.5.
        let mut net = Network::new(1_000_000);
        let l1 = net.add_link(10.0);
        let l2 = net.add_link(3.0);
        let f = [net.add_flow(&[l1], 1), net.add_flow(&[l1, l2], 1), net.add_flow(&[l2], 1)];
        assert_eq!(rates(&mut net, &f), vec![8.5, 1.5, 1.5]);
    }

    #[test]
    fn unlimited_links_do_not_constrain() {
        let mut net = Network::new(1_000_000);
        let inf = net.add_link(f64::INFINITY);
        let l = net.add_link(4.0);
        let f = [net.add_flow(&[inf, l], 1), net.add_flow(&[inf], 1)];
        assert_eq!(rates(&mut net, &f), vec![4.0, UNLIMITED]);
    }

    #[test]
    fn completion_times_follow_rate_changes_on_the_grid() {
        // Link of 10 B/s, quantum 1 s. f1 = 100 B from t=0. f2 = 40 B added at t=2.5 s, rated from t=3 s.
        // f1: 30 B by t=3, then 5 B/s. f2 needs 8 s at 5 B/s: done at t=11 (on the grid, so reported by the
        // t=11 tick); f1 has 70-40 = 30 B left then, alone again from the t=11 tick at 10 B/s: done at t=14.
        let s = |x: f64| Time::from_secs_f64(x);
        let mut net = Network::new(1_000_000);
        let l = net.add_link(10.0);
        let f1 = net.add_flow(&[l], 100);
        let (done, next) = net.tick(s(0.0));
        assert!(done.is_empty());
        assert_eq!(next, Some(s(10.0)));
        let f2 = net.add_flow(&[l], 40);
        assert_eq!(net.ceil_tick(s(2.5)), s(3.0));
        let (done, _) = net.tick(s(3.0));
        assert!(done.is_empty());
        assert_eq!(net.rate(f1), Some(5.0));
        let (done, next) = net.tick(s(10.0));
        assert!(done.is_empty());
        assert_eq!(next, Some(s(11.0)));
        let (done, _) = net.tick(s(11.0));
        assert_eq!(done, vec![(f2, s(11.0))]);
        assert!(net.remove_flow(f2));
        assert!(!net.remove_flow(f2));
        let (done, next) = net.tick(s(11.0));
        assert!(done.is_empty());
        assert_eq!(net.rate(f1), Some(10.0));
        assert_eq!(next, Some(s(14.0)));
        let (done, _) = net.tick(s(14.0));
        assert_eq!(done, vec![(f1, s(14.0))]);
    }

    #[test]
    fn a_side_load_takes_its_share_off_the_link_without_limiting_its_flow() {
        // Node A's uplink (100) serves B; B's download (1000) comes from C over C's uplink (500), and B's
        // ACKs load B's uplink (100) by 0.1 of that download. B's uplink then carries a flow to D.
        let mut net = Network::new(1000);
        let (a_up, c_up, b_down, b_up, d_down) = (
            net.add_link(100.0),
            net.add_link(500.0),
            net.add_link(1000.0),
            net.add_link(100.0),
            net.add_link(1e9),
        );
        let to_b = net.add_flow_with_side_load(&[c_up, b_down], Some((b_up, 0.1)), 1 << 30);
        let from_b = net.add_flow(&[b_up, d_down], 1 << 30);
        let other = net.add_flow(&[a_up], 1 << 30);
        net.tick(Time::ZERO);
        // The first allocation knows no previous rate: no side load yet.
        assert_eq!(
            (net.rate(to_b), net.rate(from_b), net.rate(other)),
            (Some(500.0), Some(100.0), Some(100.0))
        );
        // The next takes 0.1 x 500 off B's uplink; the download itself is not held to B's uplink share.
        net.remove_flow(other);
        net.tick(Time(1000));
        assert_eq!((net.rate(to_b), net.rate(from_b)), (Some(500.0), Some(50.0)));
    }

    #[test]
    fn stale_handles_are_rejected_after_reuse() {
        let mut net = Network::new(1000);
        let l = net.add_link(1.0);
        let a = net.add_flow(&[l], 1);
        net.remove_flow(a);
        let b = net.add_flow(&[l], 1);
        assert_eq!(a.index, b.index);
        assert!(!net.contains(a) && net.contains(b));
        assert_eq!(net.live(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Max-min fairness: the allocation is feasible, and every flow crosses a saturated link on which
        /// no flow gets more than it (its bottleneck).
        #[test]
        fn allocation_is_feasible_and_max_min_fair(
            caps in proptest::collection::vec(1.0f64..100.0, 1..8),
            flows in proptest::collection::vec(proptest::collection::vec(0usize..8, 1..4), 1..20),
        ) {
            let mut net = Network::new(1000);
            let links: Vec<LinkId> = caps.iter().map(|&c| net.add_link(c)).collect();
            let paths: Vec<Vec<LinkId>> = flows
                .iter()
                .map(|p| {
                    let mut v: Vec<LinkId> = p.iter().map(|&i| links[i % links.len()]).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                })
                .collect();
            let ids: Vec<FlowId> = paths.iter().map(|p| net.add_flow(p, 1000)).collect();
            net.tick(Time::ZERO);
            let rate: Vec<f64> = ids.iter().map(|&f| net.rate(f).unwrap()).collect();
            let load = |l: LinkId| -> f64 {
                paths.iter().zip(&rate).filter(|(p, _)| p.contains(&l)).map(|(_, r)| r).sum()
            };
            for &l in &links {
                proptest::prop_assert!(load(l) <= net.capacity(l) * (1.0 + 1e-9) + 1e-9);
            }
            for (i, p) in paths.iter().enumerate() {
                let bottleneck = p.iter().any(|&l| {
                    let saturated = load(l) >= net.capacity(l) * (1.0 - 1e-9) - 1e-9;
                    let max_here = paths
                        .iter()
                        .zip(&rate)
                        .filter(|(q, _)| q.contains(&l))
                        .all(|(_, &r)| r <= rate[i] * (1.0 + 1e-9) + 1e-9);
                    saturated && max_here
                });
                proptest::prop_assert!(bottleneck, "flow {} rate {} has no bottleneck", i, rate[i]);
            }
        }
    }
}
