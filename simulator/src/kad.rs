//! A Kademlia provider-lookup model: a node must find providers of a content before downloading it.
//!
//! Rounds ~ `log2(N) / log2(k)` (each round narrows the XOR distance by about a bucket's worth) plus one
//! round asking the closest nodes for provider records; the fractional part becomes a Bernoulli extra
//! round. Each round sends `alpha` requests in parallel to random nodes and goes on with the first answer:
//! it lasts the smallest of `alpha` round trips.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::topology::{NodeIx, Topology};

/// One lookup's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// Rounds of requests.
    pub hops: u32,
    /// Duration, microseconds.
    pub micros: u64,
}

/// Models a provider lookup by `node` in a DHT of all nodes of `topo`.
pub fn lookup(topo: &Topology, node: NodeIx, k: u32, alpha: u32, rng: &mut ChaCha8Rng) -> Lookup {
    let n = topo.len().max(2) as f64;
    let x = n.log2() / f64::from(k.max(2)).log2() + 1.0;
    let mut hops = x.floor() as u32;
    if rng.gen_bool((x - x.floor()).clamp(0.0, 1.0)) {
        hops += 1;
    }
    let hops = hops.max(1);
    let mut micros = 0;
    for _ in 0..hops {
        let fastest = (0..alpha.max(1))
            .map(|_| {
                let peer = rng.gen_range(0..topo.len()) as NodeIx;
                2 * topo.latency(node, peer)
            })
            .min()
            .unwrap_or(0);
        micros += fastest;
    }
    Lookup { hops, micros }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hops_grow_with_log_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mini = crate::testing::MINI;
        let small = crate::scenario::Scenario::parse(mini, "m", &["cinemas=19".to_owned()]).unwrap();
        let big = crate::scenario::Scenario::parse(mini, "m", &["cinemas=9999".to_owned()]).unwrap();
        let ts = Topology::build(&small, &mut rng);
        let tb = Topology::build(&big, &mut rng);
        let mean = |t: &Topology, rng: &mut ChaCha8Rng| {
            (0..200).map(|_| lookup(t, 0, 20, 3, rng).hops as f64).sum::<f64>() / 200.0
        };
        let (hs, hb) = (mean(&ts, &mut rng), mean(&tb, &mut rng));
        // N = 20: log2(20)/log2(20) + 1 = 2 rounds; N = 10,000: 13.3 / 4.32 + 1 = 4.07 rounds.
        assert!((hs - 2.0).abs() < 0.01, "{hs}");
        assert!((hb - 4.07).abs() < 0.1, "{hb}");
        let l = lookup(&ts, 0, 20, 3, &mut rng);
        assert!(l.micros >= u64::from(l.hops) * 2 * 5_600, "{l:?}");
    }
}
