//! The relay client, kept alive when a reservation is answered after the node gave it back.
//!
//! A node that becomes reachable directly gives its relay reservations back (`Swarm::remove_listener`
//! in `node/nat.rs`). libp2p-relay 0.22's client then forgets the reservation's address and tells the
//! connection to reset, but a reservation request already in flight (the first one, or a renewal) is
//! still answered, and the answer reaches the client, which finds no address for the connection and
//! panics (`priv_client.rs`: "Relay connection exist"), taking the node's swarm task with it. CI saw
//! it on 2026-12-04: a cinema of the dashboard test's mesh was confirmed reachable by AutoNAT while its
//! first reservation was on the wire.
//!
//! [`RelayClient`] remembers the connections to a relay whose reservation the node gave back and drops
//! an acceptance that arrives on one of them, until the client reserves on that connection again. The
//! relay client's handler types are private to libp2p-relay, so the two messages are recognised by
//! their `Debug` form; the test below fails if a new libp2p-relay renames them.

use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};

use libp2p::relay;
use libp2p::swarm::{
    ConnectionClosed, ConnectionId, DialFailure, FromSwarm, NetworkBehaviour, NotifyHandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;
use tracing::debug;

/// The relay client behaviour with [`RelayClient::give_back`].
pub struct RelayClient {
    inner: relay::client::Behaviour,
    /// Connections (established or being dialled) and their peer: at most the swarm's connection limits.
    connections: HashMap<ConnectionId, PeerId>,
    /// Connections whose reservation was given back and not asked for again: a subset of `connections`.
    given_back: HashSet<ConnectionId>,
    /// Reservations asked of relays (first ones and renewals on a new listener).
    reservations_asked: u64,
    /// Acceptances that arrived after their reservation was given back.
    late_acceptances: u64,
}

impl RelayClient {
    /// Wraps the relay client the swarm builder made.
    pub fn new(inner: relay::client::Behaviour) -> Self {
        Self {
            inner,
            connections: HashMap::new(),
            given_back: HashSet::new(),
            reservations_asked: 0,
            late_acceptances: 0,
        }
    }

    /// The node is giving back its reservation on `relay` (it is about to remove the listener): an
    /// acceptance still on the way on any connection to it is dropped.
    pub fn give_back(&mut self, relay: PeerId) {
        let on_it = self.connections.iter().filter(|(_, p)| **p == relay).map(|(c, _)| *c);
        self.given_back.extend(on_it);
    }

    /// Reservations asked of relays on connections already up (one per listener on a relay).
    pub fn reservations_asked(&self) -> u64 {
        self.reservations_asked
    }

    /// Acceptances dropped because their reservation had been given back.
    pub fn late_acceptances(&self) -> u64 {
        self.late_acceptances
    }
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient").field("given_back", &self.given_back.len()).finish()
    }
}

impl NetworkBehaviour for RelayClient {
    type ConnectionHandler = <relay::client::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::client::Event;

    forward_connection_setup!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections.insert(e.connection_id, e.peer_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.connections.remove(connection_id);
                self.given_back.remove(connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        if self.given_back.contains(&id) && format!("{event:?}").contains("ReservationReqAccepted") {
            self.late_acceptances += 1;
            debug!(relay = %peer, "a reservation was accepted after it was given back: ignored");
            return;
        }
        self.inner.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let action = std::task::ready!(self.inner.poll(cx));
        match &action {
            ToSwarm::Dial { opts } => {
                if let Some(peer) = opts.get_peer_id() {
                    self.connections.insert(opts.connection_id(), peer);
                }
            }
            ToSwarm::NotifyHandler { handler: NotifyHandler::One(id), event, .. }
                if format!("{event:?}").contains("In::Reserve") =>
            {
                self.reservations_asked += 1;
                self.given_back.remove(id);
            }
            _ => {}
        }
        Poll::Ready(action)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{identity::Keypair, multiaddr::Protocol, noise, tcp, yamux, Swarm, SwarmBuilder};

    use super::*;

    fn relay_server() -> Swarm<relay::Behaviour> {
        SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .expect("tcp")
            .with_behaviour(|key| relay::Behaviour::new(key.public().to_peer_id(), Default::default()))
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build()
    }

    fn client() -> Swarm<RelayClient> {
        SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .expect("tcp")
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .expect("relay client")
            .with_behaviour(|_, relay| RelayClient::new(relay))
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build()
    }

    /// Drives both swarms until `done` says the client reached what the test waits for (10 s at most),
    /// asked after each client event and whenever both swarms have nothing more to do (a dropped
    /// acceptance is no event).
    async fn drive(
        server: &mut Swarm<relay::Behaviour>,
        client: &mut Swarm<RelayClient>,
        what: &str,
        mut done: impl FnMut(Option<&SwarmEvent<relay::client::Event>>, &Swarm<RelayClient>) -> bool,
    ) {
        let until = std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(_)) = server.poll_next_unpin(cx) {}
            while let Poll::Ready(Some(e)) = client.poll_next_unpin(cx) {
                if done(Some(&e), client) {
                    return Poll::Ready(());
                }
            }
            if done(None, client) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::time::timeout(Duration::from_secs(10), until)
            .await
            .unwrap_or_else(|_| panic!("{what} within 10 s"));
    }

    /// The race CI hit: the node gives a reservation back while the relay is answering it. Unguarded,
    /// libp2p-relay's client panics on the answer; guarded, the answer is dropped, and a later
    /// reservation on the same connection is accepted as usual.
    #[tokio::test]
    async fn a_reservation_answered_after_it_was_given_back_is_ignored() {
        let mut server = relay_server();
        server.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")).expect("listen");
        let server_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        // A relay serves once it has an external address.
        server.add_external_address(server_addr.clone());
        let relay_id = *server.local_peer_id();
        let mut client = client();
        client.dial(server_addr.clone()).expect("dial the relay");
        drive(&mut server, &mut client, "connected to the relay", |e, _| {
            matches!(e, Some(SwarmEvent::ConnectionEstablished { peer_id, .. }) if *peer_id == relay_id)
        })
        .await;

        let circuit = server_addr.with(Protocol::P2p(relay_id)).with(Protocol::P2pCircuit);
        let first = client.listen_on(circuit.clone()).expect("listen through the relay");
        // The client asks for the reservation; the relay, not polled, cannot answer yet.
        let asked = std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(_)) = client.poll_next_unpin(cx) {}
            if client.behaviour().reservations_asked() == 1 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::time::timeout(Duration::from_secs(10), asked)
            .await
            .expect("the reservation asked within 10 s");
        client.behaviour_mut().give_back(relay_id);
        assert!(client.remove_listener(first), "the circuit listener exists");
        drive(&mut server, &mut client, "the late acceptance dropped", |_, c| {
            c.behaviour().late_acceptances() == 1
        })
        .await;

        client.listen_on(circuit).expect("listen through the relay again");
        drive(&mut server, &mut client, "the second reservation accepted", |e, _| {
            matches!(
                e,
                Some(SwarmEvent::Behaviour(relay::client::Event::ReservationReqAccepted { relay_peer_id, .. }))
                    if *relay_peer_id == relay_id
            )
        })
        .await;
        assert_eq!(client.behaviour().late_acceptances(), 1);
        assert_eq!(client.behaviour().reservations_asked(), 2);
    }
}
