//! How other nodes can reach this one, derived from what the NAT machinery reports (sans-io: the body
//! feeds events, [`Tracker::state`] answers).
//!
//! ```text
//!  AutoNAT confirmed an address that is not a UPnP mapping ─▶ Public
//!  UPnP mapped a port (and it is confirmed)                 ─▶ Mapped
//!  a hole-punched connection is up                          ─▶ HolePunched
//!  a relay reservation is held                              ─▶ RelayedOnly
//!  AutoNAT probes failed, nothing of the above              ─▶ Unreachable
//!  nothing known yet                                        ─▶ Unknown
//! ```
//!
//! The first line that holds wins. Only `Public` and `Mapped` nodes accept connections from anyone;
//! `HolePunched` and `RelayedOnly` nodes serve others only through hole punching (or a relay, within its
//! budget); an `Unreachable` one only uploads over connections it opened itself.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Most addresses tracked (confirmed and mapped each); further ones are ignored.
pub const MAX_ADDRESSES: usize = 32;

/// How this node is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reachability {
    /// Not known yet (no AutoNAT answer, no mapping, no relay).
    #[default]
    Unknown,
    /// Dialable at a confirmed public address.
    Public,
    /// Dialable through a port mapping the router granted (UPnP).
    Mapped,
    /// Not dialable, but hole punching opened a direct connection.
    HolePunched,
    /// Not dialable; reachable only through a relay reservation.
    RelayedOnly,
    /// Not dialable, and no relay reservation.
    Unreachable,
}

impl Reachability {
    /// Every state, in display order.
    pub const ALL: [Reachability; 6] = [
        Reachability::Public,
        Reachability::Mapped,
        Reachability::HolePunched,
        Reachability::RelayedOnly,
        Reachability::Unreachable,
        Reachability::Unknown,
    ];

    /// The label used in status, metrics and the fleet view.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Mapped => "mapped",
            Reachability::HolePunched => "hole-punched",
            Reachability::RelayedOnly => "relayed-only",
            Reachability::Unreachable => "unreachable",
        }
    }

    /// A one-byte code (the fleet report's trailer); [`from_code`](Self::from_code) reverses it.
    pub fn code(self) -> u8 {
        match self {
            Reachability::Unknown => 0,
            Reachability::Public => 1,
            Reachability::Mapped => 2,
            Reachability::HolePunched => 3,
            Reachability::RelayedOnly => 4,
            Reachability::Unreachable => 5,
        }
    }

    /// The state of a code; `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether others can open connections to this node without help.
    pub fn dialable(self) -> bool {
        matches!(self, Reachability::Public | Reachability::Mapped)
    }
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts reachability is derived from. Addresses are opaque strings (multiaddrs in the node).
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    confirmed: BTreeSet<String>,
    mapped: BTreeSet<String>,
    relays: u32,
    hole_punched: u32,
    probes_failed: u32,
}

impl Tracker {
    /// An address was confirmed reachable (AutoNAT, or set by the operator).
    pub fn confirmed(&mut self, addr: &str) {
        if self.confirmed.len() < MAX_ADDRESSES {
            self.confirmed.insert(addr.to_owned());
        }
        self.probes_failed = 0;
    }

    /// A confirmed address expired.
    pub fn expired(&mut self, addr: &str) {
        self.confirmed.remove(addr);
    }

    /// The router mapped a port to this node (UPnP) at `addr`.
    pub fn mapped(&mut self, addr: &str) {
        if self.mapped.len() < MAX_ADDRESSES {
            self.mapped.insert(addr.to_owned());
        }
    }

    /// A mapping expired or the gateway went away.
    pub fn unmapped(&mut self, addr: &str) {
        self.mapped.remove(addr);
    }

    /// Every mapping is gone (no gateway, or it refused).
    pub fn no_gateway(&mut self) {
        self.mapped.clear();
    }

    /// An AutoNAT probe of one of our addresses failed.
    pub fn probe_failed(&mut self) {
        self.probes_failed = self.probes_failed.saturating_add(1);
    }

    /// A relay accepted (`true`) or dropped (`false`) our reservation.
    pub fn relay(&mut self, up: bool) {
        self.relays = if up { self.relays.saturating_add(1) } else { self.relays.saturating_sub(1) };
    }

    /// A hole-punched connection opened (`true`) or closed (`false`).
    pub fn hole_punched(&mut self, up: bool) {
        self.hole_punched =
            if up { self.hole_punched.saturating_add(1) } else { self.hole_punched.saturating_sub(1) };
    }

    /// Relay reservations held.
    pub fn relays(&self) -> u32 {
        self.relays
    }

    /// The confirmed addresses.
    pub fn addresses(&self) -> impl Iterator<Item = &str> + '_ {
        self.confirmed.iter().map(String::as_str)
    }

    /// How this node is reachable now (see the module doc).
    pub fn state(&self) -> Reachability {
        let mapped_confirmed = self.confirmed.iter().any(|a| self.mapped.contains(a));
        if self.confirmed.iter().any(|a| !self.mapped.contains(a)) {
            Reachability::Public
        } else if mapped_confirmed || !self.mapped.is_empty() {
            Reachability::Mapped
        } else if self.hole_punched > 0 {
            Reachability::HolePunched
        } else if self.relays > 0 {
            Reachability::RelayedOnly
        } else if self.probes_failed > 0 {
            Reachability::Unreachable
        } else {
            Reachability::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fact_that_holds_decides() {
        let mut t = Tracker::default();
        assert_eq!(t.state(), Reachability::Unknown);
        t.probe_failed();
        assert_eq!(t.state(), Reachability::Unreachable);
        t.relay(true);
        assert_eq!(t.state(), Reachability::RelayedOnly);
        t.hole_punched(true);
        assert_eq!(t.state(), Reachability::HolePunched);
        t.mapped("/ip4/203.0.113.5/tcp/4710");
        assert_eq!(t.state(), Reachability::Mapped);
        t.confirmed("/ip4/203.0.113.5/tcp/4710");
        assert_eq!(t.state(), Reachability::Mapped, "a confirmed mapping is still a mapping");
        t.confirmed("/ip4/198.51.100.1/tcp/4710");
        assert_eq!(t.state(), Reachability::Public);
        t.expired("/ip4/198.51.100.1/tcp/4710");
        t.no_gateway();
        t.expired("/ip4/203.0.113.5/tcp/4710");
        t.hole_punched(false);
        assert_eq!(t.state(), Reachability::RelayedOnly);
        t.relay(false);
        t.relay(false);
        assert_eq!(t.relays(), 0, "never below zero");
    }

    #[test]
    fn codes_round_trip() {
        for r in Reachability::ALL {
            assert_eq!(Reachability::from_code(r.code()), Some(r));
        }
        assert_eq!(Reachability::from_code(200), None);
    }
}
