//! How a connection to a peer is carried: directly over TCP or QUIC, directly after a hole punch, or
//! through a relay. The body (the node) classifies each connection; the engine only asks whether film
//! bytes may flow over it ([`Link::is_relayed`]).

use serde::{Deserialize, Serialize};

/// The kind of one connection (or of a peer's best connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// A direct TCP connection one side dialed.
    Tcp,
    /// A direct QUIC connection one side dialed.
    Quic,
    /// A direct connection opened by hole punching (DCUtR) through both sides' NATs.
    HolePunched,
    /// A connection through a circuit relay (`/p2p-circuit`): slow, limited, metered.
    Relayed,
}

impl Link {
    /// Every kind, in display order.
    pub const ALL: [Link; 4] = [Link::Tcp, Link::Quic, Link::HolePunched, Link::Relayed];

    /// Whether the bytes go through a third node.
    pub fn is_relayed(self) -> bool {
        self == Link::Relayed
    }

    /// The label used in metrics, status and `cinemesh peers`.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Tcp => "tcp",
            Link::Quic => "quic",
            Link::HolePunched => "hole-punched",
            Link::Relayed => "relayed",
        }
    }

    /// The better of two connections to one peer: any direct one beats a relayed one; a hole-punched one
    /// is kept as such (it says how the peer was reached).
    pub fn best(self, other: Link) -> Link {
        let rank = |l: Link| match l {
            Link::Relayed => 0,
            Link::Tcp => 1,
            Link::Quic => 2,
            Link::HolePunched => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_link_beats_a_relayed_one() {
        assert_eq!(Link::Relayed.best(Link::Tcp), Link::Tcp);
        assert_eq!(Link::Quic.best(Link::Relayed), Link::Quic);
        assert_eq!(Link::Tcp.best(Link::HolePunched), Link::HolePunched);
        assert!(Link::Relayed.is_relayed() && !Link::HolePunched.is_relayed());
    }
}
