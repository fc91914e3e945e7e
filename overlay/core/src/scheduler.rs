//! The chunk scheduler: which chunk to ask of which peer.
//!
//! Sans-io: inputs are method calls carrying `now`, decisions come out of [`Scheduler::poll_output`]
//! (call it until `None` after every input), timers through [`Scheduler::poll_timeout`] /
//! [`Scheduler::handle_timeout`]. Deterministic for a seed: the only randomness is a `ChaCha8Rng` seeded
//! in [`Scheduler::new`], and every ordered structure is a `BTreeMap`/`BTreeSet`/`Vec`.
//!
//! ## The pick: peer first, then its rarest chunk
//!
//! A decision starts from the *peer*, not the chunk. The scheduler keeps a `ready` set of peers that can take
//! a request now (below `max_requests_per_peer`, or one for a spare uploader, see below; not backing off
//! after a busy answer, not banned for corruption, and not known to have nothing we need), ordered by
//! [`policy::score`] divided by one plus the requests already in flight to that peer (its link is shared
//! among them, so a first request to another peer adds more than a second to the same one), with a random
//! tie-break drawn each time the peer's entry is refreshed. `poll_output` takes the best ready peer and gives
//! it, walking contents in deadline order (earlier first, `None` last, then order added), the rarest chunk of
//! that content the peer holds that is missing and not in flight (see
//! `rarity`: availability buckets, random tie-break, word-parallel fallback). A peer
//! holding nothing useful is marked idle and leaves the set until its bitfield gains a useful bit or one of
//! its chunks is re-queued. Because peers are served best first, the chunk given to a peer also went to the
//! best-scoring ready peer holding it: the same-ISP, low-load, fast peers fill their slots first and the
//! others take what the total budget leaves. Cost per decision: O(log peers) for the set plus a few bit
//! tests for the chunk (bounded by about chunks/64 word operations in the worst case) — no per-decision
//! scan of all peers or all chunks.
//!
//! ## Seeders beyond the window
//!
//! When the window is full, a ready seeder (a superseeder or the distributor, [`Scheduler::peer_seeder`])
//! with no request in flight still gets one, beyond the window. The window is then full of requests at
//! peers the seeder would have been picked before were it ready then (a stale busy load, or it joined
//! late), and those can be slow cinemas sharing a small uplink: without this a downloader waits on them
//! while the seeder, provisioned to serve, idles (seen in the lab: the origin idle for the last 30 s of
//! lab-16). At most one request per seeder beyond the window ([`Stats::beyond_window`]).
//!
//! ## Spare uploaders
//!
//! A peer's answers say its load: its uploads in progress over its slots. Below `transfer.spare_load` its
//! slots are not contended, so its link is shared by the connections of its askers (TCP per connection;
//! a real node frees a slot as soon as the chunk is read, and its transport carries every answer at once):
//! a second request of ours there gets no more of its link and only slows the first, and a first request
//! takes nobody's slot. Such a peer is asked one chunk at a time, and, when the window is full, one beyond
//! it if nothing of ours is in flight there, as a seeder is ([`Stats::beyond_window`]). Every downloader
//! is then at every uploader with room: equal shares where links are alike, and the request window's slow
//! start no longer decides who gets most of the swarm. At or above the threshold a peer's slots are
//! contended and it may take up to `max_requests_per_peer`, as a lone peer always may (its second request
//! keeps the link busy across the round trip), and as a fast downloader holding two slots of a
//! busy uploader gets more of its link where slots bind. A peer that has not said a load yet is asked one
//! chunk at a time, and nothing beyond the window: a first burst to every peer would also be measured by
//! the window as its own rate.
//! Measured: docs/benchmarks.md, "Uploaders with slots to spare".
//!
//! ## Far peers: requests that cover the round trip
//!
//! The counts above suit a peer near us: its chunk takes longer on its link than a round trip. A fast peer
//! far away (a superseeder 180 ms from an overseas cinema) idles between our requests for most of each
//! round trip. So each peer may take, beyond the count its load allows, the chunks it carries in one round
//! trip at its pace, less [`PIPELINE_SLACK`] of a chunk, rounded up ([`Stats::pipelined`]). The round trip
//! is the least one measured ([`Scheduler::peer_rtt`]: the node's ping, the simulator's latency); the pace
//! is the rate its link carries our chunks while it sends: the bytes that arrived over the time its link
//! was busy with our requests, a request being on it no earlier than a round trip after it was sent
//! (`Pace`). Peers near us rarely get more than before (the fleet's peers,
//! 16-50 ms away, carry well under a quarter of a chunk in a round trip: about one request in 10,000 is
//! pipelined). The request window still bounds them all. Such a peer is asked one chunk per chunk's time at
//! its pace: answers sent at once share its link and arrive together, so requests sent in a burst would
//! leave again together and its link would idle for a round trip each time (the lone far cinema of
//! `scenarios/far-4.toml`: 0.55 of its link in bursts, 0.89 paced). Measured: docs/benchmarks.md, "Far
//! peers".
//!
//! ## Local first, a preference
//!
//! Under `policy.local_first` a cinema of another ISP is asked only for the gaps of ours: chunks no usable
//! same-ISP peer holds (counted per chunk, `gaps`; a same-ISP peer measured below [`LOCAL_SLOW`] of the best
//! does not count). Superseeders and the distributor are always eligible, unless `policy.local_first_seeders`
//! (off by default) holds them to the same rule (or the node is a slow line, below), for a cinema that
//! declared its line (`transfer.downlink`); then a cinema whose window rate was below [`starved_share`] of
//! that line (four fifths, up to the whole of a fast line) still gives an idle seeder its one request beyond
//! the full window ("Seeders beyond the window") for any chunk: its window is full of requests at slow peers
//! of its ISP, and without it a fibre cinema of the fleet took 2.7-4.9 times its own link's time
//! (docs/benchmarks.md, "Superseeders held to local first, on this build"). A cinema with no line declared
//! cannot tell a window of slow peers from a slow line, and asks seeders for anything. A peer of another ISP
//! that holds chunks we lack, none of them gaps, is *held back*: it leaves the ready set for the `held` set
//! (same score order; a held-back peer never measured gets no credit for throughput, so it is not preferred
//! on hope alone). It is still asked, for any chunk, in two cases: when it scores more than
//! `policy.local_margin` times the best ready peer (the peers of our ISP able to take a request are that much
//! worse), and when the window has room and no ready peer is left. So locality orders the peers able to keep
//! the downloader busy and never keeps a request back: the fleet's fastest tenth was 6-11% later with the
//! filter alone than locality-blind (docs/benchmarks.md, "Does locality make a cinema wait?"). Requests sent
//! this way are counted in [`Stats::yielded`].
//!
//! ## A slow line imports last
//!
//! Under `policy.local_first`, a node that declared its line (`transfer.downlink`) below
//! `policy.import_lines` ([`IMPORT_LINES`], a quarter) of the fastest line among the cinemas of its ISP it
//! knows (their hellos tell them; superseeders and banned peers do not count) imports nothing while it has
//! requests in flight: it asks a cinema of another ISP, a superseeder or the distributor only with nothing in
//! flight, one chunk at a time, so it is never idle, and otherwise fetches from its ISP. A superseeder's
//! bytes cross the border as a cinema's do, so for such a node the superseeders and the distributor are held
//! as `policy.local_first_seeders` holds them for every line ([`Scheduler::seeders_held`]): with the window
//! full, a round below [`starved_share`] of its line (four fifths) gives an idle one a request beyond it, and
//! one that scores `local_margin` times the best ready peer is asked first (its ISP's peers are too busy to
//! keep it from waiting). Neither the room-in-window escape nor `local_margin` asks a held-back cinema of
//! another ISP for it, unless its window rate was below [`SLOW_LINE_STARVED`] of its line: its ISP's peers
//! are not feeding it, and it asks held-back peers though requests are in flight (not under
//! `policy.import_stripes`, whose rules alone then hold a slow line, as measured with them). What a slow line
//! imports takes border capacity its ISP's fast cinemas need, and reaches the rest of the ISP only through
//! its narrow uplink: lab-hetero's VDSL and ADSL cinemas imported 85-107 MiB of the 128 MiB film each through
//! their 40 Mbit/s borders when every line imported, and 21-71 MiB, most of it from the superseeder, while
//! superseeders stayed exempt. Real lab-hetero (seeds 1-3, means; every line importing -> superseeders exempt
//! -> held): p90 point slowdown 4.23 -> 3.50 (3.43 on a later day) -> 2.91, transit ratio 2.21 -> 1.84 (1.83)
//! -> 1.32; the simulated 350-cinema fleet, whose borders are wide, keeps its p90 (1.704 -> 1.720 -> 1.713;
//! 1.704 with the window rate below) and sends fewer bytes across borders (transit 23.86 -> 22.65 -> 16.50;
//! 18.65 with the window rate; docs/benchmarks.md, "A slow line imports last" and "A slow line imports last
//! from the superseeders too"). It is the import stripes' rule for a line that draws no stripe, without the
//! stripes: internally such a node has stripe members with its own line 0 and an empty stripe. The starved
//! escape at four fifths of the line for cinemas of other ISPs gave most of it back (real lab-hetero p90
//! 3.65-3.73, transit 1.85-1.96): behind a narrow border a slow line gets about half its line.
//!
//! Each escape reads the *window rate* ([`Window::starved`](crate::window::Window::starved)): the last
//! round's, or the round in progress's once it has lasted as long as the last. Judged on ended rounds alone,
//! a slow line whose ISP's fast peer stopped serving it (its load reached `transfer.spare_load`, so it was
//! no longer asked beyond a window full of requests at VDSL uploaders) got a burst of chunks from its idle
//! superseeders, looked fed for the round after, and waited four chunks of its slow peers, 15-20 s, before
//! asking them again: FLEET seed 2's slowest VDSL cinemas ran at a third to a half of their lines for
//! 600-1,500 s, and ranks 287-288 of the curve finished 6% after locality-blind's. Judged on the round in
//! progress too, the fleet keeps its p90 and max, and its slow classes take 55-95% more across borders
//! (about 60% of what they took with the superseeders exempt; transit 16.50 -> 18.65, seeds 1-8). Against
//! locality-blind seed 2's tail is within 1.4% now; seeds 3 and 6 had one early fibre point each 5.1-5.5%
//! later (six runs a side; docs/benchmarks.md, "A slow line's window rate tells a stall before its round
//! ends"), mended below.
//!
//! ## A slow line takes a superseeder's slack
//!
//! The starved escapes above ([`SLOW_LINE_STARVED`], [`starved_share`] beyond the window, [`SEEDER_STARVED`])
//! and `local_margin` ask a held superseeder or the distributor for a slow line only while it has slack
//! (`Scheduler::slack`): the load its last answer said is below [`SLACK_LOAD`] (a half), or that answer is
//! [`SLACK_LOAD_LIFE`] (30 s) old, when it is asked once more to learn its load. With nothing in flight a
//! slow line asks it as before, so it is never idle. A superseeder with its slots full is serving fibre
//! cinemas that only it can keep busy, and a slow line's starved escape took one of those slots: with the
//! escapes reading the window rate, FLEET seeds 3 and 6 had their second and third fastest cinemas 5.1-5.5%
//! after locality-blind's (six runs a side), which a superseeder's slack alone leaves at 3.4% and 4.2%, and
//! the slow classes take about a tenth less across borders (transit 18.65 -> 18.10, seeds 1-8; the fleet's
//! max 1.861 -> 1.845, p90 1.704 -> 1.716: docs/benchmarks.md, "A slow line takes a superseeder's slack").
//!
//! ## Import stripes
//!
//! Local first keeps a chunk our ISP holds from crossing the border, but a *gap* (a chunk no usable peer of
//! ours holds) is one every cinema of the ISP may ask another ISP for at once, and at the start of a film
//! every chunk is a gap: lab-hetero's ISPs imported 2.6-3.0 copies of the film through their 40 Mbit/s
//! borders, each import slowing the ones the ISP needed. Under `policy.import_stripes` (off by default) a
//! node that declared its line (`transfer.downlink`) asks a cinema of another ISP for a gap only when the gap
//! is in its *stripe*: each chunk belongs to one importer among the node and the cinemas of its ISP it knows
//! that declared their lines (their hellos tell them) and are not banned, drawn by weighted rendezvous
//! hashing ([`key_hash`] of each importer's key, the content and the chunk; weight the line), so every node
//! that knows the same importers draws the same stripes, and each imports a share in proportion to its line.
//! A line below `policy.import_lines` of the fastest imports nothing: what it imported would reach the rest
//! of its ISP through its narrow uplink. The stripes are drawn again when the importers change (a same-ISP
//! cinema joins, leaves, is banned or tells a new line): O(chunks x importers) then, nothing per decision.
//! What a slow line holds does not count as held by our ISP (`import_floor`, the same quarter of the fastest
//! line): it would reach us through that line's narrow uplink, so the importers fetch it from other ISPs too
//! (a fibre cinema of lab-hetero joining 20 s late took 95 s to fetch what its VDSL neighbours had imported
//! before it came, at 8 Mbit/s each, its border idle). Superseeders and the distributor keep their exemption
//! unless `policy.local_first_seeders` holds them, to the gaps of the stripe then (a slow line, which draws
//! no stripe, holds them either way). The stripes are for narrow borders, where a request across the border
//! only shares it with the imports the ISP needs: a node with requests in flight asks no held-back peer
//! (neither when the window has room and no ready peer is left nor at `local_margin`); one with nothing in
//! flight asks one, for anything, one request at a time, so it is never idle; and with superseeders held, one
//! whose window rate was below [`SEEDER_STARVED`] (a half) of its line asks a held-back seeder with nothing
//! of ours in flight, for anything: below half its line the border is not what holds it (an origin outside a
//! one-ISP swarm otherwise sent each chunk once and idled: simulated lab-16 0.753 of Kumar-Ross against
//! 0.919). Nodes that disagree about the importers (each knows only some of its ISP) import a chunk twice or
//! wait for one another's imports; a cinema that tells a false line draws the ISP's imports to itself, and
//! the others fetch from it, or one chunk at a time across the border when it holds nothing they lack. Where
//! borders are wide it costs the fastest cinemas (the 350-cinema fleet, seeds 1-2: p90 1.89 and 2.00 against
//! 1.69 and 1.76), so it is off by default. Measured: docs/benchmarks.md, "Import stripes" and "Import
//! stripes for narrow borders".
//!
//! ## End-game
//!
//! When a content has no chunk left that is missing and not in flight (and every missing chunk is held by
//! some peer), and no more than `transfer.endgame_chunks` chunks are missing, a ready peer with nothing else
//! to do is also asked for an in-flight chunk it holds, at most [`ENDGAME_PEERS_PER_CHUNK`] peers per chunk
//! (fewest requests first); a seeder may be one more, so a last chunk asked of two slow cinemas does not
//! wait on them while the source provisioned to serve it idles (lab-hetero: ADSL cinemas held the last
//! chunk of a fibre cinema for two minutes). When the chunk arrives, the other requests for it are cancelled
//! ([`Output::Cancel`]). Duplicates count towards both in-flight limits.
//!
//! A cancel cannot take back a chunk whose bytes are on the way (request-response hands the answer over
//! whole), so a copy that arrives second costs its uploader a chunk of link for nothing: the real lab-16
//! received 2.1-2.55% of its bytes twice. A copy is therefore asked only of a peer that would bring the
//! chunk within [`ENDGAME_SOONER`] of the time the requests in flight still need (each peer's usual time per
//! chunk, its throughput EWMA), or once every request for the chunk has waited [`ENDGAME_LATE`] times
//! that; the scheduler wakes at that moment ([`Scheduler::poll_timeout`]). Unmeasured peers hold no copy
//! back.
//!
//! ## Arrived, then written
//!
//! A chunk's bytes arrive ([`Scheduler::chunk_arrived`]) before they are verified and durable
//! ([`Scheduler::chunk_received`]): the body hashes them, writes them and syncs the write between the two.
//! The request ends at the arrival: the peer's request slot is free for its next chunk, its throughput is
//! sampled, and the other requests for the chunk are cancelled. The chunk itself stays claimed (`writing`):
//! not held, never asked again, counted against the window with the requests (so the window still bounds the
//! chunks a body holds in memory), and a seeder or spare peer with a chunk being written takes nothing beyond
//! the window. A failed check or write ([`Scheduler::chunk_failed`], `Corrupt` or `Local`) re-queues it,
//! whether or not its peer stayed. Before, the slot stayed taken until the write was durable, so a fast link
//! idled for every hash and sync: two daemons on loopback, on this VM's disk, 415 -> 482 MB/s
//! (docs/benchmarks.md, "Arrived, then written").
//!
//! ## Failures and timers
//!
//! Corrupt: [`Output::Penalise`], the peer is banned for `transfer.corrupt_ban`, the chunk re-queued. Busy:
//! back off `busy_backoff * (1 + load)`, doubled for each busy answer in a row from that peer up to
//! [`BUSY_STREAK_MAX`] (a chunk from it ends the streak), and remember the load (it lowers the score) for
//! [`BUSY_LOAD_LIFE`], after which the load of the peer's last answer other than busy counts again: a
//! peer that refused us during a rush is not ranked below every lightly loaded one for the rest of a
//! fetch that lasts hours. Missing: the peer's bit
//! is cleared. Io and request timeouts: re-queued, counted as a failure of the peer, whose throughput
//! estimate is halved (a peer never measured starts from half the assumed one, so a peer that never
//! answers sinks below those never asked).
//!
//! ## Throughput
//!
//! Each answered request gives a sample `bytes / (now - sent)`, folded into a per-peer EWMA (alpha
//! [`EWMA_ALPHA`]). The score uses it relative to a reference: the best EWMA seen, raised (and every ready
//! or held-back peer re-scored) when some peer beats it by 25%, so re-scoring happens O(log) times, not per
//! chunk.
//!
//! ## Bounds and memory
//!
//! Requests in flight and chunks being written are bounded together by the request
//! [`Window`], which adapts between `min_requests_total` and `max_requests_total` by
//! the receive rate, plus one per seeder or spare peer; the output queue holds at most the cancels,
//! penalties and completions caused by one input. Per content being fetched: about 7.5 bytes per chunk
//! (availability, bucket index, candidates, same-ISP count, gaps; 11.5 for 65,535 chunks or more) plus one
//! bitfield per connected peer that sent one; all of it
//! is dropped when the content completes (a seeder keeps nothing but its own bitfield). Bitfields and haves
//! for a content that is not being fetched (unknown or complete) are ignored: call
//! [`Scheduler::add_content`] first, then feed the peers' bitfields.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::ops::Bound;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::policy::{self, ScoreInputs};
use super::rarity::Rarity;
use crate::config::{PolicyConfig, TransferConfig};
use crate::window::{self, Window};
use crate::{Bitfield, Locality};
use crate::{ContentId, Time};

/// In end-game, at most this many peers are asked for the same chunk at once.
pub const ENDGAME_PEERS_PER_CHUNK: usize = 2;

/// An end-game copy that would not arrive sooner is still asked once every request for the chunk has
/// waited this many times what a chunk from its peer has been taking (`pick_duplicate`).
pub const ENDGAME_LATE: f64 = 3.0;

/// An end-game copy comes sooner when it would arrive within this share of the time the requests in flight
/// still need (`pick_duplicate`).
pub const ENDGAME_SOONER: f64 = 0.5;

/// Weight of a new sample in a peer's throughput EWMA.
pub const EWMA_ALPHA: f64 = 0.3;

/// A same-ISP peer measured below this share of the best peer's throughput does not count as a local
/// holder under `policy.local_first` (its chunks may be asked of other ISPs).
pub const LOCAL_SLOW: f64 = 0.1;

/// The default of `policy.import_lines`: a cinema whose declared line is below this share of the fastest
/// line among the cinemas of its ISP it knows (its own included) imports nothing while requests are in
/// flight (module docs, "A slow line imports last"), and under `policy.import_stripes` draws no stripe: a
/// chunk it imported would reach the rest of its ISP only through its uplink. lab-hetero (a prototype of the
/// stripes without local first's escapes, seeds 1-4): with every cinema drawn its ISPs imported 1.05-1.17
/// copies, but the median cinema took 3.2-3.8 times what its border allows (an ADSL cinema's imports passed
/// on at 1 Mbit/s); with VDSL's 50 Mbit/s and ADSL's 15 cut beside fibre's 300, 1.3 (docs/benchmarks.md,
/// "Import stripes").
pub const IMPORT_LINES: f64 = 0.25;

/// A hash of a peer key that every node computes alike for the same key, whatever its process: FNV-1a
/// over what the key's `Hash` writes, then SplitMix64's finish. The import stripes' draw (std's hashers are
/// seeded per process or unspecified across releases). Nodes that disagree on it only import a chunk
/// twice or leave it to the escapes of local first; none waits for it.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher(0xcbf2_9ce4_8422_2325);
    key.hash(&mut h);
    std::hash::Hasher::finish(&h)
}

/// Who the import stripes are drawn among: this node's (key hash, line bits), then the other importers'
/// ([`Scheduler::importers`]).
type Importers = ((u64, u64), Vec<(u64, u64)>);

/// FNV-1a, 64-bit, finished with SplitMix64 ([`key_hash`]).
struct StableHasher(u64);

impl std::hash::Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// SplitMix64's finish: every input bit moves about half the output bits (the simulator's per-pair
/// hashes use it too).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The chunks of a content (`id_hash`, `chunks` long) this node imports: weighted rendezvous hashing, each
/// chunk to the importer with the highest `line / -ln(u)`, `u` uniform in (0, 1) from the importer's key
/// hash, the content and the chunk. Every node that knows the same importers draws the same stripes, and
/// each importer takes a share of the chunks in proportion to its line. `me` and `others`: (key hash, line
/// bits), as [`Scheduler::importers`] gives them; a weight of 0 takes nothing.
fn draw_stripe(me: (u64, u64), others: &[(u64, u64)], id_hash: u64, chunks: u32) -> Bitfield {
    let score = |key: u64, line: f64, chunk_hash: u64| {
        let u = ((mix64(key ^ chunk_hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        line / -u.ln()
    };
    let mut stripe = Bitfield::new(chunks);
    let own = f64::from_bits(me.1);
    if own <= 0.0 {
        return stripe;
    }
    for chunk in 0..chunks {
        let chunk_hash = mix64(id_hash ^ mix64(u64::from(chunk) + 1));
        let mine = score(me.0, own, chunk_hash);
        if others.iter().all(|&(k, l)| score(k, f64::from_bits(l), chunk_hash) < mine) {
            stripe.set(chunk);
        }
    }
    stripe
}

/// A request is given up as stalled once it has waited this many times what a chunk from that peer has been
/// taking, and at least [`STALL_MIN`]; never later than `transfer.request_timeout`. A peer cut off
/// mid-transfer thus loses its requests to others within seconds, not after the whole timeout (issue 11,
/// finding 4).
pub const STALL_FACTOR: f64 = 8.0;
/// The shortest stall deadline.
pub const STALL_MIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Busy answers in a row that double the back-off: at most `2^(BUSY_STREAK_MAX - 1)` times
/// `busy_backoff * (1 + load)`.
pub const BUSY_STREAK_MAX: u32 = 4;

/// How long the load a busy answer said is the peer's load (it ranks the peer last among the lightly
/// loaded): after it, the load of its last answer other than busy counts again (a peer that has said none
/// keeps the busy one; module docs, "Failures and timers"). A peer asked again in the meantime says a new
/// one. Without it a load of 1.0 said during the fibre cinemas' rush stayed for hours in a slow line's
/// view, which filled its window with peers that said lower loads and carried about 1 Mbit/s each
/// (simulated cinemas-350: an ADSL cinema at 6-8 Mbit/s of its 15 for half an hour while the fibre
/// cinemas that had refused it seeded; Kumar-Ross 0.891). Measured with 60 and 300 s alike
/// (docs/benchmarks.md, "A busy load is forgotten"); 300 s leaves every fetch of the labs (two minutes at
/// most) as before.
pub const BUSY_LOAD_LIFE: std::time::Duration = std::time::Duration::from_secs(300);

/// A peer whose round trip holds less than this share of a chunk at its pace gets no request beyond the
/// count its load allows: its link may idle up to a fifth of the time between two chunks, where a second
/// request would only slow the first (module docs, "Far peers").
pub const PIPELINE_SLACK: f64 = 0.25;

/// Requests beyond the one a peer is sending that keep its link busy across the round trip: the chunks it
/// carries in one round trip at its pace, less [`PIPELINE_SLACK`], rounded up. 0 until both are measured.
fn round_trip_chunks<P>(p: &Peer<P>, chunk_bytes: u64) -> u32 {
    let (Some(pace), Some(rtt)) = (p.pace.rate(), p.rtt) else { return 0 };
    if chunk_bytes == 0 {
        return 0;
    }
    let chunks = pace * rtt.as_secs_f64() / chunk_bytes as f64;
    // Saturating float-to-int conversion: a huge round trip asks for `u32::MAX`, which the caller bounds.
    (chunks - PIPELINE_SLACK).ceil().max(0.0) as u32
}

/// How long the pace remembers: its sums decay by e every this much time.
pub const PACE_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);

/// The rate at which a peer's link carries our chunks while it is sending them: the bytes that arrived
/// over the time its link was busy with our requests, both summed with a decay of e per [`PACE_MEMORY`].
///
/// A request can be on the uploader's link no earlier than a round trip after it was sent (the request's
/// one-way trip, then its data's), so the link was busy for us between two arrivals only from the later of
/// the previous arrival and the request's send plus the round trip (the least measured, so never later
/// than the truth: the pace errs low). An uploader serving our requests one after the other counts each
/// chunk's own time; one that shares its link among them counts their common time once, and the answers
/// that end together add their bytes to it; a lone request counts its time less the round trip. Sums that
/// decay with time, not per arrival, keep answers that end together in one ratio.
/// It replaced requests-in-flight over time-less-round-trip (Little's law), which read about three times
/// high at an uploader that queues: a request counted in flight may already be past its link.
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    bytes: f64,
    busy: f64,
    last_arrival: Option<Time>,
}

impl Pace {
    /// A chunk of `bytes` arrived at `now`, asked for by a request the link could serve from `ready`.
    fn arrived(&mut self, now: Time, ready: Time, bytes: u64) {
        let (from, keep) = match self.last_arrival {
            None => (ready, 0.0),
            Some(last) => {
                let gap = now.saturating_since(last).as_secs_f64();
                (last.max(ready), (-gap / PACE_MEMORY.as_secs_f64()).exp())
            }
        };
        let busy = now.saturating_since(from).as_secs_f64();
        self.bytes = self.bytes * keep + bytes as f64;
        self.busy = self.busy * keep + busy;
        self.last_arrival = Some(self.last_arrival.map_or(now, |a| a.max(now)));
    }

    /// Bytes/s, once some busy time was seen.
    fn rate(&self) -> Option<f64> {
        (self.busy > 0.0).then(|| self.bytes / self.busy)
    }
}

/// Under `policy.local_first_seeders`, a downloader whose window rate was below this share
/// of its declared line asks an idle seeder beyond a full window for any chunk, not only the gaps: on a
/// line up to [`window::LINK_FULL`]; above it the share rises to the whole line ([`starved_share`]).
/// Measured on cinemas-350 (docs/benchmarks.md, "Superseeders held to local first: four fifths of a slow
/// line"): with a half, an ADSL cinema fed at 86-90% of its line by its ISP's uploaders, with dips at
/// request timeouts, ended one run of eight at 0.892 of Kumar-Ross, and against locality-blind 3 points of
/// seed 2 were beyond 5% on six runs a side; with four fifths every run of eight seeds ends at 0.913 or
/// more and seed 2 has no such point (seed 3: one, 1.051), for a transit ratio of 19.0 against 16.9 (23.9
/// with seeders unheld). Before, 0.25 left the last fibre cinema of one seed of eight at 2.05 times its
/// point of the bound.
pub const STARVED: f64 = 0.8;

/// Under import stripes with `policy.local_first_seeders`, a node whose window rate was below this share of
/// its declared line asks an idle held-back seeder for anything, though requests are in flight
/// ([`Scheduler::poll_output`]'s escapes are otherwise closed under the stripes). Without it an origin
/// outside a one-ISP swarm sent each chunk about once and idled (simulated lab-16 0.753 of Kumar-Ross, lab-8
/// 0.655); with a half both are as without the stripes (0.919, 0.927) and lab-hetero keeps its gain (seeds
/// 1-8: p90 2.76, transit 1.19 against 2.74, 1.17); at 0.3 lab-16 gave 0.875, at 0.6 lab-hetero's VDSL
/// cinemas (about 0.6 of their lines) asked too (transit 1.26). docs/benchmarks.md, "Import stripes for
/// narrow borders".
pub const SEEDER_STARVED: f64 = 0.5;

/// A slow line kept from importing (module docs, "A slow line imports last") whose window rate
/// was below this share of its declared line asks held-back peers of other ISPs though requests
/// are in flight (while the window has room): its ISP's peers are not feeding it. Without it one FLEET
/// seed-2 run of three left an ADSL cinema at 0.876 of Kumar-Ross. Simulated lab-hetero (seeds 1-8): p90
/// point slowdown 3.80 and transit 1.81 with it, 3.80 and 1.76 without, 3.86 and 1.86 at a half; at four
/// fifths real lab-hetero gave most of the rule's gain back (behind a narrow border a slow line gets about
/// half its line).
pub const SLOW_LINE_STARVED: f64 = 0.3;

/// A superseeder whose answers say a load below this has slack: a starved slow line may ask it (module
/// docs, "A slow line takes a superseeder's slack").
pub const SLACK_LOAD: f64 = 0.5;

/// How long a superseeder's load, said in an answer, keeps a starved slow line from asking it (module docs,
/// "A slow line takes a superseeder's slack"): then it is asked once more, to learn its load.
pub const SLACK_LOAD_LIFE: std::time::Duration = std::time::Duration::from_secs(30);

/// The share of a declared line of `line` bytes/s below which a round counts as starved: [`STARVED`] up
/// to [`window::LINK_FULL`] (200 Mbit/s), rising linearly to the whole line at [`window::LINK_FREE`]
/// (800 Mbit/s) and above.
///
/// Why: the completion-CDF bound wants the fastest lines served first, and only the superseeders are fast
/// enough to fill them. With a half on every line (the slow lines' share then), the fleet's fastest cinemas
/// took less from the superseeders than with them unheld and finished up to 5.8% later than locality-blind
/// (FLEET seed 3, 5 points of 350 beyond 5%); rising to the whole line, they took as much as unheld and no
/// point of that seed was beyond 5% (docs/benchmarks.md, "Superseeders held to local first: the fastest lines
/// starve below their line").
pub fn starved_share(line: f64) -> f64 {
    let fast = ((line - window::LINK_FULL) / (window::LINK_FREE - window::LINK_FULL)).clamp(0.0, 1.0);
    STARVED + (1.0 - STARVED) * fast
}

/// Throughput relative to the best peer assumed for a peer never measured.
const UNMEASURED_THROUGHPUT: f64 = 0.5;

/// What identifies a peer to the core: libp2p's `PeerId` in the node, a `u32` in the simulator.
pub trait PeerKey: Clone + Eq + Hash + Ord + Debug {}
impl<T: Clone + Eq + Hash + Ord + Debug> PeerKey for T {}

/// A content this node wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSpec {
    /// The content.
    pub id: ContentId,
    /// Number of chunks.
    pub chunks: u32,
    /// Must be complete by then; earlier deadlines are fetched first. `None` = no deadline (last).
    pub deadline: Option<Time>,
}

/// Why a request did not yield a verified chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// The bytes did not match the chunk's hash: the peer is penalised.
    Corrupt,
    /// The peer answered busy with its load (0..=1, >= 1 saturated): back off from it.
    Busy {
        /// The peer's load.
        load: f32,
    },
    /// The peer said it does not have the chunk (its bitfield was stale).
    Missing,
    /// The stream or connection failed.
    Io,
    /// The connection that carried it closed while the peer stays connected through another: asked
    /// again, the peer is not blamed (its throughput estimate and failure count stay).
    Moved,
    /// Our side failed (e.g. a local disk error writing it): asked again, the peer is not blamed.
    Local,
}

/// A decision for the caller to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<P> {
    /// Ask `peer` for chunk `chunk` of `content`.
    Request {
        /// Whom to ask.
        peer: P,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        chunk: u32,
    },
    /// Cancel an outstanding request (end-game duplicate that another peer already served).
    Cancel {
        /// Whom to tell.
        peer: P,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        chunk: u32,
    },
    /// This peer misbehaved (e.g. served a corrupt chunk); the caller records it and may disconnect.
    Penalise {
        /// The culprit.
        peer: P,
    },
    /// Every chunk of `content` is held.
    Complete {
        /// The content.
        content: ContentId,
    },
}

/// Progress of one content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Requests in flight for it.
    pub in_flight: u32,
}

/// Counters for metrics: the core bumps them, the node exports them, the simulator reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests emitted (end-game duplicates included).
    pub requests: u64,
    /// Of them, end-game duplicates (a second peer asked for an in-flight chunk).
    pub endgame_requests: u64,
    /// Requests to an idle seeder sent with the window full.
    pub beyond_window: u64,
    /// Requests to peers of other ISPs for chunks our ISP holds: they scored `policy.local_margin` times
    /// the best ready peer, or the window had room and no other peer could take one.
    pub yielded: u64,
    /// Requests sent to a peer beyond the count its load allows (`max_requests_per_peer`, or one at a
    /// spare uploader), to keep its link busy across the round trip.
    pub pipelined: u64,
    /// Chunks received that answered a request of ours.
    pub received: u64,
    /// Chunks received for a chunk already held (a late end-game duplicate, say): ignored.
    pub duplicates: u64,
    /// Chunks received, not held, but not requested from that peer (e.g. after a timeout or a cancel):
    /// they are verified and durable, so they are marked held rather than fetched again.
    pub unsolicited: u64,
    /// Corrupt answers (peer penalised and banned).
    pub corrupt: u64,
    /// Busy answers.
    pub busy: u64,
    /// "I do not have it" answers.
    pub missing: u64,
    /// Stream or connection failures.
    pub io: u64,
    /// Requests lost with a connection closed while the peer stayed connected through another.
    pub moved: u64,
    /// Failures on our side (a chunk that could not be written locally).
    pub local: u64,
    /// Requests expired after `transfer.request_timeout`.
    pub timeouts: u64,
    /// Cancels emitted (end-game duplicates served by another peer).
    pub cancels: u64,
    /// Inputs ignored because they named an unknown peer or content, a chunk out of range, or a bitfield of
    /// the wrong length.
    pub ignored: u64,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Req {
    sent: Time,
    seq: u64,
    /// When it is given up: the stall deadline (see [`STALL_FACTOR`]) or `transfer.request_timeout`.
    deadline: Time,
}

/// (content slot, chunk, peer index).
type ReqKey = (u32, u32, u32);

/// Order in the ready set: best score first, then a random draw, then the index.
type ReadyKey = (Reverse<u64>, u64, u32);

#[derive(Debug)]
struct Content {
    id: ContentId,
    deadline: Option<Time>,
    seq: u64,
    have: Bitfield,
    in_flight: u32,
    endgame: bool,
    /// `None` once complete.
    rarity: Option<Rarity>,
    /// Same-ISP peers holding each chunk (exact; dropped with the rarity index once complete).
    local: LocalCounts,
    /// Chunks no same-ISP peer holds: the only ones asked of other ISPs under `policy.local_first`.
    gaps: Bitfield,
    /// The gaps this node imports for its ISP under `policy.import_stripes` (module docs, "Import
    /// stripes"); every chunk when stripes are off.
    stripe: Bitfield,
    /// `key_hash` of the content id: the stripes' draw.
    id_hash: u64,
}

impl Content {
    fn missing(&self) -> u32 {
        self.have.len() - self.have.count()
    }

    fn priority(&self) -> (bool, Option<Time>, u64) {
        (self.deadline.is_none(), self.deadline, self.seq)
    }
}

#[derive(Debug)]
struct Peer<P> {
    key: P,
    /// [`key_hash`] of its key: its draw in the import stripes.
    key_hash: u64,
    /// Its declared downlink, bytes/s (its hello): its weight in the import stripes.
    line: Option<f64>,
    same_site: bool,
    same_isp: bool,
    load: f64,
    /// It has said a load (in an answer): only then can it be spare beyond the window.
    load_said: bool,
    /// When it said its load last (any answer).
    load_at: Time,
    /// Idle only because `policy.local_first` keeps its chunks for our ISP: asked when it scores
    /// `policy.local_margin` times the best ready peer, or when the window has room and no ready peer is left.
    held: bool,
    ewma: Option<f64>,
    /// The rate at which its link carries our chunks while it sends, bytes/s ([`Pace`]). Known once `rtt`
    /// is and a chunk came.
    pace: Pace,
    /// The least round trip measured to it (the node's pings, the simulator's latency).
    rtt: Option<std::time::Duration>,
    in_flight: u32,
    /// Chunks from it that arrived and are being written: with `in_flight`, what it may have beyond the
    /// window is one of either.
    writing: u32,
    failures: u64,
    /// Busy back-off, corruption ban or the pacing of a far peer's requests in force until `blocked_until`.
    blocked: bool,
    /// Banned for corruption: its chunks do not count as held by our ISP meanwhile.
    banned: bool,
    /// Its chunks are in the content's same-ISP counts (`local`, `gaps`) right now.
    counted: bool,
    /// A superseeder or the distributor: provisioned to inject content into every ISP, so `local_first`
    /// (unless [`Scheduler::seeders_held`]) never holds requests back from it (its capacity idle while
    /// cinemas wait is the waste to avoid).
    seeder: bool,
    blocked_until: Time,
    /// Busy answers in a row since its last chunk: each doubles the back-off (up to [`BUSY_STREAK_MAX`]).
    busy_streak: u32,
    /// The load it said last in an answer other than busy.
    quiet_load: Option<f64>,
    /// Its load is the one a busy answer said, until then ([`BUSY_LOAD_LIFE`]).
    busy_load_until: Option<Time>,
    /// Known to hold nothing we can ask for.
    idle: bool,
    ready_key: Option<ReadyKey>,
    /// Bitfield per content slot.
    have: Vec<Option<Bitfield>>,
}

impl<P> Peer<P> {
    fn bits(&self, slot: u32) -> Option<&Bitfield> {
        self.have.get(slot as usize).and_then(Option::as_ref)
    }

    /// Whether its chunks should count as held by our ISP (`policy.local_first`): same ISP, not banned, and
    /// able to serve at a useful rate: measured at least [`LOCAL_SLOW`] of the best peer's throughput (with
    /// hysteresis: once out, back in at twice that), or not measured yet. A slow same-ISP holder never
    /// keeps a chunk from a faster peer elsewhere. Under import stripes, a cinema whose declared line is
    /// below `import_floor` does not count either (module docs, "Import stripes").
    fn should_count(&self, tp_ref: f64, import_floor: f64) -> bool {
        if !self.same_isp || self.banned {
            return false;
        }
        if !self.seeder && self.line.is_some_and(|l| l < import_floor) {
            return false;
        }
        match self.ewma {
            Some(e) if tp_ref > 0.0 => {
                let floor = if self.counted { LOCAL_SLOW } else { 2.0 * LOCAL_SLOW };
                e >= floor * tp_ref
            }
            _ => true,
        }
    }
}

/// The scheduler. Generic over the peer key; deterministic for a seed.
#[derive(Debug)]
pub struct Scheduler<P: PeerKey> {
    /// [`key_hash`] of this node's own key ([`Scheduler::identify`]): its draw in the import stripes.
    me: Option<u64>,
    /// Who the import stripes were drawn among last: this node's line and the same-ISP cinemas' key hashes
    /// and lines (bits), sorted; drawn again only when it changes. Some only when imports are restricted:
    /// under import stripes, or on a line below `policy.import_lines` of its ISP's fastest (its own line 0
    /// then, its stripe empty).
    stripe_members: Option<Importers>,
    /// Under import stripes, `policy.import_lines` of the fastest line among the importers, bytes/s: a cinema
    /// of our ISP with a line below it imports nothing and does not count as a holder of our ISP. 0 when
    /// stripes are off.
    import_floor: f64,
    transfer: TransferConfig,
    policy: PolicyConfig,
    local: Locality,
    rng: ChaCha8Rng,
    contents: Vec<Option<Content>>,
    content_index: BTreeMap<ContentId, u32>,
    /// Slots of contents in priority order.
    order: Vec<u32>,
    next_content_seq: u64,
    peers: Vec<Option<Peer<P>>>,
    peer_index: BTreeMap<P, u32>,
    free_peers: Vec<u32>,
    ready: BTreeSet<ReadyKey>,
    /// Peers marked seeders (`peer_seeder`): each may take one request beyond the window.
    seeders: BTreeSet<u32>,
    /// Ready cinemas with nothing in flight whose last load was below `transfer.spare_load`, in the ready
    /// set's order: each may take one request beyond the window.
    spare: BTreeSet<ReadyKey>,
    /// Peers of other ISPs held back by local first (module docs, "Local first, a preference"), below
    /// their cap and not backing off, in score order.
    held: BTreeSet<ReadyKey>,
    /// Set by [`pick`](Self::pick) when only local first's filter kept a chunk from the peer.
    held_hint: bool,
    blocked: BTreeSet<(Time, u32)>,
    /// Busy loads to forget, by when ([`BUSY_LOAD_LIFE`]).
    busy_loads: BTreeSet<(Time, u32)>,
    requests: BTreeMap<ReqKey, Req>,
    /// Chunks that arrived and are being verified and written (`chunk_arrived`), by content slot, with the
    /// peer they came from while it stays: no longer a request, not yet held, never asked again meanwhile;
    /// they count against the window with the requests, which bounds the chunks a body holds in memory.
    writing: BTreeMap<(u32, u32), Option<u32>>,
    deadlines: BTreeMap<(Time, u64), ReqKey>,
    next_req_seq: u64,
    out: VecDeque<Output<P>>,
    tp_ref: f64,
    window: Window,
    /// The size of the last chunk received (for the stall deadline).
    chunk_bytes: u64,
    stats: Stats,
    /// The peers' declared lines are alike ([`Scheduler::set_alike`]).
    alike: bool,
    /// The earliest time an end-game copy held back because it would not arrive soon enough turns late and
    /// worth asking ([`pick_duplicate`]): idle peers are woken then.
    endgame_recheck: Option<Time>,
}

impl<P: PeerKey> Scheduler<P> {
    /// A scheduler for a node at `local`, with the given limits and weights and RNG seed.
    pub fn new(transfer: &TransferConfig, policy: &PolicyConfig, local: Locality, seed: u64) -> Self {
        Self {
            me: None,
            stripe_members: None,
            import_floor: 0.0,
            transfer: transfer.clone(),
            policy: policy.clone(),
            local,
            rng: ChaCha8Rng::seed_from_u64(seed),
            contents: Vec::new(),
            content_index: BTreeMap::new(),
            order: Vec::new(),
            next_content_seq: 0,
            peers: Vec::new(),
            peer_index: BTreeMap::new(),
            free_peers: Vec::new(),
            ready: BTreeSet::new(),
            seeders: BTreeSet::new(),
            spare: BTreeSet::new(),
            held: BTreeSet::new(),
            held_hint: false,
            blocked: BTreeSet::new(),
            busy_loads: BTreeSet::new(),
            requests: BTreeMap::new(),
            writing: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            next_req_seq: 0,
            out: VecDeque::new(),
            tp_ref: 0.0,
            chunk_bytes: 0,
            window: Window::new(transfer.min_requests_total, transfer.max_requests_total).with_link(
                // The line, or the limit below it.
                match (transfer.downlink, transfer.download_limit) {
                    (Some(line), Some(limit)) => Some(line.0.min(limit.0)),
                    (line, _) => line.map(|r| r.0),
                },
            ),
            stats: Stats::default(),
            alike: false,
            endgame_recheck: None,
        }
    }

    /// The peers' declared lines are alike, or no longer are ([`ALIKE_LINES`](crate::engine::ALIKE_LINES)):
    /// while they are, a peer is asked one chunk at a time, however contended (as a spare one is; a lone
    /// peer keeps `max_requests_per_peer`), and the request window holds at least one request per peer
    /// (up to `max_requests_total`). Every cinema then holds a request at every uploader: equal shares, so
    /// they finish together, which is what the last cinema's time needs where no line is faster.
    pub fn set_alike(&mut self, alike: bool) {
        if alike == self.alike {
            return;
        }
        self.alike = alike;
        for idx in 0..self.peers.len() as u32 {
            self.refresh(idx);
        }
    }

    /// Requests in flight allowed now: the window, or one per peer while lines are alike.
    fn window_size(&self) -> u32 {
        let size = self.window.size();
        if self.alike {
            let peers = u32::try_from(self.peer_index.len()).unwrap_or(u32::MAX);
            size.max(peers.min(self.transfer.max_requests_total.max(1)))
        } else {
            size
        }
    }

    /// Start fetching a content; `have` is what is already held (verified) locally.
    ///
    /// Adding a content already present only updates its deadline. If `have` is not `spec.chunks` long, the
    /// chunks of it that are in range count as held.
    pub fn add_content(&mut self, _now: Time, spec: ContentSpec, have: Bitfield) {
        if let Some(&slot) = self.content_index.get(&spec.id) {
            if let Some(c) = self.contents[slot as usize].as_mut() {
                c.deadline = spec.deadline;
            }
            self.sort_order();
            return;
        }
        let have = if have.len() == spec.chunks {
            have
        } else {
            let mut b = Bitfield::new(spec.chunks);
            for i in have.iter_ones() {
                b.set(i);
            }
            b
        };
        let complete = have.is_complete();
        let rarity = (!complete).then(|| Rarity::new(&have));
        let content = Content {
            id: spec.id,
            deadline: spec.deadline,
            seq: self.next_content_seq,
            have,
            in_flight: 0,
            endgame: false,
            rarity,
            local: LocalCounts::new(spec.chunks),
            gaps: Bitfield::full(spec.chunks),
            stripe: Bitfield::full(spec.chunks),
            id_hash: key_hash(&spec.id),
        };
        self.next_content_seq += 1;
        let slot = match self.contents.iter().position(Option::is_none) {
            Some(s) => {
                self.contents[s] = Some(content);
                s as u32
            }
            None => {
                self.contents.push(Some(content));
                (self.contents.len() - 1) as u32
            }
        };
        self.content_index.insert(spec.id, slot);
        self.order.push(slot);
        self.sort_order();
        self.stripe_members = None;
        self.restripe();
        if complete {
            self.out.push_back(Output::Complete { content: spec.id });
        } else {
            self.update_endgame(slot);
        }
    }

    fn sort_order(&mut self) {
        let contents = &self.contents;
        self.order.sort_by_key(|&s| contents[s as usize].as_ref().map(Content::priority));
    }

    /// Stop fetching a content (withdrawn); its requests in flight are forgotten.
    pub fn remove_content(&mut self, content: &ContentId) {
        let Some(slot) = self.content_index.remove(content) else { return };
        let keys: Vec<ReqKey> =
            self.requests.range((slot, 0, 0)..=(slot, u32::MAX, u32::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            self.remove_request(k);
        }
        let gone: Vec<(u32, u32)> =
            self.writing.range((slot, 0)..=(slot, u32::MAX)).map(|(k, _)| *k).collect();
        for k in gone {
            self.written(k);
        }
        self.contents[slot as usize] = None;
        self.order.retain(|&s| s != slot);
        for p in self.peers.iter_mut().flatten() {
            if let Some(b) = p.have.get_mut(slot as usize) {
                *b = None;
            }
        }
        // A content gone may make the pending outputs about it moot, but they stay correct to deliver.
    }

    /// A peer connected. A peer already known only has its locality updated.
    pub fn peer_joined(&mut self, _now: Time, peer: P, locality: Locality) {
        let same_site = self.local.same_site(&locality);
        let same_isp = self.local.same_isp(&locality);
        if let Some(&idx) = self.peer_index.get(&peer) {
            if let Some(p) = self.peers[idx as usize].as_mut() {
                p.same_site = same_site;
                p.same_isp = same_isp;
            }
            self.recount(idx);
            self.refresh(idx);
            self.restripe();
            return;
        }
        let state = Peer {
            key_hash: key_hash(&peer),
            key: peer.clone(),
            line: None,
            same_site,
            same_isp,
            load: 0.0,
            load_said: false,
            load_at: Time::ZERO,
            held: false,
            ewma: None,
            pace: Pace::default(),
            rtt: None,
            in_flight: 0,
            failures: 0,
            blocked: false,
            banned: false,
            counted: false,
            seeder: false,
            blocked_until: Time::ZERO,
            busy_streak: 0,
            quiet_load: None,
            busy_load_until: None,
            writing: 0,
            idle: false,
            ready_key: None,
            have: Vec::new(),
        };
        let idx = match self.free_peers.pop() {
            Some(i) => {
                self.peers[i as usize] = Some(state);
                i
            }
            None => {
                self.peers.push(Some(state));
                (self.peers.len() - 1) as u32
            }
        };
        self.peer_index.insert(peer, idx);
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.counted = p.should_count(self.tp_ref, self.import_floor);
        }
        self.refresh(idx);
        self.restripe();
    }

    /// This node's own key: the same [`key_hash`] of it that its peers draw the import stripes with
    /// (module docs, "Import stripes"). Both bodies call it once, before any peer joins.
    pub fn identify(&mut self, me: &P) {
        self.me = Some(key_hash(me));
        self.restripe();
    }

    /// A peer's declared downlink (its hello's `transfer.downlink`), bytes/s: its weight in the import
    /// stripes.
    pub fn peer_line(&mut self, peer: &P, line: Option<f64>) {
        let Some(&idx) = self.peer_index.get(peer) else { return };
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        if p.line != line {
            p.line = line;
            self.restripe();
            self.recount(idx);
        }
    }

    /// Imports may be restricted: `policy.local_first`, this node identified and its line declared, and
    /// import stripes drawn or slow lines kept from importing (`policy.import_lines`).
    fn restricts_imports(&self) -> bool {
        self.policy.local_first
            && (self.policy.import_stripes || self.policy.import_lines > 0.0)
            && self.me.is_some()
            && self.transfer.downlink.is_some_and(|l| l.0 > 0.0)
    }

    /// Draws again which gaps this node imports, when the cinemas it draws among changed (module docs,
    /// "Import stripes" and "A slow line imports last"). O(same-ISP peers) to tell, O(chunks x importers)
    /// to draw. Without import stripes only a line below `policy.import_lines` of its ISP's fastest is
    /// restricted: its stripe is empty.
    fn restripe(&mut self) {
        let members = self.restricts_imports().then(|| self.importers()).flatten();
        let members =
            members.filter(|((_, own), _)| self.policy.import_stripes || f64::from_bits(*own) == 0.0);
        if members == self.stripe_members {
            return;
        }
        self.stripe_members = members;
        // Under the stripes, what a slow line holds is a gap for the importers: it would reach them through
        // that line's narrow uplink (lab-hetero: a fibre cinema joining late fetched what its VDSL
        // neighbours had imported before it came, at 8 Mbit/s each, while its border idled).
        let stripes = self.stripe_members.as_ref().filter(|_| self.policy.import_stripes);
        let floor = stripes.map_or(0.0, |((_, own), others)| {
            let top = others.iter().map(|m| f64::from_bits(m.1)).fold(f64::from_bits(*own), f64::max);
            self.policy.import_lines * top.max(self.transfer.downlink.map_or(0.0, |l| l.0))
        });
        if floor != self.import_floor {
            self.import_floor = floor;
            for i in 0..self.peers.len() as u32 {
                self.recount(i);
            }
        }
        let mut opened = Vec::new();
        for (slot, c) in self.contents.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            if c.rarity.is_none() {
                continue;
            }
            let stripe = match &self.stripe_members {
                Some((me, others)) => draw_stripe(*me, others, c.id_hash, c.have.len()),
                None => Bitfield::full(c.have.len()),
            };
            if stripe.words().iter().zip(c.stripe.words()).any(|(new, old)| new & !old != 0) {
                opened.push(slot as u32);
            }
            c.stripe = stripe;
        }
        for slot in opened {
            self.wake_remote(slot);
        }
    }

    /// This node's and the same-ISP cinemas' (key hash, line bits) the stripes are drawn among:
    /// cinemas of our ISP with a declared line, not banned, whose line is at least `policy.import_lines`
    /// of the fastest of them and ours. Ours is 0 when it is below that: this node imports nothing then.
    fn importers(&self) -> Option<Importers> {
        let own = self.transfer.downlink?.0;
        let me = self.me?;
        let lines = self
            .peers
            .iter()
            .flatten()
            .filter(|p| p.same_isp && !p.seeder && !p.banned)
            .filter_map(|p| p.line.filter(|&l| l > 0.0 && l.is_finite()).map(|l| (p.key_hash, l)));
        let top = lines.clone().map(|m| m.1).fold(own, f64::max);
        let mut others: Vec<(u64, u64)> =
            lines.filter(|m| m.1 >= self.policy.import_lines * top).map(|(k, l)| (k, l.to_bits())).collect();
        others.sort_unstable();
        let own = if own >= self.policy.import_lines * top { own } else { 0.0 };
        Some(((me, own.to_bits()), others.into_iter().filter(|m| m.0 != me).collect()))
    }

    /// Marks a joined peer as a superseeder or distributor (or not): see `policy.local_first`.
    pub fn peer_seeder(&mut self, peer: &P, seeder: bool) {
        let Some(&idx) = self.peer_index.get(peer) else { return };
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.seeder = seeder;
            p.idle = false;
        }
        if seeder {
            self.seeders.insert(idx);
        } else {
            self.seeders.remove(&idx);
        }
        self.recount(idx);
        self.refresh(idx);
        self.restripe();
    }

    /// A peer disconnected: its requests in flight are re-queued.
    pub fn peer_left(&mut self, _now: Time, peer: &P) {
        let Some(idx) = self.peer_index.remove(peer) else { return };
        self.seeders.remove(&idx);
        let have = match self.peers[idx as usize].as_mut() {
            Some(p) => std::mem::take(&mut p.have),
            None => return,
        };
        let same_isp = self.peers[idx as usize].as_ref().is_some_and(|p| p.counted);
        for (slot, bits) in have.iter().enumerate() {
            if let Some(bits) = bits {
                self.account(slot as u32, bits, None, same_isp);
            }
        }
        let keys: Vec<ReqKey> = self.requests.keys().filter(|k| k.2 == idx).copied().collect();
        for k in keys {
            self.remove_request(k);
            self.requeue(k.0, k.1);
        }
        // Its chunks being written stay claimed; the index may go to another peer.
        for from in self.writing.values_mut().filter(|f| **f == Some(idx)) {
            *from = None;
        }
        if let Some(p) = self.peers[idx as usize].take() {
            if let Some(k) = p.ready_key {
                self.ready.remove(&k);
                self.spare.remove(&k);
                self.held.remove(&k);
            }
            if p.blocked {
                self.blocked.remove(&(p.blocked_until, idx));
            }
            if let Some(t) = p.busy_load_until {
                self.busy_loads.remove(&(t, idx));
            }
        }
        self.free_peers.push(idx);
        self.restripe();
    }

    /// Adds (`new`) and/or removes (`old`) a peer's bits from a content's availability counts. Chunks held
    /// locally are skipped.
    fn account(&mut self, slot: u32, old: &Bitfield, new: Option<&Bitfield>, same_isp: bool) {
        let Some(c) = self.contents.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        let Some(r) = c.rarity.as_mut() else { return };
        let mut opened = false;
        let empty: &[u64] = &[];
        let new_words = new.map_or(empty, Bitfield::words);
        for (wi, (&o, &h)) in old.words().iter().zip(c.have.words()).enumerate() {
            let n = new_words.get(wi).copied().unwrap_or(0);
            let mut diff = (o ^ n) & !h;
            while diff != 0 {
                let b = diff.trailing_zeros();
                diff &= diff - 1;
                let chunk = wi as u32 * 64 + b;
                if n & (1 << b) != 0 {
                    r.inc(chunk);
                    if same_isp {
                        c.local.inc(&mut c.gaps, chunk);
                    }
                } else {
                    r.dec(chunk);
                    if same_isp {
                        opened |= c.local.dec(&mut c.gaps, chunk);
                    }
                }
            }
        }
        if opened {
            self.wake_remote(slot);
        }
    }

    /// Sets a peer's ban and updates the same-ISP counts.
    fn set_banned(&mut self, idx: u32, banned: bool) {
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.banned = banned;
        }
        self.recount(idx);
        self.restripe();
    }

    /// Brings a peer's chunks into or out of the same-ISP counts when [`Peer::should_count`] changed.
    fn recount(&mut self, idx: u32) {
        let (tp_ref, floor) = (self.tp_ref, self.import_floor);
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        let count = p.should_count(tp_ref, floor);
        if p.counted == count {
            return;
        }
        p.counted = count;
        let have = std::mem::take(&mut p.have);
        for (slot, bits) in have.iter().enumerate() {
            let Some(bits) = bits else { continue };
            let Some(c) = self.contents.get_mut(slot).and_then(Option::as_mut) else { continue };
            let mut opened = false;
            for chunk in bits.iter_ones() {
                if count {
                    c.local.inc(&mut c.gaps, chunk);
                } else {
                    opened |= c.local.dec(&mut c.gaps, chunk);
                }
            }
            if opened {
                self.wake_remote(slot as u32);
            }
        }
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.have = have;
        }
    }

    /// A chunk became a gap of our ISP: peers of other ISPs idle for want of one may now be asked.
    fn wake_remote(&mut self, slot: u32) {
        if !self.policy.local_first {
            return;
        }
        for i in 0..self.peers.len() as u32 {
            let wake = self.peers[i as usize]
                .as_ref()
                .is_some_and(|p| p.idle && !p.same_isp && p.bits(slot).is_some());
            if wake {
                self.wake(i);
            }
        }
    }

    fn lookup(&self, peer: &P, content: &ContentId) -> Option<(u32, u32)> {
        let idx = *self.peer_index.get(peer)?;
        let slot = *self.content_index.get(content)?;
        Some((idx, slot))
    }

    /// What `peer` is known to hold of `content` (its bitfield and haves, while we fetch `content`).
    pub fn peer_bits(&self, peer: &P, content: &ContentId) -> Option<&Bitfield> {
        self.bits_of(content)(peer)
    }

    /// [`peer_bits`](Self::peer_bits) for many peers of one content: the content is looked up once.
    pub fn bits_of<'a>(&'a self, content: &ContentId) -> impl Fn(&P) -> Option<&'a Bitfield> + 'a {
        let slot = self.content_index.get(content).copied();
        move |peer| {
            let slot = slot?;
            let idx = *self.peer_index.get(peer)?;
            self.peers[idx as usize].as_ref()?.bits(slot)
        }
    }

    /// A peer's full bitfield for a content (ignored for a content not being fetched, or of the wrong
    /// length).
    pub fn peer_bitfield(&mut self, _now: Time, peer: &P, content: &ContentId, have: Bitfield) {
        let Some((idx, slot)) = self.lookup(peer, content) else {
            self.stats.ignored += 1;
            return;
        };
        let Some(c) = self.contents[slot as usize].as_ref() else { return };
        if c.rarity.is_none() {
            return;
        }
        if have.len() != c.have.len() {
            self.stats.ignored += 1;
            return;
        }
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        if p.have.len() <= slot as usize {
            p.have.resize_with(slot as usize + 1, || None);
        }
        let old = p.have[slot as usize].take().unwrap_or_else(|| Bitfield::new(have.len()));
        let same_isp = p.counted;
        self.account(slot, &old, Some(&have), same_isp);
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.have[slot as usize] = Some(have);
        }
        self.wake(idx);
    }

    /// A peer now has one more chunk. Returns true when that made the peer worth asking again (it was idle
    /// for want of a chunk we need): only then can [`poll_output`](Self::poll_output) decide anything new.
    pub fn peer_has(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32) -> bool {
        self.peer_has_many(now, peer, content, &[chunk])
    }

    /// `peer` gained `chunks` of `content` (one have batch): as [`peer_has`](Self::peer_has) for each, with
    /// one lookup of the peer and the content for the batch. True when the peer was woken.
    pub fn peer_has_many(&mut self, _now: Time, peer: &P, content: &ContentId, chunks: &[u32]) -> bool {
        let Some((idx, slot)) = self.lookup(peer, content) else {
            self.stats.ignored += chunks.len() as u64;
            return false;
        };
        let seeders_held = self.seeders_held();
        let Some(c) = self.contents[slot as usize].as_mut() else { return false };
        let Some(r) = c.rarity.as_mut() else { return false };
        let n = c.have.len();
        let Some(p) = self.peers[idx as usize].as_mut() else { return false };
        if p.have.len() <= slot as usize {
            p.have.resize_with(slot as usize + 1, || None);
        }
        let bits = p.have[slot as usize].get_or_insert_with(|| Bitfield::new(n));
        let local_first = self.policy.local_first;
        let mut wake = false;
        for &chunk in chunks {
            if chunk >= n {
                self.stats.ignored += 1;
                continue;
            }
            if !bits.set(chunk) || c.have.get(chunk) {
                continue;
            }
            r.inc(chunk);
            if p.counted {
                c.local.inc(&mut c.gaps, chunk);
            }
            let eligible = p.same_isp
                || !local_first
                || (p.seeder && !seeders_held)
                || (c.gaps.get(chunk) && c.stripe.get(chunk));
            wake |= p.idle && ((r.is_candidate(chunk) && eligible) || c.endgame);
        }
        if wake {
            self.wake(idx);
        }
        wake
    }

    /// The round trip to `peer` was measured (the node's ping): a fast peer far away gets enough requests
    /// in flight to keep its link busy across it.
    pub fn peer_rtt(&mut self, peer: &P, rtt: std::time::Duration) {
        let Some(&idx) = self.peer_index.get(peer) else { return };
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        // Only a new least round trip changes anything: the pings that follow every 15 s mostly do not,
        // and re-filing the peer would draw its tie-break again for nothing.
        if p.rtt.is_some_and(|r| r <= rtt) {
            return;
        }
        p.rtt = Some(rtt);
        self.refresh(idx);
    }

    /// A peer reported its load (0..=1).
    pub fn peer_load(&mut self, now: Time, peer: &P, load: f32) {
        let Some(&idx) = self.peer_index.get(peer) else { return };
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.load = clamp_load(load);
            p.load_said = true;
            p.load_at = now;
            p.quiet_load = Some(p.load);
            if let Some(t) = p.busy_load_until.take() {
                self.busy_loads.remove(&(t, idx));
            }
        }
        self.refresh(idx);
    }

    /// The bytes of a chunk arrived from `peer`, not yet verified nor written; `bytes` is its length (for
    /// throughput). Returns whether the body should verify and write it, then report with
    /// [`chunk_received`](Self::chunk_received) or [`chunk_failed`](Self::chunk_failed).
    ///
    /// The request ends here: the peer's request slot is free for the next chunk while this one is hashed
    /// and synced, so a fast link does not idle for the disk (module docs, "Arrived, then written"). The
    /// chunk is not asked of anyone meanwhile (other requests for it are cancelled), and it counts against
    /// the window until written. A chunk already held or already being written is not written again
    /// (counted in [`Stats::duplicates`]).
    pub fn chunk_arrived(
        &mut self,
        now: Time,
        peer: &P,
        content: &ContentId,
        chunk: u32,
        bytes: u64,
    ) -> bool {
        let Some(&slot) = self.content_index.get(content) else {
            self.stats.ignored += 1;
            return false;
        };
        let idx = self.peer_index.get(peer).copied();
        let Some(c) = self.contents[slot as usize].as_ref() else { return false };
        if chunk >= c.have.len() {
            self.stats.ignored += 1;
            return false;
        }
        let held = c.have.get(chunk) || self.writing.contains_key(&(slot, chunk));
        let req = idx.and_then(|i| self.remove_request((slot, chunk, i)));
        if held {
            self.stats.duplicates += 1;
            return false;
        }
        self.count_arrival(now, idx, req, bytes);
        self.writing.insert((slot, chunk), idx);
        if let Some(i) = idx {
            if let Some(p) = self.peers[i as usize].as_mut() {
                p.writing += 1;
            }
            self.refresh(i);
        }
        self.claim(slot, *content, chunk);
        true
    }

    /// A chunk's write ended (or its content went): it leaves `writing`. Whether it was there.
    fn written(&mut self, key: (u32, u32)) -> bool {
        let Some(from) = self.writing.remove(&key) else { return false };
        if let Some(i) = from {
            if let Some(p) = self.peers[i as usize].as_mut() {
                p.writing -= 1;
            }
            self.refresh(i);
        }
        true
    }

    /// The request's share of an arrival: the counters, the window and the peer's throughput.
    fn count_arrival(&mut self, now: Time, idx: Option<u32>, req: Option<Req>, bytes: u64) {
        match (idx, req) {
            (Some(i), Some(req)) => {
                self.stats.received += 1;
                if let Some(p) = self.peers[i as usize].as_mut() {
                    p.busy_streak = 0;
                }
                self.window.on_chunk(now, bytes);
                let secs = now.saturating_since(req.sent).as_secs_f64();
                self.chunk_bytes = bytes;
                if secs > 0.0 {
                    if let Some(p) = self.peers[i as usize].as_mut() {
                        if let Some(rtt) = p.rtt {
                            p.pace.arrived(now, req.sent + rtt, bytes);
                        }
                    }
                    self.sample_throughput(i, bytes as f64 / secs);
                }
            }
            _ => self.stats.unsolicited += 1,
        }
    }

    /// `chunk` is ours (arrived or held): no longer a candidate, and every other request for it cancelled.
    fn claim(&mut self, slot: u32, content: ContentId, chunk: u32) {
        if let Some(r) = self.contents[slot as usize].as_mut().and_then(|c| c.rarity.as_mut()) {
            r.remove(chunk);
        }
        let others: Vec<ReqKey> =
            self.requests.range((slot, chunk, 0)..=(slot, chunk, u32::MAX)).map(|(k, _)| *k).collect();
        for k in others {
            self.remove_request(k);
            if let Some(p) = self.peers[k.2 as usize].as_ref() {
                self.out.push_back(Output::Cancel { peer: p.key.clone(), content, chunk });
                self.stats.cancels += 1;
            }
        }
    }

    /// A chunk from `peer` is verified and durable; `bytes` is its length (for throughput).
    ///
    /// A chunk that [arrived](Self::chunk_arrived) before is only marked held: its request was counted then.
    /// Otherwise the arrival is counted here too. A chunk already held is ignored (counted in
    /// [`Stats::duplicates`]); one not requested from that peer but not held is marked held (counted in
    /// [`Stats::unsolicited`]) since it is verified and durable.
    pub fn chunk_received(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32, bytes: u64) {
        let Some(&slot) = self.content_index.get(content) else {
            self.stats.ignored += 1;
            return;
        };
        let idx = self.peer_index.get(peer).copied();
        let Some(c) = self.contents[slot as usize].as_ref() else { return };
        if chunk >= c.have.len() {
            self.stats.ignored += 1;
            return;
        }
        let held = c.have.get(chunk);
        let arrived = self.written((slot, chunk));
        let req = idx.and_then(|i| self.remove_request((slot, chunk, i)));
        if held {
            self.stats.duplicates += 1;
            return;
        }
        if !arrived {
            self.count_arrival(now, idx, req, bytes);
        }
        self.claim(slot, *content, chunk);
        let Some(c) = self.contents[slot as usize].as_mut() else { return };
        c.have.set(chunk);
        if c.have.is_complete() {
            c.rarity = None;
            c.local = LocalCounts::new(0);
            c.gaps = Bitfield::new(0);
            c.endgame = false;
            self.out.push_back(Output::Complete { content: *content });
            for p in self.peers.iter_mut().flatten() {
                if let Some(b) = p.have.get_mut(slot as usize) {
                    *b = None;
                }
            }
        } else {
            self.update_endgame(slot);
        }
    }

    fn sample_throughput(&mut self, idx: u32, sample: f64) {
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        let e = match p.ewma {
            Some(e) => e * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA,
            None => sample,
        };
        p.ewma = Some(e);
        if e > self.tp_ref * 1.25 {
            self.tp_ref = e;
            // Every peer whose score counts its throughput against the best: the ready ones and those held
            // back by local first (compared with the best ready peer under `local_margin`).
            let scored: Vec<u32> = self.ready.iter().chain(&self.held).map(|k| k.2).collect();
            for i in scored {
                self.refresh(i);
            }
            if self.policy.local_first {
                for i in 0..self.peers.len() as u32 {
                    self.recount(i);
                }
            }
        }
        if self.policy.local_first {
            self.recount(idx);
        }
        self.refresh(idx);
    }

    /// A request failed.
    ///
    /// A chunk that [arrived](Self::chunk_arrived) and then failed its check or its write is a candidate
    /// again, whether or not its peer is still here.
    pub fn chunk_failed(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32, failure: Failure) {
        let slot = self.content_index.get(content).copied();
        let arrived = slot.is_some_and(|s| self.written((s, chunk)));
        let Some(&idx) = self.peer_index.get(peer) else {
            if let (Some(slot), true) = (slot, arrived) {
                self.requeue(slot, chunk);
            }
            self.stats.ignored += 1;
            return;
        };
        let req = slot.and_then(|s| self.remove_request((s, chunk, idx)));
        match failure {
            Failure::Corrupt => {
                self.stats.corrupt += 1;
                self.out.push_back(Output::Penalise { peer: peer.clone() });
                self.block(idx, now + self.transfer.corrupt_ban);
                self.set_banned(idx, true);
            }
            Failure::Busy { load } => {
                self.stats.busy += 1;
                let load = if load.is_nan() { 1.0 } else { f64::from(load).clamp(0.0, 10.0) };
                let mut streak = 0;
                if let Some(p) = self.peers[idx as usize].as_mut() {
                    p.load = load.min(1.0);
                    p.load_said = true;
                    p.load_at = now;
                    p.busy_streak = (p.busy_streak + 1).min(BUSY_STREAK_MAX);
                    streak = p.busy_streak;
                    let until = now + BUSY_LOAD_LIFE;
                    if let Some(t) = p.busy_load_until.replace(until) {
                        self.busy_loads.remove(&(t, idx));
                    }
                    self.busy_loads.insert((until, idx));
                }
                let doubling = f64::from(1u32 << streak.saturating_sub(1));
                self.block(idx, now + self.transfer.busy_backoff.mul_f64((1.0 + load) * doubling));
            }
            Failure::Missing => {
                self.stats.missing += 1;
                if let Some(slot) = slot {
                    self.clear_peer_bit(idx, slot, chunk);
                }
            }
            Failure::Io => {
                self.stats.io += 1;
                self.peer_failed(idx);
            }
            Failure::Moved => self.stats.moved += 1,
            Failure::Local => self.stats.local += 1,
        }
        if let (Some(slot), true) = (slot, req.is_some() || arrived) {
            self.requeue(slot, chunk);
        }
    }

    fn clear_peer_bit(&mut self, idx: u32, slot: u32, chunk: u32) {
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        let Some(bits) = p.have.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        if !bits.clear(chunk) {
            return;
        }
        let same_isp = p.counted;
        let Some(c) = self.contents[slot as usize].as_mut() else { return };
        if let Some(r) = c.rarity.as_mut() {
            if !c.have.get(chunk) {
                r.dec(chunk);
                if same_isp && c.local.dec(&mut c.gaps, chunk) {
                    self.wake_remote(slot);
                }
            }
        }
    }

    /// A request to the peer timed out or failed: its throughput estimate is halved. A peer never measured
    /// starts from half the assumed [`UNMEASURED_THROUGHPUT`] of the best peer, so a peer that claims
    /// chunks and never answers sinks below every peer that does (it kept 0.5 before: issue 11, finding 4).
    fn peer_failed(&mut self, idx: u32) {
        let tp_ref = self.tp_ref;
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.failures += 1;
            p.ewma = Some(p.ewma.unwrap_or(UNMEASURED_THROUGHPUT * tp_ref) * 0.5);
        }
        self.recount(idx);
        self.refresh(idx);
    }

    /// Blocks a peer (busy back-off or ban) until `until`, unless already blocked longer.
    fn block(&mut self, idx: u32, until: Time) {
        let Some(p) = self.peers[idx as usize].as_mut() else { return };
        if p.blocked && p.blocked_until >= until {
            return;
        }
        if p.blocked {
            self.blocked.remove(&(p.blocked_until, idx));
        }
        p.blocked = true;
        p.blocked_until = until;
        self.blocked.insert((until, idx));
        self.refresh(idx);
    }

    fn expire_blocks(&mut self, now: Time) {
        while let Some(&(t, idx)) = self.blocked.first() {
            if t > now {
                break;
            }
            self.blocked.remove(&(t, idx));
            if let Some(p) = self.peers[idx as usize].as_mut() {
                p.blocked = false;
                p.idle = false;
            }
            self.set_banned(idx, false);
            self.refresh(idx);
        }
        while let Some(&(t, idx)) = self.busy_loads.first() {
            if t > now {
                break;
            }
            self.busy_loads.remove(&(t, idx));
            if let Some(p) = self.peers[idx as usize].as_mut() {
                if p.busy_load_until == Some(t) {
                    p.busy_load_until = None;
                    if let Some(q) = p.quiet_load {
                        p.load = q;
                    }
                }
            }
            self.refresh(idx);
        }
    }

    /// Time passed: expire requests older than `transfer.request_timeout`, end back-offs.
    pub fn handle_timeout(&mut self, now: Time) {
        self.expire_blocks(now);
        if self.endgame_recheck.is_some_and(|t| t <= now) {
            self.endgame_recheck = None;
            self.wake_all();
        }
        while let Some((&(t, _), &key)) = self.deadlines.first_key_value() {
            if t > now {
                break;
            }
            let sent = self.remove_request(key).map_or(now, |r| r.sent);
            self.stats.timeouts += 1;
            self.window.on_timeout(now, sent);
            self.peer_failed(key.2);
            self.requeue(key.0, key.1);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        let d = self.deadlines.first_key_value().map(|(k, _)| k.0);
        let b = self.blocked.first().map(|k| k.0);
        let l = self.busy_loads.first().map(|k| k.0);
        [d, b, l, self.endgame_recheck].into_iter().flatten().min()
    }

    /// The next queued cancel, penalty or completion, without deciding any new request (a caller holding
    /// requests back, e.g. under a download limit, still gets these).
    pub fn poll_queued(&mut self) -> Option<Output<P>> {
        self.out.pop_front()
    }

    /// The next decision, if any. Call until `None` after every input.
    pub fn poll_output(&mut self, now: Time) -> Option<Output<P>> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        self.expire_blocks(now);
        loop {
            if self.requests.len() + self.writing.len() >= self.window_size() as usize {
                if !self.ready.is_empty() {
                    self.window.note_full();
                }
                return self.beyond_window(now);
            }
            // Under import stripes, and on a slow line, the border is the narrow part: a held-back peer is
            // asked only by a node with nothing in flight, one request at a time (module docs, "Import
            // stripes" and "A slow line imports last").
            let striped = self.stripe_members.is_some();
            let Some(&(Reverse(sb), _, idx)) = self.ready.first() else {
                if striped && self.requests.len() + self.writing.len() > 0 {
                    // A slow line starving on its ISP's peers asks the border after all.
                    if !self.policy.import_stripes && self.window.starved(now, |_| SLOW_LINE_STARVED) {
                        return self.yield_held(now, true);
                    }
                    return self.starved_seeder(now);
                }
                return self.yield_held(now, false);
            };
            // A held-back peer of another ISP that scores `local_margin` times the best ready peer is asked
            // first: locality is a preference among the peers able to serve, never a wait.
            // On a slow line (not under import stripes) only a held superseeder or distributor may be
            // asked so: a byte of theirs crosses the border too, but a slow line whose ISP offers only peers
            // that much worse would otherwise wait on them.
            let margin = |k: &&ReadyKey| {
                !striped
                    || (!self.policy.import_stripes
                        && self.peers[k.2 as usize].as_ref().is_some_and(|p| p.seeder && self.slack(now, p)))
            };
            if let Some(&(Reverse(hb), _, held)) = self.held.first().filter(margin) {
                let better = f64::from_bits(hb) > self.policy.local_margin * f64::from_bits(sb);
                if better {
                    match self.pick(now, held, true) {
                        Some((slot, chunk, dup)) => return Some(self.yielded(now, held, slot, chunk, dup)),
                        None => {
                            self.mark_idle(held);
                            continue;
                        }
                    }
                }
            }
            match self.pick(now, idx, false) {
                Some((slot, chunk, dup)) => return Some(self.send(now, idx, slot, chunk, dup)),
                None if self.held_hint => self.hold(idx),
                None => self.mark_idle(idx),
            }
        }
    }

    /// With the window full, a ready seeder with nothing in flight still gets one request: the window is
    /// full of requests at peers slower than the seeder (it would have been picked first otherwise), and a
    /// seeder is provisioned to serve. At most one request per seeder beyond the window.
    fn beyond_window(&mut self, now: Time) -> Option<Output<P>> {
        let mut from = 0;
        while let Some(&idx) = self.seeders.range(from..).next() {
            from = idx + 1;
            let idle = self.peers[idx as usize]
                .as_ref()
                .is_some_and(|p| p.in_flight == 0 && p.writing == 0 && p.ready_key.is_some());
            if !idle {
                continue;
            }
            // With seeders held to local first, a cinema whose window rate was below
            // [`starved_share`] of its line asks the idle seeder for anything: its window is full of
            // requests at slow peers. Kept back by that filter alone, it stays held, to be asked once the
            // cinema starves.
            let any = self.seeders_held()
                && self.window.starved(now, starved_share)
                && self.peers[idx as usize].as_ref().is_some_and(|p| self.slack(now, p));
            match self.pick(now, idx, any) {
                Some((slot, chunk, dup)) => {
                    self.stats.beyond_window += 1;
                    return Some(self.send(now, idx, slot, chunk, dup));
                }
                None if self.held_hint => self.hold(idx),
                None => self.mark_idle(idx),
            }
        }
        // Then one request to each spare uploader with nothing of ours in flight (sending or marking it idle
        // takes it out of `spare`).
        while let Some(&(_, _, idx)) = self.spare.first() {
            if let Some((slot, chunk, dup)) = self.pick(now, idx, false) {
                self.stats.beyond_window += 1;
                return Some(self.send(now, idx, slot, chunk, dup));
            }
            // A spare peer held back by local first goes idle here rather than into `held`: holding it
            // made the fleet's fastest cinemas 5% later (docs/benchmarks.md, "Does locality make a cinema
            // wait?").
            self.mark_idle(idx);
        }
        None
    }

    /// The window has room and no ready peer is left: the peers held back by local first are asked after
    /// all, best first. `starved`: asked on a slow line's starved escape, which passes over a held seeder
    /// without [`slack`](Self::slack).
    fn yield_held(&mut self, now: Time, starved: bool) -> Option<Output<P>> {
        let mut after = None;
        loop {
            let next = match after {
                None => self.held.first(),
                Some(k) => self.held.range((Bound::Excluded(k), Bound::Unbounded)).next(),
            };
            let &key = next?;
            let idx = key.2;
            if starved && !self.peers[idx as usize].as_ref().is_some_and(|p| self.slack(now, p)) {
                after = Some(key);
                continue;
            }
            match self.pick(now, idx, true) {
                Some((slot, chunk, dup)) => return Some(self.yielded(now, idx, slot, chunk, dup)),
                None => self.mark_idle(idx),
            }
        }
    }

    /// Under import stripes or on a slow line, with superseeders held, a node with requests in flight and
    /// no ready peer whose window rate was below [`SEEDER_STARVED`] of its line asks a
    /// held-back seeder with nothing of ours in flight, for anything: the border is not what keeps it below
    /// half its line, and the seeder is idle for it (module docs, "Import stripes" and "A slow line imports
    /// last").
    fn starved_seeder(&mut self, now: Time) -> Option<Output<P>> {
        if !self.seeders_held() || !self.window.starved(now, |_| SEEDER_STARVED) {
            return None;
        }
        let idle = |p: &Peer<P>| p.seeder && p.in_flight == 0 && p.writing == 0 && self.slack(now, p);
        let seeders: Vec<u32> = self
            .held
            .iter()
            .map(|k| k.2)
            .filter(|&i| self.peers[i as usize].as_ref().is_some_and(idle))
            .collect();
        for i in seeders {
            if let Some((slot, chunk, dup)) = self.pick(now, i, true) {
                return Some(self.yielded(now, i, slot, chunk, dup));
            }
        }
        None
    }

    /// A request to a held-back peer for a chunk our ISP holds.
    fn yielded(&mut self, now: Time, idx: u32, slot: u32, chunk: u32, dup: bool) -> Output<P> {
        self.stats.yielded += 1;
        self.send(now, idx, slot, chunk, dup)
    }

    /// Superseeders and the distributor are held to local first: `policy.local_first_seeders`, or this node
    /// is a slow line kept from importing (module docs, "A slow line imports last": a superseeder's byte
    /// crosses the border too); and a declared line, without which a starving cinema could not tell it
    /// starves (see "Local first, a preference").
    pub fn seeders_held(&self) -> bool {
        self.policy.local_first
            && (self.policy.local_first_seeders || self.slow_line())
            && self.window.link().is_some()
    }

    /// Whether a starved escape may ask peer `p` on a held seeder's account: a slow line (not under
    /// `policy.import_stripes`) asks a superseeder or the distributor only for its slack, while the load of
    /// its last answer is below [`SLACK_LOAD`] or that answer is older than [`SLACK_LOAD_LIFE`]
    /// (module docs, "A slow line takes a superseeder's slack").
    fn slack(&self, now: Time, p: &Peer<P>) -> bool {
        !p.seeder
            || !self.slow_line()
            || self.policy.import_stripes
            || !p.load_said
            || p.load < SLACK_LOAD
            || now >= p.load_at + SLACK_LOAD_LIFE
    }

    /// This node declared a line below `policy.import_lines` of its ISP's fastest it knows: it draws no
    /// stripe (its own line counts as 0 among the importers).
    fn slow_line(&self) -> bool {
        self.stripe_members.as_ref().is_some_and(|((_, own), _)| *own == 0)
    }

    /// The chunk to ask of peer `idx`: (content slot, chunk, is an end-game duplicate). `any`: without
    /// local first's filter. Sets `held_hint` when only that filter kept a chunk back.
    fn pick(&mut self, now: Time, idx: u32, any: bool) -> Option<(u32, u32, bool)> {
        self.held_hint = false;
        let p = self.peers[idx as usize].as_ref()?;
        for &slot in &self.order {
            let Some(c) = self.contents[slot as usize].as_ref() else { continue };
            let (Some(r), Some(bits)) = (c.rarity.as_ref(), p.bits(slot)) else { continue };
            let exempt = p.seeder && !self.seeders_held();
            let pick = if self.policy.local_first && !p.same_isp && !exempt && !any {
                let pick = r.pick(&bits.and(&c.gaps).and(&c.stripe), &mut self.rng);
                if pick.is_none() && r.pick(bits, &mut self.rng).is_some() {
                    self.held_hint = true;
                }
                pick
            } else {
                r.pick(bits, &mut self.rng)
            };
            if let Some(chunk) = pick {
                return Some((slot, chunk, false));
            }
            if c.endgame {
                // A seeder may add one more copy than a cinema: a last chunk asked of slow cinemas is
                // then fetched from the source provisioned to serve it.
                let cap = ENDGAME_PEERS_PER_CHUNK + usize::from(p.seeder);
                let take = |i: u32| {
                    chunk_time(self.peers[i as usize].as_ref().and_then(|p| p.ewma), self.chunk_bytes)
                };
                let copy = EndgameCopy { now, mine: idx, takes: take(idx), cap };
                let (pick, later) = pick_duplicate(&self.requests, slot, bits, &copy, take, &mut self.rng);
                if let Some(t) = later {
                    self.endgame_recheck = Some(self.endgame_recheck.map_or(t, |r| r.min(t)));
                }
                if let Some(chunk) = pick {
                    return Some((slot, chunk, true));
                }
            }
        }
        None
    }

    fn send(&mut self, now: Time, idx: u32, slot: u32, chunk: u32, dup: bool) -> Output<P> {
        let seq = self.next_req_seq;
        self.next_req_seq += 1;
        let key = (slot, chunk, idx);
        let deadline = now + self.stall_after(idx);
        let (depth, base) =
            self.peers[idx as usize].as_ref().map_or((1, 1), |p| (p.in_flight + 1, self.base_cap(p)));
        if depth > base {
            self.stats.pipelined += 1;
        }
        self.requests.insert(key, Req { sent: now, seq, deadline });
        self.deadlines.insert((deadline, seq), key);
        self.stats.requests += 1;
        if dup {
            self.stats.endgame_requests += 1;
        }
        let (peer, content) = match (self.peers[idx as usize].as_mut(), self.contents[slot as usize].as_mut())
        {
            (Some(p), Some(c)) => {
                p.in_flight += 1;
                c.in_flight += 1;
                if let Some(r) = c.rarity.as_mut() {
                    r.remove(chunk);
                }
                (p.key.clone(), c.id)
            }
            // Unreachable: `pick` only returns live slots and peers.
            _ => unreachable_pick(),
        };
        self.refresh(idx);
        self.update_endgame(slot);
        self.pace_requests(now, idx);
        Output::Request { peer, content, chunk }
    }

    /// A peer whose round trip holds more requests than its load allows is asked one chunk per chunk's
    /// time at its pace, not in a burst: answers sent at once share its link and arrive together, so the
    /// next requests would leave together and its link would idle for every round trip (module docs, "Far
    /// peers").
    fn pace_requests(&mut self, now: Time, idx: u32) {
        let Some(p) = self.peers[idx as usize].as_ref() else { return };
        if round_trip_chunks(p, self.chunk_bytes) < self.base_cap(p) {
            return;
        }
        let Some(pace) = p.pace.rate().filter(|&x| x > 0.0) else { return };
        let gap = std::time::Duration::from_secs_f64(self.chunk_bytes as f64 / pace);
        self.block(idx, now + gap);
    }

    /// How long a request to peer `idx` may go unanswered before it counts as stalled: [`STALL_FACTOR`]
    /// times the time a chunk from that peer has been taking (its measured throughput and the last chunk's
    /// size), at least [`STALL_MIN`], at most `transfer.request_timeout`. A peer not measured yet gets the
    /// timeout alone: a slow uploader's first chunk is never cut short.
    fn stall_after(&self, idx: u32) -> std::time::Duration {
        let timeout = self.transfer.request_timeout;
        let own = self.peers[idx as usize].as_ref().and_then(|p| p.ewma).filter(|&e| e > 0.0);
        let Some(rate) = own else { return timeout };
        let secs = STALL_FACTOR * self.chunk_bytes as f64 / rate;
        std::time::Duration::from_secs_f64(secs.min(timeout.as_secs_f64())).max(STALL_MIN).min(timeout)
    }

    /// Forgets a request (answered, failed, cancelled or expired); does not re-queue the chunk.
    fn remove_request(&mut self, key: ReqKey) -> Option<Req> {
        let req = self.requests.remove(&key)?;
        self.deadlines.remove(&(req.deadline, req.seq));
        if let Some(c) = self.contents[key.0 as usize].as_mut() {
            c.in_flight -= 1;
        }
        let endgame = self.contents[key.0 as usize].as_ref().is_some_and(|c| c.endgame);
        if let Some(p) = self.peers[key.2 as usize].as_mut() {
            p.in_flight -= 1;
        }
        self.refresh(key.2);
        if endgame {
            // A duplicate slot opened for this chunk: peers idle for want of one may now take it.
            self.wake_all();
        }
        Some(req)
    }

    /// A request for `chunk` ended without it: make it a candidate again if nobody else is fetching it.
    fn requeue(&mut self, slot: u32, chunk: u32) {
        if self.requests.range((slot, chunk, 0)..=(slot, chunk, u32::MAX)).next().is_some()
            || self.writing.contains_key(&(slot, chunk))
        {
            return;
        }
        let Some(c) = self.contents.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        let Some(r) = c.rarity.as_mut() else { return };
        if c.have.get(chunk) || r.is_candidate(chunk) {
            return;
        }
        r.insert(chunk);
        let holders: Vec<u32> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                (p.idle && p.bits(slot).is_some_and(|b| b.get(chunk))).then_some(i as u32)
            })
            .collect();
        for i in holders {
            self.wake(i);
        }
        self.update_endgame(slot);
    }

    fn update_endgame(&mut self, slot: u32) {
        let Some(c) = self.contents[slot as usize].as_mut() else { return };
        let now_endgame = c.rarity.as_ref().is_some_and(|r| r.candidates() == 0)
            && c.missing() > 0
            && c.missing() <= self.transfer.endgame_chunks;
        if now_endgame != c.endgame {
            c.endgame = now_endgame;
            if now_endgame {
                self.wake_all();
            }
        }
    }

    /// Peer `idx` holds nothing we can ask for now: it leaves the ready set until [`wake`](Self::wake)
    /// (a have, a bitfield, an end-game slot freed).
    fn mark_idle(&mut self, idx: u32) {
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.idle = true;
            p.held = false;
        }
        self.refresh(idx);
    }

    /// Peer `idx` holds chunks we lack but local first keeps them for our ISP: idle, and asked only past
    /// `policy.local_margin` or by [`yield_held`](Self::yield_held).
    fn hold(&mut self, idx: u32) {
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.idle = true;
            p.held = true;
        }
        self.refresh(idx);
    }

    fn wake(&mut self, idx: u32) {
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.idle = false;
            p.held = false;
        }
        self.refresh(idx);
    }

    fn wake_all(&mut self) {
        for i in 0..self.peers.len() as u32 {
            if self.peers[i as usize].as_ref().is_some_and(|p| p.idle) {
                self.wake(i);
            }
        }
    }

    /// Requests a peer's load allows in flight: one at a spare uploader, `max_requests_per_peer` at a
    /// contended one. A lone peer keeps its second request: with no one else to ask, the second keeps its
    /// link busy across the request round trip (two daemons on loopback: 204-216 MB/s with one, 290-309
    /// with two).
    fn base_cap(&self, p: &Peer<P>) -> u32 {
        let spare = self.transfer.spare_load > p.load;
        let lone = self.peer_index.len() <= 1;
        if (spare || self.alike) && !lone {
            1
        } else {
            self.transfer.max_requests_per_peer
        }
    }

    /// Re-files a peer in the ready set after any change of its state.
    fn refresh(&mut self, idx: u32) {
        let Some(p) = self.peers.get_mut(idx as usize).and_then(Option::as_mut) else { return };
        if let Some(k) = p.ready_key.take() {
            self.ready.remove(&k);
            self.spare.remove(&k);
            self.held.remove(&k);
        }
        let Some(p) = self.peers[idx as usize].as_ref() else { return };
        // A peer whose slots are not contended shares its link among its askers' connections: a second
        // request of ours there would only slow the first (see the module docs, "Spare uploaders"), unless
        // its round trip holds a good part of a chunk at its pace.
        let spare = self.transfer.spare_load > p.load;
        let base = self.base_cap(p);
        let cap = base.max(1 + round_trip_chunks(p, self.chunk_bytes));
        let cap = cap.min(self.transfer.max_requests_total.max(1));
        if p.in_flight >= cap || p.blocked || (p.idle && !p.held) {
            return;
        }
        let throughput = match p.ewma {
            Some(e) if self.tp_ref > 0.0 => (e / self.tp_ref).min(1.0),
            // A held-back peer never measured is not preferred to our ISP's peers on hope alone.
            None if p.held => 0.0,
            _ => UNMEASURED_THROUGHPUT,
        };
        let inputs = ScoreInputs { same_site: p.same_site, same_isp: p.same_isp, load: p.load, throughput };
        // A peer's link is shared among the requests it serves: a second request of ours to the same peer
        // adds less than a first one to another, so the score is shared by the requests already in flight.
        let s = policy::score(&self.policy, &inputs).max(0.0) / f64::from(1 + p.in_flight);
        let (idle, spare_now) =
            (p.idle, spare && p.load_said && p.in_flight == 0 && p.writing == 0 && !p.seeder);
        let key = (Reverse(s.to_bits()), self.rng.gen::<u64>(), idx);
        if let Some(p) = self.peers[idx as usize].as_mut() {
            p.ready_key = Some(key);
        }
        if idle {
            self.held.insert(key);
            return;
        }
        self.ready.insert(key);
        if spare_now {
            self.spare.insert(key);
        }
    }

    /// Progress of a content being fetched.
    pub fn progress(&self, content: &ContentId) -> Option<Progress> {
        let slot = *self.content_index.get(content)?;
        let c = self.contents[slot as usize].as_ref()?;
        Some(Progress { have: c.have.count(), total: c.have.len(), in_flight: c.in_flight })
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connected peers.
    pub fn peers(&self) -> usize {
        self.peer_index.len()
    }

    /// The request window: requests in flight allowed now.
    pub fn window(&self) -> u32 {
        self.window_size()
    }

    /// Requests in flight, all peers and contents.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Chunks that arrived and are being verified and written ([`chunk_arrived`](Self::chunk_arrived)).
    pub fn writing(&self) -> usize {
        self.writing.len()
    }

    /// Requests in flight to `peer` (0 if unknown).
    pub fn peer_in_flight(&self, peer: &P) -> u32 {
        self.peer_index.get(peer).and_then(|&i| self.peers[i as usize].as_ref()).map_or(0, |p| p.in_flight)
    }

    /// The throughput `peer` is ranked by (bytes/s, decayed; `None` until a chunk of it was measured).
    pub fn peer_throughput(&self, peer: &P) -> Option<f64> {
        self.peer_index.get(peer).and_then(|&i| self.peers[i as usize].as_ref()).and_then(|p| p.ewma)
    }

    /// Whether `content` is in end-game (every missing chunk requested, few left).
    pub fn is_endgame(&self, content: &ContentId) -> bool {
        self.content_index
            .get(content)
            .and_then(|&s| self.contents[s as usize].as_ref())
            .is_some_and(|c| c.endgame)
    }

    /// Whether `peer` is backing off (busy) or banned (corrupt) at the moment.
    pub fn is_blocked(&self, peer: &P) -> bool {
        self.peer_index.get(peer).and_then(|&i| self.peers[i as usize].as_ref()).is_some_and(|p| p.blocked)
    }

    /// Contents being fetched or held, in priority order (earliest deadline first).
    pub fn contents(&self) -> Vec<ContentId> {
        self.order.iter().filter_map(|&s| self.contents[s as usize].as_ref().map(|c| c.id)).collect()
    }
}

/// Same-ISP holders per chunk: one byte each, the rare count above 254 kept exactly beside (a node with that
/// many same-ISP peers), so a departed holder always reopens the gap it leaves.
#[derive(Debug, Clone)]
struct LocalCounts {
    n: Vec<u8>,
    /// Holders beyond 255, by chunk.
    over: BTreeMap<u32, u32>,
}

impl LocalCounts {
    fn new(chunks: u32) -> Self {
        Self { n: vec![0; chunks as usize], over: BTreeMap::new() }
    }

    /// One more same-ISP holder of `chunk`: it is no longer a gap.
    fn inc(&mut self, gaps: &mut Bitfield, chunk: u32) {
        let Some(n) = self.n.get_mut(chunk as usize) else { return };
        if *n == u8::MAX {
            *self.over.entry(chunk).or_default() += 1;
        } else {
            *n += 1;
        }
        gaps.clear(chunk);
    }

    /// One same-ISP holder fewer; true when `chunk` became a gap.
    fn dec(&mut self, gaps: &mut Bitfield, chunk: u32) -> bool {
        let Some(n) = self.n.get_mut(chunk as usize) else { return false };
        if let Some(extra) = self.over.get_mut(&chunk) {
            *extra -= 1;
            if *extra == 0 {
                self.over.remove(&chunk);
            }
            return false;
        }
        if *n == 0 {
            return false;
        }
        *n -= 1;
        *n == 0 && gaps.set(chunk)
    }
}

#[cfg(test)]
mod local_counts {
    use super::*;

    #[test]
    fn counts_past_255_stay_exact_and_the_last_departure_reopens_the_gap() {
        let mut gaps = Bitfield::full(4);
        let mut l = LocalCounts::new(4);
        for _ in 0..300 {
            l.inc(&mut gaps, 2);
        }
        assert!(!gaps.get(2));
        for left in (1..300).rev() {
            assert!(!l.dec(&mut gaps, 2), "a gap with {left} holders left");
        }
        assert!(l.dec(&mut gaps, 2), "the last holder gone: a gap again");
        assert!(gaps.get(2));
        assert!(!l.dec(&mut gaps, 2), "no holder to lose");
        assert!(l.over.is_empty());
    }
}

fn clamp_load(load: f32) -> f64 {
    if load.is_nan() {
        1.0
    } else {
        f64::from(load).clamp(0.0, 1.0)
    }
}

#[cold]
fn unreachable_pick() -> ! {
    unreachable!("scheduler picked a request for a peer or content that is gone")
}

/// How long a chunk of `bytes` takes from a peer whose requests have been taking `ewma` bytes/s; `None`
/// when not measured yet.
fn chunk_time(ewma: Option<f64>, bytes: u64) -> Option<std::time::Duration> {
    let rate = ewma.filter(|&e| e > 0.0)?;
    (bytes > 0).then(|| std::time::Duration::from_secs_f64((bytes as f64 / rate).min(1e6)))
}

/// The peer an end-game copy would be asked of.
struct EndgameCopy {
    now: Time,
    /// Its index.
    mine: u32,
    /// How long a chunk takes from it (`None`: not measured).
    takes: Option<std::time::Duration>,
    /// Requests per chunk at most, its own included.
    cap: usize,
}

/// End-game: an in-flight chunk of `slot` that the peer of `copy` holds and was not asked for, asked of
/// fewer than `copy.cap` peers, and that the copy would bring within [`ENDGAME_SOONER`] of the time the
/// requests in flight still need (each sent at `sent`, due `takes(peer)` later) or whose every request is
/// late (waited [`ENDGAME_LATE`] times that): a copy that would come later only spends an uploader's link,
/// as request-response cannot take a chunk's bytes back once they are on the way (the real lab-16 received
/// 2.1-2.55% of its bytes twice). Fewest
/// requests first, ties at random. A peer not measured yet, or a request to one, holds no copy back. Also
/// returns, when copies were held back and none taken, the earliest time one of them turns late.
fn pick_duplicate(
    requests: &BTreeMap<ReqKey, Req>,
    slot: u32,
    bits: &Bitfield,
    copy: &EndgameCopy,
    takes: impl Fn(u32) -> Option<std::time::Duration>,
    rng: &mut ChaCha8Rng,
) -> (Option<u32>, Option<Time>) {
    // Per chunk in flight: its requests, whether one is this peer's, when the first is due and when the
    // last turns late (`None`: one of them cannot be estimated).
    struct InFlight {
        chunk: u32,
        count: usize,
        mine: bool,
        due: Option<(Time, Time)>,
    }
    let mut best: Option<(usize, u32)> = None;
    let mut later: Option<Time> = None;
    let mut ties = 0u32;
    let mut consider = |f: &InFlight, best: &mut Option<(usize, u32)>| {
        if f.mine || f.count >= copy.cap || !bits.get(f.chunk) {
            return;
        }
        if let (Some((due, late)), Some(takes)) = (f.due, copy.takes) {
            let left = due.saturating_since(copy.now);
            if takes.as_secs_f64() >= ENDGAME_SOONER * left.as_secs_f64() && copy.now < late {
                later = Some(later.map_or(late, |l: Time| l.min(late)));
                return;
            }
        }
        match *best {
            Some((b, _)) if f.count > b => {}
            Some((b, _)) if f.count == b => {
                ties += 1;
                if rng.gen_range(0..ties) == 0 {
                    *best = Some((f.count, f.chunk));
                }
            }
            _ => {
                *best = Some((f.count, f.chunk));
                ties = 1;
            }
        }
    };
    let mut cur: Option<InFlight> = None;
    for (&(_, chunk, peer), req) in requests.range((slot, 0, 0)..=(slot, u32::MAX, u32::MAX)) {
        let due = takes(peer).map(|t| (req.sent + t, req.sent + t.mul_f64(ENDGAME_LATE)));
        match cur.as_mut() {
            Some(f) if f.chunk == chunk => {
                f.count += 1;
                f.mine |= peer == copy.mine;
                f.due = match (f.due, due) {
                    (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                    _ => None,
                };
            }
            _ => {
                if let Some(f) = cur.take() {
                    consider(&f, &mut best);
                }
                cur = Some(InFlight { chunk, count: 1, mine: peer == copy.mine, due });
            }
        }
    }
    if let Some(f) = cur {
        consider(&f, &mut best);
    }
    let later = if best.is_some() { None } else { later };
    (best.map(|(_, c)| c), later)
}

#[cfg(test)]
mod tests;
