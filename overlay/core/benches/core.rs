//! Benchmarks of the sans-io core: scheduler decisions per second.
//!
//! `cargo bench -p cinemesh-overlay --bench core`. Each iteration downloads a whole content: the loop fills
//! the request budget with `poll_output`, answers the oldest request with `chunk_received`, and repeats, so
//! one iteration is `chunks` decisions (plus their answers); criterion reports them as elements/s.

use std::collections::VecDeque;
use std::time::Duration;

use cinemesh_core::config::{PolicyConfig, TransferConfig};
use cinemesh_core::{Bitfield, ContentSpec, Locality, Output, Scheduler};
use cinemesh_core::{ContentId, Time};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHUNK: u64 = 4 << 20;

/// A scheduler wanting one content of `chunks` chunks from `peers` peers; peer `p` holds each chunk with
/// probability `share(p)`; peers on four ISPs, the local node on the first.
fn setup(peers: u32, chunks: u32, share: impl Fn(u32) -> f64) -> Scheduler<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let local = Locality::new("isp-0", "site-0");
    let mut s = Scheduler::new(&TransferConfig::default(), &PolicyConfig::default(), local, 1);
    let id = ContentId([1; 32]);
    s.add_content(Time::ZERO, ContentSpec { id, chunks, deadline: None }, Bitfield::new(chunks));
    for p in 0..peers {
        s.peer_joined(Time::ZERO, p, Locality::new(format!("isp-{}", p % 4), format!("site-{p}")));
        let mut b = Bitfield::new(chunks);
        let q = share(p);
        for i in 0..chunks {
            if rng.gen_bool(q) {
                b.set(i);
            }
        }
        s.peer_bitfield(Time::ZERO, &p, &id, b);
    }
    s
}

/// Downloads everything; returns the number of requests made.
fn download(mut s: Scheduler<u32>) -> u64 {
    let mut now = Time::ZERO;
    let mut outstanding = VecDeque::new();
    loop {
        while let Some(o) = s.poll_output(now) {
            match o {
                Output::Request { peer, content, chunk } => outstanding.push_back((peer, content, chunk)),
                Output::Complete { .. } => return s.stats().requests,
                Output::Cancel { .. } | Output::Penalise { .. } => {}
            }
        }
        let Some((peer, content, chunk)) = outstanding.pop_front() else { return s.stats().requests };
        now = now + Duration::from_micros(300 + u64::from(peer % 7) * 100);
        s.chunk_received(now, &peer, &content, chunk, CHUNK);
    }
}

fn scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));

    let chunks = 50_000;
    g.throughput(Throughput::Elements(u64::from(chunks)));
    g.bench_function("decisions/350 peers x 50000 chunks, 50% each", |b| {
        b.iter_batched(|| setup(350, chunks, |_| 0.5), download, BatchSize::LargeInput)
    });
    // Simulator-like: one seeder holds everything, the other peers a sliver each, so most picks for them
    // miss the rare buckets and take the word-parallel path.
    g.bench_function("decisions/1 seeder + 349 peers at 1%, 50000 chunks", |b| {
        b.iter_batched(
            || setup(350, chunks, |p| if p == 0 { 1.0 } else { 0.01 }),
            download,
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(350));
    g.bench_function("setup/350 peer bitfields of 50000 chunks", |b| b.iter(|| setup(350, chunks, |_| 0.5)));
    g.finish();
}

criterion_group!(benches, scheduler);
criterion_main!(benches);
