//! What the lab does to its daemons and when: the cinemas' first start (the simulator's own
//! [`churn::first_online`], so the same cinemas are late for a seed), then, with `churn.session_mean`,
//! sessions and offline periods drawn from the same distributions as the simulator's (a separate RNG
//! stream: the realisation differs), each departure a SIGTERM or, with probability `churn.crash`, a SIGKILL.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::churn::{self, exp};
use crate::scenario::Scenario;

/// Most steps planned for one cinema (bounds a plan with very short sessions).
pub const MAX_STEPS_PER_NODE: usize = 1000;

/// What happens to a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start it (or start it again on its data directory).
    Start,
    /// Stop it: SIGTERM, or SIGKILL for a crash.
    Stop {
        /// SIGKILL instead of SIGTERM.
        crash: bool,
    },
}

/// One step of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Seconds after the lab's time 0 (the simulator's time 0; films are published at their `publish`).
    pub at: f64,
    /// Node index (cinemas first, as in the simulator's topology).
    pub node: usize,
    /// What to do.
    pub action: Action,
}

/// The plan up to `horizon` seconds, sorted by time. `rng` is the simulator's RNG after building the
/// world ([`crate::engine::world`]), so first starts match the simulator's for the seed.
pub fn plan(sc: &Scenario, seed: u64, rng: &mut ChaCha8Rng, horizon: f64) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut sessions = ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_625f_6368_7572);
    for (node, first) in churn::first_online(sc, rng) {
        let node = node as usize;
        let mut at = first.as_secs_f64();
        steps.push(Step { at, node, action: Action::Start });
        let Some(mean) = sc.churn.session_mean else { continue };
        for _ in 0..MAX_STEPS_PER_NODE / 2 {
            at += exp(&mut sessions, mean).as_secs_f64();
            if at >= horizon {
                break;
            }
            let crash = sessions.gen_bool(sc.churn.crash);
            steps.push(Step { at, node, action: Action::Stop { crash } });
            at += exp(&mut sessions, sc.churn.offline_mean)
                .as_secs_f64()
                .max(Duration::from_millis(100).as_secs_f64());
            if at >= horizon {
                break;
            }
            steps.push(Step { at, node, action: Action::Start });
        }
    }
    steps.sort_by(|a, b| a.at.total_cmp(&b.at).then(a.node.cmp(&b.node)));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(sets: &[&str]) -> Scenario {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Scenario::parse(crate::testing::MINI, "mini", &sets).unwrap()
    }

    #[test]
    fn first_starts_are_the_simulator_s() {
        let sc = scenario(&["churn.late=1", "churn.late_join=20s"]);
        let (_, _, mut rng) = crate::engine::world(&sc, 7);
        let p = plan(&sc, 7, &mut rng, 600.0);
        assert_eq!(p.len(), 4, "no sessions: one start per cinema");
        assert!(p.iter().all(|s| s.action == Action::Start));
        assert_eq!(p.iter().filter(|s| s.at == 20.0).count(), 1);
        // The late cinema is the one the engine brings up late.
        let (_, _, mut rng) = crate::engine::world(&sc, 7);
        let late =
            churn::first_online(&sc, &mut rng).into_iter().find(|(_, t)| t.as_secs_f64() == 20.0).unwrap();
        assert_eq!(p.last().unwrap().node, late.0 as usize);
    }

    #[test]
    fn sessions_alternate_and_stay_in_the_horizon() {
        let sc = scenario(&["churn.session_mean=30s", "churn.offline_mean=10s", "churn.crash=0.5"]);
        let (_, _, mut rng) = crate::engine::world(&sc, 1);
        let p = plan(&sc, 1, &mut rng, 300.0);
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(p.iter().all(|s| s.at < 300.0));
        for node in 0..4 {
            let mine: Vec<_> = p.iter().filter(|s| s.node == node).collect();
            assert_eq!(mine[0].action, Action::Start);
            for w in mine.windows(2) {
                assert_ne!(w[0].action == Action::Start, w[1].action == Action::Start, "{mine:?}");
            }
        }
        let stops = p.iter().filter(|s| matches!(s.action, Action::Stop { .. })).count();
        let crashes = p.iter().filter(|s| s.action == Action::Stop { crash: true }).count();
        assert!(stops >= 8 && crashes > 0 && crashes < stops, "{stops} stops, {crashes} crashes");
    }
}
