//! The simulated world built from a scenario: nodes (cinemas, then superseeders) with their ISP, access
//! class and link rates, who is connected to whom, and the one-way latency of each pair.

use std::collections::BTreeSet;

use cinemesh_core::Locality;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::Scenario;

/// Index of a node: cinemas are `0..cinemas`, superseeders follow.
pub type NodeIx = u32;

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Display name (`cinema-17`, `seeder-2`).
    pub name: String,
    /// Index into [`Topology::isps`].
    pub isp: u16,
    /// Access class name (`seeder` for superseeders).
    pub class: String,
    /// Upload rate, bytes/s.
    pub up: f64,
    /// Download rate, bytes/s.
    pub down: f64,
    /// True for a superseeder.
    pub seeder: bool,
    /// What the scheduler is told about this node.
    pub locality: Locality,
}

/// The least relative spread of a pair's latency, whatever `latency.jitter` says: no two real paths or
/// hosts keep time alike, and with pairs alike the simulated requests of alike cinemas lock-step (they start
/// and end together at a far seeder, which then idles a round trip per round). lab-8 with the origin 25 ms
/// away, seeds 1-4: 0.869-0.901 of the bound at a spread of 0, 0.876-0.911 at 0.01-0.05, 0.904-0.910 at 0.1,
/// 0.912 at 0.2; real daemons 0.909-0.910 (docs/benchmarks.md, "The least path spread"). Scenarios with
/// `jitter >= 0.1` are unchanged.
pub const PATH_SPREAD: f64 = 0.1;

/// Cinemas are named this and their index (`cinema-0`), superseeders [`SEEDER_PREFIX`] and theirs.
pub const CINEMA_PREFIX: &str = "cinema-";
/// See [`CINEMA_PREFIX`].
pub const SEEDER_PREFIX: &str = "seeder-";

/// Nodes, ISPs and the connection graph.
#[derive(Debug, Clone)]
pub struct Topology {
    /// All nodes.
    pub nodes: Vec<Node>,
    /// ISP names, in scenario order.
    pub isps: Vec<String>,
    /// Sorted neighbour lists (undirected graph).
    pub neighbours: Vec<Vec<NodeIx>>,
    /// Index of the first superseeder.
    pub first_seeder: NodeIx,
    intra_us: f64,
    inter_us: f64,
    jitter: f64,
    salt: u64,
}

/// SplitMix64: a fixed hash for per-pair values (the core's finish after SplitMix64's step).
pub fn mix64(x: u64) -> u64 {
    cinemesh_core::scheduler::mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// Splits `n` items by `shares` with the largest-remainder method (deterministic, sums to `n`).
pub fn apportion(n: u32, shares: &[f64]) -> Vec<u32> {
    let total: f64 = shares.iter().sum();
    if total <= 0.0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<f64> = shares.iter().map(|s| s / total * n as f64).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut left = n - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b))
    });
    for i in order.into_iter().cycle().take(shares.len() * 2) {
        if left == 0 {
            break;
        }
        if shares[i] > 0.0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

impl Topology {
    /// Builds the world for `scenario` with `rng`.
    pub fn build(scenario: &Scenario, rng: &mut ChaCha8Rng) -> Topology {
        let isps: Vec<String> = scenario.isp.iter().map(|i| i.name.clone()).collect();
        let per_isp = apportion(scenario.cinemas, &scenario.isp.iter().map(|i| i.share).collect::<Vec<_>>());
        let mut slots: Vec<(u16, String)> = Vec::with_capacity(scenario.cinemas as usize);
        for (ii, (isp, &n)) in scenario.isp.iter().zip(&per_isp).enumerate() {
            let classes: Vec<&String> = isp.mix.keys().collect();
            let counts = apportion(n, &isp.mix.values().copied().collect::<Vec<_>>());
            for (class, &c) in classes.iter().zip(&counts) {
                slots.extend((0..c).map(|_| (ii as u16, (*class).clone())));
            }
        }
        slots.shuffle(rng);
        let draw = |rng: &mut ChaCha8Rng, lo: f64, hi: Option<f64>| match hi {
            Some(hi) if hi > lo => rng.gen_range(lo..=hi),
            _ => lo,
        };
        let mut nodes = Vec::with_capacity(scenario.nodes() as usize);
        for (i, (isp, class)) in slots.into_iter().enumerate() {
            let a = &scenario.access[&class];
            let mut up = draw(rng, a.up.0, a.up_max.map(|r| r.0));
            let mut down = draw(rng, a.down.0, a.down_max.map(|r| r.0));
            if let Some(l) = scenario.transfer.upload_limit {
                up = up.min(l.0);
            }
            if let Some(l) = scenario.transfer.download_limit {
                down = down.min(l.0);
            }
            let name = format!("{CINEMA_PREFIX}{i}");
            let locality = Locality::new(isps[isp as usize].clone(), name.clone());
            nodes.push(Node { name, isp, class, up, down, seeder: false, locality });
        }
        let seeder_isp = isps.iter().position(|n| *n == scenario.seeders.isp).unwrap_or(0) as u16;
        for s in 0..scenario.seeders.count {
            let name = format!("{SEEDER_PREFIX}{s}");
            let locality = Locality::new(isps[seeder_isp as usize].clone(), name.clone());
            nodes.push(Node {
                name,
                isp: seeder_isp,
                class: "seeder".to_owned(),
                up: scenario.seeders.up.0,
                down: scenario.seeders.down.0,
                seeder: true,
                locality,
            });
        }
        let neighbours = Self::connect(scenario, &nodes, rng);
        let l = &scenario.latency;
        Topology {
            nodes,
            isps,
            neighbours,
            first_seeder: scenario.cinemas,
            intra_us: l.intra_isp.as_micros() as f64,
            inter_us: l.inter_isp.as_micros() as f64,
            jitter: l.jitter,
            salt: rng.gen(),
        }
    }

    /// A ring through all cinemas in random order (connectivity), then random same-ISP and other links up
    /// to `peers.degree` each (no node beyond twice that), then `peers.seeder_links` superseeders each.
    fn connect(scenario: &Scenario, nodes: &[Node], rng: &mut ChaCha8Rng) -> Vec<Vec<NodeIx>> {
        let c = scenario.cinemas as usize;
        let mut adj: Vec<BTreeSet<NodeIx>> = vec![BTreeSet::new(); nodes.len()];
        let link = |adj: &mut Vec<BTreeSet<NodeIx>>, a: usize, b: usize| {
            if a != b {
                adj[a].insert(b as NodeIx);
                adj[b].insert(a as NodeIx);
            }
        };
        let mut order: Vec<usize> = (0..c).collect();
        order.shuffle(rng);
        if c > 1 {
            for w in 0..c {
                link(&mut adj, order[w], order[(w + 1) % c]);
            }
        }
        let mut by_isp: Vec<Vec<usize>> = vec![Vec::new(); scenario.isp.len()];
        for (i, n) in nodes[..c].iter().enumerate() {
            by_isp[n.isp as usize].push(i);
        }
        let degree = (scenario.peers.degree as usize).min(c.saturating_sub(1));
        let cap = degree * 2;
        let want_same = (degree as f64 * scenario.peers.same_isp).round() as usize;
        for &i in &order {
            let own = &by_isp[nodes[i].isp as usize];
            let mut same =
                adj[i].iter().filter(|&&j| (j as usize) < c && nodes[j as usize].isp == nodes[i].isp).count();
            for _ in 0..want_same * 4 {
                if same >= want_same.min(own.len().saturating_sub(1)) || adj[i].len() >= degree {
                    break;
                }
                let j = own[rng.gen_range(0..own.len())];
                if j != i && !adj[i].contains(&(j as NodeIx)) && adj[j].len() < cap {
                    link(&mut adj, i, j);
                    same += 1;
                }
            }
            for _ in 0..degree * 4 {
                if adj[i].len() >= degree {
                    break;
                }
                let j = rng.gen_range(0..c);
                if j != i && adj[j].len() < cap {
                    link(&mut adj, i, j);
                }
            }
        }
        let seeders = nodes.len() - c;
        let links = (scenario.peers.seeder_links as usize).min(seeders);
        for i in 0..c {
            let mut picked = rand::seq::index::sample(rng, seeders, links).into_vec();
            picked.sort_unstable();
            for s in picked {
                link(&mut adj, i, c + s);
            }
        }
        // Superseeders know each other.
        for a in c..nodes.len() {
            for b in a + 1..nodes.len() {
                link(&mut adj, a, b);
            }
        }
        adj.into_iter().map(|s| s.into_iter().collect()).collect()
    }

    /// One-way latency between two nodes, microseconds: the ISP base within ±jitter (at least
    /// ±[`PATH_SPREAD`]), fixed per pair.
    pub fn latency(&self, a: NodeIx, b: NodeIx) -> u64 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let base = if self.nodes[a as usize].isp == self.nodes[b as usize].isp {
            self.intra_us
        } else {
            self.inter_us
        };
        let h = mix64(self.salt ^ ((lo as u64) << 32 | hi as u64));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let spread = self.jitter.max(PATH_SPREAD);
        (base * (1.0 + spread * (2.0 * u - 1.0))).max(1.0) as u64
    }

    /// True when `a` and `b` sit in different ISPs.
    pub fn crosses(&self, a: NodeIx, b: NodeIx) -> bool {
        self.nodes[a as usize].isp != self.nodes[b as usize].isp
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there is no node at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn apportion_sums_and_respects_zero_shares() {
        assert_eq!(apportion(10, &[0.5, 0.5]), vec![5, 5]);
        assert_eq!(apportion(10, &[0.34, 0.33, 0.33]).iter().sum::<u32>(), 10);
        assert_eq!(apportion(7, &[0.0, 1.0]), vec![0, 7]);
    }

    #[test]
    fn graph_is_connected_symmetric_and_bounded() {
        let s = crate::scenario::Scenario::parse(crate::testing::MINI, "mini", &["cinemas=60".to_owned()])
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = Topology::build(&s, &mut rng);
        assert_eq!(t.len(), 61);
        let mut seen = vec![false; t.len()];
        let mut stack = vec![0u32];
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n as usize], true) {
                continue;
            }
            for &m in &t.neighbours[n as usize] {
                assert!(t.neighbours[m as usize].contains(&n));
                stack.push(m);
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert!(t.neighbours[..60].iter().all(|n| n.len() <= 2 * 40 + 1));
        assert_eq!(t.latency(3, 7), t.latency(7, 3));
    }

    #[test]
    fn pairs_differ_by_at_least_the_path_spread_and_at_most_the_jitter() {
        let lat = |jitter: f64| {
            let sets = ["cinemas=40".to_owned(), format!("latency.jitter={jitter}")];
            let s = crate::scenario::Scenario::parse(crate::testing::MINI, "mini", &sets).unwrap();
            let t = Topology::build(&s, &mut ChaCha8Rng::seed_from_u64(1));
            let base = |a: usize, b: usize| {
                let l = if t.nodes[a].isp == t.nodes[b].isp {
                    &s.latency.intra_isp
                } else {
                    &s.latency.inter_isp
                };
                l.as_micros() as f64
            };
            let mut rel = Vec::new();
            for a in 0..t.len() {
                for b in a + 1..t.len() {
                    rel.push(t.latency(a as NodeIx, b as NodeIx) as f64 / base(a, b) - 1.0);
                }
            }
            rel
        };
        for (jitter, spread) in [(0.0, PATH_SPREAD), (0.3, 0.3)] {
            let rel = lat(jitter);
            let (lo, hi) = rel.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
            // Microseconds are whole: allow one in the base.
            assert!(lo >= -spread - 1e-3 && hi <= spread + 1e-3, "jitter {jitter}: {lo}..{hi}");
            assert!(hi - lo > spread, "jitter {jitter}: pairs spread over {lo}..{hi} only");
        }
    }
}
