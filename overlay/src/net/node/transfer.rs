//! The engine's body in the node: the chunk protocol's requests and answers in, the engine's outputs out.

use std::collections::BTreeMap;
use std::time::Duration;

use libp2p::request_response::{self, InboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::{provider_key, unix_now, Event, Node, Pending};
use crate::catalogue::{DistributorKey, Publish};
use crate::core::engine::{self, Answer, ManifestReply, Offer, Output, PeerInfo, Reply};
use crate::core::schedule::{self, Limits};
use crate::core::Bitfield;
use crate::net::answers::SyncAsk;
use crate::net::metrics;
use crate::net::protocol::{Request, Response, MAX_HAVE_CHUNKS, MAX_SYNC_ENTRIES};
use crate::ContentId;

impl Node {
    /// Carries out everything the engine decided.
    pub(super) fn drive(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Send { peer, request } => self.send_engine_request(peer, request),
                Output::Answer { upload, answer } => self.answer(upload, answer),
                Output::Read { upload, content, index } => self.spawn_read(upload, content, index),
                Output::Abort { upload } => {
                    // request-response cannot abort a response once handed over: the slot is free anyway.
                    debug!(upload, "upload cancelled while its bytes were on the way");
                }
                Output::Install { content } => match self.manifests.remove(&content) {
                    Some(manifest) => self.spawn_install(content, manifest),
                    None => {
                        let now = self.now();
                        self.engine.installed(now, content, Err("manifest no longer at hand".into()));
                    }
                },
                Output::Remove { content } => {
                    self.answers.forget_manifest(&content);
                    self.spawn_remove(content);
                }
                Output::Lookup { content } => {
                    self.metrics.provider_lookups.inc();
                    self.swarm.behaviour_mut().kad.get_providers(provider_key(&content));
                }
                Output::Dial { peer } => {
                    self.metrics.provider_dials.inc();
                    debug!(%peer, "dialing provider");
                    if let Err(e) = self.swarm.dial(DialOpts::peer_id(peer).build()) {
                        debug!(%peer, "cannot dial provider: {e}");
                        let now = self.now();
                        self.engine.dial_failed(now, &peer);
                    }
                }
                Output::Provide { content } => {
                    if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(provider_key(&content)) {
                        warn!(content = %content, "cannot announce provider record: {e:?}");
                    }
                }
                Output::Unprovide { content } => {
                    self.swarm.behaviour_mut().kad.stop_providing(&provider_key(&content));
                }
                Output::Event(e) => self.on_engine_event(e),
            }
        }
        // The bytes of answers keep to the engine's pace (it moves with the limits, the fetches and the
        // receive rate, all of which reach the engine as inputs that end here).
        self.upload_pace.set(self.engine.upload_pace());
        let yielding = self.engine.yielding(self.now()).is_some();
        if yielding != self.yielding {
            self.yielding = yielding;
            if yielding {
                use cinemesh_core::engine::{YIELD_SHARE, YIELD_UNTIL};
                info!(
                    "yielding to faster lines: fetching at {YIELD_SHARE} of this line while it stays within {YIELD_UNTIL} times its own time (transfer.slow_line_yields)"
                );
            } else {
                info!("no longer yielding: fetching at the whole line");
            }
        }
        if self.engine.found_uplink() != self.found_uplink {
            let first = self.found_uplink.is_none();
            self.found_uplink = self.engine.found_uplink();
            let uplink_mbit_s = self.found_uplink.map(|r| r * 8e-6);
            let own_queue_ms = self.engine.own_queue(self.now()).map(|q| q.as_millis() as u64);
            if self.found_uplink.is_none() {
                info!(
                    own_queue_ms,
                    "found uplink forgotten: the queue stayed long while answers kept below it, so it is not this line's"
                );
            } else if first {
                info!(
                    uplink_mbit_s,
                    own_queue_ms,
                    "uplink found full: its queue delays every round trip, so answers keep below it while fetching (declare transfer.uplink to set it)"
                );
            } else {
                debug!(uplink_mbit_s, own_queue_ms, "found uplink moved");
            }
        }
    }

    fn on_engine_event(&mut self, event: engine::Event<PeerId>) {
        match event {
            engine::Event::Joined { peer } => self.request_sync(peer),
            engine::Event::Fetching { content } => {
                let title =
                    self.catalogue.film(&content).map(|f| f.publish.title.clone()).unwrap_or_default();
                info!(content = %content, %title, "fetching");
                self.refresh_gauges();
            }
            engine::Event::Complete { content } => self.on_complete(content),
            engine::Event::Refused { content, reason } => {
                warn!(content = %content, "content refused: {reason}");
                self.refresh_gauges();
            }
            engine::Event::Penalised { peer } => {
                warn!(%peer, "peer penalised: it served a chunk or a manifest that failed verification");
                self.metrics.peers_penalised.inc();
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            engine::Event::ChunkStored { .. } => {
                self.metrics.chunks_verified.inc();
            }
            engine::Event::Served { peer, len } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.bytes_up += len;
                }
                self.bytes_total.0 += len;
                let label = self.locality_label(&peer);
                self.metrics.bytes_sent.get_or_create(&label).inc_by(len);
                self.metrics.chunks_served.inc();
            }
        }
    }

    fn on_complete(&mut self, content: ContentId) {
        let title = self.catalogue.film(&content).map(|f| f.publish.title.clone()).unwrap_or_default();
        let path = self.store.content_path(&content).ok().flatten();
        info!(content = %content, %title, "content complete and verified");
        self.refresh_gauges();
        let _ = self.events.send(Event::Complete { content, title, path });
    }

    fn send_engine_request(&mut self, peer: PeerId, request: engine::Request) {
        let (wire, what) = match request {
            engine::Request::Hello => (Request::Hello(self.node_info()), Pending::Hello),
            engine::Request::Manifest { content } => {
                (Request::Manifest { content }, Pending::Manifest(content))
            }
            engine::Request::Bitfield { content } => {
                (Request::Bitfield { content }, Pending::Bitfield(content))
            }
            engine::Request::Chunk { content, index, rate } => {
                (Request::Chunk { content, index, rate }, Pending::Chunk(content, index))
            }
            engine::Request::Have { content, mut chunks } => {
                chunks.truncate(MAX_HAVE_CHUNKS);
                (Request::Have { content, chunks }, Pending::Have)
            }
            engine::Request::Cancel { content, index } => {
                (Request::Cancel { content, index }, Pending::Cancel)
            }
        };
        self.send(peer, wire, what);
    }

    pub(super) fn send(&mut self, peer: PeerId, request: Request, what: Pending) {
        let id = self.swarm.behaviour_mut().xfer.send_request(&peer, request);
        self.pending.insert(id, (peer, what));
    }

    /// Gives the engine's answer to an inbound chunk request.
    fn answer(&mut self, upload: engine::UploadId, answer: Answer) {
        let source = self.uploads.sources.remove(&upload);
        let Some(channel) = self.uploads.channels.remove(&upload) else { return };
        let response = match answer {
            Answer::Data { load, .. } => match source {
                Some(source) => Response::ChunkFrom { source, load },
                None => Response::Missing { load },
            },
            Answer::Busy { load } => {
                self.metrics.busy_answers.inc();
                Response::Busy { load }
            }
            Answer::Missing { load } => Response::Missing { load },
            Answer::Cancelled => Response::Cancelled,
        };
        self.respond(channel, response);
    }

    pub(super) fn respond(&mut self, channel: ResponseChannel<Response>, response: Response) {
        let _ = self.swarm.behaviour_mut().xfer.send_response(channel, response);
    }

    // ---- the chunk protocol -------------------------------------------------------------------------

    pub(super) fn on_xfer_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event as E, Message};
        let now = self.now();
        match event {
            E::Message {
                peer,
                connection_id,
                message: Message::Request { request_id, request, channel },
            } => self.on_request(peer, connection_id, request_id, request, channel),
            E::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                if let Response::Chunk { bytes, .. } = &response {
                    self.nat_count_bytes(connection_id, bytes.len() as u64);
                }
                if let Some((_, what)) = self.pending.remove(&request_id) {
                    self.on_response(peer, what, response);
                }
            }
            E::OutboundFailure { peer, request_id, error, .. } => {
                self.metrics.protocol_error("outbound", &error.to_string());
                if let Some((_, what)) = self.pending.remove(&request_id) {
                    debug!(%peer, ?what, %error, "request failed");
                    // The swarm forgets a closed connection before the behaviours hear of it: a peer still
                    // connected here has another connection (the closed one was redundant, `nat::duplicate`).
                    let moved = matches!(error, request_response::OutboundFailure::ConnectionClosed)
                        && self.swarm.is_connected(&peer);
                    self.on_failure(peer, what, moved);
                }
            }
            E::InboundFailure { peer, request_id, error, .. } => {
                self.answer_bytes.sent(&request_id);
                // Malformed or oversized requests end here (the codec refuses them): count and move on.
                debug!(%peer, %error, "inbound request failed");
                self.metrics.protocol_error("inbound", &error.to_string());
                if let Some((upload, conn)) = self.uploads.by_request.remove(&request_id) {
                    self.uploads.channels.remove(&upload);
                    self.uploads.sources.remove(&upload);
                    self.engine.upload_done(now, upload, false);
                    self.nat_answer_done(peer, conn);
                }
            }
            E::ResponseSent { peer, request_id, .. } => {
                self.answer_bytes.sent(&request_id);
                if let Some((upload, conn)) = self.uploads.by_request.remove(&request_id) {
                    self.engine.upload_done(now, upload, true);
                    self.nat_answer_done(peer, conn);
                }
            }
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if self.revoked(&peer) {
            return self.respond(channel, Response::Refused { reason: "revoked".into() });
        }
        if !matches!(request, Request::Hello(_) | Request::Have { .. } | Request::Cancel { .. })
            && !self.allowed(&peer)
        {
            return self
                .respond(channel, Response::Refused { reason: "not admitted to this private mesh".into() });
        }
        let now = self.now();
        match request {
            Request::Hello(info) => {
                let ours = self.node_info();
                self.respond(channel, Response::Hello(ours));
                self.on_hello(peer, info);
            }
            Request::Manifest { content } => {
                if let Some(b) = self.answers.manifest(&content) {
                    self.respond_bounded(peer, id, channel, Response::Manifest(b));
                } else if self.engine.held(&content).is_none() {
                    // Not held (the simulator answers from the same fact): no disk read. At a publish every
                    // cinema asks its peers in turn and most of them hold nothing yet; each such answer used
                    // to wait for a disk job.
                    self.respond(channel, Response::Missing { load: 0.0 });
                } else if self.manifest_reads.acquire(&peer) {
                    self.spawn_manifest_read(peer, id, content, channel);
                } else {
                    self.metrics.protocol_error("inbound", "too many manifest requests at once");
                    let reason = "too many manifest requests at once; ask again later".to_owned();
                    self.respond(channel, Response::Refused { reason });
                }
            }
            Request::Bitfield { content } => {
                let response = match self.engine.bitfield_request(now, &peer, &content) {
                    Some(b) => Response::Bitfield { chunks: b.len(), bits: b.to_bytes() },
                    None => Response::Missing { load: 0.0 },
                };
                self.respond(channel, response);
            }
            Request::Chunk { content, index, rate } => {
                self.uploads.next += 1;
                let upload = self.uploads.next;
                self.uploads.channels.insert(upload, channel);
                self.uploads.by_request.insert(id, (upload, conn));
                self.engine.chunk_request(now, &peer, upload, content, index, rate);
            }
            Request::Have { content, chunks } => {
                self.engine.have(now, &peer, &content, &chunks);
                self.respond(channel, Response::Ack);
            }
            Request::Cancel { content, index } => {
                self.engine.cancel(now, &peer, &content, index);
                self.respond(channel, Response::Ack);
            }
            Request::Sync { heads } => {
                let entries = self.sync_answer(heads);
                self.respond_bounded(peer, id, channel, Response::Entries(entries));
            }
        }
    }

    /// The encoded entries after the asker's `heads`, for the keys both sides trust (cached until the
    /// catalogue changes).
    fn sync_answer(&mut self, heads: Vec<([u8; 32], u64)>) -> Vec<Vec<u8>> {
        let theirs: BTreeMap<[u8; 32], u64> = heads.into_iter().collect();
        // Only keys the asker trusts (it listed them) and we trust too.
        let keys: Vec<(DistributorKey, u64)> = self
            .catalogue
            .trusted()
            .filter_map(|k| theirs.get(k.as_bytes()).map(|after| (*k, *after)))
            .collect();
        let ask: SyncAsk = keys.iter().map(|(k, after)| (*k.as_bytes(), *after)).collect();
        if let Some(entries) = self.answers.sync(&ask) {
            return entries;
        }
        let mut entries = Vec::new();
        for (key, after) in keys {
            let room = MAX_SYNC_ENTRIES - entries.len();
            entries.extend(self.catalogue.entries_after(&key, after, room).iter().map(|e| e.encode()));
            if entries.len() >= MAX_SYNC_ENTRIES {
                break;
            }
        }
        self.answers.put_sync(ask, entries.clone());
        entries
    }

    /// Answers with `response` if the bytes of answers waiting for `peer` stay within the bounds
    /// ([`crate::net::inbound::Buffered`]), else refuses: a peer that does not read its answers cannot
    /// make the node hold more.
    pub(super) fn respond_bounded(
        &mut self,
        peer: PeerId,
        request: InboundRequestId,
        channel: ResponseChannel<Response>,
        response: Response,
    ) {
        let bytes = match &response {
            Response::Manifest(b) => b.len(),
            Response::Entries(e) => e.iter().map(Vec::len).sum(),
            _ => 0,
        };
        if self.answer_bytes.admit(&peer, request, bytes as u64) {
            if self.swarm.behaviour_mut().xfer.send_response(channel, response).is_err() {
                // The connection or the request is gone: no event will free these bytes.
                self.answer_bytes.sent(&request);
            }
        } else {
            self.metrics.protocol_error("inbound", "too many bytes of answers waiting to be sent");
            let reason = "too many bytes of answers waiting for you to read; ask again later".to_owned();
            self.respond(channel, Response::Refused { reason });
        }
    }

    fn on_hello(&mut self, peer: PeerId, info: crate::net::protocol::NodeInfo) {
        let locality = self.locality_of(&peer, info.isp.clone(), info.site.clone());
        let role = info.role.parse().ok();
        let downlink = info.downlink;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.info = Some(info);
        }
        let now = self.now();
        self.engine.hello(now, peer, PeerInfo { role, locality, downlink });
    }

    fn on_response(&mut self, peer: PeerId, what: Pending, response: Response) {
        let now = self.now();
        match (what, response) {
            (Pending::Hello, Response::Hello(info)) => self.on_hello(peer, info),
            (Pending::Hello, other) => {
                debug!(%peer, ?other, "no hello in answer to ours");
                self.engine.send_failed(now, &peer, &engine::Request::Hello);
            }
            (Pending::Manifest(content), Response::Manifest(bytes)) => {
                self.spawn_manifest_check(peer, content, bytes)
            }
            (Pending::Manifest(content), other) => {
                debug!(%peer, ?other, "no manifest from this peer");
                self.engine.manifest(now, &peer, content, ManifestReply::Missing);
            }
            (Pending::Bitfield(content), Response::Bitfield { chunks, bits }) => {
                match Bitfield::from_bytes(chunks, &bits) {
                    Ok(b) => self.engine.bitfield(now, &peer, &content, Some(b)),
                    Err(e) => {
                        debug!(%peer, "bad bitfield: {e}");
                        self.engine.send_failed(now, &peer, &engine::Request::Bitfield { content });
                    }
                }
            }
            (Pending::Bitfield(content), Response::Missing { .. }) => {
                self.engine.bitfield(now, &peer, &content, None)
            }
            (Pending::Bitfield(content), other) => {
                debug!(%peer, ?other, "no bitfield in answer to ours");
                self.engine.send_failed(now, &peer, &engine::Request::Bitfield { content });
            }
            (Pending::Chunk(content, index), Response::Chunk { bytes, load }) => {
                let len = bytes.len() as u64;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.bytes_down += len;
                }
                self.bytes_total.1 += len;
                let label = self.locality_label(&peer);
                self.metrics.bytes_received.get_or_create(&label).inc_by(len);
                self.count_traffic(&peer, len);
                let reply = Reply::Answer(Answer::Data { len, load });
                if self.engine.chunk_reply(now, &peer, &content, index, reply) {
                    self.spawn_write(peer, content, index, bytes);
                }
            }
            (Pending::Chunk(content, index), response) => {
                let answer = match response {
                    Response::Busy { load } => {
                        self.metrics.failed("busy");
                        Answer::Busy { load }
                    }
                    Response::Cancelled => Answer::Cancelled,
                    Response::Missing { load } => {
                        self.metrics.failed("missing");
                        Answer::Missing { load }
                    }
                    other => {
                        debug!(%peer, ?other, "unexpected answer to a chunk request");
                        self.metrics.failed("missing");
                        Answer::Missing { load: 1.0 }
                    }
                };
                self.engine.chunk_reply(now, &peer, &content, index, Reply::Answer(answer));
            }
            (Pending::Sync, Response::Entries(entries)) => self.on_entries(peer, entries),
            (_, Response::Refused { reason }) => debug!(%peer, %reason, "request refused"),
            _ => {}
        }
    }

    /// A request of ours failed; `moved`: its connection closed while the peer stays connected through
    /// another.
    fn on_failure(&mut self, peer: PeerId, what: Pending, moved: bool) {
        let now = self.now();
        match what {
            Pending::Chunk(content, index) if moved => {
                self.metrics.failed("connection_closed");
                self.engine.chunk_reply(now, &peer, &content, index, Reply::Moved);
            }
            Pending::Chunk(content, index) => {
                self.metrics.failed("io");
                self.engine.chunk_reply(now, &peer, &content, index, Reply::Failed);
            }
            Pending::Manifest(content) => self.engine.manifest(now, &peer, content, ManifestReply::Missing),
            Pending::Bitfield(content) => {
                self.engine.send_failed(now, &peer, &engine::Request::Bitfield { content })
            }
            Pending::Hello => self.engine.send_failed(now, &peer, &engine::Request::Hello),
            Pending::Have | Pending::Cancel | Pending::Sync => {}
        }
    }

    pub(super) fn locality_label(&self, peer: &PeerId) -> metrics::LocalityLabel {
        let mine = self.own_locality();
        let info = self.peers.get(peer).and_then(|p| p.info.clone()).unwrap_or_default();
        let theirs = self.locality_of(peer, info.isp, info.site);
        let locality = if mine.same_site(&theirs) {
            metrics::Locality::SameSite
        } else if mine.same_isp(&theirs) {
            metrics::Locality::SameIsp
        } else if mine.isp.is_some() && theirs.isp.is_some() {
            metrics::Locality::OtherIsp
        } else {
            metrics::Locality::Unknown
        };
        metrics::LocalityLabel { locality }
    }

    // ---- offers and limits --------------------------------------------------------------------------

    /// Tells the engine about a published content: whether the catalogue targets us, and its deadline in
    /// engine time.
    pub(super) fn offer(&mut self, publish: &Publish) {
        let now = self.now();
        let deadline = publish.deadline.map(|d| now + Duration::from_secs(d.saturating_sub(unix_now())));
        let offer = Offer {
            content: publish.content,
            chunks: publish.chunks,
            size: publish.size,
            chunk_size: u64::from(publish.chunk_size),
            deadline,
            targeted: self.catalogue.targets(publish, &self.me.to_string()),
        };
        self.engine.offer(now, offer);
    }

    /// Offers every published content (at start, and when an Admit or Revoke may have changed targeting).
    pub(super) fn offer_all(&mut self) {
        let films: Vec<Publish> = self.catalogue.films().map(|f| f.publish.clone()).collect();
        for p in films {
            self.offer(&p);
        }
    }

    /// Re-evaluates the limits in force (static, own schedule, signed policy) and hands them to the engine.
    pub(super) fn apply_limits(&mut self) {
        let t = &self.cfg.transfer;
        let base = Limits { upload: t.upload_limit.map(|r| r.0), download: t.download_limit.map(|r| r.0) };
        let me = self.me.to_string();
        let groups = self.catalogue.member(&me).map(|m| m.groups.clone()).unwrap_or_default();
        let policy = groups
            .iter()
            .find_map(|g| self.catalogue.policy(Some(g)))
            .or_else(|| self.catalogue.policy(None));
        let limits =
            schedule::limits_at(base, &t.schedule, policy.map(|p| p.schedule.as_slice()), unix_now());
        if limits != self.engine.limits() {
            info!(upload = ?limits.upload, download = ?limits.download, "rate limits in force");
            let now = self.now();
            self.engine.set_limits(now, limits);
        }
    }

    /// The content was withdrawn: the engine stops it and removes its data.
    pub(super) fn withdraw(&mut self, content: ContentId) {
        info!(content = %content, "content withdrawn");
        let now = self.now();
        self.engine.withdraw(now, &content);
        self.manifests.remove(&content);
        let _ = self.events.send(Event::Withdrawn { content });
    }
}
