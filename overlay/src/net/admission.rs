//! Admission at connection establishment: a revoked peer, or, in a private mesh with a member list, a
//! peer not admitted, is denied its connection the moment the security handshake names it, before any
//! behaviour (identify, Kademlia, gossipsub, the chunk protocol) gets a handler for it. Closing such a
//! connection later, when the event loop sees it established, left a moment in which an outsider could
//! learn the node's addresses and protocols, or its routing table.
//!
//! The [`Gate`] is a copy of what the catalogue says, which the node sets again whenever an Admit or
//! Revoke is applied. Its sets hold only peers the catalogue names (bounded by the catalogue's log).

use std::collections::HashSet;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

use crate::catalogue::Catalogue;

/// Who may hold a connection, as the catalogue says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Only admitted peers (a private mesh whose catalogue lists members).
    closed: bool,
    admitted: HashSet<PeerId>,
    revoked: HashSet<PeerId>,
}

impl Gate {
    /// The gate of `catalogue`: revoked peers never; when `private` and the catalogue lists members,
    /// only them.
    pub fn new(catalogue: &Catalogue, private: bool) -> Self {
        let admitted: HashSet<PeerId> = catalogue.members().filter_map(|m| m.peer.parse().ok()).collect();
        let revoked = catalogue.revoked().filter_map(|p| p.parse().ok()).collect();
        Self { closed: private && !admitted.is_empty(), admitted, revoked }
    }

    /// Whether `peer` may hold a connection.
    pub fn allows(&self, peer: &PeerId) -> bool {
        !self.revoked.contains(peer) && (!self.closed || self.admitted.contains(peer))
    }
}

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} is revoked, or not admitted to this private mesh: connection denied")]
pub struct NotAdmitted {
    /// The peer.
    pub peer: PeerId,
}

/// The libp2p behaviour around [`Gate`]. Put it before every behaviour that speaks to peers.
#[derive(Debug, Default)]
pub struct Behaviour {
    gate: Gate,
}

impl Behaviour {
    /// Replaces the gate (after an Admit or Revoke was applied). Connections already established are
    /// not touched: the node closes those itself.
    pub fn set(&mut self, gate: Gate) {
        self.gate = gate;
    }

    fn check(&self, peer: PeerId) -> Result<THandler<Self>, ConnectionDenied> {
        if self.gate.allows(&peer) {
            Ok(dummy::ConnectionHandler)
        } else {
            Err(ConnectionDenied::new(NotAdmitted { peer }))
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_gate_with_members_lets_only_them_in_and_never_the_revoked() {
        let (member, outsider, revoked) = (PeerId::random(), PeerId::random(), PeerId::random());
        let open = Gate { revoked: [revoked].into(), ..Gate::default() };
        assert!(open.allows(&outsider) && !open.allows(&revoked));
        let closed = Gate { closed: true, admitted: [member].into(), revoked: [revoked].into() };
        assert!(closed.allows(&member));
        assert!(!closed.allows(&outsider) && !closed.allows(&revoked));
        let b = Behaviour { gate: closed };
        assert!(b.check(member).is_ok());
        let denied = b.check(outsider).err();
        assert!(denied.is_some_and(|e| e.downcast_ref::<NotAdmitted>().is_some_and(|n| n.peer == outsider)));
    }
}
