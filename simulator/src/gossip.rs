//! A gossipsub model for one catalogue entry: mesh of `mesh_n` peers kept within
//! `mesh_n_low..=mesh_n_high`, eager push on the mesh with per-link latency, and lazy IHAVE/IWANT to
//! `gossip_lazy` non-mesh peers at each heartbeat for messages seen in the last 3 heartbeats
//! (gossipsub's `history_gossip`). Counts delivery time and duplicate deliveries per node.
//!
//! Nodes offline at publish are not reached here: they catch up by anti-entropy when they come back (the
//! engine models that).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use cinemesh_core::config::GossipConfig;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::topology::{NodeIx, Topology};

/// Heartbeats of history offered in IHAVE (gossipsub's default `history_gossip`).
const HISTORY_GOSSIP: u64 = 3;
/// Heartbeats after which the model stops even if some node was not reached.
const MAX_HEARTBEATS: u64 = 1000;

/// What the dissemination of one entry gave.
#[derive(Debug, Clone)]
pub struct Dissemination {
    /// Delivery time after publish (microseconds), per node; `None` = not reached (offline).
    pub delivered: Vec<Option<u64>>,
    /// Copies received beyond the first, per node.
    pub duplicates: Vec<u32>,
    /// Mesh degree per node.
    pub mesh_degree: Vec<u32>,
}

/// Builds a mesh among the `online` nodes over the connection graph.
pub fn mesh(
    topo: &Topology,
    online: &[bool],
    cfg: &GossipConfig,
    rng: &mut ChaCha8Rng,
) -> Vec<BTreeSet<NodeIx>> {
    let n = topo.len();
    let mut mesh: Vec<BTreeSet<NodeIx>> = vec![BTreeSet::new(); n];
    let cands = |i: usize| -> Vec<NodeIx> {
        topo.neighbours[i].iter().copied().filter(|&j| online[j as usize]).collect()
    };
    // Graft random candidates until `i` has mesh_n peers (links are symmetric).
    let graft = |mesh: &mut Vec<BTreeSet<NodeIx>>, i: usize, rng: &mut ChaCha8Rng| {
        let mut c = cands(i);
        c.shuffle(rng);
        for j in c {
            if mesh[i].len() >= cfg.mesh_n {
                break;
            }
            mesh[i].insert(j);
            mesh[j as usize].insert(i as NodeIx);
        }
    };
    for i in (0..n).filter(|&i| online[i]) {
        graft(&mut mesh, i, rng);
    }
    // Heartbeat maintenance: prune above mesh_n_high down to mesh_n, graft below mesh_n_low.
    for i in 0..n {
        if mesh[i].len() > cfg.mesh_n_high {
            let mut peers: Vec<NodeIx> = mesh[i].iter().copied().collect();
            peers.shuffle(rng);
            for j in peers.into_iter().skip(cfg.mesh_n) {
                mesh[i].remove(&j);
                mesh[j as usize].remove(&(i as NodeIx));
            }
        }
    }
    for i in (0..n).filter(|&i| online[i]) {
        if mesh[i].len() < cfg.mesh_n_low {
            graft(&mut mesh, i, rng);
        }
    }
    mesh
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The message reaches `to` (from `from`).
    Deliver { to: NodeIx, from: NodeIx },
    /// `to` hears IHAVE from `from`.
    IHave { to: NodeIx, from: NodeIx },
    /// `node`'s heartbeat number `k`.
    Heartbeat { node: NodeIx, k: u64 },
}

/// Disseminates one entry published by `origin` at time 0.
pub fn disseminate(
    topo: &Topology,
    online: &[bool],
    origin: NodeIx,
    cfg: &GossipConfig,
    rng: &mut ChaCha8Rng,
) -> Dissemination {
    let n = topo.len();
    let mesh = mesh(topo, online, cfg, rng);
    let hb = cfg.heartbeat.as_micros().max(1) as u64;
    let mut delivered: Vec<Option<u64>> = vec![None; n];
    let mut duplicates = vec![0u32; n];
    let mut wanted = vec![false; n];
    let mut heap: BinaryHeap<Reverse<(u64, u64, Ev)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: u64, ev: Ev| {
        seq += 1;
        heap.push(Reverse((t, seq, ev)));
    };
    for i in (0..n).filter(|&i| online[i]) {
        let phase = rng.gen_range(0..hb);
        push(&mut heap, phase, Ev::Heartbeat { node: i as NodeIx, k: 0 });
    }
    push(&mut heap, 0, Ev::Deliver { to: origin, from: origin });
    let targets = online.iter().filter(|&&o| o).count();
    let mut reached = 0;
    while let Some(Reverse((t, _, ev))) = heap.pop() {
        match ev {
            Ev::Deliver { to, from } => {
                let ti = to as usize;
                if delivered[ti].is_some() {
                    duplicates[ti] += 1;
                    continue;
                }
                delivered[ti] = Some(t);
                reached += 1;
                for &p in &mesh[ti] {
                    if p != from {
                        push(&mut heap, t + topo.latency(to, p), Ev::Deliver { to: p, from: to });
                    }
                }
            }
            Ev::IHave { to, from } => {
                let ti = to as usize;
                if delivered[ti].is_none() && !wanted[ti] {
                    wanted[ti] = true;
                    push(&mut heap, t + 2 * topo.latency(to, from), Ev::Deliver { to, from });
                }
            }
            Ev::Heartbeat { node, k } => {
                if reached >= targets || k >= MAX_HEARTBEATS {
                    continue;
                }
                let ni = node as usize;
                if let Some(at) = delivered[ni] {
                    if t.saturating_sub(at) <= HISTORY_GOSSIP * hb {
                        let mut lazy: Vec<NodeIx> = topo.neighbours[ni]
                            .iter()
                            .copied()
                            .filter(|&j| online[j as usize] && !mesh[ni].contains(&j))
                            .collect();
                        lazy.shuffle(rng);
                        for &p in lazy.iter().take(cfg.gossip_lazy) {
                            push(&mut heap, t + topo.latency(node, p), Ev::IHave { to: p, from: node });
                        }
                    }
                }
                push(&mut heap, t + hb, Ev::Heartbeat { node, k: k + 1 });
            }
        }
    }
    let mesh_degree = mesh.iter().map(|m| m.len() as u32).collect();
    Dissemination { delivered, duplicates, mesh_degree }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn reaches_every_online_node_with_bounded_mesh() {
        let s = crate::scenario::Scenario::parse(crate::testing::MINI, "mini", &["cinemas=200".to_owned()])
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let topo = Topology::build(&s, &mut rng);
        let mut online = vec![true; topo.len()];
        online[5] = false;
        let d = disseminate(&topo, &online, 200, &s.gossip, &mut rng);
        for (i, up) in online.iter().enumerate() {
            assert_eq!(d.delivered[i].is_some(), *up, "node {i}");
        }
        assert!(d.mesh_degree.iter().all(|&m| m <= s.gossip.mesh_n_high as u32));
        // Eager push on a mesh of degree ~6 yields duplicates; the total is bounded by the mesh edges.
        let dups: u32 = d.duplicates.iter().sum();
        let edges: u32 = d.mesh_degree.iter().sum();
        assert!(dups > 0 && dups <= edges, "{dups} duplicates, {edges} mesh edge ends");
        // A few hops of ~8-25 ms, well under a second.
        assert!(d.delivered.iter().flatten().all(|&t| t < 1_000_000));
    }
}
