//! The node's event loop: the swarm, the store, the catalogue and the sans-io core, in one task.
//!
//! ```text
//!  Client ──commands──▶ ┌──────────── Node (one tokio task) ─────────────┐
//!                       │ swarm events ─▶ core inputs (Scheduler,       │
//!  libp2p swarm ◀──────▶│                  UploadSlots, Catalogue)       │
//!                       │ core outputs ─▶ requests, responses, gossip    │
//!  blocking pool ◀─────▶│ store reads/writes (verify, write, fsync,mark) │
//!                       └────────────────────────────────────────────────┘
//! ```
//!
//! Disk work (chunk verification and writes with fsync, chunk reads, manifest installation) runs on tokio's
//! blocking pool and comes back as [`Done`] messages, so the swarm is never stalled by a slow disk. How
//! many such jobs exist at once is bounded by the scheduler's requests in flight and the upload slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::kad::{self, GetProvidersOk, QueryResult, RecordKey};
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, mdns, multiaddr::Protocol, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use rand::seq::IteratorRandom;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::behaviour::{build_swarm, Behaviour, BehaviourEvent, CATALOGUE_TOPIC};
use super::client::{Command, FilmStatus, Head, PeerStatus, Status, VerifyStatus};
use super::fleet::{self, Fleet};
use super::metrics::{self, Metrics};
use super::protocol::{NodeInfo, Request, Response, MAX_HAVE_CHUNKS, MAX_SYNC_ENTRIES, MAX_SYNC_HEADS};
use super::{Client, Config, Fault, NetError, Role};
use crate::catalogue::{Body, Catalogue, DistributorKey, Publish, Rejection, SignedEntry};
use crate::content::Manifest;
use crate::core::schedule::Limits;
use crate::core::{
    schedule, Bitfield, ContentSpec, Failure, Locality, Output, Scheduler, TokenBucket, UploadDecision,
    UploadSlots,
};
use crate::store::{ContentRoot, Have, Store, StoreError};
use crate::{ContentId, Time};

/// Capacity of the command channel from clients.
const COMMAND_QUEUE: usize = 64;
/// Capacity of the channel of finished disk jobs.
const DONE_QUEUE: usize = 1024;
/// Capacity of the event broadcast (slow subscribers lose the oldest events).
const EVENT_QUEUE: usize = 256;
/// How often the housekeeping tick runs.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two provider lookups of one content.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(10);
/// Bootstrap redial back-off bounds.
const BOOTSTRAP_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// How long an entry that found no subscribed peer is offered to gossip again.
const REPUBLISH_FOR: Duration = Duration::from_secs(120);
/// Most entries waiting to be gossiped again.
const REPUBLISH_QUEUE: usize = 64;
/// How long a content refused for lack of space waits before it is tried again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// Most pending have-updates per content before a flush is forced.
const HAVE_FLUSH: usize = 256;

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

/// A disk job finished on the blocking pool.
#[derive(Debug)]
enum Done {
    Written {
        peer: PeerId,
        content: ContentId,
        index: u32,
        len: u64,
        result: Result<(), StoreError>,
    },
    Read {
        peer: PeerId,
        content: ContentId,
        channel: ResponseChannel<Response>,
        result: Result<Vec<u8>, StoreError>,
    },
    Installed {
        content: ContentId,
        result: Result<Bitfield, StoreError>,
    },
    Verified {
        results: Vec<(ContentId, Result<Bitfield, StoreError>)>,
        reply: oneshot::Sender<Result<Vec<VerifyStatus>, String>>,
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
    Sync,
}

#[derive(Debug, Default)]
struct Peer {
    info: Option<NodeInfo>,
    joined: bool,
    load: f32,
    bytes_up: u64,
    bytes_down: u64,
    address: Option<Multiaddr>,
}

/// Where a content stands on this node.
#[derive(Debug)]
enum Fetch {
    /// Targeted, manifest not yet obtained.
    Waiting { asking: Option<PeerId>, asked: BTreeSet<PeerId> },
    /// Manifest being installed on disk.
    Installing,
    /// In the scheduler.
    Active,
    /// Could not be stored (e.g. no space); tried again after [`REFUSED_RETRY`].
    Refused(String, Instant),
}

#[derive(Debug, Clone, Copy)]
struct Held {
    have: u32,
    total: u32,
}

/// The event loop. Create it with [`Node::start`].
pub struct Node {
    cfg: Config,
    me: PeerId,
    swarm: Swarm<Behaviour>,
    store: Arc<Store>,
    catalogue: Catalogue,
    scheduler: Scheduler<PeerId>,
    uploads: UploadSlots<PeerId>,
    up_limit: Arc<Mutex<Option<TokenBucket>>>,
    down_limit: Option<TokenBucket>,
    limits: Limits,
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
    uploading: HashMap<InboundRequestId, PeerId>,
    fetches: BTreeMap<ContentId, Fetch>,
    held: BTreeMap<ContentId, Held>,
    /// Contents this node published from where they lie (never evicted, not counted in the capacity).
    published: BTreeSet<ContentId>,
    have_subscribers: BTreeMap<ContentId, BTreeSet<PeerId>>,
    have_outbox: BTreeMap<ContentId, Vec<u32>>,
    lookups: BTreeMap<ContentId, Instant>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<(Multiaddr, Option<PeerId>, Instant, Duration)>,
    last_sync: Instant,
    republish: std::collections::VecDeque<(Vec<u8>, Instant)>,
    /// When the download limit lets [`drive`](Self::drive) ask the core for more requests.
    next_drive: Option<Instant>,
    fleet: Fleet,
    last_report: Option<Instant>,
    report_prev: BTreeMap<ContentId, u32>,
    last_kad_bootstrap: Option<Instant>,
    last_rate: (Instant, u64, u64),
    bytes_total: (u64, u64),
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

/// A bucket for a limit of `rate` bytes/s, with a quarter second of burst.
fn bucket(rate: f64) -> TokenBucket {
    TokenBucket::new(rate, (rate / 4.0).max(64.0 * 1024.0), Time::ZERO)
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

        let topic = gossipsub::IdentTopic::new(CATALOGUE_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| NetError::Setup(format!("subscribe: {e}")))?;
        let fleet_topic = gossipsub::IdentTopic::new(fleet::FLEET_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&fleet_topic)
            .map_err(|e| NetError::Setup(format!("subscribe: {e}")))?;
        for addr in &cfg.listen {
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
        let mut node = Node {
            scheduler: Scheduler::new(&cfg.transfer, &cfg.policy, Locality::default(), seed),
            uploads: UploadSlots::new(cfg.transfer.upload_slots),
            up_limit: Arc::new(Mutex::new(None)),
            down_limit: None,
            limits: Limits::default(),
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
            uploading: HashMap::new(),
            fetches: BTreeMap::new(),
            held: BTreeMap::new(),
            published: BTreeSet::new(),
            have_subscribers: BTreeMap::new(),
            have_outbox: BTreeMap::new(),
            lookups: BTreeMap::new(),
            listen: Vec::new(),
            bootstrap,
            last_sync: now,
            republish: std::collections::VecDeque::new(),
            next_drive: None,
            fleet: Fleet::default(),
            last_report: None,
            report_prev: BTreeMap::new(),
            last_kad_bootstrap: None,
            last_rate: (now, 0, 0),
            bytes_total: (0, 0),
            cfg,
        };
        node.scheduler = Scheduler::new(&node.cfg.transfer, &node.cfg.policy, node.own_locality(), seed);
        node.apply_limits();
        node.resume()?;
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

    /// On start: provide what is held, fetch what is targeted and missing, drop what was withdrawn.
    fn resume(&mut self) -> Result<(), NetError> {
        for content in self.store.contents()? {
            if self.catalogue.withdrawn(&content) {
                self.remove_local(&content);
                continue;
            }
            // Content outside the data directory was published from where it lies: never evicted.
            let managed = self.store.data_dir().join("content");
            if self.store.content_path(&content)?.is_some_and(|p| !p.starts_with(&managed)) {
                self.published.insert(content);
            }
            if let Some(b) = self.store.bitfield(&content)? {
                self.held.insert(content, Held { have: b.count(), total: b.len() });
                if b.count() > 0 {
                    self.provide(&content);
                }
            }
        }
        let films: Vec<Publish> = self.catalogue.films().map(|f| f.publish.clone()).collect();
        for publish in films {
            self.maybe_fetch(&publish);
        }
        self.refresh_gauges();
        Ok(())
    }

    async fn run(mut self) -> Result<(), NetError> {
        info!(peer_id = %self.me, role = %self.cfg.role, "node started");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut wake =
                self.scheduler.poll_timeout().map(|t| t.saturating_since(self.now())).unwrap_or(TICK);
            if let Some(at) = self.next_drive.take() {
                wake = wake.min(at.saturating_duration_since(Instant::now()));
            }
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
                    self.scheduler.handle_timeout(now);
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

    // ---- the core's outputs -------------------------------------------------------------------------

    fn drive(&mut self) {
        let now = self.now();
        loop {
            // Under a download limit, ask the core for more only once the bucket is out of deficit.
            if let Some(b) = &mut self.down_limit {
                let wait = b.wait(now);
                if !wait.is_zero() {
                    self.next_drive = Some(Instant::now() + wait);
                    return;
                }
            }
            let Some(output) = self.scheduler.poll_output(now) else { break };
            match output {
                Output::Request { peer, content, chunk } => {
                    if let Some(b) = &mut self.down_limit {
                        let size = self.catalogue.film(&content).map(|f| f.publish.chunk_size).unwrap_or(0);
                        b.reserve(now, size as u64);
                    }
                    self.send(peer, Request::Chunk { content, index: chunk }, Pending::Chunk(content, chunk));
                }
                Output::Cancel { .. } => {
                    // request-response cannot cancel a stream; the late answer is ignored by the core.
                }
                Output::Penalise { peer } => {
                    warn!(%peer, "peer penalised: served a chunk that failed verification");
                    self.metrics.peers_penalised.inc();
                }
                Output::Complete { content } => self.on_complete(content),
            }
        }
    }

    fn send(&mut self, peer: PeerId, request: Request, what: Pending) {
        let id = self.swarm.behaviour_mut().xfer.send_request(&peer, request);
        self.pending.insert(id, (peer, what));
    }

    fn on_complete(&mut self, content: ContentId) {
        let title = self.catalogue.film(&content).map(|f| f.publish.title.clone()).unwrap_or_default();
        let path = self.store.content_path(&content).ok().flatten();
        info!(content = %content, %title, "content complete and verified");
        if let Some(h) = self.held.get_mut(&content) {
            h.have = h.total;
        }
        self.refresh_gauges();
        let _ = self.events.send(Event::Complete { content, title, path });
    }

    // ---- swarm events -------------------------------------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| a != &address),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                if self.revoked(&peer_id) || (self.catalogue.has_members() && !self.allowed(&peer_id)) {
                    debug!(%peer_id, "closing connection: peer revoked or not admitted");
                    self.metrics.connections_refused.inc();
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let p = self.peers.entry(peer_id).or_default();
                p.address = Some(endpoint.get_remote_address().clone());
                if num_established.get() == 1 {
                    let hello = Request::Hello(self.node_info());
                    self.send(peer_id, hello, Pending::Hello);
                }
                self.metrics.connected_peers.set(self.peers.len() as i64);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.peers.remove(&peer_id);
                let now = self.now();
                self.scheduler.peer_left(now, &peer_id);
                self.uploads.peer_left(&peer_id);
                for subs in self.have_subscribers.values_mut() {
                    subs.remove(&peer_id);
                }
                for fetch in self.fetches.values_mut() {
                    if let Fetch::Waiting { asking, .. } = fetch {
                        if *asking == Some(peer_id) {
                            *asking = None;
                        }
                    }
                }
                self.metrics.connected_peers.set(self.peers.len() as i64);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: self.cfg.isp.clone(),
            site: self.cfg.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        use libp2p::metrics::Recorder;
        match &event {
            BehaviourEvent::Identify(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Kad(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Ping(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Gossipsub(e) => self.libp2p_metrics.record(e),
            _ => {}
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result, .. }) => {
                self.on_kad_result(result)
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                if message.topic == gossipsub::IdentTopic::new(fleet::FLEET_TOPIC).hash() {
                    self.on_fleet_report(propagation_source, message_id, message.source, &message.data);
                } else {
                    self.on_gossip(propagation_source, message_id, message.data);
                }
            }
            BehaviourEvent::Xfer(event) => self.on_xfer_event(event),
            _ => {}
        }
    }

    fn on_kad_result(&mut self, result: QueryResult) {
        match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                for p in providers {
                    if p != self.me && !self.swarm.is_connected(&p) {
                        debug!(peer = %p, "dialing provider");
                        let _ = self.swarm.dial(DialOpts::peer_id(p).build());
                    }
                }
            }
            QueryResult::StartProviding(Err(e)) => debug!("start providing: {e:?}"),
            QueryResult::Bootstrap(Err(e)) => debug!("kad bootstrap: {e:?}"),
            _ => {}
        }
    }

    // ---- catalogue ----------------------------------------------------------------------------------

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        let acceptance = match SignedEntry::decode(&data).and_then(|e| self.apply_entry(e)) {
            Ok(held) => {
                if held {
                    self.request_sync(source);
                }
                gossipsub::MessageAcceptance::Accept
            }
            Err(r) if r.is_duplicate() => gossipsub::MessageAcceptance::Ignore,
            Err(r) => {
                warn!(peer = %source, "catalogue entry rejected: {r}");
                if r.blames_sender() {
                    gossipsub::MessageAcceptance::Reject
                } else {
                    gossipsub::MessageAcceptance::Ignore
                }
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &source, acceptance);
    }

    fn on_fleet_report(
        &mut self,
        via: PeerId,
        id: gossipsub::MessageId,
        source: Option<PeerId>,
        data: &[u8],
    ) {
        let src = source.map(|s| s.to_string());
        let verdict = src
            .ok_or(fleet::Refusal::Unsigned)
            .and_then(|src| self.fleet.accept(&src, data, &self.catalogue, self.cfg.private, unix_now()));
        let acceptance = match verdict {
            Ok(()) => gossipsub::MessageAcceptance::Accept,
            Err(e) if e.blames_sender() => {
                debug!(peer = %via, "fleet report rejected: {e}");
                self.metrics.fleet_rejected.inc();
                gossipsub::MessageAcceptance::Reject
            }
            Err(e) => {
                debug!(peer = %via, "fleet report ignored: {e}");
                gossipsub::MessageAcceptance::Ignore
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &via, acceptance);
    }

    /// Our progress summary; also recorded in our own fleet view.
    fn report_progress(&mut self) {
        let now = Instant::now();
        let elapsed = self.last_report.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.last_report = Some(now);
        let mut contents = Vec::new();
        let mut prev = BTreeMap::new();
        // Unfinished first: they are what the fleet view is for.
        let mut held: Vec<(ContentId, Held)> = self.held.iter().map(|(c, h)| (*c, *h)).collect();
        held.sort_by_key(|(_, h)| h.have == h.total);
        for (content, h) in held.into_iter().take(fleet::MAX_REPORT_CONTENTS) {
            let chunk = self.catalogue.film(&content).map(|f| f.publish.chunk_size).unwrap_or(0) as f64;
            let before = self.report_prev.get(&content).copied().unwrap_or(h.have);
            let rate =
                if elapsed > 0.0 { h.have.saturating_sub(before) as f64 * chunk / elapsed } else { 0.0 };
            prev.insert(content, h.have);
            contents.push(fleet::ContentProgress { content, have: h.have, total: h.total, rate });
        }
        self.report_prev = prev;
        let report = fleet::Report {
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: self.own_locality().isp,
            issued_at: unix_now(),
            contents,
        };
        let topic = gossipsub::IdentTopic::new(fleet::FLEET_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, report.encode()) {
            debug!("fleet report not published: {e}");
        }
        self.fleet.record(self.me.to_string(), report);
    }

    /// Applies an entry, persists what was applied and acts on it. `Ok(true)` when it was held for a gap.
    fn apply_entry(&mut self, entry: SignedEntry) -> Result<bool, Rejection> {
        let applied = match self.catalogue.apply(entry, unix_now()) {
            Ok(a) => a,
            Err(r) => {
                self.metrics.rejected(rejection_label(&r));
                return Err(r);
            }
        };
        for r in &applied.dropped {
            self.metrics.rejected(rejection_label(r));
        }
        for e in &applied.entries {
            if let Err(err) = self.store.put_catalogue_entry(e.entry.key.as_bytes(), e.entry.seq, &e.encode())
            {
                warn!("cannot persist catalogue entry {}: {err}", e.entry.seq);
            }
            self.metrics.catalogue_applied.inc();
            self.metrics
                .catalogue_head
                .get_or_create(&metrics::KeyLabel { key: e.entry.key.to_string() })
                .set(e.entry.seq as i64);
        }
        for e in applied.entries {
            self.on_applied(e);
        }
        Ok(applied.held)
    }

    fn on_applied(&mut self, entry: SignedEntry) {
        debug!(seq = entry.entry.seq, "catalogue entry applied");
        match entry.entry.body {
            Body::Publish(p) => self.maybe_fetch(&p),
            Body::Withdraw { content } => {
                info!(content = %content, "content withdrawn");
                self.remove_local(&content);
                let _ = self.events.send(Event::Withdrawn { content });
            }
            Body::Admit(_) | Body::Revoke { .. } => {
                let revoked: Vec<PeerId> = self.peers.keys().filter(|p| self.revoked(p)).copied().collect();
                for p in revoked {
                    self.metrics.connections_refused.inc();
                    let _ = self.swarm.disconnect_peer_id(p);
                }
                let films: Vec<Publish> = self.catalogue.films().map(|f| f.publish.clone()).collect();
                for p in films {
                    self.maybe_fetch(&p);
                }
                self.apply_limits();
            }
            Body::Policy(_) => self.apply_limits(),
        }
        self.refresh_gauges();
    }

    fn targeted(&self, publish: &Publish) -> bool {
        match self.cfg.role {
            Role::Distributor => false,
            Role::Superseeder => true,
            Role::Cinema => {
                let me = self.me.to_string();
                let groups = self.catalogue.member(&me).map(|m| m.groups.clone()).unwrap_or_default();
                publish.targets.matches(&me, &groups)
            }
        }
    }

    fn maybe_fetch(&mut self, publish: &Publish) {
        let content = publish.content;
        if self.fetches.contains_key(&content) || self.catalogue.withdrawn(&content) {
            return;
        }
        let held = self.held.get(&content).copied();
        if held.is_some_and(|h| h.have == h.total) || !self.targeted(publish) {
            return;
        }
        if held.is_some() {
            match self.store.bitfield(&content) {
                Ok(Some(b)) => return self.activate(content, b),
                Ok(None) => {}
                Err(e) => warn!(content = %content, "cannot read bitfield: {e}"),
            }
        }
        info!(content = %content, title = %publish.title, "fetching");
        self.fetches.insert(content, Fetch::Waiting { asking: None, asked: BTreeSet::new() });
        self.lookup(content);
        self.ask_manifest(content);
    }

    fn lookup(&mut self, content: ContentId) {
        let due = self.lookups.get(&content).is_none_or(|t| t.elapsed() >= LOOKUP_INTERVAL);
        if due {
            self.lookups.insert(content, Instant::now());
            self.metrics.provider_lookups.inc();
            self.swarm.behaviour_mut().kad.get_providers(provider_key(&content));
        }
    }

    fn ask_manifest(&mut self, content: ContentId) {
        let Some(Fetch::Waiting { asking, asked }) = self.fetches.get(&content) else { return };
        if asking.is_some() {
            return;
        }
        let candidate = self.peers.iter().find(|(p, s)| s.joined && !asked.contains(p)).map(|(p, _)| *p);
        match candidate {
            Some(peer) => {
                if let Some(Fetch::Waiting { asking, asked }) = self.fetches.get_mut(&content) {
                    *asking = Some(peer);
                    asked.insert(peer);
                }
                self.send(peer, Request::Manifest { content }, Pending::Manifest(content));
            }
            None => {
                // Everyone connected was asked: look for providers and start over with whoever we find.
                if let Some(Fetch::Waiting { asked, .. }) = self.fetches.get_mut(&content) {
                    asked.clear();
                }
                self.lookup(content);
            }
        }
    }

    fn on_manifest(&mut self, peer: PeerId, content: ContentId, bytes: Vec<u8>) {
        if !matches!(self.fetches.get(&content), Some(Fetch::Waiting { .. })) {
            return;
        }
        let checked = Manifest::decode(&bytes).map_err(|e| e.to_string()).and_then(|m| {
            if m.id() != content {
                return Err("manifest does not hash to the content id".to_owned());
            }
            match self.catalogue.film(&content) {
                Some(f) if f.publish.chunks != m.chunk_count() || f.publish.size != m.total_size() => {
                    Err("manifest disagrees with the signed Publish (size or chunk count)".to_owned())
                }
                _ => Ok(m),
            }
        });
        let checked = checked.and_then(|m| self.make_room(m.total_size()).map(|()| m));
        match checked {
            Ok(manifest) => {
                self.fetches.insert(content, Fetch::Installing);
                let store = self.store.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = store
                        .add_content(&manifest, ContentRoot::Managed, Have::Nothing)
                        .and_then(|()| store.reuse_local(&content))
                        .and_then(|_| store.bitfield(&content))
                        .and_then(|b| b.ok_or(StoreError::UnknownContent(content)));
                    let _ = done.blocking_send(Done::Installed { content, result });
                });
            }
            Err(reason) if reason.starts_with("over storage.capacity") => {
                warn!(content = %content, "content refused: {reason}");
                self.fetches.insert(content, Fetch::Refused(reason, Instant::now()));
                self.refresh_gauges();
            }
            Err(reason) => {
                warn!(%peer, content = %content, "bad manifest: {reason}");
                self.scheduler_penalise(peer);
                if let Some(Fetch::Waiting { asking, .. }) = self.fetches.get_mut(&content) {
                    *asking = None;
                }
                self.ask_manifest(content);
            }
        }
    }

    /// Within `storage.capacity`, makes room for `size` more bytes by evicting stored contents no longer
    /// targeted at this node; refuses when that is not enough.
    fn make_room(&mut self, size: u64) -> Result<(), String> {
        let Some(capacity) = self.cfg.capacity else { return Ok(()) };
        let size_of = |n: &Self, c: &ContentId| n.catalogue.film(c).map(|f| f.publish.size).unwrap_or(0);
        // Only content fetched into the data directory counts (not a distributor's own files).
        let stored: Vec<ContentId> =
            self.held.keys().filter(|c| !self.published.contains(c)).copied().collect();
        let mut used: u64 = stored.iter().map(|c| size_of(self, c)).sum();
        if used + size <= capacity {
            return Ok(());
        }
        let evictable: Vec<ContentId> = stored
            .into_iter()
            .filter(|c| self.catalogue.film(c).is_none_or(|f| !self.targeted(&f.publish)))
            .collect();
        for c in evictable {
            if used + size <= capacity {
                break;
            }
            info!(content = %c, "evicting content no longer targeted here to stay within storage.capacity");
            used -= size_of(self, &c).min(used);
            self.remove_local(&c);
        }
        if used + size <= capacity {
            Ok(())
        } else {
            Err(format!("over storage.capacity ({used} bytes stored + {size} needed > {capacity})"))
        }
    }

    fn scheduler_penalise(&mut self, peer: PeerId) {
        self.metrics.peers_penalised.inc();
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn activate(&mut self, content: ContentId, have: Bitfield) {
        let now = self.now();
        let deadline = self.catalogue.film(&content).and_then(|f| f.publish.deadline).map(|d| {
            let unix = unix_now();
            now + Duration::from_secs(d.saturating_sub(unix))
        });
        self.held.insert(content, Held { have: have.count(), total: have.len() });
        if have.count() > 0 {
            self.provide(&content);
        }
        self.fetches.insert(content, Fetch::Active);
        self.scheduler.add_content(now, ContentSpec { id: content, chunks: have.len(), deadline }, have);
        let joined: Vec<PeerId> = self.peers.iter().filter(|(_, s)| s.joined).map(|(p, _)| *p).collect();
        for peer in joined {
            self.send(peer, Request::Bitfield { content }, Pending::Bitfield(content));
        }
        self.lookup(content);
        self.refresh_gauges();
    }

    fn provide(&mut self, content: &ContentId) {
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(provider_key(content)) {
            warn!(content = %content, "cannot announce provider record: {e:?}");
        }
    }

    fn remove_local(&mut self, content: &ContentId) {
        self.scheduler.remove_content(content);
        self.fetches.remove(content);
        self.held.remove(content);
        self.have_outbox.remove(content);
        self.have_subscribers.remove(content);
        self.swarm.behaviour_mut().kad.stop_providing(&provider_key(content));
        if let Err(e) = self.store.remove_content(content) {
            warn!(content = %content, "cannot remove content: {e}");
        }
    }

    fn request_sync(&mut self, peer: PeerId) {
        let heads: Vec<([u8; 32], u64)> = self
            .catalogue
            .trusted()
            .map(|k| (*k.as_bytes(), self.catalogue.head(k)))
            .take(MAX_SYNC_HEADS)
            .collect();
        if !heads.is_empty() {
            self.send(peer, Request::Sync { heads }, Pending::Sync);
        }
    }

    // ---- the chunk protocol -------------------------------------------------------------------------

    fn on_xfer_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event as E, Message};
        match event {
            E::Message { peer, message: Message::Request { request_id, request, channel }, .. } => {
                self.on_request(peer, request_id, request, channel)
            }
            E::Message { peer, message: Message::Response { request_id, response }, .. } => {
                if let Some((_, what)) = self.pending.remove(&request_id) {
                    self.on_response(peer, what, response);
                }
            }
            E::OutboundFailure { peer, request_id, error, .. } => {
                self.metrics.protocol_error("outbound", &error.to_string());
                if let Some((_, what)) = self.pending.remove(&request_id) {
                    debug!(%peer, ?what, %error, "request failed");
                    self.on_failure(peer, what);
                }
            }
            E::InboundFailure { peer, request_id, error, .. } => {
                // Malformed or oversized requests end here (the codec refuses them): count and move on.
                debug!(%peer, %error, "inbound request failed");
                self.metrics.protocol_error("inbound", &error.to_string());
                if let Some(peer) = self.uploading.remove(&request_id) {
                    self.uploads.finished(&peer);
                }
            }
            E::ResponseSent { request_id, .. } => {
                if let Some(peer) = self.uploading.remove(&request_id) {
                    self.uploads.finished(&peer);
                }
            }
        }
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, response: Response) {
        let _ = self.swarm.behaviour_mut().xfer.send_response(channel, response);
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if self.revoked(&peer) {
            return self.respond(channel, Response::Refused { reason: "revoked".into() });
        }
        if !matches!(request, Request::Hello(_) | Request::Have { .. }) && !self.allowed(&peer) {
            return self
                .respond(channel, Response::Refused { reason: "not admitted to this private mesh".into() });
        }
        match request {
            Request::Hello(info) => {
                let ours = self.node_info();
                self.respond(channel, Response::Hello(ours));
                self.on_hello(peer, info);
            }
            Request::Manifest { content } => {
                let response = match self.store.manifest(&content) {
                    Ok(Some(m)) => Response::Manifest(m.encode()),
                    _ => Response::Missing,
                };
                self.respond(channel, response);
            }
            Request::Bitfield { content } => {
                let response = match self.store.bitfield(&content) {
                    Ok(Some(b)) => {
                        let subs = self.have_subscribers.entry(content).or_default();
                        if subs.len() < self.cfg.max_connections as usize {
                            subs.insert(peer);
                        }
                        Response::Bitfield { chunks: b.len(), bits: b.to_bytes() }
                    }
                    _ => Response::Missing,
                };
                self.respond(channel, response);
            }
            Request::Chunk { content, index } => match self.uploads.request(&peer) {
                UploadDecision::Serve => {
                    self.uploading.insert(id, peer);
                    let store = self.store.clone();
                    let done = self.done_tx.clone();
                    let limit = self.up_limit.clone();
                    let started = self.started;
                    tokio::task::spawn_blocking(move || {
                        let result = store.read_chunk(&content, index);
                        if let Ok(bytes) = &result {
                            let now = Time::from_duration(started.elapsed());
                            let wait = match limit.lock() {
                                Ok(mut b) => b.as_mut().map(|b| b.reserve(now, bytes.len() as u64)),
                                Err(_) => None,
                            };
                            std::thread::sleep(wait.unwrap_or_default());
                        }
                        let _ = done.blocking_send(Done::Read { peer, content, channel, result });
                    });
                }
                UploadDecision::Busy { load } => {
                    self.metrics.busy_answers.inc();
                    self.respond(channel, Response::Busy { load });
                }
            },
            Request::Have { content, chunks } => {
                let now = self.now();
                for c in chunks {
                    self.scheduler.peer_has(now, &peer, &content, c);
                }
                self.respond(channel, Response::Ack);
            }
            Request::Sync { heads } => {
                let theirs: BTreeMap<[u8; 32], u64> = heads.into_iter().collect();
                let mut entries = Vec::new();
                // Only keys the asker trusts (it listed them) and we trust too.
                let keys: Vec<DistributorKey> =
                    self.catalogue.trusted().filter(|k| theirs.contains_key(k.as_bytes())).copied().collect();
                for key in keys {
                    let after = theirs.get(key.as_bytes()).copied().unwrap_or(0);
                    let room = MAX_SYNC_ENTRIES - entries.len();
                    entries
                        .extend(self.catalogue.entries_after(&key, after, room).iter().map(|e| e.encode()));
                    if entries.len() >= MAX_SYNC_ENTRIES {
                        break;
                    }
                }
                self.respond(channel, Response::Entries(entries));
            }
        }
    }

    fn on_hello(&mut self, peer: PeerId, info: NodeInfo) {
        let locality = self.locality_of(&peer, info.isp.clone(), info.site.clone());
        let Some(state) = self.peers.get_mut(&peer) else { return };
        state.info = Some(info);
        if state.joined {
            return;
        }
        state.joined = true;
        let now = self.now();
        self.scheduler.peer_joined(now, peer, locality);
        let active: Vec<ContentId> =
            self.fetches.iter().filter(|(_, f)| matches!(f, Fetch::Active)).map(|(c, _)| *c).collect();
        for content in active {
            self.send(peer, Request::Bitfield { content }, Pending::Bitfield(content));
        }
        let waiting: Vec<ContentId> = self
            .fetches
            .iter()
            .filter(|(_, f)| matches!(f, Fetch::Waiting { .. }))
            .map(|(c, _)| *c)
            .collect();
        for content in waiting {
            self.ask_manifest(content);
        }
        self.request_sync(peer);
    }

    fn on_response(&mut self, peer: PeerId, what: Pending, response: Response) {
        let now = self.now();
        match (what, response) {
            (Pending::Hello, Response::Hello(info)) => self.on_hello(peer, info),
            (Pending::Manifest(content), Response::Manifest(bytes)) => self.on_manifest(peer, content, bytes),
            (Pending::Bitfield(content), Response::Bitfield { chunks, bits }) => {
                match Bitfield::from_bytes(chunks, &bits) {
                    Ok(b) => self.scheduler.peer_bitfield(now, &peer, &content, b),
                    Err(e) => debug!(%peer, "bad bitfield: {e}"),
                }
            }
            (Pending::Chunk(content, index), Response::Chunk(mut bytes)) => {
                let len = bytes.len() as u64;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.bytes_down += len;
                }
                self.bytes_total.1 += len;
                let label = self.locality_label(&peer);
                self.metrics.bytes_received.get_or_create(&label).inc_by(len);
                let store = self.store.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = store.write_chunk(&content, index, &bytes);
                    bytes.clear();
                    let _ = done.blocking_send(Done::Written { peer, content, index, len, result });
                });
            }
            (Pending::Chunk(content, index), Response::Busy { load }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.load = load;
                }
                self.metrics.failed("busy");
                self.scheduler.chunk_failed(now, &peer, &content, index, Failure::Busy { load });
            }
            (Pending::Chunk(content, index), _) => {
                self.metrics.failed("missing");
                self.scheduler.chunk_failed(now, &peer, &content, index, Failure::Missing);
            }
            (Pending::Sync, Response::Entries(entries)) => {
                let full = entries.len() >= MAX_SYNC_ENTRIES;
                let mut gained = 0u64;
                for bytes in entries {
                    match SignedEntry::decode(&bytes).and_then(|e| self.apply_entry(e)) {
                        Ok(_) => gained += 1,
                        Err(r) if r.is_duplicate() => {}
                        Err(r) => warn!(%peer, "catalogue entry from sync rejected: {r}"),
                    }
                }
                self.metrics.sync_entries.inc_by(gained);
                if full && gained > 0 {
                    self.request_sync(peer);
                }
            }
            (Pending::Manifest(_) | Pending::Bitfield(_), other) => {
                if let Pending::Manifest(content) = what {
                    debug!(%peer, ?other, "no manifest from this peer");
                    self.on_failure(peer, Pending::Manifest(content));
                }
            }
            (_, Response::Refused { reason }) => debug!(%peer, %reason, "request refused"),
            _ => {}
        }
    }

    fn on_failure(&mut self, peer: PeerId, what: Pending) {
        match what {
            Pending::Chunk(content, index) => {
                self.metrics.failed("io");
                let now = self.now();
                self.scheduler.chunk_failed(now, &peer, &content, index, Failure::Io);
            }
            Pending::Manifest(content) => {
                if let Some(Fetch::Waiting { asking, .. }) = self.fetches.get_mut(&content) {
                    *asking = None;
                }
                self.ask_manifest(content);
            }
            Pending::Hello | Pending::Bitfield(_) | Pending::Have | Pending::Sync => {}
        }
    }

    fn locality_label(&self, peer: &PeerId) -> metrics::LocalityLabel {
        let mine = self.own_locality();
        let info = self.peers.get(peer).and_then(|p| p.info.clone()).unwrap_or_default();
        let theirs = self.locality_of(peer, info.isp, info.site);
        let locality = if mine.same_site(&theirs) {
            metrics::Locality::SameSite
        } else if mine.same_isp(&theirs) {
            metrics::Locality::SameIsp
        } else if mine.isp.is_some() && theirs.isp.is_some() {
            metrics::Locality::OtherIsp
        } else {
            metrics::Locality::Unknown
        };
        metrics::LocalityLabel { locality }
    }

    // ---- disk jobs ----------------------------------------------------------------------------------

    fn on_done(&mut self, done: Done) {
        let now = self.now();
        match done {
            Done::Written { peer, content, index, len, result } => match result {
                Ok(()) => {
                    // The core counts distinct chunks: an end-game duplicate written twice counts once.
                    let before = self.scheduler.progress(&content).map(|p| p.have);
                    self.scheduler.chunk_received(now, &peer, &content, index, len);
                    let after = self.scheduler.progress(&content).map(|p| p.have);
                    let new = match (before, after) {
                        (Some(b), Some(a)) => a > b,
                        // The content just completed (the core dropped it) or is no longer fetched.
                        (Some(_), None) => true,
                        _ => false,
                    };
                    if !new {
                        return;
                    }
                    self.metrics.chunks_verified.inc();
                    let first = self.held.get(&content).is_some_and(|h| h.have == 0);
                    if let (Some(h), Some(a)) = (self.held.get_mut(&content), after) {
                        h.have = a.min(h.total);
                    }
                    if first {
                        self.provide(&content);
                    }
                    let outbox = self.have_outbox.entry(content).or_default();
                    outbox.push(index);
                    if outbox.len() >= HAVE_FLUSH {
                        self.flush_haves();
                    }
                }
                Err(StoreError::Corrupt { reason, .. }) => {
                    warn!(%peer, content = %content.short(), index, "chunk failed verification: {reason}");
                    self.metrics.failed("corrupt");
                    self.scheduler.chunk_failed(now, &peer, &content, index, Failure::Corrupt);
                }
                Err(e) => {
                    warn!(content = %content.short(), index, "cannot store chunk: {e}");
                    self.metrics.failed("store");
                    self.scheduler.chunk_failed(now, &peer, &content, index, Failure::Io);
                }
            },
            Done::Read { peer, content, channel, result } => {
                let response = match result {
                    Ok(mut bytes) => {
                        if self.cfg.fault == Some(Fault::CorruptUploads) && !bytes.is_empty() {
                            bytes[0] ^= 0xff;
                        }
                        let len = bytes.len() as u64;
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.bytes_up += len;
                        }
                        self.bytes_total.0 += len;
                        let label = self.locality_label(&peer);
                        self.metrics.bytes_sent.get_or_create(&label).inc_by(len);
                        self.metrics.chunks_served.inc();
                        Response::Chunk(bytes)
                    }
                    Err(e) => {
                        debug!(%peer, content = %content.short(), "cannot serve chunk: {e}");
                        Response::Missing
                    }
                };
                self.respond(channel, response);
            }
            Done::Installed { content, result } => match result {
                Ok(have) => {
                    info!(content = %content, have = have.count(), chunks = have.len(), "manifest installed");
                    self.activate(content, have);
                }
                Err(e) => {
                    warn!(content = %content, "cannot store content: {e}");
                    let _ = self.store.remove_content(&content);
                    self.fetches.insert(content, Fetch::Refused(e.to_string(), Instant::now()));
                    self.refresh_gauges();
                }
            },
            Done::Verified { results, reply } => {
                let mut out = Vec::new();
                for (content, result) in results {
                    match result {
                        Ok(have) => {
                            let before = self.held.get(&content).map(|h| h.have).unwrap_or(0);
                            out.push(VerifyStatus {
                                content_id: content.to_hex(),
                                good: have.count(),
                                bad: before.saturating_sub(have.count()),
                            });
                            if !have.is_complete() && self.held.contains_key(&content) {
                                self.scheduler.remove_content(&content);
                                self.fetches.remove(&content);
                                self.activate(content, have);
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(format!("verify {content}: {e}")));
                            return;
                        }
                    }
                }
                let _ = reply.send(Ok(out));
            }
        }
    }

    fn flush_haves(&mut self) {
        let outbox = std::mem::take(&mut self.have_outbox);
        for (content, mut chunks) in outbox {
            chunks.truncate(MAX_HAVE_CHUNKS);
            let subs: Vec<PeerId> =
                self.have_subscribers.get(&content).into_iter().flatten().copied().collect();
            for peer in subs {
                self.send(peer, Request::Have { content, chunks: chunks.clone() }, Pending::Have);
            }
        }
    }

    // ---- housekeeping -------------------------------------------------------------------------------

    /// Re-evaluates the limits in force (static, own schedule, signed policy) and retunes the buckets.
    fn apply_limits(&mut self) {
        let t = &self.cfg.transfer;
        let base = Limits { upload: t.upload_limit.map(|r| r.0), download: t.download_limit.map(|r| r.0) };
        let me = self.me.to_string();
        let groups = self.catalogue.member(&me).map(|m| m.groups.clone()).unwrap_or_default();
        let policy = groups
            .iter()
            .find_map(|g| self.catalogue.policy(Some(g)))
            .or_else(|| self.catalogue.policy(None));
        let limits = schedule::limits_at(base, &t.schedule, policy, unix_now());
        if limits == self.limits && self.started.elapsed() > TICK {
            return;
        }
        if limits != self.limits {
            info!(upload = ?limits.upload, download = ?limits.download, "rate limits in force");
        }
        self.limits = limits;
        self.down_limit = limits.download.map(bucket);
        if let Ok(mut up) = self.up_limit.lock() {
            *up = limits.upload.map(bucket);
        }
    }

    fn on_tick(&mut self) {
        self.flush_haves();
        for (data, since) in std::mem::take(&mut self.republish) {
            self.publish_or_queue(data, since);
        }
        if self.last_report.is_none_or(|t| t.elapsed() >= self.cfg.gossip.fleet_interval) {
            self.report_progress();
        }
        self.apply_limits();
        let now_i = Instant::now();
        // Bootstrap peers: redial with exponential back-off until connected.
        for (addr, peer, next, backoff) in &mut self.bootstrap {
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) || now_i < *next {
                continue;
            }
            if let Some(p) = peer {
                let mut bare = addr.clone();
                bare.pop();
                self.swarm.behaviour_mut().kad.add_address(p, bare);
            }
            debug!(%addr, "dialing bootstrap peer");
            let _ = self.swarm.dial(addr.clone());
            *next = now_i + *backoff;
            *backoff = (*backoff * 2).min(BOOTSTRAP_BACKOFF.1);
        }
        if !self.peers.is_empty()
            && self.last_kad_bootstrap.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_kad_bootstrap = Some(now_i);
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        // Anti-entropy with a random peer.
        if self.last_sync.elapsed() >= self.cfg.gossip.anti_entropy_interval {
            self.last_sync = now_i;
            let joined = self.peers.iter().filter(|(_, s)| s.joined).map(|(p, _)| *p);
            if let Some(peer) = joined.choose(&mut self.rng) {
                self.request_sync(peer);
            }
        }
        // Contents refused for lack of space: try again now and then (space may have been freed).
        let retry: Vec<ContentId> = self
            .fetches
            .iter()
            .filter_map(|(c, f)| {
                matches!(f, Fetch::Refused(_, t) if t.elapsed() >= REFUSED_RETRY).then_some(*c)
            })
            .collect();
        for content in retry {
            self.fetches.remove(&content);
            if let Some(p) = self.catalogue.film(&content).map(|f| f.publish.clone()) {
                self.maybe_fetch(&p);
            }
        }
        // Fetches waiting for a manifest, or starved of peers: look again.
        let contents: Vec<(ContentId, bool)> = self
            .fetches
            .iter()
            .filter_map(|(c, f)| match f {
                Fetch::Waiting { asking: None, .. } => Some((*c, true)),
                Fetch::Active => Some((*c, false)),
                _ => None,
            })
            .collect();
        for (content, waiting) in contents {
            if waiting {
                self.ask_manifest(content);
            } else if self.scheduler.progress(&content).is_some_and(|p| p.in_flight == 0 && p.have < p.total)
            {
                self.lookup(content);
            }
        }
        // Rates.
        let (t, up, down) = self.last_rate;
        let dt = t.elapsed().as_secs_f64();
        if dt >= 1.0 {
            self.metrics.upload_rate.set(((self.bytes_total.0 - up) as f64 / dt) as i64);
            self.metrics.download_rate.set(((self.bytes_total.1 - down) as f64 / dt) as i64);
            self.last_rate = (now_i, self.bytes_total.0, self.bytes_total.1);
            if let Ok(free) = self.store.free_space() {
                self.metrics.disk_free_bytes.set(free as i64);
            }
        }
    }

    fn refresh_gauges(&mut self) {
        let complete = self.held.values().filter(|h| h.have == h.total).count();
        let fetching = self.fetches.values().filter(|f| !matches!(f, Fetch::Refused(..))).count();
        let refused = self.fetches.values().filter(|f| matches!(f, Fetch::Refused(..))).count();
        self.metrics.contents_complete.set(complete as i64);
        self.metrics.contents_fetching.set(fetching.saturating_sub(complete) as i64);
        self.metrics.contents_refused.set(refused as i64);
    }

    // ---- commands -----------------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Films(reply) => {
                let _ = reply.send(self.films());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_list());
            }
            Command::Publish { manifest, root, entry, reply } => {
                let _ = reply.send(self.publish(*manifest, root, *entry));
            }
            Command::Submit { entry, reply } => {
                let _ = reply.send(self.submit(*entry));
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.swarm.dial(addr).map_err(|e| e.to_string()));
            }
            Command::Verify { content, reply } => {
                let targets: Vec<ContentId> = match content {
                    Some(c) => vec![c],
                    None => self.held.keys().copied().collect(),
                };
                let store = self.store.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let results = targets
                        .into_iter()
                        .map(|c| {
                            let r = store
                                .verify(&c)
                                .and_then(|_| store.bitfield(&c))
                                .and_then(|b| b.ok_or(StoreError::UnknownContent(c)));
                            (c, r)
                        })
                        .collect();
                    let _ = done.blocking_send(Done::Verified { results, reply });
                });
            }
            Command::Fleet(reply) => {
                let _ = reply.send(self.fleet.view(&self.catalogue, unix_now()));
            }
            Command::Shutdown => {}
        }
    }

    fn gossip(&mut self, entry: &SignedEntry) {
        self.publish_or_queue(entry.encode(), Instant::now());
    }

    /// Publishes on the catalogue topic; when no peer is subscribed yet (right after start) the entry is
    /// queued and retried each tick for [`REPUBLISH_FOR`], so a publish is not lost to a slow mesh. The queue
    /// holds at most [`REPUBLISH_QUEUE`] entries (the oldest is dropped; anti-entropy still delivers it).
    fn publish_or_queue(&mut self, data: Vec<u8>, since: Instant) {
        let topic = gossipsub::IdentTopic::new(CATALOGUE_TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data.clone()) {
            Err(
                gossipsub::PublishError::NoPeersSubscribedToTopic | gossipsub::PublishError::AllQueuesFull(_),
            ) if since.elapsed() < REPUBLISH_FOR => {
                if self.republish.len() >= REPUBLISH_QUEUE {
                    self.republish.pop_front();
                }
                self.republish.push_back((data, since));
            }
            Err(e) => debug!("gossip publish: {e}"),
            Ok(_) => {}
        }
    }

    fn submit(&mut self, entry: SignedEntry) -> Result<(), String> {
        if !self.catalogue.trusted().any(|k| *k == entry.entry.key) {
            return Err(format!(
                "this node does not trust key {}: add it to node.trust (or --trust) before using it here",
                entry.entry.key
            ));
        }
        let copy = entry.clone();
        match self.apply_entry(entry) {
            Ok(_) => {
                self.gossip(&copy);
                Ok(())
            }
            Err(r) => Err(r.to_string()),
        }
    }

    fn publish(&mut self, manifest: Manifest, root: PathBuf, entry: SignedEntry) -> Result<(), String> {
        let content = manifest.id();
        match &entry.entry.body {
            Body::Publish(p) if p.content == content => {}
            _ => return Err("the signed entry is not a Publish of this manifest".into()),
        }
        self.store
            .add_content(&manifest, ContentRoot::External(root), Have::Trusted)
            .map_err(|e| e.to_string())?;
        self.held.insert(content, Held { have: manifest.chunk_count(), total: manifest.chunk_count() });
        self.published.insert(content);
        self.provide(&content);
        self.submit(entry)
    }

    fn status(&self) -> Status {
        let loc = self.own_locality();
        Status {
            peer_id: self.me.to_string(),
            listen: self.listen.iter().map(|a| format!("{a}/p2p/{}", self.me)).collect(),
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: loc.isp,
            site: loc.site,
            catalogue_heads: self
                .catalogue
                .heads()
                .into_iter()
                .map(|(k, seq)| {
                    let (seen, issued_at) = (self.catalogue.seen_head(&k), self.catalogue.head_issued_at(&k));
                    Head { key: k.to_string(), seq, seen, issued_at }
                })
                .collect(),
            disk_free: self.store.free_space().unwrap_or(0),
            peers: self.peers.len(),
            films: self.catalogue.films().count(),
        }
    }

    fn films(&self) -> Vec<FilmStatus> {
        self.catalogue
            .films()
            .map(|f| {
                let p = &f.publish;
                let held = self.held.get(&p.content).copied();
                let have_chunks = held.map(|h| h.have).unwrap_or(0);
                let complete = held.is_some_and(|h| h.have == h.total);
                let have_bytes =
                    if complete { p.size } else { (have_chunks as u64 * p.chunk_size as u64).min(p.size) };
                let state = match self.fetches.get(&p.content) {
                    _ if complete && self.cfg.role == Role::Distributor => "seeding".to_owned(),
                    _ if complete => "complete".to_owned(),
                    Some(Fetch::Refused(reason, _)) => format!("refused: {reason}"),
                    Some(Fetch::Waiting { .. }) | Some(Fetch::Installing) => "waiting".to_owned(),
                    Some(Fetch::Active) => "fetching".to_owned(),
                    None => "not-targeted".to_owned(),
                };
                FilmStatus {
                    content_id: p.content.to_hex(),
                    title: p.title.clone(),
                    size: p.size,
                    have_bytes,
                    have_chunks,
                    chunks: p.chunks,
                    complete,
                    state,
                    deadline: p.deadline,
                    path: self.store.content_path(&p.content).ok().flatten().map(|p| p.display().to_string()),
                }
            })
            .collect()
    }

    fn peer_list(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let info = p.info.clone().unwrap_or_default();
                let loc = self.locality_of(id, info.isp.clone(), info.site.clone());
                PeerStatus {
                    peer_id: id.to_string(),
                    role: p.info.as_ref().map(|i| i.role.clone()),
                    name: info.name,
                    isp: loc.isp,
                    site: loc.site,
                    load: p.load,
                    bytes_up: p.bytes_up,
                    bytes_down: p.bytes_down,
                    address: p.address.as_ref().map(|a| a.to_string()),
                }
            })
            .collect()
    }
}
