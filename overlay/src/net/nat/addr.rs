//! What a multiaddr says about the connection behind it, and the QUIC twins of TCP listen addresses.

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::core::Link;

/// Whether the address goes through a circuit relay (`/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The kind of a connection whose remote address is `addr` (hole punching is told apart by the caller,
/// which sees DCUtR's events).
pub fn link_of(addr: &Multiaddr) -> Link {
    if is_relayed(addr) {
        Link::Relayed
    } else if addr.iter().any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic)) {
        Link::Quic
    } else {
        Link::Tcp
    }
}

/// For each `/ip4|ip6/<ip>/tcp/<port>` listen address, `/ip4|ip6/<ip>/udp/<port>/quic-v1`: QUIC listens
/// on the same port number as TCP, so one firewall rule per protocol covers both. Other addresses have
/// no twin; a QUIC address already listed is not repeated.
pub fn quic_twins(listen: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for a in listen {
        let parts: Vec<Protocol<'_>> = a.iter().collect();
        let (ip, port) = match parts.as_slice() {
            [ip @ (Protocol::Ip4(_) | Protocol::Ip6(_)), Protocol::Tcp(port)] => (ip.clone(), *port),
            _ => continue,
        };
        let twin = Multiaddr::empty().with(ip).with(Protocol::Udp(port)).with(Protocol::QuicV1);
        if !listen.contains(&twin) && !out.contains(&twin) {
            out.push(twin);
        }
    }
    out
}

/// Whether a listen address a peer announced (identify) is worth keeping for Kademlia, given the remote
/// address `seen_at` of our connection to that peer. A loopback address only helps a peer on this host,
/// and a private (or link-local) one only a peer reached over a private network: a peer reached from a
/// public address (or through a relay) is elsewhere, where its private address may be another host's,
/// and a dial that lands on the wrong peer id fails the whole dial, the relayed address included.
pub fn worth_keeping(addr: &Multiaddr, seen_at: Option<&Multiaddr>) -> bool {
    use std::net::IpAddr;
    let Some(ip) = crate::net::ip_limit::ip_of(addr) else { return true };
    if is_relayed(addr) {
        return true;
    }
    let seen = seen_at.and_then(|s| if is_relayed(s) { None } else { crate::net::ip_limit::ip_of(s) });
    let private = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_link_local() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_loopback() {
        seen.is_some_and(|s| s.is_loopback())
    } else if private(ip) {
        seen.is_some_and(|s| s.is_loopback() || private(s))
    } else {
        true
    }
}

/// The address to reserve a slot at on relay `relay`, reached at `remote` (our connection's remote
/// address): `<remote>/p2p/<relay>/p2p-circuit`. `None` when `remote` is itself relayed.
pub fn circuit_listen_addr(remote: &Multiaddr, relay: libp2p::PeerId) -> Option<Multiaddr> {
    if is_relayed(remote) {
        return None;
    }
    let mut a: Multiaddr = remote.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    a.push(Protocol::P2p(relay));
    a.push(Protocol::P2pCircuit);
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn links_and_twins() {
        let relay = libp2p::PeerId::random();
        let circuit = ma(&format!("/ip4/203.0.113.1/tcp/4710/p2p/{relay}/p2p-circuit"));
        assert_eq!(link_of(&circuit), Link::Relayed);
        assert_eq!(link_of(&ma("/ip4/10.0.0.1/udp/4710/quic-v1")), Link::Quic);
        assert_eq!(link_of(&ma("/ip4/10.0.0.1/tcp/4710")), Link::Tcp);
        assert_eq!(
            quic_twins(&[ma("/ip4/0.0.0.0/tcp/4710"), ma("/dns4/x/tcp/1"), ma("/ip6/::/tcp/0")]),
            vec![ma("/ip4/0.0.0.0/udp/4710/quic-v1"), ma("/ip6/::/udp/0/quic-v1")]
        );
        assert!(quic_twins(&[ma("/ip4/0.0.0.0/tcp/1"), ma("/ip4/0.0.0.0/udp/1/quic-v1")]).is_empty());
        assert_eq!(circuit_listen_addr(&ma("/ip4/203.0.113.1/tcp/4710"), relay), Some(circuit));
        assert_eq!(circuit_listen_addr(&ma("/ip4/203.0.113.1/tcp/4710/p2p-circuit"), relay), None);
    }

    #[test]
    fn private_and_loopback_addresses_are_kept_only_for_peers_near_by() {
        let (lo, lan, public) =
            (ma("/ip4/127.0.0.1/tcp/1"), ma("/ip4/10.2.0.2/tcp/1"), ma("/ip4/11.0.0.12/tcp/1"));
        let relay = libp2p::PeerId::random();
        let circuit = ma(&format!("/ip4/11.0.0.1/tcp/4710/p2p/{relay}/p2p-circuit"));
        // A peer seen from a public address: only its public and relayed addresses.
        let far = Some(&public);
        assert!(!worth_keeping(&lo, far) && !worth_keeping(&lan, far));
        assert!(worth_keeping(&public, far) && worth_keeping(&circuit, far));
        assert!(!worth_keeping(&lan, Some(&circuit)), "reached through a relay: elsewhere");
        // On the same private network (the lab), or on this host (the loopback tests).
        assert!(worth_keeping(&lan, Some(&ma("/ip4/10.201.0.3/tcp/1"))));
        assert!(worth_keeping(&lo, Some(&lo)) && worth_keeping(&lan, Some(&lo)));
        assert!(worth_keeping(&ma("/dns4/seed.example.net/tcp/1"), far));
    }
}
