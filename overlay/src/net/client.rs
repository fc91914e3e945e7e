//! The handle to a running [`Node`](super::Node): a bounded command channel and one-shot replies.

use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::NetError;
use crate::catalogue::SignedEntry;
use crate::content::Manifest;

/// Commands the event loop understands.
#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<Status>),
    Films(oneshot::Sender<Vec<FilmStatus>>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Publish {
        manifest: Box<Manifest>,
        root: PathBuf,
        entry: Box<SignedEntry>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Submit {
        entry: Box<SignedEntry>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Verify {
        content: Option<crate::ContentId>,
        reply: oneshot::Sender<Result<Vec<VerifyStatus>, String>>,
    },
    Fleet(oneshot::Sender<Vec<super::fleet::FilmFleet>>),
    /// The kinds of engine inputs and outputs seen (when `Config::record_engine` is on).
    EngineKinds(oneshot::Sender<Vec<String>>),
    Snapshot(oneshot::Sender<super::snapshot::Snapshot>),
    HookResult(String),
    Shutdown,
}

/// What a node says about itself (`GET /status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// libp2p peer id.
    pub peer_id: String,
    /// Listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Role.
    pub role: String,
    /// Name, if set.
    pub name: Option<String>,
    /// ISP in use for locality (signed Admit in a private mesh, else self-declared).
    pub isp: Option<String>,
    /// Site in use for locality.
    pub site: Option<String>,
    /// Highest applied seq per trusted distributor key.
    pub catalogue_heads: Vec<Head>,
    /// Free bytes on the data directory's disk.
    pub disk_free: u64,
    /// Connected peers.
    pub peers: usize,
    /// Contents in the catalogue.
    pub films: usize,
    /// How others can reach this node: `public`, `mapped`, `hole-punched`, `relayed-only`, `unreachable`
    /// or `unknown` (docs/operator-guide.md, "Firewalls and NAT").
    #[serde(default)]
    pub reachability: String,
    /// Addresses confirmed reachable from outside (AutoNAT, UPnP, or set by the operator).
    #[serde(default)]
    pub external_addresses: Vec<String>,
    /// Chunk bytes received since start, by connection kind (`tcp`, `quic`, `hole-punched`, `relayed`).
    #[serde(default)]
    pub bytes_by_link: std::collections::BTreeMap<String, u64>,
}

/// One distributor key's head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    /// The key, `cmpk1...`.
    pub key: String,
    /// Highest applied seq.
    pub seq: u64,
    /// Highest seq seen validly signed from the mesh (held or refused); above `seq`, this node is behind
    /// and must not sign `seq + 1` (`cinemesh publish` refuses).
    #[serde(default)]
    pub seen: u64,
    /// `issued_at` of the head entry (unix seconds; 0: none): the next entry must not be issued earlier.
    #[serde(default)]
    pub issued_at: u64,
}

/// A catalogue content with local progress (`GET /films`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilmStatus {
    /// Content id, hex.
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Total bytes.
    pub size: u64,
    /// Bytes held, verified.
    pub have_bytes: u64,
    /// Chunks held.
    pub have_chunks: u32,
    /// Chunks in all.
    pub chunks: u32,
    /// All chunks held.
    pub complete: bool,
    /// `complete`, `fetching`, `waiting` (no manifest yet), `not-targeted`, `refused: ...` or `seeding`.
    pub state: String,
    /// Deadline, unix seconds.
    pub deadline: Option<u64>,
    /// Where the files are, when stored here.
    pub path: Option<String>,
}

/// A connected peer (`GET /peers`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Its role, as it says.
    pub role: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its ISP (signed in a private mesh).
    pub isp: Option<String>,
    /// Its site.
    pub site: Option<String>,
    /// Its last reported load (0..=1).
    pub load: f32,
    /// Content bytes sent to it.
    pub bytes_up: u64,
    /// Content bytes received from it.
    pub bytes_down: u64,
    /// Remote address of the connection.
    pub address: Option<String>,
    /// How the connection is carried: `tcp`, `quic`, `hole-punched` or `relayed` (the best of its
    /// connections).
    #[serde(default)]
    pub link: Option<String>,
}

/// Result of re-verifying one content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyStatus {
    /// Content id, hex.
    pub content_id: String,
    /// Chunks checked and found good.
    pub good: u32,
    /// Chunks found bad, unmarked and queued to be fetched again.
    pub bad: u32,
}

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) peer_id: PeerId,
    /// One verify at a time, across every clone: a verify rehashes every held chunk on every core, and
    /// each one holds a blocking-pool thread until it ends.
    verify_gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Client {
    /// A handle over the node's command channel.
    pub(crate) fn new(tx: mpsc::Sender<Command>, peer_id: PeerId) -> Self {
        Self { tx, peer_id, verify_gate: std::sync::Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, NetError> {
        self.ask(Command::Status).await
    }

    /// The catalogue with local progress.
    pub async fn films(&self) -> Result<Vec<FilmStatus>, NetError> {
        self.ask(Command::Films).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, NetError> {
        self.ask(Command::Peers).await
    }

    /// Seeds `manifest`'s files from `root` (where they lie) and applies and gossips the signed Publish.
    pub async fn publish(
        &self,
        manifest: Manifest,
        root: PathBuf,
        entry: SignedEntry,
    ) -> Result<(), NetError> {
        self.ask(|reply| Command::Publish {
            manifest: Box::new(manifest),
            root,
            entry: Box::new(entry),
            reply,
        })
        .await?
        .map_err(NetError::Refused)
    }

    /// Applies and gossips a signed catalogue entry (withdraw, admit, revoke, policy, or a publish of
    /// content already held).
    pub async fn submit(&self, entry: SignedEntry) -> Result<(), NetError> {
        self.ask(|reply| Command::Submit { entry: Box::new(entry), reply }).await?.map_err(NetError::Refused)
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?.map_err(NetError::Refused)
    }

    /// Re-verifies stored chunks (all contents, or one); bad chunks are unmarked and fetched again.
    /// At most one runs at a time: another call meanwhile is refused at once.
    pub async fn verify(&self, content: Option<crate::ContentId>) -> Result<Vec<VerifyStatus>, NetError> {
        let _running = self.verify_gate.try_acquire().map_err(|_| {
            NetError::Refused(
                "a verify is already running on this node; run it again once that one is done".into(),
            )
        })?;
        self.ask(|reply| Command::Verify { content, reply }).await?.map_err(NetError::Refused)
    }

    /// The fleet view: per content, which nodes have it, which are behind, which will miss the deadline.
    pub async fn fleet(&self) -> Result<Vec<super::fleet::FilmFleet>, NetError> {
        self.ask(Command::Fleet).await
    }

    /// The kinds of engine inputs and outputs this node has seen, when it was started with
    /// `Config::record_engine` (the parity test compares them with the simulator's).
    pub async fn engine_kinds(&self) -> Result<Vec<String>, NetError> {
        self.ask(Command::EngineKinds).await
    }

    /// What the dashboard shows: the fleet view, every peer's latest report, the tail of the catalogue log.
    pub async fn snapshot(&self) -> Result<super::snapshot::Snapshot, NetError> {
        self.ask(Command::Snapshot).await
    }

    /// Tells the node its post-download hook's last result (e.g. `ok: <title>`), for its fleet report;
    /// cut to [`MAX_REPORT_TEXT`](super::fleet::MAX_REPORT_TEXT) bytes.
    pub async fn hook_result(&self, mut text: String) -> Result<(), NetError> {
        if text.len() > super::fleet::MAX_REPORT_TEXT {
            let mut cut = super::fleet::MAX_REPORT_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.tx.send(Command::HookResult(text)).await.map_err(|_| NetError::Stopped)
    }

    /// Asks the node to stop; returns once the request is queued (await the node's task to see it end).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_verify_at_a_time() {
        let (tx, mut rx) = mpsc::channel(4);
        let client = Client::new(tx, PeerId::random());
        let other = client.clone();
        let first = tokio::spawn(async move { client.verify(None).await });
        // The node has the first request and has not answered yet.
        let Some(Command::Verify { reply, .. }) = rx.recv().await else { panic!("no verify command") };
        match other.verify(None).await {
            Err(NetError::Refused(why)) => assert!(why.contains("already running"), "{why}"),
            r => panic!("a second verify ran beside the first: {r:?}"),
        }
        reply.send(Ok(Vec::new())).unwrap();
        assert!(first.await.unwrap().unwrap().is_empty());
        // Once it is done, the next one goes through to the node.
        let third = tokio::spawn(async move { other.verify(None).await });
        let Some(Command::Verify { reply, .. }) = rx.recv().await else { panic!("no verify command") };
        reply.send(Ok(Vec::new())).unwrap();
        assert!(third.await.unwrap().is_ok());
    }
}
