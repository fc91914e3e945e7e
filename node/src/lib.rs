//! # cinemesh (node)
//!
//! The node daemon, its control CLI and its local HTTP API, around the overlay library.
//!
//! ## Layout
//!
//! - [`cli`]: argument parsing (clap) and the commands; `main.rs` only calls [`cli::run`].
//! - [`config`]: the TOML configuration file, defaults, validation, flag overrides.

pub mod cli;
pub mod config;
