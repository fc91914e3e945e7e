//! # cinemesh-overlay
//!
//! The overlay that moves digital cinema packages from a distributor to cinemas with no tracker and no
//! master. This crate holds everything the node daemon and the simulator share.
//!
//! ## Layout
//!
//! - [`id`], [`time`], [`config`], [`core`]: re-exported from the `cinemesh-core` crate (`overlay/core/`),
//!   the sans-io brain shared with the simulator: ids, time, the `gossip`/`transfer`/`policy` sections and
//!   the transfer engine.
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
pub mod content;
pub mod net;
pub mod store;

/// The sans-io core crate, under the name the rest of this crate uses.
pub use cinemesh_core as core;
pub use cinemesh_core::{config, id, time};
pub use cinemesh_core::{ChunkHash, ContentId, Time};
