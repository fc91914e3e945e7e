//! When each cinema first comes online: late joiners, cinemas offline at the start. Shared by the
//! simulator's engine and the lab, so both bodies bring the same cinemas up at the same times for a seed.
//! Later sessions (`churn.session_mean`) are drawn as each node comes and goes.

use std::time::Duration;

use cinemesh_core::Time;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::Scenario;
use crate::topology::NodeIx;

/// An exponential draw with the given mean.
pub fn exp(rng: &mut ChaCha8Rng, mean: Duration) -> Duration {
    let u: f64 = rng.gen_range(0.0..1.0);
    Duration::from_secs_f64(-(1.0 - u).ln() * mean.as_secs_f64())
}

/// Every cinema with the time it first comes online, in a random order drawn from `rng` (the order the
/// engine queues them in): the `churn.late` first join at the first publish + `churn.late_join`, each
/// other one with probability `churn.offline_fraction` after an exponential offline period, else at 0.
pub fn first_online(sc: &Scenario, rng: &mut ChaCha8Rng) -> Vec<(NodeIx, Time)> {
    let churn = &sc.churn;
    let mut order: Vec<usize> = (0..sc.cinemas as usize).collect();
    order.shuffle(rng);
    let late = churn.late as usize;
    let first_publish = sc.film.iter().map(|f| f.publish).min().unwrap_or_default();
    order
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let at = if k < late {
                Time::from_duration(first_publish + churn.late_join)
            } else if rng.gen_bool(churn.offline_fraction) {
                Time::from_duration(exp(rng, churn.offline_mean))
            } else {
                Time::ZERO
            };
            (i as NodeIx, at)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn late_joiners_join_after_the_first_publish() {
        let sc = Scenario::parse(
            crate::testing::MINI,
            "mini",
            &["churn.late=2".to_owned(), "churn.late_join=30s".to_owned()],
        )
        .unwrap();
        let plan = first_online(&sc, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(plan.len(), 4);
        let late: Vec<_> =
            plan.iter().filter(|(_, t)| *t == Time::from_duration(Duration::from_secs(30))).collect();
        assert_eq!(late.len(), 2);
        assert_eq!(plan.iter().filter(|(_, t)| *t == Time::ZERO).count(), 2);
        assert_eq!(
            plan,
            first_online(&sc, &mut ChaCha8Rng::seed_from_u64(1)),
            "the same seed, the same plan"
        );
    }
}
