//! # cinemesh (node)
//!
//! The node daemon, its control CLI and its local HTTP API, around the overlay library.
//!
//! ## Layout
//!
//! - [`cli`]: argument parsing (clap) and the commands; `main.rs` only calls [`cli::run`].
//! - [`config`]: the TOML configuration file, defaults, validation, flag overrides.
//! - [`daemon`]: `cinemesh run`: the node, the HTTP API and the hooks, with clean shutdown.
//! - [`api`]: the local HTTP API (JSON and `/metrics`).
//! - [`api_auth`]: the API token for state-changing calls and the `Host` check.
//! - [`auth`]: the API token, required when the API is bound to an address other than loopback.
//! - [`dashboard`]: the fleet dashboard web page served on the API (`GET /`).
//! - [`hooks`]: the post-download hook runner.
//! - [`local`]: nodes on loopback in this process (demo and tests).
//! - [`demo`]: `cinemesh demo`.
//! - [`watch`]: `cinemesh status --watch`.

pub mod api;
pub mod api_auth;
pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod hooks;
pub mod local;
pub mod watch;
