//! The sans-io core: the overlay's decisions, with no tokio, no clock reads and no I/O.
//!
//! Inputs are method calls carrying `now` (a [`Time`](crate::Time)); outputs are values the caller polls
//! ([`Scheduler::poll_output`]) and executes. The node drives this core with real time around libp2p; the
//! simulator drives the very same code with virtual time. One brain, two bodies.
//!
//! - [`bitfield`]: which chunks of a content a node holds.
//! - [`policy`]: peer score from locality (site, ISP), load and measured throughput.
//! - [`scheduler`]: which chunk to ask of which peer: deadline priority across contents, rarest first with a
//!   seeded random tie-break, end-game, bounded requests in flight.
//! - [`ratelimit`]: a token bucket for upload and download limits.
//! - [`upload`]: upload slots; a request beyond them gets a busy answer carrying this node's load.

pub mod bitfield;
pub mod policy;
mod rarity;
pub mod ratelimit;
pub mod scheduler;
pub mod upload;

pub use bitfield::Bitfield;
pub use policy::Locality;
pub use ratelimit::TokenBucket;
pub use scheduler::{ContentSpec, Failure, Output, PeerKey, Progress, Scheduler, Stats};
pub use upload::{UploadDecision, UploadSlots};
