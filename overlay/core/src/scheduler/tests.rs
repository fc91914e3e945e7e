//! Unit tests and the property test of the scheduler.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const MS: u64 = 1000;

fn id(n: u8) -> ContentId {
    ContentId([n; 32])
}

fn bits(n: u32, ones: impl IntoIterator<Item = u32>) -> Bitfield {
    let mut b = Bitfield::new(n);
    for i in ones {
        b.set(i);
    }
    b
}

fn transfer(per_peer: u32, total: u32) -> TransferConfig {
    TransferConfig {
        max_requests_per_peer: per_peer,
        max_requests_total: total,
        min_requests_total: total,
        // Every peer contended, as before spare uploaders (tested on their own below).
        spare_load: 0.0,
        ..Default::default()
    }
}

fn spec(n: u8, chunks: u32, deadline: Option<Time>) -> ContentSpec {
    ContentSpec { id: id(n), chunks, deadline }
}

fn drain(s: &mut Scheduler<u32>, now: Time) -> Vec<Output<u32>> {
    std::iter::from_fn(|| s.poll_output(now)).collect()
}

fn requests(outs: &[Output<u32>]) -> Vec<(u32, ContentId, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Request { peer, content, chunk } => Some((*peer, *content, *chunk)),
            _ => None,
        })
        .collect()
}

fn local() -> Locality {
    Locality::new("isp-a", "site-a")
}

fn far() -> Locality {
    Locality::new("isp-b", "site-b")
}

#[test]
fn rarest_first() {
    // Peer 1 (same ISP, so served first) holds everything; chunk 5 is held by it alone, chunk 6 by it and
    // peer 2, every other chunk by all three.
    let mut firsts = BTreeSet::new();
    for seed in 0..20 {
        let mut s = Scheduler::new(&transfer(8, 8), &PolicyConfig::default(), local(), seed);
        s.add_content(Time::ZERO, spec(1, 8, None), Bitfield::new(8));
        for p in 1..=3 {
            s.peer_joined(Time::ZERO, p, if p == 1 { local() } else { far() });
        }
        // The far peers' slots are full: they never beat peer 1 by `policy.local_margin`.
        s.peer_load(Time::ZERO, &2, 1.0);
        s.peer_load(Time::ZERO, &3, 1.0);
        s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(8));
        s.peer_bitfield(Time::ZERO, &2, &id(1), bits(8, [0, 1, 2, 3, 4, 6, 7]));
        s.peer_bitfield(Time::ZERO, &3, &id(1), bits(8, [0, 1, 2, 3, 4, 7]));
        let reqs = requests(&drain(&mut s, Time::ZERO));
        assert_eq!(reqs.len(), 8);
        assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
        assert_eq!(reqs[0].2, 5, "rarest chunk first");
        assert_eq!(reqs[1].2, 6, "then the next rarest");
        firsts.insert(reqs[2].2);
    }
    assert!(firsts.len() > 1, "ties among equally rare chunks are broken at random: {firsts:?}");
}

#[test]
fn deadline_order_across_contents() {
    let mut s = Scheduler::new(&transfer(6, 6), &PolicyConfig::default(), local(), 1);
    s.add_content(Time::ZERO, spec(1, 2, None), Bitfield::new(2));
    s.add_content(Time::ZERO, spec(2, 2, Some(Time(100))), Bitfield::new(2));
    s.add_content(Time::ZERO, spec(3, 2, Some(Time(50))), Bitfield::new(2));
    s.add_content(Time::ZERO, spec(4, 2, None), Bitfield::new(2));
    assert_eq!(s.contents(), vec![id(3), id(2), id(1), id(4)]);
    s.peer_joined(Time::ZERO, 1, far());
    for c in 1..=4 {
        s.peer_bitfield(Time::ZERO, &1, &id(c), Bitfield::full(2));
    }
    let order: Vec<ContentId> = requests(&drain(&mut s, Time::ZERO)).into_iter().map(|r| r.1).collect();
    assert_eq!(order, vec![id(3), id(3), id(2), id(2), id(1), id(1)]);
}

#[test]
fn endgame_duplicates_then_cancel() {
    let mut s = Scheduler::new(&transfer(4, 64), &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 4, None), Bitfield::new(4));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(4));
    }
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.len(), 8, "4 chunks, each asked of both peers: {reqs:?}");
    assert!(s.is_endgame(&id(1)));
    let mut per_chunk = BTreeMap::<u32, BTreeSet<u32>>::new();
    for (p, _, c) in &reqs {
        assert!(per_chunk.entry(*c).or_default().insert(*p), "same chunk asked twice of one peer");
    }
    assert!(per_chunk.values().all(|ps| ps.len() == 2));
    assert_eq!(s.stats().endgame_requests, 4);
    s.chunk_received(Time(10 * MS), &1, &id(1), 0, 100);
    assert_eq!(drain(&mut s, Time(10 * MS)), vec![Output::Cancel { peer: 2, content: id(1), chunk: 0 }]);
    assert_eq!(s.stats().cancels, 1);
    // The cancelled duplicate arriving anyway is ignored.
    s.chunk_received(Time(11 * MS), &2, &id(1), 0, 100);
    assert_eq!(s.stats().duplicates, 1);
    assert_eq!(s.progress(&id(1)).unwrap().have, 1);
}

#[test]
fn a_seeder_adds_an_endgame_copy_of_a_chunk_already_asked_of_two_cinemas() {
    let mut s = Scheduler::new(&transfer(4, 64), &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 1, None), Bitfield::new(1));
    // The last chunk is asked of two cinemas (slow ones, say): the end-game's usual limit.
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(1));
    }
    assert_eq!(requests(&drain(&mut s, Time::ZERO)).len(), 2);
    // A third cinema holding it is not asked.
    s.peer_joined(Time(MS), 3, far());
    s.peer_bitfield(Time(MS), &3, &id(1), Bitfield::full(1));
    assert!(requests(&drain(&mut s, Time(MS))).is_empty());
    // A seeder is: the chunk no longer waits on the slow cinemas alone.
    s.peer_joined(Time(2 * MS), 9, far());
    s.peer_seeder(&9, true);
    s.peer_bitfield(Time(2 * MS), &9, &id(1), Bitfield::full(1));
    assert_eq!(requests(&drain(&mut s, Time(2 * MS))), vec![(9, id(1), 0)]);
    // The first copy to arrive wins; the other two are cancelled.
    s.chunk_received(Time(3 * MS), &9, &id(1), 0, 100);
    let cancels =
        drain(&mut s, Time(3 * MS)).into_iter().filter(|o| matches!(o, Output::Cancel { .. })).count();
    assert_eq!(cancels, 2);
}

/// Two peers measured: peer 1 takes 1 s per chunk of 1 MB, peer 2 0.1 s (content 1, one chunk from each).
fn measured_slow_and_fast() -> Scheduler<u32> {
    let mut s = Scheduler::new(&transfer(1, 64), &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 2, None), Bitfield::new(2));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(2));
    }
    let mut reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    reqs.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (p, _, c) in reqs {
        s.chunk_received(Time(if p == 1 { 1_000 * MS } else { 100 * MS }), &p, &id(1), c, 1_000_000);
    }
    assert!(s.progress(&id(1)).is_none_or(|p| p.have == 2));
    s
}

/// End-game copies cost an uploader a whole chunk when both arrive (request-response cannot take bytes back):
/// a copy is asked when it would come well sooner than the request in flight (within `ENDGAME_SOONER` of
/// the time that request still needs), not when it would come later,
/// until that request is late (`ENDGAME_LATE` times its peer's usual time), at a wake-up the scheduler sets.
#[test]
fn an_endgame_copy_is_asked_when_it_would_come_sooner_or_the_request_is_late() {
    let at = |ms: u64| Time(ms * MS);
    // At 1 s, a one-chunk content that only peer `first` holds: its chunk is asked of it.
    let asked_of = |first: u32| {
        let mut s = measured_slow_and_fast();
        s.add_content(at(1_000), spec(2, 1, None), Bitfield::new(1));
        s.peer_bitfield(at(1_000), &first, &id(2), Bitfield::full(1));
        assert_eq!(requests(&drain(&mut s, at(1_000))), vec![(first, id(2), 0)]);
        s
    };
    // The last chunk asked of the slow peer: the fast one's copy comes sooner.
    let mut s = asked_of(1);
    s.peer_bitfield(at(1_000), &2, &id(2), Bitfield::full(1));
    assert_eq!(requests(&drain(&mut s, at(1_000))), vec![(2, id(2), 0)], "a copy that comes sooner");
    assert_eq!(s.stats().endgame_requests, 1);

    // The same, but the fast peer gets the chunk 0.15 s before the slow one's is due (at 2 s): its copy
    // (0.1 s) would come sooner, not within `ENDGAME_SOONER` (half) of that, so it waits.
    let mut s = asked_of(1);
    s.peer_bitfield(at(1_850), &2, &id(2), Bitfield::full(1));
    assert!(requests(&drain(&mut s, at(1_850))).is_empty(), "sooner, but not by half");
    assert_eq!(s.stats().endgame_requests, 0);

    // Asked of the fast peer: the slow one's copy would come later, so not until the request is late.
    let mut s = asked_of(2);
    s.peer_bitfield(at(1_000), &1, &id(2), Bitfield::full(1));
    assert!(requests(&drain(&mut s, at(1_000))).is_empty(), "a copy that would come later");
    // Due at 1.1 s, late at 1.3 s (`ENDGAME_LATE` = 3 times 0.1 s): the scheduler wakes then and asks.
    assert_eq!(s.poll_timeout(), Some(at(1_300)));
    s.handle_timeout(at(1_250));
    assert!(requests(&drain(&mut s, at(1_250))).is_empty());
    s.handle_timeout(at(1_300));
    assert_eq!(requests(&drain(&mut s, at(1_300))), vec![(1, id(2), 0)], "the request is late");
    assert_eq!(s.stats().endgame_requests, 1);
}

#[test]
fn endgame_waits_for_the_threshold() {
    let t = TransferConfig { endgame_chunks: 2, ..transfer(4, 64) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 4, None), Bitfield::new(4));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(4));
    }
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.len(), 4, "4 missing > endgame_chunks 2: no duplicates");
    assert!(!s.is_endgame(&id(1)));
    s.chunk_received(Time(MS), &reqs[0].0, &id(1), reqs[0].2, 1);
    s.chunk_received(Time(MS), &reqs[1].0, &id(1), reqs[1].2, 1);
    assert!(s.is_endgame(&id(1)));
    // Both peers bring a chunk in 1 ms: a copy of the other's would not come sooner, but once the two
    // requests are late (3 ms), both are copied.
    assert!(requests(&drain(&mut s, Time(MS))).is_empty());
    s.handle_timeout(Time(3 * MS));
    assert_eq!(requests(&drain(&mut s, Time(3 * MS))).len(), 2);
}

#[test]
fn corrupt_penalises_bans_and_refetches_elsewhere() {
    let mut s = Scheduler::new(&transfer(1, 1), &PolicyConfig::default(), local(), 4);
    s.add_content(Time::ZERO, spec(1, 1, None), Bitfield::new(1));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    for p in [1, 2] {
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(1));
    }
    assert_eq!(requests(&drain(&mut s, Time::ZERO)), vec![(1, id(1), 0)]);
    s.chunk_failed(Time(MS), &1, &id(1), 0, Failure::Corrupt);
    let outs = drain(&mut s, Time(MS));
    assert_eq!(
        outs,
        vec![Output::Penalise { peer: 1 }, Output::Request { peer: 2, content: id(1), chunk: 0 }]
    );
    assert!(s.is_blocked(&1));
    assert_eq!(
        s.poll_timeout(),
        Some(Time(MS) + TransferConfig::default().request_timeout),
        "request deadline first"
    );
    s.chunk_failed(Time(2 * MS), &2, &id(1), 0, Failure::Io);
    assert_eq!(requests(&drain(&mut s, Time(2 * MS))), vec![(2, id(1), 0)], "an I/O failure is no ban");
    s.peer_left(Time(3 * MS), &2);
    assert_eq!(drain(&mut s, Time(3 * MS)), vec![], "the banned peer is not asked");
    assert_eq!(s.poll_timeout(), Some(Time(MS) + TransferConfig::default().corrupt_ban));
    let later = Time(MS) + TransferConfig::default().corrupt_ban;
    s.handle_timeout(later);
    assert!(!s.is_blocked(&1));
    assert_eq!(requests(&drain(&mut s, later)), vec![(1, id(1), 0)], "ban over, asked again (best score)");
    assert_eq!(s.stats().corrupt, 1);
    assert_eq!(s.stats().io, 1);
}

/// One peer holding `n` chunks of content 1, asked at most `per_peer` at once, a window of `total`.
fn one_holder(per_peer: u32, total: u32, n: u32) -> Scheduler<u32> {
    let mut s = Scheduler::new(&no_endgame(per_peer, total), &PolicyConfig::default(), local(), 7);
    s.add_content(Time::ZERO, spec(1, n, None), Bitfield::new(n));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(n));
    s
}

#[test]
fn a_peer_is_asked_again_as_soon_as_a_chunk_arrives_not_once_it_is_written() {
    let mut s = one_holder(1, 4, 3);
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.len(), 1, "one request per peer");
    let a = first[0].2;
    assert!(s.chunk_arrived(Time(MS), &1, &id(1), a, 4096));
    let second = requests(&drain(&mut s, Time(MS)));
    assert_eq!(second.len(), 1, "the peer's slot is free while chunk {a} is written");
    let b = second[0].2;
    assert_ne!(a, b, "a chunk being written is not asked again");
    assert_eq!(s.peer_in_flight(&1), 1);
    assert_eq!(s.progress(&id(1)).unwrap().have, 0, "arrived is not held");
    // A second copy of the chunk being written (a late answer) is not written again.
    assert!(!s.chunk_arrived(Time(MS), &1, &id(1), a, 4096));
    s.chunk_received(Time(2 * MS), &1, &id(1), a, 4096);
    assert_eq!(s.progress(&id(1)).unwrap().have, 1);
    assert_eq!(s.stats().received, 1, "the request was counted once, when the chunk arrived");
    assert_eq!(requests(&drain(&mut s, Time(2 * MS))), vec![], "the window still holds chunk {b}");
}

#[test]
fn a_request_lost_with_a_redundant_connection_is_asked_again_and_its_peer_not_blamed() {
    for (failure, blamed) in [(Failure::Moved, false), (Failure::Io, true)] {
        let mut s = one_holder(1, 4, 4);
        let [(_, _, a)] = requests(&drain(&mut s, Time::ZERO))[..] else { panic!("one request") };
        s.chunk_received(Time(1000 * MS), &1, &id(1), a, 1_000_000);
        let [(_, _, b)] = requests(&drain(&mut s, Time(1000 * MS)))[..] else { panic!("one request") };
        let measured = s.peer_throughput(&1).expect("measured");
        s.chunk_failed(Time(1100 * MS), &1, &id(1), b, failure);
        let after = s.peer_throughput(&1).unwrap();
        let again = requests(&drain(&mut s, Time(1100 * MS)));
        assert_eq!(again.len(), 1, "{failure:?}: the peer is asked again at once");
        assert_eq!(again[0].0, 1);
        if blamed {
            assert_eq!(after, measured * 0.5, "an I/O failure halves the estimate");
            assert_eq!((s.stats().io, s.stats().moved), (1, 0));
        } else {
            assert_eq!(after, measured, "a moved request leaves the estimate as it was");
            assert_eq!((s.stats().io, s.stats().moved), (0, 1));
        }
        // The chunk it lost is a candidate again: every chunk is asked before the fetch ends.
        let mut asked = vec![a, again[0].2];
        let mut t = 1100;
        while s.progress(&id(1)).unwrap().have < 4 {
            assert!(t < 10_000, "{failure:?}: the fetch ends");
            t += 100;
            let in_flight = asked.last().copied().unwrap();
            s.chunk_received(Time(t * MS), &1, &id(1), in_flight, 1_000_000);
            asked.extend(requests(&drain(&mut s, Time(t * MS))).into_iter().map(|r| r.2));
        }
        assert!(asked.contains(&b), "{failure:?}: chunk {b} asked again ({asked:?})");
    }
}

#[test]
fn a_chunk_that_fails_its_write_after_arriving_is_asked_again_even_if_its_peer_left() {
    let mut s = one_holder(1, 4, 1);
    assert_eq!(requests(&drain(&mut s, Time::ZERO)), vec![(1, id(1), 0)]);
    assert!(s.chunk_arrived(Time(MS), &1, &id(1), 0, 4096));
    assert_eq!(drain(&mut s, Time(MS)), vec![]);
    s.chunk_failed(Time(2 * MS), &1, &id(1), 0, Failure::Local);
    assert_eq!(requests(&drain(&mut s, Time(2 * MS))), vec![(1, id(1), 0)], "a failed write: asked again");
    assert!(s.chunk_arrived(Time(3 * MS), &1, &id(1), 0, 4096));
    s.peer_left(Time(3 * MS), &1);
    s.chunk_failed(Time(4 * MS), &1, &id(1), 0, Failure::Corrupt);
    s.peer_joined(Time(5 * MS), 2, local());
    s.peer_bitfield(Time(5 * MS), &2, &id(1), Bitfield::full(1));
    assert_eq!(
        requests(&drain(&mut s, Time(5 * MS))),
        vec![(2, id(1), 0)],
        "its peer gone, still asked again"
    );
}

#[test]
fn chunks_being_written_count_against_the_window() {
    // The window bounds the chunks a body holds in memory, arrived or on the way.
    let mut s = one_holder(4, 2, 4);
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert!(s.chunk_arrived(Time(MS), &1, &id(1), r.2, 4096));
    }
    assert_eq!(requests(&drain(&mut s, Time(MS))), vec![], "two chunks being written fill a window of two");
    assert_eq!((s.in_flight(), s.writing()), (0, 2));
    s.chunk_received(Time(2 * MS), &1, &id(1), reqs[0].2, 4096);
    assert_eq!(s.writing(), 1);
    assert_eq!(requests(&drain(&mut s, Time(2 * MS))).len(), 1, "one written, one more asked");
}

#[test]
fn busy_backs_off_by_load() {
    let mut s = Scheduler::new(&transfer(1, 4), &PolicyConfig::default(), local(), 5);
    s.add_content(Time::ZERO, spec(1, 2, None), Bitfield::new(2));
    s.peer_joined(Time::ZERO, 1, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(2));
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.len(), 1);
    s.chunk_failed(Time::ZERO, &1, &id(1), first[0].2, Failure::Busy { load: 0.5 });
    assert_eq!(drain(&mut s, Time::ZERO), vec![]);
    let end = Time::ZERO + TransferConfig::default().busy_backoff.mul_f64(1.5); // busy_backoff * (1 + load)
    assert_eq!(s.poll_timeout(), Some(end));
    assert_eq!(drain(&mut s, Time(end.0 - 1)), vec![]);
    s.handle_timeout(end);
    assert_eq!(requests(&drain(&mut s, end)).len(), 1);
    assert_eq!(s.stats().busy, 1);
}

#[test]
fn busy_answers_in_a_row_double_the_back_off_until_a_chunk_arrives() {
    let mut s = Scheduler::new(&transfer(1, 4), &PolicyConfig::default(), local(), 5);
    s.add_content(Time::ZERO, spec(1, 4, None), Bitfield::new(4));
    s.peer_joined(Time::ZERO, 1, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(4));
    let base = TransferConfig::default().busy_backoff.mul_f64(2.0); // busy_backoff * (1 + load 1.0)
    let mut now = Time::ZERO;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let asked = requests(&drain(&mut s, now));
        assert_eq!(asked.len(), 1, "asked again once the back-off ends");
        s.chunk_failed(now, &1, &id(1), asked[0].2, Failure::Busy { load: 1.0 });
        let until = s.poll_timeout().expect("a back-off");
        waits.push(until.saturating_since(now));
        now = until;
        s.handle_timeout(now);
    }
    let expect: Vec<_> = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0].iter().map(|&k| base.mul_f64(k)).collect();
    assert_eq!(waits, expect, "doubling up to 2^(BUSY_STREAK_MAX - 1)");
    // A chunk from the peer ends the streak: the next busy answer backs off the base time again.
    let asked = requests(&drain(&mut s, now));
    s.chunk_received(now, &1, &id(1), asked[0].2, 1 << 20);
    let asked = requests(&drain(&mut s, now));
    s.chunk_failed(now, &1, &id(1), asked[0].2, Failure::Busy { load: 1.0 });
    assert_eq!(s.poll_timeout().map(|t| t.saturating_since(now)), Some(base));
}

#[test]
fn a_busy_load_is_forgotten_after_its_life_and_the_quiet_load_ranks_the_peer_again() {
    // Peer 1 is fast and lightly loaded until it answers busy (a rush); peer 2 says a low load but is
    // slow. One request at a time: the busy load ranks peer 1 below peer 2 for BUSY_LOAD_LIFE, long after
    // its back-off, and then its last load other than busy ranks it first again.
    let mut s = Scheduler::new(&transfer(1, 1), &PolicyConfig::default(), local(), 5);
    s.add_content(Time::ZERO, spec(1, 400, None), Bitfield::new(400));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(400));
    }
    s.peer_load(Time::ZERO, &1, 0.1);
    s.peer_load(Time::ZERO, &2, 0.2);
    let secs = |t: f64| Time::from_secs_f64(t);
    let asked = requests(&drain(&mut s, secs(0.0)));
    assert_eq!(asked.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);
    s.chunk_received(secs(1.0), &1, &id(1), asked[0].2, 4 << 20);
    // Its next answer: busy, all its slots taken.
    let asked = requests(&drain(&mut s, secs(1.0)));
    assert_eq!(asked[0].0, 1);
    let busy_at = secs(1.0);
    s.chunk_failed(busy_at, &1, &id(1), asked[0].2, Failure::Busy { load: 1.0 });
    // Peer 2 takes every request, one chunk per 20 s, until the busy load's life ends.
    let mut now = busy_at;
    let mut to_2 = 0;
    let mut first_back = None;
    for _ in 0..40 {
        s.handle_timeout(now);
        let asked = requests(&drain(&mut s, now));
        assert_eq!(asked.len(), 1, "the window always has its request at {now:?}");
        let (peer, _, chunk) = asked[0];
        if peer == 1 {
            first_back = Some(now);
            break;
        }
        to_2 += 1;
        now = now + Duration::from_secs(20);
        s.chunk_received(now, &2, &id(1), chunk, 4 << 20);
    }
    let back = first_back.expect("peer 1 is asked again");
    assert!(back >= busy_at + BUSY_LOAD_LIFE, "asked again at {back:?}, within the busy load's life");
    assert!(back <= busy_at + BUSY_LOAD_LIFE + Duration::from_secs(20), "asked again late: {back:?}");
    assert!(to_2 >= 14, "peer 2 served meanwhile: {to_2}");
    assert_eq!(s.poll_timeout().map(|t| t > back), Some(true), "no timer left in the past");
}

#[test]
fn timeouts_requeue() {
    let mut s = Scheduler::new(&transfer(1, 4), &PolicyConfig::default(), local(), 6);
    s.add_content(Time::ZERO, spec(1, 1, None), Bitfield::new(1));
    s.peer_joined(Time::ZERO, 1, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(1));
    assert_eq!(requests(&drain(&mut s, Time::ZERO)).len(), 1);
    let deadline = Time::ZERO + TransferConfig::default().request_timeout;
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(Time(deadline.0 - 1));
    assert_eq!(s.in_flight(), 1);
    assert_eq!(drain(&mut s, Time(deadline.0 - 1)), vec![]);
    s.handle_timeout(deadline);
    assert_eq!(s.stats().timeouts, 1);
    assert_eq!(requests(&drain(&mut s, deadline)), vec![(1, id(1), 0)]);
}

#[test]
fn missing_clears_the_bit() {
    let mut s = Scheduler::new(&transfer(1, 1), &PolicyConfig::default(), local(), 7);
    s.add_content(Time::ZERO, spec(1, 1, None), Bitfield::new(1));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(1));
    assert_eq!(requests(&drain(&mut s, Time::ZERO)), vec![(1, id(1), 0)]);
    s.chunk_failed(Time::ZERO, &1, &id(1), 0, Failure::Missing);
    assert_eq!(drain(&mut s, Time::ZERO), vec![], "nobody else has it");
    s.peer_has(Time::ZERO, &2, &id(1), 0);
    assert_eq!(requests(&drain(&mut s, Time::ZERO)), vec![(2, id(1), 0)]);
}

#[test]
fn same_isp_preferred_unless_locality_blind() {
    let run = |policy: &PolicyConfig, seed| {
        let mut s = Scheduler::new(&transfer(1, 1), policy, local(), seed);
        s.add_content(Time::ZERO, spec(1, 1, None), Bitfield::new(1));
        // The far peer has the smaller key, so key order alone would favour it.
        s.peer_joined(Time::ZERO, 1, far());
        s.peer_joined(Time::ZERO, 2, Locality { isp: Some("isp-a".into()), site: None });
        for p in [1, 2] {
            s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(1));
        }
        requests(&drain(&mut s, Time::ZERO))[0].0
    };
    let local_first: BTreeSet<u32> = (0..30).map(|seed| run(&PolicyConfig::default(), seed)).collect();
    assert_eq!(local_first, BTreeSet::from([2]));
    let blind: BTreeSet<u32> = (0..30).map(|seed| run(&PolicyConfig::locality_blind(), seed)).collect();
    assert_eq!(blind, BTreeSet::from([1, 2]));
}

#[test]
fn faster_and_less_loaded_peers_preferred() {
    let mut s = Scheduler::new(&transfer(1, 1), &PolicyConfig::default(), local(), 8);
    s.add_content(Time::ZERO, spec(1, 4, None), Bitfield::new(4));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, far());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(4));
    }
    s.peer_load(Time::ZERO, &1, 0.9);
    assert_eq!(requests(&drain(&mut s, Time::ZERO))[0].0, 2);
}

#[test]
fn complete_exactly_once() {
    let mut s = Scheduler::new(&transfer(4, 4), &PolicyConfig::default(), local(), 9);
    s.add_content(Time::ZERO, spec(1, 2, None), bits(2, [1]));
    s.add_content(Time::ZERO, spec(2, 3, None), Bitfield::full(3));
    assert_eq!(drain(&mut s, Time::ZERO), vec![Output::Complete { content: id(2) }]);
    s.peer_joined(Time::ZERO, 1, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(2));
    assert_eq!(requests(&drain(&mut s, Time::ZERO)), vec![(1, id(1), 0)]);
    s.chunk_received(Time(MS), &1, &id(1), 0, 10);
    assert_eq!(drain(&mut s, Time(MS)), vec![Output::Complete { content: id(1) }]);
    s.chunk_received(Time(MS), &1, &id(1), 0, 10);
    s.chunk_received(Time(MS), &1, &id(1), 1, 10);
    s.peer_has(Time(MS), &1, &id(1), 1);
    assert_eq!(drain(&mut s, Time(MS)), vec![]);
    assert_eq!(s.stats().duplicates, 2);
    assert_eq!(s.progress(&id(1)), Some(Progress { have: 2, total: 2, in_flight: 0 }));
}

#[test]
fn unsolicited_and_unknown_inputs_are_safe() {
    let mut s = Scheduler::new(&transfer(4, 4), &PolicyConfig::default(), local(), 10);
    s.add_content(Time::ZERO, spec(1, 3, None), Bitfield::new(3));
    s.chunk_received(Time::ZERO, &9, &id(1), 0, 10);
    s.chunk_received(Time::ZERO, &9, &id(1), 7, 10);
    s.chunk_received(Time::ZERO, &9, &id(5), 0, 10);
    s.chunk_failed(Time::ZERO, &9, &id(1), 0, Failure::Corrupt);
    s.peer_bitfield(Time::ZERO, &9, &id(1), Bitfield::full(3));
    s.peer_joined(Time::ZERO, 1, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(4));
    assert_eq!(drain(&mut s, Time::ZERO), vec![]);
    assert_eq!(s.stats().unsolicited, 1);
    assert_eq!(s.progress(&id(1)).unwrap().have, 1);
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(3));
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.iter().map(|r| r.2).collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]));
    s.peer_left(Time::ZERO, &1);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.peers(), 0);
    s.remove_content(&id(1));
    assert_eq!(s.progress(&id(1)), None);
}

fn scripted(seed: u64) -> Vec<Output<u32>> {
    let mut s = Scheduler::new(&transfer(2, 8), &PolicyConfig::default(), local(), seed);
    s.add_content(Time::ZERO, spec(1, 200, None), Bitfield::new(200));
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for p in 0..10u32 {
        s.peer_joined(Time::ZERO, p, if p % 2 == 0 { local() } else { far() });
        s.peer_bitfield(Time::ZERO, &p, &id(1), bits(200, (0..200).filter(|_| rng.gen_bool(0.6))));
    }
    let mut all = Vec::new();
    let mut now = Time::ZERO;
    for _ in 0..300 {
        now = now + Duration::from_millis(10);
        let outs = drain(&mut s, now);
        for (p, c, k) in requests(&outs) {
            s.chunk_received(now + Duration::from_millis(5), &p, &c, k, 1000);
        }
        all.extend(outs);
    }
    all
}

#[test]
fn deterministic_for_a_seed() {
    let a = scripted(42);
    assert!(a.len() > 100);
    assert_eq!(a, scripted(42));
    assert_ne!(a, scripted(43));
}

/// The property test's world: what each peer really holds, who is connected, what is outstanding.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    peers: u32,
    chunks: [u32; 2],
    per_peer: u32,
    total: u32,
    endgame: u32,
    fail_pct: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (any::<u64>(), 2u32..8, 1u32..120, 1u32..60, 1u32..4, 0u32..12, 0u32..8, 0u32..40).prop_map(
        |(seed, peers, a, b, per_peer, extra, endgame, fail_pct)| Case {
            seed,
            peers,
            chunks: [a, b],
            per_peer,
            total: per_peer + extra,
            endgame,
            fail_pct,
        },
    )
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let t = TransferConfig {
        max_requests_per_peer: c.per_peer,
        max_requests_total: c.total,
        min_requests_total: c.total,
        endgame_chunks: c.endgame,
        request_timeout: Duration::from_secs(5),
        busy_backoff: Duration::from_millis(200),
        corrupt_ban: Duration::from_secs(3),
        // Half the cases with spare uploaders: no peer has said a load, so every one is spare.
        spare_load: if c.seed % 2 == 0 { 0.0 } else { 0.5 },
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), c.seed);
    let ids = [id(1), id(2)];
    // Real holdings; peer 0 never leaves and fills the gaps so the union covers everything.
    let mut holds: BTreeMap<(u32, usize), Bitfield> = BTreeMap::new();
    for (ci, &n) in c.chunks.iter().enumerate() {
        let mut union = Bitfield::new(n);
        for p in 1..c.peers {
            let b = bits(n, (0..n).filter(|_| rng.gen_bool(0.4)));
            for i in b.iter_ones() {
                union.set(i);
            }
            holds.insert((p, ci), b);
        }
        let zero = bits(n, (0..n).filter(|&i| !union.get(i) || rng.gen_bool(0.3)));
        holds.insert((0, ci), zero);
    }
    let mut have = [Bitfield::new(c.chunks[0]), Bitfield::new(c.chunks[1])];
    have[0].set(0);
    let mut now = Time::ZERO;
    s.add_content(now, spec(1, c.chunks[0], Some(Time(5))), have[0].clone());
    s.add_content(now, spec(2, c.chunks[1], None), have[1].clone());
    let join = |s: &mut Scheduler<u32>, now, p: u32, holds: &BTreeMap<(u32, usize), Bitfield>| {
        s.peer_joined(now, p, if p % 2 == 0 { local() } else { far() });
        for ci in 0..2 {
            s.peer_bitfield(now, &p, &ids[ci], holds[&(p, ci)].clone());
        }
    };
    let mut connected = BTreeSet::new();
    for p in 0..c.peers {
        join(&mut s, now, p, &holds);
        connected.insert(p);
    }
    // (peer, content index, chunk) -> sent at
    let mut outstanding: BTreeMap<(u32, usize, u32), Time> = BTreeMap::new();
    // (peer, content index, chunk, its peer left since) arrived and being written.
    let mut writing: Vec<(u32, usize, u32, bool)> = Vec::new();
    let mut completes = [0u32; 2];
    for step in 0..20_000u32 {
        while let Some(o) = s.poll_output(now) {
            match o {
                Output::Request { peer, content, chunk } => {
                    let ci = ids.iter().position(|i| *i == content).unwrap();
                    prop_assert!(connected.contains(&peer), "asked a peer that left");
                    prop_assert!(holds[&(peer, ci)].get(chunk), "asked {peer} for chunk {chunk} it lacks");
                    prop_assert!(!have[ci].get(chunk), "asked for chunk {chunk} already held");
                    let written = writing.iter().any(|w| w.1 == ci && w.2 == chunk);
                    prop_assert!(!written, "asked for chunk {chunk} while it is being written");
                    prop_assert!(outstanding.insert((peer, ci, chunk), now).is_none(), "same request twice");
                    let to_peer = outstanding.keys().filter(|k| k.0 == peer).count();
                    prop_assert!(to_peer as u32 <= c.per_peer, "per-peer bound");
                    // A spare uploader may take one request beyond the window.
                    let beyond = if t.spare_load > 0.0 { c.peers } else { 0 };
                    // A peer that left with a chunk being written may take its one beyond the window again.
                    let orphans = writing.iter().filter(|w| w.3).count() as u32;
                    let held = outstanding.len() + writing.len();
                    prop_assert!(
                        held as u32 <= c.total + beyond + orphans,
                        "total bound, chunks being written included"
                    );
                    let same = outstanding.keys().filter(|k| k.1 == ci && k.2 == chunk).count();
                    prop_assert!(same <= ENDGAME_PEERS_PER_CHUNK, "too many duplicates");
                    prop_assert_eq!(s.in_flight(), outstanding.len());
                }
                Output::Cancel { peer, content, chunk } => {
                    let ci = ids.iter().position(|i| *i == content).unwrap();
                    prop_assert!(outstanding.remove(&(peer, ci, chunk)).is_some(), "cancel of nothing");
                }
                Output::Penalise { .. } => {}
                Output::Complete { content } => {
                    let ci = ids.iter().position(|i| *i == content).unwrap();
                    prop_assert!(have[ci].is_complete());
                    completes[ci] += 1;
                }
            }
        }
        if completes == [1, 1] && have.iter().all(Bitfield::is_complete) {
            prop_assert_eq!(s.in_flight(), 0);
            return Ok(());
        }
        let roll = rng.gen_range(0..100);
        if roll < 70 && !outstanding.is_empty() {
            let k = rng.gen_range(0..outstanding.len());
            let (&(p, ci, chunk), _) = outstanding.iter().nth(k).unwrap();
            outstanding.remove(&(p, ci, chunk));
            now = now + Duration::from_millis(rng.gen_range(1..50));
            let fail = rng.gen_range(0..100) < c.fail_pct;
            if !fail {
                // Half the chunks arrive first and are written later (as the engine does); the others are
                // reported written at once (as a body without that step would).
                let in_writing = writing.iter().any(|w| w.1 == ci && w.2 == chunk);
                if in_writing || rng.gen_bool(0.5) {
                    let keep = s.chunk_arrived(now, &p, &ids[ci], chunk, 4096);
                    prop_assert_eq!(
                        keep,
                        !have[ci].get(chunk) && !in_writing,
                        "write chunk {} again?",
                        chunk
                    );
                    if keep {
                        writing.push((p, ci, chunk, false));
                    }
                } else {
                    have[ci].set(chunk);
                    s.chunk_received(now, &p, &ids[ci], chunk, 4096);
                }
            } else {
                let failure = match rng.gen_range(0..5) {
                    0 => Failure::Corrupt,
                    1 => Failure::Busy { load: rng.gen_range(0.0..1.5) },
                    // A peer may only lose a chunk peer 0 still holds, so the union keeps covering everything.
                    2 if p != 0 && holds[&(0, ci)].get(chunk) => Failure::Missing,
                    3 => Failure::Moved,
                    _ => Failure::Io,
                };
                if failure == Failure::Missing {
                    holds.get_mut(&(p, ci)).unwrap().clear(chunk);
                }
                s.chunk_failed(now, &p, &ids[ci], chunk, failure);
            }
        } else if roll < 72 && !writing.is_empty() {
            // A write ends: durable, or it failed its check or the disk.
            let (p, ci, chunk, _) = writing.swap_remove(rng.gen_range(0..writing.len()));
            if rng.gen_bool(0.8) {
                have[ci].set(chunk);
                s.chunk_received(now, &p, &ids[ci], chunk, 4096);
            } else {
                let failure = if rng.gen_bool(0.5) { Failure::Corrupt } else { Failure::Local };
                s.chunk_failed(now, &p, &ids[ci], chunk, failure);
            }
        } else if roll < 75 {
            let p = rng.gen_range(1..c.peers);
            if connected.remove(&p) {
                s.peer_left(now, &p);
                outstanding.retain(|k, _| k.0 != p);
                for w in writing.iter_mut().filter(|w| w.0 == p) {
                    w.3 = true;
                }
            } else {
                join(&mut s, now, p, &holds);
                connected.insert(p);
            }
        } else if roll < 80 {
            let p = rng.gen_range(0..c.peers);
            let ci = rng.gen_range(0..2);
            let chunk = rng.gen_range(0..c.chunks[ci]);
            if holds.get_mut(&(p, ci)).unwrap().set(chunk) && connected.contains(&p) {
                s.peer_has(now, &p, &ids[ci], chunk);
            }
        } else {
            // Let time pass: to the next timer when nothing else is going on, else a little.
            let next = s.poll_timeout();
            if outstanding.is_empty() || rng.gen_bool(0.2) {
                match next {
                    Some(t) => now = now.max(t),
                    None if connected.len() as u32 == c.peers && writing.is_empty() => {
                        return Err(TestCaseError::fail(format!("stuck at step {step}: {:?}", s.stats())));
                    }
                    None => {}
                }
            } else {
                now = now + Duration::from_millis(rng.gen_range(1..500));
            }
            s.handle_timeout(now);
            let timeout = t.request_timeout;
            outstanding.retain(|_, sent| *sent + timeout > now);
        }
    }
    Err(TestCaseError::fail(format!("not complete after 20000 steps: {:?} {:?}", have, s.stats())))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random peers, holdings, failures, departures and returns: never a request for a chunk the peer lacks
    /// or we hold, never over the in-flight bounds, and everything completes, each content once.
    #[test]
    fn scheduler_is_safe_and_completes(c in case()) {
        run_case(&c)?;
    }
}

/// Without end-game (which asks anyone for the last chunks, by design).
fn no_endgame(per_peer: u32, total: u32) -> TransferConfig {
    TransferConfig { endgame_chunks: 0, ..transfer(per_peer, total) }
}

#[test]
fn local_first_asks_other_isps_only_for_the_gaps_of_ours() {
    let mut s = Scheduler::new(&no_endgame(16, 32), &PolicyConfig::default(), local(), 9);
    s.add_content(Time::ZERO, spec(1, 16, None), Bitfield::new(16));
    // Peer 1, same ISP, holds chunks 0..8; peer 2, a cinema of another ISP, holds everything.
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), bits(16, 0..8));
    s.peer_bitfield(Time::ZERO, &2, &id(1), Bitfield::full(16));
    let reqs = requests(&drain(&mut s, Time::ZERO));
    let mut remote: Vec<u32> = reqs.iter().filter(|r| r.0 == 2).map(|r| r.2).collect();
    let mut near: Vec<u32> = reqs.iter().filter(|r| r.0 == 1).map(|r| r.2).collect();
    remote.sort_unstable();
    near.sort_unstable();
    // Every chunk only the remote cinema holds is asked of it at once, and nothing our ISP holds crosses
    // the border.
    assert_eq!(remote, (8..16).collect::<Vec<_>>());
    assert_eq!(near, (0..8).collect::<Vec<_>>());
}

#[test]
fn a_peer_of_another_isp_far_better_than_ours_is_asked_for_what_our_isp_holds() {
    // A window of 2. Peer 1, of our ISP, holds everything with its slots full (load 1); peer 2, a cinema of
    // another ISP, holds everything with its slots free (load 0).
    let run = |margin: f64| {
        let policy = PolicyConfig { local_margin: margin, ..PolicyConfig::default() };
        let mut s = Scheduler::new(&no_endgame(2, 2), &policy, local(), 4);
        s.add_content(Time::ZERO, spec(1, 16, None), Bitfield::new(16));
        for (p, at, load) in [(1, local(), 1.0), (2, far(), 0.0)] {
            s.peer_joined(Time::ZERO, p, at);
            s.peer_load(Time::ZERO, &p, load);
            s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(16));
        }
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (reqs.iter().map(|r| r.0).collect::<Vec<_>>(), s.stats().yielded)
    };
    // Scores (`low_load` 0.3, `throughput` 0.2): ours 0.1 (never measured: half the best throughput),
    // theirs 0.3 (held back and never measured: no credit for throughput), three times ours. With a margin
    // of 2 the far peer takes the first request; its score is then shared by it (0.15) and ours takes the
    // second.
    assert_eq!(run(2.0), (vec![2, 1], 1));
    // A margin above what separates them: our ISP's peer fills the window.
    assert_eq!(run(10.0), (vec![1, 1], 0));
}

#[test]
fn with_room_in_the_window_and_no_peer_of_ours_left_local_first_keeps_no_request_back() {
    // Peer 1 of our ISP and peers 2 and 3 of another all hold everything; one request per peer, a window
    // of 8, a margin no peer reaches.
    let run = |local_first: bool| {
        let policy = PolicyConfig { local_first, local_margin: 1000.0, ..PolicyConfig::default() };
        let mut s = Scheduler::new(&no_endgame(1, 8), &policy, local(), 5);
        s.add_content(Time::ZERO, spec(1, 16, None), Bitfield::new(16));
        for (p, at) in [(1, local()), (2, far()), (3, far())] {
            s.peer_joined(Time::ZERO, p, at);
            s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(16));
        }
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (reqs.iter().map(|r| r.0).collect::<BTreeSet<_>>(), s.stats().yielded)
    };
    // Our ISP's peer takes the one request it can; the window still has room, so the held-back peers are
    // asked too, as they would be without local first.
    assert_eq!(run(true), (BTreeSet::from([1, 2, 3]), 2));
    assert_eq!(run(false), (BTreeSet::from([1, 2, 3]), 0));
}

#[test]
fn local_first_is_never_a_filter_a_banned_or_departed_local_holder_opens_the_gap() {
    let mut s = Scheduler::new(&no_endgame(4, 4), &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 2, None), Bitfield::new(2));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(2));
    s.peer_bitfield(Time::ZERO, &2, &id(1), Bitfield::full(2));
    assert_eq!(requests(&drain(&mut s, Time::ZERO)).iter().filter(|r| r.0 == 2).count(), 0);
    // The local holder leaves: both chunks are gaps now, and the remote peer is asked for them.
    s.peer_left(Time(MS), &1);
    let again = requests(&drain(&mut s, Time(MS)));
    assert_eq!(again.iter().filter(|r| r.0 == 2).count(), 2, "{again:?}");

    let policy = PolicyConfig { local_first: false, ..PolicyConfig::default() };
    let mut off = Scheduler::new(&no_endgame(2, 4), &policy, local(), 3);
    off.add_content(Time::ZERO, spec(1, 8, None), Bitfield::new(8));
    off.peer_joined(Time::ZERO, 1, local());
    off.peer_joined(Time::ZERO, 2, far());
    off.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(8));
    off.peer_bitfield(Time::ZERO, &2, &id(1), Bitfield::full(8));
    let reqs = requests(&drain(&mut off, Time::ZERO));
    assert!(reqs.iter().any(|r| r.0 == 2), "without local_first a remote peer fills the window: {reqs:?}");
}

#[test]
fn a_slow_same_isp_holder_does_not_keep_a_chunk_from_a_fast_peer_elsewhere() {
    let mut s = Scheduler::new(&no_endgame(1, 2), &PolicyConfig::default(), local(), 5);
    s.add_content(Time::ZERO, spec(1, 5, None), Bitfield::new(5));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    s.peer_bitfield(Time::ZERO, &1, &id(1), bits(5, 0..4));
    s.peer_bitfield(Time::ZERO, &2, &id(1), Bitfield::full(5));
    let reqs = requests(&drain(&mut s, Time::ZERO));
    let asked = |peer: u32| reqs.iter().find(|r| r.0 == peer).map(|r| r.2).unwrap();
    assert_eq!(asked(2), 4, "the remote peer is asked for the gap first: {reqs:?}");
    // The remote peer answers at 100 MB/s, the local one at 1 MB/s: under a tenth of the best.
    s.chunk_received(Time(10 * MS), &2, &id(1), asked(2), 1_000_000);
    s.chunk_received(Time(1000 * MS), &1, &id(1), asked(1), 1_000_000);
    let after = requests(&drain(&mut s, Time(1000 * MS)));
    assert!(
        after.iter().any(|r| r.0 == 2 && r.2 < 4),
        "what only the slow local peer held is asked of the fast remote one: {after:?}"
    );
}

/// Cinema `me` of our ISP, its line `line` bytes/s declared and itself identified, fetching content 1
/// (`chunks` chunks) beside the cinemas `ours` of our ISP (key, declared line; holding nothing) and a
/// cinema of another ISP (peer 9) holding everything.
fn a_striped_cinema(
    me: u32,
    line: f64,
    ours: &[(u32, f64)],
    chunks: u32,
    t: &TransferConfig,
) -> Scheduler<u32> {
    let t = TransferConfig { downlink: Some(crate::config::Rate(line)), ..t.clone() };
    let policy = PolicyConfig { import_stripes: true, ..PolicyConfig::default() };
    let mut s = Scheduler::new(&t, &policy, local(), u64::from(me));
    s.identify(&me);
    s.add_content(Time::ZERO, spec(1, chunks, None), Bitfield::new(chunks));
    for &(peer, line) in ours {
        s.peer_joined(Time::ZERO, peer, local());
        s.peer_line(&peer, Some(line));
    }
    s.peer_joined(Time::ZERO, 9, far());
    s.peer_bitfield(Time::ZERO, &9, &id(1), Bitfield::full(chunks));
    s
}

fn stripe_of(s: &Scheduler<u32>) -> Bitfield {
    s.contents[0].as_ref().map(|c| c.stripe.clone()).unwrap()
}

#[test]
fn import_stripes_give_each_gap_to_one_fast_line_of_the_isp_in_proportion_and_none_to_a_slow_one() {
    // Three cinemas of one ISP: 300 and 100 Mbit/s lines, and 15 (below a quarter of the fastest).
    let lines = [(1, 37.5e6), (2, 12.5e6), (3, 1.875e6)];
    let chunks = 4000;
    let stripes: Vec<Bitfield> = lines
        .iter()
        .map(|&(me, line)| {
            let others: Vec<(u32, f64)> = lines.iter().copied().filter(|l| l.0 != me).collect();
            stripe_of(&a_striped_cinema(me, line, &others, chunks, &no_endgame(2, 8)))
        })
        .collect();
    for chunk in 0..chunks {
        let importers = stripes.iter().filter(|b| b.get(chunk)).count();
        assert_eq!(importers, 1, "chunk {chunk} has exactly one importer in the ISP");
    }
    assert_eq!(stripes[2].count(), 0, "the slow line imports nothing");
    let share = f64::from(stripes[0].count()) / f64::from(chunks);
    assert!((0.72..0.78).contains(&share), "the 300 Mbit/s line imports three quarters: {share}");
    // A cinema that knows no other importer of its ISP imports every gap; with import stripes off, too.
    assert_eq!(
        stripe_of(&a_striped_cinema(1, 37.5e6, &[(3, 1.875e6)], chunks, &no_endgame(2, 8))).count(),
        chunks
    );
    let mut off = Scheduler::new(
        &no_endgame(2, 8),
        &PolicyConfig { import_stripes: false, ..Default::default() },
        local(),
        1,
    );
    off.identify(&1);
    off.add_content(Time::ZERO, spec(1, chunks, None), Bitfield::new(chunks));
    off.peer_joined(Time::ZERO, 2, local());
    off.peer_line(&2, Some(12.5e6));
    assert_eq!(stripe_of(&off).count(), chunks);
    // The importer that leaves gives its stripe back to the others.
    let mut s = a_striped_cinema(2, 12.5e6, &[(1, 37.5e6)], chunks, &no_endgame(2, 8));
    assert!(stripe_of(&s).count() < chunks / 2);
    s.peer_left(Time(MS), &1);
    assert_eq!(stripe_of(&s).count(), chunks);
    // A cinema first known in another ISP, then in ours (its locality told again), becomes an importer.
    s.peer_joined(Time(MS), 1, far());
    s.peer_line(&1, Some(37.5e6));
    assert_eq!(stripe_of(&s).count(), chunks);
    s.peer_joined(Time(2 * MS), 1, local());
    assert!(stripe_of(&s).count() < chunks / 2);
}

#[test]
fn a_striped_cinema_asks_another_isp_only_for_gaps_of_its_stripe_and_is_never_idle() {
    // Cinema 1 (300 Mbit/s) beside cinema 2 (100) of its ISP, which holds nothing yet; a window of 32.
    let mut s = a_striped_cinema(1, 37.5e6, &[(2, 12.5e6)], 4000, &no_endgame(32, 32));
    let stripe = stripe_of(&s);
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(reqs.len(), 32, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == 9 && stripe.get(r.2)), "only its own stripe's gaps: {reqs:?}");
    // A superseeder there is asked for anything, as without stripes: the fleet's fastest cinemas need it.
    let mut s = a_striped_cinema(1, 37.5e6, &[(2, 12.5e6)], 4000, &no_endgame(32, 32));
    s.peer_seeder(&9, true);
    let reqs = requests(&drain(&mut s, Time::ZERO));
    assert!(reqs.iter().any(|r| r.0 == 9 && !stripe.get(r.2)), "{reqs:?}");
    // Without import stripes the other ISP's cinema is asked for anything: some of the 32 fall in cinema
    // 2's stripe (each does with a chance of a quarter).
    let policy = PolicyConfig { import_stripes: false, ..PolicyConfig::default() };
    let t = TransferConfig { downlink: Some(crate::config::Rate(37.5e6)), ..no_endgame(32, 32) };
    let mut off = Scheduler::new(&t, &policy, local(), 1);
    off.identify(&1);
    off.add_content(Time::ZERO, spec(1, 4000, None), Bitfield::new(4000));
    off.peer_joined(Time::ZERO, 2, local());
    off.peer_line(&2, Some(12.5e6));
    off.peer_joined(Time::ZERO, 9, far());
    off.peer_bitfield(Time::ZERO, &9, &id(1), Bitfield::full(4000));
    let reqs = requests(&drain(&mut off, Time::ZERO));
    assert!(reqs.iter().any(|r| !stripe.get(r.2)), "{reqs:?}");
    // Cinema 3, a 15 Mbit/s line beside them, imports nothing; but with nothing in flight and no peer of
    // its ISP able to serve, it asks the other ISP after all, one chunk at a time: it never idles.
    let mut slow = a_striped_cinema(3, 1.875e6, &[(1, 37.5e6), (2, 12.5e6)], 4000, &no_endgame(4, 4));
    assert_eq!(stripe_of(&slow).count(), 0);
    let reqs = requests(&drain(&mut slow, Time::ZERO));
    assert_eq!(reqs.iter().filter(|r| r.0 == 9).count(), 1, "{reqs:?}");
    assert_eq!(slow.stats().yielded, 1);
    let (_, content, chunk) = reqs[0];
    slow.chunk_received(Time(100 * MS), &9, &content, chunk, 1 << 20);
    let reqs = requests(&drain(&mut slow, Time(100 * MS)));
    assert_eq!(reqs.iter().filter(|r| r.0 == 9).count(), 1, "the next one once the first is in: {reqs:?}");
}

/// Cinema 7, its line `line` bytes/s declared and itself identified, fetching content 1 (`chunks` chunks)
/// beside a cinema of our ISP (peer 1, a 300 Mbit/s line) holding `ours`, and peer 9 of another ISP (a
/// superseeder if `seeder`) holding everything.
fn beside_a_fibre_cinema(
    line: f64,
    policy: &PolicyConfig,
    t: &TransferConfig,
    chunks: u32,
    ours: Bitfield,
    seeder: bool,
) -> Scheduler<u32> {
    let t = TransferConfig { downlink: Some(crate::config::Rate(line)), ..t.clone() };
    let mut s = Scheduler::new(&t, policy, local(), 4);
    s.identify(&7);
    s.add_content(Time::ZERO, spec(1, chunks, None), Bitfield::new(chunks));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_line(&1, Some(37.5e6));
    s.peer_bitfield(Time::ZERO, &1, &id(1), ours);
    s.peer_joined(Time::ZERO, 9, far());
    s.peer_seeder(&9, seeder);
    s.peer_bitfield(Time::ZERO, &9, &id(1), Bitfield::full(chunks));
    s
}

#[test]
fn under_import_stripes_a_cinema_with_requests_in_flight_asks_no_other_isp_outside_its_stripe() {
    // Our cinema (300 Mbit/s) beside cinema 1 (300) of its ISP, which holds every chunk; a cinema of another
    // ISP (peer 9) holds them too. A window of 8, 2 requests per peer: cinema 1 takes its share and the
    // window has room left.
    let peer_holds_all = |stripes: bool| {
        let policy = PolicyConfig { import_stripes: stripes, ..PolicyConfig::default() };
        let mut s = beside_a_fibre_cinema(37.5e6, &policy, &no_endgame(2, 8), 64, Bitfield::full(64), false);
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (s, reqs)
    };
    // Without stripes, room in the window and no ready peer: the held-back peer elsewhere is asked.
    let (off, reqs) = peer_holds_all(false);
    assert!(reqs.iter().any(|r| r.0 == 9), "{reqs:?}");
    assert!(off.stats().yielded > 0);
    // With them, the narrow border is not used for what our ISP holds while cinema 1 serves us.
    let (on, reqs) = peer_holds_all(true);
    assert!(reqs.iter().any(|r| r.0 == 1), "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
    assert_eq!(on.stats().yielded, 0);
}

#[test]
fn a_slow_line_asks_another_isp_only_with_nothing_in_flight_and_never_idles() {
    // Our cinema (a 15 Mbit/s line declared) beside cinema 1 (300 Mbit/s) of its ISP, which holds chunks
    // 0..8 of 16; peer 9 of another ISP holds every chunk. A window of 8, 2 requests per peer. Default
    // policy: no import stripes.
    let beside = |line: f64, policy: PolicyConfig, seeder: bool| {
        let mut s = beside_a_fibre_cinema(line, &policy, &no_endgame(2, 8), 16, bits(16, 0..8), seeder);
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (s, reqs)
    };
    // The slow line asks its ISP's cinema, and nothing of the other ISP while that is in flight: neither
    // the gaps 8..16 nor, with room in the window, what its ISP holds.
    let (mut slow, reqs) = beside(1.875e6, PolicyConfig::default(), false);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
    assert_eq!(slow.stats().yielded, 0);
    // With nothing in flight it asks the other ISP after all, one chunk at a time: it never idles.
    let mut held = Bitfield::new(16);
    for &(peer, content, chunk) in &reqs {
        slow.chunk_received(Time(100 * MS), &peer, &content, chunk, 1 << 20);
        held.set(chunk);
    }
    // Cinema 1 now holds only what we have (it lost the rest): nothing of our ISP is left to ask.
    slow.peer_bitfield(Time(100 * MS), &1, &id(1), held.clone());
    let mut now = Time(100 * MS);
    let mut asked = requests(&drain(&mut slow, now));
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked.iter().all(|r| r.0 == 9 && !held.get(r.2)), "{asked:?}");
    let (_, content, chunk) = asked.pop().unwrap();
    now = Time(200 * MS);
    slow.chunk_received(now, &9, &content, chunk, 1 << 20);
    let reqs = requests(&drain(&mut slow, now));
    assert_eq!(reqs.len(), 1, "the next one once the first is in: {reqs:?}");
    assert_eq!(slow.stats().yielded, 2);
    // A fast line of the same ISP imports its gaps at once; so does the slow one with `import_lines = 0`.
    let (_, reqs) = beside(37.5e6, PolicyConfig::default(), false);
    assert!(reqs.iter().any(|r| r.0 == 9 && r.2 >= 8), "{reqs:?}");
    let off = PolicyConfig { import_lines: 0.0, ..PolicyConfig::default() };
    let (_, reqs) = beside(1.875e6, off, false);
    assert!(reqs.iter().any(|r| r.0 == 9 && r.2 >= 8), "{reqs:?}");
    // A superseeder there is held as well (its bytes cross the border too): not asked while cinema 1 serves
    // us, though it holds our gaps. A fast line of the same ISP asks it for anything, as does the slow line
    // with `import_lines = 0`.
    let (s, reqs) = beside(1.875e6, PolicyConfig::default(), true);
    assert!(s.seeders_held());
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
    let (s, reqs) = beside(37.5e6, PolicyConfig::default(), true);
    assert!(!s.seeders_held());
    assert!(reqs.iter().any(|r| r.0 == 9), "{reqs:?}");
    let (_, reqs) = beside(1.875e6, PolicyConfig { import_lines: 0.0, ..PolicyConfig::default() }, true);
    assert!(reqs.iter().any(|r| r.0 == 9), "{reqs:?}");
    // Locality off: no rule of its own.
    let (_, reqs) = beside(1.875e6, PolicyConfig::locality_blind(), false);
    assert!(reqs.iter().any(|r| r.0 == 9), "{reqs:?}");
}

#[test]
fn under_import_stripes_what_a_slow_line_of_our_isp_holds_is_a_gap_for_the_importer() {
    // Cinema 1 (300 Mbit/s) beside cinema 2 of its ISP, which holds chunks 0..8 of 16; a cinema of another
    // ISP (peer 9) holds them too; a window of 32, 2 requests per peer. Cinema 2 a 50 Mbit/s line (below a quarter of 300: it imports nothing, and
    // what it holds would reach cinema 1 through its narrow uplink) or a 100 Mbit/s one (an importer).
    let beside = |line: f64| {
        let mut s = a_striped_cinema(1, 37.5e6, &[(2, line)], 16, &no_endgame(2, 32));
        s.peer_bitfield(Time::ZERO, &2, &id(1), bits(16, 0..8));
        s.peer_left(Time::ZERO, &9);
        s.peer_joined(Time::ZERO, 9, far());
        s.peer_bitfield(Time::ZERO, &9, &id(1), bits(16, 0..8));
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (s, reqs)
    };
    let (mut slow, reqs) = beside(6.25e6);
    assert_eq!(stripe_of(&slow).count(), 16, "the only importer of its ISP");
    let gaps = |s: &Scheduler<u32>| s.contents[0].as_ref().map(|c| c.gaps.count()).unwrap();
    assert!(reqs.iter().any(|r| r.0 == 9 && r.2 < 8), "the slow line's chunks imported too: {reqs:?}");
    assert!(reqs.iter().any(|r| r.0 == 2), "and still asked of it: {reqs:?}");
    assert_eq!(gaps(&slow), 16);
    // A superseeder of our ISP counts whatever its line.
    slow.peer_seeder(&2, true);
    assert_eq!(gaps(&slow), 8);
    let (_, reqs) = beside(12.5e6);
    assert!(reqs.iter().any(|r| r.0 == 2), "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 != 9), "an importer's chunks are not gaps: {reqs:?}");
}

#[test]
fn key_hash_is_the_same_for_a_key_on_every_node() {
    // Nodes draw the import stripes from each other's keys: the hash of a key must not depend on the
    // process (std's `RandomState`) or the Rust release (`DefaultHasher`'s algorithm is unspecified).
    assert_eq!(key_hash(&7u32), key_hash(&7u32));
    assert_ne!(key_hash(&7u32), key_hash(&8u32));
    // Pinned: a change here is a change of the stripes between nodes of two builds.
    assert_eq!(key_hash(&[1u8, 2, 3]), 9_303_696_438_298_696_107);
    assert_eq!(key_hash(&7u32), 13_613_922_390_088_569_570);
}

/// A scheduler fetching content 1 (`chunks` chunks) from a cinema of our ISP (peer 1) holding `ours` and a
/// superseeder of another ISP (peer 2) holding everything.
fn our_cinema_and_a_far_superseeder(
    t: &TransferConfig,
    policy: &PolicyConfig,
    seed: u64,
    chunks: u32,
    ours: Bitfield,
) -> Scheduler<u32> {
    let mut s = Scheduler::new(t, policy, local(), seed);
    s.add_content(Time::ZERO, spec(1, chunks, None), Bitfield::new(chunks));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_joined(Time::ZERO, 2, far());
    s.peer_seeder(&2, true);
    s.peer_bitfield(Time::ZERO, &1, &id(1), ours);
    s.peer_bitfield(Time::ZERO, &2, &id(1), Bitfield::full(chunks));
    s
}

#[test]
fn local_first_never_holds_requests_back_from_a_superseeder() {
    let mut s = our_cinema_and_a_far_superseeder(
        &no_endgame(8, 16),
        &PolicyConfig::default(),
        2,
        16,
        Bitfield::full(16),
    );
    let reqs = requests(&drain(&mut s, Time::ZERO));
    // The local peer holds everything, yet the superseeder's slots are used too.
    assert_eq!(reqs.iter().filter(|r| r.0 == 2).count(), 8, "{reqs:?}");
    assert_eq!(reqs.iter().filter(|r| r.0 == 1).count(), 8, "{reqs:?}");
}

#[test]
fn local_first_seeders_asks_a_superseeder_only_for_the_gaps_of_our_isp() {
    // A cinema of our ISP holds chunks 0-11; a superseeder elsewhere holds all 16. A window of 12: the
    // cinema takes 8, the superseeder the 4 gaps, and the window is full (with room left, the held-back
    // superseeder would be asked for more: locality is never a wait). Our line is declared: 100 MB/s.
    let start = |local_first_seeders: bool, line: Option<f64>| {
        let t = TransferConfig { downlink: line.map(crate::config::Rate), ..no_endgame(8, 12) };
        let policy = PolicyConfig { local_first_seeders, ..PolicyConfig::default() };
        let mut s = our_cinema_and_a_far_superseeder(&t, &policy, 2, 16, bits(16, 0..12));
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (s, reqs)
    };
    let (mut s, reqs) = start(true, Some(100e6));
    let mut to_seeder: Vec<u32> = reqs.iter().filter(|r| r.0 == 2).map(|r| r.2).collect();
    to_seeder.sort_unstable();
    assert_eq!(to_seeder, vec![12, 13, 14, 15], "only the gaps: {reqs:?}");
    assert_eq!(reqs.iter().filter(|r| r.0 == 1).count(), 8, "{reqs:?}");
    assert_eq!(s.stats().yielded, 0);
    // Still never a wait: our cinema leaves, and every chunk it held is a gap the superseeder is asked for.
    s.peer_left(Time(MS), &1);
    let after = requests(&drain(&mut s, Time(MS)));
    assert!(!after.is_empty() && after.iter().all(|r| r.0 == 2 && r.2 < 12), "{after:?}");
    // Off, the same superseeder is asked for chunks our ISP holds too.
    let (s, reqs) = start(false, Some(100e6));
    assert!(!s.seeders_held());
    assert!(reqs.iter().any(|r| r.0 == 2 && r.2 < 12), "{reqs:?}");
    // On, but with no line declared (a cinema that cannot tell it starves): the same.
    let (s, reqs) = start(true, None);
    assert!(!s.seeders_held());
    assert!(reqs.iter().any(|r| r.0 == 2 && r.2 < 12), "{reqs:?}");
}

/// Twelve steps of 2 s: our ISP's cinema (peer 1) answers each request to it with a chunk of `chunk` bytes
/// at the next step; requests to anyone else are only noted, (step seen, chunk), never answered.
fn steps_of_our_cinema_answering(s: &mut Scheduler<u32>, chunk: u64) -> Vec<(u64, u32)> {
    let mut pending = requests(&drain(s, Time::ZERO));
    let mut to_others = Vec::new();
    for step in 1..=12u64 {
        let now = Time(step * 2_000 * MS);
        for r in std::mem::take(&mut pending) {
            match r.0 {
                1 => s.chunk_received(now, &1, &id(1), r.2, chunk),
                _ => to_others.push((step, r.2)),
            }
        }
        pending = requests(&drain(s, now));
    }
    to_others
}

#[test]
fn under_local_first_seeders_a_starved_cinema_asks_an_idle_superseeder_beyond_its_window_for_anything() {
    // A window of one request. Our ISP's cinema (peer 1) holds every chunk, so under local_first_seeders the
    // superseeder (peer 2) holds no gap of ours. Peer 1 answers a chunk of `chunk` bytes every 2 s.
    let run_at = |line: f64, chunk: u64| {
        let t = TransferConfig { downlink: Some(crate::config::Rate(line)), ..no_endgame(1, 1) };
        let policy = PolicyConfig { local_first_seeders: true, ..PolicyConfig::default() };
        let mut s = our_cinema_and_a_far_superseeder(&t, &policy, 4, 32, Bitfield::full(32));
        steps_of_our_cinema_answering(&mut s, chunk)
    };
    // 1 MB chunks: 0.5 MB/s.
    let run = |line: f64| run_at(line, 1_000_000);
    // On a 100 MB/s line the first round (four chunks after the first, 8 s) brought 0.5%: starved, and the
    // idle superseeder is asked once, beyond the full window, for a chunk our ISP holds.
    let starved = run(100e6);
    assert_eq!(starved.len(), 1, "{starved:?}");
    assert!(starved[0].0 >= 5, "not before a round measured the rate: {starved:?}");
    // On a 1.5 MB/s line it is a third of the line, below `STARVED` (four fifths): starved too; on a
    // 0.8 MB/s line, 62% of it: starved too (a half would have left it to our ISP).
    assert_eq!(run(1.5e6).len(), 1);
    assert_eq!(run(0.8e6).len(), 1);
    // On a 0.6 MB/s line the same rate is 83% of the line: the superseeder is left to the gaps, none here.
    assert_eq!(run(0.6e6), vec![]);
    // A fast line starves below more of it (`starved_share`): 95 MB/s (190 MB every 2 s) is 95% of a
    // 100 MB/s line (800 Mbit/s: the whole line asked), starved; on a 25 MB/s line (200 Mbit/s: four fifths
    // asked) 70% is starved, 85% is not; on a 50 MB/s line (400 Mbit/s: 0.867 asked) 84% is starved, 90% is
    // not.
    assert_eq!(run_at(100e6, 190_000_000).len(), 1);
    assert_eq!(run_at(25e6, 35_000_000).len(), 1);
    assert_eq!(run_at(25e6, 42_500_000), vec![]);
    assert_eq!(run_at(50e6, 84_000_000).len(), 1);
    assert_eq!(run_at(50e6, 90_000_000), vec![], "90% of a line that asks 0.867");
}

#[test]
fn under_import_stripes_a_cinema_below_half_its_line_asks_an_idle_held_superseeder_for_anything() {
    // A window of 4, one request per peer. Our ISP's cinema (peer 1, our line) holds every chunk, so with
    // superseeders held the superseeder (peer 2) holds no gap of ours, and under the stripes a node with
    // requests in flight asks no held-back peer. Peer 1 answers a 1 MB chunk every 2 s: 0.5 MB/s.
    let run = |line: f64, seeders_held: bool| {
        let t = TransferConfig { downlink: Some(crate::config::Rate(line)), ..no_endgame(1, 4) };
        let policy = PolicyConfig {
            import_stripes: true,
            local_first_seeders: seeders_held,
            ..PolicyConfig::default()
        };
        let mut s = our_cinema_and_a_far_superseeder(&t, &policy, 4, 32, Bitfield::full(32));
        s.identify(&7);
        s.peer_line(&1, Some(line));
        steps_of_our_cinema_answering(&mut s, 1_000_000)
    };
    // On a 1.5 MB/s line that is a third of it: once a round measured it, the idle superseeder is asked, for
    // a chunk our ISP holds, and (never answering here) only once.
    let starved = run(1.5e6, true);
    assert_eq!(starved.len(), 1, "{starved:?}");
    assert!(starved[0].0 >= 2, "not before a round measured the rate: {starved:?}");
    // On a 0.8 MB/s line it is 62%: the border may be what holds it, and the superseeder is left alone.
    assert_eq!(run(0.8e6, true), vec![]);
    // With superseeders exempt it is asked from the start (seen at the first step), as without the stripes.
    let exempt = run(0.8e6, false);
    assert!(exempt.first().is_some_and(|r| r.0 == 1), "{exempt:?}");
}

/// Our cinema on a line of `line` bytes/s, a window of `window` requests, one per peer, beside cinema 1 of
/// its ISP (a 300 Mbit/s line), which holds every chunk and answers a 1 MB chunk every 2 s (0.5 MB/s); peer
/// 9 of another ISP (a superseeder if `seeder`) holds them too. The requests to peer 9: (step seen, chunk).
fn a_slow_line_fed_half_a_megabyte_a_second(line: f64, window: u32, seeder: bool) -> Vec<(u64, u32)> {
    let policy = PolicyConfig::default();
    let t = no_endgame(1, window);
    let mut s = beside_a_fibre_cinema(line, &policy, &t, 32, Bitfield::full(32), seeder);
    steps_of_our_cinema_answering(&mut s, 1_000_000)
}

#[test]
fn a_slow_line_fed_below_a_third_of_it_by_its_isp_asks_another_isp_though_requests_are_in_flight() {
    // A window of 4; peer 9 is a cinema. Our line is below a quarter of peer 1's: it imports nothing while
    // requests are in flight.
    // On a 1.875 MB/s line (15 Mbit/s) that is 27% of it: once a round measured it, the other ISP is
    // asked, for a chunk our ISP holds, and (never answering here) only once. On a 1.5 MB/s line it is a
    // third: the border is left to the ISP's fast cinemas.
    peer_9_is_asked_once_when_starved(1.875e6, 1.5e6, 4, false);
}

/// Peer 9 of [`a_slow_line_fed_half_a_megabyte_a_second`] is asked once, not before a round measured the
/// rate, on a line of `starved` bytes/s, and never on one of `fed`.
fn peer_9_is_asked_once_when_starved(starved: f64, fed: f64, window: u32, seeder: bool) {
    let asked = a_slow_line_fed_half_a_megabyte_a_second(starved, window, seeder);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].0 >= 2, "not before a round measured the rate: {asked:?}");
    assert_eq!(a_slow_line_fed_half_a_megabyte_a_second(fed, window, seeder), vec![]);
}

#[test]
fn a_slow_line_asks_a_superseeder_scoring_local_margin_times_its_isp_s_best_but_no_such_cinema() {
    // A window of 2. Our cinema (a 15 Mbit/s line) beside cinema 1 of its ISP (300 Mbit/s, its slots full:
    // load 1), which holds every chunk; peer 9 of another ISP (slots free: load 0) holds them too. Scores
    // as in `a_peer_of_another_isp_far_better_than_ours_is_asked_for_what_our_isp_holds`: peer 9's is three
    // times cinema 1's, above the margin of 2.
    let run = |seeder: bool| {
        let policy = PolicyConfig::default();
        let mut s =
            beside_a_fibre_cinema(1.875e6, &policy, &no_endgame(2, 2), 16, Bitfield::full(16), seeder);
        s.peer_load(Time::ZERO, &1, 1.0);
        s.peer_load(Time::ZERO, &9, 0.0);
        let reqs = requests(&drain(&mut s, Time::ZERO));
        (reqs.iter().map(|r| r.0).collect::<Vec<_>>(), s.stats().yielded)
    };
    // A superseeder that much better is asked first, though the slow line holds superseeders to local first:
    // its ISP's peers are too busy to keep it from waiting.
    assert_eq!(run(true), (vec![9, 1], 1));
    // A cinema of another ISP is not: what a slow line imports from other cinemas waits until nothing is in
    // flight.
    assert_eq!(run(false), (vec![1, 1], 0));
}

#[test]
fn a_slow_line_fed_below_four_fifths_of_it_by_its_isp_asks_an_idle_superseeder_beyond_its_window() {
    // A window of one request; peer 9 is a superseeder. Our line is below a quarter of peer 1's: the
    // superseeder is held to local first as any other importing source.
    // On a 0.8 MB/s line that is 62% of it, below `STARVED`: once a round measured it, the idle superseeder
    // is asked beyond the full window, for a chunk our ISP holds, and (never answering here) only once. On
    // a 0.6 MB/s line it is 83%: the superseeder is left to the cinemas that need it.
    peer_9_is_asked_once_when_starved(0.8e6, 0.6e6, 1, true);
}

#[test]
fn a_slow_line_asks_its_superseeder_again_as_soon_as_the_round_in_progress_starves() {
    // Judged only when a round ends, the superseeder idled through every other round; judged on the round
    // in progress once it has lasted as long as the last, it is asked again at the first arrival after
    // that. The line gets four fifths of it (82 MB in 120 s; 58 MB judged on ended rounds alone), and from
    // 20 s on the superseeder idles for us 73.6 s of 100 (86.1 s).
    let (bytes, idle_ms, _) = a_slow_line_beside_a_slow_cinema_and_a_superseeder(0.25);
    assert!(bytes as f64 >= 0.8 * 0.8e6 * 120.0, "{bytes} bytes in 120 s");
    assert!(idle_ms <= 80_000, "the superseeder idled {idle_ms} ms of 100 s");
}

#[test]
fn a_starved_slow_line_takes_only_a_superseeder_s_slack() {
    // The superseeder's answers say its load. Below `spare_load` (a half) it has slack, and the starved
    // slow line asks it whenever it starves (as above); at 0.9 it serves cinemas that need it more, and
    // the slow line asks it again only once its last answer is `SLACK_LOAD_LIFE` old (30 s), to learn its
    // load: no more than five times in 120 s, against dozens.
    let (_, _, slack) = a_slow_line_beside_a_slow_cinema_and_a_superseeder(0.25);
    let (bytes, _, full) = a_slow_line_beside_a_slow_cinema_and_a_superseeder(0.9);
    assert!(slack >= 20, "asked {slack} times with slack");
    assert!((1..=5).contains(&full), "asked {full} times while full");
    // Its ISP's cinema still feeds it (a third of its line).
    assert!(bytes as f64 >= 0.3 * 0.8e6 * 120.0, "{bytes} bytes in 120 s");
}

/// A window of one request; our line (0.8 MB/s) is below a quarter of cinema 1's, so superseeder 9 is
/// held. Cinema 1 answers a 1 MB chunk 4 s after it is asked (0.25 MB/s, a third of the line), the
/// superseeder 0.5 s after, saying `load`. A round of the superseeder's chunks is fed; the round after it
/// needs four of cinema 1's, 16 s. Runs 120 s: (bytes, ms of the last 100 s the superseeder had no request
/// of ours, requests to the superseeder).
fn a_slow_line_beside_a_slow_cinema_and_a_superseeder(load: f32) -> (u64, u64, u32) {
    let t = no_endgame(1, 1);
    let mut s = beside_a_fibre_cinema(0.8e6, &PolicyConfig::default(), &t, 256, Bitfield::full(256), true);
    let mut pending: Vec<(Time, u32, u32)> = Vec::new();
    let (mut bytes, mut idle_ms, mut ms, mut asked) = (0u64, 0u64, 0u64, 0u32);
    while ms <= 120_000 {
        let now = Time(ms * MS);
        for (peer, _, chunk) in requests(&drain(&mut s, now)) {
            let delay = if peer == 9 { 500 } else { 4_000 };
            asked += u32::from(peer == 9);
            pending.push((Time((ms + delay) * MS), peer, chunk));
        }
        if ms >= 20_000 && !pending.iter().any(|p| p.1 == 9) {
            idle_ms += 100;
        }
        ms += 100;
        let now = Time(ms * MS);
        pending.retain(|&(at, peer, chunk)| {
            if at > now {
                return true;
            }
            if peer == 9 {
                s.peer_load(now, &9, load);
            }
            s.chunk_received(now, &peer, &id(1), chunk, 1_000_000);
            bytes += 1_000_000;
            false
        });
    }
    (bytes, idle_ms, asked)
}

#[test]
fn the_starved_share_rises_from_four_fifths_of_a_slow_line_to_the_whole_of_a_fast_one() {
    use super::starved_share;
    assert_eq!(starved_share(1.5e6), STARVED);
    assert_eq!(starved_share(crate::window::LINK_FULL), STARVED);
    assert!((starved_share(50e6) - (0.8 + 0.2 / 3.0)).abs() < 1e-9);
    assert_eq!(starved_share(crate::window::LINK_FREE), 1.0);
    assert_eq!(starved_share(1.25e9), 1.0);
}

#[test]
fn a_peer_that_never_answers_sinks_below_one_never_asked() {
    let t = TransferConfig { request_timeout: std::time::Duration::from_secs(10), ..no_endgame(1, 2) };
    let policy = PolicyConfig { low_load: 0.0, ..PolicyConfig::default() };
    let mut s = Scheduler::new(&t, &policy, local(), 1);
    s.add_content(Time::ZERO, spec(1, 8, None), Bitfield::new(8));
    for p in [1, 2, 3] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(8));
    }
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.len(), 2);
    // One answers (the best throughput is known now), the other never does.
    let (answering, silent) = (first[0].0, first[1].0);
    s.chunk_received(Time(MS), &answering, &id(1), first[0].2, 1_000_000);
    assert_eq!(requests(&drain(&mut s, Time(MS)))[0].0, answering);
    // The silent peer's request expires (asked at 0, 10 s timeout); the answering peer's (at 1 ms) not yet.
    let at = Time(10_000 * MS + MS / 2);
    s.handle_timeout(at);
    let next = requests(&drain(&mut s, at));
    let never_asked = [1, 2, 3].into_iter().find(|p| *p != answering && *p != silent).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, never_asked, "after its timeout the silent peer ranks below one never asked");
}

#[test]
fn a_peer_that_stops_answering_loses_its_request_within_seconds_not_the_whole_timeout() {
    // The default timeout is 5 minutes; chunks arrive in about 1 s from the answering peer.
    let t = no_endgame(1, 2);
    assert_eq!(t.request_timeout, std::time::Duration::from_secs(300));
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, 64, None), Bitfield::new(64));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(64));
    }
    let mut now = Time::ZERO;
    let mut pending = requests(&drain(&mut s, now));
    let mut stalled: Option<(u32, Time)> = None;
    let mut cut = None;
    // Both answer in about a second; after 5 s peer 2 goes silent (cut off), peer 1 goes on.
    for second in 1..=40u64 {
        now = Time(now.0 + 1_000 * MS);
        s.handle_timeout(now);
        for r in std::mem::take(&mut pending) {
            if second >= 5 && r.0 == 2 {
                cut.get_or_insert(now);
                pending.push(r);
            } else {
                s.chunk_received(now, &r.0, &id(1), r.2, 4_000_000);
            }
        }
        if stalled.is_none() && s.stats().timeouts > 0 {
            stalled = Some((2, now));
        }
        pending.extend(requests(&drain(&mut s, now)));
    }
    let (_, at) = stalled.expect("peer 2's request was given up");
    let cut = cut.unwrap();
    let waited = at.saturating_since(cut);
    assert!(waited <= STALL_MIN + std::time::Duration::from_secs(2), "given up {waited:?} after the cut");
}

#[test]
fn a_full_window_never_keeps_an_idle_seeder_from_a_chunk_only_it_holds() {
    // A window of 4, filled by two cinemas of our ISP that hold every chunk but the last.
    let mut s = Scheduler::new(&no_endgame(2, 4), &PolicyConfig::default(), local(), 4);
    s.add_content(Time::ZERO, spec(1, 16, None), Bitfield::new(16));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), bits(16, 0..15));
    }
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(first.iter().all(|r| (r.0 == 1 || r.0 == 2) && r.2 < 15), "{first:?}");
    // A superseeder joins: the window is full, yet it gets one request, for the chunk only it holds.
    s.peer_joined(Time(MS), 9, far());
    s.peer_seeder(&9, true);
    s.peer_bitfield(Time(MS), &9, &id(1), Bitfield::full(16));
    let beyond = requests(&drain(&mut s, Time(MS)));
    assert_eq!(beyond, vec![(9, id(1), 15)], "the seeder is asked for chunk 15 beyond the window");
    assert_eq!(s.stats().beyond_window, 1);
    // One request per seeder beyond the window: nothing more while it is in flight, and no cinema gets any.
    s.peer_joined(Time(2 * MS), 3, local());
    s.peer_bitfield(Time(2 * MS), &3, &id(1), Bitfield::full(16));
    assert!(requests(&drain(&mut s, Time(2 * MS))).is_empty());
    // Its answer frees it for the next one, still beyond the window the cinemas fill.
    s.chunk_received(Time(3 * MS), &9, &id(1), 15, 4 << 20);
    let next = requests(&drain(&mut s, Time(3 * MS)));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].0, 9);
    assert_eq!(s.in_flight(), 5, "4 in the window and 1 beyond it");
}

#[test]
fn an_uploader_with_slots_to_spare_is_asked_one_chunk_a_contended_one_two() {
    let t = TransferConfig { spare_load: 0.5, ..transfer(2, 8) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 5);
    s.add_content(Time::ZERO, spec(1, 32, None), Bitfield::new(32));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(32));
    }
    // Neither has said a load: both spare, one request each, though the window has room for eight.
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.iter().map(|r| r.0).collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]), "{first:?}");
    assert_eq!(first.len(), 2);
    // Peer 1's slots fill: a second request to it gets more of its link now; peer 2 stays at one.
    s.peer_load(Time(MS), &1, 0.75);
    let next = requests(&drain(&mut s, Time(MS)));
    assert_eq!(next.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1], "{next:?}");
    assert_eq!((s.peer_in_flight(&1), s.peer_in_flight(&2)), (2, 1));
}

#[test]
fn a_lone_uploader_with_slots_to_spare_keeps_its_second_request_until_a_second_peer_joins() {
    let t = TransferConfig { spare_load: 0.5, ..transfer(2, 8) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 7);
    s.add_content(Time::ZERO, spec(1, 32, None), Bitfield::new(32));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_load(Time::ZERO, &1, 0.25);
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(32));
    // The only peer: two requests though it has slots to spare (the second keeps its link busy across
    // the round trip).
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 1], "{first:?}");
    // A second peer joins: it gets one; peer 1, answering one of its two, is not asked again while the
    // other is in flight.
    s.peer_joined(Time(MS), 2, local());
    s.peer_load(Time(MS), &2, 0.25);
    s.peer_bitfield(Time(MS), &2, &id(1), Bitfield::full(32));
    assert_eq!(requests(&drain(&mut s, Time(MS))).iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
    s.chunk_received(Time(2 * MS), &1, &id(1), first[0].2, 4 << 20);
    s.peer_load(Time(2 * MS), &1, 0.25);
    assert!(requests(&drain(&mut s, Time(2 * MS))).is_empty());
    assert_eq!((s.peer_in_flight(&1), s.peer_in_flight(&2)), (1, 1));
}

#[test]
fn a_full_window_still_asks_each_uploader_with_slots_to_spare_once() {
    // A window of 2, filled at two contended peers.
    let t = TransferConfig { spare_load: 0.5, ..transfer(2, 2) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 6);
    s.add_content(Time::ZERO, spec(1, 32, None), Bitfield::new(32));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_load(Time::ZERO, &p, 1.0);
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(32));
    }
    assert_eq!(requests(&drain(&mut s, Time::ZERO)).len(), 2);
    // A peer with slots to spare joins: one request beyond the window; a contended one gets none.
    for (p, load) in [(3, 0.25), (4, 0.75)] {
        s.peer_joined(Time(MS), p, local());
        s.peer_load(Time(MS), &p, load);
        s.peer_bitfield(Time(MS), &p, &id(1), Bitfield::full(32));
    }
    let beyond = requests(&drain(&mut s, Time(MS)));
    assert_eq!(beyond.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3], "{beyond:?}");
    assert_eq!(s.stats().beyond_window, 1);
    assert_eq!(s.in_flight(), 3, "2 in the window and 1 beyond it");
    // Nothing more while it is in flight; its answer frees it for the next one.
    assert!(requests(&drain(&mut s, Time(2 * MS))).is_empty());
    let chunk = beyond[0].2;
    s.chunk_received(Time(3 * MS), &3, &id(1), chunk, 4 << 20);
    let next = requests(&drain(&mut s, Time(3 * MS)));
    assert_eq!(next.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3], "{next:?}");
    // With spare_load 0 no peer is spare: the full window holds.
    let t = TransferConfig { spare_load: 0.0, ..transfer(2, 2) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 6);
    s.add_content(Time::ZERO, spec(1, 32, None), Bitfield::new(32));
    for p in [1, 2, 3] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(32));
    }
    assert_eq!(requests(&drain(&mut s, Time::ZERO)).len(), 2);
    assert_eq!(s.stats().beyond_window, 0);
}

#[test]
fn a_burst_of_timeouts_of_requests_asked_together_cuts_the_window_once() {
    // Peers 1 and 2 never answer (an ADSL line that slices its upload 16 ways takes longer than the
    // timeout over a 4 MiB chunk); peers 10..40 answer each request one second after it was sent, so the
    // receive rate grows with the window, which climbs to its ceiling. At 300 s the four requests asked of
    // the silent peers at 0 s time out within the same instant: one loss episode, one cut (64 -> 32), not
    // four (64 -> 8), as bursts of timeouts took fast cinemas of the simulated fleet to a window of 4.
    let t = TransferConfig { min_requests_total: 8, ..no_endgame(2, 64) };
    let mut s = Scheduler::new(&t, &PolicyConfig::default(), local(), 9);
    let chunks = 40_000;
    s.add_content(Time::ZERO, spec(1, chunks, None), Bitfield::new(chunks));
    for p in [1, 2] {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(chunks));
    }
    let silent = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(silent.len(), 4, "{silent:?}");
    for p in 10..40 {
        s.peer_joined(Time::ZERO, p, local());
        s.peer_bitfield(Time::ZERO, &p, &id(1), Bitfield::full(chunks));
    }
    let mut pending: BTreeMap<(Time, u32), (u32, u32)> = BTreeMap::new();
    let mut seq = 0;
    let mut now = Time::ZERO;
    let end = Time::from_duration(Duration::from_secs(299));
    for _ in 0..100_000 {
        for (peer, _, chunk) in requests(&drain(&mut s, now)) {
            assert!(peer >= 10, "the silent peers hold their two requests each");
            seq += 1;
            pending.insert((now + Duration::from_secs(1), seq), (peer, chunk));
        }
        let Some(((at, _), (peer, chunk))) = pending.pop_first() else { break };
        if at > end {
            break;
        }
        now = at;
        s.chunk_received(now, &peer, &id(1), chunk, 4 << 20);
    }
    assert_eq!(s.window(), 64, "uploader-limited: the window reached its ceiling");
    assert_eq!(s.stats().timeouts, 0);
    let deadline = Time::ZERO + t.request_timeout;
    s.handle_timeout(deadline);
    assert_eq!(s.stats().timeouts, 4);
    assert_eq!(s.window(), 32, "one cut for the episode");
}

#[test]
fn a_held_back_peer_is_rescored_when_the_best_throughput_rises() {
    // A window of 2, one request per peer. Peer 1 of our ISP holds chunks 0-6; peer 2, a cinema of another
    // ISP, holds all 8, so chunk 7 is a gap only it can fill.
    let mut s = Scheduler::new(&no_endgame(1, 2), &PolicyConfig::default(), local(), 6);
    s.add_content(Time::ZERO, spec(1, 8, None), Bitfield::new(8));
    for (p, at, bits_) in [(1, local(), bits(8, 0..7)), (2, far(), Bitfield::full(8))] {
        s.peer_joined(Time::ZERO, p, at);
        s.peer_load(Time::ZERO, &p, 0.0);
        s.peer_bitfield(Time::ZERO, &p, &id(1), bits_);
    }
    let first = requests(&drain(&mut s, Time::ZERO));
    let at_1 = first.iter().find(|r| r.0 == 1).map(|r| r.2).expect("peer 1 asked");
    assert!(first.contains(&(2, id(1), 7)), "the gap is asked of peer 2: {first:?}");
    // Peer 2 delivers the gap at 10 MB/s, the best rate so far; peer 3 of our ISP joins with chunks 0-6.
    // Peer 2 now holds only what our ISP holds: it is held back, and peer 3 takes the window's room.
    let t1 = Time(100 * MS);
    s.chunk_received(t1, &2, &id(1), 7, 1_000_000);
    s.peer_joined(t1, 3, local());
    s.peer_load(t1, &3, 0.0);
    s.peer_bitfield(t1, &3, &id(1), bits(8, 0..7));
    let second = requests(&drain(&mut s, t1));
    assert!(second.iter().all(|r| r.0 == 3), "{second:?}");
    let held_score = |s: &Scheduler<u32>| {
        s.held
            .iter()
            .find(|k| k.2 == s.peer_index[&2])
            .map(|k| f64::from_bits(k.0 .0))
            .expect("peer 2 held back")
    };
    // Its score: low load 0.3 x 1 + throughput 0.2 x (its rate / the best) 1.
    assert!((held_score(&s) - 0.5).abs() < 1e-9, "{}", held_score(&s));
    // Peer 1 delivers 10 MB in 110 ms: the best rate is now about 9.1 times peer 2's, and the score of the
    // held-back peer follows, as a ready peer's does.
    s.chunk_received(Time(110 * MS), &1, &id(1), at_1, 10_000_000);
    let expected = 0.3 + 0.2 * (1e7 / (1e7 / 0.11));
    assert!((held_score(&s) - expected).abs() < 1e-9, "{} against {expected}", held_score(&s));
}

/// Two uploaders serving our requests one after the other (FIFO) at `rate` bytes/s each, `rtt` away;
/// `n` chunks of 4 MB fetched with the window fixed at `total` (peer 2 holds none of them unless
/// `near_holds`). With `tell`, the round trips are fed to the scheduler as the node's ping would. Returns (the time the last chunk arrived, the most requests in
/// flight at each peer, the most in flight in all, the requests pipelined).
fn fetch_over_round_trips(tell: bool, near_holds: bool, total: u32, n: u32) -> (Time, [u32; 2], usize, u64) {
    const BYTES: u64 = 4_000_000;
    let peers = [(1u32, 50e6, Duration::from_millis(200)), (2u32, 5e6, Duration::from_millis(2))];
    let mut s = Scheduler::new(&transfer(2, total), &PolicyConfig::default(), local(), 3);
    s.add_content(Time::ZERO, spec(1, n, None), Bitfield::new(n));
    for (p, _, rtt) in peers {
        s.peer_joined(Time::ZERO, p, local());
        let held = if p == 1 || near_holds { Bitfield::full(n) } else { Bitfield::new(n) };
        s.peer_bitfield(Time::ZERO, &p, &id(1), held);
        if tell {
            s.peer_rtt(&p, rtt);
        }
    }
    // Each uploader's link is free from `free[i]`; a request reaches it half a round trip after it is sent
    // and its chunk arrives half a round trip after the link sent it.
    let mut free = [Time::ZERO; 2];
    let mut arrivals: BTreeMap<(Time, u32), (u32, u32)> = BTreeMap::new();
    let (mut seq, mut now, mut most, mut most_total) = (0u32, Time::ZERO, [0u32; 2], 0usize);
    for _ in 0..100_000 {
        for out in drain(&mut s, now) {
            if let Output::Request { peer, chunk, .. } = out {
                let i = (peer - 1) as usize;
                let (_, rate, rtt) = peers[i];
                let reach = now + rtt / 2;
                let start = if free[i] > reach { free[i] } else { reach };
                free[i] = start + Duration::from_secs_f64(BYTES as f64 / rate);
                arrivals.insert((free[i] + rtt / 2, seq), (peer, chunk));
                seq += 1;
            }
        }
        for (i, m) in most.iter_mut().enumerate() {
            *m = (*m).max(s.peer_in_flight(&(i as u32 + 1)));
        }
        most_total = most_total.max(s.in_flight());
        // The next event: a timer of the scheduler's (a paced peer may be asked again), or an arrival.
        let next = arrivals.first_key_value().map(|(k, _)| k.0);
        if let Some(t) = s.poll_timeout().filter(|&t| next.is_none_or(|a| t < a)) {
            now = t;
            s.handle_timeout(now);
            continue;
        }
        let Some(((at, _), (peer, chunk))) = arrivals.pop_first() else { break };
        now = at;
        s.chunk_received(now, &peer, &id(1), chunk, BYTES);
    }
    let done = s.progress(&id(1)).expect("the content");
    assert_eq!((done.have, done.in_flight), (n, 0), "every chunk fetched");
    (now, most, most_total, s.stats().pipelined)
}

#[test]
fn a_fast_peer_far_away_gets_the_requests_its_round_trip_holds_and_a_near_one_no_more() {
    // Peer 1 carries 50 MB/s 200 ms away: 2.5 chunks of 4 MB in a round trip, so 1 + ceil(2.5 - 0.25) = 4
    // requests keep its link busy; two leave it idle 0.2 s of every 0.36. Peer 2, 2 ms away at 5 MB/s,
    // carries 0.0025 of a chunk in a round trip: it stays at `max_requests_per_peer`.
    let (told, most, _, pipelined) = fetch_over_round_trips(true, true, 32, 300);
    let (blind, most_blind, _, none) = fetch_over_round_trips(false, true, 32, 300);
    // Its pace is read from the time its link was busy with our requests, so an uploader that serves
    // them one after the other is read at its rate, not above it (it was read three times high, 9
    // requests, when the pace was requests in flight over time less the round trip).
    assert_eq!(most[0], 4, "the far peer's requests: {most:?}");
    assert_eq!(most[1], 2, "the near peer's requests: {most:?}");
    assert_eq!(most_blind, [2, 2]);
    assert!(pipelined > 0 && none == 0, "{pipelined} {none}");
    // Fetched faster: at 4 in flight peer 1 sends without a pause.
    let (t, b) = (told.as_secs_f64(), blind.as_secs_f64());
    assert!(t < 0.8 * b, "{t:.1} s against {b:.1} s without the round trips");
}

#[test]
fn requests_that_cover_a_round_trip_stay_within_the_window() {
    // The far peer alone holds the chunks and would take 4 or more; the window of 3 bounds it.
    let (_, most, total, pipelined) = fetch_over_round_trips(true, false, 3, 60);
    assert_eq!((most[0], total), (3, 3), "{most:?}");
    assert!(pipelined > 0);
}

#[test]
fn a_far_peer_is_asked_one_chunk_per_chunk_time_at_its_pace_not_in_a_burst() {
    let mut s = Scheduler::new(&transfer(2, 32), &PolicyConfig::default(), local(), 9);
    s.add_content(Time::ZERO, spec(1, 100, None), Bitfield::new(100));
    s.peer_joined(Time::ZERO, 1, local());
    s.peer_bitfield(Time::ZERO, &1, &id(1), Bitfield::full(100));
    s.peer_rtt(&1, Duration::from_millis(200));
    // Not measured yet: the count its load allows, at once.
    let first = requests(&drain(&mut s, Time::ZERO));
    assert_eq!(first.len(), 2);
    // The first 4 MB arrives after 280 ms, 80 ms of it on the link: 50 MB/s, 2.5 chunks per round trip, so
    // 4 requests keep its link busy. They go one per 80 ms, each as the last one's chunk would be sent.
    let t = Time(280 * MS);
    s.chunk_received(t, &1, &id(1), first[0].2, 4_000_000);
    assert_eq!(requests(&drain(&mut s, t)).len(), 1);
    assert!(requests(&drain(&mut s, Time(320 * MS))).is_empty(), "paced, not a burst");
    assert_eq!(s.poll_timeout(), Some(Time(360 * MS)), "woken when the next one may go");
    s.handle_timeout(Time(360 * MS));
    assert_eq!(requests(&drain(&mut s, Time(360 * MS))).len(), 1);
    s.handle_timeout(Time(440 * MS));
    assert_eq!(requests(&drain(&mut s, Time(440 * MS))).len(), 1);
    assert_eq!(s.peer_in_flight(&1), 4);
    s.handle_timeout(Time(520 * MS));
    assert!(requests(&drain(&mut s, Time(520 * MS))).is_empty(), "at its round trip's count");
}

#[test]
fn the_pace_is_the_link_rate_whether_an_uploader_queues_shares_or_idles() {
    // A 10 MB/s link 200 ms away: a 4 MB chunk takes 0.4 s on it.
    const BYTES: u64 = 4_000_000;
    let at = |ms: u64| Time::ZERO + Duration::from_millis(ms);
    let close = |p: &Pace| (p.rate().expect("measured") - 10e6).abs() < 1e4;

    // Queued: eight requests sent at once, served one after the other; each arrives 0.4 s after the last.
    let mut queued = Pace::default();
    for k in 0..8 {
        queued.arrived(at(600 + 400 * k), at(200), BYTES);
    }
    assert!(close(&queued), "{:?}", queued.rate());

    // Shared: four requests sent at once share the link and arrive together after 1.6 s on it.
    let mut shared = Pace::default();
    for _ in 0..4 {
        shared.arrived(at(1800), at(200), BYTES);
    }
    assert!(close(&shared), "{:?}", shared.rate());

    // Idle between: one request at a time, each sent as the last arrived; the round trips do not count.
    let mut lone = Pace::default();
    let mut now = 0;
    for _ in 0..8 {
        let sent = now;
        now = sent + 200 + 400;
        lone.arrived(at(now), at(sent + 200), BYTES);
    }
    assert!(close(&lone), "{:?}", lone.rate());

    // Two in flight, the second sent 100 ms after the first: the link serves the first from 200 ms, the
    // second from 600 ms (queued behind it), so it is busy from 200 ms to 1000 ms for 8 MB.
    let mut two = Pace::default();
    two.arrived(at(600), at(200), BYTES);
    two.arrived(at(1000), at(300), BYTES);
    assert!(close(&two), "{:?}", two.rate());
}
