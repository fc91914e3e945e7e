//! Commands from the [`Client`](crate::net::Client) and the views they read: status, films, peers,
//! gauges.

use tracing::warn;

use super::Node;
use crate::core::engine::FetchState;
use crate::net::client::{Command, FilmStatus, Head, PeerStatus, Status};
use crate::net::Role;
use crate::ContentId;

impl Node {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Films(reply) => {
                let _ = reply.send(self.films());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_list());
            }
            Command::Publish { manifest, root, entry, reply } => self.publish(*manifest, root, *entry, reply),
            Command::Submit { entry, reply } => {
                let _ = reply.send(self.submit(*entry));
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.swarm.dial(addr).map_err(|e| e.to_string()));
            }
            Command::Verify { content, reply } => {
                let targets: Vec<ContentId> = match content {
                    Some(c) => vec![c],
                    None => self.engine.held_contents().map(|(c, _)| *c).collect(),
                };
                self.spawn_verify(targets, reply);
            }
            Command::Fleet(reply) => {
                let _ = reply.send(self.fleet.view(&self.catalogue, super::unix_now()));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(crate::net::snapshot::Snapshot::take(
                    &self.fleet,
                    &self.catalogue,
                    super::unix_now(),
                ));
            }
            Command::HookResult(text) => self.hook_result = Some(text),
            Command::EngineKinds(reply) => {
                let _ = reply.send(self.engine.recorded());
            }
            Command::Shutdown => {}
        }
    }

    pub(super) fn refresh_gauges(&mut self) {
        let complete = self.engine.held_contents().filter(|(_, h)| h.have.is_complete()).count();
        let mut fetching = 0;
        let mut refused = 0;
        for (_, state) in self.engine.fetches() {
            match state {
                FetchState::Refused(_) => refused += 1,
                _ => fetching += 1,
            }
        }
        self.metrics.contents_complete.set(complete as i64);
        self.metrics.contents_fetching.set(fetching as i64);
        self.metrics.contents_refused.set(refused as i64);
    }

    fn status(&self) -> Status {
        let loc = self.own_locality();
        Status {
            peer_id: self.me.to_string(),
            listen: self
                .listen
                .iter()
                .map(|a| match a.iter().last() {
                    // A relay's `/p2p-circuit` address already ends with our id.
                    Some(libp2p::multiaddr::Protocol::P2p(_)) => a.to_string(),
                    _ => format!("{a}/p2p/{}", self.me),
                })
                .collect(),
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: loc.isp,
            site: loc.site,
            catalogue_heads: self
                .catalogue
                .heads()
                .into_iter()
                .map(|(k, seq)| {
                    let (seen, issued_at) = (self.catalogue.seen_head(&k), self.catalogue.head_issued_at(&k));
                    Head { key: k.to_string(), seq, seen, issued_at }
                })
                .collect(),
            disk_free: self.store.free_space().unwrap_or_else(|e| {
                warn!("cannot read free disk space: {e}");
                0
            }),
            peers: self.peers.len(),
            films: self.catalogue.films().count(),
            reachability: self.nat.reachability().as_str().to_owned(),
            external_addresses: self.nat.external(),
            bytes_by_link: self.nat.bytes_by_link(),
        }
    }

    fn films(&self) -> Vec<FilmStatus> {
        self.catalogue
            .films()
            .map(|f| {
                let p = &f.publish;
                let held = self.engine.held(&p.content);
                let have_chunks = held.map_or(0, |h| h.have.count());
                let complete = held.is_some_and(|h| h.have.is_complete());
                let have_bytes =
                    if complete { p.size } else { (have_chunks as u64 * p.chunk_size as u64).min(p.size) };
                let state = match self.engine.fetch_state(&p.content) {
                    _ if complete && self.cfg.role == Role::Distributor => "seeding".to_owned(),
                    _ if complete => "complete".to_owned(),
                    Some(FetchState::Refused(reason)) => format!("refused: {reason}"),
                    Some(FetchState::Waiting) | Some(FetchState::Installing) => "waiting".to_owned(),
                    Some(FetchState::Active) => "fetching".to_owned(),
                    None => "not-targeted".to_owned(),
                };
                FilmStatus {
                    content_id: p.content.to_hex(),
                    title: p.title.clone(),
                    size: p.size,
                    have_bytes,
                    have_chunks,
                    chunks: p.chunks,
                    complete,
                    state,
                    deadline: p.deadline,
                    path: self.store.content_path(&p.content).ok().flatten().map(|p| p.display().to_string()),
                }
            })
            .collect()
    }

    fn peer_list(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let info = p.info.clone().unwrap_or_default();
                let loc = self.locality_of(id, info.isp.clone(), info.site.clone());
                PeerStatus {
                    peer_id: id.to_string(),
                    role: p.info.as_ref().map(|i| i.role.clone()),
                    name: info.name,
                    isp: loc.isp,
                    site: loc.site,
                    load: self.engine.peer(id).map_or(0.0, |(_, load)| load),
                    bytes_up: p.bytes_up,
                    bytes_down: p.bytes_down,
                    address: p.address.as_ref().map(|a| a.to_string()),
                    link: self.nat.link(id).map(|l| l.as_str().to_owned()),
                }
            })
            .collect()
    }
}
