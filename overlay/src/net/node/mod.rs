//! The node's event loop: an I/O shell around the sans-io [`Engine`].
//!
//! ```text
//!  Client ──commands──▶ ┌──────────── Node (one tokio task) ──────────────┐
//!                       │ swarm events ─▶ engine inputs    (swarm.rs,      │
//!  libp2p swarm ◀──────▶│                                   transfer.rs)   │
//!                       │ engine outputs ─▶ requests, answers, DHT, disk   │
//!  blocking pool ◀─────▶│ disk jobs: verify+write+fsync+mark, reads,       │
//!                       │   installs, removals, manifests  (disk.rs)       │
//!                       │ catalogue, gossip, anti-entropy  (catalogue.rs)  │
//!                       │ status views and commands        (status.rs)     │
//!                       └──────────────────────────────────────────────────┘
//! ```
//!
//! The node decides nothing about peers, requests, uploads or fetches: it feeds the engine what happened
//! and carries out what the engine says. Disk work runs on tokio's blocking pool and comes back as
//! [`Done`] messages, so a slow disk never stalls the swarm; how many such jobs exist at once is bounded
//! by the engine (requests in flight, upload slots).
//!
//! One concept per file: `swarm.rs` (connections, DHT, housekeeping tick), `transfer.rs` (the engine's
//! inputs and outputs, the chunk protocol), `disk.rs` (blocking-pool jobs), `catalogue.rs` (signed
//! entries, gossip, anti-entropy, fleet reports), `status.rs` (commands and views), `nat.rs` (connection
//! kinds, relay reservations, reachability).

mod catalogue;
mod disk;
mod nat;
mod status;
mod swarm;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::request_response::{InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::{gossipsub, kad::RecordKey, multiaddr::Protocol, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use super::behaviour::{build_swarm, Behaviour, CATALOGUE_TOPIC};
use super::client::Command;
use super::fleet::{self, Fleet};
use super::metrics::Metrics;
use super::protocol::{ChunkSource, NodeInfo, Response};
use super::{Client, Config, NetError};
use crate::catalogue::{Catalogue, Rejection, SignedEntry};
use crate::content::Manifest;
use crate::core::engine::{self, Engine, Held, UploadId};
use crate::core::Locality;
use crate::store::{Store, StoreError};
use crate::{ContentId, Time};

pub use disk::Done;

/// Capacity of the command channel from clients.
const COMMAND_QUEUE: usize = 64;
/// Capacity of the channel of finished disk jobs.
const DONE_QUEUE: usize = 1024;
/// Capacity of the event broadcast (slow subscribers lose the oldest events).
const EVENT_QUEUE: usize = 256;
/// How often the housekeeping tick runs.
const TICK: Duration = Duration::from_millis(250);
/// Bootstrap redial back-off bounds.
const BOOTSTRAP_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// How long an entry that found no subscribed peer is offered to gossip again.
const REPUBLISH_FOR: Duration = Duration::from_secs(120);
/// Most entries waiting to be gossiped again.
const REPUBLISH_QUEUE: usize = 64;

/// Something worth telling the embedding program (hooks, progress displays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A content is complete and verified on this node.
    Complete {
        /// The content.
        content: ContentId,
        /// Its title.
        title: String,
        /// Where its files are.
        path: Option<PathBuf>,
    },
    /// A content was withdrawn and removed.
    Withdrawn {
        /// The content.
        content: ContentId,
    },
}

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Hello,
    Manifest(ContentId),
    Bitfield(ContentId),
    Chunk(ContentId, u32),
    Have,
    Cancel,
    Sync,
}

/// What the shell keeps per connected peer (for status and metrics; decisions live in the engine).
#[derive(Debug, Default)]
struct Peer {
    info: Option<NodeInfo>,
    bytes_up: u64,
    bytes_down: u64,
    address: Option<Multiaddr>,
}

/// Inbound chunk requests the engine has not answered yet: the response channel, and the bytes read for
/// it while it waits for its upload grant. Bounded by the engine's upload slots (plus busy answers given
/// at once).
#[derive(Debug, Default)]
struct Uploads {
    next: UploadId,
    channels: HashMap<UploadId, ResponseChannel<Response>>,
    /// Chunks opened for uploads waiting for the upload limit.
    sources: HashMap<UploadId, ChunkSource>,
    /// Each chunk request being answered: its upload and the connection it came over.
    by_request: HashMap<InboundRequestId, (UploadId, ConnectionId)>,
}

/// The event loop. Create it with [`Node::start`].
pub struct Node {
    cfg: Config,
    me: PeerId,
    swarm: Swarm<Behaviour>,
    store: Arc<Store>,
    catalogue: Catalogue,
    engine: Engine<PeerId>,
    metrics: Metrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    started: Instant,
    rng: rand::rngs::StdRng,
    commands: mpsc::Receiver<Command>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    events: broadcast::Sender<Event>,
    peers: BTreeMap<PeerId, Peer>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    uploads: Uploads,
    /// Manifests checked good, waiting for the engine's `Install` (at most one per fetch).
    manifests: HashMap<ContentId, Manifest>,
    /// Inbound manifest reads in progress (bounded per peer and in all).
    manifest_reads: super::inbound::Limit<PeerId>,
    /// Bytes of manifest and sync answers handed to libp2p and not yet sent (bounded per peer and in all).
    answer_bytes: super::inbound::Buffered<PeerId, InboundRequestId>,
    /// The pace chunk answers' bytes keep to, the engine's ([`crate::net::protocol::UploadPace`]).
    upload_pace: std::sync::Arc<super::protocol::UploadPace>,
    /// The engine's found uplink, as last logged.
    found_uplink: Option<f64>,
    /// The engine's yield to faster lines, as last logged.
    yielding: bool,
    /// Cached encodings of manifest and sync answers.
    answers: super::answers::Answers,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<(Multiaddr, Option<PeerId>, Instant, Duration)>,
    last_sync: Instant,
    republish: std::collections::VecDeque<(Vec<u8>, Instant)>,
    fleet: Fleet,
    // Fleet reports: when to send, rates over a window, bytes per sender ISP, hook result.
    report_pacer: super::pacer::Pacer,
    report_rates: super::rates::Rates,
    traffic: fleet::Traffic,
    hook_result: Option<String>,
    last_kad_bootstrap: Option<Instant>,
    last_rate: (Instant, u64, u64),
    bytes_total: (u64, u64),
    /// NAT traversal: connection kinds, relay reservations, reachability (`nat.rs`).
    nat: nat::Nat,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.me).finish_non_exhaustive()
    }
}

/// A running node: its handle, its event stream and its task.
#[derive(Debug)]
pub struct Running {
    /// The handle.
    pub client: Client,
    /// Events (completions, withdrawals).
    pub events: broadcast::Receiver<Event>,
    /// The event loop's task; ends after [`Client::shutdown`].
    pub task: tokio::task::JoinHandle<Result<(), NetError>>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn rejection_label(r: &Rejection) -> &'static str {
    match r {
        Rejection::Malformed { .. } => "malformed",
        Rejection::TooLarge { .. } => "too_large",
        Rejection::Invalid { .. } => "invalid",
        Rejection::UntrustedKey { .. } => "untrusted_key",
        Rejection::BadSignature { .. } => "bad_signature",
        Rejection::Duplicate { .. } => "duplicate",
        Rejection::Equivocation { .. } => "equivocation",
        Rejection::TooFarAhead { .. } => "too_far_ahead",
        Rejection::TimeWentBackwards { .. } => "time_went_backwards",
        Rejection::LogFull { .. } => "log_full",
        Rejection::FromTheFuture { .. } => "from_the_future",
    }
}

fn provider_key(content: &ContentId) -> RecordKey {
    RecordKey::new(&content.0)
}

impl Node {
    /// Opens the store, restores the catalogue, builds the swarm, starts listening and spawns the event
    /// loop on the current tokio runtime. Metrics are registered into `registry`.
    pub async fn start(cfg: Config, registry: &mut Registry) -> Result<Running, NetError> {
        let data_dir = cfg.data_dir.clone();
        let reserve = cfg.reserve;
        let store = tokio::task::spawn_blocking(move || {
            let mut s = Store::open(&data_dir)?;
            s.set_reserve(reserve);
            Ok::<_, StoreError>(s)
        })
        .await
        .map_err(|e| NetError::Setup(format!("store task: {e}")))??;
        let store = Arc::new(store);

        let mut restored = Vec::new();
        for bytes in store.catalogue_entries()? {
            match SignedEntry::decode(&bytes) {
                Ok(e) => restored.push(e),
                Err(e) => warn!("stored catalogue entry unreadable, skipped: {e}"),
            }
        }
        let (catalogue, dropped) = Catalogue::restore(cfg.trusted.iter().copied(), restored);
        for r in dropped {
            debug!("stored catalogue entry not re-applied: {r}");
        }

        let metrics = Metrics::register(registry);
        let codec = super::protocol::Codec::counting(metrics.malformed_messages.clone());
        let mut swarm = build_swarm(&cfg, registry, codec)?;
        let libp2p_metrics = libp2p::metrics::Metrics::new(registry);
        let nat_metrics = super::nat::metrics::NatMetrics::register(registry);

        for topic in [CATALOGUE_TOPIC, fleet::FLEET_TOPIC] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&gossipsub::IdentTopic::new(topic))
                .map_err(|e| NetError::Setup(format!("subscribe: {e}")))?;
        }
        for addr in &Node::nat_listen_addresses(&cfg) {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        }

        let me = *swarm.local_peer_id();
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (done_tx, done_rx) = mpsc::channel(DONE_QUEUE);
        let (events, events_rx) = broadcast::channel(EVENT_QUEUE);
        let now = Instant::now();
        let bootstrap = cfg
            .bootstrap
            .iter()
            .map(|a| {
                let peer = a.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                });
                (a.clone(), peer, now, BOOTSTRAP_BACKOFF.0)
            })
            .collect();
        let seed = u64::from_le_bytes(me.to_bytes()[2..10].try_into().unwrap_or([0; 8]));
        let mut engine_cfg = engine::Config::new(cfg.role, cfg.transfer.clone(), cfg.policy.clone());
        engine_cfg.capacity = cfg.capacity;
        engine_cfg.max_peers = cfg.max_connections;
        engine_cfg.seed = seed;
        engine_cfg.relay_budget = cfg.nat.relay_film_budget.0;
        let mut node = Node {
            engine: Engine::new(engine_cfg.clone()),
            me,
            swarm,
            store,
            catalogue,
            metrics,
            libp2p_metrics,
            started: now,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            commands,
            done_tx,
            done_rx,
            events,
            peers: BTreeMap::new(),
            pending: HashMap::new(),
            uploads: Uploads::default(),
            manifests: HashMap::new(),
            manifest_reads: Default::default(),
            answer_bytes: super::inbound::Buffered::new(cfg.inbound_bytes),
            upload_pace: Default::default(),
            found_uplink: None,
            yielding: false,
            answers: Default::default(),
            listen: Vec::new(),
            bootstrap,
            last_sync: now,
            republish: std::collections::VecDeque::new(),
            fleet: Fleet::default(),
            report_pacer: Default::default(),
            report_rates: Default::default(),
            traffic: Default::default(),
            hook_result: None,
            last_kad_bootstrap: None,
            last_rate: (now, 0, 0),
            bytes_total: (0, 0),
            nat: nat::Nat::new(nat_metrics),
            cfg,
        };
        // Our locality comes from the catalogue (our Admit entry) once it is restored.
        engine_cfg.locality = node.own_locality();
        node.engine = Engine::new(engine_cfg);
        node.engine.identify(&me);
        if node.cfg.record_engine {
            node.engine.record_kinds();
        }
        node.apply_limits();
        node.nat_start();
        node.update_gate();
        node.resume()?;
        node.drive();
        let client = Client::new(tx, me);
        let task = tokio::spawn(node.run());
        Ok(Running { client, events: events_rx, task })
    }

    fn now(&self) -> Time {
        Time::from_duration(self.started.elapsed())
    }

    /// Our locality: the signed Admit entry when there is one, else what the config says.
    fn own_locality(&self) -> Locality {
        self.locality_of(&self.me, self.cfg.isp.clone(), self.cfg.site.clone())
    }

    fn locality_of(&self, peer: &PeerId, isp: Option<String>, site: Option<String>) -> Locality {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match self.catalogue.member(&peer.to_string()) {
            Some(m) => Locality { isp: non_empty(&m.isp), site: non_empty(&m.site) },
            None if self.cfg.private => Locality::default(),
            None => Locality { isp, site },
        }
    }

    /// In a private mesh, whether `peer` may receive catalogue and content from us.
    fn allowed(&self, peer: &PeerId) -> bool {
        !self.cfg.private || self.catalogue.is_admitted(&peer.to_string())
    }

    /// Whether a peer is revoked (in any mesh): it gets nothing from us.
    fn revoked(&self, peer: &PeerId) -> bool {
        self.catalogue.is_revoked(&peer.to_string())
    }

    /// On start: the engine learns what is held (and provides it), fetches what is targeted and missing;
    /// what was withdrawn meanwhile is removed.
    fn resume(&mut self) -> Result<(), NetError> {
        let now = self.now();
        let managed = self.store.data_dir().join("content");
        for content in self.store.contents()? {
            if self.catalogue.withdrawn(&content) {
                self.engine.withdraw(now, &content);
                continue;
            }
            // Content outside the data directory was published from where it lies: never evicted.
            let pinned = self.store.content_path(&content)?.is_some_and(|p| !p.starts_with(&managed));
            if let Some(have) = self.store.bitfield(&content)? {
                let size = self.catalogue.film(&content).map_or(0, |f| f.publish.size);
                self.engine.hold(now, content, Held { have, size, pinned });
            }
        }
        self.offer_all();
        self.refresh_gauges();
        Ok(())
    }

    async fn run(mut self) -> Result<(), NetError> {
        info!(peer_id = %self.me, role = %self.cfg.role, "node started");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.engine.poll_timeout().map(|t| t.saturating_since(self.now())).unwrap_or(TICK);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(c) => self.on_command(c),
                },
                Some(done) = self.done_rx.recv() => self.on_done(done),
                _ = tick.tick() => self.on_tick(),
                _ = tokio::time::sleep(wake) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
            }
            self.drive();
        }
        info!(peer_id = %self.me, "node stopping");
        // Let disk jobs in flight finish so their chunks are marked (or not) before we return.
        drop(self.done_tx);
        while let Some(done) = self.done_rx.recv().await {
            if let Done::Written { content, index, result: Ok(()), .. } = done {
                debug!(content = %content.short(), index, "chunk stored during shutdown");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    /// Every node draws the import stripes (`policy.import_stripes`) from `key_hash` of its peers' ids and
    /// its own, so the hash of a peer id must be the same on every node: pinned here, so a libp2p release
    /// that hashes a `PeerId` otherwise shows before nodes of two builds draw different stripes (they would
    /// import some chunks twice; none would wait).
    #[test]
    fn a_peer_ids_stripe_hash_is_the_same_on_every_node() {
        let id = Keypair::ed25519_from_bytes([7; 32]).unwrap().public().to_peer_id();
        assert_eq!(crate::core::scheduler::key_hash(&id), 16_874_641_927_047_084_085);
    }
}
