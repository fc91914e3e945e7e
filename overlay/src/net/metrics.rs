//! `cinemesh_*` Prometheus metrics of the network layer. libp2p's own metrics (swarm, identify, kad, ping,
//! gossipsub, bandwidth) are registered beside them in the same registry. `docs/metrics.md` lists them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Whether the other end of a transfer is on our ISP.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Locality {
    /// Same site (LAN).
    SameSite,
    /// Same ISP.
    SameIsp,
    /// Another ISP.
    OtherIsp,
    /// Either side's ISP is unknown.
    Unknown,
}

/// Label set `{locality=...}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabel {
    /// Where the peer is.
    pub locality: Locality,
}

/// Label set `{reason=...}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Label set `{direction=..., kind=...}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// `inbound` (a peer's request to us) or `outbound` (ours to a peer).
    pub direction: String,
    /// `malformed`, `timeout`, `closed`, `unsupported` or `other`.
    pub kind: String,
}

/// Label set `{key=...}` (a distributor key).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    /// The key, `cmpk1...`.
    pub key: String,
}

/// The network layer's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Content bytes received, by locality of the sender.
    pub bytes_received: Family<LocalityLabel, Counter>,
    /// Content bytes sent, by locality of the receiver.
    pub bytes_sent: Family<LocalityLabel, Counter>,
    /// Chunks verified and stored.
    pub chunks_verified: Counter,
    /// Chunk requests that failed, by reason (corrupt, busy, missing, io, timeout).
    pub chunks_failed: Family<ReasonLabel, Counter>,
    /// Chunks served to peers.
    pub chunks_served: Counter,
    /// Busy answers given (all upload slots taken).
    pub busy_answers: Counter,
    /// Contents held complete.
    pub contents_complete: Gauge,
    /// Contents being fetched.
    pub contents_fetching: Gauge,
    /// Contents refused for lack of disk space.
    pub contents_refused: Gauge,
    /// Catalogue entries applied.
    pub catalogue_applied: Counter,
    /// Catalogue entries rejected, by reason (untrusted_key, bad_signature, malformed, ...).
    pub catalogue_rejected: Family<ReasonLabel, Counter>,
    /// Highest applied seq per distributor key.
    pub catalogue_head: Family<KeyLabel, Gauge>,
    /// Connected peers.
    pub connected_peers: Gauge,
    /// Connections closed because the peer is revoked or not admitted to a private mesh.
    pub connections_refused: Counter,
    /// Peers penalised (e.g. served a corrupt chunk).
    pub peers_penalised: Counter,
    /// Free bytes on the data directory's disk.
    pub disk_free_bytes: Gauge,
    /// Content download rate over the last interval, bytes/s.
    pub download_rate: Gauge,
    /// Content upload rate over the last interval, bytes/s.
    pub upload_rate: Gauge,
    /// Uploads holding a slot (reading, waiting for the upload limit, or sending), as of the last tick.
    pub uploads_active: Gauge,
    /// Chunk-write commits of the store (one sync per file and one metadata flush each).
    pub store_commits: Counter,
    /// Chunks those commits carried.
    pub store_committed_chunks: Counter,
    /// Kademlia provider lookups started.
    pub provider_lookups: Counter,
    /// Providers the engine chose to dial (`Output::Dial`).
    pub provider_dials: Counter,
    /// Chunk-protocol requests that failed, by direction and kind (malformed, timeout, closed, ...).
    pub protocol_errors: Family<ErrorLabel, Counter>,
    /// Chunk-protocol messages refused as malformed or over the size limits (requests and responses).
    pub malformed_messages: Counter,
    /// Fleet progress reports rejected as malformed.
    pub fleet_rejected: Counter,
    /// Anti-entropy exchanges that brought entries.
    pub sync_entries: Counter,
    /// The request window's size, as of the last tick.
    pub request_window: Gauge,
    /// The pace of chunk answers, bytes/s (0: not paced), as of the last tick.
    pub upload_pace: Gauge,
    /// The delay common to the round trips to every peer, ms (`Engine::own_queue`; -1: too few measured).
    pub own_queue: Gauge,
    /// The uplink found full, bytes/s (`Engine::found_uplink`; 0: none).
    pub found_uplink: Gauge,
    /// The download rate a slow line keeps to while it yields to faster ones, bytes/s
    /// (`Engine::yielding`; 0: not yielding).
    pub yield_rate: Gauge,
    /// Chunk requests in flight, as of the last tick.
    pub requests_in_flight: Gauge,
    /// Of them, to peers not known to share this node's ISP (`Engine::in_flight_other_isp`).
    pub requests_in_flight_other_isp: Gauge,
    /// Chunks arrived and being verified and written, as of the last tick.
    pub chunks_writing: Gauge,
    /// 1 while every cinema among the peers declares a line alike to the others', as of the last tick.
    pub lines_alike: Gauge,
    /// Chunk requests sent.
    pub chunk_requests: Counter,
    /// Of them, sent beyond a full window (to a seeder or a spare uploader with none of ours in flight).
    pub chunk_requests_beyond_window: Counter,
    /// Of them, sent to a peer of another ISP for a chunk our ISP holds (`policy.local_margin`, or no other
    /// peer left).
    pub chunk_requests_yielded: Counter,
    /// Of them, end-game duplicates.
    pub chunk_requests_endgame: Counter,
    /// Of them, sent to a peer beyond the count its load allows, to cover its round trip.
    pub chunk_requests_pipelined: Counter,
    /// Of them, given up: stalled (`STALL_FACTOR` times the peer's usual time per chunk, at least 10 s) or
    /// past `transfer.request_timeout`.
    pub chunk_requests_timed_out: Counter,
    /// Cancels sent for requests another peer served first (end game).
    pub chunk_cancels: Counter,
    /// Chunks received that were held by then (a late end-game copy, say): their bytes were spent for nothing.
    pub chunks_duplicate: Counter,
    /// Chunks received that no request to that peer was waiting for (after a timeout or a cancel) and not
    /// held: kept.
    pub chunks_unsolicited: Counter,
    /// Uploads to far slower askers that the ranking by rate alone would have refused.
    pub uploads_slow_asker: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under the `cinemesh` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("cinemesh");
        r.register(
            "bytes_received",
            "Content bytes received, by locality of the sender",
            m.bytes_received.clone(),
        );
        r.register("bytes_sent", "Content bytes sent, by locality of the receiver", m.bytes_sent.clone());
        r.register("chunks_verified", "Chunks received, verified and stored", m.chunks_verified.clone());
        r.register("chunks_failed", "Chunk requests that failed, by reason", m.chunks_failed.clone());
        r.register("chunks_served", "Chunks served to peers", m.chunks_served.clone());
        r.register("busy_answers", "Busy answers given with all upload slots taken", m.busy_answers.clone());
        r.register("contents_complete", "Contents held complete", m.contents_complete.clone());
        r.register("contents_fetching", "Contents being fetched", m.contents_fetching.clone());
        r.register(
            "contents_refused",
            "Contents refused for lack of disk space or over storage.capacity",
            m.contents_refused.clone(),
        );
        r.register("catalogue_applied", "Catalogue entries applied", m.catalogue_applied.clone());
        r.register(
            "catalogue_rejected",
            "Catalogue entries rejected, by reason",
            m.catalogue_rejected.clone(),
        );
        r.register("catalogue_head", "Highest applied seq per distributor key", m.catalogue_head.clone());
        r.register("connected_peers", "Connected peers", m.connected_peers.clone());
        r.register(
            "connections_refused",
            "Connections closed because the peer is revoked or not admitted",
            m.connections_refused.clone(),
        );
        r.register("peers_penalised", "Peers penalised for misbehaviour", m.peers_penalised.clone());
        r.register("disk_free_bytes", "Free bytes on the data directory's disk", m.disk_free_bytes.clone());
        r.register("download_rate_bytes", "Content download rate, bytes/s", m.download_rate.clone());
        r.register("upload_rate_bytes", "Content upload rate, bytes/s", m.upload_rate.clone());
        r.register("uploads_active", "Uploads holding a slot", m.uploads_active.clone());
        r.register(
            "store_commits",
            "Chunk-write commits of the store (one sync per file, one metadata flush)",
            m.store_commits.clone(),
        );
        r.register(
            "store_committed_chunks",
            "Chunks carried by the store's commits",
            m.store_committed_chunks.clone(),
        );
        r.register("provider_lookups", "Kademlia provider lookups started", m.provider_lookups.clone());
        r.register("provider_dials", "Providers the engine chose to dial", m.provider_dials.clone());
        r.register(
            "protocol_errors",
            "Chunk-protocol requests that failed, by direction and kind",
            m.protocol_errors.clone(),
        );
        r.register(
            "malformed_messages",
            "Chunk-protocol messages refused as malformed or over the size limits",
            m.malformed_messages.clone(),
        );
        r.register(
            "fleet_reports_rejected",
            "Fleet progress reports rejected as malformed",
            m.fleet_rejected.clone(),
        );
        r.register("sync_entries", "Catalogue entries obtained by anti-entropy", m.sync_entries.clone());
        r.register("request_window", "The request window's size", m.request_window.clone());
        r.register(
            "upload_pace_bytes",
            "The pace of chunk answers, bytes/s (0: not paced; the upload limit, or a fetching node's declared uplink less its acknowledgements' room)",
            m.upload_pace.clone(),
        );
        r.register(
            "own_queue_milliseconds",
            "The delay common to the round trips to every peer: this node's own line's queue, ms (-1: fewer than 3 peers measured in the last 40 s)",
            m.own_queue.clone(),
        );
        r.register(
            "found_uplink_bytes",
            "The uplink this node found full (its own queue past 250 ms while it fetched), bytes/s, which paces its answers while it fetches (0: none)",
            m.found_uplink.clone(),
        );
        r.register(
            "yield_rate_bytes",
            "The download rate this cinema keeps to while its slow line yields to faster ones early (transfer.slow_line_yields), bytes/s (0: not yielding)",
            m.yield_rate.clone(),
        );
        r.register("requests_in_flight", "Chunk requests in flight", m.requests_in_flight.clone());
        r.register(
            "requests_in_flight_other_isp",
            "Chunk requests in flight to peers outside this node's ISP",
            m.requests_in_flight_other_isp.clone(),
        );
        r.register(
            "chunks_writing",
            "Chunks arrived and being verified and written",
            m.chunks_writing.clone(),
        );
        r.register(
            "lines_alike",
            "1 while every cinema among the peers declares an alike line: askers are served alike",
            m.lines_alike.clone(),
        );
        r.register("chunk_requests", "Chunk requests sent", m.chunk_requests.clone());
        r.register(
            "chunk_requests_beyond_window",
            "Chunk requests sent beyond a full window, to a seeder or a spare uploader",
            m.chunk_requests_beyond_window.clone(),
        );
        r.register(
            "chunk_requests_yielded",
            "Chunk requests sent to a peer of another ISP for a chunk our ISP holds",
            m.chunk_requests_yielded.clone(),
        );
        r.register(
            "chunk_requests_pipelined",
            "Chunk requests sent to a peer beyond the count its load allows, to keep its link busy across the round trip",
            m.chunk_requests_pipelined.clone(),
        );
        r.register(
            "chunk_requests_endgame",
            "End-game duplicate chunk requests",
            m.chunk_requests_endgame.clone(),
        );
        r.register(
            "chunk_requests_timed_out",
            "Chunk requests given up as stalled (8x the peer's usual time per chunk, at least 10 s) or past transfer.request_timeout",
            m.chunk_requests_timed_out.clone(),
        );
        r.register(
            "chunk_cancels",
            "Cancels sent for chunk requests another peer served first",
            m.chunk_cancels.clone(),
        );
        r.register(
            "chunks_duplicate",
            "Chunks received that were held by then (late end-game copies): bytes spent for nothing",
            m.chunks_duplicate.clone(),
        );
        r.register(
            "chunks_unsolicited",
            "Chunks received that no request to that peer was waiting for, not held yet: kept",
            m.chunks_unsolicited.clone(),
        );
        r.register(
            "uploads_slow_asker",
            "Uploads to askers below a fiftieth of the fastest asker's rate that the ranking by rate would have refused",
            m.uploads_slow_asker.clone(),
        );
        m
    }

    /// Counts a rejected catalogue entry.
    pub fn rejected(&self, reason: &str) {
        self.catalogue_rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Counts a failed request of the chunk protocol; `error` is libp2p's message, reduced to a few kinds so
    /// the label set stays bounded.
    pub fn protocol_error(&self, direction: &str, error: &str) {
        let e = error.to_ascii_lowercase();
        let kind = if e.contains("malformed") || e.contains("exceeds the limit") || e.contains("too many") {
            "malformed"
        } else if e.contains("timeout") || e.contains("timed out") {
            "timeout"
        } else if e.contains("closed") {
            "closed"
        } else if e.contains("unsupported") {
            "unsupported"
        } else {
            "other"
        };
        self.protocol_errors
            .get_or_create(&ErrorLabel { direction: direction.to_owned(), kind: kind.to_owned() })
            .inc();
    }

    /// Counts a failed chunk request.
    pub fn failed(&self, reason: &str) {
        self.chunks_failed.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }
}
