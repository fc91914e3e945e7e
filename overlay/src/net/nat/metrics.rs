//! `cinemesh_*` metrics of NAT traversal: reachability, chunk bytes per connection kind, hole punches,
//! relay reservations and the relay budget.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::{Link, Reachability};

/// Label set `{state=...}` (a [`Reachability`] label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `public`, `mapped`, `hole-punched`, `relayed-only`, `unreachable` or `unknown`.
    pub state: String,
}

/// Label set `{link=...}` (a [`Link`] label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// `tcp`, `quic`, `hole-punched` or `relayed`.
    pub link: String,
}

/// Label set `{result=...}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: String,
}

/// The NAT metrics.
#[derive(Debug, Clone, Default)]
pub struct NatMetrics {
    /// 1 for the node's current reachability, 0 for the others.
    pub reachability: Family<StateLabel, Gauge>,
    /// Chunk bytes received, by the kind of connection they came over.
    pub chunk_bytes_by_link: Family<LinkLabel, Counter>,
    /// Open connections, by kind.
    pub connections_by_link: Family<LinkLabel, Gauge>,
    /// Hole punches (DCUtR), by result.
    pub hole_punches: Family<ResultLabel, Counter>,
    /// Relay reservations held.
    pub relay_reservations: Gauge,
    /// Bytes of the relay film budget not yet used.
    pub relay_budget_left: Gauge,
    /// Direct connections closed because another to the same peer stays (`nat::duplicate`).
    pub duplicates_closed: Counter,
}

impl NatMetrics {
    /// Registers every metric into `registry` with the `cinemesh_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("cinemesh");
        r.register(
            "reachability",
            "How others can reach this node (1 = current state)",
            m.reachability.clone(),
        );
        r.register(
            "chunk_bytes_by_link",
            "Chunk bytes received, by connection kind (tcp, quic, hole-punched, relayed)",
            m.chunk_bytes_by_link.clone(),
        );
        r.register("connections_by_link", "Open connections, by kind", m.connections_by_link.clone());
        r.register("hole_punches", "Hole punches (DCUtR), by result", m.hole_punches.clone());
        r.register("relay_reservations", "Relay reservations held", m.relay_reservations.clone());
        r.register(
            "relay_budget_left_bytes",
            "Bytes of film still allowed over relays",
            m.relay_budget_left.clone(),
        );
        r.register(
            "duplicate_connections_closed",
            "Direct connections closed because another to the same peer stays",
            m.duplicates_closed.clone(),
        );
        m
    }

    /// Sets the reachability gauges.
    pub fn set_reachability(&self, now: Reachability) {
        for r in Reachability::ALL {
            self.reachability
                .get_or_create(&StateLabel { state: r.as_str().to_owned() })
                .set(i64::from(r == now));
        }
    }

    /// The series of one link kind.
    pub fn link(link: Link) -> LinkLabel {
        LinkLabel { link: link.as_str().to_owned() }
    }
}
