//! The libp2p network layer around the sans-io core.
//!
//! The [`Node`] event loop owns the swarm, the [`Store`](crate::store::Store), the
//! [`Catalogue`](crate::catalogue::Catalogue), the [`Scheduler`](crate::core::Scheduler) and the
//! [`UploadSlots`](crate::core::UploadSlots). It turns network events into core inputs and carries out the
//! core's outputs; it makes no scheduling decision of its own. A cloneable [`Client`] drives it through a
//! bounded command channel (libp2p's file-sharing example).
//!
//! - [`behaviour`]: TCP + noise + yamux (optionally behind a pre-shared key), identify, ping, Kademlia
//!   (`/cinemesh/kad/1.0.0`, server mode, provider records keyed by content id), gossipsub (catalogue
//!   topic, validated before forwarding), mDNS, connection limits, the chunk protocol.
//! - [`admission`]: revoked and (in a private mesh) not admitted peers denied at connection establishment.
//! - [`ip_limit`]: a cap on inbound connections per remote IP.
//! - [`nat`]: NAT traversal: UPnP, AutoNAT v2, circuit relay v2 (client and server), DCUtR hole punching,
//!   QUIC beside TCP; `[network.nat]`.
//! - [`inbound`]: bounds on manifest reads in progress and on bytes of answers waiting to be sent.
//! - [`answers`]: cached encodings of the answers to `Manifest` and `Sync` requests.
//! - [`protocol`]: the chunk-transfer wire protocol.
//! - [`provider_store`]: the Kademlia record store, bounded per peer, never dropping own records.
//! - [`node`]: the event loop.
//! - [`client`]: the handle and the status types it returns.
//! - [`fleet`]: progress reports gossiped by every node, and the fleet view built from them.
//! - [`pacer`]: when a node sends its report (every interval, and soon after a change of state).
//! - [`rates`]: the rates a report carries, measured over at least 10 s.
//! - [`snapshot`]: the dashboard's read of the node (fleet view, reports, catalogue log) in one command.
//! - [`metrics`]: `cinemesh_*` Prometheus metrics.

/// `handle_established_inbound_connection` and `handle_established_outbound_connection` of a behaviour
/// that speaks no protocol (`dummy::ConnectionHandler`) and refuses no established connection.
macro_rules! no_connection_handler {
    () => {
        fn handle_established_inbound_connection(
            &mut self,
            _: libp2p::swarm::ConnectionId,
            _: libp2p::PeerId,
            _: &libp2p::Multiaddr,
            _: &libp2p::Multiaddr,
        ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
            Ok(libp2p::swarm::dummy::ConnectionHandler)
        }

        fn handle_established_outbound_connection(
            &mut self,
            _: libp2p::swarm::ConnectionId,
            _: libp2p::PeerId,
            _: &libp2p::Multiaddr,
            _: libp2p::core::Endpoint,
            _: libp2p::core::transport::PortUse,
        ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
            Ok(libp2p::swarm::dummy::ConnectionHandler)
        }
    };
}

pub mod admission;
pub mod answers;
pub mod behaviour;
pub mod client;
pub mod fleet;
pub mod inbound;
pub mod ip_limit;
pub mod metrics;
pub mod nat;
pub mod node;
pub mod pacer;
pub mod protocol;
pub mod provider_store;
pub mod rates;
pub mod snapshot;

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{identity::Keypair, Multiaddr};

use crate::catalogue::DistributorKey;
use crate::config::{GossipConfig, PolicyConfig, TransferConfig};

pub use client::Client;
pub use node::Node;

/// What a node does in the mesh.
pub use crate::core::engine::Role;

/// Deliberate misbehaviour, for tests of the mesh's defences only.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte of every chunk served.
    CorruptUploads,
}

/// Everything the network layer needs; the node maps its config file onto this.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's libp2p identity.
    pub keypair: Keypair,
    /// Where metadata and fetched content live.
    pub data_dir: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through (with `/p2p/<peer id>`); retried with backoff.
    pub bootstrap: Vec<Multiaddr>,
    /// mDNS on the LAN.
    pub mdns: bool,
    /// Established connections at most.
    pub max_connections: u32,
    /// Established connections per peer at most. A relayed connection, the direct one replacing it (one
    /// dialed from each side when both punch at once) and an AutoNAT dial-back each way (two nodes that
    /// test their addresses with each other at once) can overlap: below 5, a dial-back is denied and
    /// AutoNAT marks a reachable address unreachable until it tests it again.
    pub max_connections_per_peer: u32,
    /// Inbound connections (pending or established) per remote IP at most; loopback is not counted.
    pub max_connections_per_ip: u32,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// Serve catalogue and content only to admitted peers; use signed locality.
    pub private: bool,
    /// Pre-shared key (TCP only).
    pub psk: Option<libp2p::pnet::PreSharedKey>,
    /// Role.
    pub role: Role,
    /// Human name.
    pub name: Option<String>,
    /// Self-declared ISP.
    pub isp: Option<String>,
    /// Self-declared site.
    pub site: Option<String>,
    /// Trusted distributor keys.
    pub trusted: Vec<DistributorKey>,
    /// `[gossip]`.
    pub gossip: GossipConfig,
    /// `[transfer]`.
    pub transfer: TransferConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// Free space always left on the disk.
    pub reserve: u64,
    /// Most bytes of fetched content to keep (`storage.capacity`); contents no longer targeted here are
    /// evicted to make room, and beyond that new content is refused.
    pub capacity: Option<u64>,
    /// `[network.nat]`: UPnP, AutoNAT, relays, hole punching, QUIC.
    pub nat: nat::NatConfig,
    /// Bytes of answers (manifests, catalogue entries) waiting to be sent, per peer and in all, at most.
    pub inbound_bytes: inbound::ByteLimits,
    /// Test-only misbehaviour.
    #[doc(hidden)]
    pub fault: Option<Fault>,
    /// Record the kinds of engine inputs and outputs (`Client::engine_kinds`), for the parity test.
    #[doc(hidden)]
    pub record_engine: bool,
}

impl Config {
    /// A configuration with the given identity and data directory, listening on an ephemeral loopback
    /// port, no mDNS, everything else default. Handy for tests and the demo.
    pub fn loopback(keypair: Keypair, data_dir: PathBuf) -> Self {
        Self {
            keypair,
            data_dir,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            mdns: false,
            max_connections: 256,
            max_connections_per_peer: 5,
            max_connections_per_ip: 16,
            idle_timeout: Duration::from_secs(300),
            private: false,
            psk: None,
            role: Role::Cinema,
            name: None,
            isp: None,
            site: None,
            trusted: Vec::new(),
            gossip: GossipConfig::default(),
            transfer: TransferConfig::default(),
            policy: PolicyConfig::default(),
            reserve: 0,
            capacity: None,
            // No router to ask on loopback.
            nat: nat::NatConfig { upnp: false, ..Default::default() },
            inbound_bytes: inbound::ByteLimits::default(),
            fault: None,
            record_engine: false,
        }
    }
}

/// Why the network layer failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Building the swarm failed.
    #[error("network setup: {0}")]
    Setup(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The node's event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// A request to the node was refused.
    #[error("{0}")]
    Refused(String),
}
