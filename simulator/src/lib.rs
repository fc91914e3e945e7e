//! # cinemesh-sim
//!
//! A discrete-event simulator that replays cinema topologies with the overlay's own sans-io core
//! ([`cinemesh_core::Scheduler`] and [`cinemesh_core::UploadSlots`]) in virtual time,
//! so what it tunes is the code that ships.
//!
//! ## Layout
//!
//! - [`scenario`]: the TOML scenario (topology, films, churn, and the node's `[gossip]`, `[transfer]`,
//!   `[policy]` sections), `--set` overrides, validation.
//! - [`topology`]: nodes, access rates, the connection graph, per-pair latency.
//! - [`bandwidth`]: flow-level max-min fair sharing of access and transit links.
//! - [`gossip`]: gossipsub dissemination of catalogue entries (mesh, eager push, IHAVE/IWANT).
//! - [`kad`]: Kademlia provider-lookup model (hops, latency).
//! - [`churn`]: when each cinema first comes online (late joiners, offline at the start).
//! - [`engine`]: the event loop that drives one `Scheduler` per cinema.
//! - [`bound`]: Kumar-Ross lower bound, efficiency, transit minimum.
//! - [`report`]: `report.json`, per-node CSV, SVG plots ([`plot`], with `plotters`), terminal summary.
//! - [`lab`]: the scenario run for real: network namespaces, shaped links, real daemons; the same outputs.
//! - [`compare`]: the simulator's prediction beside the lab's measurement.
//! - [`sweep`]: cartesian sweeps over `--vary` keys, ranking, the best as a node config.

pub mod bandwidth;
pub mod bound;
pub mod churn;
pub mod compare;
pub mod engine;
pub mod error;
pub mod gossip;
pub mod kad;
pub mod lab;
pub mod locality;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod topology;

#[cfg(test)]
pub(crate) mod testing;

pub use error::Error;
pub use report::Report;
pub use scenario::Scenario;

use engine::{Engine, Outcome, ProgressFn};

/// Runs `sc` with `seed` and computes its report.
pub fn simulate(
    sc: &Scenario,
    seed: u64,
    progress: Option<ProgressFn<'_>>,
) -> Result<(Outcome, Report), Error> {
    let mut e = Engine::new(sc, seed);
    if let Some(p) = progress {
        e = e.with_progress(p);
    }
    let outcome = e.run()?;
    let report = Report::new(sc, seed, &outcome);
    Ok((outcome, report))
}
