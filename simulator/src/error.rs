//! The simulator's errors: each names what failed and what the user can do.

use cinemesh_core::config::ConfigError;

/// Something the simulator could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario is not valid TOML or has unknown / mistyped fields.
    #[error("invalid scenario {origin}: {message}")]
    Parse {
        /// The file (and the overrides applied).
        origin: String,
        /// toml's message, with line, column and field.
        message: String,
    },
    /// A `--set key=value` could not be applied.
    #[error("cannot apply --set {set}: {reason}")]
    Set {
        /// The override as given.
        set: String,
        /// Why.
        reason: String,
    },
    /// A sharded sweep: a bad `--shard`, an unreadable shard file, or shards that do not merge.
    #[error("sweep shards: {what}: {reason}")]
    Shard {
        /// The argument or file concerned.
        what: String,
        /// Why.
        reason: String,
    },
    /// A field is out of range or refers to something unknown.
    #[error("invalid scenario: {0}")]
    Invalid(#[from] ConfigError),
    /// The run stopped before its end (event budget exhausted).
    #[error("simulation aborted after {events} events at t={at_secs:.1}s: {reason}")]
    Aborted {
        /// Events processed.
        events: u64,
        /// Virtual time reached.
        at_secs: f64,
        /// Why, and which knob to turn.
        reason: String,
    },
    /// Writing an output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw a plot: {0}")]
    Plot(String),
}
