//! # cinemesh-overlay
//!
//! The overlay that moves digital cinema packages from a distributor to cinemas with no tracker and no
//! master. This crate holds everything the node daemon and the simulator share.
//!
//! ## Layout
//!
//! - [`id`]: [`ContentId`] and chunk hashes (BLAKE3).
//! - [`time`]: [`Time`], the clock value handed to the sans-io core (real or virtual).
//! - [`config`]: the overlay's configuration sections (`gossip`, `transfer`, `policy`), shared by the node
//!   config file and the simulator's scenarios.
//! - [`content`]: a directory tree -> [`content::Manifest`] (paths, sizes, fixed-size chunks, one hash per
//!   chunk) and its canonical encoding.
//! - [`catalogue`]: the append-only log of entries signed with a distributor's ed25519 key, and the
//!   [`catalogue::Catalogue`] state that applies them.
//! - [`store`]: sled metadata and content written in place as the real files; a chunk is marked present only
//!   once verified and durable.
//! - [`core`]: the sans-io brain: [`core::Scheduler`] (which chunk from which peer), [`core::policy`]
//!   (peer score), [`core::UploadSlots`] (busy answers carrying load). No tokio, no clock, no I/O: the
//!   node drives it with real time, the simulator with virtual time.
//! - [`net`]: the libp2p network layer around the core (Kademlia, gossipsub, chunk transfer).

pub mod catalogue;
pub mod config;
pub mod content;
pub mod core;
pub mod id;
pub mod net;
pub mod store;
pub mod time;

pub use id::{ChunkHash, ContentId};
pub use time::Time;
