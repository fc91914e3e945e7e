//! AutoNAT and the relay server see only addresses a peer could dial straight.
//!
//! identify turns what a peer observed into candidate external addresses, translating each of our
//! listen addresses to the observed IP, a relay's `/p2p-circuit` address included
//! (`/ip4/<our NAT's IP>/tcp/4710/p2p/<relay>/p2p-circuit`), and an observation over a relayed
//! connection is a bare `/p2p/<peer>`. AutoNAT v2 would ask a server to dial those back: a circuit
//! "dial-back" reuses the server's connection to the relay and opens a relayed connection that proves
//! nothing, which the node closes at once (a direct one is up), so the probe fails without an answer
//! and is asked again every 5 s, a relay circuit each time.
//!
//! The relay client confirms its `/p2p-circuit` listen addresses as external addresses, and a relay
//! server serves (and advertises the hop protocol) once it has any external address, handing them all
//! to the nodes that reserve with it. A superseeder still waiting for AutoNAT, holding a reservation on
//! the distributor, thus served as a relay it could only be reached through, and its cinemas listened
//! on nested circuits (`/ip4/<distributor>/tcp/4710/p2p/<distributor>/p2p-circuit/p2p/<superseeder>/
//! p2p-circuit/p2p/<cinema>`) that no one can dial.
//!
//! [`DirectAddrs`] wraps both: the AutoNAT client hears only of candidates [`worth_probing`], the relay
//! server only of direct external addresses, so a node relays once it is itself reachable directly.

use std::task::{Context, Poll};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent, THandlerOutEvent, ToSwarm};
use libp2p::{Multiaddr, PeerId};

/// Whether `addr` is one a peer could dial back directly: an IP or DNS name, then TCP or UDP with QUIC,
/// optionally our `/p2p/<id>`; never through a relay.
pub fn worth_probing(addr: &Multiaddr) -> bool {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let parts = match parts.as_slice() {
        [rest @ .., Protocol::P2p(_)] => rest,
        all => all,
    };
    matches!(
        parts,
        [
            Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_),
            Protocol::Tcp(_)
        ] | [
            Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_),
            Protocol::Udp(_),
            Protocol::QuicV1
        ]
    )
}

/// Whether [`DirectAddrs`] passes `event` on: anything but a candidate not [`worth_probing`] and an
/// external address confirmed or expired through a relay.
fn passes(event: &FromSwarm<'_>) -> bool {
    match event {
        FromSwarm::NewExternalAddrCandidate(c) => worth_probing(c.addr),
        FromSwarm::ExternalAddrConfirmed(c) => !super::addr::is_relayed(c.addr),
        FromSwarm::ExternalAddrExpired(c) => !super::addr::is_relayed(c.addr),
        _ => true,
    }
}

/// A behaviour (the AutoNAT client, the relay server) that hears of external address candidates only
/// when they are [`worth_probing`], and of external addresses only when they are direct; everything
/// else passes through unchanged.
pub struct DirectAddrs<B>(pub B);

impl<B> std::fmt::Debug for DirectAddrs<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectAddrs")
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for DirectAddrs<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    forward_connection_setup!(0);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if passes(&event) {
            self.0.on_swarm_event(event)
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        self.0.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::swarm::behaviour::{ExternalAddrConfirmed, ExternalAddrExpired};
    use libp2p::swarm::NewExternalAddrCandidate;

    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn only_direct_addresses_are_worth_probing() {
        let me = PeerId::random();
        for yes in [
            "/ip4/198.51.100.7/tcp/4710".to_string(),
            format!("/ip4/198.51.100.7/tcp/4710/p2p/{me}"),
            "/ip6/2001:db8::7/udp/4710/quic-v1".to_string(),
            "/dns4/cinema.example/tcp/4710".to_string(),
        ] {
            assert!(worth_probing(&a(&yes)), "{yes}");
        }
        let relay = PeerId::random();
        for no in [
            format!("/ip4/198.51.100.7/tcp/4710/p2p/{relay}/p2p-circuit"),
            format!("/ip4/198.51.100.7/udp/4710/quic-v1/p2p/{relay}/p2p-circuit/p2p/{me}"),
            format!("/p2p/{me}"),
            "/ip4/198.51.100.7/udp/4710".to_string(),
            "/ip4/198.51.100.7".to_string(),
            "/ip4/198.51.100.7/udp/4710/quic".to_string(),
        ] {
            assert!(!worth_probing(&a(&no)), "{no}");
        }
    }

    #[test]
    fn the_wrapped_behaviour_hears_only_direct_addresses() {
        let relay = PeerId::random();
        let direct = a("/ip4/198.51.100.7/tcp/4710");
        let circuit = a(&format!("/ip4/198.51.100.7/tcp/4710/p2p/{relay}/p2p-circuit"));
        let bare = a(&format!("/p2p/{relay}"));
        let heard: Vec<&Multiaddr> = [&circuit, &direct, &bare]
            .into_iter()
            .filter(|addr| passes(&FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr })))
            .collect();
        assert_eq!(heard, vec![&direct]);
        // External addresses: only direct ones, confirmed or expired.
        assert!(passes(&FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr: &direct })));
        assert!(!passes(&FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr: &circuit })));
        assert!(passes(&FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr: &direct })));
        assert!(!passes(&FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr: &circuit })));
    }
}
