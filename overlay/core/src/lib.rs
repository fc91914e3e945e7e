//! # cinemesh-core
//!
//! The sans-io core: every decision a node makes about peers, requests, uploads and fetches, with no
//! tokio, no libp2p, no sled and no clock reads (this crate does not depend on them, so the compiler holds
//! that line). Inputs are method calls carrying `now` (a [`Time`]); outputs are values the caller polls and
//! carries out. The node (`cinemesh-overlay`'s `net`) drives it with real time around libp2p; the simulator
//! (`cinemesh-sim`) drives the very same code with virtual time. One brain, two bodies.
//!
//! ## Layout
//!
//! - [`time`]: [`Time`], microseconds since an origin the caller picks (real or virtual).
//! - [`id`]: [`ContentId`] and [`ChunkHash`], 32-byte BLAKE3 hashes.
//! - [`config`]: the `[gossip]`, `[transfer]` and `[policy]` sections shared by the node's config file and
//!   the simulator's scenarios.
//! - [`engine`]: the transfer engine: per-peer sessions, fetch lifecycle, uploads and their grants, have
//!   batching. The one surface both bodies drive.
//! - [`bitfield`]: which chunks of a content a node holds.
//! - [`link`]: how a connection is carried (TCP, QUIC, hole-punched, relayed).
//! - [`reachability`]: how other nodes can reach this one (public, mapped, hole-punched, relayed only).
//! - [`policy`]: peer score from locality (site, ISP), load and measured throughput.
//! - [`scheduler`]: which chunk to ask of which peer: deadline priority across contents, rarest first with a
//!   seeded random tie-break, end-game, bounded requests in flight.
//! - [`ratelimit`]: a token bucket for upload and download limits.
//! - [`schedule`]: which limits are in force at a moment of the week (config and signed policy).
//! - [`upload`]: upload slots; a request beyond them gets a busy answer carrying this node's load.
//! - [`window`]: the adaptive request window: requests in flight grow while they bring a higher rate.

pub mod bitfield;
pub mod config;
pub mod engine;
pub mod id;
pub mod link;
pub mod policy;
mod rarity;
pub mod ratelimit;
pub mod reachability;
pub mod schedule;
pub mod scheduler;
pub mod time;
pub mod upload;
pub mod window;

pub use bitfield::Bitfield;
pub use id::{ChunkHash, ContentId};
pub use link::Link;
pub use policy::Locality;
pub use ratelimit::TokenBucket;
pub use reachability::Reachability;
pub use scheduler::{ContentSpec, Failure, Output, PeerKey, Progress, Scheduler, Stats};
pub use time::Time;
pub use upload::{UploadDecision, UploadSlots};
