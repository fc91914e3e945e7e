//! Relayed peers: a connection through a circuit relay is a slow, metered source. The body says how each
//! session is carried ([`Engine::link`]); the engine never asks a relayed peer for chunks unless the
//! operator gave a budget (`network.nat.relay_film_budget`), counts what it asks for against it, and
//! ranks a relayed peer below every direct one (it is scored as fully loaded). When hole punching upgrades
//! the session to a direct connection, the peer becomes an ordinary source.

use super::Output;
use super::{Engine, Request, Role};
use crate::scheduler::PeerKey;
use crate::{ContentId, Link, Locality, Time};

/// The load a relayed peer is scored with: the worst, so any direct source wins.
const RELAYED_LOAD: f32 = 1.0;

impl<P: PeerKey> Engine<P> {
    /// How the connection to `peer` is carried now (its best connection: a direct one when there is one).
    /// Call it after [`connected`](Self::connected) and whenever it changes (a hole punch succeeded, the
    /// direct connection closed and only the relayed one is left).
    pub fn link(&mut self, now: Time, peer: &P, link: Link) {
        self.input("link");
        let relayed = link.is_relayed();
        let Some(s) = self.sessions.get_mut(peer) else { return };
        if s.relayed == relayed {
            return;
        }
        s.relayed = relayed;
        s.load = if relayed { RELAYED_LOAD } else { 0.0 };
        if !s.joined {
            return;
        }
        let locality = s.info.locality.clone();
        if self.may_fetch_over(relayed) {
            self.join_scheduler(now, peer, locality);
            // What it holds, asked again: it may have been out of the scheduler while relayed.
            let active: Vec<ContentId> = self
                .fetches
                .iter()
                .filter(|(_, f)| matches!(f, super::Fetch::Active))
                .map(|(c, _)| *c)
                .collect();
            for content in active {
                self.out
                    .push_back(Output::Send { peer: peer.clone(), request: Request::Bitfield { content } });
            }
        } else {
            self.scheduler.peer_left(now, peer);
        }
        self.drive(now);
    }

    /// Bytes of the relay budget still unused.
    pub fn relay_budget_left(&self) -> u64 {
        self.cfg.relay_budget.saturating_sub(self.stats.relay_requested)
    }

    /// Whether chunks may be asked over a connection that is (`relayed`) or is not relayed: always over a
    /// direct one; over a relayed one while the budget holds one more chunk of the largest size offered.
    fn may_fetch_over(&self, relayed: bool) -> bool {
        !relayed || self.relay_budget_left() >= self.largest_chunk()
    }

    fn largest_chunk(&self) -> u64 {
        self.offers.values().map(|o| o.chunk_size).max().unwrap_or(0).max(1)
    }

    /// A joined peer enters the scheduler, unless it is relayed and the budget forbids it; a relayed one
    /// enters scored as fully loaded.
    pub(super) fn join_scheduler(&mut self, now: Time, peer: &P, locality: Locality) {
        let relayed = self.sessions.get(peer).is_some_and(|s| s.relayed);
        if !self.may_fetch_over(relayed) {
            return;
        }
        let seeder = self
            .sessions
            .get(peer)
            .is_some_and(|s| matches!(s.info.role, Some(Role::Superseeder | Role::Distributor)));
        self.scheduler.peer_joined(now, peer.clone(), locality);
        self.scheduler.peer_seeder(peer, seeder);
        if let Some(rtt) = self.sessions.get(peer).and_then(|s| s.rtt) {
            self.scheduler.peer_rtt(peer, rtt);
        }
        if relayed {
            self.scheduler.peer_load(now, peer, RELAYED_LOAD);
        }
    }

    /// The load to remember for `peer`: what it reported, or the worst when it is relayed.
    pub(super) fn effective_load(&self, peer: &P, load: f32) -> f32 {
        if self.sessions.get(peer).is_some_and(|s| s.relayed) {
            RELAYED_LOAD
        } else {
            load
        }
    }

    /// A chunk of `content` is being asked of `peer`: over a relay it counts against the budget, and once
    /// the budget cannot hold another chunk every relayed peer leaves the scheduler.
    pub(super) fn charge_relay(&mut self, now: Time, peer: &P, content: ContentId) {
        if !self.sessions.get(peer).is_some_and(|s| s.relayed) {
            return;
        }
        let size = self.offers.get(&content).map_or(0, |o| o.chunk_size);
        self.stats.relay_requested = self.stats.relay_requested.saturating_add(size);
        if self.may_fetch_over(true) {
            return;
        }
        let relayed: Vec<P> =
            self.sessions.iter().filter(|(_, s)| s.relayed).map(|(p, _)| p.clone()).collect();
        for p in relayed {
            self.scheduler.peer_left(now, &p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Answer, Config, Engine, ManifestReply, Offer, PeerInfo, Reply, Role, Written};
    use super::*;
    use crate::config::{PolicyConfig, TransferConfig};
    use crate::Bitfield;

    const C: ContentId = ContentId([9; 32]);
    const CHUNK: u64 = 1 << 20;

    fn t(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    fn drain(e: &mut Engine<u32>) -> Vec<Output<u32>> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    fn chunk_requests(out: &[Output<u32>]) -> Vec<(u32, u32)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { peer, request: Request::Chunk { index, .. } } => Some((*peer, *index)),
                _ => None,
            })
            .collect()
    }

    /// A cinema fetching C (`chunks` chunks) with `budget` bytes allowed over relays, connected to `peers`
    /// (peer, link), every one a cinema holding all of C (not a seeder: no request beyond the window).
    fn fetching(chunks: u32, budget: u64, peers: &[(u32, Link)]) -> (Engine<u32>, Vec<Output<u32>>) {
        let mut c = Config::new(Role::Cinema, TransferConfig::default(), PolicyConfig::default());
        c.relay_budget = budget;
        // Two requests in flight in all: who gets a freed slot shows whom the engine prefers.
        c.transfer.max_requests_total = 2;
        c.transfer.spare_load = 0.0;
        let mut e = Engine::new(c);
        for &(p, link) in peers {
            e.connected(t(0), p);
            e.link(t(0), &p, link);
            e.hello(
                t(0),
                p,
                PeerInfo { role: Some(Role::Cinema), locality: Locality::default(), downlink: None },
            );
        }
        let size = u64::from(chunks) * CHUNK;
        e.offer(t(0), Offer { content: C, chunks, size, chunk_size: CHUNK, deadline: None, targeted: true });
        e.manifest(t(0), &peers[0].0, C, ManifestReply::Good { size });
        e.installed(t(0), C, Ok(Bitfield::new(chunks)));
        for &(p, _) in peers {
            e.bitfield(t(0), &p, &C, Some(Bitfield::full(chunks)));
        }
        let out = drain(&mut e);
        (e, out)
    }

    #[test]
    fn without_a_budget_no_chunk_is_asked_over_a_relay_until_a_hole_punch() {
        let (mut e, out) = fetching(8, 0, &[(1, Link::Relayed), (2, Link::Tcp)]);
        let reqs = chunk_requests(&out);
        assert!(!reqs.is_empty() && reqs.iter().all(|(p, _)| *p == 2), "direct peer only: {reqs:?}");
        // The direct source goes: the relayed one is still not asked.
        e.disconnected(t(1), &2);
        assert!(chunk_requests(&drain(&mut e)).is_empty());
        assert_eq!(e.stats().relay_requested, 0);
        // Hole punching gave a direct connection: its bitfield is asked again, then its chunks.
        e.link(t(2), &1, Link::HolePunched);
        let out = drain(&mut e);
        assert!(
            out.contains(&Output::Send { peer: 1, request: Request::Bitfield { content: C } }),
            "{out:?}"
        );
        e.bitfield(t(2), &1, &C, Some(Bitfield::full(8)));
        let reqs = chunk_requests(&drain(&mut e));
        assert!(!reqs.is_empty() && reqs.iter().all(|(p, _)| *p == 1), "{reqs:?}");
    }

    #[test]
    fn a_relayed_source_ranks_below_a_direct_one_and_its_chunks_stay_within_the_budget() {
        // Both hold everything. The relayed peer's bitfield came first and took both requests; when one
        // is answered and both peers have a free slot, the direct peer gets it, and the next one too.
        let (mut e, out) = fetching(8, 64 * CHUNK, &[(1, Link::Relayed), (2, Link::Quic)]);
        let reqs = chunk_requests(&out);
        assert_eq!(reqs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 1], "{reqs:?}");
        for (i, &(_, index)) in reqs.iter().enumerate() {
            let now = t(1 + i as u64);
            assert!(e.chunk_reply(now, &1, &C, index, Reply::Answer(Answer::Data { len: CHUNK, load: 0.0 })));
            e.chunk_written(now, &1, &C, index, CHUNK, Written::Ok);
            let next = chunk_requests(&drain(&mut e));
            assert_eq!(next.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2], "direct first: {next:?}");
        }

        // A relayed source alone, with a budget of three chunks: never more than three asked of it.
        let (mut e, out) = fetching(16, 3 * CHUNK, &[(1, Link::Relayed)]);
        let mut asked = chunk_requests(&out);
        for step in 0..16u64 {
            let Some(&(_, index)) = asked.last() else { break };
            if e.chunk_reply(
                t(step + 1),
                &1,
                &C,
                index,
                Reply::Answer(Answer::Data { len: CHUNK, load: 0.0 }),
            ) {
                e.chunk_written(t(step + 1), &1, &C, index, CHUNK, Written::Ok);
            }
            asked.extend(chunk_requests(&drain(&mut e)));
            e.handle_timeout(t(step + 1) + Duration::from_secs(5));
            asked.extend(chunk_requests(&drain(&mut e)));
        }
        assert!(asked.len() <= 3, "{asked:?}");
        assert!(!asked.is_empty(), "the budget is used");
        assert!(e.stats().relay_requested <= 3 * CHUNK);
        assert_eq!(e.relay_budget_left(), 3 * CHUNK - e.stats().relay_requested);
    }
}
