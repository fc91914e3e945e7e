//! `cinemesh-sim locality`: what locality costs each point of the completion CDF.
//!
//! Issue 10 asks that locality never slow a download: at no point of the completion CDF may a run be more
//! than 5% slower than the same build with locality turned off. The command runs a scenario twice with
//! the same seed (so the same topology, targets and churn): as given, and locality-blind ([`BLIND`]: the
//! site and ISP weights at 0 and `policy.local_first` off). Both sorted completion curves are then compared
//! rank by rank: `T_local(k) / T_blind(k)`, each time counted from when that cinema came online, which is
//! also the ratio of the two runs' point slowdowns `T(k)/B(k)` (the bound is the same topology's). A point
//! whose ratio exceeds `1 + tolerance` is a point where locality slowed the fleet; the transit ratios say
//! what locality saved in exchange.

use serde::Serialize;

use crate::bound::Slowdown;
use crate::engine::Outcome;
use crate::error::Error;
use crate::report::{self, Report};
use crate::{simulate, Scenario};

/// What [`blind`] changes, as `--set` would say it.
pub const BLIND: &str = "policy.same_site=0 policy.same_isp=0 policy.local_first=false";

/// The scenario with locality turned off: no site or ISP weight in a peer's score and no local first;
/// every other setting as given.
pub fn blind(sc: &Scenario) -> Scenario {
    Scenario { policy: sc.policy.without_locality(), ..sc.clone() }
}

/// The default tolerance: issue 10's "no CDF point more than 5% slower".
pub const TOLERANCE: f64 = 0.05;

/// Both runs of a scenario and their comparison.
#[derive(Debug)]
pub struct Runs {
    /// The run as given.
    pub local: (Outcome, Report),
    /// The locality-blind scenario ([`blind`]).
    pub blind_scenario: Scenario,
    /// Its run.
    pub blind: (Outcome, Report),
    /// The comparison of film 0's completion curves (with twins, of each side's mean curve).
    pub check: Check,
    /// With twins, how far runs of the same side differ from each other.
    pub noise: Option<Noise>,
    /// Every run's transit ratio, as given and locality-blind (one each without twins).
    pub transit: (Vec<f64>, Vec<f64>),
}

/// How far single points move between runs of one side that differ only in `sim.engine_salt` (the twins):
/// the largest ratio between two such runs at any point, either way, and the most points beyond the
/// tolerance in any one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Noise {
    /// Runs per side.
    pub runs: usize,
    /// The largest ratio between two runs of the same side at one point.
    pub worst: f64,
    /// The most points beyond the tolerance between two runs of the same side.
    pub slowed: usize,
}

/// At most this many twins per side (each twin is one more run of each side).
pub const MAX_TWINS: u32 = 8;

/// Runs `sc` as given and [`blind`] with the same seed, on two threads, and compares film 0's completion
/// curves. With `twins` (at most [`MAX_TWINS`]), each side also runs `twins` more times with
/// `sim.engine_salt` 1..=twins (the same topology, the engines' choices drawn again): the check compares
/// the two sides' mean curves (rank by rank, over each side's runs) and [`Noise`] says how far runs of one
/// side move at single points.
pub fn run(sc: &Scenario, seed: u64, tolerance: f64, twins: u32) -> Result<Runs, Error> {
    let blind_scenario = blind(sc);
    let salted = |sc: &Scenario, salt: u32| {
        let mut sc = sc.clone();
        sc.sim.engine_salt = u64::from(salt);
        sc
    };
    let times = |sc: &Scenario, o: &Outcome| -> Vec<Option<f64>> {
        report::film0_downloaders(sc, o).iter().map(|d| d.time).collect()
    };
    let (mut locals, mut blinds) = (Vec::new(), Vec::new());
    let mut transit = (Vec::new(), Vec::new());
    let mut first = None;
    for salt in 0..=twins.min(MAX_TWINS) {
        let (l_sc, b_sc) = (salted(sc, salt), salted(&blind_scenario, salt));
        let (local, blind) = std::thread::scope(|s| {
            let local = s.spawn(|| simulate(&l_sc, seed, None));
            let blind = simulate(&b_sc, seed, None);
            (local.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), blind)
        });
        let (local, blind) = (local?, blind?);
        locals.push(times(&l_sc, &local.0));
        blinds.push(times(&b_sc, &blind.0));
        transit.0.push(local.1.transit_ratio);
        transit.1.push(blind.1.transit_ratio);
        if first.is_none() {
            first = Some((local, blind));
        }
    }
    let (local, blind) = first.expect("at least one run per side");
    let check = Check::of(&mean_curve(&locals), &mean_curve(&blinds), tolerance);
    let noise = (locals.len() > 1).then(|| Noise::of(&[&locals[..], &blinds[..]], tolerance));
    Ok(Runs { local, blind_scenario, blind, check, noise, transit })
}

/// Each run's completion times sorted, averaged rank by rank (`None` from the first rank some run did not
/// reach).
pub fn mean_curve(runs: &[Vec<Option<f64>>]) -> Vec<Option<f64>> {
    let sorted: Vec<Vec<f64>> = runs.iter().map(|v| sorted_times(v)).collect();
    let n = runs.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|k| {
            let at: Option<Vec<f64>> = sorted.iter().map(|t| t.get(k).copied()).collect();
            at.map(|v| v.iter().sum::<f64>() / v.len() as f64)
        })
        .collect()
}

/// The completion times reached, sorted: a run's completion curve.
fn sorted_times(times: &[Option<f64>]) -> Vec<f64> {
    let mut t: Vec<f64> = times.iter().flatten().copied().collect();
    t.sort_by(f64::total_cmp);
    t
}

impl Noise {
    /// Every pair of runs within each side, compared both ways.
    pub fn of(sides: &[&[Vec<Option<f64>>]], tolerance: f64) -> Noise {
        let mut noise = Noise { runs: sides.first().map_or(0, |s| s.len()), worst: 1.0, slowed: 0 };
        for side in sides {
            for (i, a) in side.iter().enumerate() {
                for b in &side[i + 1..] {
                    for c in [Check::of(a, b, tolerance), Check::of(b, a, tolerance)] {
                        let finite = c.points.iter().map(|p| p.ratio).filter(|r| r.is_finite());
                        noise.worst = finite.fold(noise.worst, f64::max);
                        noise.slowed = noise.slowed.max(c.slowed);
                    }
                }
            }
        }
        noise
    }
}

/// One point of the two completion curves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Rank, 1-based: the k-th cinema to complete in each run.
    pub k: usize,
    /// Its completion time in the run with locality, seconds from when it came online (`None`: the run
    /// ended with fewer than k complete).
    pub local: Option<f64>,
    /// The same in the locality-blind run.
    pub blind: Option<f64>,
    /// `local / blind`; infinite when only the blind run reached this point, 1 when neither did.
    pub ratio: f64,
}

/// The comparison of the two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// A point counts as slowed above `1 + tolerance`.
    pub tolerance: f64,
    /// Every point, by rank.
    pub points: Vec<Point>,
    /// Points slowed by more than the tolerance.
    pub slowed: usize,
    /// The largest ratio (1 without points) and its rank.
    pub worst: (f64, usize),
    /// p50 and p90 of the ratios (indexed as the point slowdowns are).
    pub ratio_p50: Option<f64>,
    /// p90 of the ratios.
    pub ratio_p90: Option<f64>,
    /// The curve in tenths by rank (the fastest tenth first): the ratio of the mean completion times of
    /// each tenth's points, where both runs reached them all (`None` otherwise). Single points move by a
    /// few percent between runs that differ in nothing that matters (a request timeout of 299 s against
    /// 301 s moved the 350-cinema fleet's points by up to 4.8%); a tenth's mean moves by about 1%.
    pub tenths: Vec<Option<f64>>,
}

impl Check {
    /// Compares two runs' completion times of the same targets (each `None` for a target that did not
    /// complete; the order of the targets does not matter, each run is sorted on its own).
    pub fn of(local: &[Option<f64>], blind: &[Option<f64>], tolerance: f64) -> Check {
        let (l, b) = (sorted_times(local), sorted_times(blind));
        let n = local.len().max(blind.len());
        let points: Vec<Point> = (0..n)
            .map(|i| {
                let (tl, tb) = (l.get(i).copied(), b.get(i).copied());
                let ratio = match (tl, tb) {
                    (Some(x), Some(y)) if y > 0.0 => x / y,
                    (Some(_), Some(_)) => 1.0,
                    (None, Some(_)) => f64::INFINITY,
                    (Some(_), None) => 0.0,
                    (None, None) => 1.0,
                };
                Point { k: i + 1, local: tl, blind: tb, ratio }
            })
            .collect();
        let limit = 1.0 + tolerance;
        let worst = points.iter().fold((1.0, 0), |w, p| if p.ratio > w.0 { (p.ratio, p.k) } else { w });
        let ratios: Vec<f64> = points.iter().map(|p| p.ratio).collect();
        let s = Slowdown::of(&ratios);
        let tenths = (0..10)
            .filter_map(|t| {
                let range = n * t / 10..n * (t + 1) / 10;
                (!range.is_empty()).then(|| {
                    let sum = |v: &[f64]| v.get(range.clone()).map(|x| x.iter().sum::<f64>());
                    match (sum(&l), sum(&b)) {
                        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                        _ => None,
                    }
                })
            })
            .collect();
        Check {
            tenths,
            tolerance,
            slowed: points.iter().filter(|p| p.ratio > limit).count(),
            worst,
            ratio_p50: s.p50,
            ratio_p90: s.p90,
            points,
        }
    }

    /// No point slowed by more than the tolerance.
    pub fn holds(&self) -> bool {
        self.slowed == 0
    }

    /// The slowest tenth: its ratio and its index (0: the fastest tenth), or `None` when some tenth was not
    /// reached by both runs.
    pub fn worst_tenth(&self) -> Option<(f64, usize)> {
        let mut worst = (0.0, 0);
        for (i, t) in self.tenths.iter().enumerate() {
            let t = (*t)?;
            if t > worst.0 {
                worst = (t, i);
            }
        }
        (!self.tenths.is_empty()).then_some(worst)
    }

    /// `locality.csv`: one line per rank.
    pub fn csv(&self) -> String {
        let f = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.3}"));
        let mut out = String::from("k,local_s,blind_s,ratio\n");
        for p in &self.points {
            out.push_str(&format!("{},{},{},{:.4}\n", p.k, f(p.local), f(p.blind), p.ratio));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_compare_rank_by_rank_whoever_the_cinema() {
        // The same cinemas finish in another order: rank by rank, 10 vs 9 and 20 vs 20, 30 vs 40.
        let c = Check::of(&[Some(30.0), Some(10.0), Some(20.0)], &[Some(20.0), Some(40.0), Some(9.0)], 0.05);
        let r: Vec<f64> = c.points.iter().map(|p| p.ratio).collect();
        assert!((r[0] - 10.0 / 9.0).abs() < 1e-12 && r[1] == 1.0 && r[2] == 0.75, "{r:?}");
        assert_eq!(c.slowed, 1, "only the first point is more than 5% slower");
        assert_eq!(c.worst.1, 1);
        assert!(!c.holds());
        assert!(Check::of(&[Some(10.4)], &[Some(10.0)], 0.05).holds(), "4% is within 5%");
    }

    #[test]
    fn tenths_compare_the_mean_of_each_tenth_of_the_curve() {
        // Twenty cinemas: the blind run at 1..=20 s, the local one 10% later in its fastest tenth only.
        let blind: Vec<Option<f64>> = (1..=20).map(|t| Some(f64::from(t))).collect();
        let mut local = blind.clone();
        local[0] = Some(1.1);
        local[1] = Some(2.2);
        let c = Check::of(&local, &blind, 0.05);
        assert_eq!(c.tenths.len(), 10);
        assert!((c.tenths[0].unwrap() - 1.1).abs() < 1e-12, "{:?}", c.tenths);
        assert!(c.tenths[1..].iter().all(|t| *t == Some(1.0)));
        assert_eq!(c.worst_tenth().map(|w| w.1), Some(0));
        // A tenth one run did not finish has no ratio.
        local[19] = None;
        assert_eq!(Check::of(&local, &blind, 0.05).tenths[9], None);
        assert_eq!(Check::of(&local, &blind, 0.05).worst_tenth(), None);
        // Fewer than ten cinemas: only the tenths that hold a point.
        assert_eq!(Check::of(&[Some(1.0); 3], &[Some(1.0); 3], 0.05).tenths.len(), 3);
    }

    #[test]
    fn twins_average_rank_by_rank_and_their_noise_is_the_widest_pair_either_way() {
        // Two runs of a side: sorted 1, 3, 5 and 2, 3, None (the second reached two points).
        let runs = vec![vec![Some(5.0), Some(1.0), Some(3.0)], vec![Some(3.0), None, Some(2.0)]];
        assert_eq!(mean_curve(&runs), vec![Some(1.5), Some(3.0), None]);
        // Against a blind side of 1.0, 1.0, 1.0 and 1.2, 1.0, 1.0: 2.0 is the widest ratio (2 / 1); the
        // unreached point counts as slowed (without bound) in the count, not in the worst ratio.
        let blind = [vec![Some(1.0); 3], vec![Some(1.2), Some(1.0), Some(1.0)]];
        let n = Noise::of(&[&runs[..], &blind[..]], 0.05);
        assert_eq!(n.runs, 2);
        assert!((n.worst - 2.0).abs() < 1e-12, "{n:?}");
        assert_eq!(n.slowed, 2, "2 / 1 and the point the second run did not reach");
        // Equal twins: no noise.
        let same = vec![vec![Some(1.0), Some(2.0)]; 3];
        assert_eq!(Noise::of(&[&same[..]], 0.05), Noise { runs: 3, worst: 1.0, slowed: 0 });
    }

    #[test]
    fn a_point_only_the_blind_run_reached_is_slowed_without_bound() {
        let c = Check::of(&[Some(5.0), None], &[Some(5.0), Some(8.0)], 0.05);
        assert_eq!(c.points[1].ratio, f64::INFINITY);
        assert_eq!((c.slowed, c.worst.1), (1, 2));
        // The other way round it is a gain, and neither reaching a point is no difference.
        let c = Check::of(&[Some(5.0), Some(8.0), None], &[Some(5.0), None, None], 0.05);
        assert!(c.holds());
        assert_eq!(c.points[2].ratio, 1.0);
        assert!(c.csv().lines().nth(2).is_some_and(|l| l == "2,8.000,,0.0000"), "{}", c.csv());
    }
}
