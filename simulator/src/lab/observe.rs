//! What the lab sees of each daemon while it runs: one thread per node, inside the node's namespace,
//! polls its API (`/films` every tick, `/metrics` and `/peers` every fourth) and keeps, per node, when
//! each content was first listed and first complete, the byte counters of each daemon session (counters
//! restart with the process) and the bytes received from each peer (what a node delivered is what its
//! peers say they received from it: its own `bytes_sent` counts a chunk when handed to the stream). Samples of the total sent are kept
//! for the egress chart, at most [`MAX_SAMPLES`] per node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe::{self, Bytes};

/// Samples of the total bytes sent kept per node.
pub const MAX_SAMPLES: usize = 100_000;

/// One node's observations; times are seconds after the lab's time 0.
#[derive(Debug, Clone, Default)]
pub struct NodeObs {
    /// The daemon session now running (bumped by the lab at each start).
    pub session: u32,
    /// The node's peer id (from `/status`).
    pub peer_id: Option<String>,
    /// Content id -> first time `/films` listed it.
    pub first_seen: BTreeMap<String, f64>,
    /// Content id -> first time `/films` said complete.
    pub first_complete: BTreeMap<String, f64>,
    /// Session -> its latest byte counters.
    pub bytes: BTreeMap<u32, Bytes>,
    /// (session, peer id) -> (peer's ISP, content bytes received from it).
    pub from_peer: BTreeMap<(u32, String), (String, u64)>,
    /// (time, total bytes sent over all sessions).
    pub sent: Vec<(f64, f64)>,
    /// (time, bytes the node's link has sent since the first tick: its `eth0` counter, frames and all).
    pub wire_sent: Vec<(f64, f64)>,
    /// The link's `(sent, received)` byte counters at the last tick (since its namespace was made).
    pub link: Option<(u64, u64)>,
    /// The namespace's TCP `(segments sent, segments retransmitted)` at the last tick ([`tcp_segments`]).
    pub tcp: Option<(u64, u64)>,
    /// The request window and the requests, from `/metrics`, about once a second.
    pub requests: Vec<RequestSample>,
}

/// One reading of a node's request metrics (`cinemesh_request_window`, `..._requests_in_flight`,
/// `..._chunk_requests_total`, `..._beyond_window_total`, `..._yielded_total`, `..._pipelined_total`,
/// `..._endgame_total`, `..._timed_out_total`, `cinemesh_chunk_cancels_total`,
/// `cinemesh_chunks_duplicate_total`), seconds after time 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestSample {
    /// When.
    pub t: f64,
    /// The request window's size.
    pub window: f64,
    /// Requests in flight.
    pub in_flight: f64,
    /// Of them, to peers outside the node's ISP.
    pub in_flight_other_isp: f64,
    /// Requests sent in this daemon session.
    pub sent: f64,
    /// Of them, beyond a full window.
    pub beyond_window: f64,
    /// Of them, yielded by local first.
    pub yielded: f64,
    /// Of them, beyond a peer's count for its load, to cover its round trip.
    pub pipelined: f64,
    /// Of them, end-game duplicates.
    pub endgame: f64,
    /// Of them, given up as stalled or past `transfer.request_timeout`.
    pub timed_out: f64,
    /// Cancels sent (end game).
    pub cancels: f64,
    /// Chunks received that were held by then: bytes spent for nothing.
    pub duplicate: f64,
    /// Chunks received, verified and stored.
    pub received: f64,
    /// Busy answers received (the peer's upload slots were all taken).
    pub busy: f64,
}

impl RequestSample {
    /// The reading in a `/metrics` body taken at `t`.
    pub fn from_metrics(t: f64, m: &str) -> RequestSample {
        RequestSample {
            t,
            window: probe::total(m, "cinemesh_request_window"),
            in_flight: probe::total(m, "cinemesh_requests_in_flight"),
            in_flight_other_isp: probe::total(m, "cinemesh_requests_in_flight_other_isp"),
            sent: probe::total(m, "cinemesh_chunk_requests_total"),
            beyond_window: probe::total(m, "cinemesh_chunk_requests_beyond_window_total"),
            yielded: probe::total(m, "cinemesh_chunk_requests_yielded_total"),
            pipelined: probe::total(m, "cinemesh_chunk_requests_pipelined_total"),
            endgame: probe::total(m, "cinemesh_chunk_requests_endgame_total"),
            timed_out: probe::total(m, "cinemesh_chunk_requests_timed_out_total"),
            cancels: probe::total(m, "cinemesh_chunk_cancels_total"),
            duplicate: probe::total(m, "cinemesh_chunks_duplicate_total"),
            received: probe::total(m, "cinemesh_chunks_verified_total"),
            busy: probe::by_label(m, "cinemesh_chunks_failed_total", "reason")
                .get("busy")
                .copied()
                .unwrap_or(0.0),
        }
    }
}

impl NodeObs {
    /// Byte counters summed over the daemon's sessions.
    pub fn total(&self) -> Bytes {
        self.bytes.values().fold(Bytes::default(), |a, &b| a.plus(b))
    }
}

/// The pollers of all nodes.
#[derive(Debug)]
pub struct Observer {
    /// Per node.
    pub nodes: Vec<Arc<Mutex<NodeObs>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn lock(o: &Mutex<NodeObs>) -> std::sync::MutexGuard<'_, NodeObs> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

impl Observer {
    /// Starts one poller per namespace; `t0` is the lab's time 0; `tick` the `/films` interval.
    pub fn start(namespaces: &[String], api: SocketAddr, t0: Instant, tick: Duration) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut nodes = Vec::new();
        let mut threads = Vec::new();
        for ns in namespaces {
            let obs = Arc::new(Mutex::new(NodeObs::default()));
            nodes.push(obs.clone());
            let (ns, stop) = (ns.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                if let Err(e) = super::probe::enter(&ns) {
                    eprintln!("lab: cannot observe {ns}: {e}");
                    return;
                }
                poll(&obs, api, t0, tick, &stop);
            }));
        }
        Observer { nodes, stop, threads }
    }

    /// Takes a last sample on every node and stops the pollers.
    pub fn finish(self) -> Vec<NodeObs> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        self.nodes.iter().map(|o| lock(o).clone()).collect()
    }

    /// Sets the session number of node `i` (call before starting its daemon again).
    pub fn new_session(&self, i: usize) {
        lock(&self.nodes[i]).session += 1;
    }

    /// Content ids node `i` has seen complete, with the time.
    pub fn complete(&self, i: usize) -> BTreeMap<String, f64> {
        lock(&self.nodes[i]).first_complete.clone()
    }
}

/// `(sent, received)` bytes of `eth0` from the text of `/proc/net/dev`: whole frames (Ethernet, IP and TCP
/// headers), ACKs and control traffic included, so beside the content bytes they tell what the wire cost.
pub fn link_counters(net_dev: &str) -> Option<(u64, u64)> {
    let line = net_dev.lines().find(|l| l.trim_start().starts_with("eth0:"))?;
    // After the name: 8 receive counters (bytes first), then the transmit bytes.
    let fields: Vec<&str> = line.split_once(':')?.1.split_whitespace().collect();
    Some((fields.get(8)?.parse().ok()?, fields.first()?.parse().ok()?))
}

/// `(OutSegs, RetransSegs)` of TCP from the text of `/proc/net/snmp`: the segments the namespace's TCP sent
/// (retransmissions excluded) and retransmitted. Their ratio tells how much of a link's frames were resent
/// after a loss at a shaper's queue: the congestion control's cost, which the simulator does not model.
pub fn tcp_segments(snmp: &str) -> Option<(u64, u64)> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let field = |name: &str| -> Option<u64> {
        let i = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(i)?.parse().ok()
    };
    Some((field("OutSegs")?, field("RetransSegs")?))
}

fn poll(obs: &Mutex<NodeObs>, api: SocketAddr, t0: Instant, tick: Duration, stop: &AtomicBool) {
    let timeout = Duration::from_secs(2);
    let mut n: u64 = 0;
    let mut wire_base = None;
    loop {
        let last = stop.load(Ordering::SeqCst);
        // This thread is in the node's namespace: its own view of /proc holds the node's interfaces.
        if let Some((tx, rx)) =
            std::fs::read_to_string("/proc/thread-self/net/dev").ok().and_then(|d| link_counters(&d))
        {
            let t = t0.elapsed().as_secs_f64();
            let base = *wire_base.get_or_insert(tx);
            let mut o = lock(obs);
            o.link = Some((tx, rx));
            if o.wire_sent.len() < MAX_SAMPLES {
                o.wire_sent.push((t, tx.saturating_sub(base) as f64));
            }
        }
        if let Some(segs) =
            std::fs::read_to_string("/proc/thread-self/net/snmp").ok().and_then(|d| tcp_segments(&d))
        {
            lock(obs).tcp = Some(segs);
        }
        if let Ok(body) = probe::get(api, "/films", timeout) {
            let t = t0.elapsed().as_secs_f64();
            let mut o = lock(obs);
            for (id, complete) in probe::films(&body) {
                o.first_seen.entry(id.clone()).or_insert(t);
                if complete {
                    o.first_complete.entry(id).or_insert(t);
                }
            }
        }
        if lock(obs).peer_id.is_none() {
            if let Ok(body) = probe::get(api, "/status", timeout) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                lock(obs).peer_id = v["peer_id"].as_str().map(str::to_owned);
            }
        }
        if n % 4 == 0 || last {
            if let Ok(m) = probe::get(api, "/metrics", timeout) {
                let t = t0.elapsed().as_secs_f64();
                let b = Bytes::from_metrics(&m);
                let mut o = lock(obs);
                let s = o.session;
                o.bytes.insert(s, b);
                let total = o.total().up;
                if o.sent.len() < MAX_SAMPLES {
                    o.sent.push((t, total));
                }
                if o.requests.len() < MAX_SAMPLES {
                    o.requests.push(RequestSample::from_metrics(t, &m));
                }
            }
            if let Ok(p) = probe::get(api, "/peers", timeout) {
                let mut o = lock(obs);
                let s = o.session;
                for (peer, isp, bytes) in probe::peers(&p) {
                    let e = o.from_peer.entry((s, peer)).or_insert((isp, 0));
                    e.1 = e.1.max(bytes);
                }
            }
        }
        if last {
            return;
        }
        n += 1;
        std::thread::sleep(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::{link_counters, tcp_segments};

    #[test]
    fn tcp_segments_from_proc_net_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets \
                    CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
                    Tcp: 1 200 120000 -1 40 38 0 2 30 185342 201113 36021 0 5 0\n\
                    Udp: InDatagrams\nUdp: 7\n";
        assert_eq!(tcp_segments(text), Some((201_113, 36_021)));
        assert_eq!(tcp_segments("Tcp: OutSegs RetransSegs\n"), None, "no values line");
        assert_eq!(tcp_segments("Tcp: OutSegs\nTcp: 5\n"), None, "no RetransSegs");
        assert_eq!(tcp_segments("Tcp: OutSegs RetransSegs\nTcp: x 1\n"), None);
    }

    #[test]
    fn the_link_counter_from_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1200      10    0    0    0     0          0         0     1200      10    0    0    0     0       0          0
  eth0: 292629157  201234    0    0    0     0          0         0 225040345  160000    0    0    0     0       0          0
";
        assert_eq!(link_counters(text), Some((225_040_345, 292_629_157)));
        assert_eq!(link_counters("  lo: 1 2 3 4 5 6 7 8 9 10"), None);
        assert_eq!(link_counters("  eth0: 1 2 3"), None);
        assert_eq!(link_counters("  eth0: x 2 3 4 5 6 7 8 9 10"), None);
    }
}
