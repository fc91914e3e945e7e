//! libp2p glue: connections, identify, mDNS, Kademlia, gossipsub messages, and the housekeeping tick
//! (gossip retries, fleet reports, limits, bootstrap redials, anti-entropy, rates).

use std::time::{Duration, Instant};

use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, mdns, ping, PeerId};
use rand::seq::IteratorRandom;
use tracing::{debug, info};

use super::{Node, BOOTSTRAP_BACKOFF};
use crate::core::ContentId;
use crate::net::admission;
use crate::net::behaviour::BehaviourEvent;
use crate::net::fleet;
use crate::net::protocol::NodeInfo;

impl Node {
    /// Gives the admission behaviour the catalogue's word on who may connect (at start, and after an
    /// Admit or Revoke).
    pub(super) fn update_gate(&mut self) {
        let gate = admission::Gate::new(&self.catalogue, self.cfg.private);
        self.swarm.behaviour_mut().admission.set(gate);
    }

    /// A connection denied at establishment: counted when the admission gate denied it.
    fn count_denied(&self, cause: &libp2p::swarm::ConnectionDenied) {
        if let Some(denied) = cause.downcast_ref::<admission::NotAdmitted>() {
            debug!(peer = %denied.peer, "connection denied: peer revoked or not admitted");
            self.metrics.connections_refused.inc();
        }
    }

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.libp2p_metrics.record(&event);
        let now = self.now();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| a != &address),
            SwarmEvent::ListenerClosed { listener_id, addresses, .. } => {
                self.listen.retain(|a| !addresses.contains(a));
                self.nat_listener_closed(listener_id);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => self.nat_external(&address, true),
            SwarmEvent::ExternalAddrExpired { address } => self.nat_external(&address, false),
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                if self.revoked(&peer_id) || (self.catalogue.has_members() && !self.allowed(&peer_id)) {
                    debug!(%peer_id, "closing connection: peer revoked or not admitted");
                    self.metrics.connections_refused.inc();
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let p = self.peers.entry(peer_id).or_default();
                p.address = Some(endpoint.get_remote_address().clone());
                if num_established.get() == 1 {
                    self.engine.connected(now, peer_id);
                }
                self.nat_connection_up(peer_id, connection_id, &endpoint);
                self.metrics.connected_peers.set(self.peers.len() as i64);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                self.nat_connection_down(peer_id, connection_id);
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.engine.disconnected(now, &peer_id);
                    self.metrics.connected_peers.set(self.peers.len() as i64);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let libp2p::swarm::DialError::Denied { cause } = &error {
                    self.count_denied(cause);
                }
                if let Some(p) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    self.engine.dial_failed(now, &p);
                }
                debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } => {
                self.count_denied(&cause);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    pub(super) fn node_info(&self) -> NodeInfo {
        NodeInfo {
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: self.cfg.isp.clone(),
            site: self.cfg.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            downlink: self.cfg.transfer.downlink.map(|r| r.0 as u64),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        use libp2p::metrics::Recorder;
        match &event {
            BehaviourEvent::Identify(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Kad(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Ping(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Gossipsub(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Relay(e) => self.libp2p_metrics.record(e),
            BehaviourEvent::Dcutr(e) => self.libp2p_metrics.record(e),
            _ => {}
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.nat_identified(peer_id, &info);
                let seen = self.peers.get(&peer_id).and_then(|p| p.address.clone());
                let keep = |a: &libp2p::Multiaddr| crate::net::nat::addr::worth_keeping(a, seen.as_ref());
                for addr in info.listen_addrs.into_iter().filter(keep) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result, .. }) => {
                self.on_kad_result(result)
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                if message.topic == gossipsub::IdentTopic::new(fleet::FLEET_TOPIC).hash() {
                    self.on_fleet_report(propagation_source, message_id, message.source, &message.data);
                } else {
                    self.on_gossip(propagation_source, message_id, message.data);
                }
            }
            BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }) => {
                let now = self.now();
                self.engine.round_trip(now, &peer, rtt);
            }
            BehaviourEvent::Xfer(event) => self.on_xfer_event(event),
            event @ (BehaviourEvent::RelayClient(_)
            | BehaviourEvent::Relay(_)
            | BehaviourEvent::Dcutr(_)
            | BehaviourEvent::AutonatClient(_)
            | BehaviourEvent::Upnp(_)) => self.on_nat_event(event),
            _ => {}
        }
    }

    fn on_kad_result(&mut self, result: QueryResult) {
        match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { key, providers })) => {
                let Ok(id) = <[u8; 32]>::try_from(key.as_ref()) else { return };
                // Whom to dial is the engine's decision; who may be a peer at all is the admission's.
                let found: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| {
                        *p != self.me
                            && !self.revoked(p)
                            && (!self.catalogue.has_members() || self.allowed(p))
                    })
                    .collect();
                let now = self.now();
                self.engine.providers(now, &ContentId(id), &found);
            }
            QueryResult::StartProviding(Err(e)) => debug!("start providing: {e:?}"),
            QueryResult::Bootstrap(Err(e)) => debug!("kad bootstrap: {e:?}"),
            _ => {}
        }
    }

    pub(super) fn on_tick(&mut self) {
        for (data, since) in std::mem::take(&mut self.republish) {
            self.publish_or_queue(data, since);
        }
        self.maybe_report();
        self.apply_limits();
        self.nat_tick();
        let now_i = Instant::now();
        // Bootstrap peers: redial with exponential back-off until connected.
        for (addr, peer, next, backoff) in &mut self.bootstrap {
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) || now_i < *next {
                continue;
            }
            if let Some(p) = peer {
                let mut bare = addr.clone();
                bare.pop();
                self.swarm.behaviour_mut().kad.add_address(p, bare);
            }
            debug!(%addr, "dialing bootstrap peer");
            let _ = self.swarm.dial(addr.clone());
            *next = now_i + *backoff;
            *backoff = (*backoff * 2).min(BOOTSTRAP_BACKOFF.1);
        }
        if !self.peers.is_empty()
            && self.last_kad_bootstrap.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_kad_bootstrap = Some(now_i);
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        // Anti-entropy with a random joined peer.
        if self.last_sync.elapsed() >= self.cfg.gossip.anti_entropy_interval {
            self.last_sync = now_i;
            let joined: Vec<_> = self.engine.joined().copied().collect();
            if let Some(peer) = joined.into_iter().choose(&mut self.rng) {
                self.request_sync(peer);
            }
        }
        self.metrics.uploads_active.set(i64::from(self.engine.uploads_active()));
        self.metrics.request_window.set(i64::from(self.engine.request_window()));
        self.metrics.upload_pace.set(self.upload_pace.rate().map_or(0, |r| r as i64));
        let own_queue = self.engine.own_queue(self.now());
        self.metrics.own_queue.set(own_queue.map_or(-1, |q| q.as_millis() as i64));
        self.metrics.found_uplink.set(self.engine.found_uplink().map_or(0, |r| r as i64));
        self.metrics.yield_rate.set(self.engine.yielding(self.now()).map_or(0, |r| r as i64));
        self.metrics.requests_in_flight.set(self.engine.in_flight() as i64);
        self.metrics.requests_in_flight_other_isp.set(self.engine.in_flight_other_isp() as i64);
        self.metrics.chunks_writing.set(self.engine.chunks_writing() as i64);
        self.metrics.lines_alike.set(i64::from(self.engine.lines_alike()));
        let s = self.engine.scheduler_stats();
        let m = &self.metrics;
        for (counter, total) in [
            (&m.chunk_requests, s.requests),
            (&m.chunk_requests_beyond_window, s.beyond_window),
            (&m.chunk_requests_yielded, s.yielded),
            (&m.chunk_requests_endgame, s.endgame_requests),
            (&m.chunk_requests_pipelined, s.pipelined),
            (&m.chunk_requests_timed_out, s.timeouts),
            (&m.chunk_cancels, s.cancels),
            (&m.chunks_duplicate, s.duplicates),
            (&m.chunks_unsolicited, s.unsolicited),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let slow = self.engine.stats().slow_asker_uploads;
        m.uploads_slow_asker.inc_by(slow.saturating_sub(m.uploads_slow_asker.get()));
        // Rates.
        let (t, up, down) = self.last_rate;
        let dt = t.elapsed().as_secs_f64();
        if dt >= 1.0 {
            self.metrics.upload_rate.set(((self.bytes_total.0 - up) as f64 / dt) as i64);
            self.metrics.download_rate.set(((self.bytes_total.1 - down) as f64 / dt) as i64);
            self.last_rate = (now_i, self.bytes_total.0, self.bytes_total.1);
            if let Ok(free) = self.store.free_space() {
                self.metrics.disk_free_bytes.set(free as i64);
            }
            let (commits, chunks) = self.store.commit_counts();
            self.metrics.store_commits.inc_by(commits.saturating_sub(self.metrics.store_commits.get()));
            self.metrics
                .store_committed_chunks
                .inc_by(chunks.saturating_sub(self.metrics.store_committed_chunks.get()));
        }
    }
}
