//! The signed catalogue in the node: gossip in and out, anti-entropy, persisting applied entries, acting
//! on them (offers to the engine, withdrawals, limits), fleet reports, and publishing.

use std::path::PathBuf;
use std::time::Instant;

use libp2p::{gossipsub, PeerId};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{rejection_label, unix_now, Done, Node, Pending, REPUBLISH_FOR, REPUBLISH_QUEUE};
use crate::catalogue::{Body, Rejection, SignedEntry};
use crate::content::Manifest;
use crate::core::engine::{FetchState, Held};
use crate::core::Bitfield;
use crate::net::behaviour::CATALOGUE_TOPIC;
use crate::net::fleet;
use crate::net::metrics;
use crate::net::protocol::{Request, MAX_SYNC_ENTRIES, MAX_SYNC_HEADS};
use crate::store::{ContentRoot, Have};
use crate::ContentId;

impl Node {
    pub(super) fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        let acceptance = match SignedEntry::decode(&data).and_then(|e| self.apply_entry(e)) {
            Ok(held) => {
                if held {
                    self.request_sync(source);
                }
                gossipsub::MessageAcceptance::Accept
            }
            Err(r) if r.is_duplicate() => gossipsub::MessageAcceptance::Ignore,
            Err(r) => {
                warn!(peer = %source, "catalogue entry rejected: {r}");
                if r.blames_sender() {
                    gossipsub::MessageAcceptance::Reject
                } else {
                    gossipsub::MessageAcceptance::Ignore
                }
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &source, acceptance);
    }

    pub(super) fn on_fleet_report(
        &mut self,
        via: PeerId,
        id: gossipsub::MessageId,
        source: Option<PeerId>,
        data: &[u8],
    ) {
        let src = source.map(|s| s.to_string());
        let verdict = src
            .ok_or(fleet::Refusal::Unsigned)
            .and_then(|src| self.fleet.accept(&src, data, &self.catalogue, self.cfg.private, unix_now()));
        let acceptance = match verdict {
            Ok(()) => gossipsub::MessageAcceptance::Accept,
            Err(e) if e.blames_sender() => {
                debug!(peer = %via, "fleet report rejected: {e}");
                self.metrics.fleet_rejected.inc();
                gossipsub::MessageAcceptance::Reject
            }
            Err(e) => {
                debug!(peer = %via, "fleet report ignored: {e}");
                gossipsub::MessageAcceptance::Ignore
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &via, acceptance);
    }

    /// Where each of our contents stands, unfinished first: `(content, state, have, total)`.
    fn content_states(&self) -> Vec<(ContentId, fleet::ContentState, u32, u32)> {
        use fleet::ContentState as S;
        let mut list: Vec<_> = self
            .engine
            .held_contents()
            .map(|(c, h)| {
                let (have, total) = (h.have.count(), h.have.len());
                let state = match self.engine.fetch_state(c) {
                    Some(FetchState::Refused(_)) => S::Refused,
                    _ if have == total => S::Complete,
                    _ => S::Fetching,
                };
                (*c, state, have, total)
            })
            .collect();
        for (c, f) in self.engine.fetches() {
            let state = match f {
                FetchState::Refused(_) => S::Refused,
                FetchState::Waiting | FetchState::Installing => S::Waiting,
                FetchState::Active => continue,
            };
            if self.engine.held(c).is_none() {
                list.push((*c, state, 0, self.catalogue.film(c).map(|f| f.publish.chunks).unwrap_or(0)));
            }
        }
        list.sort_by_key(|(_, state, ..)| *state == S::Complete);
        list
    }

    /// Counts content bytes received from `peer` under its ISP, for the fleet report.
    pub(super) fn count_traffic(&mut self, peer: &PeerId, len: u64) {
        let declared = self.peers.get(peer).and_then(|p| p.info.as_ref()).and_then(|i| i.isp.clone());
        let isp = self.locality_of(peer, declared, None).isp;
        self.traffic.add(isp.as_deref(), len);
    }

    /// Sends our progress report when the pacer says so (every interval, soon after a change of state).
    pub(super) fn maybe_report(&mut self) {
        let states = self.content_states();
        let now = self.now();
        let interval = self.cfg.gossip.fleet_interval;
        let hook = self.hook_result.as_deref();
        if self.report_pacer.observe(now, states.iter().map(|&(c, s, have, _)| (c, s, have)), hook, interval)
        {
            let delivered = self.report_progress(states);
            self.report_pacer.sent(now, delivered);
        }
    }

    /// Our progress summary; also recorded in our own fleet view. Whether it reached a peer.
    fn report_progress(&mut self, states: Vec<(ContentId, fleet::ContentState, u32, u32)>) -> bool {
        let states: Vec<_> = states.into_iter().take(fleet::MAX_REPORT_CONTENTS).collect();
        let have = states.iter().map(|&(c, _, have, _)| (c, have)).collect();
        let (up, down) = self.bytes_total;
        let rates = self.report_rates.measure(self.now(), up, down, have);
        let contents = states
            .into_iter()
            .map(|(content, state, have, total)| {
                let chunk = self.catalogue.film(&content).map(|f| f.publish.chunk_size).unwrap_or(0) as f64;
                let rate = rates.chunks.get(&content).copied().unwrap_or(0.0) * chunk;
                fleet::ContentProgress { content, have, total, rate, state }
            })
            .collect();
        let report = fleet::Report {
            name: self.cfg.name.clone(),
            isp: self.own_locality().isp,
            contents,
            disk_free: self.store.free_space().ok(),
            up_rate: rates.up,
            down_rate: rates.down,
            received: self.traffic.list(),
            hook: self.hook_result.clone(),
            reachability: Some(self.nat.reachability()),
            ..fleet::Report::empty(self.cfg.role.as_str(), unix_now())
        };
        let topic = gossipsub::IdentTopic::new(fleet::FLEET_TOPIC);
        let delivered = match self.swarm.behaviour_mut().gossipsub.publish(topic, report.encode()) {
            Ok(_) => true,
            Err(e) => {
                debug!("fleet report not published: {e}");
                false
            }
        };
        self.fleet.record(self.me.to_string(), report);
        delivered
    }

    /// Applies an entry, persists what was applied and acts on it. `Ok(true)` when it was held for a gap.
    pub(super) fn apply_entry(&mut self, entry: SignedEntry) -> Result<bool, Rejection> {
        let applied = match self.catalogue.apply(entry, unix_now()) {
            Ok(a) => a,
            Err(r) => {
                self.metrics.rejected(rejection_label(&r));
                return Err(r);
            }
        };
        for r in &applied.dropped {
            self.metrics.rejected(rejection_label(r));
        }
        if !applied.entries.is_empty() {
            self.answers.catalogue_changed();
        }
        for e in &applied.entries {
            if let Err(err) = self.store.put_catalogue_entry(e.entry.key.as_bytes(), e.entry.seq, &e.encode())
            {
                warn!("cannot persist catalogue entry {}: {err}", e.entry.seq);
            }
            self.metrics.catalogue_applied.inc();
            self.metrics
                .catalogue_head
                .get_or_create(&metrics::KeyLabel { key: e.entry.key.to_string() })
                .set(e.entry.seq as i64);
        }
        if !applied.entries.is_empty() {
            if let Some(flush) = self.store.catalogue_flush() {
                tokio::spawn(async move {
                    if let Err(err) = flush.await {
                        warn!("cannot flush the catalogue to disk: {err}");
                    }
                });
            }
        }
        for e in applied.entries {
            self.on_applied(e);
        }
        Ok(applied.held)
    }

    fn on_applied(&mut self, entry: SignedEntry) {
        debug!(seq = entry.entry.seq, "catalogue entry applied");
        match entry.entry.body {
            Body::Publish(p) => self.offer(&p),
            Body::Withdraw { content } => self.withdraw(content),
            Body::Admit(_) | Body::Revoke { .. } => {
                self.update_gate();
                let revoked: Vec<PeerId> = self.peers.keys().filter(|p| self.revoked(p)).copied().collect();
                for p in revoked {
                    self.metrics.connections_refused.inc();
                    let _ = self.swarm.disconnect_peer_id(p);
                }
                self.offer_all();
                self.apply_limits();
            }
            Body::Policy(_) => self.apply_limits(),
        }
        self.refresh_gauges();
    }

    pub(super) fn request_sync(&mut self, peer: PeerId) {
        let heads: Vec<([u8; 32], u64)> = self
            .catalogue
            .trusted()
            .map(|k| (*k.as_bytes(), self.catalogue.head(k)))
            .take(MAX_SYNC_HEADS)
            .collect();
        if !heads.is_empty() {
            self.send(peer, Request::Sync { heads }, Pending::Sync);
        }
    }

    /// Entries a peer sent back for our `Sync`.
    pub(super) fn on_entries(&mut self, peer: PeerId, entries: Vec<Vec<u8>>) {
        let full = entries.len() >= MAX_SYNC_ENTRIES;
        let mut gained = 0u64;
        for bytes in entries {
            match SignedEntry::decode(&bytes).and_then(|e| self.apply_entry(e)) {
                Ok(_) => gained += 1,
                Err(r) if r.is_duplicate() => {}
                Err(r) => warn!(%peer, "catalogue entry from sync rejected: {r}"),
            }
        }
        self.metrics.sync_entries.inc_by(gained);
        if full && gained > 0 {
            self.request_sync(peer);
        }
    }

    fn gossip(&mut self, entry: &SignedEntry) {
        self.publish_or_queue(entry.encode(), Instant::now());
    }

    /// Publishes on the catalogue topic; when no peer is subscribed yet (right after start) the entry is
    /// queued and retried each tick for [`REPUBLISH_FOR`], so a publish is not lost to a slow mesh. The queue
    /// holds at most [`REPUBLISH_QUEUE`] entries (the oldest is dropped; anti-entropy still delivers it).
    pub(super) fn publish_or_queue(&mut self, data: Vec<u8>, since: Instant) {
        let topic = gossipsub::IdentTopic::new(CATALOGUE_TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data.clone()) {
            Err(
                gossipsub::PublishError::NoPeersSubscribedToTopic | gossipsub::PublishError::AllQueuesFull(_),
            ) if since.elapsed() < REPUBLISH_FOR => {
                if self.republish.len() >= REPUBLISH_QUEUE {
                    self.republish.pop_front();
                }
                self.republish.push_back((data, since));
            }
            Err(e) => debug!("gossip publish: {e}"),
            Ok(_) => {}
        }
    }

    /// Whether this node would accept `entry` from its signer: a trusted key and a good signature. Checked
    /// before anything is stored for it.
    fn admissible(&self, entry: &SignedEntry) -> Result<(), String> {
        if !self.catalogue.trusted().any(|k| *k == entry.entry.key) {
            return Err(format!(
                "this node does not trust key {}: add it to node.trust (or --trust) before using it here",
                entry.entry.key
            ));
        }
        entry.verify().map_err(|r| r.to_string())
    }

    pub(super) fn submit(&mut self, entry: SignedEntry) -> Result<(), String> {
        self.admissible(&entry)?;
        let copy = entry.clone();
        match self.apply_entry(entry) {
            Ok(_) => {
                self.gossip(&copy);
                Ok(())
            }
            Err(r) => Err(r.to_string()),
        }
    }

    /// A publish from the API: the entry is checked (a Publish of this very manifest, a trusted key, a
    /// good signature) before the files are registered, which happens on the blocking pool; the entry is
    /// applied and gossiped once they are.
    pub(super) fn publish(
        &mut self,
        manifest: Manifest,
        root: PathBuf,
        entry: SignedEntry,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        let content = manifest.id();
        let checked = match &entry.entry.body {
            Body::Publish(p) if p.content == content => self.admissible(&entry),
            _ => Err("the signed entry is not a Publish of this manifest".into()),
        };
        if let Err(e) = checked {
            let _ = reply.send(Err(e));
            return;
        }
        let store = self.store.clone();
        let done = self.done_tx.clone();
        let chunks = manifest.chunk_count();
        let size = manifest.total_size();
        tokio::task::spawn_blocking(move || {
            let result = store
                .add_content(&manifest, ContentRoot::External(root), Have::Trusted)
                .map_err(|e| e.to_string());
            let _ = done.blocking_send(Done::Published {
                content,
                chunks,
                size,
                entry: Box::new(entry),
                result,
                reply,
            });
        });
    }

    /// The published content's files are registered: the engine holds it, the entry goes out.
    pub(super) fn on_published(
        &mut self,
        content: ContentId,
        chunks: u32,
        size: u64,
        entry: SignedEntry,
        result: Result<(), String>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if let Err(e) = result {
            let _ = reply.send(Err(e));
            return;
        }
        let now = self.now();
        match self.submit(entry) {
            Ok(()) => {
                self.engine.hold(now, content, Held { have: Bitfield::full(chunks), size, pinned: true });
                self.refresh_gauges();
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                // Refused after all (a duplicate or conflicting seq): nothing of it may stay served.
                if self.engine.held(&content).is_none() {
                    self.spawn_remove(content);
                }
                let _ = reply.send(Err(e));
            }
        }
    }
}
