//! A cap on inbound connections per remote IP address (libp2p's `connection_limits` counts per peer id,
//! and peer ids cost nothing to make: one host could otherwise take every connection slot).
//!
//! Inbound connections are counted from the moment they are pending until they close or fail; loopback
//! addresses are not counted (the local host; tests run many nodes on 127.0.0.1). Outbound connections
//! are ours and not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::{multiaddr::Protocol, Multiaddr};
use libp2p::swarm::behaviour::{ConnectionClosed, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::PeerId;

/// The inbound connection counts per IP, without libp2p: what [`Behaviour`] decides with.
#[derive(Debug, Default)]
pub struct IpCounts {
    max_per_ip: u32,
    by_connection: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
}

/// The IP address of a multiaddr (its first `/ip4` or `/ip6` part).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

impl IpCounts {
    /// At most `max_per_ip` inbound connections per remote IP.
    pub fn new(max_per_ip: u32) -> Self {
        Self { max_per_ip, ..Self::default() }
    }

    /// Counts a new inbound connection from `remote`; `false` (not counted) if its IP is at the cap.
    pub fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> bool {
        let Some(ip) = ip_of(remote).filter(|ip| !ip.is_loopback()) else { return true };
        let n = self.per_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return false;
        }
        *n += 1;
        self.by_connection.insert(id, ip);
        true
    }

    /// A connection closed or failed.
    pub fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&id) else { return };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Inbound connections counted for `ip`.
    pub fn count(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }
}

/// Refusal of an inbound connection over the cap.
#[derive(Debug, thiserror::Error)]
#[error("too many inbound connections from {ip} (network.max_connections_per_ip = {max})")]
pub struct Exceeded {
    /// The remote IP.
    pub ip: String,
    /// The cap.
    pub max: u32,
}

/// The libp2p behaviour around [`IpCounts`].
#[derive(Debug)]
pub struct Behaviour {
    counts: IpCounts,
}

impl Behaviour {
    /// At most `max_per_ip` inbound connections per remote IP.
    pub fn new(max_per_ip: u32) -> Self {
        Self { counts: IpCounts::new(max_per_ip) }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if self.counts.admit(connection_id, remote) {
            return Ok(());
        }
        let ip = ip_of(remote).map(|ip| ip.to_string()).unwrap_or_default();
        Err(ConnectionDenied::new(Exceeded { ip, max: self.counts.max_per_ip }))
    }

    no_connection_handler!();

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.counts.release(connection_id)
            }
            _ => {}
        }
    }

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
    fn inbound_connections_are_capped_per_ip_and_freed_on_close() {
        let mut counts = IpCounts::new(2);
        let a: Multiaddr = "/ip4/203.0.113.7/tcp/5000".parse().unwrap();
        let a2: Multiaddr = "/ip4/203.0.113.7/tcp/5001".parse().unwrap();
        let b: Multiaddr = "/ip6/2001:db8::1/tcp/5000".parse().unwrap();
        let id = ConnectionId::new_unchecked;
        assert!(counts.admit(id(1), &a));
        assert!(counts.admit(id(2), &a2));
        assert!(!counts.admit(id(3), &a), "a third connection from one IP, whatever its port or peer id");
        assert!(counts.admit(id(4), &b), "another IP is not affected");
        counts.release(id(3)); // the refused one was never counted
        assert_eq!(counts.count(&ip_of(&a).unwrap()), 2);
        counts.release(id(1));
        assert!(counts.admit(id(5), &a));
        // Loopback is the local host: not counted.
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!((10..20).all(|n| counts.admit(id(n), &lo)));
    }
}
