//! Engine tests: unit tests of each decision, and a property test that drives three engines through an
//! in-memory network that reorders messages (quinn-proto's `Pair`, with three), checking the bounds and
//! the durability rule after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const C: ContentId = ContentId([7; 32]);
const CHUNK: u64 = 1 << 20;
/// The highest receive rate an asker can say: every upload slot is open to it (`transfer.open_slots`).
const ALL_SLOTS: u32 = u32::MAX;

fn cfg(role: Role, isp: &str) -> Config {
    // Every peer counts as contended (two requests each from the start): these tests follow requests one
    // by one; spare uploaders have their own tests in the scheduler.
    let transfer = TransferConfig { spare_load: 0.0, ..TransferConfig::default() };
    let mut c = Config::new(role, transfer, PolicyConfig::default());
    c.locality = Locality { isp: Some(isp.into()), site: None };
    c
}

fn offer(chunks: u32, targeted: bool) -> Offer {
    Offer { content: C, chunks, size: u64::from(chunks) * CHUNK, chunk_size: CHUNK, deadline: None, targeted }
}

fn info(isp: &str) -> PeerInfo {
    PeerInfo {
        role: Some(Role::Cinema),
        locality: Locality { isp: Some(isp.into()), site: None },
        downlink: None,
    }
}

fn drain(e: &mut Engine<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// The chunks the engine asks of `peer` in its pending outputs (which are drained).
fn chunk_requests(e: &mut Engine<u32>, peer: u32) -> Vec<u32> {
    drain(e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { peer: p, request: Request::Chunk { index, .. } } if p == peer => Some(index),
            _ => None,
        })
        .collect()
}

fn t(ms: u64) -> Time {
    Time::ZERO + Duration::from_millis(ms)
}

/// A cinema fetching C (`chunks` chunks) from peer 1, which holds it all; its first requests are pending.
fn fetching_from_one_peer(chunks: u32) -> Engine<u32> {
    fetching_from_one_peer_as(cfg(Role::Cinema, "a"), chunks)
}

/// The same, configured as `c`.
fn fetching_from_one_peer_as(c: Config, chunks: u32) -> Engine<u32> {
    let mut e = Engine::new(c);
    e.connected(t(0), 1);
    e.hello(t(0), 1, info("a"));
    e.offer(t(0), offer(chunks, true));
    e.manifest(t(0), &1, C, ManifestReply::Good { size: u64::from(chunks) * CHUNK });
    e.installed(t(0), C, Ok(Bitfield::new(chunks)));
    e.bitfield(t(0), &1, &C, Some(Bitfield::full(chunks)));
    e
}

/// A seeder holding `chunks` chunks of C.
fn seeder(chunks: u32, slots: u32) -> Engine<u32> {
    let c = TransferConfig::default();
    seeder_open(chunks, slots, c.seeder_open_slots.unwrap_or(c.open_slots))
}

/// A seeder holding `chunks` chunks of C, `open` of its `slots` open to an asker holding nothing.
fn seeder_open(chunks: u32, slots: u32, open: f64) -> Engine<u32> {
    let mut c = cfg(Role::Superseeder, "a");
    c.transfer.upload_slots = slots;
    c.transfer.seeder_open_slots = Some(open);
    let mut e = Engine::new(c);
    e.hold(t(0), C, Held { have: Bitfield::full(chunks), size: u64::from(chunks) * CHUNK, pinned: true });
    drain(&mut e);
    e
}

/// Receive rates in the tests, bytes/s.
const MB: u32 = 1_000_000;

#[test]
fn a_busy_uploader_keeps_its_last_slots_for_the_fastest_downloaders() {
    // 8 slots, half of them open to a downloader that has not measured its rate (`open_slots = 0.5`).
    let mut e = seeder_open(100, 8, 0.5);
    // The fastest asker so far receives at 100 MB/s: the reference.
    e.chunk_request(t(0), &4, 1, C, 1, 100 * MB);
    assert_eq!(drain(&mut e).len(), 1, "one read");
    // One without a rate yet may use the open half: three more slots, then busy.
    for i in 2..=4 {
        e.chunk_request(t(0), &1, u64::from(i), C, i, 0);
    }
    assert_eq!(drain(&mut e).len(), 3, "three more reads");
    e.chunk_request(t(0), &1, 5, C, 5, 0);
    // Busy as seen by that asker: no slot is open to it, so the load it is told is 1.0.
    assert_eq!(drain(&mut e), vec![Output::Answer { upload: 5, answer: Answer::Busy { load: 1.0 } }]);
    // One at 60 MB/s may use 0.5 + 0.5 x 0.6 = 80% of the slots: up to 6.4 of 8, so it is served while
    // fewer than 7 are busy.
    for i in 11..=13 {
        e.chunk_request(t(0), &3, u64::from(i), C, i, 60 * MB);
    }
    assert_eq!(drain(&mut e).len(), 3, "three more reads");
    e.chunk_request(t(0), &3, 14, C, 14, 60 * MB);
    assert!(matches!(drain(&mut e)[..], [Output::Answer { upload: 14, answer: Answer::Busy { .. } }]));
    // The fastest gets the last one, and no more.
    e.chunk_request(t(0), &4, 15, C, 15, 100 * MB);
    assert!(matches!(drain(&mut e)[..], [Output::Read { upload: 15, .. }]));
    assert_eq!(e.uploads_active(), 8);
    e.chunk_request(t(0), &4, 16, C, 16, 100 * MB);
    assert!(matches!(drain(&mut e)[..], [Output::Answer { upload: 16, answer: Answer::Busy { .. } }]));
    // An idle uploader serves anyone, whatever the share: at least one slot is always open.
    let mut idle = seeder_open(4, 1, 0.0);
    idle.chunk_request(t(0), &1, 1, C, 0, 0);
    assert_eq!(drain(&mut idle), vec![Output::Read { upload: 1, content: C, index: 0 }]);
}

#[test]
fn a_busy_uploader_serves_a_far_slower_asker_in_any_free_slot() {
    // 8 slots, none open beyond the one always open to an asker without a measured rate (`open = 0`).
    let mut e = seeder_open(100, 8, 0.0);
    e.chunk_request(t(0), &9, 1, C, 0, 100 * MB);
    assert_eq!(drain(&mut e).len(), 1, "the fastest is served");
    // An asker at 1.5 MB/s, below a fiftieth of 100 MB/s, is bound by its own link: it takes every free
    // slot but none beyond them.
    for i in 1..8 {
        e.chunk_request(t(0), &1, 10 + u64::from(i), C, i, 3 * MB / 2);
    }
    assert_eq!(drain(&mut e).iter().filter(|o| matches!(o, Output::Read { .. })).count(), 7);
    assert_eq!(e.stats().slow_asker_uploads, 7, "each beyond the one slot the ranking leaves it");
    e.chunk_request(t(0), &1, 20, C, 20, 3 * MB / 2);
    assert_eq!(drain(&mut e), vec![Output::Answer { upload: 20, answer: Answer::Busy { load: 1.0 } }]);
    // At 2.5 MB/s (a fortieth) it is ranked as before: 8 x 0.025 = 0.2 slots, so the uploader's one slot in
    // use already refuses it; and so is an asker that has not measured its rate.
    for rate in [5 * MB / 2, 0] {
        let mut e = seeder_open(100, 8, 0.0);
        e.chunk_request(t(0), &9, 1, C, 0, 100 * MB);
        e.chunk_request(t(0), &1, 2, C, 1, rate);
        assert_eq!(
            drain(&mut e)[1..],
            [Output::Answer { upload: 2, answer: Answer::Busy { load: 1.0 } }],
            "rate {rate}"
        );
        assert_eq!(e.stats().slow_asker_uploads, 0);
    }
}

#[test]
fn seeders_keep_more_of_their_slots_for_the_fastest_downloaders_than_cinemas_do() {
    // 10 slots; `open_slots = 0.5`, `seeder_open_slots = 0.2`: an asker without a measured rate may use 5 at
    // a cinema, 2 at a superseeder or distributor. The fastest asker holds one of them.
    let served = |role: Role| {
        let mut c = cfg(role, "a");
        c.transfer.upload_slots = 10;
        c.transfer.open_slots = 0.5;
        c.transfer.seeder_open_slots = Some(0.2);
        let mut e = Engine::new(c);
        e.hold(t(0), C, Held { have: Bitfield::full(100), size: 100 * CHUNK, pinned: true });
        drain(&mut e);
        e.chunk_request(t(0), &9, 100, C, 99, 100 * MB);
        assert_eq!(drain(&mut e).len(), 1, "{role:?}: the fastest is served");
        for i in 0..10 {
            e.chunk_request(t(0), &1, u64::from(i), C, i, 0);
        }
        drain(&mut e).iter().filter(|o| matches!(o, Output::Read { .. })).count()
    };
    assert_eq!(served(Role::Cinema), 4);
    assert_eq!(served(Role::Superseeder), 1);
    assert_eq!(served(Role::Distributor), 1);
    // Unset, seeders follow `open_slots`.
    let mut c = cfg(Role::Superseeder, "a");
    c.transfer.upload_slots = 10;
    c.transfer.open_slots = 0.5;
    let mut e = Engine::new(c);
    e.hold(t(0), C, Held { have: Bitfield::full(100), size: 100 * CHUNK, pinned: true });
    drain(&mut e);
    for i in 0..10 {
        e.chunk_request(t(0), &1, u64::from(i), C, i, 0);
    }
    assert_eq!(drain(&mut e).iter().filter(|o| matches!(o, Output::Read { .. })).count(), 5);
}

#[test]
fn the_fastest_asker_sets_the_bar_for_a_while_only() {
    // 2 slots, none open to slow askers but the one always open.
    let mut e = seeder_open(100, 2, 0.0);
    e.chunk_request(t(0), &1, 1, C, 1, 100 * MB);
    assert_eq!(drain(&mut e).len(), 1);
    // At a quarter of the fastest rate, a quarter of 2 slots: the one busy slot is all it may have.
    e.chunk_request(t(1), &2, 2, C, 2, 25 * MB);
    assert!(matches!(drain(&mut e)[..], [Output::Answer { upload: 2, answer: Answer::Busy { .. } }]));
    // Two half-lives later nobody said 100 MB/s again: the bar is 25 MB/s, and it is the fastest.
    e.chunk_request(t(2 * ASKER_HALF_LIFE.as_millis() as u64), &2, 3, C, 3, 25 * MB);
    assert!(matches!(drain(&mut e)[..], [Output::Read { upload: 3, .. }]));
}

/// 100 Mbit/s in bytes/s: a declared line.
const LINE: u64 = 12_500_000;

/// A cinema peer that declares `downlink`.
fn cinema_with_line(downlink: Option<u64>) -> PeerInfo {
    PeerInfo { downlink, ..info("a") }
}

/// Uploads a superseeder with 4 slots and no open share (`open = 0`) starts for an asker receiving at a
/// fifth of the fastest asker's rate, its peers cinemas 1 and 2 (the askers) and 3, 4 declaring `lines`
/// (`None`: connected, no hello yet).
fn served_to_a_slower_asker(lines: [Option<Option<u64>>; 4]) -> usize {
    let mut e = seeder_open(100, 4, 0.0);
    for (peer, line) in (1..).zip(lines) {
        e.connected(t(0), peer);
        if let Some(line) = line {
            e.hello(t(0), peer, cinema_with_line(line));
        }
    }
    drain(&mut e);
    e.chunk_request(t(0), &1, 1, C, 0, 10 * MB);
    assert_eq!(drain(&mut e).len(), 1, "the fastest is served");
    for i in 1..=4 {
        e.chunk_request(t(0), &2, 10 + u64::from(i), C, i, 2 * MB);
    }
    drain(&mut e).iter().filter(|o| matches!(o, Output::Read { .. })).count()
}

#[test]
fn where_every_cinema_declares_an_alike_line_a_busy_uploader_serves_every_asker_alike() {
    let alike = Some(Some(LINE));
    // Lines within ALIKE_LINES of each other (100 and 110 Mbit/s): no asker is ranked; the slower one
    // takes every free slot (3 of 4), and no more.
    let near = Some(Some(LINE * 11 / 10));
    assert_eq!(served_to_a_slower_asker([alike, near, alike, alike]), 3);
    // One line three times faster: ranked by rate as before (a fifth of 4 slots: the one always open,
    // which the fastest holds).
    assert_eq!(served_to_a_slower_asker([alike, alike, alike, Some(Some(3 * LINE))]), 0);
    // A cinema that declares no line, or has not said hello yet, may have any line: ranked.
    assert_eq!(served_to_a_slower_asker([alike, alike, alike, Some(None)]), 0);
    assert_eq!(served_to_a_slower_asker([alike, alike, alike, None]), 0);
}

/// The chunk requests a cinema declaring `own` sends at once when it starts fetching C from `peers.len()`
/// cinemas that hold it all and declare `peers`; per peer, in peer order.
fn first_requests(own: Option<u64>, peers: &[Option<u64>]) -> Vec<usize> {
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.downlink = own.map(|d| crate::config::Rate(d as f64));
    let mut e = Engine::new(c);
    let ids = 1..=peers.len() as u32;
    for (peer, &line) in ids.clone().zip(peers) {
        e.connected(t(0), peer);
        e.hello(t(0), peer, cinema_with_line(line));
    }
    e.offer(t(0), offer(100, true));
    e.manifest(t(0), &1, C, ManifestReply::Good { size: 100 * CHUNK });
    e.installed(t(0), C, Ok(Bitfield::new(100)));
    for peer in ids.clone() {
        e.bitfield(t(0), &peer, &C, Some(Bitfield::full(100)));
    }
    let out = drain(&mut e);
    ids.map(|peer| {
        out.iter()
            .filter(|o| matches!(o, Output::Send { peer: p, request: Request::Chunk { .. } } if *p == peer))
            .count()
    })
    .collect()
}

#[test]
fn a_cinema_among_alike_lines_asks_one_chunk_of_every_peer() {
    // The default window starts at 4 requests, 2 per contended peer (every peer is, here).
    let window = TransferConfig::default().min_requests_total as usize;
    let alike = Some(LINE);
    // Lines alike (ours too): one request per peer, however contended, and one at every peer even where
    // there are more peers than the window holds.
    assert_eq!(first_requests(alike, &[alike; 3]), vec![1, 1, 1]);
    assert_eq!(first_requests(alike, &[alike; 6]), vec![1; 6]);
    // Our own line undeclared or faster, or a peer's: the window, two at a peer.
    for (own, peers) in
        [(None, vec![alike; 3]), (Some(2 * LINE), vec![alike; 3]), (alike, vec![alike, alike, None])]
    {
        let sent = first_requests(own, &peers);
        assert_eq!(sent.iter().sum::<usize>(), window, "{own:?} {peers:?}: {sent:?}");
        assert!(sent.contains(&2), "{own:?} {peers:?}: {sent:?}");
    }
    assert_eq!(first_requests(None, &[alike; 6]).iter().sum::<usize>(), window);
}

/// (index, rate) of the chunk requests among `out`.
fn rates_told(out: Vec<Output<u32>>) -> Vec<(u32, u32)> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send { request: Request::Chunk { index, rate, .. }, .. } => Some((index, rate)),
            _ => None,
        })
        .collect()
}

/// Chunk `index` of C arrives from peer 1 at `now` (telling `load`) and is stored.
fn store_from_1(e: &mut Engine<u32>, now: Time, index: u32, load: f32) {
    assert!(e.chunk_reply(now, &1, &C, index, Reply::Answer(Answer::Data { len: CHUNK, load })));
    e.chunk_written(now, &1, &C, index, CHUNK, Written::Ok);
}

#[test]
fn chunk_requests_carry_the_highest_receive_rate_measured() {
    let mut e = fetching_from_one_peer(16);
    let mut asked = rates_told(drain(&mut e));
    assert!(asked.iter().all(|&(_, r)| r == 0), "no rate before anything arrived: {asked:?}");
    // One chunk a second: the round opens at the first, and 2 MiB in the next 2 s is 1 MiB/s.
    for (n, ms) in [0u64, 1_000, 2_000].into_iter().enumerate() {
        store_from_1(&mut e, t(ms), asked[n].0, 0.1);
        asked.extend(rates_told(drain(&mut e)));
    }
    let rates: Vec<u32> = asked.iter().map(|&(_, r)| r).collect();
    assert_eq!(rates.last(), Some(&(CHUNK as u32)), "1 MiB/s after the round: {rates:?}");
    assert!(rates[..rates.len() - 1].iter().all(|&r| r == 0), "{rates:?}");
}

#[test]
fn a_cinema_refused_by_busy_uploaders_tells_a_higher_rate_until_it_is_served() {
    let mut e = fetching_from_one_peer(64);
    let mut asked = rates_told(drain(&mut e));
    // One chunk a second for two rounds: the peak is 1 MiB/s and that is what is told.
    let mut ms = 0;
    for _ in 0..5 {
        store_from_1(&mut e, t(ms), asked.remove(0).0, 0.1);
        asked.extend(rates_told(drain(&mut e)));
        ms += 1_000;
    }
    assert_eq!(asked.last().map(|&(_, r)| r), Some(CHUNK as u32), "{asked:?}");
    // Then most answers are busy (the peer is asked again after each back-off): each round of them, ended
    // by the one chunk that came, doubles the rate told, up to MAX_RATE_BOOST times the peak.
    let mut seen = Vec::new();
    for _ in 0..8 {
        ms += 3_000;
        for (i, _) in std::mem::take(&mut asked) {
            e.chunk_reply(t(ms), &1, &C, i, Reply::Answer(Answer::Busy { load: 1.0 }));
        }
        ms += 40_000;
        e.handle_timeout(t(ms));
        let mut round = rates_told(drain(&mut e));
        assert!(round.len() >= 2, "{round:?}");
        let (served, _) = round.remove(0);
        for (i, _) in round {
            e.chunk_reply(t(ms), &1, &C, i, Reply::Answer(Answer::Busy { load: 1.0 }));
        }
        store_from_1(&mut e, t(ms), served, 1.0);
        ms += 40_000;
        e.handle_timeout(t(ms));
        asked = rates_told(drain(&mut e));
        seen.extend(asked.iter().map(|&(_, r)| r));
    }
    assert!(seen.contains(&(2 * CHUNK as u32)), "doubled after a busy round: {seen:?}");
    assert_eq!(seen.iter().max().map(|&r| f64::from(r)), Some(MAX_RATE_BOOST * CHUNK as f64), "{seen:?}");
    // A round served again tells the peak again.
    for _ in 0..3 {
        store_from_1(&mut e, t(ms), asked.remove(0).0, 0.1);
        asked.extend(rates_told(drain(&mut e)));
        ms += 1_000;
    }
    assert_eq!(asked.last().map(|&(_, r)| r), Some(CHUNK as u32), "{asked:?}");
}

#[test]
fn the_targeting_rule() {
    assert!(!wants(Role::Distributor, true));
    assert!(wants(Role::Superseeder, false));
    assert!(wants(Role::Cinema, true));
    assert!(!wants(Role::Cinema, false));
}

#[test]
fn uploads_missing_busy_and_load_on_every_answer() {
    let mut e = seeder(4, 1);
    e.chunk_request(t(0), &1, 10, C, 9, ALL_SLOTS);
    assert_eq!(drain(&mut e), vec![Output::Answer { upload: 10, answer: Answer::Missing { load: 0.0 } }]);
    e.chunk_request(t(0), &1, 11, C, 0, ALL_SLOTS);
    assert_eq!(drain(&mut e), vec![Output::Read { upload: 11, content: C, index: 0 }]);
    e.chunk_request(t(0), &2, 12, C, 1, ALL_SLOTS);
    assert_eq!(drain(&mut e), vec![Output::Answer { upload: 12, answer: Answer::Busy { load: 1.0 } }]);
    e.chunk_read(t(1), 11, Ok(CHUNK));
    assert_eq!(
        drain(&mut e),
        vec![Output::Answer { upload: 11, answer: Answer::Data { len: CHUNK, load: 1.0 } }]
    );
    e.upload_done(t(2), 11, true);
    assert_eq!(drain(&mut e), vec![Output::Event(Event::Served { peer: 1, len: CHUNK })]);
    assert_eq!(e.uploads_active(), 0);
    assert_eq!(e.stats().busy_answers, 1);
}

#[test]
fn a_cancel_frees_the_slot_at_once() {
    let mut e = seeder(4, 1);
    e.chunk_request(t(0), &1, 1, C, 0, ALL_SLOTS);
    drain(&mut e);
    e.cancel(t(1), &1, &C, 0);
    assert_eq!(drain(&mut e), vec![Output::Answer { upload: 1, answer: Answer::Cancelled }]);
    assert_eq!(e.uploads_active(), 0);
    // The read that was under way comes back for an upload that no longer exists: nothing happens.
    e.chunk_read(t(2), 1, Ok(CHUNK));
    assert!(drain(&mut e).is_empty());
    // Cancelled while sending: the body is told to abort; the slot stays taken while bytes may still be
    // on the link, and is free for the next asker once the body says the transfer ended.
    e.chunk_request(t(3), &2, 2, C, 1, ALL_SLOTS);
    e.chunk_read(t(3), 2, Ok(CHUNK));
    drain(&mut e);
    e.cancel(t(4), &2, &C, 1);
    assert_eq!(drain(&mut e), vec![Output::Abort { upload: 2 }]);
    e.chunk_request(t(5), &3, 3, C, 2, ALL_SLOTS);
    assert!(matches!(drain(&mut e)[..], [Output::Answer { upload: 3, answer: Answer::Busy { .. } }]));
    e.upload_done(t(6), 2, false);
    assert!(drain(&mut e).is_empty(), "an aborted upload is not counted as served");
    e.chunk_request(t(7), &3, 4, C, 2, ALL_SLOTS);
    assert_eq!(drain(&mut e), vec![Output::Read { upload: 4, content: C, index: 2 }]);
}

#[test]
fn the_upload_limit_paces_answers_without_holding_anything_but_a_timer() {
    let mut e = seeder(8, 8);
    // 1 MiB/s, burst 256 KiB: four 1 MiB chunks read at once go out about a second apart.
    e.set_limits(t(0), Limits { upload: Some(CHUNK as f64), download: None });
    for i in 0..4 {
        e.chunk_request(t(0), &1, u64::from(i), C, i, ALL_SLOTS);
        e.chunk_read(t(0), u64::from(i), Ok(CHUNK));
    }
    let first = drain(&mut e).into_iter().filter(|o| matches!(o, Output::Answer { .. })).count();
    assert_eq!(first, 1, "one answer within the burst");
    let mut sent_at = Vec::new();
    let mut now = t(0);
    for _ in 0..100 {
        let Some(next) = e.poll_timeout() else { break };
        now = next;
        e.handle_timeout(now);
        for o in drain(&mut e) {
            if let Output::Answer { answer: Answer::Data { .. }, .. } = o {
                sent_at.push(now);
            }
        }
        if sent_at.len() == 3 {
            break;
        }
    }
    assert_eq!(sent_at.len(), 3);
    let secs: Vec<f64> = sent_at.iter().map(|t| t.as_secs_f64()).collect();
    assert!(
        (secs[0] - 0.75).abs() < 0.01 && (secs[1] - 1.75).abs() < 0.01 && (secs[2] - 2.75).abs() < 0.01,
        "{secs:?}"
    );
    // Upload limit 0: nothing is read, every request is answered busy.
    e.set_limits(now, Limits { upload: Some(0.0), download: None });
    e.chunk_request(now, &2, 99, C, 5, ALL_SLOTS);
    assert!(matches!(drain(&mut e)[..], [Output::Answer { upload: 99, answer: Answer::Busy { .. } }]));
}

#[test]
fn a_fetching_cinema_keeps_its_answers_below_its_uplink_by_the_room_its_acknowledgements_need() {
    // An 8 Mbit/s uplink (1 MB/s) beside an 80 Mbit/s downlink, declared: narrow (its acknowledgements
    // need 0.4 of it).
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.uplink = Some(crate::config::Rate(1e6));
    c.transfer.downlink = Some(crate::config::Rate(10e6));
    let mut idle = Engine::<u32>::new(c.clone());
    assert_eq!(idle.upload_pace(), None, "fetching nothing: the whole line");
    idle.set_limits(t(0), Limits { upload: Some(5e5), download: None });
    assert_eq!(idle.upload_pace(), Some(5e5), "the upload limit alone");

    let mut e = fetching_from_one_peer_as(c, 64);
    assert_eq!(e.upload_pace(), Some(0.85e6), "fetching, nothing received yet: 85% of the line");
    // 1 MiB/s received over a round: 4% of it is kept for the acknowledgements.
    let mut asked = rates_told(drain(&mut e));
    for (n, ms) in [0u64, 1_000, 2_000].into_iter().enumerate() {
        store_from_1(&mut e, t(ms), asked[n].0, 0.1);
        asked.extend(rates_told(drain(&mut e)));
    }
    let pace = e.upload_pace().unwrap();
    assert!((pace - (0.85e6 - 0.04 * CHUNK as f64)).abs() < 1.0, "{pace}");
    // Answers go out at that pace: 1 MiB chunks asked by peer 2 leave about 1.2 s apart.
    e.connected(t(2_000), 2);
    e.hello(t(2_000), 2, info("a"));
    drain(&mut e);
    let held: Vec<u32> = (0..64).filter(|&i| e.held.get(&C).is_some_and(|h| h.held.have.get(i))).collect();
    assert!(held.len() >= 3, "{held:?}");
    for (k, &i) in held.iter().take(3).enumerate() {
        e.chunk_request(t(2_000), &2, 100 + k as u64, C, i, ALL_SLOTS);
        e.chunk_read(t(2_000), 100 + k as u64, Ok(CHUNK));
    }
    let mut sent_at: Vec<f64> = Vec::new();
    let mut now = t(2_000);
    let answered = |out: Vec<Output<u32>>| {
        out.iter().filter(|o| matches!(o, Output::Answer { answer: Answer::Data { .. }, .. })).count()
    };
    for _ in 0..answered(drain(&mut e)) {
        sent_at.push(now.as_secs_f64());
    }
    for _ in 0..200 {
        if sent_at.len() >= 3 {
            break;
        }
        let Some(next) = e.poll_timeout() else { break };
        now = now.max(next);
        e.handle_timeout(now);
        for _ in 0..answered(drain(&mut e)) {
            sent_at.push(now.as_secs_f64());
        }
    }
    assert_eq!(sent_at.len(), 3, "{sent_at:?}");
    let gap = sent_at[2] - sent_at[1];
    assert!((gap - CHUNK as f64 / pace).abs() < 0.02, "{sent_at:?}, pace {pace}");
    // A download at 20 MiB/s would want all of the line for its acknowledgements: a tenth stays.
    for k in 0..40u64 {
        let ms = 2_000 + 50 * (k + 1);
        if let Some(&(i, _)) = asked.get(3 + k as usize) {
            store_from_1(&mut e, t(ms), i, 0.1);
        }
        asked.extend(rates_told(drain(&mut e)));
    }
    assert_eq!(e.upload_pace(), Some(0.1e6), "at least a tenth of the line");
}

#[test]
fn a_slow_line_yields_to_faster_ones_while_ahead_of_its_own_time() {
    let bytes = |mbit: f64| mbit * 1e6 / 8.0;
    let line = |mbit: f64| PeerInfo { downlink: Some(bytes(mbit) as u64), ..info("a") };
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.downlink = Some(crate::config::Rate(bytes(50.0)));
    // A VDSL cinema fetching 64 MiB: 10.7 s at its whole line.
    let own = 64.0 * CHUNK as f64 / bytes(50.0);
    let at = |share: f64| t(0) + Duration::from_secs_f64(share * own);
    let mut e = fetching_from_one_peer_as(c.clone(), 64);
    assert_eq!(e.yielding(t(0)), None, "no peer declares a line");
    e.connected(t(0), 2);
    e.hello(t(0), 2, line(300.0));
    assert_eq!(e.yielding(t(0)), None, "the slowest line around never yields");
    e.connected(t(0), 3);
    e.hello(t(0), 3, line(15.0));
    assert_eq!(e.yielding(t(0)), Some(YIELD_SHARE * bytes(50.0)), "fibre and ADSL around it");
    // Nothing received: ahead of 1.2 times its own time for 0.2 of it.
    assert!(e.yielding(at(0.19)).is_some());
    assert_eq!(e.yielding(at(0.21)), None, "behind: the whole line again");
    // Half of it held at 0.6 of its own time: 0.6 + 0.5 < 1.2, it yields again.
    for i in 0..32 {
        e.chunk_reply(at(0.6), &1, &C, i, Reply::Answer(Answer::Data { len: CHUNK, load: 0.1 }));
        e.chunk_written(at(0.6), &1, &C, i, CHUNK, Written::Ok);
    }
    assert!(e.yielding(at(0.6)).is_some());
    assert_eq!(e.yielding(at(0.71)), None);
    // A fast line nearby less than four times its own: no claim to go first.
    let mut e = fetching_from_one_peer_as(c.clone(), 64);
    for (p, mbit) in [(2, 150.0), (3, 15.0)] {
        e.connected(t(0), p);
        e.hello(t(0), p, line(mbit));
    }
    assert_eq!(e.yielding(t(0)), None);
    // A far deadline (an hour) leaves it yielding; turned off, or a deadline within 1.2 times its line's
    // time for what is left (12 s), it does not.
    for (yields, deadline, expected) in
        [(true, Some(3_600_000), true), (false, None, false), (true, Some(12_000), false)]
    {
        let mut c = c.clone();
        c.transfer.slow_line_yields = yields;
        let mut e = Engine::new(c);
        e.connected(t(0), 1);
        e.hello(t(0), 1, info("a"));
        e.offer(t(0), Offer { deadline: deadline.map(t), ..offer(64, true) });
        e.manifest(t(0), &1, C, ManifestReply::Good { size: 64 * CHUNK });
        e.installed(t(0), C, Ok(Bitfield::new(64)));
        for (p, mbit) in [(2, 300.0), (3, 15.0)] {
            e.connected(t(0), p);
            e.hello(t(0), p, line(mbit));
        }
        assert_eq!(e.yielding(t(0)).is_some(), expected, "{yields} {deadline:?}");
    }
}

#[test]
fn only_a_narrow_declared_uplink_paces_a_fetching_cinema() {
    // Fibre, 100 Mbit/s up and 300 down, both declared: its acknowledgements need 0.12 of the uplink.
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.uplink = Some(crate::config::Rate(12.5e6));
    c.transfer.downlink = Some(crate::config::Rate(37.5e6));
    let e = fetching_from_one_peer_as(c.clone(), 64);
    assert_eq!((e.narrow_uplink(), e.upload_pace()), (None, None), "a wide line is as if undeclared");
    // ADSL, 1 Mbit/s up and 15 down: 0.6.
    c.transfer.uplink = Some(crate::config::Rate(125e3));
    c.transfer.downlink = Some(crate::config::Rate(1.875e6));
    let e = fetching_from_one_peer_as(c.clone(), 64);
    assert_eq!(e.narrow_uplink(), Some(125e3));
    assert_eq!(e.upload_pace(), Some(125e3 * LINE_SHARE));
    // The downlink undeclared: narrow once the node has received fast enough to show it.
    c.transfer.uplink = Some(crate::config::Rate(0.45e6));
    c.transfer.downlink = None;
    let mut e = fetching_from_one_peer_as(c, 64);
    assert_eq!((e.narrow_uplink(), e.upload_pace()), (None, None), "nothing received yet");
    let mut asked = rates_told(drain(&mut e));
    for (n, ms) in (0..=8u64).map(|k| 250 * k).enumerate() {
        store_from_1(&mut e, t(ms), asked[n].0, 0.1);
        asked.extend(rates_told(drain(&mut e)));
    }
    // 4 MiB/s received: its acknowledgements need more than a third of 0.45 MB/s.
    assert!(e.recv.peak >= 4e6, "{}", e.recv.peak);
    assert_eq!(e.narrow_uplink(), Some(0.45e6));
    let pace = e.upload_pace().unwrap();
    assert!((pace - (0.45e6 * LINE_SHARE - ACK_ROOM * e.recv.last).max(0.45e6 * MIN_LINE_SHARE)).abs() < 1.0);
}

#[test]
fn a_fetching_cinema_whose_round_trips_all_rise_takes_its_upload_rate_as_its_uplink() {
    let run = |find_uplink: bool| {
        let mut c = cfg(Role::Cinema, "a");
        c.transfer.find_uplink = find_uplink;
        let mut e = fetching_from_one_peer_as(c, 64);
        let mut asked = rates_told(drain(&mut e));
        for (n, ms) in [0u64, 1_000, 2_000].into_iter().enumerate() {
            store_from_1(&mut e, t(ms), asked[n].0, 0.1);
            asked.extend(rates_told(drain(&mut e)));
        }
        for p in [2, 3, 4] {
            e.connected(t(2_000), p);
            e.hello(t(2_000), p, info("a"));
        }
        drain(&mut e);
        // 10 ms to every peer, the line's queue empty.
        for p in 1..=4 {
            e.round_trip(t(2_000), &p, Duration::from_millis(10));
        }
        assert_eq!(e.own_queue(t(2_000)), Some(Duration::ZERO));
        // Peer 2 asks for a held chunk every second: 1 MiB/s goes out, unpaced.
        let held = (0..64).find(|&i| e.held.get(&C).is_some_and(|h| h.held.have.get(i))).unwrap();
        for k in 0..11u64 {
            let now = t(3_000 + 1_000 * k);
            e.chunk_request(now, &2, 500 + k, C, held, ALL_SLOTS);
            e.chunk_read(now, 500 + k, Ok(CHUNK));
            assert!(drain(&mut e)
                .iter()
                .any(|o| matches!(o, Output::Answer { answer: Answer::Data { .. }, .. })));
            e.upload_done(now, 500 + k, true);
        }
        assert_eq!(e.upload_pace(), None);
        // One peer's own queue is not ours: the least round trip leaves it out.
        e.round_trip(t(13_500), &2, Duration::from_secs(2));
        assert_eq!(e.own_queue(t(13_500)), Some(Duration::ZERO));
        // A short queue (50 ms more on every path) is left alone.
        for p in 1..=4 {
            e.round_trip(t(14_000), &p, Duration::from_millis(60));
        }
        assert_eq!(e.own_queue(t(14_000)), Some(Duration::from_millis(50)));
        assert_eq!(e.found_uplink(), None);
        // 390 ms more on every path: the line is full, its rate is what went out.
        for p in 1..=4 {
            e.round_trip(t(15_000), &p, Duration::from_millis(400));
        }
        assert_eq!(e.own_queue(t(15_000)), Some(Duration::from_millis(390)));
        // Too few peers measured lately: no queue is told.
        assert_eq!(e.own_queue(t(15_000) + OWN_QUEUE_RECENT + Duration::from_secs(1)), None);
        e
    };
    let e = run(false);
    assert_eq!((e.found_uplink(), e.upload_pace()), (None, None), "find_uplink off");
    let mut e = run(true);
    let found = e.found_uplink().expect("found");
    assert!((found - CHUNK as f64 / LINE_PAYLOAD).abs() < 1.0, "{found}");
    let pace = e.upload_pace().unwrap();
    assert!((pace - (found * LINE_SHARE - ACK_ROOM * e.recv.last)).abs() < 1.0, "{pace} against {found}");
    assert_eq!(e.stats().uplinks_found, 1);
    // The queue drains: the found line probes up, at most once a bin and never above the fastest bin.
    for p in 1..=4 {
        e.round_trip(t(20_000), &p, Duration::from_millis(10));
    }
    assert_eq!(e.found_uplink(), Some(found), "moved less than a bin ago");
    for p in 1..=4 {
        e.round_trip(t(26_000), &p, Duration::from_millis(10));
    }
    assert_eq!(e.found_uplink(), Some(found), "the fastest bin is the one found");

    // A queue that pacing does not drain is not the uplink's (a downlink's): after a few bins the node
    // stops pacing by it and finds none again.
    let mut e = run(true);
    for k in 1..=u64::from(FOUND_UPLINK_TRIES) + 1 {
        assert!(e.found_uplink().is_some(), "bin {k}");
        for p in 1..=4 {
            e.round_trip(t(15_000 + 10_000 * k), &p, Duration::from_millis(400));
        }
    }
    assert_eq!((e.found_uplink(), e.upload_pace()), (None, None));
    for p in 1..=4 {
        e.round_trip(t(100_000), &p, Duration::from_millis(400));
    }
    assert_eq!(e.found_uplink(), None, "not found again");
}

#[test]
fn haves_are_batched_to_subscribers_only() {
    let mut e = Engine::new(cfg(Role::Cinema, "a"));
    e.connected(t(0), 1);
    e.connected(t(0), 2);
    e.hello(t(0), 1, info("a"));
    e.hello(t(0), 2, info("b"));
    e.offer(t(0), offer(8, true));
    drain(&mut e);
    e.manifest(t(1), &1, C, ManifestReply::Good { size: 8 * CHUNK });
    e.installed(t(2), C, Ok(Bitfield::new(8)));
    assert!(e.bitfield_request(t(2), &2, &C).is_some(), "peer 2 subscribes");
    e.bitfield(t(2), &1, &C, Some(Bitfield::full(8)));
    drain(&mut e);
    for i in 0..2 {
        assert!(e.chunk_reply(t(3), &1, &C, i, Reply::Answer(Answer::Data { len: CHUNK, load: 0.5 })));
        e.chunk_written(t(3), &1, &C, i, CHUNK, Written::Ok);
    }
    let haves = |o: &[Output<u32>]| {
        o.iter()
            .filter_map(|o| match o {
                Output::Send { peer, request: Request::Have { chunks, .. } } => Some((*peer, chunks.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(haves(&drain(&mut e)).is_empty(), "nothing before the flush");
    assert_eq!(e.poll_timeout(), Some(t(253)));
    e.handle_timeout(t(253));
    assert_eq!(haves(&drain(&mut e)), vec![(2, vec![0, 1])]);
    assert_eq!(e.peer(&1).map(|p| p.1), Some(0.5), "the load of every answer is kept");
}

/// A cinema that came online late answered "none" when asked for its bitfield before its catalogue had the
/// film. Once it asks for ours (it fetches the film now) it is asked again, and what it holds is fetched
/// from it; before, no one asked it again, and in the simulated lab-hetero the late fibre cinema uploaded
/// nothing. A peer that never answered "none" is not asked again for asking.
#[test]
fn a_peer_that_held_none_of_the_film_is_asked_again_once_it_asks_for_our_bitfield() {
    let mut e = Engine::new(cfg(Role::Cinema, "a"));
    for p in [1, 2] {
        e.connected(t(0), p);
        e.hello(t(0), p, info("a"));
    }
    e.offer(t(0), offer(8, true));
    drain(&mut e);
    e.manifest(t(1), &1, C, ManifestReply::Good { size: 8 * CHUNK });
    e.installed(t(2), C, Ok(Bitfield::new(8)));
    let ask = |p: u32| Output::Send { peer: p, request: Request::Bitfield { content: C } };
    let out = drain(&mut e);
    assert!(out.contains(&ask(1)) && out.contains(&ask(2)), "{out:?}");
    e.bitfield(t(3), &1, &C, Some(Bitfield::new(8)));
    e.bitfield(t(3), &2, &C, None);
    assert!(chunk_requests(&mut e, 2).is_empty(), "nothing to ask of a peer holding none");

    assert!(e.bitfield_request(t(4), &1, &C).is_some());
    assert!(!drain(&mut e).contains(&ask(1)), "peer 1 told its bitfield: not asked again");
    assert!(e.bitfield_request(t(4), &2, &C).is_some(), "peer 2 subscribes to our haves");
    assert!(drain(&mut e).contains(&ask(2)), "peer 2 fetches the film now: asked again");
    assert_eq!(e.stats().bitfields_asked_again, 1);
    e.bitfield_request(t(5), &2, &C);
    assert!(!drain(&mut e).contains(&ask(2)), "asked once per \"none\"");

    e.bitfield(t(6), &2, &C, Some(Bitfield::full(8)));
    assert!(!chunk_requests(&mut e, 2).is_empty(), "what it holds is fetched from it");

    // A "none" answered by a bitfield since is forgotten: no question for a later request.
    e.connected(t(7), 3);
    e.hello(t(7), 3, info("a"));
    assert!(drain(&mut e).contains(&ask(3)));
    e.bitfield(t(8), &3, &C, None);
    e.bitfield(t(9), &3, &C, Some(Bitfield::new(8)));
    e.bitfield_request(t(10), &3, &C);
    assert!(!drain(&mut e).contains(&ask(3)), "peer 3 told its bitfield since");
}

/// The requests in flight that cross the ISP's border are those to peers of another ISP or of none known.
#[test]
fn requests_in_flight_to_other_isps_are_counted_apart() {
    let unknown = PeerInfo { role: Some(Role::Cinema), ..PeerInfo::default() };
    for other in [info("b"), unknown] {
        let mut e = Engine::new(cfg(Role::Cinema, "a"));
        for (p, i) in [(1, info("a")), (2, other.clone())] {
            e.connected(t(0), p);
            e.hello(t(0), p, i);
        }
        e.offer(t(0), offer(64, true));
        drain(&mut e);
        e.manifest(t(1), &1, C, ManifestReply::Good { size: 64 * CHUNK });
        e.installed(t(2), C, Ok(Bitfield::new(64)));
        drain(&mut e);
        for p in [1, 2] {
            e.bitfield(t(3), &p, &C, Some(Bitfield::full(64)));
        }
        let asked: Vec<u32> = drain(&mut e)
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { peer, request: Request::Chunk { .. } } => Some(peer),
                _ => None,
            })
            .collect();
        let to = |p: u32| asked.iter().filter(|&&q| q == p).count();
        assert!(to(1) > 0 && to(2) > 0, "both peers are asked: {asked:?}");
        assert_eq!(e.in_flight(), asked.len());
        assert_eq!(e.in_flight_other_isp(), to(2), "{other:?}");
    }
}

fn dials(out: &[Output<u32>]) -> Vec<u32> {
    out.iter()
        .filter_map(|o| match o {
            Output::Dial { peer } => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lookup_dials_the_providers_it_lacks_up_to_dial_peers_and_a_failed_dial_frees_its_place() {
    let mut c = cfg(Role::Cinema, "a");
    c.policy.dial_peers = 4;
    let mut e = Engine::new(c);
    e.connected(t(0), 1);
    e.hello(t(0), 1, info("a"));
    e.providers(t(0), &C, &[2, 3]);
    assert!(dials(&drain(&mut e)).is_empty(), "nothing fetched: a stale lookup's answer dials no one");
    e.offer(t(0), offer(4, true));
    assert!(drain(&mut e).contains(&Output::Lookup { content: C }));
    // Peer 1 is connected; 2, 3 and 4 fill the four places; 5 and 6 wait for one.
    e.providers(t(1), &C, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(dials(&drain(&mut e)), vec![2, 3, 4]);
    e.providers(t(2), &C, &[2, 3, 5]);
    assert!(dials(&drain(&mut e)).is_empty(), "dials in progress count, none is repeated");
    e.dial_failed(t(3), &3);
    e.connected(t(3), 2);
    e.providers(t(4), &C, &[2, 3, 5, 6]);
    assert_eq!(dials(&drain(&mut e)), vec![3], "the failed dial's place; 2 connected, still counted");
    // A dial that never answers frees its place after DIAL_TIMEOUT.
    let later = t(4) + DIAL_TIMEOUT;
    e.providers(later, &C, &[5, 6]);
    assert_eq!(dials(&drain(&mut e)), vec![5, 6]);
    assert_eq!(e.stats().dials, 6);
}

#[test]
fn a_fetch_short_of_peers_looks_up_again_less_often_while_no_one_new_is_found() {
    let mut e = fetching_from_one_peer(64);
    assert!(drain(&mut e).contains(&Output::Lookup { content: C }), "the fetch's first lookup");
    let lookups_until = |e: &mut Engine<u32>, from: u64, to: u64| -> Vec<u64> {
        let mut at = Vec::new();
        for s in from..to {
            e.handle_timeout(t(s * 1000 + 500));
            if drain(e).contains(&Output::Lookup { content: C }) {
                at.push(s);
            }
        }
        at
    };
    // One peer of 40 wanted, requests in flight (not starved): a lookup every 10 s while answers bring
    // someone new to dial, and twice as long after each answer that does not.
    assert_eq!(lookups_until(&mut e, 1, 11), vec![10]);
    e.providers(t(10_600), &C, &[1]);
    assert!(dials(&drain(&mut e)).is_empty(), "peer 1 is connected already");
    assert_eq!(lookups_until(&mut e, 11, 31), vec![30], "20 s after an answer with no one new");
    e.providers(t(30_600), &C, &[1]);
    assert_eq!(lookups_until(&mut e, 31, 71), vec![70], "then 40 s");
    e.providers(t(70_600), &C, &[1, 2]);
    assert_eq!(dials(&drain(&mut e)), vec![2]);
    assert_eq!(lookups_until(&mut e, 71, 81), vec![80], "an answer that found someone: 10 s again");
}

#[test]
fn dials_stay_within_max_peers_whatever_dial_peers_says() {
    let mut c = cfg(Role::Cinema, "a");
    c.policy.dial_peers = 1_000;
    c.max_peers = 3;
    let mut e = Engine::new(c);
    e.offer(t(0), offer(4, true));
    drain(&mut e);
    let found: Vec<u32> = (1..=50).collect();
    e.providers(t(1), &C, &found);
    assert_eq!(dials(&drain(&mut e)), vec![1, 2, 3]);
}

#[test]
fn a_fetch_asks_the_best_peer_penalises_a_bad_manifest_and_completes() {
    let mut e = Engine::new(cfg(Role::Cinema, "a"));
    e.connected(t(0), 1);
    e.connected(t(0), 2);
    e.hello(t(0), 1, info("b"));
    e.hello(t(0), 2, info("a"));
    drain(&mut e);
    e.offer(t(0), offer(2, false));
    assert!(drain(&mut e).is_empty(), "not targeted: a cinema does not fetch it");
    e.offer(t(0), offer(2, true));
    let out = drain(&mut e);
    assert!(out.contains(&Output::Lookup { content: C }));
    assert!(
        out.contains(&Output::Send { peer: 2, request: Request::Manifest { content: C } }),
        "the same-ISP peer is asked first: {out:?}"
    );
    e.manifest(t(1), &2, C, ManifestReply::Bad("hash".into()));
    let out = drain(&mut e);
    assert!(out.contains(&Output::Event(Event::Penalised { peer: 2 })));
    assert!(out.contains(&Output::Send { peer: 1, request: Request::Manifest { content: C } }));
    e.manifest(t(2), &1, C, ManifestReply::Good { size: 2 * CHUNK });
    assert_eq!(drain(&mut e), vec![Output::Install { content: C }]);
    assert_eq!(e.fetch_state(&C), Some(FetchState::Installing));
    e.installed(t(3), C, Ok(Bitfield::new(2)));
    let out = drain(&mut e);
    assert!(out.contains(&Output::Send { peer: 1, request: Request::Bitfield { content: C } }));
    e.bitfield(t(4), &1, &C, Some(Bitfield::full(2)));
    let reqs = chunk_requests(&mut e, 1);
    assert_eq!(reqs.len(), 2);
    for i in reqs {
        assert!(e.chunk_reply(t(5), &1, &C, i, Reply::Answer(Answer::Data { len: CHUNK, load: 0.1 })));
        e.chunk_written(t(6), &1, &C, i, CHUNK, Written::Ok);
    }
    let out = drain(&mut e);
    assert!(out.contains(&Output::Event(Event::Complete { content: C })), "{out:?}");
    assert!(e.held(&C).is_some_and(|h| h.have.is_complete()));
    assert_eq!(e.fetch_state(&C), None);
}

#[test]
fn a_hello_or_bitfield_lost_in_transit_is_sent_again_and_the_fetch_completes() {
    let mut e = Engine::new(cfg(Role::Cinema, "a"));
    e.connected(t(0), 1);
    assert_eq!(drain(&mut e), vec![Output::Send { peer: 1, request: Request::Hello }]);
    // The connection the hello went on closed: without a retry the session would never join.
    e.send_failed(t(10), &1, &Request::Hello);
    assert!(drain(&mut e).is_empty(), "not at once: at the next housekeeping");
    let at = e.poll_timeout().expect("a retry is due");
    e.handle_timeout(at);
    assert_eq!(drain(&mut e), vec![Output::Send { peer: 1, request: Request::Hello }]);
    e.hello(at, 1, info("a"));
    drain(&mut e);
    assert!(e.is_joined(&1));

    // The fetch's only source: its bitfield request fails, and is asked again.
    e.offer(t(2_000), offer(2, true));
    drain(&mut e);
    e.manifest(t(2_001), &1, C, ManifestReply::Good { size: 2 * CHUNK });
    e.installed(t(2_002), C, Ok(Bitfield::new(2)));
    let bitfield = Output::Send { peer: 1, request: Request::Bitfield { content: C } };
    assert!(drain(&mut e).contains(&bitfield));
    e.send_failed(t(2_003), &1, &Request::Bitfield { content: C });
    let mut asked = false;
    for _ in 0..10 {
        let Some(at) = e.poll_timeout() else { break };
        e.handle_timeout(at);
        if drain(&mut e).contains(&bitfield) {
            asked = true;
            break;
        }
    }
    assert!(asked, "the bitfield is asked again");
    e.bitfield(t(4_000), &1, &C, Some(Bitfield::full(2)));
    let reqs = chunk_requests(&mut e, 1);
    assert_eq!(reqs.len(), 2, "both chunks are asked of the peer");
    assert_eq!(e.stats().retries, 2);
}

#[test]
fn a_peer_failing_every_request_is_not_asked_forever() {
    let mut e = Engine::new(cfg(Role::Cinema, "a"));
    e.connected(t(0), 1);
    drain(&mut e);
    let mut hellos = 0;
    let mut now = t(0);
    for _ in 0..50 {
        e.send_failed(now, &1, &Request::Hello);
        let Some(at) = e.poll_timeout() else { break };
        now = at;
        e.handle_timeout(now);
        hellos += drain(&mut e)
            .iter()
            .filter(|o| matches!(o, Output::Send { request: Request::Hello, .. }))
            .count();
    }
    assert_eq!(hellos as u32, MAX_RETRIES);
    assert!(!e.is_joined(&1));
}

#[test]
fn a_full_disk_refuses_the_content_keeps_what_was_stored_and_resumes_later() {
    let mut e = fetching_from_one_peer(4);
    drain(&mut e);
    assert!(e.chunk_reply(t(1), &1, &C, 0, Reply::Answer(Answer::Data { len: CHUNK, load: 0.0 })));
    e.chunk_written(t(1), &1, &C, 0, CHUNK, Written::Ok);
    assert!(e.chunk_reply(t(1), &1, &C, 1, Reply::Answer(Answer::Data { len: CHUNK, load: 0.0 })));
    e.chunk_written(t(1), &1, &C, 1, CHUNK, Written::NoSpace("disk full".into()));
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(o, Output::Event(Event::Refused { .. }))), "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Event(Event::Penalised { .. }))),
        "the peer is not blamed"
    );
    assert!(matches!(e.fetch_state(&C), Some(FetchState::Refused(_))));
    assert_eq!(e.in_flight(), 0, "nothing more is asked while refused");
    // After the retry delay it resumes from what it holds: chunk 0 is not asked again.
    let retry = t(1) + e.config().refused_retry + e.config().housekeeping;
    let mut now = t(1);
    for _ in 0..200 {
        match e.poll_timeout() {
            Some(next) if next <= retry => {
                now = next;
                e.handle_timeout(now);
            }
            _ => break,
        }
    }
    drain(&mut e);
    assert_eq!(e.fetch_state(&C), Some(FetchState::Active), "at {now:?}");
    e.bitfield(now, &1, &C, Some(Bitfield::full(4)));
    let asked: BTreeSet<u32> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { request: Request::Chunk { index, .. }, .. } => Some(index),
            _ => None,
        })
        .collect();
    assert!(!asked.contains(&0) && asked.len() == 2, "{asked:?}");
}

#[test]
fn capacity_evicts_the_oldest_untargeted_content_or_refuses() {
    let mut c = cfg(Role::Cinema, "a");
    c.capacity = Some(10 * CHUNK);
    let mut e = Engine::new(c);
    let old = ContentId([1; 32]);
    let kept = ContentId([2; 32]);
    for (id, targeted) in [(old, false), (kept, true)] {
        e.hold(t(0), id, Held { have: Bitfield::full(4), size: 4 * CHUNK, pinned: false });
        e.offer(t(0), Offer { content: id, targeted, ..offer(4, targeted) });
    }
    e.connected(t(0), 1);
    e.hello(t(0), 1, info("a"));
    e.offer(t(0), offer(4, true));
    drain(&mut e);
    e.manifest(t(1), &1, C, ManifestReply::Good { size: 4 * CHUNK });
    let out = drain(&mut e);
    assert!(out.contains(&Output::Remove { content: old }), "{out:?}");
    assert!(!out.contains(&Output::Remove { content: kept }));
    assert!(out.contains(&Output::Install { content: C }));
    // Too big even after evicting everything evictable: refused, nothing removed.
    let big = ContentId([3; 32]);
    e.offer(t(2), Offer { content: big, ..offer(8, true) });
    drain(&mut e);
    e.manifest(t(3), &1, big, ManifestReply::Good { size: 8 * CHUNK });
    let out = drain(&mut e);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Refused { content, .. }) if *content == big)));
    assert!(!out.iter().any(|o| matches!(o, Output::Remove { .. })));
}

#[test]
fn the_download_limit_gates_new_requests() {
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.max_requests_total = 64;
    c.transfer.min_requests_total = 64;
    c.transfer.max_requests_per_peer = 64;
    let mut e = Engine::new(c);
    e.set_limits(t(0), Limits { upload: None, download: Some(CHUNK as f64) });
    e.connected(t(0), 1);
    e.hello(t(0), 1, info("a"));
    e.offer(t(0), offer(16, true));
    e.manifest(t(0), &1, C, ManifestReply::Good { size: 16 * CHUNK });
    e.installed(t(0), C, Ok(Bitfield::new(16)));
    e.bitfield(t(0), &1, &C, Some(Bitfield::full(16)));
    let asked = drain(&mut e)
        .iter()
        .filter(|o| matches!(o, Output::Send { request: Request::Chunk { .. }, .. }))
        .count();
    assert_eq!(asked, 1, "one chunk's worth of the bucket, then wait");
    assert!(e.poll_timeout().is_some_and(|w| w > t(500)));
}

// ---- three engines on an in-memory network ------------------------------------------------------

/// A message in flight between two engines.
#[derive(Debug, Clone)]
enum Wire {
    Req { from: u32, to: u32, req: Request },
    Hello { from: u32, to: u32 },
    Manifest { from: u32, to: u32, good: bool },
    Bitfield { from: u32, to: u32, have: Option<Bitfield> },
    Chunk { from: u32, to: u32, upload: UploadId, index: u32, answer: Answer },
}

struct Mesh {
    engines: Vec<Engine<u32>>,
    wire: Vec<Wire>,
    now: Time,
    next_upload: UploadId,
    /// upload id -> (asker, uploader, index)
    uploads: BTreeMap<UploadId, (u32, u32, u32)>,
    /// chunks each engine's body wrote with Written::Ok
    written: Vec<BTreeSet<u32>>,
    answered: BTreeSet<UploadId>,
    corrupt: u32,
    slots: u32,
    max_total: u32,
}

impl Mesh {
    fn new(chunks: u32, slots: u32, max_total: u32) -> Self {
        let mut engines = Vec::new();
        for i in 0..3u32 {
            let role = if i == 0 { Role::Superseeder } else { Role::Cinema };
            let mut c = cfg(role, if i == 2 { "b" } else { "a" });
            c.transfer.upload_slots = slots;
            c.transfer.max_requests_total = max_total;
            c.transfer.min_requests_total = c.transfer.min_requests_total.min(max_total);
            c.transfer.endgame_chunks = 4;
            c.seed = u64::from(i);
            let mut e = Engine::new(c);
            e.record_kinds();
            if i == 0 {
                e.hold(Time::ZERO, C, Held { have: Bitfield::full(chunks), size: 0, pinned: true });
            }
            engines.push(e);
        }
        let mut m = Mesh {
            engines,
            wire: Vec::new(),
            now: Time::ZERO,
            next_upload: 0,
            uploads: BTreeMap::new(),
            written: vec![BTreeSet::new(); 3],
            answered: BTreeSet::new(),
            corrupt: 0,
            slots,
            max_total,
        };
        for a in 0..3u32 {
            for b in 0..3u32 {
                if a != b {
                    m.engines[a as usize].connected(Time::ZERO, b);
                }
            }
        }
        for i in 0..3 {
            m.engines[i].offer(Time::ZERO, offer(chunks, true));
        }
        for i in 0..3 {
            m.carry_out(i as u32);
        }
        m
    }

    fn carry_out(&mut self, x: u32) {
        while let Some(o) = self.engines[x as usize].poll_output() {
            match o {
                Output::Send { peer, request } => {
                    self.wire.push(Wire::Req { from: x, to: peer, req: request })
                }
                Output::Answer { upload, answer } => {
                    assert!(self.answered.insert(upload), "upload {upload} answered twice");
                    let (asker, _, index) = self.uploads[&upload];
                    self.wire.push(Wire::Chunk { from: x, to: asker, upload, index, answer });
                }
                Output::Read { upload, .. } => {
                    let now = self.now;
                    self.engines[x as usize].chunk_read(now, upload, Ok(CHUNK));
                }
                Output::Install { content } => {
                    let now = self.now;
                    let chunks = self.engines[x as usize].offers[&content].chunks;
                    self.engines[x as usize].installed(now, content, Ok(Bitfield::new(chunks)));
                }
                Output::Abort { upload } => {
                    // The bytes are on the wire; drop them as a transport that can abort would, and say so.
                    self.wire.retain(|w| !matches!(w, Wire::Chunk { upload: u, .. } if *u == upload));
                    let now = self.now;
                    self.engines[x as usize].upload_done(now, upload, false);
                }
                _ => {}
            }
        }
    }

    fn deliver(&mut self, w: Wire, rng: &mut ChaCha8Rng) {
        let now = self.now;
        match w {
            Wire::Req { from, to, req } => {
                let e = &mut self.engines[to as usize];
                match req {
                    Request::Hello => {
                        e.hello(now, from, info(if from == 2 { "b" } else { "a" }));
                        self.wire.push(Wire::Hello { from: to, to: from });
                    }
                    Request::Manifest { .. } => {
                        let good = e.held(&C).is_some();
                        self.wire.push(Wire::Manifest { from: to, to: from, good });
                    }
                    Request::Bitfield { content } => {
                        let have = e.bitfield_request(now, &from, &content);
                        self.wire.push(Wire::Bitfield { from: to, to: from, have });
                    }
                    Request::Chunk { content, index, rate } => {
                        self.next_upload += 1;
                        self.uploads.insert(self.next_upload, (from, to, index));
                        e.chunk_request(now, &from, self.next_upload, content, index, rate);
                    }
                    Request::Have { content, chunks } => e.have(now, &from, &content, &chunks),
                    Request::Cancel { content, index } => e.cancel(now, &from, &content, index),
                }
                self.carry_out(to);
            }
            Wire::Hello { from, to } => {
                self.engines[to as usize].hello(now, from, info(if from == 2 { "b" } else { "a" }));
                self.carry_out(to);
            }
            Wire::Manifest { from, to, good } => {
                let r = if good { ManifestReply::Good { size: 0 } } else { ManifestReply::Missing };
                self.engines[to as usize].manifest(now, &from, C, r);
                self.carry_out(to);
            }
            Wire::Bitfield { from, to, have } => {
                self.engines[to as usize].bitfield(now, &from, &C, have);
                self.carry_out(to);
            }
            Wire::Chunk { from, to, upload, index, answer } => {
                let keep =
                    self.engines[to as usize].chunk_reply(now, &from, &C, index, Reply::Answer(answer));
                if let Answer::Data { len, .. } = answer {
                    if keep {
                        // One answer in twenty is corrupt, one in twenty hits a local I/O error.
                        let result = match rng.gen_range(0..20) {
                            0 => {
                                self.corrupt += 1;
                                Written::Corrupt
                            }
                            1 => Written::Io("eio".into()),
                            _ => {
                                self.written[to as usize].insert(index);
                                Written::Ok
                            }
                        };
                        self.engines[to as usize].chunk_written(now, &from, &C, index, len, result);
                    }
                    self.engines[from as usize].upload_done(now, upload, true);
                    self.carry_out(from);
                }
                self.carry_out(to);
            }
        }
    }

    fn check(&self) {
        for (i, e) in self.engines.iter().enumerate() {
            assert!(e.uploads_active() <= self.slots, "engine {i}: upload slots exceeded");
            // The window, plus one request beyond it to the mesh's one superseeder (engine 0).
            assert!(e.in_flight() <= self.max_total as usize + 1, "engine {i}: in-flight bound exceeded");
            if i > 0 {
                if let Some(h) = e.held(&C) {
                    for c in 0..h.have.len() {
                        assert!(
                            !h.have.get(c) || self.written[i].contains(&c),
                            "engine {i}: chunk {c} marked unwritten"
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random delivery order and timing: bounds hold at every step, only written chunks are held, every
    /// chunk request is answered exactly once, and everyone completes.
    #[test]
    fn three_engines_reordering_network(seed in any::<u64>(), chunks in 1u32..40, slots in 1u32..4, total in 1u32..6) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = Mesh::new(chunks, slots, total);
        for _ in 0..200_000 {
            m.check();
            let done = (1..3).all(|i| m.engines[i].held(&C).is_some_and(|h| h.have.is_complete()));
            if done {
                break;
            }
            if !m.wire.is_empty() && rng.gen_bool(0.9) {
                let k = rng.gen_range(0..m.wire.len());
                let w = m.wire.swap_remove(k);
                m.deliver(w, &mut rng);
            } else {
                let next = (0..3).filter_map(|i| m.engines[i].poll_timeout()).min();
                let Some(next) = next else { continue };
                m.now = m.now.max(next);
                for i in 0..3 {
                    m.engines[i].handle_timeout(m.now);
                    m.carry_out(i as u32);
                }
            }
        }
        m.check();
        for i in 1..3 {
            prop_assert!(m.engines[i].held(&C).is_some_and(|h| h.have.is_complete()), "engine {} incomplete", i);
        }
        // Every request the uploaders accepted was answered (or its upload was cancelled and answered so).
        for id in m.uploads.keys() {
            prop_assert!(m.answered.contains(id), "upload {} never answered", id);
        }
    }
}

/// A downloader with a link of `link` bytes/s fetching `chunks` chunks from `peers` uploaders that each give
/// every request of it `slice` bytes/s (an uploader slicing its link among many downloaders): the
/// concurrent transfers share the link max-min, in steps of 10 ms. Returns when the fetch completed, seconds
/// of virtual time.
fn fetch_among_slow_uploaders(
    transfer: TransferConfig,
    peers: u32,
    slice: f64,
    link: f64,
    chunks: u32,
) -> f64 {
    let mut c = cfg(Role::Cinema, "a");
    c.transfer = transfer;
    let mut e = Engine::new(c);
    e.offer(t(0), offer(chunks, true));
    e.manifest(t(0), &1, C, ManifestReply::Good { size: u64::from(chunks) * CHUNK });
    e.installed(t(0), C, Ok(Bitfield::new(chunks)));
    for p in 1..=peers {
        e.connected(t(0), p);
        e.hello(t(0), p, info("a"));
        e.bitfield(t(0), &p, &C, Some(Bitfield::full(chunks)));
    }
    // (peer, chunk) -> bytes still to come.
    let mut flows: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    let (step, mut now) = (Duration::from_millis(10), t(0));
    for _ in 0..100_000 {
        for o in drain(&mut e) {
            match o {
                Output::Send { peer, request: Request::Chunk { index, .. } } => {
                    flows.insert((peer, index), CHUNK as f64);
                }
                Output::Send { peer, request: Request::Cancel { index, .. } } => {
                    flows.remove(&(peer, index));
                }
                Output::Event(Event::Complete { .. }) => return now.saturating_since(t(0)).as_secs_f64(),
                _ => {}
            }
        }
        now = now + step;
        let rate = slice.min(link / flows.len().max(1) as f64);
        let mut arrived = Vec::new();
        for (&k, left) in flows.iter_mut() {
            *left -= rate * step.as_secs_f64();
            if *left <= 0.0 {
                arrived.push(k);
            }
        }
        for (peer, index) in arrived {
            flows.remove(&(peer, index));
            let data = Reply::Answer(Answer::Data { len: CHUNK, load: 0.5 });
            if e.chunk_reply(now, &peer, &C, index, data) {
                e.chunk_written(now, &peer, &C, index, CHUNK, Written::Ok);
            }
        }
        if e.poll_timeout().is_some_and(|at| at <= now) {
            e.handle_timeout(now);
        }
    }
    panic!("the fetch did not complete in 1,000 s of virtual time");
}

#[test]
fn a_fast_downloader_among_slow_uploaders_keeps_its_link_busy() {
    // 24 uploaders giving each request 1 MB/s, a 16 MB/s link: 16 requests in flight fill it, and the
    // window starts at 4 (the node's defaults). The link alone needs 65.5 s for the 1,000 MiB.
    let bound = 1_000.0 * CHUNK as f64 / 16e6;
    let end = fetch_among_slow_uploaders(TransferConfig::default(), 24, 1e6, 16e6, 1_000);
    assert!(end <= 1.1 * bound, "done at {end:.1} s, the link's own time is {bound:.1} s");
    // The same with the window held at its floor: four slices of 1 MB/s, which is what the test guards.
    let fixed = TransferConfig { max_requests_total: 4, ..TransferConfig::default() };
    let end = fetch_among_slow_uploaders(fixed, 24, 1e6, 16e6, 1_000);
    assert!(end >= 3.0 * bound, "a window of 4 cannot fill the link, yet done at {end:.1} s");
}

#[test]
fn the_next_request_goes_out_when_a_chunk_arrives_not_when_it_is_written() {
    // One peer holding 3 chunks, asked 2 at once (the lone peer keeps its second request); each arrival
    // frees its slot at once.
    let mut e = fetching_from_one_peer(3);
    assert_eq!(TransferConfig::default().max_requests_per_peer, 2);
    let asked: Vec<u32> = rates_told(drain(&mut e)).into_iter().map(|a| a.0).collect();
    assert_eq!(asked.len(), 2);
    let data = || Reply::Answer(Answer::Data { len: CHUNK, load: 0.1 });
    assert!(e.chunk_reply(t(100), &1, &C, asked[0], data()));
    let third: Vec<u32> = rates_told(drain(&mut e)).into_iter().map(|a| a.0).collect();
    assert_eq!(third.len(), 1, "asked again before chunk {} is written", asked[0]);
    assert!(!asked.contains(&third[0]), "never a chunk in flight or being written");
    // Its write fails: the chunk is a candidate again, the only one, asked when the next slot frees.
    e.chunk_written(t(150), &1, &C, asked[0], CHUNK, Written::Io("disk".into()));
    assert!(rates_told(drain(&mut e)).is_empty(), "the peer's two slots are taken");
    assert!(e.chunk_reply(t(200), &1, &C, asked[1], data()));
    let again: Vec<u32> = rates_told(drain(&mut e)).into_iter().map(|a| a.0).collect();
    assert_eq!(again, vec![asked[0]], "the chunk whose write failed");
}

/// The chunks cinema `me` of ISP a (300 Mbit/s declared, identified) asks at once of cinema 9 of ISP b,
/// which holds all of C (1,000 chunks), beside cinema `mate` of ISP a, whose hello tells `mate_line`.
fn asked_across_the_border(me: u32, mate: u32, mate_line: Option<u64>) -> BTreeSet<u32> {
    let mut c = cfg(Role::Cinema, "a");
    c.transfer.downlink = Some(crate::config::Rate(37.5e6));
    c.policy.import_stripes = true;
    (c.transfer.min_requests_total, c.transfer.max_requests_total, c.transfer.max_requests_per_peer) =
        (64, 64, 64);
    let mut e = Engine::new(c);
    e.identify(&me);
    e.connected(t(0), mate);
    e.hello(t(0), mate, cinema_with_line(mate_line));
    e.connected(t(0), 9);
    e.hello(t(0), 9, info("b"));
    e.offer(t(0), offer(1000, true));
    e.manifest(t(0), &9, C, ManifestReply::Good { size: 1000 * CHUNK });
    e.installed(t(0), C, Ok(Bitfield::new(1000)));
    e.bitfield(t(0), &mate, &C, Some(Bitfield::new(1000)));
    e.bitfield(t(0), &9, &C, Some(Bitfield::full(1000)));
    chunk_requests(&mut e, 9).into_iter().collect()
}

#[test]
fn cinemas_of_one_isp_import_disjoint_stripes_drawn_from_the_lines_their_hellos_tell() {
    // Two 300 Mbit/s cinemas of ISP a, each asking 64 chunks of a cinema of ISP b at once: with the
    // mate's line told, each asks only for its own stripe, so no chunk crosses the border twice.
    let (a, b) =
        (asked_across_the_border(1, 2, Some(37_500_000)), asked_across_the_border(2, 1, Some(37_500_000)));
    assert_eq!((a.len(), b.len()), (64, 64));
    assert!(a.is_disjoint(&b), "{:?}", a.intersection(&b).collect::<Vec<_>>());
    // A mate that tells no line is no importer: both import every gap, and the same chunks are asked
    // twice (64 of 1,000 each, drawn at random: about four in common).
    let (a, b) = (asked_across_the_border(1, 2, None), asked_across_the_border(2, 1, None));
    assert!(!a.is_disjoint(&b));
}
