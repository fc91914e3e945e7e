//! What goes in and out of the [`Engine`](super::Engine): the messages it puts on the wire, the answers
//! to chunk requests, the disk jobs and timers it asks its body to carry out, and the events it reports.
//!
//! Every variant here is something both bodies handle: the node maps [`Request`] and [`Answer`] onto
//! `/cinemesh/xfer/1.0.0` frames and the disk jobs onto the store; the simulator turns them into events
//! with a latency and a size, and flows through its bandwidth model.

use serde::{Deserialize, Serialize};

use crate::{Bitfield, ContentId, Locality, Time};

/// A node's part in the mesh; decides what it fetches ([`wants`](super::wants)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Fetches the content targeted at it and seeds it.
    #[default]
    Cinema,
    /// Fetches everything published and seeds it (datacenter node).
    Superseeder,
    /// Publishes content and seeds it from where it lies; fetches nothing.
    Distributor,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cinema => "cinema",
            Role::Superseeder => "superseeder",
            Role::Distributor => "distributor",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cinema" => Ok(Role::Cinema),
            "superseeder" => Ok(Role::Superseeder),
            "distributor" => Ok(Role::Distributor),
            other => Err(format!("unknown role {other:?}: expected cinema, superseeder or distributor")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one inbound chunk request from acceptance to its answer; the body allocates it (the node
/// maps it to a response channel, the simulator to its event).
pub type UploadId = u64;

/// A request this node sends to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Introduce ourselves (sent once per peer, on the first connection).
    Hello,
    /// The manifest of a content (the fetch needs it before anything else).
    Manifest {
        /// Which content.
        content: ContentId,
    },
    /// The peer's bitfield of a content; also subscribes us to its have-updates for it.
    Bitfield {
        /// Which content.
        content: ContentId,
    },
    /// One chunk.
    Chunk {
        /// Which content.
        content: ContentId,
        /// Which chunk.
        index: u32,
        /// The asker's highest receive rate so far, bytes/s (0 before it has one; up to
        /// [`MAX_RATE_BOOST`](super::MAX_RATE_BOOST) times that while most answers are busy): a busy
        /// uploader keeps its last slots for the fastest downloaders (`transfer.open_slots`).
        rate: u32,
    },
    /// Chunks we gained since the last batch (to a peer subscribed to our haves of this content).
    Have {
        /// Which content.
        content: ContentId,
        /// The chunks, in the order they were verified.
        chunks: Vec<u32>,
    },
    /// We no longer want this chunk from the peer (another peer served it first): frees its slot.
    Cancel {
        /// Which content.
        content: ContentId,
        /// Which chunk.
        index: u32,
    },
}

impl Request {
    /// A short name for the kind of message (records and parity checks).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::Manifest { .. } => "manifest",
            Request::Bitfield { .. } => "bitfield",
            Request::Chunk { .. } => "chunk",
            Request::Have { .. } => "have",
            Request::Cancel { .. } => "cancel",
        }
    }
}

/// The answer to a chunk request. Every answer carries the uploader's load (active uploads / slots), so
/// the asker's scheduler always knows how busy its sources are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// The chunk's bytes (`len` of them) follow.
    Data {
        /// Bytes.
        len: u64,
        /// The uploader's load.
        load: f32,
    },
    /// Every upload slot is taken: ask later, or elsewhere.
    Busy {
        /// The uploader's load (>= 1.0).
        load: f32,
    },
    /// The uploader does not hold this chunk (or no longer: withdrawn, or a disk read failed).
    Missing {
        /// The uploader's load.
        load: f32,
    },
    /// The asker cancelled the request before the bytes went out: nothing follows.
    Cancelled,
}

impl Answer {
    /// A short name for the kind of answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Data { .. } => "data",
            Answer::Busy { .. } => "busy",
            Answer::Missing { .. } => "missing",
            Answer::Cancelled => "cancelled",
        }
    }
}

/// What became of a chunk request of ours, as the body saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    /// The peer answered.
    Answer(Answer),
    /// The stream or the connection failed, or the request timed out in the transport.
    Failed,
    /// The connection that carried the request closed while the peer stays connected through another (a
    /// node closes the redundant one of two direct connections to a peer, `nat::duplicate`, and libp2p's
    /// request-response had spread requests over both): asked again, the peer is not blamed.
    Moved,
}

/// The result of writing a chunk the engine told the body to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Verified against the manifest hash, written, durable, marked.
    Ok,
    /// The bytes do not match the chunk's hash: the peer is penalised.
    Corrupt,
    /// No room on the disk: the fetch is refused until space returns; the peer is not blamed.
    NoSpace(String),
    /// Another local I/O error: the chunk is asked again; the peer is not blamed.
    Io(String),
}

/// What a manifest answer was worth, as checked by the body (the hash and the signed sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestReply {
    /// It hashes to the content id and matches the signed Publish; the content needs `size` bytes.
    Good {
        /// Bytes the content takes on disk.
        size: u64,
    },
    /// It does not hash to the content id, or disagrees with the signed Publish: the peer is penalised.
    Bad(String),
    /// The peer does not have it, refused, or the request failed.
    Missing,
}

/// A content this node may fetch, as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The content.
    pub content: ContentId,
    /// Chunks in all.
    pub chunks: u32,
    /// Bytes in all.
    pub size: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk_size: u64,
    /// Must be complete by then (engine time).
    pub deadline: Option<Time>,
    /// The catalogue's targets name this node (by id or group); see [`wants`](super::wants).
    pub targeted: bool,
}

/// What a peer said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// Its role.
    pub role: Option<Role>,
    /// Where it is (from its Admit entry when there is one, else what it declares).
    pub locality: Locality,
    /// The download rate of its line in bytes/s, as its operator declares it (`transfer.downlink`); `None`
    /// when not declared. Only compared with the other peers' (see [`ALIKE_LINES`](super::ALIKE_LINES)).
    pub downlink: Option<u64>,
}

/// A decision for the body to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<P> {
    /// Send `request` to `peer`; report what came back through the matching input.
    Send {
        /// To whom.
        peer: P,
        /// What.
        request: Request,
    },
    /// Answer the inbound chunk request `upload` (with the bytes read for it, for [`Answer::Data`]).
    Answer {
        /// Which request.
        upload: UploadId,
        /// The answer.
        answer: Answer,
    },
    /// Read chunk `index` of `content` for the inbound request `upload`; report with
    /// [`Engine::chunk_read`](super::Engine::chunk_read).
    Read {
        /// Which request.
        upload: UploadId,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        index: u32,
    },
    /// The bytes already handed to the transport for `upload` are no longer wanted (the asker cancelled):
    /// a body that can abort them does and reports [`Engine::upload_done`](super::Engine::upload_done)
    /// with `sent = false`; one that cannot reports it when they have left. The slot is held until then.
    Abort {
        /// Which request.
        upload: UploadId,
    },
    /// Create the content's files and metadata (sparse), reuse identical local data; report with
    /// [`Engine::installed`](super::Engine::installed).
    Install {
        /// Which content.
        content: ContentId,
    },
    /// Delete a content's metadata and managed files (evicted to stay within capacity, or withdrawn).
    Remove {
        /// Which content.
        content: ContentId,
    },
    /// Look the content's providers up in the DHT and report them with
    /// [`Engine::providers`](super::Engine::providers), which decides whom to dial.
    Lookup {
        /// Which content.
        content: ContentId,
    },
    /// Connect to `peer` (a provider the engine chose); report a failure with
    /// [`Engine::dial_failed`](super::Engine::dial_failed), a success with
    /// [`Engine::connected`](super::Engine::connected).
    Dial {
        /// Whom.
        peer: P,
    },
    /// Announce in the DHT that this node provides the content.
    Provide {
        /// Which content.
        content: ContentId,
    },
    /// Stop announcing the content.
    Unprovide {
        /// Which content.
        content: ContentId,
    },
    /// Something to tell the operator or the embedding program.
    Event(Event<P>),
}

impl<P> Output<P> {
    /// A short name for the kind of output (records and parity checks).
    pub fn kind(&self) -> String {
        match self {
            Output::Send { request, .. } => format!("send:{}", request.kind()),
            Output::Answer { answer, .. } => format!("answer:{}", answer.kind()),
            Output::Read { .. } => "read".into(),
            Output::Abort { .. } => "abort".into(),
            Output::Install { .. } => "install".into(),
            Output::Remove { .. } => "remove".into(),
            Output::Lookup { .. } => "lookup".into(),
            Output::Dial { .. } => "dial".into(),
            Output::Provide { .. } => "provide".into(),
            Output::Unprovide { .. } => "unprovide".into(),
            Output::Event(e) => format!("event:{}", e.kind()),
        }
    }
}

/// Something that happened, for logs, metrics, hooks and reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// A peer finished its hello: it takes part in transfers now.
    Joined {
        /// The peer.
        peer: P,
    },
    /// Fetching started (the content is targeted here and not held).
    Fetching {
        /// The content.
        content: ContentId,
    },
    /// Every chunk of the content is verified and durable here.
    Complete {
        /// The content.
        content: ContentId,
    },
    /// The content cannot be stored here (space, capacity); tried again after the refused-retry delay.
    Refused {
        /// The content.
        content: ContentId,
        /// Why, for the operator.
        reason: String,
    },
    /// The peer misbehaved (corrupt chunk, bad manifest): the body disconnects it and counts it.
    Penalised {
        /// The peer.
        peer: P,
    },
    /// A chunk was verified, written and marked (it counts once, duplicates never).
    ChunkStored {
        /// The content.
        content: ContentId,
        /// The chunk.
        index: u32,
        /// From whom.
        peer: P,
        /// Bytes.
        len: u64,
    },
    /// An upload ended with its bytes handed to the transport.
    Served {
        /// To whom.
        peer: P,
        /// Bytes.
        len: u64,
    },
}

impl<P> Event<P> {
    /// A short name for the kind of event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Joined { .. } => "joined",
            Event::Fetching { .. } => "fetching",
            Event::Complete { .. } => "complete",
            Event::Refused { .. } => "refused",
            Event::Penalised { .. } => "penalised",
            Event::ChunkStored { .. } => "chunk-stored",
            Event::Served { .. } => "served",
        }
    }
}

/// Where a content stands on this node (for status views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Targeted; looking for a peer that has the manifest.
    Waiting,
    /// Manifest good; files being created.
    Installing,
    /// In the scheduler: chunks are being fetched.
    Active,
    /// Could not be stored; tried again later.
    Refused(String),
}

/// What a held content looks like to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Verified chunks.
    pub have: Bitfield,
    /// Bytes in all.
    pub size: u64,
    /// Published from where it lies by this node: never evicted, not counted against capacity.
    pub pinned: bool,
}
