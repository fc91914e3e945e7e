//! `[network.nat]`: how a node gets reached behind NAT, and what it does for others as a relay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{human_duration, ByteSize, ConfigError};
use crate::net::Role;

/// `[network.nat]`. Defaults suit a cinema behind a home or office router; superseeders and the
/// distributor also serve as relays (see [`relay_server_on`](NatConfig::relay_server_on)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// Ask the router to forward the listen port (UPnP IGD). Harmless where no router answers.
    pub upnp: bool,
    /// Ask peers to dial this node back (AutoNAT v2) to learn whether it is reachable, and answer such
    /// asks from others. Confirmed addresses are published through identify and Kademlia.
    pub autonat: bool,
    /// Open direct connections through both sides' NATs (DCUtR) over a relayed connection.
    pub hole_punching: bool,
    /// Listen on QUIC (UDP) beside each TCP listen address, on the same port. Ignored with a pre-shared
    /// key (`network.psk_file`), which works over TCP only.
    pub quic: bool,
    /// While this node is not known to be reachable, reserve a slot on relays (peers that offer it) and
    /// listen on their `/p2p-circuit` addresses, so that others can reach it to hole-punch.
    pub relay_client: bool,
    /// Relays to hold a reservation on at once (0..=8).
    pub max_relays: u32,
    /// How long a relay that refused or ended a reservation waits before this node asks it again
    /// (1s..=1h). Other relays it knows are asked at once.
    #[serde(with = "human_duration")]
    pub relay_retry: Duration,
    /// Serve as a relay for others. Unset: on for superseeders and the distributor, off for cinemas.
    pub relay_server: Option<bool>,
    /// As a relay: reservations held at once (one per node behind NAT that relies on this relay).
    pub relay_max_reservations: u32,
    /// As a relay: circuits (relayed connections) at once.
    pub relay_max_circuits: u32,
    /// As a relay: bytes one circuit may carry (both ways) before it is closed. Hole punching needs little
    /// (identify, a hello, the DCUtR exchange, some catalogue gossip); raise it only together with the
    /// fetchers' `relay_film_budget`.
    pub relay_max_circuit_bytes: ByteSize,
    /// As a relay: how long one circuit may last.
    #[serde(with = "human_duration")]
    pub relay_max_circuit_duration: Duration,
    /// Bytes of film this node may fetch over relayed connections in all. 0 (the default): never; film
    /// then comes only over direct (or hole-punched) connections.
    pub relay_film_budget: ByteSize,
    /// Addresses at which this node is known to be reachable (e.g. a superseeder's public
    /// `/ip4/203.0.113.7/tcp/4710`), published at once without waiting for AutoNAT.
    pub external_addresses: Vec<String>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            upnp: true,
            autonat: true,
            hole_punching: true,
            quic: true,
            relay_client: true,
            max_relays: 2,
            relay_retry: Duration::from_secs(60),
            relay_server: None,
            relay_max_reservations: 512,
            relay_max_circuits: 64,
            relay_max_circuit_bytes: ByteSize(1 << 20),
            relay_max_circuit_duration: Duration::from_secs(120),
            relay_film_budget: ByteSize(0),
            external_addresses: Vec::new(),
        }
    }
}

impl NatConfig {
    /// Whether a node of `role` serves as a relay.
    pub fn relay_server_on(&self, role: Role) -> bool {
        self.relay_server.unwrap_or(matches!(role, Role::Superseeder | Role::Distributor))
    }

    /// The addresses of [`external_addresses`](Self::external_addresses), parsed.
    pub fn external(&self) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
        self.external_addresses
            .iter()
            .map(|a| {
                a.parse().map_err(|e| {
                    ConfigError::new(
                        "network.nat.external_addresses",
                        format!("{a:?} is not a multiaddr: {e}"),
                    )
                })
            })
            .collect()
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |f: &str| format!("network.nat.{f}");
        if self.max_relays > 8 {
            return Err(ConfigError::new(field("max_relays"), "must be between 0 and 8"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.relay_retry) {
            return Err(ConfigError::new(field("relay_retry"), "must be between 1s and 1h"));
        }
        if !(1..=100_000).contains(&self.relay_max_reservations) {
            return Err(ConfigError::new(field("relay_max_reservations"), "must be between 1 and 100000"));
        }
        if !(1..=10_000).contains(&self.relay_max_circuits) {
            return Err(ConfigError::new(field("relay_max_circuits"), "must be between 1 and 10000"));
        }
        if self.relay_max_circuit_bytes.0 < 64 * 1024 {
            return Err(ConfigError::new(
                field("relay_max_circuit_bytes"),
                "must be at least 64KiB (hole punching needs that much)",
            ));
        }
        if self.relay_max_circuit_duration < Duration::from_secs(10) {
            return Err(ConfigError::new(field("relay_max_circuit_duration"), "must be at least 10s"));
        }
        self.external()?;
        Ok(())
    }

    /// The relay server's limits: libp2p's defaults, with reservations, circuits, bytes and duration from
    /// this section.
    pub fn relay_limits(&self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.relay_max_reservations as usize,
            max_circuits: self.relay_max_circuits as usize,
            max_circuit_bytes: self.relay_max_circuit_bytes.0,
            max_circuit_duration: self.relay_max_circuit_duration,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_relays_follow_the_role() {
        let c = NatConfig::default();
        c.validate().unwrap();
        assert!(c.relay_server_on(Role::Superseeder) && c.relay_server_on(Role::Distributor));
        assert!(!c.relay_server_on(Role::Cinema));
        let c = NatConfig { relay_server: Some(true), ..Default::default() };
        assert!(c.relay_server_on(Role::Cinema));
        let c = NatConfig { external_addresses: vec!["nope".into()], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "network.nat.external_addresses");
        let c = NatConfig { relay_retry: Duration::from_millis(500), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "network.nat.relay_retry");
        let c = NatConfig { relay_max_circuit_bytes: ByteSize(1), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "network.nat.relay_max_circuit_bytes");
        let limits = NatConfig::default().relay_limits();
        assert_eq!((limits.max_circuits, limits.max_circuit_bytes), (64, 1 << 20));
    }
}
