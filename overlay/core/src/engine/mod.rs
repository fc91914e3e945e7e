//! The transfer engine: everything a node decides about peers, requests, uploads and fetches, sans-io.
//!
//! Modelled on quinn-proto's `Connection`: the body (the node's event loop, or the simulator's event
//! queue) calls an input method with `now` for everything that happens — a connection, a message, an
//! answer, a disk job done, a timer — then drains [`Engine::poll_output`] and carries the outputs out
//! (messages to send, answers to give, disk jobs to run, DHT work, events), and sleeps until
//! [`Engine::poll_timeout`]. The engine never reads a clock, never touches a socket or a disk.
//!
//! ```text
//!  per peer (Session)                 per content (Fetch)                      uploads (per request)
//!  ──────────────────                 ───────────────────                      ─────────────────────
//!  connected ─▶ Send Hello            offer (targeted?) ─▶ Waiting             chunk_request
//!  hello ─▶ joined: Bitfield for        Lookup, Manifest asked of the best       ├ not held ─▶ Missing{load}
//!     every active content,             scored joined peer not yet asked         ├ no slot  ─▶ Busy{load}
//!     manifests asked                 manifest Good ─▶ make_room (evict the      └ Read ─▶ chunk_read ─▶
//!  bitfield_request ─▶ subscribed       untargeted) ─▶ Install ─▶ installed        grant (upload bucket)
//!     to our haves (bounded)            ├ Ok  ─▶ Active (scheduler)               ─▶ Answer Data{len,load}
//!  have / bitfield ─▶ scheduler         └ Err ─▶ Refused ─▶ retried later         ─▶ upload_done: slot free
//!  disconnected ─▶ all of it freed    Active: Request/Cancel from the          cancel ─▶ slot free at once:
//!                                       scheduler (download bucket gates        Answer Cancelled, or Abort
//!  haves batched: every have_flush      new requests); chunk_reply ─▶ keep?      if the bytes already left
//!  or have_batch chunks per content     chunk_written Ok ─▶ Have batch,
//!                                       NoSpace ─▶ Refused; Complete
//! ```
//!
//! - One targeting rule: [`wants`].
//! - Bounds: sessions follow connections (bounded by the body's connection limits); requests in flight by
//!   `transfer.max_requests_*` (plus one per seeder peer beyond the window); uploads by `transfer.upload_slots`; have subscribers per content by
//!   [`Config::max_peers`]; a have batch by [`Config::have_batch`]; the output queue holds what one input
//!   caused.
//! - Deterministic: ordered maps only, and the scheduler's seeded RNG.

mod io;
mod relay;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use io::{
    Answer, Event, FetchState, Held, ManifestReply, Offer, Output, PeerInfo, Reply, Request, Role, UploadId,
    Written,
};

use crate::config::{PolicyConfig, TransferConfig};
use crate::policy::{self, ScoreInputs};
use crate::schedule::Limits;
use crate::scheduler::{self, Failure, PeerKey};
use crate::{
    Bitfield, ContentId, ContentSpec, Locality, Scheduler, Time, TokenBucket, UploadDecision, UploadSlots,
};

/// The one targeting rule: whether a node of `role` fetches a content whose catalogue targets do
/// (`targeted`) or do not name it. A distributor fetches nothing, a superseeder everything, a cinema what
/// is targeted at it.
pub fn wants(role: Role, targeted: bool) -> bool {
    match role {
        Role::Distributor => false,
        Role::Superseeder => true,
        Role::Cinema => targeted,
    }
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's role.
    pub role: Role,
    /// Where this node is.
    pub locality: Locality,
    /// `[transfer]`.
    pub transfer: TransferConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// Bytes of fetched content this node may hold (`storage.capacity`); `None`: no limit but the disk.
    pub capacity: Option<u64>,
    /// Most peers subscribed to one content's have-updates.
    pub max_peers: u32,
    /// Pending have-updates are sent at most this long after the chunk was stored.
    pub have_flush: Duration,
    /// Pending have-updates of one content sent at once when this many are pending.
    pub have_batch: usize,
    /// Least time between two provider lookups of one content.
    pub lookup_interval: Duration,
    /// A refused content is offered again after this long.
    pub refused_retry: Duration,
    /// How often waiting and starved fetches look again for a manifest or for providers.
    pub housekeeping: Duration,
    /// Seed of the scheduler's RNG.
    pub seed: u64,
    /// Bytes of film this node may request over relayed connections in all (`network.nat.relay_film_budget`);
    /// 0: never (relayed peers then only exchange control messages). See [`Engine::link`].
    pub relay_budget: u64,
}

impl Config {
    /// The node's defaults for `role`.
    pub fn new(role: Role, transfer: TransferConfig, policy: PolicyConfig) -> Self {
        Self {
            role,
            locality: Locality::default(),
            transfer,
            policy,
            capacity: None,
            max_peers: 256,
            have_flush: Duration::from_millis(250),
            have_batch: 256,
            lookup_interval: Duration::from_secs(10),
            refused_retry: Duration::from_secs(60),
            housekeeping: Duration::from_secs(1),
            seed: 0,
            relay_budget: 0,
        }
    }
}

/// Counters the engine bumps; the node exports them as metrics, the simulator reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunk requests answered busy (no slot free).
    pub busy_answers: u64,
    /// Chunk requests answered missing.
    pub missing_answers: u64,
    /// Uploads whose bytes were handed to the transport.
    pub uploads_served: u64,
    /// Uploads started for an asker below [`SLOW_ASKER_SHARE`] of the fastest that the ranking by rate
    /// (`transfer.open_slots`) would have answered busy.
    pub slow_asker_uploads: u64,
    /// Uploads cancelled by the asker (slot freed).
    pub uploads_cancelled: u64,
    /// Chunks verified and stored (distinct).
    pub chunks_stored: u64,
    /// Chunk answers discarded because the chunk was held by then (end-game duplicates).
    pub chunks_discarded: u64,
    /// Have batches sent.
    pub have_batches: u64,
    /// Have batches not sent: the subscriber was known to hold every chunk of the batch.
    pub haves_redundant: u64,
    /// Bitfields asked again of a peer that held none of a film when first asked, and then asked for
    /// ours: it had come to fetch the film since.
    pub bitfields_asked_again: u64,
    /// Provider lookups asked for.
    pub lookups: u64,
    /// Providers dialed (see [`Engine::providers`]).
    pub dials: u64,
    /// Contents evicted to stay within capacity.
    pub evictions: u64,
    /// Bytes of chunks requested over relayed connections (counted when asked, so never above the budget).
    pub relay_requested: u64,
    /// Hellos and bitfield requests sent again after they failed in transit.
    pub retries: u64,
    /// Times the node found its own queue long and took its upload rate as its uplink
    /// ([`Engine::found_uplink`]).
    pub uplinks_found: u64,
}

/// The rate the node's answers went out at: bytes handed to the transport per bin of at least
/// [`SEND_BIN`], the last full bin's rate kept.
#[derive(Debug, Clone, Default)]
struct SendRate {
    since: Option<Time>,
    bytes: u64,
    /// The last full bin's rate, bytes/s.
    last: f64,
    /// The fastest full bin's rate, bytes/s.
    fastest: f64,
}

impl SendRate {
    fn add(&mut self, now: Time, len: u64) {
        let since = *self.since.get_or_insert(now);
        let dt = now.saturating_since(since);
        if dt >= SEND_BIN {
            self.last = self.bytes as f64 / dt.as_secs_f64();
            self.fastest = self.fastest.max(self.last);
            self.since = Some(now);
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(len);
    }
}

#[derive(Debug, Clone)]
struct Session {
    joined: bool,
    info: PeerInfo,
    load: f32,
    /// Its only connection goes through a relay ([`Engine::link`]).
    relayed: bool,
    /// Requests to it that failed in transit, sent again at the next housekeeping.
    retry: Retry,
    /// The last round trip measured to it ([`Engine::round_trip`]), kept for when it joins.
    rtt: Option<Duration>,
    /// When the last round trip to it was measured ([`Engine::own_queue`]).
    rtt_at: Option<Time>,
    /// Contents we fetch whose bitfield it answered it held none of (it did not know the film yet): when
    /// it asks for ours, it fetches them now, and is asked for its bitfield again.
    held_none: BTreeSet<ContentId>,
}

impl Session {
    fn new() -> Self {
        Self {
            joined: false,
            info: PeerInfo::default(),
            load: 0.0,
            relayed: false,
            retry: Retry::default(),
            rtt: None,
            rtt_at: None,
            held_none: BTreeSet::new(),
        }
    }
}

/// Requests that failed in transit ([`Engine::send_failed`]) and are asked again: without a hello the
/// session would never join, without a bitfield the fetch would never learn what the peer holds, for as
/// long as the connection lasts.
#[derive(Debug, Clone, Default)]
struct Retry {
    hello: bool,
    bitfields: BTreeSet<ContentId>,
    /// Retries already made on this session: at most [`MAX_RETRIES`].
    made: u32,
}

/// Retries of failed hellos and bitfield requests per session: a peer that fails every request is
/// not asked forever.
const MAX_RETRIES: u32 = 8;

#[derive(Debug, Clone)]
enum Fetch<P> {
    Waiting { asking: Option<P>, asked: BTreeSet<P>, next_try: Time },
    Installing,
    Active,
    Refused { reason: String, until: Time },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    Reading,
    Granting {
        len: u64,
    },
    Sending {
        len: u64,
    },
    /// Cancelled while its bytes were on the way: the slot stays taken until the body reports the
    /// transfer ended (aborted, or sent after all), so uploads never exceed the slots on the link.
    Aborting {
        len: u64,
    },
}

#[derive(Debug, Clone)]
struct Upload<P> {
    peer: P,
    content: ContentId,
    index: u32,
    state: UpState,
}

#[derive(Debug, Clone)]
struct HeldContent {
    held: Held,
    /// Order of arrival, for eviction (oldest first).
    seq: u64,
}

/// The transfer engine of one node. `P` is the peer key: libp2p's `PeerId` in the node, `u32` in the
/// simulator.
#[derive(Debug)]
pub struct Engine<P: PeerKey> {
    cfg: Config,
    scheduler: Scheduler<P>,
    slots: UploadSlots<P>,
    sessions: BTreeMap<P, Session>,
    offers: BTreeMap<ContentId, Offer>,
    fetches: BTreeMap<ContentId, Fetch<P>>,
    held: BTreeMap<ContentId, HeldContent>,
    held_seq: u64,
    subscribers: BTreeMap<ContentId, BTreeSet<P>>,
    outbox: BTreeMap<ContentId, Vec<u32>>,
    flush_at: Option<Time>,
    uploads: BTreeMap<UploadId, Upload<P>>,
    granting: VecDeque<UploadId>,
    grant_at: Option<Time>,
    up_bucket: Option<TokenBucket>,
    down_bucket: Option<TokenBucket>,
    /// What the node's answers carried lately ([`Engine::found_uplink`]).
    sent: SendRate,
    /// The uplink found full ([`Engine::found_uplink`]), bytes/s, and when it last moved.
    found_uplink: Option<f64>,
    found_at: Option<Time>,
    /// Bins in a row the own queue stayed long while a found uplink paced the answers; past
    /// [`FOUND_UPLINK_TRIES`] the queue is not the uplink's and finding stops.
    long_bins: u32,
    /// The least round trip measured to any peer ([`Engine::own_queue`]).
    rtt_floor: Option<Duration>,
    limits: Limits,
    drive_at: Option<Time>,
    lookups: BTreeMap<ContentId, Time>,
    /// Providers dialed and not yet connected, and when (at most [`Config::max_peers`] with the sessions).
    dialing: BTreeMap<P, Time>,
    /// How often a fetch short of peers looks its providers up again: `lookup_interval`, doubled (up to
    /// [`MAX_SHORT_LOOKUP_EVERY`]) by each answer, of any content, that found no one new to dial.
    short_every: Duration,
    housekeeping_at: Option<Time>,
    /// Our receive rate: bytes of chunks arrived (kept to be written) since the round began, and its highest value so far.
    recv: ReceiveRate,
    /// The highest receive rate askers told us, and when (it halves every [`ASKER_HALF_LIFE`]).
    fastest_asker: (f64, Time),
    /// When each active fetch began ([`yielding`](Self::yielding)).
    active_at: BTreeMap<ContentId, Time>,
    /// The fastest and the slowest line the cinemas among the peers declare, bytes/s (0 and infinity: none).
    peer_lines: (f64, f64),
    /// Every cinema among our peers, and we if we are one, declared a line within [`ALIKE_LINES`] of the
    /// others' (see there).
    alike: bool,
    out: VecDeque<Output<P>>,
    stats: Stats,
    record: Option<BTreeSet<String>>,
}

/// This node's receive rate, measured over rounds of at least [`RECEIVE_ROUND`]: what its chunk requests
/// tell uploaders (`Request::Chunk::rate`).
///
/// Busy uploaders rank askers by that rate, which can lock a cinema out: refused by most of them, it
/// receives little, so its rate stays low, so they keep refusing it (simulated: 350 cinemas, each linked
/// to every superseeder, `seeder_open_slots = 0.2`: two fibre cinemas at about 30 Mbit/s for 5,500 s while
/// the other fibre cinemas finished by 1,700 s). So a round in which most answers were busy doubles the
/// rate told, up to [`MAX_RATE_BOOST`] times the peak, and a round in which they were not tells the peak
/// again: a refused cinema gets to show what it can take, as BitTorrent's optimistic unchoke lets a peer.
#[derive(Debug, Clone)]
struct ReceiveRate {
    round: Option<(Time, u64)>,
    /// The highest rate of a round, bytes/s.
    peak: f64,
    /// Busy answers and chunks arrived (kept to be written) in this round.
    busy: u32,
    arrived: u32,
    /// The factor on the peak told to uploaders (1 to [`MAX_RATE_BOOST`]).
    boost: f64,
    /// The rate of the last round that ended, bytes/s.
    last: f64,
}

impl Default for ReceiveRate {
    fn default() -> Self {
        Self { round: None, peak: 0.0, busy: 0, arrived: 0, boost: 1.0, last: 0.0 }
    }
}

impl ReceiveRate {
    /// A busy answer: counted in the round (which only an arrived chunk ends).
    fn busy(&mut self) {
        self.busy = self.busy.saturating_add(1);
    }

    /// A chunk of `len` bytes arrived at `now` (kept to be written); ends the round once it has lasted
    /// [`RECEIVE_ROUND`].
    fn arrived(&mut self, now: Time, len: u64) {
        self.arrived = self.arrived.saturating_add(1);
        match &mut self.round {
            None => self.round = Some((now, 0)),
            Some((start, bytes)) => {
                *bytes += len;
                let secs = now.saturating_since(*start).as_secs_f64();
                if secs >= RECEIVE_ROUND.as_secs_f64() {
                    self.last = *bytes as f64 / secs;
                    self.peak = self.peak.max(self.last);
                    self.round = Some((now, 0));
                    self.boost =
                        if self.busy > self.arrived { (self.boost * 2.0).min(MAX_RATE_BOOST) } else { 1.0 };
                    self.busy = 0;
                    self.arrived = 0;
                }
            }
        }
    }

    /// The rate told in chunk requests, bytes/s.
    fn told(&self) -> u32 {
        (self.peak * self.boost).min(f64::from(u32::MAX)) as u32
    }
}

/// Declared lines within this factor of each other are alike. While every cinema among a node's peers
/// declares its line (`transfer.downlink`) and all of them, with the node's own if it is a cinema, are
/// alike, no cinema has a claim to be served first: the node serves every asker alike (its open share of
/// upload slots is 1.0, whatever `transfer.open_slots` says) and, fetching, asks one chunk per peer with a
/// request window of at least one request per peer ([`Scheduler::set_alike`]).
///
/// Why: busy uploaders rank askers by the receive rate they tell, the order in which the completion-CDF
/// bound finishes cinemas whose lines differ. Where the lines are alike the told rates differ by luck, the
/// ranking feeds it (a cinema refused once receives less, tells less and is refused again), and the last
/// cinemas finish alone, each at its own downlink's pace, while the swarm's uplinks idle. Simulated
/// (`cinemesh-sim run scenarios/lab-16.toml`, seeds 1-8): 0.850 of the Kumar-Ross bound with the ranking,
/// 0.920 with lines declared alike; lab-8 0.911 -> 0.927 (docs/benchmarks.md, "Alike lines are served
/// alike"). A fleet whose lines differ, or that declares none, is ranked as before.
pub const ALIKE_LINES: f64 = 1.2;

/// A cinema's declared line at most this share of the fastest its peers declare may yield
/// ([`Engine::yielding`]): VDSL's 50 Mbit/s beside fibre's 300 and more.
pub const YIELD_BELOW: f64 = 0.25;

/// ... and at least this many times the slowest its peers declare: the slowest line around never yields.
pub const YIELD_ABOVE: f64 = 2.0;

/// The share of its line a yielding cinema fetches at.
pub const YIELD_SHARE: f64 = 0.5;

/// A cinema yields while its fetch, at its whole line from now on, would end before this many times its
/// line's own time for the content since the fetch began.
pub const YIELD_UNTIL: f64 = 1.2;

/// A cinema refused by busy uploaders tells them at most this many times its peak receive rate.
pub const MAX_RATE_BOOST: f64 = 8.0;

/// An asker telling a measured receive rate below this share of the fastest asker's lately is served
/// whenever a slot is free, whatever `transfer.open_slots` keeps for faster askers. Its own link bounds it,
/// so a slot it takes gives it at most a fiftieth of what the fastest asker would take, while the
/// completion-CDF bound puts it at its own link's time, to which every busy answer adds. Measured on
/// cinemas-350 (docs/benchmarks.md, "The fleet's Kumar-Ross efficiency"): its ADSL cinemas, refused
/// during the fibre cinemas' rush, finish the fleet at 0.878-0.929 of Kumar-Ross (each cinema counted from
/// its start) without the rule, at 0.922-0.929 with it, the p90 point slowdown within the seeds' spread (mean
/// 1.86 -> 1.84); a twentieth, which lets the VDSL cinemas in too (a prototype that also took in askers
/// without a rate), raised the p90 by 3-5%.
pub const SLOW_ASKER_SHARE: f64 = 0.02;

/// A provider dialed ([`Output::Dial`]) that has not connected after this long no longer counts against
/// [`Config::max_peers`] and may be dialed again.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait between two lookups of a fetch short of peers whose lookups find no one new (a fleet
/// smaller than `policy.dial_peers`): with a lookup every 10 s there, real 16-cinema labs measured 0.01-0.04
/// lower in four alternated pairs, within one run's spread (docs/benchmarks.md, "Whom to dial is the
/// engine's decision").
pub const MAX_SHORT_LOOKUP_EVERY: Duration = Duration::from_secs(160);

/// A node that declared its uplink (`transfer.uplink`) and fetches keeps its answers to at most this share
/// of that line, less [`ACK_ROOM`]: the packets' headers take 4.4% (66 bytes a 1,448-byte segment), and
/// the rest is left so the line's queue drains and the acknowledgements of the node's own downloads get
/// through ([`Engine::upload_pace`]).
pub const LINE_SHARE: f64 = 0.85;

/// Room kept on a fetching node's uplink for the acknowledgements of its downloads, as a share of its
/// receive rate: measured in the lab, a cinema's uplink carried 2.9-3.9% of the bytes it received in
/// acknowledgements and control messages (a 66-byte ACK every segment or two). On an ADSL line (1 Mbit/s
/// up, 15 down) a full download's acknowledgements need more than half the uplink.
pub const ACK_ROOM: f64 = 0.04;

/// However fast a node downloads, its answers keep at least this share of its declared uplink.
pub const MIN_LINE_SHARE: f64 = 0.1;

/// A declared uplink paces the node's answers only when it is narrow: when the acknowledgements of a
/// download at the node's downlink (declared, or else the fastest it received at) need at least this share of
/// it ([`ACK_ROOM`] of the downlink). An ADSL line (1 Mbit/s up, 15 down) needs 0.6 of it, VDSL (8/50)
/// 0.25, fibre (100/300) 0.12. On real lab-hetero without its borders, pacing the ADSL lines brought them
/// from 89-97 s to 81-83 s (their own line's time: 71.6 s), while pacing the fibre and VDSL lines too made
/// those 32-62% later; a wide line's own acknowledgements get through a full uplink, and its answers are
/// worth more to the others (docs/benchmarks.md, "Only a narrow uplink paces"). A wide declared line is
/// treated as undeclared: the node may still find its uplink full behind a long queue.
pub const NARROW_UPLINK: f64 = 1.0 / 3.0;

/// A queue of its own longer than this ([`Engine::own_queue`]), while the node fetches with its uplink
/// undeclared and `transfer.find_uplink` on, makes it take the rate it uploads at as its uplink
/// ([`Engine::found_uplink`]). A short shaper queue never reaches it (with the lab's 50 ms ones the own queue
/// read 11-129 ms at most); a DSL modem's, often a second, does (docs/benchmarks.md, "A node finds its own
/// full uplink").
pub const LONG_QUEUE: Duration = Duration::from_millis(250);

/// How often both bodies measure the round trip to each peer: the node's ping on every connection, the
/// simulator's pings while a node fetches. The inputs of [`Engine::round_trip`] after the first.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Round trips older than this do not count towards the own queue (about two [`PING_INTERVAL`]s and a
/// missed ping).
pub const OWN_QUEUE_RECENT: Duration = Duration::from_secs(40);

/// Peers with a recent round trip needed to tell the node's own queue from one peer's.
pub const OWN_QUEUE_PEERS: usize = 3;

/// Bins in a row a found uplink may stay long-queued before the node gives finding up: the first bin
/// reads high (it also filled the transport's buffers), the next read the line or below it and drain the
/// queue (a modem's queue of 1 s took 2-4 bins in the lab); a queue that stays long through more is not the
/// uplink's (a downlink's or another sender's), and pacing the answers lower would only starve them
/// ([`Engine::found_uplink`]).
pub const FOUND_UPLINK_TRIES: u32 = 5;

/// A found uplink whose queue has drained grows by this factor a bin ([`Engine::found_uplink`]).
pub const FOUND_UPLINK_PROBE: f64 = 1.1;

/// The node's upload rate is measured over bins at least this long ([`Engine::found_uplink`]).
pub const SEND_BIN: Duration = Duration::from_secs(10);

/// Content bytes per byte of a line (TCP/IPv4 headers in Ethernet frames, as `sim.payload_share`): a found
/// uplink is the content rate over this.
const LINE_PAYLOAD: f64 = 1448.0 / 1514.0;

/// Shortest round over which the receive rate is measured.
pub const RECEIVE_ROUND: Duration = Duration::from_secs(2);

/// The fastest asker's rate, by which a busy uploader ranks askers, halves this often unless an asker
/// says it again: a departed fast peer, or one that lied, does not set the bar for ever. Long enough to
/// rank a fleet through its fast cinemas' whole download (60 s made the fleet's slowest cinema 27% later).
pub const ASKER_HALF_LIFE: Duration = Duration::from_secs(600);

/// A bucket for a limit of `rate` bytes/s, with a quarter second of burst (at least 64 KiB).
fn bucket(rate: f64, now: Time) -> TokenBucket {
    TokenBucket::new(rate, (rate / 4.0).max(64.0 * 1024.0), now)
}

/// Keeps `b` at `rate` (none: no bucket); reservations already made stand, and a change under 1% is none.
fn keep_rate(b: &mut Option<TokenBucket>, rate: Option<f64>, now: Time) {
    match (b.as_mut(), rate) {
        (Some(k), Some(r)) => {
            if (k.rate() - r).abs() > 0.01 * r {
                k.set_rate(now, r);
            }
        }
        (None, Some(r)) => *b = Some(bucket(r, now)),
        (Some(_), None) => *b = None,
        (None, None) => {}
    }
}

/// The lower of two limits, either of which may be none (no limit).
fn lower(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A line is narrow when the acknowledgements of a download at `down` need at least [`NARROW_UPLINK`] of
/// its uplink `up` ([`ACK_ROOM`] of the download), both bytes/s: ADSL's 1 Mbit/s up beside 15 down is.
pub fn narrow_line(up: f64, down: f64) -> bool {
    ACK_ROOM * down >= NARROW_UPLINK * up
}

impl<P: PeerKey> Engine<P> {
    /// A node with nothing held, no peers and no limits.
    pub fn new(cfg: Config) -> Self {
        let scheduler = Scheduler::new(&cfg.transfer, &cfg.policy, cfg.locality.clone(), cfg.seed);
        let slots = UploadSlots::new(cfg.transfer.upload_slots);
        let short_every = cfg.lookup_interval;
        Self {
            cfg,
            scheduler,
            slots,
            sessions: BTreeMap::new(),
            offers: BTreeMap::new(),
            fetches: BTreeMap::new(),
            held: BTreeMap::new(),
            held_seq: 0,
            subscribers: BTreeMap::new(),
            outbox: BTreeMap::new(),
            flush_at: None,
            uploads: BTreeMap::new(),
            granting: VecDeque::new(),
            grant_at: None,
            up_bucket: None,
            down_bucket: None,
            sent: SendRate::default(),
            found_uplink: None,
            found_at: None,
            long_bins: 0,
            rtt_floor: None,
            limits: Limits::default(),
            drive_at: None,
            lookups: BTreeMap::new(),
            dialing: BTreeMap::new(),
            short_every,
            housekeeping_at: None,
            recv: ReceiveRate::default(),
            fastest_asker: (0.0, Time::ZERO),
            active_at: BTreeMap::new(),
            peer_lines: (0.0, f64::INFINITY),
            alike: false,
            out: VecDeque::new(),
            stats: Stats::default(),
            record: None,
        }
    }

    /// Records the kind of every input and output from now on (see [`recorded`](Self::recorded)): the
    /// parity test compares what the node and the simulator use.
    pub fn record_kinds(&mut self) {
        self.record.get_or_insert_with(BTreeSet::new);
    }

    /// The kinds recorded since [`record_kinds`](Self::record_kinds) (`in:…` and `out:…`).
    pub fn recorded(&self) -> Vec<String> {
        self.record.iter().flatten().cloned().collect()
    }

    fn input(&mut self, kind: &str) {
        if let Some(r) = self.record.as_mut() {
            r.insert(format!("in:{kind}"));
        }
    }

    // ---- state a body reads -----------------------------------------------------------------------

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The scheduler's counters.
    pub fn scheduler_stats(&self) -> scheduler::Stats {
        self.scheduler.stats()
    }

    /// Where a content stands, if it is being fetched (or was refused).
    pub fn fetch_state(&self, content: &ContentId) -> Option<FetchState> {
        self.fetches.get(content).map(|f| match f {
            Fetch::Waiting { .. } => FetchState::Waiting,
            Fetch::Installing => FetchState::Installing,
            Fetch::Active => FetchState::Active,
            Fetch::Refused { reason, .. } => FetchState::Refused(reason.clone()),
        })
    }

    /// Contents being fetched or refused, with their state.
    pub fn fetches(&self) -> impl Iterator<Item = (&ContentId, FetchState)> + '_ {
        self.fetches.keys().filter_map(|c| self.fetch_state(c).map(|s| (c, s)))
    }

    /// A held content (complete or partial).
    pub fn held(&self, content: &ContentId) -> Option<&Held> {
        self.held.get(content).map(|h| &h.held)
    }

    /// Every held content.
    pub fn held_contents(&self) -> impl Iterator<Item = (&ContentId, &Held)> + '_ {
        self.held.iter().map(|(c, h)| (c, &h.held))
    }

    /// Whether `peer` finished its hello.
    pub fn is_joined(&self, peer: &P) -> bool {
        self.sessions.get(peer).is_some_and(|s| s.joined)
    }

    /// Whether a fetch is in progress (the node takes its own queue only then: [`found_uplink`](Self::found_uplink)).
    pub fn fetching(&self) -> bool {
        self.fetches.values().any(|f| matches!(f, Fetch::Active))
    }

    /// Joined peers.
    pub fn joined(&self) -> impl Iterator<Item = &P> + '_ {
        self.sessions.iter().filter(|(_, s)| s.joined).map(|(p, _)| p)
    }

    /// What `peer` said about itself and its last reported load.
    pub fn peer(&self, peer: &P) -> Option<(&PeerInfo, f32)> {
        self.sessions.get(peer).map(|s| (&s.info, s.load))
    }

    /// Uploads in progress (reading, waiting for a grant, or sending).
    pub fn uploads_active(&self) -> u32 {
        self.slots.active()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.scheduler.in_flight()
    }

    /// Requests in flight to peers not known to share this node's ISP (another ISP, or either ISP unknown):
    /// the ones that cross its ISP's border.
    pub fn in_flight_other_isp(&self) -> usize {
        self.sessions
            .iter()
            .filter(|(_, s)| !self.cfg.locality.same_isp(&s.info.locality))
            .map(|(p, _)| self.scheduler.peer_in_flight(p) as usize)
            .sum()
    }

    /// True while every cinema among the peers declares a line alike to the others' ([`ALIKE_LINES`]): all
    /// askers are served alike.
    pub fn lines_alike(&self) -> bool {
        self.alike
    }

    /// Chunks that arrived and wait on the body's verify and write; with [`in_flight`](Self::in_flight)
    /// within the request window.
    pub fn chunks_writing(&self) -> usize {
        self.scheduler.writing()
    }

    /// The request window's size (requests beyond it: seeders and spare uploaders, see the scheduler).
    pub fn request_window(&self) -> u32 {
        self.scheduler.window()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The rate at which this node's answers go out, bytes/s (none = as fast as the links take them): the
    /// upload limit in force, and, while a node that declared a narrow uplink (`transfer.uplink`,
    /// [`NARROW_UPLINK`]) or found its uplink fetches, that line's [`LINE_SHARE`] less [`ACK_ROOM`] of its
    /// receive rate (at least [`MIN_LINE_SHARE`] of it).
    /// The engine grants answers at this rate; the body sends their bytes at it, so that the uplink's
    /// queue stays short and the acknowledgements of the node's own downloads get through.
    pub fn upload_pace(&self) -> Option<f64> {
        let line = self
            .narrow_uplink()
            .or(self.found_uplink)
            .filter(|_| self.fetches.values().any(|f| matches!(f, Fetch::Active)));
        let line = line.map(|up| (up * LINE_SHARE - ACK_ROOM * self.recv.last).max(up * MIN_LINE_SHARE));
        lower(self.limits.upload, line)
    }

    /// The declared uplink (`transfer.uplink`), bytes/s, when it is narrow ([`NARROW_UPLINK`]): its
    /// acknowledgements' share of it reckoned at the declared downlink (`transfer.downlink`), or, undeclared,
    /// at the fastest receive rate so far.
    pub fn narrow_uplink(&self) -> Option<f64> {
        let t = &self.cfg.transfer;
        let up = t.uplink?.0;
        let down = t.downlink.map_or(self.recv.peak, |r| r.0);
        narrow_line(up, down).then_some(up)
    }

    /// The delay common to the round trips to every peer: the least of the last round trips to the peers
    /// measured in the last [`OWN_QUEUE_RECENT`] (at least [`OWN_QUEUE_PEERS`] of them), less the least
    /// round trip ever measured to any peer. A queue on the node's own line delays every path; one peer's
    /// queue delays only its own, and the least leaves it out. (Each peer's own least would not do: a peer
    /// first measured while the queue was full has it in its least.) `None`: too few peers measured lately.
    pub fn own_queue(&self, now: Time) -> Option<Duration> {
        let floor = self.rtt_floor?;
        let mut n = 0;
        let mut least = Duration::MAX;
        for s in self.sessions.values() {
            let (Some(last), Some(at)) = (s.rtt, s.rtt_at) else { continue };
            if now.saturating_since(at) <= OWN_QUEUE_RECENT {
                n += 1;
                least = least.min(last);
            }
        }
        (n >= OWN_QUEUE_PEERS).then(|| least.saturating_sub(floor))
    }

    /// The uplink this node found full, bytes/s: with `transfer.find_uplink` and no `transfer.uplink`, a
    /// fetching node whose own queue ([`own_queue`](Self::own_queue)) is longer than [`LONG_QUEUE`] takes
    /// the rate its answers went out at over the last full [`SEND_BIN`] as its line, and paces its answers
    /// by it as by a declared one ([`upload_pace`](Self::upload_pace)). At most once a bin it moves: to
    /// the last bin's rate while the queue stays long (the first bin also filled the transport's buffers,
    /// so it reads high; the next ones read the line), up by [`FOUND_UPLINK_PROBE`] once the queue is
    /// below half of [`LONG_QUEUE`] (never above the fastest bin). A queue still long after
    /// [`FOUND_UPLINK_TRIES`] bins in a row is not the uplink's: the node forgets the found uplink and
    /// finds none again (a downlink's queue, which pacing answers cannot drain, would otherwise take the
    /// pace down bin after bin).
    pub fn found_uplink(&self) -> Option<f64> {
        self.found_uplink
    }

    fn find_uplink(&mut self, now: Time) {
        let t = &self.cfg.transfer;
        if self.narrow_uplink().is_some()
            || !t.find_uplink
            || !self.fetches.values().any(|f| matches!(f, Fetch::Active))
        {
            return;
        }
        if self.long_bins > FOUND_UPLINK_TRIES
            || self.found_at.is_some_and(|at| now.saturating_since(at) < SEND_BIN)
            || self.sent.last <= 0.0
        {
            return;
        }
        let Some(queue) = self.own_queue(now) else { return };
        let found = if queue >= LONG_QUEUE {
            self.stats.uplinks_found += 1;
            self.long_bins += u32::from(self.found_uplink.is_some());
            if self.long_bins > FOUND_UPLINK_TRIES {
                self.found_uplink = None;
                self.repace(now);
                return;
            }
            self.sent.last / LINE_PAYLOAD
        } else if let (Some(f), true) = (self.found_uplink, queue < LONG_QUEUE / 2) {
            self.long_bins = 0;
            (f * FOUND_UPLINK_PROBE).min(self.sent.fastest / LINE_PAYLOAD).max(f)
        } else {
            return;
        };
        self.found_at = Some(now);
        if self.found_uplink != Some(found) {
            self.found_uplink = Some(found);
            self.repace(now);
        }
    }

    /// Keeps the upload bucket at [`upload_pace`](Self::upload_pace) (reservations already made stand).
    fn repace(&mut self, now: Time) {
        let pace = self.upload_pace().filter(|r| *r > 0.0);
        keep_rate(&mut self.up_bucket, pace, now);
    }

    // ---- driving --------------------------------------------------------------------------------

    /// The next decision, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        let o = self.out.pop_front()?;
        if let Some(r) = self.record.as_mut() {
            r.insert(format!("out:{}", o.kind()));
        }
        Some(o)
    }

    /// When [`handle_timeout`](Self::handle_timeout) next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.scheduler.poll_timeout(), self.flush_at, self.grant_at, self.drive_at, self.housekeeping_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time passed: request timeouts and back-offs, have batches, upload grants, retries.
    pub fn handle_timeout(&mut self, now: Time) {
        self.input("timeout");
        self.scheduler.handle_timeout(now);
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_haves();
        }
        if self.grant_at.is_some_and(|t| t <= now) {
            self.grant_at = None;
        }
        if self.drive_at.is_some_and(|t| t <= now) {
            self.drive_at = None;
        }
        if self.housekeeping_at.is_some_and(|t| t <= now) {
            self.housekeeping_at = None;
            self.retry_failed();
            self.housekeeping(now);
        }
        self.grant(now);
        self.drive(now);
    }

    fn housekeeping(&mut self, now: Time) {
        let due: Vec<(ContentId, bool)> = self
            .fetches
            .iter()
            .filter_map(|(c, f)| match f {
                Fetch::Refused { until, .. } if *until <= now => Some((*c, true)),
                Fetch::Waiting { asking: None, next_try, .. } if *next_try <= now => Some((*c, false)),
                _ => None,
            })
            .collect();
        for (content, refused) in due {
            if refused {
                self.fetches.remove(&content);
                if let Some(offer) = self.offers.get(&content).cloned() {
                    self.offer(now, offer);
                }
            } else {
                self.ask_manifest(now, content);
            }
        }
        // Active fetches with chunks missing and nothing in flight (starved of sources), or with fewer
        // peers than `policy.dial_peers` (as a BitTorrent client asks its tracker again below its minimum
        // of peers): look for more, at most once per `lookup_interval`; short of peers, once per
        // `short_every`, which doubles after each answer that found no one new to dial.
        self.dialing.retain(|_, since| now.saturating_since(*since) < DIAL_TIMEOUT);
        let short = self.sessions.len() + self.dialing.len() < self.dial_limit();
        let short_due = |c: &ContentId| {
            short && self.lookups.get(c).is_none_or(|t| now.saturating_since(*t) >= self.short_every)
        };
        let starved: Vec<ContentId> = self
            .fetches
            .iter()
            .filter(|(c, f)| {
                matches!(f, Fetch::Active)
                    && self
                        .scheduler
                        .progress(c)
                        .is_some_and(|p| p.have < p.total && (p.in_flight == 0 || short_due(c)))
            })
            .map(|(c, _)| *c)
            .collect();
        for content in starved {
            self.lookup(now, content);
        }
        self.arm_housekeeping(now);
    }

    fn arm_housekeeping(&mut self, now: Time) {
        let needed = self.fetches.values().any(|f| !matches!(f, Fetch::Installing));
        if needed && self.housekeeping_at.is_none() {
            self.housekeeping_at = Some(now + self.cfg.housekeeping);
        }
    }

    /// The download rate this cinema keeps to while it yields to faster lines, bytes/s: with
    /// `transfer.slow_line_yields` and its `downlink` declared at most [`YIELD_BELOW`] times the fastest line
    /// its peers declare and at least [`YIELD_ABOVE`] times the slowest, [`YIELD_SHARE`] of its line while
    /// every fetch, at the whole line from now on, would end before [`YIELD_UNTIL`] times the line's own
    /// time for the content since the fetch began (and none has a deadline nearer than that many times its
    /// line's time for what is left). The completion-CDF bound puts
    /// such a line at its own time, far beyond the fast lines' points, so it has slack, which the fast lines
    /// use while they need every uplink; the slowest line around never yields, as it likely holds the last
    /// point (Kumar-Ross).
    pub fn yielding(&self, now: Time) -> Option<f64> {
        let t = &self.cfg.transfer;
        let (true, Some(down), Role::Cinema) = (t.slow_line_yields, t.downlink, self.cfg.role) else {
            return None;
        };
        let down = down.0;
        let (fastest, slowest) = self.peer_lines;
        if down > YIELD_BELOW * fastest || down < YIELD_ABOVE * slowest || self.active_at.is_empty() {
            return None;
        }
        let ahead = self.active_at.iter().all(|(c, &start)| {
            let Some(h) = self.held.get(c) else { return false };
            let size = h.held.size as f64;
            let left = size * (1.0 - h.held.have.count() as f64 / h.held.have.len().max(1) as f64);
            let near =
                |deadline: Time| deadline.saturating_since(now).as_secs_f64() <= YIELD_UNTIL * left / down;
            now.saturating_since(start).as_secs_f64() + left / down < YIELD_UNTIL * size / down
                && !self.offers.get(c).and_then(|o| o.deadline).is_some_and(near)
        });
        ahead.then_some(YIELD_SHARE * down)
    }

    /// Keeps the download bucket at the download limit in force and the yield's rate, the lower.
    fn reyield(&mut self, now: Time) {
        // Only active fetches count (a fetch given up or refused leaves no start behind).
        let fetches = &self.fetches;
        self.active_at.retain(|c, _| matches!(fetches.get(c), Some(Fetch::Active)));
        let rate = lower(self.limits.download, self.yielding(now));
        keep_rate(&mut self.down_bucket, rate, now);
    }

    /// Drains the scheduler: requests go out while the download bucket allows, cancels, penalties,
    /// completions.
    fn drive(&mut self, now: Time) {
        self.reyield(now);
        loop {
            while let Some(o) = self.scheduler.poll_queued() {
                self.on_scheduler_output(now, o);
            }
            if let Some(b) = &mut self.down_bucket {
                let wait = b.wait(now);
                if !wait.is_zero() {
                    self.drive_at = Some(now + wait);
                    break;
                }
            }
            let Some(o) = self.scheduler.poll_output(now) else { break };
            self.on_scheduler_output(now, o);
        }
    }

    fn on_scheduler_output(&mut self, now: Time, o: scheduler::Output<P>) {
        match o {
            scheduler::Output::Request { peer, content, chunk } => {
                if let Some(b) = &mut self.down_bucket {
                    let size = self.offers.get(&content).map_or(0, |o| o.chunk_size);
                    b.reserve(now, size);
                }
                self.charge_relay(now, &peer, content);
                let rate = self.recv.told();
                self.out.push_back(Output::Send {
                    peer,
                    request: Request::Chunk { content, index: chunk, rate },
                });
            }
            scheduler::Output::Cancel { peer, content, chunk } => {
                self.out.push_back(Output::Send { peer, request: Request::Cancel { content, index: chunk } });
            }
            scheduler::Output::Penalise { peer } => {
                self.out.push_back(Output::Event(Event::Penalised { peer }))
            }
            scheduler::Output::Complete { content } => self.complete(content),
        }
    }

    fn complete(&mut self, content: ContentId) {
        self.fetches.remove(&content);
        self.active_at.remove(&content);
        if let Some(h) = self.held.get_mut(&content) {
            h.held.have = Bitfield::full(h.held.have.len());
        }
        self.out.push_back(Output::Event(Event::Complete { content }));
    }

    // ---- limits -----------------------------------------------------------------------------------

    /// The upload and download limits in force changed (static, schedule or signed policy).
    pub fn set_limits(&mut self, now: Time, limits: Limits) {
        self.input("limits");
        if limits == self.limits {
            return;
        }
        self.limits = limits;
        self.up_bucket = None;
        self.repace(now);
        self.down_bucket = limits.download.map(|r| bucket(r, now));
        self.drive_at = None;
        self.grant_at = None;
        self.grant(now);
        self.drive(now);
    }

    fn upload_forbidden(&self) -> bool {
        self.limits.upload.is_some_and(|r| r <= 0.0)
    }

    // ---- sessions ---------------------------------------------------------------------------------

    /// The first connection to `peer` is up: we say hello.
    pub fn connected(&mut self, _now: Time, peer: P) {
        self.input("connected");
        self.dialing.remove(&peer);
        if self.sessions.contains_key(&peer) {
            return;
        }
        self.sessions.insert(peer.clone(), Session::new());
        self.lines_changed();
        self.out.push_back(Output::Send { peer, request: Request::Hello });
    }

    /// This node's own key, as its peers know it: it draws the import stripes with them
    /// ([`Scheduler::identify`]). Both bodies call it once, after [`Engine::new`].
    pub fn identify(&mut self, me: &P) {
        self.scheduler.identify(me);
    }

    /// `peer` introduced itself (its hello request, or its answer to ours). The first time, it joins:
    /// it gets asked for its bitfields of what we fetch and for manifests we wait for.
    pub fn hello(&mut self, now: Time, peer: P, info: PeerInfo) {
        self.input("hello");
        let s = self.sessions.entry(peer.clone()).or_insert_with(Session::new);
        s.info = info;
        s.retry.hello = false;
        let line = s.info.downlink.map(|d| d as f64);
        if s.joined {
            self.scheduler.peer_line(&peer, line);
            self.lines_changed();
            return;
        }
        s.joined = true;
        let locality = s.info.locality.clone();
        self.join_scheduler(now, &peer, locality);
        self.scheduler.peer_line(&peer, line);
        self.lines_changed();
        self.out.push_back(Output::Event(Event::Joined { peer: peer.clone() }));
        let active: Vec<ContentId> =
            self.fetches.iter().filter(|(_, f)| matches!(f, Fetch::Active)).map(|(c, _)| *c).collect();
        for content in active {
            self.out.push_back(Output::Send { peer: peer.clone(), request: Request::Bitfield { content } });
        }
        let waiting: Vec<ContentId> = self
            .fetches
            .iter()
            .filter(|(_, f)| matches!(f, Fetch::Waiting { asking: None, .. }))
            .map(|(c, _)| *c)
            .collect();
        for content in waiting {
            self.ask_manifest(now, content);
        }
        self.drive(now);
    }

    /// The peers' declared lines changed (a hello, a departure): are they, with ours if we are a cinema,
    /// alike ([`ALIKE_LINES`])? O(peers), at most [`Config::max_peers`].
    fn lines_changed(&mut self) {
        let own = match self.cfg.role {
            Role::Cinema => Some(self.cfg.transfer.downlink.map(|r| r.0)),
            Role::Superseeder | Role::Distributor => None,
        };
        // A peer that has not said hello yet may be a cinema whose line differs: until it has, the lines
        // are not known to be alike.
        let cinemas = self
            .sessions
            .values()
            .filter(|s| !s.joined || s.info.role == Some(Role::Cinema))
            .map(|s| s.info.downlink.filter(|_| s.joined).map(|d| d as f64));
        let mut lines = own.into_iter().chain(cinemas);
        let (mut lo, mut hi, mut peers) = (f64::INFINITY, 0.0f64, 0u32);
        let declared = lines.all(|line| match line {
            Some(d) if d > 0.0 => {
                (lo, hi) = (lo.min(d), hi.max(d));
                peers += 1;
                true
            }
            _ => false,
        });
        // At least one cinema besides us.
        let enough = peers > u32::from(matches!(self.cfg.role, Role::Cinema));
        self.peer_lines = self
            .sessions
            .values()
            .filter(|s| s.joined && s.info.role == Some(Role::Cinema))
            .filter_map(|s| s.info.downlink.filter(|&d| d > 0))
            .map(|d| d as f64)
            .fold((0.0, f64::INFINITY), |(hi, lo), d| (hi.max(d), lo.min(d)));
        let alike = declared && enough && hi <= ALIKE_LINES * lo;
        if alike != self.alike {
            self.alike = alike;
            self.scheduler.set_alike(alike);
        }
    }

    /// The round trip to `peer` was measured (the node's ping on the connection; the simulator's latency
    /// when the peer's hello answer arrives). The scheduler keeps enough chunk requests at a fast peer to
    /// cover it; the round trips to all peers tell the node's own queue ([`own_queue`](Self::own_queue),
    /// [`found_uplink`](Self::found_uplink)).
    pub fn round_trip(&mut self, now: Time, peer: &P, rtt: Duration) {
        self.input("round-trip");
        let Some(s) = self.sessions.get_mut(peer) else { return };
        s.rtt = Some(rtt);
        s.rtt_at = Some(now);
        self.rtt_floor = Some(self.rtt_floor.map_or(rtt, |f| f.min(rtt)));
        let joined = s.joined;
        self.find_uplink(now);
        if joined {
            self.scheduler.peer_rtt(peer, rtt);
            self.drive(now);
        }
    }

    /// A request we sent to `peer` got no usable answer: the connection it went on closed, it timed out,
    /// the peer refused it, or its answer was malformed. A hello or a bitfield request is sent again at the next housekeeping (at most
    /// `MAX_RETRIES` times per session); chunk and manifest requests have their own replies
    /// ([`Reply::Failed`], [`ManifestReply::Missing`]), haves and cancels are not repeated.
    pub fn send_failed(&mut self, now: Time, peer: &P, request: &Request) {
        self.input("send-failed");
        let Some(s) = self.sessions.get_mut(peer) else { return };
        match request {
            Request::Hello if !s.joined => s.retry.hello = true,
            Request::Bitfield { content } if self.fetches.contains_key(content) => {
                s.retry.bitfields.insert(*content);
            }
            _ => return,
        }
        if self.housekeeping_at.is_none() {
            self.housekeeping_at = Some(now + self.cfg.housekeeping);
        }
    }

    fn retry_failed(&mut self) {
        for (peer, s) in &mut self.sessions {
            let hello = std::mem::take(&mut s.retry.hello) && !s.joined;
            let bitfields = std::mem::take(&mut s.retry.bitfields);
            for request in hello.then_some(Request::Hello).into_iter().chain(
                bitfields
                    .into_iter()
                    .filter(|c| matches!(self.fetches.get(c), Some(Fetch::Active)))
                    .map(|content| Request::Bitfield { content }),
            ) {
                if s.retry.made >= MAX_RETRIES {
                    break;
                }
                s.retry.made += 1;
                self.stats.retries += 1;
                self.out.push_back(Output::Send { peer: peer.clone(), request });
            }
        }
    }

    /// The last connection to `peer` closed: its requests fail, its uploads end, its subscriptions go.
    pub fn disconnected(&mut self, now: Time, peer: &P) {
        self.input("disconnected");
        if self.sessions.remove(peer).is_none() {
            return;
        }
        self.scheduler.peer_left(now, peer);
        self.lines_changed();
        self.slots.peer_left(peer);
        let gone: Vec<UploadId> =
            self.uploads.iter().filter(|(_, u)| &u.peer == peer).map(|(id, _)| *id).collect();
        for id in gone {
            self.uploads.remove(&id);
        }
        self.granting.retain(|id| self.uploads.contains_key(id));
        for subs in self.subscribers.values_mut() {
            subs.remove(peer);
        }
        let asked: Vec<ContentId> = self
            .fetches
            .iter()
            .filter(|(_, f)| matches!(f, Fetch::Waiting { asking: Some(p), .. } if p == peer))
            .map(|(c, _)| *c)
            .collect();
        for content in asked {
            if let Some(Fetch::Waiting { asking, .. }) = self.fetches.get_mut(&content) {
                *asking = None;
            }
            self.ask_manifest(now, content);
        }
        self.drive(now);
    }

    // ---- contents ---------------------------------------------------------------------------------

    /// A content this node already holds (from its store at start, or published here).
    pub fn hold(&mut self, _now: Time, content: ContentId, held: Held) {
        self.input("hold");
        if held.have.count() > 0 {
            self.out.push_back(Output::Provide { content });
        }
        self.held_seq += 1;
        self.held.insert(content, HeldContent { held, seq: self.held_seq });
    }

    /// The catalogue describes `offer.content` (on a Publish, an Admit that changed our groups, at start).
    /// The engine fetches it if [`wants`] says so and it is not held whole.
    pub fn offer(&mut self, now: Time, offer: Offer) {
        self.input("offer");
        let content = offer.content;
        let wanted = wants(self.cfg.role, offer.targeted);
        self.offers.insert(content, offer);
        if self.fetches.contains_key(&content) || !wanted {
            return;
        }
        match self.held.get(&content) {
            Some(h) if h.held.have.is_complete() => return,
            Some(h) => {
                let have = h.held.have.clone();
                self.out.push_back(Output::Event(Event::Fetching { content }));
                self.activate(now, content, have);
            }
            None => {
                self.out.push_back(Output::Event(Event::Fetching { content }));
                self.fetches
                    .insert(content, Fetch::Waiting { asking: None, asked: BTreeSet::new(), next_try: now });
                self.lookup(now, content);
                self.ask_manifest(now, content);
            }
        }
        self.arm_housekeeping(now);
        self.drive(now);
    }

    /// The content was withdrawn: it stops everywhere and its data goes.
    pub fn withdraw(&mut self, now: Time, content: &ContentId) {
        self.input("withdraw");
        self.offers.remove(content);
        self.remove_local(content);
        self.drive(now);
    }

    fn remove_local(&mut self, content: &ContentId) {
        self.scheduler.remove_content(content);
        self.fetches.remove(content);
        self.held.remove(content);
        self.outbox.remove(content);
        self.subscribers.remove(content);
        self.lookups.remove(content);
        self.out.push_back(Output::Unprovide { content: *content });
        self.out.push_back(Output::Remove { content: *content });
    }

    fn lookup(&mut self, now: Time, content: ContentId) {
        let due =
            self.lookups.get(&content).is_none_or(|t| now.saturating_since(*t) >= self.cfg.lookup_interval);
        if due {
            self.lookups.insert(content, now);
            self.stats.lookups += 1;
            self.out.push_back(Output::Lookup { content });
        }
    }

    /// A provider lookup of `content` answered `providers` (the body leaves itself out, and any peer it
    /// would refuse a connection to). While the content is fetched, the engine dials those it has no
    /// session with and is not dialing already, in the order given, as long as its sessions and dials in
    /// progress stay below `policy.dial_peers` and [`Config::max_peers`]. A dial that fails ([`dial_failed`](Self::dial_failed))
    /// or stays unanswered for [`DIAL_TIMEOUT`] frees its place.
    pub fn providers(&mut self, now: Time, content: &ContentId, providers: &[P]) {
        self.input("providers");
        if !self.fetches.contains_key(content) {
            return;
        }
        self.dialing.retain(|_, since| now.saturating_since(*since) < DIAL_TIMEOUT);
        let before = self.stats.dials;
        for peer in providers {
            if self.sessions.len() + self.dialing.len() >= self.dial_limit() {
                break;
            }
            if self.sessions.contains_key(peer) || self.dialing.contains_key(peer) {
                continue;
            }
            self.dialing.insert(peer.clone(), now);
            self.stats.dials += 1;
            self.out.push_back(Output::Dial { peer: peer.clone() });
        }
        self.short_every = if self.stats.dials > before {
            self.cfg.lookup_interval
        } else {
            (self.short_every * 2).min(MAX_SHORT_LOOKUP_EVERY)
        };
    }

    /// Peers (sessions and dials in progress) below which lookups' providers are dialed.
    fn dial_limit(&self) -> usize {
        self.cfg.policy.dial_peers.min(self.cfg.max_peers) as usize
    }

    /// A dial the engine asked for ([`Output::Dial`]) failed: its place is free.
    pub fn dial_failed(&mut self, _now: Time, peer: &P) {
        self.input("dial-failed");
        self.dialing.remove(peer);
    }

    fn score(&self, s: &Session) -> f64 {
        let inputs = ScoreInputs {
            same_site: self.cfg.locality.same_site(&s.info.locality),
            same_isp: self.cfg.locality.same_isp(&s.info.locality),
            load: f64::from(s.load),
            throughput: 0.5,
        };
        policy::score(&self.cfg.policy, &inputs)
    }

    /// Asks the best-scoring joined peer not yet asked for the manifest; when everyone was asked, looks up
    /// providers and starts over at the next housekeeping.
    fn ask_manifest(&mut self, now: Time, content: ContentId) {
        let Some(Fetch::Waiting { asking: None, asked, .. }) = self.fetches.get(&content) else { return };
        let best = self
            .sessions
            .iter()
            .filter(|(p, s)| s.joined && !asked.contains(*p))
            .map(|(p, s)| (self.score(s), self.cfg.locality.same_isp(&s.info.locality), p))
            // Equal scores: a same-ISP peer first (the manifest is small, but its round trip is shorter).
            .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then_with(|| b.2.cmp(a.2)))
            .map(|(_, _, p)| p.clone());
        match best {
            Some(peer) => {
                if let Some(Fetch::Waiting { asking, asked, .. }) = self.fetches.get_mut(&content) {
                    *asking = Some(peer.clone());
                    asked.insert(peer.clone());
                }
                self.out.push_back(Output::Send { peer, request: Request::Manifest { content } });
            }
            None => {
                if let Some(Fetch::Waiting { asked, next_try, .. }) = self.fetches.get_mut(&content) {
                    asked.clear();
                    *next_try = now + self.cfg.housekeeping;
                }
                self.lookup(now, content);
                self.arm_housekeeping(now);
            }
        }
    }

    /// What `peer`'s answer to our manifest request was worth.
    pub fn manifest(&mut self, now: Time, peer: &P, content: ContentId, reply: ManifestReply) {
        self.input("manifest");
        let Some(Fetch::Waiting { asking, .. }) = self.fetches.get_mut(&content) else { return };
        if asking.as_ref() == Some(peer) {
            *asking = None;
        }
        match reply {
            ManifestReply::Good { size } => match self.make_room(size) {
                Ok(evict) => {
                    for c in evict {
                        self.stats.evictions += 1;
                        self.remove_local(&c);
                    }
                    self.fetches.insert(content, Fetch::Installing);
                    self.out.push_back(Output::Install { content });
                }
                Err(reason) => self.refuse(now, content, reason),
            },
            ManifestReply::Bad(_) => {
                self.out.push_back(Output::Event(Event::Penalised { peer: peer.clone() }));
                self.ask_manifest(now, content);
            }
            ManifestReply::Missing => self.ask_manifest(now, content),
        }
        self.drive(now);
    }

    fn refuse(&mut self, now: Time, content: ContentId, reason: String) {
        self.scheduler.remove_content(&content);
        self.fetches
            .insert(content, Fetch::Refused { reason: reason.clone(), until: now + self.cfg.refused_retry });
        self.out.push_back(Output::Event(Event::Refused { content, reason }));
        self.arm_housekeeping(now);
    }

    /// Within `capacity`, the contents to evict (oldest first among those held, not pinned, and no longer
    /// wanted here) to make room for `size` more bytes; an error when that is not enough.
    fn make_room(&self, size: u64) -> Result<Vec<ContentId>, String> {
        let Some(capacity) = self.cfg.capacity else { return Ok(Vec::new()) };
        let mut used: u64 = self.held.values().filter(|h| !h.held.pinned).map(|h| h.held.size).sum();
        if used + size <= capacity {
            return Ok(Vec::new());
        }
        let mut evictable: Vec<(u64, ContentId, u64)> = self
            .held
            .iter()
            .filter(|(c, h)| {
                !h.held.pinned
                    && !self.fetches.contains_key(*c)
                    && self.offers.get(*c).is_none_or(|o| !wants(self.cfg.role, o.targeted))
            })
            .map(|(c, h)| (h.seq, *c, h.held.size))
            .collect();
        evictable.sort();
        let mut evict = Vec::new();
        for (_, c, s) in evictable {
            if used + size <= capacity {
                break;
            }
            used -= s.min(used);
            evict.push(c);
        }
        if used + size <= capacity {
            Ok(evict)
        } else {
            Err(format!("over storage.capacity ({used} bytes stored + {size} needed > {capacity})"))
        }
    }

    /// The body finished installing `content` (files created, identical local data reused): `have` is
    /// what is held now; an error refuses the content (its partial metadata is removed).
    pub fn installed(&mut self, now: Time, content: ContentId, result: Result<Bitfield, String>) {
        self.input("installed");
        if !matches!(self.fetches.get(&content), Some(Fetch::Installing)) {
            return;
        }
        match result {
            Ok(have) => {
                let size = self.offers.get(&content).map_or(0, |o| o.size);
                self.held_seq += 1;
                self.held.insert(
                    content,
                    HeldContent {
                        held: Held { have: have.clone(), size, pinned: false },
                        seq: self.held_seq,
                    },
                );
                self.activate(now, content, have);
            }
            Err(reason) => {
                self.out.push_back(Output::Remove { content });
                self.refuse(now, content, reason);
            }
        }
        self.drive(now);
    }

    /// A `cinemesh verify` found `have` to be what is really held: a content that lost chunks is fetched
    /// again.
    pub fn verified(&mut self, now: Time, content: ContentId, have: Bitfield) {
        self.input("verified");
        let Some(h) = self.held.get_mut(&content) else { return };
        h.held.have = have.clone();
        if !have.is_complete() && !h.held.pinned {
            self.scheduler.remove_content(&content);
            self.fetches.remove(&content);
            self.activate(now, content, have);
            self.drive(now);
        }
    }

    fn activate(&mut self, now: Time, content: ContentId, have: Bitfield) {
        if have.count() > 0 {
            self.out.push_back(Output::Provide { content });
        }
        if have.is_complete() {
            self.complete(content);
            return;
        }
        let deadline = self.offers.get(&content).and_then(|o| o.deadline);
        self.fetches.insert(content, Fetch::Active);
        self.active_at.entry(content).or_insert(now);
        self.scheduler.add_content(now, ContentSpec { id: content, chunks: have.len(), deadline }, have);
        let joined: Vec<P> = self.joined().cloned().collect();
        for peer in joined {
            self.out.push_back(Output::Send { peer, request: Request::Bitfield { content } });
        }
        self.lookup(now, content);
        self.arm_housekeeping(now);
    }

    // ---- bitfields and haves ----------------------------------------------------------------------

    /// `peer` asks for our bitfield of `content` (and so subscribes to our have-updates for it, up to
    /// [`Config::max_peers`] subscribers). `None`: we hold none of it. A peer that asks while we are still
    /// waiting for the manifest is subscribed too, so it hears of our first chunks.
    pub fn bitfield_request(&mut self, _now: Time, peer: &P, content: &ContentId) -> Option<Bitfield> {
        self.input("bitfield-request");
        let have = self.held.get(content).map(|h| h.held.have.clone());
        // It answered "none" when it did not know the film yet (a cinema that came online late, asked
        // before its catalogue had the film): now that it asks, it fetches the film and would otherwise
        // never be asked again, nor hear of its chunks, nor be fetched from.
        if let Some(s) = self.sessions.get_mut(peer) {
            if s.held_none.remove(content) && matches!(self.fetches.get(content), Some(Fetch::Active)) {
                self.stats.bitfields_asked_again += 1;
                self.out.push_back(Output::Send {
                    peer: peer.clone(),
                    request: Request::Bitfield { content: *content },
                });
            }
        }
        if have.is_none() && !self.fetches.contains_key(content) {
            return None;
        }
        let subs = self.subscribers.entry(*content).or_default();
        if subs.len() < self.cfg.max_peers as usize {
            subs.insert(peer.clone());
        }
        have
    }

    /// `peer`'s bitfield of `content` (its answer to our request); `None` when it holds none.
    pub fn bitfield(&mut self, now: Time, peer: &P, content: &ContentId, have: Option<Bitfield>) {
        self.input("bitfield");
        match have {
            Some(have) => {
                if let Some(s) = self.sessions.get_mut(peer) {
                    s.held_none.remove(content);
                }
                self.scheduler.peer_bitfield(now, peer, content, have);
                self.drive(now);
            }
            None if self.fetches.contains_key(content) => {
                if let Some(s) = self.sessions.get_mut(peer) {
                    s.held_none.insert(*content);
                }
            }
            None => {}
        }
    }

    /// `peer` gained `chunks` of `content`.
    pub fn have(&mut self, now: Time, peer: &P, content: &ContentId, chunks: &[u32]) {
        self.input("have");
        let woke = self.scheduler.peer_has_many(now, peer, content, chunks);
        // A have changes what the scheduler can decide only by waking a peer idle for want of a chunk.
        if woke {
            self.drive(now);
        }
    }

    /// Sends the pending haves to every subscriber, leaving out the chunks a subscriber is known to hold
    /// already (it needs no source for them; libtorrent's `send_redundant_have = false`): a subscriber that
    /// holds them all gets no message.
    fn flush_haves(&mut self) {
        self.flush_at = None;
        for (content, chunks) in std::mem::take(&mut self.outbox) {
            let Some(subs) = self.subscribers.get(&content) else { continue };
            // Every subscriber's bitfield is looked up once per flush (content included), not once per batch.
            let bits_of = self.scheduler.bits_of(&content);
            let known: Vec<Option<&Bitfield>> = subs.iter().map(bits_of).collect();
            for chunk_batch in chunks.chunks(self.cfg.have_batch.max(1)) {
                for (peer, bits) in subs.iter().zip(&known) {
                    let news: Vec<u32> = match bits {
                        Some(bits) => chunk_batch.iter().copied().filter(|&c| !bits.get(c)).collect(),
                        None => chunk_batch.to_vec(),
                    };
                    if news.is_empty() {
                        self.stats.haves_redundant += 1;
                        continue;
                    }
                    self.stats.have_batches += 1;
                    self.out.push_back(Output::Send {
                        peer: peer.clone(),
                        request: Request::Have { content, chunks: news },
                    });
                }
            }
        }
    }

    // ---- downloads --------------------------------------------------------------------------------

    /// What came back for our request of chunk `index` of `content` from `peer`. `true`: the body verifies
    /// and writes the bytes, then reports with [`chunk_written`](Self::chunk_written), and the peer's request
    /// slot is free meanwhile (the next request may go out while this chunk is hashed and synced); `false`:
    /// it drops them (we hold the chunk by now, another copy of it is being written, or we no longer fetch
    /// the content).
    pub fn chunk_reply(
        &mut self,
        now: Time,
        peer: &P,
        content: &ContentId,
        index: u32,
        reply: Reply,
    ) -> bool {
        self.input(match reply {
            Reply::Answer(a) => match a {
                Answer::Data { .. } => "reply:data",
                Answer::Busy { .. } => "reply:busy",
                Answer::Missing { .. } => "reply:missing",
                Answer::Cancelled => "reply:cancelled",
            },
            Reply::Failed => "reply:failed",
            Reply::Moved => "reply:moved",
        });
        let mut keep = false;
        match reply {
            Reply::Answer(Answer::Data { len, load }) => {
                self.note_load(now, peer, load);
                let held = self.held.get(content).is_some_and(|h| h.held.have.get(index));
                if held || !matches!(self.fetches.get(content), Some(Fetch::Active)) {
                    self.stats.chunks_discarded += 1;
                    self.scheduler.chunk_received(now, peer, content, index, len);
                } else if self.scheduler.chunk_arrived(now, peer, content, index, len) {
                    // The peer's request slot is free from here; the chunk is the body's to verify and write.
                    // The receive rate counts it now, so the next request tells it.
                    self.recv.arrived(now, len);
                    keep = true;
                } else {
                    // Held, or another copy of it is being written.
                    self.stats.chunks_discarded += 1;
                }
            }
            Reply::Answer(Answer::Busy { load }) => {
                self.recv.busy();
                self.note_load(now, peer, load);
                self.scheduler.chunk_failed(now, peer, content, index, Failure::Busy { load });
            }
            Reply::Answer(Answer::Missing { load }) => {
                self.note_load(now, peer, load);
                self.scheduler.chunk_failed(now, peer, content, index, Failure::Missing);
            }
            // We cancelled it ourselves: the scheduler already forgot the request.
            Reply::Answer(Answer::Cancelled) => {}
            Reply::Failed => self.scheduler.chunk_failed(now, peer, content, index, Failure::Io),
            Reply::Moved => self.scheduler.chunk_failed(now, peer, content, index, Failure::Moved),
        }
        self.drive(now);
        keep
    }

    fn note_load(&mut self, now: Time, peer: &P, load: f32) {
        let load = self.effective_load(peer, load);
        if let Some(s) = self.sessions.get_mut(peer) {
            s.load = load;
        }
        self.scheduler.peer_load(now, peer, load);
    }

    /// The body verified (or failed to) and wrote a chunk the engine told it to keep.
    pub fn chunk_written(
        &mut self,
        now: Time,
        peer: &P,
        content: &ContentId,
        index: u32,
        len: u64,
        result: Written,
    ) {
        self.input(match result {
            Written::Ok => "written:ok",
            Written::Corrupt => "written:corrupt",
            Written::NoSpace(_) => "written:no-space",
            Written::Io(_) => "written:io",
        });
        match result {
            Written::Ok => {
                let Some(h) = self.held.get_mut(content) else {
                    self.scheduler.chunk_received(now, peer, content, index, len);
                    self.drive(now);
                    return;
                };
                let first = h.held.have.count() == 0;
                let new = index < h.held.have.len() && !h.held.have.get(index);
                if new {
                    h.held.have.set(index);
                    self.stats.chunks_stored += 1;
                    self.out.push_back(Output::Event(Event::ChunkStored {
                        content: *content,
                        index,
                        peer: peer.clone(),
                        len,
                    }));
                    if first {
                        self.out.push_back(Output::Provide { content: *content });
                    }
                    let pending = {
                        let outbox = self.outbox.entry(*content).or_default();
                        outbox.push(index);
                        outbox.len()
                    };
                    if pending >= self.cfg.have_batch {
                        self.flush_haves();
                    } else if self.flush_at.is_none() {
                        self.flush_at = Some(now + self.cfg.have_flush);
                    }
                }
                self.scheduler.chunk_received(now, peer, content, index, len);
            }
            Written::Corrupt => self.scheduler.chunk_failed(now, peer, content, index, Failure::Corrupt),
            Written::NoSpace(reason) => {
                self.scheduler.chunk_failed(now, peer, content, index, Failure::Local);
                if matches!(self.fetches.get(content), Some(Fetch::Active)) {
                    self.refuse(now, *content, format!("no space: {reason}"));
                }
            }
            Written::Io(_) => self.scheduler.chunk_failed(now, peer, content, index, Failure::Local),
        }
        self.drive(now);
    }

    // ---- uploads ----------------------------------------------------------------------------------

    /// `peer` asks for chunk `index` of `content`, receiving at `asker_rate` bytes/s at best so far;
    /// `upload` names the request until it is answered. The engine answers at once (missing, busy) or asks
    /// the body to read the chunk. With fewer free slots than `transfer.open_slots` leaves open to this
    /// asker's rate, it answers busy: a busy uploader serves the fastest downloaders first, the order in
    /// which the completion-CDF bound finishes cinemas.
    pub fn chunk_request(
        &mut self,
        now: Time,
        peer: &P,
        upload: UploadId,
        content: ContentId,
        index: u32,
        asker_rate: u32,
    ) {
        self.input("chunk-request");
        if !self.held.get(&content).is_some_and(|h| h.held.have.get(index)) {
            self.stats.missing_answers += 1;
            let load = self.slots.load();
            self.out.push_back(Output::Answer { upload, answer: Answer::Missing { load } });
            return;
        };
        if self.upload_forbidden() {
            self.stats.busy_answers += 1;
            self.out.push_back(Output::Answer {
                upload,
                answer: Answer::Busy { load: self.slots.load().max(1.0) },
            });
            return;
        }
        // Slots open to this asker: `open_slots` of them to one that has not measured its rate yet, more the
        // faster it receives relative to the fastest asker lately, all to that one; at least one, so an idle
        // uploader always serves. An asker overstating its rate gains at most every slot, which any asker
        // could have before this rule, and lowers the others' share for some [`ASKER_HALF_LIFE`]s.
        let share = f64::from(asker_rate) / self.fastest_asker(now, f64::from(asker_rate));
        let open = match self.cfg.role {
            _ if self.alike => 1.0,
            Role::Cinema => self.cfg.transfer.open_slots,
            Role::Superseeder | Role::Distributor => {
                self.cfg.transfer.seeder_open_slots.unwrap_or(self.cfg.transfer.open_slots)
            }
        }
        .clamp(0.0, 1.0);
        // A slow asker (below `SLOW_ASKER_SHARE` of the fastest) may take any free slot.
        let slow = asker_rate > 0 && share < SLOW_ASKER_SHARE;
        let ranked = (f64::from(self.slots.slots()) * (open + (1.0 - open) * share)).max(1.0);
        let beyond_rank = f64::from(self.slots.active()) >= ranked;
        let allowed = if slow { f64::from(self.slots.slots()) } else { ranked };
        if f64::from(self.slots.active()) >= allowed {
            self.stats.busy_answers += 1;
            // Full for this asker: the load it sees is 1.0, so it backs off and ranks us as it would a full
            // uploader (measured: p90 point slowdown 2.75 against 2.90 with the true load, fewer busy answers).
            self.out.push_back(Output::Answer { upload, answer: Answer::Busy { load: 1.0 } });
            return;
        }
        match self.slots.request(peer) {
            UploadDecision::Busy { load } => {
                self.stats.busy_answers += 1;
                self.out.push_back(Output::Answer { upload, answer: Answer::Busy { load } });
            }
            UploadDecision::Serve => {
                self.stats.slow_asker_uploads += u64::from(beyond_rank);
                self.uploads
                    .insert(upload, Upload { peer: peer.clone(), content, index, state: UpState::Reading });
                self.out.push_back(Output::Read { upload, content, index });
            }
        }
    }

    /// The fastest receive rate askers told us lately (at least `rate`, at least 1 byte/s), decayed by
    /// [`ASKER_HALF_LIFE`] since it was told.
    fn fastest_asker(&mut self, now: Time, rate: f64) -> f64 {
        let (best, at) = self.fastest_asker;
        let halvings = now.saturating_since(at).as_secs_f64() / ASKER_HALF_LIFE.as_secs_f64();
        let decayed = best * 0.5f64.powf(halvings);
        if rate >= decayed {
            self.fastest_asker = (rate, now);
        }
        decayed.max(rate).max(1.0)
    }

    /// The body read the chunk for `upload` (`len` bytes), or could not. The answer goes out when the
    /// upload limit grants it.
    pub fn chunk_read(&mut self, now: Time, upload: UploadId, result: Result<u64, String>) {
        self.input("chunk-read");
        let Some(u) = self.uploads.get_mut(&upload) else { return };
        match result {
            Ok(len) => {
                u.state = UpState::Granting { len };
                self.granting.push_back(upload);
                self.grant(now);
            }
            Err(_) => {
                let peer = u.peer.clone();
                self.uploads.remove(&upload);
                self.slots.finished(&peer);
                self.stats.missing_answers += 1;
                let load = self.slots.load();
                self.out.push_back(Output::Answer { upload, answer: Answer::Missing { load } });
            }
        }
    }

    /// Uploads waiting for the upload bucket go out in arrival order as it allows.
    fn grant(&mut self, now: Time) {
        self.repace(now);
        let forbidden = self.upload_forbidden();
        while let Some(&id) = self.granting.front() {
            let Some(u) = self.uploads.get_mut(&id) else {
                self.granting.pop_front();
                continue;
            };
            let UpState::Granting { len } = u.state else {
                self.granting.pop_front();
                continue;
            };
            if forbidden {
                break;
            }
            if let Some(b) = &mut self.up_bucket {
                let wait = b.wait(now);
                if !wait.is_zero() {
                    self.grant_at = Some(now + wait);
                    break;
                }
                b.reserve(now, len);
            }
            u.state = UpState::Sending { len };
            self.granting.pop_front();
            let load = self.slots.load();
            self.out.push_back(Output::Answer { upload: id, answer: Answer::Data { len, load } });
        }
    }

    /// The answer to `upload` has left (`sent`), or its stream failed: its slot is free.
    pub fn upload_done(&mut self, now: Time, upload: UploadId, sent: bool) {
        self.input("upload-done");
        if let Some(u) = self.uploads.remove(&upload) {
            self.slots.finished(&u.peer);
            if let (true, UpState::Sending { len } | UpState::Aborting { len }) = (sent, u.state) {
                self.stats.uploads_served += 1;
                self.sent.add(now, len);
                self.out.push_back(Output::Event(Event::Served { peer: u.peer, len }));
            }
        }
    }

    /// `peer` no longer wants chunk `index` of `content`. Before its bytes left, the request is answered
    /// `Cancelled` and its slot is free at once; once they are on the way, the body is told to abort
    /// them and the slot is free when it reports the transfer ended ([`upload_done`](Self::upload_done)).
    pub fn cancel(&mut self, now: Time, peer: &P, content: &ContentId, index: u32) {
        self.input("cancel");
        let found = self
            .uploads
            .iter()
            .find(|(_, u)| &u.peer == peer && &u.content == content && u.index == index)
            .map(|(id, u)| (*id, u.state));
        let Some((id, state)) = found else { return };
        self.stats.uploads_cancelled += 1;
        match state {
            UpState::Reading | UpState::Granting { .. } => {
                self.uploads.remove(&id);
                self.slots.finished(peer);
                self.granting.retain(|g| *g != id);
                self.out.push_back(Output::Answer { upload: id, answer: Answer::Cancelled });
            }
            UpState::Sending { len } => {
                if let Some(u) = self.uploads.get_mut(&id) {
                    u.state = UpState::Aborting { len };
                }
                self.out.push_back(Output::Abort { upload: id });
            }
            UpState::Aborting { .. } => {}
        }
        self.grant(now);
    }
}
