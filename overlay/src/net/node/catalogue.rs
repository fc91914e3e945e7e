//! The signed catalogue in the node: gossip in and out, anti-entropy, persisting applied entries, acting
//! on them (offers to the engine, withdrawals, limits), fleet reports, and publishing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use libp2p::{gossipsub, PeerId};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{rejection_label, unix_now, Done, Node, Pending, REPUBLISH_FOR, REPUBLISH_QUEUE};
use crate::catalogue::{Body, Rejection, SignedEntry};
use crate::content::Manifest;
use crate::core::engine::Held;
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
        let acceptance = match (source, fleet::Report::decode(data)) {
            (Some(src), Ok(report))
                if !self.revoked(&src) && (!self.catalogue.has_members() || self.allowed(&src)) =>
            {
                self.fleet.record(src.to_string(), report);
                gossipsub::MessageAcceptance::Accept
            }
            (_, Err(e)) => {
                debug!(peer = %via, "fleet report rejected: {e}");
                self.metrics.fleet_rejected.inc();
                gossipsub::MessageAcceptance::Reject
            }
            _ => gossipsub::MessageAcceptance::Ignore,
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &via, acceptance);
    }

    /// Our progress summary; also recorded in our own fleet view.
    pub(super) fn report_progress(&mut self) {
        let now = Instant::now();
        let elapsed = self.last_report.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.last_report = Some(now);
        let mut contents = Vec::new();
        let mut prev = BTreeMap::new();
        // Unfinished first: they are what the fleet view is for.
        let mut held: Vec<(ContentId, u32, u32)> =
            self.engine.held_contents().map(|(c, h)| (*c, h.have.count(), h.have.len())).collect();
        held.sort_by_key(|(_, have, total)| have == total);
        for (content, have, total) in held.into_iter().take(fleet::MAX_REPORT_CONTENTS) {
            let chunk = self.catalogue.film(&content).map(|f| f.publish.chunk_size).unwrap_or(0) as f64;
            let before = self.report_prev.get(&content).copied().unwrap_or(have);
            let rate = if elapsed > 0.0 { have.saturating_sub(before) as f64 * chunk / elapsed } else { 0.0 };
            prev.insert(content, have);
            contents.push(fleet::ContentProgress { content, have, total, rate });
        }
        self.report_prev = prev;
        let report = fleet::Report {
            role: self.cfg.role.as_str().to_owned(),
            name: self.cfg.name.clone(),
            isp: self.own_locality().isp,
            issued_at: unix_now(),
            contents,
        };
        let topic = gossipsub::IdentTopic::new(fleet::FLEET_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, report.encode()) {
            debug!("fleet report not published: {e}");
        }
        self.fleet.record(self.me.to_string(), report);
    }

    /// Applies an entry, persists what was applied and acts on it. `Ok(true)` when it was held for a gap.
    pub(super) fn apply_entry(&mut self, entry: SignedEntry) -> Result<bool, Rejection> {
        let applied = match self.catalogue.apply(entry) {
            Ok(a) => a,
            Err(r) => {
                self.metrics.rejected(rejection_label(&r));
                return Err(r);
            }
        };
        for r in &applied.dropped {
            self.metrics.rejected(rejection_label(r));
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
