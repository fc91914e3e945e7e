//! The overlay's configuration sections, shared by the node's config file and the simulator's scenarios.
//!
//! Each section is a serde struct with `Default` values that are valid on their own, `deny_unknown_fields`
//! so a misspelt key is an error naming it, and a `validate` that names the field and the reason. The
//! simulator's `--set transfer.upload_slots=12` and the node's `[transfer]` table are the same struct, so a
//! configuration tuned in the simulator is the configuration that ships.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration value that is out of range; names the field and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{field}`: {reason}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `transfer.upload_slots`.
    pub field: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

fn check(ok: bool, field: &str, reason: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, reason))
    }
}

/// A size in bytes. Parses `4194304`, `4MiB`, `4 MiB`, `150GB`, `1.5GiB`; prints binary units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Error parsing a size or a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {input:?} as {what}: {reason}")]
pub struct ParseUnitError {
    input: String,
    what: &'static str,
    reason: &'static str,
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

impl FromStr for ByteSize {
    type Err = ParseUnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err =
            |reason| ParseUnitError { input: input.to_owned(), what: "a size (e.g. 4MiB, 150GB)", reason };
        let (num, unit) = split_number(input.trim());
        let value: f64 = num.parse().map_err(|_| err("no number"))?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "g" | "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tb" => 1e12,
            "tib" => 1024.0f64.powi(4),
            _ => return Err(err("unknown unit; use B, kB, KiB, MB, MiB, GB, GiB, TB or TiB")),
        };
        let bytes = value * mult;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(err("too large"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// In the largest binary unit that fits: exact when it divides (`4MiB`), else two decimals (`55.62GiB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] =
            [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match UNITS.iter().find(|(_, size)| self.0 >= *size) {
            Some((name, size)) if self.0 % size == 0 => write!(f, "{}{}", self.0 / size, name),
            Some((name, size)) => write!(f, "{:.2}{}", self.0 as f64 / *size as f64, name),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// A rate in bytes per second. Parses `5MB/s`, `100Mbit/s`, `1Gbit/s`, `640KiB/s`, or a plain number of
/// bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct Rate(pub f64);

impl Rate {
    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0
    }

    /// From megabits per second.
    pub fn from_mbit(mbit: f64) -> Self {
        Rate(mbit * 1e6 / 8.0)
    }
}

impl FromStr for Rate {
    type Err = ParseUnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseUnitError {
            input: input.to_owned(),
            what: "a rate (e.g. 5MB/s, 100Mbit/s)",
            reason,
        };
        let s = input.trim();
        let s = s.strip_suffix("/s").or_else(|| s.strip_suffix("ps")).unwrap_or(s);
        let (num, unit) = split_number(s);
        let value: f64 = num.parse().map_err(|_| err("no number"))?;
        let unit = unit.trim();
        let bits = |m: f64| value * m / 8.0;
        let bytes = match unit {
            "" | "B" => value,
            "kbit" | "Kbit" | "kb" => bits(1e3),
            "Mbit" | "mbit" | "Mb" => bits(1e6),
            "Gbit" | "gbit" | "Gb" => bits(1e9),
            other => match format!("1{other}").parse::<ByteSize>() {
                Ok(unit) => value * unit.0 as f64,
                Err(_) => {
                    return Err(err("unknown unit; use B/s, kB/s, MB/s, MiB/s, GB/s, kbit/s, Mbit/s, Gbit/s"))
                }
            },
        };
        if !bytes.is_finite() || bytes < 0.0 {
            return Err(err("must be a finite, non-negative number"));
        }
        Ok(Rate(bytes))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mbit = self.0 * 8.0 / 1e6;
        if mbit >= 1.0 && (mbit - mbit.round()).abs() < 1e-9 {
            write!(f, "{}Mbit/s", mbit.round() as u64)
        } else {
            write!(f, "{}B/s", self.0.round() as u64)
        }
    }
}

macro_rules! serde_via_str {
    ($ty:ty, $num:ty, $from_num:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Num($num),
                    Str(String),
                }
                match Raw::deserialize(d)? {
                    Raw::Num(n) => Ok($from_num(n)),
                    Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}
serde_via_str!(ByteSize, u64, ByteSize);
serde_via_str!(Rate, f64, Rate);
serde_via_str!(ChunkSize, u64, |n| ChunkSize::Fixed(ByteSize(n)));

/// The chunk size of content a node publishes: `auto` (the default) picks it from the content's size
/// ([`auto_chunk_size`]), or a fixed power of two (`4MiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChunkSize {
    /// From the content's size: at least [`AUTO_CHUNKS`] chunks, within [`AUTO_CHUNK_RANGE`].
    #[default]
    Auto,
    /// This size, whatever the content.
    Fixed(ByteSize),
}

/// `auto` aims at this many chunks per content at least: a small content in few large chunks leaves the
/// swarm idle while the first chunks travel whole (the lab's 256 MiB film: 0.70 of the bound in 64 chunks
/// of 4 MiB, 0.85 in 512 of 512 KiB, on real daemons), as BitTorrent tools pick a piece size by size.
pub const AUTO_CHUNKS: u64 = 512;

/// The sizes `auto` picks from: a film of 2 GiB or more gets 4 MiB chunks (the fleet's and every DCP's
/// case), smaller content smaller chunks, never below 256 KiB (the per-chunk request and have cost).
pub const AUTO_CHUNK_RANGE: std::ops::RangeInclusive<u64> = (256 * 1024)..=(4 * 1024 * 1024);

/// The chunk size `auto` gives content of `total` bytes: the smallest power of two making at most
/// [`AUTO_CHUNKS`] chunks, within [`AUTO_CHUNK_RANGE`].
pub fn auto_chunk_size(total: u64) -> u64 {
    total
        .div_ceil(AUTO_CHUNKS)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .clamp(*AUTO_CHUNK_RANGE.start(), *AUTO_CHUNK_RANGE.end())
}

impl ChunkSize {
    /// The chunk size for content of `total` bytes.
    pub fn for_size(self, total: u64) -> u64 {
        match self {
            ChunkSize::Auto => auto_chunk_size(total),
            ChunkSize::Fixed(b) => b.0,
        }
    }
}

impl FromStr for ChunkSize {
    type Err = ParseUnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().eq_ignore_ascii_case("auto") {
            return Ok(ChunkSize::Auto);
        }
        input.parse().map(ChunkSize::Fixed)
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkSize::Auto => f.write_str("auto"),
            ChunkSize::Fixed(b) => b.fmt(f),
        }
    }
}

/// Serde for `Duration` as a human string (`30s`, `5m`, `1h 30m`).
pub mod human_duration {
    use super::*;

    /// Serialize as e.g. `30s`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserialize from e.g. `30s`, `500ms`, `2m`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{e} in {s:?} (expected e.g. \"30s\", \"500ms\", \"2m\")"))
        })
    }
}

/// `[gossip]`: the catalogue's gossipsub mesh and anti-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// Target mesh degree (gossipsub D).
    pub mesh_n: usize,
    /// Below this many mesh peers, graft more (D_low).
    pub mesh_n_low: usize,
    /// Above this many mesh peers, prune (D_high).
    pub mesh_n_high: usize,
    /// Peers told about recent message ids (lazy push) at each heartbeat (D_lazy).
    pub gossip_lazy: usize,
    /// Heartbeat interval.
    #[serde(with = "human_duration")]
    pub heartbeat: Duration,
    /// Largest gossip message accepted or sent.
    pub max_transmit_size: ByteSize,
    /// How often a node compares catalogue heads with a random connected peer (anti-entropy).
    #[serde(with = "human_duration")]
    pub anti_entropy_interval: Duration,
    /// How often a node gossips its progress summary for the fleet view.
    #[serde(with = "human_duration")]
    pub fleet_interval: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            mesh_n: 6,
            mesh_n_low: 5,
            mesh_n_high: 12,
            gossip_lazy: 6,
            heartbeat: Duration::from_secs(1),
            max_transmit_size: ByteSize(64 * 1024),
            anti_entropy_interval: Duration::from_secs(30),
            fleet_interval: Duration::from_secs(60),
        }
    }
}

impl GossipConfig {
    /// Checks the invariants gossipsub needs: `mesh_n_low <= mesh_n <= mesh_n_high`, non-zero heartbeat.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self.mesh_n >= 1, "gossip.mesh_n", "must be at least 1")?;
        check(self.mesh_n_low <= self.mesh_n, "gossip.mesh_n_low", "must be <= gossip.mesh_n")?;
        check(self.mesh_n_high >= self.mesh_n, "gossip.mesh_n_high", "must be >= gossip.mesh_n")?;
        check(self.mesh_n_high <= 64, "gossip.mesh_n_high", "must be <= 64")?;
        check(self.gossip_lazy <= 64, "gossip.gossip_lazy", "must be <= 64")?;
        check(!self.heartbeat.is_zero(), "gossip.heartbeat", "must be greater than zero")?;
        check(
            (1024..=16 * 1024 * 1024).contains(&self.max_transmit_size.0),
            "gossip.max_transmit_size",
            "must be between 1KiB and 16MiB",
        )?;
        check(
            !self.anti_entropy_interval.is_zero(),
            "gossip.anti_entropy_interval",
            "must be greater than zero",
        )?;
        check(
            self.fleet_interval >= Duration::from_millis(100),
            "gossip.fleet_interval",
            "must be at least 100ms",
        )
    }
}

/// `[transfer]`: chunking, requests in flight, upload slots and rate limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Chunk size of content published from this node's configuration (and of the simulator's films):
    /// `auto` or a fixed size.
    pub chunk_size: ChunkSize,
    /// Requests in flight to one peer at most.
    pub max_requests_per_peer: u32,
    /// Requests in flight across all peers at most: the ceiling of the adaptive request window.
    pub max_requests_total: u32,
    /// Requests in flight across all peers the window starts at and never goes below (see
    /// `cinemesh_core::window`); equal to `max_requests_total`, the window is fixed.
    pub min_requests_total: u32,
    /// Concurrent uploads served; further requests get a busy answer carrying this node's load.
    pub upload_slots: u32,
    /// A peer whose last answer said a load (its uploads in progress / its slots) below this has slots to
    /// spare: it is asked one chunk at a time, and one beyond the full request window when nothing of ours
    /// is in flight there (as a seeder is). At or above it, its slots are contended and it may take up to
    /// `max_requests_per_peer`. 0.0: every peer is contended (no request beyond the window but to seeders).
    pub spare_load: f64,
    /// Share of the upload slots open to a downloader that has not measured its receive rate yet; the rest
    /// open in proportion to its rate against the fastest asker's lately (a chunk request says its asker's
    /// highest receive rate). A busy uploader thus favours the fastest downloaders, the order in which the
    /// completion-CDF bound finishes cinemas. 1.0 opens every slot to everyone.
    pub open_slots: f64,
    /// The same share on a superseeder or distributor, the fastest sources (none: `open_slots`). 0.2 ranks
    /// their askers harder: on cinemas-350 the p90 point slowdown falls 1-5%, but the real labs lose 3-8%
    /// (docs/benchmarks.md, "Seeders that rank harder").
    pub seeder_open_slots: Option<f64>,
    /// A cinema on a slow line yields to faster ones early: with its `downlink` declared at most a quarter
    /// of the fastest its peers declare and at least twice the slowest, it fetches at half its line while
    /// its fetch stays ahead of 1.2 times the line's own time ([`Engine::yielding`](crate::engine::Engine::yielding)).
    pub slow_line_yields: bool,
    /// A request unanswered after this long is given up and asked of another peer.
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    /// End-game: when no more than this many chunks are missing, ask several peers for each.
    pub endgame_chunks: u32,
    /// After a busy answer, wait this long times (1 + the peer's load) before asking that peer again,
    /// doubled for each busy answer in a row from it (up to 8x) until it serves a chunk.
    #[serde(with = "human_duration")]
    pub busy_backoff: Duration,
    /// A peer that served a chunk failing verification is not asked again for this long.
    #[serde(with = "human_duration")]
    pub corrupt_ban: Duration,
    /// Upload limit for this node (none = unlimited).
    pub upload_limit: Option<Rate>,
    /// Download limit for this node (none = unlimited).
    pub download_limit: Option<Rate>,
    /// The download rate of this node's line, when the operator knows it (e.g. `"1Gbit/s"`; none =
    /// unknown). A line faster than 200 Mbit/s lets the request window grow on less proof, none at all
    /// from 800 Mbit/s ([`Window::with_link`](crate::window::Window::with_link)), so the swarm's upload
    /// goes to the fastest lines first, as the completion-CDF bound asks. Peers learn it from the hello:
    /// where every cinema declares an alike line, all are served alike
    /// ([`ALIKE_LINES`](crate::engine::ALIKE_LINES)). It never limits anything.
    pub downlink: Option<Rate>,
    /// The upload rate of this node's line, when the operator knows it (e.g. `"8Mbit/s"`; none = unknown).
    /// While it fetches, the node keeps its answers below it by the room its own downloads' acknowledgements
    /// need ([`Engine::upload_pace`](crate::engine::Engine::upload_pace)): an uplink kept full by uploads
    /// queues and drops those acknowledgements, and the node's downloads crawl (measured on an ADSL line:
    /// a third of its download rate). Once it fetches nothing, it uploads at its full line. Only a narrow
    /// line paces ([`NARROW_UPLINK`](crate::engine::NARROW_UPLINK): its acknowledgements need a third of it
    /// or more, as an ADSL line's do); a wider one is as if undeclared.
    pub uplink: Option<Rate>,
    /// With no narrow `uplink` declared, a fetching node whose round trips to every peer rise by more than
    /// [`LONG_QUEUE`](crate::engine::LONG_QUEUE) (its own line's queue is long: a DSL modem's) takes the
    /// rate it uploads at as its uplink and paces by it as if declared
    /// ([`Engine::found_uplink`](crate::engine::Engine::found_uplink)).
    pub find_uplink: bool,
    /// Weekly windows (UTC) with their own limits, e.g. low upload during screenings; the most restrictive
    /// of these, the static limits and the distributor's signed policy applies.
    pub schedule: Vec<crate::schedule::RateWindow>,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            chunk_size: ChunkSize::Auto,
            // Tuned with cinemesh-sim on cinemas-350 (docs/benchmarks.md, "Every cinema at its own speed"):
            // the request window adapts between 4 and 64 by the receive rate (a fixed 8 left fibre cinemas
            // at 5-7x their bound), and `policy.local_first` keeps the extra requests inside the ISP.
            max_requests_per_peer: 2,
            max_requests_total: 64,
            min_requests_total: 4,
            // 20 slots, half of them open to any asker: the sweep's pick once cinemas declare their lines
            // (docs/benchmarks.md, "Twenty upload slots, half open"): on the fleet a lower p90 and max and
            // less transit than 16 and 0.4, the real labs no worse.
            upload_slots: 20,
            // Measured on real labs and the simulated fleet (docs/benchmarks.md, "Uploaders with slots to
            // spare").
            spare_load: 0.5,
            open_slots: 0.5,
            seeder_open_slots: None,
            // The fleet's p90 and max point slowdown 2-8% lower on every seed, its VDSL and business lines 9-12%
            // later (docs/benchmarks.md, "A slow line yields early").
            slow_line_yields: true,
            // A total, not an idle, timeout: a 4 MiB chunk from an ADSL uploader (1 Mbit/s) sharing its
            // 20 slots takes minutes. A dead peer fails its requests at once (connection closed).
            request_timeout: Duration::from_secs(300),
            endgame_chunks: 16,
            busy_backoff: Duration::from_secs(1),
            corrupt_ban: Duration::from_secs(600),
            upload_limit: None,
            download_limit: None,
            downlink: None,
            uplink: None,
            find_uplink: true,
            schedule: Vec::new(),
        }
    }
}

/// Smallest and largest chunk sizes accepted.
pub const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 * 1024)..=(64 * 1024 * 1024);

impl TransferConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let ChunkSize::Fixed(b) = self.chunk_size {
            check(
                CHUNK_SIZE_RANGE.contains(&b.0) && b.0.is_power_of_two(),
                "transfer.chunk_size",
                "must be auto or a power of two between 64KiB and 64MiB",
            )?;
        }
        check(
            (1..=256).contains(&self.max_requests_per_peer),
            "transfer.max_requests_per_peer",
            "must be between 1 and 256",
        )?;
        check(
            (1..=4096).contains(&self.max_requests_total),
            "transfer.max_requests_total",
            "must be between 1 and 4096",
        )?;
        check(
            self.max_requests_total >= self.max_requests_per_peer,
            "transfer.max_requests_total",
            "must be >= transfer.max_requests_per_peer",
        )?;
        check(
            (1..=self.max_requests_total).contains(&self.min_requests_total),
            "transfer.min_requests_total",
            "must be between 1 and transfer.max_requests_total",
        )?;
        check(
            (1..=1024).contains(&self.upload_slots),
            "transfer.upload_slots",
            "must be between 1 and 1024",
        )?;
        check(
            (0.0..=1.0).contains(&self.spare_load),
            "transfer.spare_load",
            "must be between 0.0 and 1.0 (the load below which a peer's upload slots count as spare)",
        )?;
        check(
            (0.0..=1.0).contains(&self.open_slots),
            "transfer.open_slots",
            "must be between 0.0 and 1.0 (the share of upload slots open to a downloader holding nothing yet)",
        )?;
        check(
            self.seeder_open_slots.is_none_or(|s| (0.0..=1.0).contains(&s)),
            "transfer.seeder_open_slots",
            "must be between 0.0 and 1.0 (open_slots on a superseeder or distributor)",
        )?;
        check(!self.request_timeout.is_zero(), "transfer.request_timeout", "must be greater than zero")?;
        check(self.endgame_chunks <= 4096, "transfer.endgame_chunks", "must be <= 4096")?;
        check(self.schedule.len() <= 64, "transfer.schedule", "at most 64 windows")?;
        for w in &self.schedule {
            check(
                w.days.iter().all(|d| *d < 7) && !w.days.is_empty(),
                "transfer.schedule.days",
                "days are 0 (Monday) to 6 (Sunday), at least one",
            )?;
            check(
                w.start_minute < w.end_minute && w.end_minute <= 1440,
                "transfer.schedule.start_minute",
                "need start_minute < end_minute <= 1440 (minutes after midnight, UTC)",
            )?;
        }
        for (field, limit) in
            [("transfer.upload_limit", self.upload_limit), ("transfer.download_limit", self.download_limit)]
        {
            if let Some(r) = limit {
                check(r.0 >= 1024.0, field, "must be at least 1KiB/s (omit it for unlimited)")?;
            }
        }
        for (field, line) in [("transfer.downlink", self.downlink), ("transfer.uplink", self.uplink)] {
            if let Some(r) = line {
                check(
                    r.0 >= 1024.0 && r.0.is_finite(),
                    field,
                    "must be at least 1KiB/s (omit it when the line's rate is not known)",
                )?;
            }
        }
        Ok(())
    }
}

/// Default of [`PolicyConfig::local_margin`].
pub const LOCAL_MARGIN: f64 = 2.0;

/// Default of [`PolicyConfig::dial_peers`].
pub const DIAL_PEERS: u32 = 40;

/// `[policy]`: how peers are scored when choosing whom to ask for a chunk. Each weight multiplies a term in
/// 0..=1; the score is their weighted sum. Locality is kept by `local_first` (cinemas of other ISPs are
/// asked only for what the own ISP lacks), so the default site and ISP weights are 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Weight of "same site / LAN".
    pub same_site: f64,
    /// Weight of "same ISP".
    pub same_isp: f64,
    /// Weight of "low load" (1 - the peer's last reported load).
    pub low_load: f64,
    /// Weight of measured throughput from that peer (relative to the best peer).
    pub throughput: f64,
    /// Local first: ask a cinema of another ISP only for chunks that no usable connected peer of our own
    /// ISP holds, so cinema-to-cinema traffic crosses ISP borders only for what the ISP lacks, however many
    /// requests are in flight. Superseeders and the distributor are always eligible (they exist to inject
    /// content into every ISP), and the end-game asks anyone. Off: only the weights above favour the own
    /// ISP.
    pub local_first: bool,
    /// Under `local_first`, how much better a cinema of another ISP must score than the best peer able to
    /// take a request (the same score as above, shared by the requests in flight there) before it is
    /// asked for a chunk our ISP holds. Locality is a preference among the peers able to serve, never a
    /// wait: with no ready peer left and room in the request window, the held-back peers are asked
    /// anyway. At least 1 (1: the better peer wins, wherever it is).
    pub local_margin: f64,
    /// Under `local_first`, superseeders and the distributor of another ISP are held to the same rule as
    /// cinemas: asked only for the chunks no usable peer of our ISP holds (and, like any held-back peer,
    /// when they score `local_margin` times the best peer able to take a request or when the window has room
    /// and no ready peer is left, and a starved cinema still gives an idle one its request beyond the full
    /// window: `scheduler::starved_share`, four fifths of a line up to 200 Mbit/s, rising to the whole of an
    /// 800 Mbit/s one). Only on a node that declares its line (`transfer.downlink`): without it the node
    /// cannot tell that it starves, and asks them for anything. Off (the default): asked for anything, but by
    /// a slow line (`import_lines`), which holds them whatever this says. Measured before slow lines held
    /// them: on cinemas-350 (eight seeds, lines declared) it cut the inter-ISP bytes by 20% (transit ratio 18.5-19.7
    /// against 23.6-24.4) for a p90 point slowdown of 1.715 against 1.704 (means), max 1.82-1.90, every
    /// run's Kumar-Ross efficiency 0.913 or more; but against locality-blind, over eight seeds (six runs a
    /// side where three put a point beyond 5%), one point of 2,800 was 5.1% slower (seed 3's 11th cinema;
    /// none with it off) and the fastest tenth 1.3% on average (0.6% with it off), so it is not the default.
    /// docs/benchmarks.md, "Superseeders held to local first: four fifths of a slow line" and "The locality
    /// check on eight seeds".
    pub local_first_seeders: bool,
    /// Import stripes: under `local_first`, a chunk no usable peer of our ISP holds (a gap) is asked of a
    /// cinema of another ISP only by the ISP's importer of that chunk, as this node sees its ISP: each gap
    /// goes to one of the ISP's cinemas that declared their line (`transfer.downlink`, told in the hello),
    /// in proportion to the line, lines below `import_lines` (a quarter) of the fastest importing nothing
    /// (what they hold is imported again by the fast ones). So an ISP's fast
    /// cinemas import each chunk about once and pass it on inside, instead of every cinema importing the
    /// same gaps at once. A node with requests in flight asks no other ISP's cinema for anything else; with
    /// nothing in flight it asks one, one chunk at a time, so it is never idle but waits for its ISP's
    /// importers rather than share the border with them. Superseeders and the distributor keep their
    /// exemption unless `local_first_seeders` holds them (to the stripe's gaps then; a node below half its
    /// line still asks an idle one for anything, `scheduler::SEEDER_STARVED`): the two together are the
    /// setting for narrow borders. Only on a node that declares its line. Off by default. Real
    /// lab-hetero (40 Mbit/s borders, five runs each): with `local_first_seeders` p90 point slowdown 4.10 ->
    /// 3.03, transit ratio 2.14 -> 1.30, Kumar-Ross 0.624 -> 0.677; alone p90 3.35, transit 1.60 (against
    /// the default before `import_lines`; `import_lines` alone now gives p90 2.91, transit 1.32, since a slow
    /// line holds the superseeders). Where
    /// borders are not shaped it costs the fastest cinemas (simulated 350-cinema fleet: p90 1.69 -> 1.89-2.00,
    /// with both 2.05). docs/benchmarks.md, "Import stripes for narrow borders".
    pub import_stripes: bool,
    /// Under `local_first`, a cinema whose declared line (`transfer.downlink`) is below this share of the
    /// fastest line among the cinemas of its ISP it knows (their hellos tell them) imports nothing while
    /// it has requests in flight: it asks a cinema of another ISP, a superseeder or the distributor only
    /// with nothing in flight, one chunk at a time (so it is never idle), or when starved (below), and
    /// otherwise fetches from its own ISP. For it the superseeders and the distributor are held as
    /// `local_first_seeders` holds them (a round below four fifths of its line still gives an idle one a
    /// request beyond the full window), and one that scores `local_margin` times its best ready peer is
    /// asked first. A chunk a slow line imports takes border capacity the ISP's fast cinemas need, and
    /// reaches the rest of its ISP only through its narrow uplink. Under `import_stripes` the same share says
    /// who draws stripes. 0: every line imports, and asks the superseeders for anything. Only on a node that
    /// declares its line; a node whose ISP has no faster line declared is never below it. A slow line whose
    /// window rate (`Window::starved`) was below `scheduler::SLOW_LINE_STARVED` (0.3) of it asks other
    /// ISPs' cinemas anyway. Real lab-hetero (40 Mbit/s borders, seeds 1-3, means): p90 point slowdown 2.91
    /// (4.23 with every line importing), transit ratio 1.32 (2.21); the simulated 350-cinema fleet (no
    /// narrow border, seeds 1-8): p90 1.716 (1.704), Kumar-Ross 0.935 (0.937), transit 18.10 (23.86).
    /// docs/benchmarks.md, "A slow line imports last", "A slow line imports last from the superseeders
    /// too", "A slow line's window rate tells a stall before its round ends" and "A slow line takes a
    /// superseeder's slack".
    pub import_lines: f64,
    /// A fetch with fewer peers than this (connected, or being dialed) looks its providers up again
    /// (after `lookup_interval`, 10 s, doubled after each answer with no one new, up to 160 s) and
    /// dials them until it has this many; never beyond
    /// `network.max_connections`. Peers that connect by themselves (the DHT, the gossip mesh, other
    /// nodes' dials) count but are never refused for it. As rtorrent's `min_peers` (40).
    pub dial_peers: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        // Measured on cinemas-350 (docs/benchmarks.md, "Every cinema at its own speed"): with local first
        // keeping cinema-to-cinema traffic inside each ISP, a same-ISP weight only slowed the fast cinemas
        // (p90 point slowdown +11% against locality-blind with 0.4, +2% with 0).
        Self {
            same_site: 0.0,
            same_isp: 0.0,
            low_load: 0.3,
            throughput: 0.2,
            local_first: true,
            local_margin: LOCAL_MARGIN,
            local_first_seeders: false,
            import_stripes: false,
            import_lines: crate::scheduler::IMPORT_LINES,
            dial_peers: DIAL_PEERS,
        }
    }
}

impl PolicyConfig {
    /// Locality-blind (for comparison runs): only load and throughput count, and local first is off.
    pub fn locality_blind() -> Self {
        Self::default().without_locality()
    }

    /// These settings with locality turned off: no site or ISP weight and no local first.
    pub fn without_locality(&self) -> Self {
        Self { same_site: 0.0, same_isp: 0.0, local_first: false, ..self.clone() }
    }

    /// Every weight finite, in 0..=10, and not all zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, w) in [
            ("policy.same_site", self.same_site),
            ("policy.same_isp", self.same_isp),
            ("policy.low_load", self.low_load),
            ("policy.throughput", self.throughput),
        ] {
            check(w.is_finite() && (0.0..=10.0).contains(&w), field, "must be a number between 0 and 10")?;
        }
        check(
            self.local_margin.is_finite() && (1.0..=1000.0).contains(&self.local_margin),
            "policy.local_margin",
            "must be a number between 1 and 1000",
        )?;
        check(
            self.import_lines.is_finite() && (0.0..=1.0).contains(&self.import_lines),
            "policy.import_lines",
            "must be a share between 0 and 1",
        )?;
        check(self.dial_peers <= 10_000, "policy.dial_peers", "must be at most 10000")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("4MiB".parse::<ByteSize>().unwrap(), ByteSize(4 << 20));
        assert_eq!("4 MiB".parse::<ByteSize>().unwrap(), ByteSize(4 << 20));
        assert_eq!("150GB".parse::<ByteSize>().unwrap(), ByteSize(150_000_000_000));
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap(), ByteSize(3 << 29));
        assert_eq!("123".parse::<ByteSize>().unwrap(), ByteSize(123));
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(ByteSize(1536).to_string(), "1.50KiB");
        assert_eq!(ByteSize(58_318_380 * 1024).to_string(), "55.62GiB");
        assert_eq!("auto".parse::<ChunkSize>().unwrap(), ChunkSize::Auto);
        assert_eq!("4MiB".parse::<ChunkSize>().unwrap(), ChunkSize::Fixed(ByteSize(4 << 20)));
        assert_eq!(ChunkSize::Fixed(ByteSize(4 << 20)).to_string(), "4MiB");
        assert!("four".parse::<ChunkSize>().is_err());
        assert_eq!(ByteSize(10 << 30).to_string(), "10GiB");
        assert_eq!(ByteSize(0).to_string(), "0B");
    }

    #[test]
    fn rates_parse() {
        assert_eq!("100Mbit/s".parse::<Rate>().unwrap(), Rate(12_500_000.0));
        assert_eq!("5MB/s".parse::<Rate>().unwrap(), Rate(5_000_000.0));
        assert_eq!("1MiB/s".parse::<Rate>().unwrap(), Rate(1_048_576.0));
        assert_eq!("1000".parse::<Rate>().unwrap(), Rate(1000.0));
        assert!("fast".parse::<Rate>().is_err());
        let r: Rate = Rate::from_mbit(100.0).to_string().parse().unwrap();
        assert!((r.0 - 12_500_000.0).abs() < 1e-6);
    }

    #[test]
    fn defaults_are_valid() {
        GossipConfig::default().validate().unwrap();
        TransferConfig::default().validate().unwrap();
        PolicyConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let c = TransferConfig { upload_slots: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "transfer.upload_slots");
        for rate in [100.0, f64::INFINITY, f64::NAN] {
            let c = TransferConfig { downlink: Some(Rate(rate)), ..Default::default() };
            assert_eq!(c.validate().unwrap_err().field, "transfer.downlink", "{rate}");
            let c = TransferConfig { uplink: Some(Rate(rate)), ..Default::default() };
            assert_eq!(c.validate().unwrap_err().field, "transfer.uplink", "{rate}");
        }
        let g = GossipConfig { mesh_n_low: 9, ..Default::default() };
        assert_eq!(g.validate().unwrap_err().field, "gossip.mesh_n_low");
        let p = PolicyConfig { same_isp: f64::NAN, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field, "policy.same_isp");
        for share in [-0.1, 1.5, f64::NAN] {
            let p = PolicyConfig { import_lines: share, ..Default::default() };
            assert_eq!(p.validate().unwrap_err().field, "policy.import_lines", "{share}");
        }
        PolicyConfig { import_lines: 0.0, ..Default::default() }.validate().unwrap();
    }

    #[test]
    fn auto_chunks_follow_the_content_size() {
        let (kib, mib) = (1u64 << 10, 1u64 << 20);
        // The lab's films: 256 MiB in 512 chunks of 512 KiB, 128 MiB in 512 of 256 KiB.
        assert_eq!(auto_chunk_size(256 * mib), 512 * kib);
        assert_eq!(auto_chunk_size(128 * mib), 256 * kib);
        // A size between two powers rounds the chunk up: never more than AUTO_CHUNKS chunks.
        assert_eq!(auto_chunk_size(300 * mib), mib);
        assert!(300 * mib / auto_chunk_size(300 * mib) <= AUTO_CHUNKS);
        // Small content: the floor. A film of 2 GiB and up, and every DCP: 4 MiB, as before.
        assert_eq!(auto_chunk_size(0), 256 * kib);
        assert_eq!(auto_chunk_size(10 * mib), 256 * kib);
        assert_eq!(auto_chunk_size(2048 * mib), 4 * mib);
        assert_eq!(auto_chunk_size(150_000_000_000), 4 * mib);
        assert_eq!(auto_chunk_size(u64::MAX), 4 * mib);
        assert_eq!(ChunkSize::Fixed(ByteSize(mib)).for_size(150_000_000_000), mib);
        // A fixed size is checked; auto always passes.
        let c = TransferConfig { chunk_size: ChunkSize::Fixed(ByteSize(3 * mib)), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "transfer.chunk_size");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml_like_json(r#"{"upload_slot": 3}"#);
        assert!(err.contains("upload_slot"), "{err}");
    }

    fn toml_like_json(s: &str) -> String {
        serde_json::from_str::<TransferConfig>(s).unwrap_err().to_string()
    }
}
