//! NAT traversal in the node: which kind each connection is (tcp, quic, hole-punched, relayed), what
//! the engine is told about it (`Engine::link`), relay reservations while this node is not dialable,
//! AutoNAT, UPnP and DCUtR events into the reachability [`Tracker`], and bytes counted per kind.
//!
//! A direct connection to a peer that also has a relayed one closes the relayed one: libp2p's
//! request-response spreads requests over every connection to a peer, and film bytes must not take the
//! relay when a direct path exists. Of several direct connections to one peer, the redundant ones close
//! too, once they have settled (`nat::duplicate`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use libp2p::core::transport::ListenerId;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, identify, relay, upnp, Multiaddr, PeerId};
use tracing::{debug, info};

use super::Node;
use crate::core::reachability::Tracker;
use crate::core::{Link, Reachability};
use crate::net::behaviour::BehaviourEvent;
use crate::net::nat::addr;
use crate::net::nat::duplicate::{self, Direct};
use crate::net::nat::metrics::{NatMetrics, ResultLabel};

/// The node's NAT state: bounded by the connection limits (links, dialed addresses) and by
/// `network.nat.max_relays` (relay listeners).
#[derive(Debug, Default)]
pub(super) struct Nat {
    reach: Tracker,
    /// Every open connection: its peer and kind.
    links: HashMap<ConnectionId, (PeerId, Link)>,
    /// Every open direct connection: whether we dialed it (DCUtR's role for a hole-punched one), and
    /// since when it is open. Same keys as `links`, relayed ones left out.
    direct: HashMap<ConnectionId, (bool, Instant)>,
    /// The address we dialed each peer at (for a reservation on it when it is a relay).
    dialed: HashMap<PeerId, Multiaddr>,
    /// Relay listeners: relay peer -> (listener, reservation accepted).
    relays: HashMap<PeerId, (ListenerId, bool)>,
    /// Connected peers whose identify says they relay (the hop protocol): where a reservation can be asked.
    relays_seen: BTreeSet<PeerId>,
    /// Relays whose reservation ended without us giving it back (denied, expired, failed): not asked
    /// again before this instant (`network.nat.relay_retry` after it ended; [`Node::nat_tick`] asks
    /// again then). At most one entry per peer in `relays_seen`.
    relay_retry: HashMap<PeerId, Instant>,
    /// Peers the engine was told are reachable only through a relay (it assumes direct otherwise, so
    /// only changes are told: a mesh without relays never feeds `Engine::link`).
    told_relayed: HashSet<PeerId>,
    /// Chunk bytes received, by kind.
    bytes: BTreeMap<Link, u64>,
    shown: Option<Reachability>,
    pub(super) metrics: NatMetrics,
}

impl Nat {
    pub(super) fn new(metrics: NatMetrics) -> Self {
        Self { metrics, ..Default::default() }
    }

    /// How this node is reachable now.
    pub(super) fn reachability(&self) -> Reachability {
        self.reach.state()
    }

    /// Confirmed external addresses.
    pub(super) fn external(&self) -> Vec<String> {
        self.reach.addresses().map(str::to_owned).collect()
    }

    /// Chunk bytes received, by kind (every kind listed).
    pub(super) fn bytes_by_link(&self) -> BTreeMap<String, u64> {
        Link::ALL.iter().map(|l| (l.as_str().to_owned(), self.bytes.get(l).copied().unwrap_or(0))).collect()
    }

    /// The best connection to `peer`.
    pub(super) fn link(&self, peer: &PeerId) -> Option<Link> {
        self.links.values().filter(|(p, _)| p == peer).map(|(_, l)| *l).reduce(Link::best)
    }
}

impl Node {
    /// A connection is up: classify it, tell the engine the peer's best link, close relayed connections
    /// made redundant by a direct one.
    pub(super) fn nat_connection_up(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let remote = endpoint.get_remote_address();
        let mut link = addr::link_of(remote);
        // A direct connection that comes while the peer is reachable only through a relay is DCUtR's
        // doing (its own event may come later, or only on the side that started the punch).
        let relayed_before = self.nat.links.values().any(|(p, l)| *p == peer && l.is_relayed());
        if !link.is_relayed() && relayed_before && self.cfg.nat.hole_punching {
            link = Link::HolePunched;
            self.nat.reach.hole_punched(true);
        }
        if endpoint.is_dialer() && !addr::is_relayed(remote) {
            self.nat.dialed.insert(peer, remote.clone());
        }
        self.nat.links.insert(id, (peer, link));
        if !link.is_relayed() {
            let ours = matches!(endpoint, ConnectedPoint::Dialer { role_override: Endpoint::Dialer, .. });
            self.nat.direct.insert(id, (ours, Instant::now()));
        }
        self.nat.metrics.connections_by_link.get_or_create(&NatMetrics::link(link)).inc();
        self.nat_link_changed(peer);
    }

    /// A connection closed.
    pub(super) fn nat_connection_down(&mut self, peer: PeerId, id: ConnectionId) {
        let Some((_, link)) = self.nat.links.remove(&id) else { return };
        self.nat.direct.remove(&id);
        self.nat.metrics.connections_by_link.get_or_create(&NatMetrics::link(link)).dec();
        if link == Link::HolePunched {
            self.nat.reach.hole_punched(false);
        }
        if !self.nat.links.values().any(|(p, _)| *p == peer) {
            self.nat.dialed.remove(&peer);
            self.nat.told_relayed.remove(&peer);
            self.nat.relays_seen.remove(&peer);
            self.nat.relay_retry.remove(&peer);
        }
        self.nat_link_changed(peer);
        self.nat_refresh();
    }

    fn nat_link_changed(&mut self, peer: PeerId) {
        let Some(best) = self.nat.link(&peer) else { return };
        if best.is_relayed() != self.nat.told_relayed.contains(&peer) {
            if best.is_relayed() {
                self.nat.told_relayed.insert(peer);
            } else {
                self.nat.told_relayed.remove(&peer);
            }
            let now = self.now();
            self.engine.link(now, &peer, best);
        }
        if !best.is_relayed() {
            let relayed: Vec<ConnectionId> = self
                .nat
                .links
                .iter()
                .filter(|(_, (p, l))| *p == peer && l.is_relayed())
                .map(|(id, _)| *id)
                .collect();
            for id in relayed {
                debug!(%peer, "closing the relayed connection: a direct one is up");
                self.swarm.close_connection(id);
            }
        }
    }

    /// Chunk bytes received over connection `id`.
    pub(super) fn nat_count_bytes(&mut self, id: ConnectionId, len: u64) {
        let Some((_, link)) = self.nat.links.get(&id) else { return };
        *self.nat.bytes.entry(*link).or_default() += len;
        self.nat.metrics.chunk_bytes_by_link.get_or_create(&NatMetrics::link(*link)).inc_by(len);
    }

    /// Our listen addresses, with QUIC twins on an open mesh, and the operator's external addresses.
    pub(super) fn nat_listen_addresses(cfg: &crate::net::Config) -> Vec<Multiaddr> {
        let mut listen = cfg.listen.clone();
        if cfg.nat.quic && cfg.psk.is_none() {
            listen.extend(addr::quic_twins(&cfg.listen));
        }
        listen
    }

    /// At start: the operator's external addresses are confirmed at once.
    pub(super) fn nat_start(&mut self) {
        for a in self.cfg.nat.external().unwrap_or_default() {
            self.swarm.add_external_address(a);
        }
        self.nat_refresh();
    }

    /// identify told us what `peer` speaks: a relay is remembered, and used for a reservation while we
    /// are not dialable.
    pub(super) fn nat_identified(&mut self, peer: PeerId, info: &identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.nat.relays_seen.insert(peer);
            self.nat_reserve();
        } else {
            self.nat.relays_seen.remove(&peer);
            self.nat.relay_retry.remove(&peer);
        }
    }

    /// While this node is not known to be reachable, asks the connected relays it knows for reservations,
    /// up to `max_relays`: at the first identify of a relay, and again as soon as a reservation is lost
    /// (its relay restarted, or denied or expired it: that relay is not asked again for
    /// `network.nat.relay_retry`).
    fn nat_reserve(&mut self) {
        let nat = &self.cfg.nat;
        if !nat.relay_client || self.nat.reach.state().dialable() {
            return;
        }
        let now = Instant::now();
        self.nat.relay_retry.retain(|_, at| *at > now);
        let wanted = (nat.max_relays as usize).saturating_sub(self.nat.relays.len());
        let candidates: Vec<(PeerId, Multiaddr)> = self
            .nat
            .relays_seen
            .iter()
            .filter(|p| !self.nat.relays.contains_key(p) && !self.nat.relay_retry.contains_key(p))
            .filter_map(|p| Some((*p, addr::circuit_listen_addr(self.nat.dialed.get(p)?, *p)?)))
            .take(wanted)
            .collect();
        for (peer, listen) in candidates {
            match self.swarm.listen_on(listen.clone()) {
                Ok(id) => {
                    info!(%listen, "asking a relay for a reservation: this node is not known to be reachable");
                    self.nat.relays.insert(peer, (id, false));
                }
                Err(e) => {
                    debug!(%listen, "cannot listen through the relay: {e}");
                    self.nat.relay_retry.insert(peer, now + nat.relay_retry);
                }
            }
        }
    }

    /// Every tick: a relay whose wait after a refused or ended reservation is over is asked again (while
    /// this node still lacks reservations), without waiting for a NAT or identify event.
    pub(super) fn nat_tick(&mut self) {
        let now = Instant::now();
        let before = self.nat.relay_retry.len();
        self.nat.relay_retry.retain(|_, at| *at > now);
        if self.nat.relay_retry.len() < before {
            self.nat_reserve();
        }
        self.close_duplicates(now);
    }

    /// An answer of ours over `conn` to `peer` is done: if the peer has another direct connection, the
    /// redundant one may close now that it carries one answer fewer (`duplicate::close_now`).
    pub(super) fn nat_answer_done(&mut self, peer: PeerId, conn: ConnectionId) {
        let direct = |id: &ConnectionId| self.nat.direct.contains_key(id);
        if direct(&conn) && self.nat.links.iter().any(|(id, (p, _))| *p == peer && *id != conn && direct(id))
        {
            self.close_duplicates(Instant::now());
        }
    }

    /// Closes the direct connections made redundant by another to the same peer (`nat::duplicate`), each
    /// between two of our answers on it (`duplicate::close_now`).
    fn close_duplicates(&mut self, now: Instant) {
        let mut by_peer: HashMap<PeerId, Vec<Direct>> = HashMap::new();
        for (id, (ours, since)) in &self.nat.direct {
            let Some((peer, link)) = self.nat.links.get(id) else { continue };
            by_peer.entry(*peer).or_default().push(Direct {
                id: *id,
                ours: *ours,
                quic: *link == Link::Quic,
                age: now.saturating_duration_since(*since),
            });
        }
        let me = *self.swarm.local_peer_id();
        for (peer, conns) in by_peer.into_iter().filter(|(_, c)| c.len() > 1) {
            for id in duplicate::redundant(&me, &peer, &conns) {
                // Settled since the youngest of them was SETTLE old: the drain counts from there.
                let settled = conns.iter().map(|c| c.age).min().unwrap_or_default();
                let answering = self.uploads.by_request.values().any(|(_, c)| *c == id);
                if !duplicate::close_now(answering, settled) {
                    continue;
                }
                debug!(%peer, ?id, answering, "closing a redundant direct connection");
                // Forgotten now, so the next tick does not close it again while it closes.
                self.nat.direct.remove(&id);
                self.nat.metrics.duplicates_closed.inc();
                self.swarm.close_connection(id);
            }
        }
    }

    /// A listener closed: when it was a relay's, its reservation is gone (not given back: those are no
    /// longer in `relays`), and another relay is asked.
    pub(super) fn nat_listener_closed(&mut self, id: ListenerId) {
        let relay = self.nat.relays.iter().find(|(_, (l, _))| *l == id).map(|(p, _)| *p);
        if let Some(peer) = relay {
            if let Some((_, true)) = self.nat.relays.remove(&peer) {
                self.nat.reach.relay(false);
            }
            if self.nat.relays_seen.contains(&peer) {
                self.nat.relay_retry.insert(peer, Instant::now() + self.cfg.nat.relay_retry);
            }
            self.nat_refresh();
        }
    }

    /// The swarm confirmed (AutoNAT, UPnP, the operator) or expired an external address.
    pub(super) fn nat_external(&mut self, address: &Multiaddr, confirmed: bool) {
        // The relay client confirms its `/p2p-circuit` addresses: reachable through a relay, which the
        // reservation events already say; not a public address.
        if addr::is_relayed(address) {
            return;
        }
        if confirmed {
            info!(%address, "external address confirmed");
            self.nat.reach.confirmed(&address.to_string());
        } else {
            self.nat.reach.expired(&address.to_string());
        }
        self.nat_refresh();
    }

    /// Events of the NAT behaviours.
    pub(super) fn on_nat_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if let Some((_, accepted)) = self.nat.relays.get_mut(&relay_peer_id) {
                    if !renewal && !*accepted {
                        *accepted = true;
                        info!(relay = %relay_peer_id, "relay reservation accepted");
                        self.nat.reach.relay(true);
                    }
                }
            }
            BehaviourEvent::Relay(relay::Event::ReservationReqDenied { src_peer_id, status }) => {
                // Counted in `libp2p_relay_events_total{event="ReservationReqDenied"}`.
                info!(peer = %src_peer_id, ?status, "as a relay: reservation denied (relay_max_reservations?)");
            }
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => match result {
                Ok(id) => {
                    info!(peer = %remote_peer_id, "hole punched: direct connection");
                    self.nat.metrics.hole_punches.get_or_create(&ResultLabel { result: "ok".into() }).inc();
                    if let Some((_, link)) =
                        self.nat.links.get_mut(&id).filter(|(_, l)| *l != Link::HolePunched)
                    {
                        let old = std::mem::replace(link, Link::HolePunched);
                        let m = &self.nat.metrics.connections_by_link;
                        m.get_or_create(&NatMetrics::link(old)).dec();
                        m.get_or_create(&NatMetrics::link(Link::HolePunched)).inc();
                        self.nat.reach.hole_punched(true);
                    }
                    self.nat_link_changed(remote_peer_id);
                }
                Err(e) => {
                    debug!(peer = %remote_peer_id, "hole punch failed: {e}");
                    self.nat
                        .metrics
                        .hole_punches
                        .get_or_create(&ResultLabel { result: "failed".into() })
                        .inc();
                }
            },
            BehaviourEvent::AutonatClient(autonat::v2::client::Event {
                tested_addr, server, result, ..
            }) => match result {
                Ok(()) => debug!(%tested_addr, %server, "AutoNAT: reachable"),
                Err(e) => {
                    debug!(%tested_addr, %server, "AutoNAT: not reachable: {e}");
                    self.nat.reach.probe_failed();
                }
            },
            BehaviourEvent::Upnp(e) => match e {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    info!(%external_addr, "the router mapped a port (UPnP)");
                    self.nat.reach.mapped(&external_addr.to_string());
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    self.nat.reach.unmapped(&external_addr.to_string())
                }
                upnp::Event::GatewayNotFound => {
                    debug!("no UPnP gateway on this network");
                    self.nat.reach.no_gateway();
                }
                upnp::Event::NonRoutableGateway => {
                    info!("the UPnP gateway is itself behind NAT (carrier-grade NAT): no mapping");
                    self.nat.reach.no_gateway();
                }
            },
            _ => {}
        }
        self.nat_refresh();
    }

    /// Metrics follow the state; once dialable, relay reservations are given back, and while not,
    /// reservations are asked of the relays we know.
    fn nat_refresh(&mut self) {
        let now = self.nat.reach.state();
        if self.nat.shown != Some(now) {
            info!(reachability = %now, "reachability");
            self.nat.shown = Some(now);
            self.nat.metrics.set_reachability(now);
        }
        self.nat.metrics.relay_reservations.set(i64::from(self.nat.reach.relays()));
        self.nat.metrics.relay_budget_left.set(self.engine.relay_budget_left().min(i64::MAX as u64) as i64);
        if now.dialable() && !self.nat.relays.is_empty() {
            for (relay, (id, accepted)) in std::mem::take(&mut self.nat.relays) {
                debug!(%relay, "reachable directly: giving the relay reservation back");
                self.swarm.behaviour_mut().relay_client.give_back(relay);
                self.swarm.remove_listener(id);
                if accepted {
                    self.nat.reach.relay(false);
                }
            }
            self.nat.metrics.relay_reservations.set(i64::from(self.nat.reach.relays()));
        }
        // Not (or no longer) dialable: hold reservations on the relays we know.
        self.nat_reserve();
    }
}
