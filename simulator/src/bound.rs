//! The physical limits a run is measured against.
//!
//! Kumar & Ross (2006): distributing a file of `F` bytes from seeders with total upload `u_s` to `N` nodes
//! with uploads `u_i` and smallest download `d_min` takes at least
//! `T_min = max(F / u_s, F / d_min, N·F / (u_s + Σ u_i))`. Efficiency = `T_min / T_measured` (1.0 is the
//! limit; above it is a bug). Transit: every ISP holding targets but no seeder must import at least `F`.

use serde::Serialize;

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
    fn efficiency_and_transit() {
        assert_eq!(efficiency(50.0, 100.0), 0.5);
        assert_eq!(efficiency(50.0, 0.0), 0.0);
        assert_eq!(transit_minimum(150, 4), 600);
    }
}
