//! NAT traversal: how a node behind a home router or a firewall is reached.
//!
//! ```text
//!  cinema behind NAT                      superseeder / distributor (public)          cinema behind NAT
//!  ─────────────────                      ──────────────────────────────────          ─────────────────
//!  UPnP: ask the router for a port ──▶ (router)
//!  dial out ───────────────────────────▶ identify: "you are 198.51.100.7:4710"
//!  AutoNAT v2: "dial me back there" ───▶ dial-back from a fresh port: reachable or not
//!  not reachable: reserve a slot ──────▶ relay server (circuit relay v2)
//!  listen on <relay>/p2p-circuit                                    ◀── dial <relay>/p2p-circuit/p2p/<us>
//!  DCUtR over the relayed connection: both sides dial each other's observed address at once
//!  ══════════════ direct (hole-punched) connection ══════════════▶  the relayed one is closed
//! ```
//!
//! - [`config`]: `[network.nat]`: UPnP, AutoNAT, hole punching, QUIC, the relay server's limits, the
//!   relay budget for film bytes, addresses the operator declares.
//! - [`metrics`]: reachability, chunk bytes per connection kind, hole punches, relay reservations.
//! - [`autonat`]: the AutoNAT v2 client with the node's settings; the workspace patches the crate so that
//!   an address is tested again after a lost or failed test instead of never.
//! - [`probe`]: the AutoNAT client hears only of candidates a peer could dial straight back (no relay
//!   circuits), so it never asks for a dial-back that cannot answer; the relay server hears only of
//!   direct external addresses, so a node relays once it is reachable directly.
//! - [`reservation`]: the relay client, which ignores a reservation accepted after the node gave it
//!   back (libp2p-relay 0.22 panics on it).
//! - [`duplicate`]: one direct connection per peer: which redundant ones this node closes (request-response
//!   spreads requests over all of them, and a TCP connection left idle restarts slowly).
//! - [`addr`]: what a multiaddr says: relayed or direct, TCP or QUIC, and the QUIC listen addresses that
//!   go beside the TCP ones.
//!
//! Decisions about which peer to fetch from stay in the engine: the node tells it how each session is
//! carried (`Engine::link`), and the engine keeps film bytes off relays unless the operator gave a
//! budget. How the node is reachable is tracked by the sans-io
//! [`Tracker`](crate::core::reachability::Tracker) from the events handled in `node/nat.rs`.

/// The connection set-up hooks of `NetworkBehaviour`, passed unchanged to the behaviour in field `$f`:
/// for the wrappers here ([`probe::DirectAddrs`], [`reservation::RelayClient`]), which only look at
/// swarm events, handler events and what the inner behaviour asks of the swarm.
macro_rules! forward_connection_setup {
    ($f:tt) => {
        fn handle_pending_inbound_connection(
            &mut self,
            id: libp2p::swarm::ConnectionId,
            local: &libp2p::Multiaddr,
            remote: &libp2p::Multiaddr,
        ) -> Result<(), libp2p::swarm::ConnectionDenied> {
            self.$f.handle_pending_inbound_connection(id, local, remote)
        }

        fn handle_established_inbound_connection(
            &mut self,
            id: libp2p::swarm::ConnectionId,
            peer: libp2p::PeerId,
            local: &libp2p::Multiaddr,
            remote: &libp2p::Multiaddr,
        ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
            self.$f.handle_established_inbound_connection(id, peer, local, remote)
        }

        fn handle_pending_outbound_connection(
            &mut self,
            id: libp2p::swarm::ConnectionId,
            peer: Option<libp2p::PeerId>,
            addresses: &[libp2p::Multiaddr],
            role: libp2p::core::Endpoint,
        ) -> Result<Vec<libp2p::Multiaddr>, libp2p::swarm::ConnectionDenied> {
            self.$f.handle_pending_outbound_connection(id, peer, addresses, role)
        }

        fn handle_established_outbound_connection(
            &mut self,
            id: libp2p::swarm::ConnectionId,
            peer: libp2p::PeerId,
            addr: &libp2p::Multiaddr,
            role: libp2p::core::Endpoint,
            port_use: libp2p::core::transport::PortUse,
        ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
            self.$f.handle_established_outbound_connection(id, peer, addr, role, port_use)
        }
    };
}

pub mod addr;
pub mod autonat;
pub mod config;
pub mod duplicate;
pub mod metrics;
pub mod probe;
pub mod reservation;

pub use config::NatConfig;
