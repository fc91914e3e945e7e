//! The physical limits a run is measured against.
//!
//! Kumar & Ross (2006): distributing a file of `F` bytes from seeders with total upload `u_s` to `N` nodes
//! with uploads `u_i` and smallest download `d_min` takes at least
//! `T_min = max(F / u_s, F / d_min, N·F / (u_s + Σ u_i))`. Efficiency = `T_min / T_measured` (1.0 is the
//! limit; above it is a bug). Transit: every ISP holding targets but no seeder must import at least `F`.
//!
//! Every cinema, not only the last: with the completion times sorted, `T(1) <= ... <= T(N)` (each counted
//! from when that cinema came online), `B(k) = max(F/u_s, k-th smallest F/d_i, k·F/(u_s + Σu_i))` carries
//! Kumar-Ross to every point of the completion CDF (its last point is Kumar-Ross) and the point slowdown
//! `T(k)/B(k)` says whether each cinema ran at its own speed ([`cdf_bound`], [`point_slowdowns`]). The
//! quantiles are taken as `shared/tools/cdf_bound.py` takes them (sorted `s`, `s[N/2]`, `s[⌊0.9N⌋]`,
//! `s[N-1]`), so the reports print that script's figures.
//!
//! `B(k)` counts access links only. Where an ISP's border is shaped and no seeder sits inside it, every
//! byte a cinema of that ISP holds crossed that border first, so it cannot finish before `F / t` (`t` the
//! border's rate): `B_border(k)` takes the k-th smallest `F / min(d_i, t_i)` instead, still a lower bound
//! of the k-th completion, and the reports give the point slowdown against it beside the other
//! ([`CdfFigures::bordered`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The three terms of the bound and their maximum, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bound {
    /// `F / u_s`: the seeders must push one copy out.
    pub seeder_term: f64,
    /// `F / d_min`: the slowest downloader must pull one copy in.
    pub download_term: f64,
    /// `N·F / (u_s + Σu_i)`: all copies must be uploaded by someone.
    pub aggregate_term: f64,
    /// The largest of the three: `T_min`.
    pub t_min: f64,
}

/// The Kumar-Ross bound for `size` bytes, seeder upload `u_s` (bytes/s), downloaders' uploads `ups` and
/// downloads `downs` (bytes/s). Empty `downs` (no downloader) gives all terms but the seeder's as 0.
pub fn kumar_ross(size: f64, u_s: f64, ups: &[f64], downs: &[f64]) -> Bound {
    let n = downs.len() as f64;
    let seeder_term = if u_s > 0.0 { size / u_s } else { f64::INFINITY };
    let d_min = downs.iter().copied().fold(f64::INFINITY, f64::min);
    let download_term = if downs.is_empty() { 0.0 } else { size / d_min };
    let total_up = u_s + ups.iter().sum::<f64>();
    let aggregate_term = if downs.is_empty() { 0.0 } else { n * size / total_up };
    Bound {
        seeder_term,
        download_term,
        aggregate_term,
        t_min: seeder_term.max(download_term).max(aggregate_term),
    }
}

/// Efficiency `t_min / t_measured` (0 when nothing was measured).
pub fn efficiency(t_min: f64, t_measured: f64) -> f64 {
    if t_measured > 0.0 && t_measured.is_finite() {
        t_min / t_measured
    } else {
        0.0
    }
}

/// Minimum transit bytes: `size` for every ISP that holds at least one target and no seeder.
pub fn transit_minimum(size: u64, isps_with_targets_without_seeder: usize) -> u64 {
    size * isps_with_targets_without_seeder as u64
}

/// `B(k)` for `k = 1..=N` (index `k-1`): the least time by which `k` of the `N` downloaders can hold
/// `size` bytes, given seeder upload `u_s`, the downloaders' uploads `ups` and downloads `downs` (bytes/s).
pub fn cdf_bound(size: f64, u_s: f64, ups: &[f64], downs: &[f64]) -> Vec<f64> {
    let seeder = if u_s > 0.0 { size / u_s } else { f64::INFINITY };
    let total_up = u_s + ups.iter().sum::<f64>();
    let mut pull: Vec<f64> = downs.iter().map(|&d| size / d).collect();
    pull.sort_by(f64::total_cmp);
    pull.iter().enumerate().map(|(k, &p)| seeder.max(p).max((k + 1) as f64 * size / total_up)).collect()
}

/// Point slowdowns `T(k)/B(k)`, returned per downloader in input order: `times[i]` is downloader `i`'s
/// completion time counted from when it came online (`None`: never completed, slowdown infinite), `bound`
/// is [`cdf_bound`] over the same downloaders.
pub fn point_slowdowns(times: &[Option<f64>], bound: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    let t = |i: usize| times[i].unwrap_or(f64::INFINITY);
    order.sort_by(|&a, &b| t(a).total_cmp(&t(b)).then(a.cmp(&b)));
    let mut out = vec![f64::INFINITY; times.len()];
    for (k, &i) in order.iter().enumerate() {
        out[i] = t(i) / bound[k];
    }
    out
}

/// p50, p90 and max of point slowdowns, indexed as `cdf_bound.py` does. Infinite (incomplete) values are
/// `None` in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slowdown {
    /// Downloaders counted.
    pub n: usize,
    /// `s[N/2]` of the sorted slowdowns.
    pub p50: Option<f64>,
    /// `s[⌊0.9·N⌋]`.
    pub p90: Option<f64>,
    /// The largest.
    pub max: Option<f64>,
}

impl Slowdown {
    /// The figures of a sample (all `None` when empty).
    pub fn of(s: &[f64]) -> Self {
        let mut s = s.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let at = |i: usize| s.get(i.min(n.saturating_sub(1))).copied().filter(|x| x.is_finite());
        if n == 0 {
            return Slowdown::default();
        }
        Slowdown { n, p50: at(n / 2), p90: at((n as f64 * 0.9) as usize), max: at(n - 1) }
    }
}

/// One downloader as the completion-CDF yardstick sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Downloader {
    /// Access class (for the per-class figures).
    pub class: String,
    /// Upload, bytes/s.
    pub up: f64,
    /// Download, bytes/s.
    pub down: f64,
    /// Completion time counted from when it came online, seconds (`None`: never completed).
    pub time: Option<f64>,
    /// Rate of its ISP's border, bytes/s, when shaped and no seeder sits inside that ISP.
    pub border: Option<f64>,
    /// When it came online, seconds after the film's publish (0 if before).
    pub online: f64,
}

/// The completion-CDF figures of one film: overall and per access class.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CdfFigures {
    /// `B(k)` for `k = 1..=N`, seconds.
    pub bound: Vec<f64>,
    /// Point slowdown over all downloaders.
    pub slowdown: Slowdown,
    /// Point slowdown per access class (each cinema keeps its global `k`).
    pub per_class: BTreeMap<String, Slowdown>,
    /// Point slowdown against `B_border(k)` (module docs), when some downloader sits behind a shaped
    /// border; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bordered: Option<Slowdown>,
    /// The smallest `r` such that some schedule finishes every downloader within `r` times its own point
    /// ([`joint_max`]); absent above [`JOINT_MAX_DOWNLOADERS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joint_max: Option<f64>,
    /// `T(N) / B(N)`: the last point, Kumar-Ross with each cinema's time counted from when it came online
    /// (its inverse is the report's `last_point_efficiency`); `None` when some downloader never completed
    /// or there is none. Absent from reports written before it existed.
    #[serde(default)]
    pub last_point: Option<f64>,
}

impl CdfFigures {
    /// The figures for `size` bytes from seeders uploading `u_s` in all to `downloaders`.
    pub fn compute(size: f64, u_s: f64, downloaders: &[Downloader]) -> Self {
        let ups: Vec<f64> = downloaders.iter().map(|d| d.up).collect();
        let downs: Vec<f64> = downloaders.iter().map(|d| d.down).collect();
        let bound = cdf_bound(size, u_s, &ups, &downs);
        let times: Vec<Option<f64>> = downloaders.iter().map(|d| d.time).collect();
        let s = point_slowdowns(&times, &bound);
        let mut classes: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (d, &x) in downloaders.iter().zip(&s) {
            classes.entry(d.class.clone()).or_default().push(x);
        }
        let bordered = downloaders.iter().any(|d| d.border.is_some()).then(|| {
            let pulls: Vec<f64> =
                downloaders.iter().map(|d| d.border.map_or(d.down, |b| b.min(d.down))).collect();
            Slowdown::of(&point_slowdowns(&times, &cdf_bound(size, u_s, &ups, &pulls)))
        });
        let last = times.iter().try_fold(0.0_f64, |m, t| t.map(|t| m.max(t)));
        CdfFigures {
            last_point: last.zip(bound.last()).map(|(t, b)| t / b).filter(|x| x.is_finite()),
            slowdown: Slowdown::of(&s),
            per_class: classes.into_iter().map(|(c, v)| (c, Slowdown::of(&v))).collect(),
            bordered,
            joint_max: joint_max(size, u_s, downloaders, &bound),
            bound,
        }
    }

    /// `B(N) / T(N)`: Kumar-Ross efficiency at the last point (both bodies' `last_point_efficiency`).
    pub fn last_point_efficiency(&self) -> Option<f64> {
        self.last_point.map(|x| 1.0 / x)
    }
}

/// Above this many downloaders [`joint_max`] is not computed (its flow network grows as the square).
pub const JOINT_MAX_DOWNLOADERS: usize = 1_000;

/// What any schedule could reach for every point at once: the smallest `r` such that, in a fluid model
/// generous to the schedule (any uplink feeds any downlink; a downloader's uplink carries in full from the
/// second it comes online, as if it already held what the others lack; the seeders' from the start),
/// every downloader completes within `r·B` of its own point, the i-th by ascending `F/d_i` against
/// `B(i)`. The points `B(k)` are each reachable alone, not together: the downloaders bounded by their own
/// link need it from their start while the first points count every uplink for themselves. Exact in the
/// model to 0.1%: bisection on `r`, each step a max-flow from the downloaders (`F` each) through the
/// intervals between their deadlines (each carrying at most `d_i` per second to a downloader online then,
/// and the uplinks online then in all) (`Flow`). `bench/joint_bound.py` computes the same from a
/// `nodes.csv`. `None` without downloaders or above [`JOINT_MAX_DOWNLOADERS`].
pub fn joint_max(size: f64, u_s: f64, downloaders: &[Downloader], bound: &[f64]) -> Option<f64> {
    let n = downloaders.len();
    let usable = |x: f64| x.is_finite() && x > 0.0;
    if n == 0
        || n > JOINT_MAX_DOWNLOADERS
        || !usable(size)
        || !usable(u_s)
        || bound.len() != n
        || !bound.iter().all(|&b| usable(b))
        || !downloaders.iter().all(|d| usable(d.down) && d.up.is_finite() && d.online.is_finite())
    {
        return None;
    }
    let mut rank: Vec<usize> = (0..n).collect();
    rank.sort_by(|&a, &b| downloaders[b].down.total_cmp(&downloaders[a].down));
    let mut point = vec![0.0; n];
    for (k, &i) in rank.iter().enumerate() {
        point[i] = bound[k];
    }
    // Flows in MB and MB/s keep the sums well inside f64's precision.
    let scale = 1e-6;
    let feasible = |r: f64| -> bool {
        let deadline: Vec<f64> = (0..n).map(|i| downloaders[i].online + r * point[i]).collect();
        let mut ts: Vec<f64> =
            deadline.iter().chain(downloaders.iter().map(|d| &d.online)).copied().collect();
        ts.push(0.0);
        ts.sort_by(f64::total_cmp);
        ts.dedup();
        let m = ts.len() - 1;
        let mut flow = Flow::new(2 + n + m);
        for i in 0..n {
            flow.add(0, 2 + i, size * scale);
        }
        for j in 0..m {
            let (a, b) = (ts[j], ts[j + 1]);
            let up: f64 = u_s + downloaders.iter().filter(|d| d.online <= a).map(|d| d.up).sum::<f64>();
            flow.add(2 + n + j, 1, up * (b - a) * scale);
            for (i, d) in downloaders.iter().enumerate() {
                if a >= d.online && b <= deadline[i] * (1.0 + 1e-12) {
                    flow.add(2 + i, 2 + n + j, d.down * (b - a) * scale);
                }
            }
        }
        flow.max_flow(0, 1) >= n as f64 * size * scale * (1.0 - 1e-9)
    };
    let (mut lo, mut hi) = (1.0, 2.0);
    let mut doublings = 0;
    while !feasible(hi) {
        doublings += 1;
        if doublings > 64 {
            return None;
        }
        (lo, hi) = (hi, hi * 2.0);
    }
    while hi - lo > 1e-3 * lo {
        let mid = (lo + hi) / 2.0;
        if feasible(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Dinic's max-flow on `f64` capacities (the paths of [`joint_max`]'s network have three edges).
struct Flow {
    /// Per node: (to, capacity left, index of the reverse edge in `to`'s list).
    edges: Vec<Vec<(usize, f64, usize)>>,
}

impl Flow {
    const EPS: f64 = 1e-9;

    fn new(nodes: usize) -> Self {
        Flow { edges: vec![Vec::new(); nodes] }
    }

    fn add(&mut self, a: usize, b: usize, cap: f64) {
        let (ra, rb) = (self.edges[b].len(), self.edges[a].len());
        self.edges[a].push((b, cap, ra));
        self.edges[b].push((a, 0.0, rb));
    }

    fn max_flow(&mut self, src: usize, sink: usize) -> f64 {
        let mut total = 0.0;
        loop {
            let mut level = vec![usize::MAX; self.edges.len()];
            level[src] = 0;
            let mut queue = std::collections::VecDeque::from([src]);
            while let Some(v) = queue.pop_front() {
                for &(to, cap, _) in &self.edges[v] {
                    if cap > Self::EPS && level[to] == usize::MAX {
                        level[to] = level[v] + 1;
                        queue.push_back(to);
                    }
                }
            }
            if level[sink] == usize::MAX {
                return total;
            }
            let mut next = vec![0; self.edges.len()];
            loop {
                let f = self.push(src, sink, f64::INFINITY, &level, &mut next);
                if f <= Self::EPS {
                    break;
                }
                total += f;
            }
        }
    }

    fn push(&mut self, v: usize, sink: usize, f: f64, level: &[usize], next: &mut [usize]) -> f64 {
        if v == sink {
            return f;
        }
        while next[v] < self.edges[v].len() {
            let (to, cap, rev) = self.edges[v][next[v]];
            if cap > Self::EPS && level[to] == level[v] + 1 {
                let got = self.push(to, sink, f.min(cap), level, next);
                if got > 0.0 {
                    self.edges[v][next[v]].1 -= got;
                    self.edges[to][rev].1 += got;
                    return got;
                }
            }
            next[v] += 1;
        }
        0.0
    }
}

/// Superseeder utilisation: bytes they sent while some target was incomplete over what their links could
/// have carried in that time (`capacity` bytes/s for `busy_secs`).
pub fn utilisation(sent: f64, capacity: f64, busy_secs: f64) -> f64 {
    if capacity > 0.0 && busy_secs > 0.0 {
        sent / (capacity * busy_secs)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_term_dominates_when_peers_are_slow() {
        // F = 100, u_s = 10, 4 peers uploading 5 each, downloading 100: max(10, 1, 400/30) = 13.33.
        let b = kumar_ross(100.0, 10.0, &[5.0; 4], &[100.0; 4]);
        assert_eq!(b.seeder_term, 10.0);
        assert_eq!(b.download_term, 1.0);
        assert!((b.aggregate_term - 400.0 / 30.0).abs() < 1e-12);
        assert_eq!(b.t_min, b.aggregate_term);
    }

    #[test]
    fn slowest_download_dominates() {
        // F = 150e9 bytes; ADSL at 15 Mbit/s = 1.875e6 B/s -> 80,000 s.
        let b = kumar_ross(150e9, 1.25e9, &[1e7, 1.25e5], &[1.875e6, 1.25e7]);
        assert!((b.download_term - 80_000.0).abs() < 1e-6);
        assert_eq!(b.t_min, 80_000.0);
    }

    #[test]
    fn seeder_term_dominates_with_fast_peers() {
        // F = 10, u_s = 1, one peer with huge links: max(10, 0.01, 10/1001).
        let b = kumar_ross(10.0, 1.0, &[1000.0], &[1000.0]);
        assert_eq!(b.t_min, 10.0);
    }

    #[test]
    fn the_lab_films_have_the_issue_s_kumar_ross_bounds() {
        // 256 MiB, origin 100 Mbit/s, cinemas 20 up / 100 down: 66.1 s for 8, 81.8 s for 16.
        let (f, mbit) = (256.0 * 1048576.0, 1e6 / 8.0);
        for (n, want) in [(8, 66.1), (16, 81.8)] {
            let b = kumar_ross(f, 100.0 * mbit, &vec![20.0 * mbit; n], &vec![100.0 * mbit; n]);
            assert!((b.t_min - want).abs() < 0.05, "{n}: {}", b.t_min);
            let c = cdf_bound(f, 100.0 * mbit, &vec![20.0 * mbit; n], &vec![100.0 * mbit; n]);
            assert_eq!(c.len(), n);
            assert!((c[n - 1] - b.t_min).abs() < 1e-9, "the last point of the CDF bound is Kumar-Ross");
        }
    }

    #[test]
    fn cdf_bound_by_hand() {
        // F = 120, u_s = 12 (F/u_s = 10), downloads 60, 6, 12 (F/d = 2, 20, 10), uploads 4 each (total 24):
        // k F / 24 = 5, 10, 15. B = [max(10, 2, 5), max(10, 10, 10), max(10, 20, 15)] = [10, 10, 20].
        let b = cdf_bound(120.0, 12.0, &[4.0; 3], &[60.0, 6.0, 12.0]);
        assert_eq!(b, vec![10.0, 10.0, 20.0]);
        // Completions 30 (first input), 12, never: sorted 12 -> 12/10, 30 -> 30/10, inf.
        let s = point_slowdowns(&[Some(30.0), Some(12.0), None], &b);
        assert_eq!(s[0], 3.0);
        assert!((s[1] - 1.2).abs() < 1e-12);
        assert!(s[2].is_infinite());
        let q = Slowdown::of(&s);
        assert_eq!((q.n, q.p50, q.p90, q.max), (3, Some(3.0), None, None));
    }

    #[test]
    fn quantiles_are_indexed_like_the_reference_script() {
        // N = 8: s[4] and s[7] (nearest rank would give s[3] for the median).
        let s: Vec<f64> = (1..=8).map(f64::from).collect();
        let q = Slowdown::of(&s);
        assert_eq!((q.p50, q.p90, q.max), (Some(5.0), Some(8.0), Some(8.0)));
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Slowdown::of(&s).p90, Some(19.0));
    }

    #[test]
    fn per_class_figures_keep_the_global_rank() {
        let d = |class: &str, down: f64, time: f64| Downloader {
            class: class.to_owned(),
            up: 100.0,
            down,
            time: Some(time),
            border: None,
            online: 0.0,
        };
        // F = 100, u_s = 100 (1 s); fast downloads 100 (1 s), slow 10 (10 s); uploads 100 each, 4 cinemas:
        // k F / 500 < 1 s. B = [1, 1, 10, 10] over the sorted pulls [1, 1, 10, 10].
        let c = CdfFigures::compute(
            100.0,
            100.0,
            &[d("fast", 100.0, 2.0), d("fast", 100.0, 3.0), d("slow", 10.0, 20.0), d("slow", 10.0, 10.0)],
        );
        assert_eq!(c.bound, vec![1.0, 1.0, 10.0, 10.0]);
        // Sorted times 2, 3, 10, 20 -> slowdowns 2, 3, 1, 2.
        assert_eq!(c.per_class["fast"].max, Some(3.0));
        assert_eq!(c.per_class["slow"].p50, Some(2.0));
        assert_eq!(c.slowdown.max, Some(3.0));
        assert_eq!(c.bordered, None, "no border, no bordered figures");
        assert_eq!(utilisation(50.0, 10.0, 10.0), 0.5);
        assert_eq!(utilisation(50.0, 0.0, 10.0), 0.0);
    }

    #[test]
    fn a_shaped_border_raises_the_bound_of_the_cinemas_behind_it() {
        // F = 100, u_s = 100 (1 s), uploads 100 each. Two cinemas downloading 100 (1 s), one of them behind
        // a border of 10 (10 s); completions 2 and 20.
        let d = |border: Option<f64>, time: f64| Downloader {
            class: "fibre".to_owned(),
            up: 100.0,
            down: 100.0,
            time: Some(time),
            border,
            online: 0.0,
        };
        let c = CdfFigures::compute(100.0, 100.0, &[d(None, 2.0), d(Some(10.0), 20.0)]);
        // Without the border: B = [1, 1], slowdowns 2 and 20. With it: B = [1, 10], slowdowns 2 and 2.
        assert_eq!(c.slowdown.max, Some(20.0));
        let b = c.bordered.expect("a border is set");
        assert_eq!((b.p50, b.max), (Some(2.0), Some(2.0)));
        // A border wider than the access link changes nothing.
        let wide = CdfFigures::compute(100.0, 100.0, &[d(None, 2.0), d(Some(1000.0), 20.0)]);
        assert_eq!(wide.bordered.map(|b| b.max), Some(wide.slowdown.max));
    }

    fn fluid(down: f64, up: f64, online: f64) -> Downloader {
        Downloader { class: "c".to_owned(), up, down, time: None, border: None, online }
    }

    #[test]
    fn one_downloader_reaches_its_point() {
        let d = [fluid(5.0, 1.0, 0.0)];
        let j = joint_max(10.0, 2.0, &d, &cdf_bound(10.0, 2.0, &[1.0], &[5.0])).unwrap();
        assert!((1.0..1.002).contains(&j), "{j}");
    }

    #[test]
    fn the_points_taken_together_cost_what_the_slow_link_needs_from_the_start() {
        // F = 10, u_s = 10, no uploads: a fast cinema (down 10) and a slow one (down 1). Alone, B = [1, 10].
        // Together: the slow one gets x while the fast one takes 10 - x until r; then the slow one runs at 1
        // until 10 r: (10 - x) r = 10 and x r + 9 r = 10 give x = 0.5, r = 20 / 19.
        let d = [fluid(1.0, 0.0, 0.0), fluid(10.0, 0.0, 0.0)];
        let bound = cdf_bound(10.0, 10.0, &[0.0, 0.0], &[1.0, 10.0]);
        assert_eq!(bound, vec![1.0, 10.0]);
        let j = joint_max(10.0, 10.0, &d, &bound).unwrap();
        assert!((j / (20.0 / 19.0) - 1.0).abs() < 2e-3, "{j}");
        // A late joiner's window starts when it comes online; its uplink counts from then.
        let late = [fluid(1.0, 0.0, 100.0), fluid(10.0, 0.0, 0.0)];
        let j = joint_max(10.0, 10.0, &late, &bound).unwrap();
        assert!((1.0..1.002).contains(&j), "apart in time, both reach their points: {j}");
        // Too many downloaders: not computed.
        let many = vec![fluid(1.0, 1.0, 0.0); JOINT_MAX_DOWNLOADERS + 1];
        assert_eq!(joint_max(10.0, 10.0, &many, &vec![10.0; many.len()]), None);
        // A downloader that cannot download: no figure rather than a wrong one.
        let dead = [fluid(0.0, 0.0, 0.0), fluid(10.0, 0.0, 0.0)];
        assert_eq!(joint_max(10.0, 10.0, &dead, &[1.0, f64::INFINITY]), None);
    }

    #[test]
    fn efficiency_and_transit() {
        assert_eq!(efficiency(50.0, 100.0), 0.5);
        assert_eq!(efficiency(50.0, 0.0), 0.0);
        assert_eq!(transit_minimum(150, 4), 600);
    }
}
