//! End-to-end runs of small scenarios through the overlay's real scheduler: efficiency against the
//! Kumar-Ross bound, determinism, locality, late joiners.

use std::path::PathBuf;

use cinemesh_core::config::PolicyConfig;
use cinemesh_sim::{report, simulate, Scenario};

fn scenario(name: &str, sets: &[&str]) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(name);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::load(&path, &sets).unwrap()
}

#[test]
fn homogeneous_full_mesh_lands_between_0_8_and_1_0_of_the_bound() {
    let sc = scenario("full-mesh-12.toml", &[]);
    for seed in [1, 2] {
        let (_, r) = simulate(&sc, seed, None).unwrap();
        let e = r.efficiency.expect("every target completes");
        assert!(e <= 1.0, "efficiency {e} above the physical limit: a bug in the engine or the bound");
        assert!(e >= 0.8, "efficiency {e} below 0.8 on a homogeneous full mesh (seed {seed})");
        assert_eq!(r.incomplete, 0);
    }
}

#[test]
fn same_scenario_and_seed_give_identical_bytes() {
    let sc = scenario("small-8.toml", &[]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        let (o, r) = simulate(&sc, 7, None).unwrap();
        report::write(d.path(), &sc, &o, &r).unwrap();
    }
    let mut files: Vec<_> =
        std::fs::read_dir(dirs[0].path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    for f in files {
        let a = std::fs::read(dirs[0].path().join(&f)).unwrap();
        let b = std::fs::read(dirs[1].path().join(&f)).unwrap();
        assert!(a == b, "{f:?} differs between two runs");
    }
    // A different seed is a different run.
    let (_, r1) = simulate(&sc, 7, None).unwrap();
    let (_, r2) = simulate(&sc, 8, None).unwrap();
    assert_ne!(serde_json::to_string(&r1).unwrap(), serde_json::to_string(&r2).unwrap());
}

#[test]
fn locality_weights_cut_transit_against_locality_blind() {
    let local = scenario("two-isp-locality.toml", &[]);
    let mut blind = local.clone();
    blind.policy = PolicyConfig::locality_blind();
    let transit = |sc: &Scenario| -> u64 {
        [1, 2, 3].iter().map(|&seed| simulate(sc, seed, None).unwrap().1.transit_bytes).sum()
    };
    let (tl, tb) = (transit(&local), transit(&blind));
    assert!(tl < tb, "transit with locality {tl} B, locality-blind {tb} B");
}

#[test]
fn a_late_node_still_completes() {
    let sc = scenario("small-8.toml", &["churn.late=2", "churn.late_join=60s"]);
    let (o, r) = simulate(&sc, 3, None).unwrap();
    assert_eq!(r.incomplete, 0);
    let late: Vec<f64> = o.stats.iter().filter_map(|s| s.complete[0]).filter(|&t| t > 60.0).collect();
    assert!(late.len() >= 2, "the two late cinemas complete after joining at 60 s: {late:?}");
    // They got the catalogue entry by anti-entropy on connect, after they joined.
    let gossip_late = o.stats.iter().filter_map(|s| s.gossip[0]).filter(|&t| t >= 60.0).count();
    assert_eq!(gossip_late, 2);
}

#[test]
fn churn_with_sessions_still_completes_every_target() {
    let sc = scenario(
        "small-8.toml",
        &["churn.offline_fraction=0.25", "churn.session_mean=40s", "churn.offline_mean=10s"],
    );
    let (_, r) = simulate(&sc, 5, None).unwrap();
    assert_eq!(r.incomplete, 0);
    assert!(r.efficiency.unwrap() < 1.0);
}
