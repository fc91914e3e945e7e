//! The scenario file: topology (ISPs, access links, latency), superseeders, films, churn, and the overlay's
//! own `[gossip]`, `[transfer]`, `[policy]` sections (the very structs of the node's config file).
//!
//! Loading goes file -> TOML table -> `--set` overrides applied to the table -> typed [`Scenario`] (serde,
//! `deny_unknown_fields`, so a misspelt key is an error naming it with line and column) -> [`Scenario::validate`]
//! (ranges, shares summing to 1, unknown access class names). See `docs/simulator.md` for every field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cinemesh_core::config::{ByteSize, ConfigError, GossipConfig, PolicyConfig, Rate, TransferConfig};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Serde for durations as human strings (`30s`, `2h`), shared with the node config.
use cinemesh_core::config::human_duration;

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in the default output directory.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Number of cinemas (downloading nodes), superseeders not included.
    pub cinemas: u32,
    /// ISPs, each with its share of cinemas and its access-link mix (`[[isp]]`).
    pub isp: Vec<Isp>,
    /// Access-link classes by name (`[access.adsl]`).
    pub access: BTreeMap<String, Access>,
    /// One-way latencies.
    #[serde(default)]
    pub latency: Latency,
    /// The distributor's superseeders.
    pub seeders: Seeders,
    /// Films to distribute (`[[film]]`).
    pub film: Vec<Film>,
    /// Nodes going offline and coming back, and late joiners.
    #[serde(default)]
    pub churn: Churn,
    /// Who connects to whom.
    #[serde(default)]
    pub peers: Peers,
    /// Engine knobs.
    #[serde(default)]
    pub sim: SimConfig,
    /// The node's `[gossip]` section.
    #[serde(default)]
    pub gossip: GossipConfig,
    /// The node's `[transfer]` section.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// The node's `[policy]` section.
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// An ISP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isp {
    /// Name, e.g. `orange`; also the nodes' `Locality::isp`.
    pub name: String,
    /// Share of the cinemas on this ISP (0..=1; all shares sum to 1). A datacenter ISP has 0.
    pub share: f64,
    /// Capacity of this ISP's border, each direction (absent = unlimited).
    #[serde(default)]
    pub transit: Option<Rate>,
    /// Access class name -> share of this ISP's cinemas (sums to 1 when `share > 0`).
    #[serde(default)]
    pub mix: BTreeMap<String, f64>,
}

/// An access-link class. Rates are drawn uniformly in `up..=up_max` (and `down..=down_max`) when a maximum
/// is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Upload rate (or the low end of its range).
    pub up: Rate,
    /// Download rate (or the low end of its range).
    pub down: Rate,
    /// High end of the upload range.
    #[serde(default)]
    pub up_max: Option<Rate>,
    /// High end of the download range.
    #[serde(default)]
    pub down_max: Option<Rate>,
}

/// One-way latencies between two nodes; each pair gets a fixed value within `±jitter` of the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Between two nodes of the same ISP.
    #[serde(with = "human_duration")]
    pub intra_isp: Duration,
    /// Between two nodes of different ISPs.
    #[serde(with = "human_duration")]
    pub inter_isp: Duration,
    /// Relative spread per pair, 0..1 (0.3 = ±30%).
    pub jitter: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self { intra_isp: Duration::from_millis(8), inter_isp: Duration::from_millis(25), jitter: 0.3 }
    }
}

/// The distributor's superseeders: they hold every film from its publish time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeders {
    /// How many.
    pub count: u32,
    /// ISP they sit in (must be one of `[[isp]]`, typically a datacenter with `share = 0`).
    pub isp: String,
    /// Upload rate of each.
    pub up: Rate,
    /// Download rate of each.
    pub down: Rate,
    /// Upload slots of each (absent = `transfer.upload_slots`, like any node).
    #[serde(default)]
    pub upload_slots: Option<u32>,
}

/// A film to distribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Film {
    /// Title.
    pub name: String,
    /// Size; chunked with `transfer.chunk_size`.
    pub size: ByteSize,
    /// When the distributor publishes it (catalogue entry gossiped, seeders start serving).
    #[serde(default, with = "human_duration")]
    pub publish: Duration,
    /// Deadline after publish (absent = none).
    #[serde(default, with = "opt_duration")]
    pub deadline: Option<Duration>,
    /// Fraction of the cinemas targeted (chosen at random), 0..=1.
    #[serde(default = "one")]
    pub targets: f64,
}

fn one() -> f64 {
    1.0
}

/// Churn: nodes offline at the start, sessions, late joiners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Churn {
    /// Fraction of cinemas offline at time 0; each comes online after an exponential offline period.
    pub offline_fraction: f64,
    /// Mean online session length (exponential); absent = nodes stay online once up.
    #[serde(with = "opt_duration")]
    pub session_mean: Option<Duration>,
    /// Mean offline period (exponential).
    #[serde(with = "human_duration")]
    pub offline_mean: Duration,
    /// Number of cinemas that join only at `late_join` (after the first publish).
    pub late: u32,
    /// When the late cinemas join, after the first publish.
    #[serde(with = "human_duration")]
    pub late_join: Duration,
    /// Fraction of departures that are crashes (the lab sends SIGKILL instead of SIGTERM; the simulator
    /// treats both alike: in-flight chunks are lost either way).
    pub crash: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            offline_fraction: 0.0,
            session_mean: None,
            offline_mean: Duration::from_secs(1800),
            late: 0,
            late_join: Duration::from_secs(3600),
            crash: 0.0,
        }
    }
}

/// The connection graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Peers {
    /// Connections each cinema opens to other cinemas (the graph is undirected; a ring keeps it connected).
    pub degree: u32,
    /// Fraction of those chosen in the cinema's own ISP.
    pub same_isp: f64,
    /// Connections each cinema opens to superseeders (found as providers in the DHT).
    pub seeder_links: u32,
    /// Connections a node holds at most, as the node's `network.max_connections`: a dial to (or from) a node
    /// already holding this many fails, and the engine's `max_peers` is set to it, as the node sets it.
    /// The topology's own links are made regardless.
    pub max_connections: u32,
}

impl Default for Peers {
    fn default() -> Self {
        Self { degree: 40, same_isp: 0.5, seeder_links: 3, max_connections: 256 }
    }
}

/// Engine knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Bandwidth shares are recomputed on this grid; a flow started between two ticks waits for the next.
    /// `auto` (the default): from the chunk size ([`Scenario::rate_quantum`]).
    pub rate_quantum: RateQuantum,
    /// Payload bytes per byte on the wire (TCP over IPv4 with timestamps in Ethernet frames: 1448 of 1514);
    /// a flow's payload rate loads its data links by the inverse. 1.0: an ideal link.
    pub payload_share: f64,
    /// ACK bytes per payload byte, carried on the downloader's upload link (one 66-byte frame per two
    /// 1448-byte segments: 0.0228). 0.0: ACKs are free.
    pub ack_share: f64,
    /// Bytes of a chunk answer the uploader's transport may still hold when the node counts the upload done
    /// and frees its slot (the node frees it at `ResponseSent`: the bytes are in yamux's and TCP's buffers,
    /// not yet at the asker). Unset: a slot is held until the asker has the whole chunk.
    #[serde(default)]
    pub send_buffer: Option<ByteSize>,
    /// Chunk answers from one node to another share one fair share of the links, split equally between
    /// them, as the streams of one connection share its TCP flow (true); false: every answer is a flow of
    /// its own, as the uploads of a node pacing them through its upload limit are.
    pub per_connection: bool,
    /// Stop at this virtual time even if some targets are incomplete.
    #[serde(with = "human_duration")]
    pub horizon: Duration,
    /// The queue a full link holds (`"0s"`, the default: queues are not modelled and flows crossing a link
    /// share it equally; [`LAB_FULL_QUEUE`] as measured in the lab). With a queue, a link that was a
    /// bottleneck holds it, and flows share a link by the inverse of their round trips, the queues of the
    /// full links they cross and of the full uplink their acknowledgements take counted in: the downloads of
    /// a cinema whose uploads keep its uplink full get less, as on real daemons (docs/benchmarks.md, "A
    /// declared uplink").
    #[serde(with = "human_duration")]
    pub full_queue: Duration,
    /// The queue a cinema's full uplink holds, when it differs from `full_queue` (a modem's buffer, as the
    /// lab's `--uplink-queue` shapes it). It delays every round trip through that uplink, the pings a node
    /// takes its own queue from (`Engine::own_queue`) included, and weighs the flows through it as
    /// `full_queue` does. Unset: `full_queue`.
    #[serde(default, with = "opt_duration")]
    pub uplink_queue: Option<Duration>,
    /// Stop after this many events (guards against a livelock).
    pub max_events: u64,
    /// Kademlia bucket size k (lookup hops ~ log2(N) / log2(k)).
    pub kad_k: u32,
    /// Kademlia parallelism alpha.
    pub kad_alpha: u32,
    /// Record the kinds of engine inputs and outputs every node sees (the parity test with the node).
    #[serde(default)]
    pub record_engine: bool,
    /// Nodes whose request window is sampled into `requests.csv` whatever the run's size, by name
    /// (`cinema-N`, `seeder-N`; at most [`crate::engine::REQUESTS_CSV_MAX_NODES`]), e.g. `--set
    /// 'sim.trace=["cinema-198"]'` to see why one cinema of a fleet is late. Runs of at most that many nodes
    /// sample every node anyway.
    #[serde(default)]
    pub trace: Vec<String>,
    /// Every cinema declares its line (`transfer.downlink` = its access class's download rate), as the
    /// operator guide asks of a cinema that knows it. false: `transfer.downlink` as the scenario sets it.
    pub declared_downlinks: bool,
    /// Every cinema declares its uplink too (`transfer.uplink` = its access class's upload rate), so that
    /// while it fetches its answers keep below it by its acknowledgements' room (`Engine::upload_pace`).
    /// Off by default: the operator guide asks it of asymmetric lines only. Without `full_queue` the
    /// simulator counts only what the pace costs; with it, also what a full uplink costs the node's own
    /// downloads, though its ADSL cinemas still gain less than real ones (docs/benchmarks.md, "A declared
    /// uplink"). false: `transfer.uplink` as the scenario sets it.
    pub declared_uplinks: bool,
    /// A cancelled upload whose bytes are on the way stops at once (true), as a transport that can reset a
    /// stream would. false (the node's case): request-response cannot take back an answer once handed
    /// over, so the chunk still crosses the links and reaches the asker, who discards it if held.
    pub abortable_uploads: bool,
    /// Mixed into every engine's seed, and into nothing else: the same topology, targets, latencies and
    /// churn, another draw of the engines' own choices (their tie-breaks). 0 (the default): the engines'
    /// seeds as ever. A twin run with another salt shows how far single completion points move between runs
    /// that differ in nothing that matters (`cinemesh-sim locality --twins`).
    pub engine_salt: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rate_quantum: RateQuantum::Auto,
            payload_share: PAYLOAD_SHARE,
            ack_share: ACK_SHARE,
            send_buffer: None,
            per_connection: false,
            horizon: Duration::from_secs(14 * 24 * 3600),
            full_queue: Duration::ZERO,
            uplink_queue: None,
            max_events: 2_000_000_000,
            kad_k: 20,
            kad_alpha: 3,
            record_engine: false,
            trace: Vec::new(),
            declared_downlinks: true,
            declared_uplinks: false,
            abortable_uploads: false,
            engine_salt: 0,
        }
    }
}

/// The bandwidth model's time grid (`sim.rate_quantum`): `auto` or a duration (`50ms`).
///
/// Every chunk transfer loses up to one quantum at its start (it waits for the next tick) and one at its end
/// (its share idles until the next tick), so the quantum must be small against a chunk's transfer time:
/// with 4 MiB chunks the 350-cinema fleet's median transfer takes 3.4 s, and a 1 s quantum made its point
/// slowdown p90 2.63 where 50 ms gives 1.91 (docs/benchmarks.md). Each tick recomputes every flow's rate,
/// so a smaller quantum costs wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateQuantum {
    /// [`AUTO_QUANTUM_RATE`]: a chunk's bytes at that rate, within [`AUTO_QUANTUM_RANGE`].
    #[default]
    Auto,
    /// This grid, whatever the chunk size.
    Fixed(Duration),
}

/// `auto` gives one quantum per chunk at this rate (bytes/s): 50 ms for 4 MiB chunks (1.5% of the fleet's
/// 3.4 s median transfer; the lab's 512 KiB chunks get 6 ms, 0.9% of their 0.66 s); 800 ms for 64 MiB.
pub const AUTO_QUANTUM_RATE: f64 = 80.0 * 1024.0 * 1024.0;

/// The grid `auto` picks from.
pub const AUTO_QUANTUM_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(1);

impl std::str::FromStr for RateQuantum {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().eq_ignore_ascii_case("auto") {
            return Ok(RateQuantum::Auto);
        }
        humantime::parse_duration(input.trim())
            .map(RateQuantum::Fixed)
            .map_err(|e| format!("{e} in {input:?} (expected \"auto\" or e.g. \"50ms\")"))
    }
}

impl std::fmt::Display for RateQuantum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateQuantum::Auto => f.write_str("auto"),
            RateQuantum::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for RateQuantum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RateQuantum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `sim.payload_share` by default: 1448 bytes of payload in a 1514-byte frame (Ethernet 14, IPv4 20, TCP 20
/// and timestamps 12). The lab's shaping counts frames: its origin, which receives nothing, sent 0.95 of its
/// shaped rate in chunk bytes (docs/benchmarks.md, "What the wire costs").
pub const PAYLOAD_SHARE: f64 = 1448.0 / 1514.0;

/// A `sim.full_queue` as measured in the lab: its 50 ms `tbf` queues held 26-30 ms at the full borders and
/// 29-38 ms at full VDSL uplinks (docs/benchmarks.md, "A declared uplink"). Not the default: with it,
/// `two-isp-locality`'s locality weights no longer cut transit against locality-blind (not understood yet).
pub const LAB_FULL_QUEUE: Duration = Duration::from_millis(30);

/// `sim.ack_share` by default: a 66-byte ACK frame per two full segments (delayed ACKs).
pub const ACK_SHARE: f64 = 66.0 / (2.0 * 1448.0);

/// Serde for `Option<Duration>` as a human string.
mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => human_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        human_duration::deserialize(d).map(Some)
    }
}

fn check(ok: bool, field: impl Into<String>, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, reason))
    }
}

fn fraction(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

/// Largest number of nodes a scenario may hold.
pub const MAX_NODES: u32 = 100_000;

impl Scenario {
    /// Reads, overrides and validates a scenario file. `sets` are `key=value` pairs with dotted keys
    /// (`transfer.upload_slots=12`, `film.0.size=50GB`), applied before typing so errors name the field.
    pub fn load(path: &Path, sets: &[String]) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string(), sets)
    }

    /// As [`load`](Self::load), from text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str, sets: &[String]) -> Result<Scenario, Error> {
        let parse_err =
            |e: toml::de::Error| Error::Parse { origin: origin.to_owned(), message: e.to_string() };
        let scenario: Scenario = if sets.is_empty() {
            toml::from_str(text).map_err(parse_err)?
        } else {
            let mut table: toml::Table = text.parse().map_err(parse_err)?;
            for set in sets {
                apply_set(&mut table, set)?;
            }
            let text = toml::to_string(&table)
                .map_err(|e| Error::Set { set: sets.join(" "), reason: e.to_string() })?;
            toml::from_str(&text).map_err(|e| Error::Parse {
                origin: format!("{origin} after --set {}", sets.join(" ")),
                message: e.to_string(),
            })?
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Total number of nodes: cinemas and superseeders.
    pub fn nodes(&self) -> u32 {
        self.cinemas + self.seeders.count
    }

    /// Checks ranges and cross references; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gossip.validate()?;
        self.transfer.validate()?;
        self.policy.validate()?;
        check(self.cinemas >= 1, "cinemas", "must be at least 1")?;
        check(
            self.nodes() <= MAX_NODES,
            "cinemas",
            format!("cinemas + seeders.count must be <= {MAX_NODES}"),
        )?;
        check(!self.isp.is_empty(), "isp", "at least one [[isp]] is needed")?;
        let mut total = 0.0;
        for (i, isp) in self.isp.iter().enumerate() {
            let f = |k: &str| format!("isp[{i}].{k}");
            check(!isp.name.is_empty(), f("name"), "must not be empty")?;
            check(
                self.isp[..i].iter().all(|o| o.name != isp.name),
                f("name"),
                format!("duplicate ISP name {:?}", isp.name),
            )?;
            check(fraction(isp.share), f("share"), "must be between 0 and 1")?;
            total += isp.share;
            if let Some(t) = isp.transit {
                check(t.0 >= 1000.0, f("transit"), "must be at least 1kB/s (omit it for unlimited)")?;
            }
            let mut mix = 0.0;
            for (class, share) in &isp.mix {
                check(
                    self.access.contains_key(class),
                    f(&format!("mix.{class}")),
                    format!(
                        "unknown access class {class:?}; known: {}",
                        self.access.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )?;
                check(fraction(*share), f(&format!("mix.{class}")), "must be between 0 and 1")?;
                mix += share;
            }
            if isp.share > 0.0 {
                check(
                    (mix - 1.0).abs() < 1e-6,
                    f("mix"),
                    format!("shares must sum to 1, they sum to {mix}"),
                )?;
            }
        }
        check(
            (total - 1.0).abs() < 1e-6,
            "isp.share",
            format!("ISP shares must sum to 1, they sum to {total}"),
        )?;
        for (name, a) in &self.access {
            let f = |k: &str| format!("access.{name}.{k}");
            check(a.up.0 >= 1000.0, f("up"), "must be at least 1kB/s")?;
            check(a.down.0 >= 1000.0, f("down"), "must be at least 1kB/s")?;
            if let Some(m) = a.up_max {
                check(m.0 >= a.up.0, f("up_max"), "must be >= up")?;
            }
            if let Some(m) = a.down_max {
                check(m.0 >= a.down.0, f("down_max"), "must be >= down")?;
            }
        }
        let l = &self.latency;
        check(fraction(l.jitter) && l.jitter < 1.0, "latency.jitter", "must be in 0..1")?;
        check(l.intra_isp <= Duration::from_secs(10), "latency.intra_isp", "must be <= 10s")?;
        check(l.inter_isp <= Duration::from_secs(10), "latency.inter_isp", "must be <= 10s")?;
        let s = &self.seeders;
        check(s.count >= 1, "seeders.count", "must be at least 1")?;
        check(
            self.isp.iter().any(|i| i.name == s.isp),
            "seeders.isp",
            format!("unknown ISP {:?}; list it in [[isp]] (share = 0 for a datacenter)", s.isp),
        )?;
        check(s.up.0 >= 1000.0, "seeders.up", "must be at least 1kB/s")?;
        check(s.down.0 >= 1000.0, "seeders.down", "must be at least 1kB/s")?;
        if let Some(n) = s.upload_slots {
            check((1..=1024).contains(&n), "seeders.upload_slots", "must be between 1 and 1024")?;
        }
        check(!self.film.is_empty(), "film", "at least one [[film]] is needed")?;
        for (i, film) in self.film.iter().enumerate() {
            let f = |k: &str| format!("film[{i}].{k}");
            check(film.size.0 >= 1, f("size"), "must be at least 1 byte")?;
            let chunks = film.size.0.div_ceil(self.chunk_size(film));
            check(
                chunks <= 1 << 22,
                f("size"),
                format!(
                    "{chunks} chunks of transfer.chunk_size: at most 4Mi chunks; raise transfer.chunk_size"
                ),
            )?;
            check(fraction(film.targets) && film.targets > 0.0, f("targets"), "must be in (0, 1]")?;
            check(film.publish < self.sim.horizon, f("publish"), "must be before sim.horizon")?;
        }
        let max = crate::engine::REQUESTS_CSV_MAX_NODES;
        check(self.sim.trace.len() <= max, "sim.trace", format!("at most {max} nodes"))?;
        for name in &self.sim.trace {
            let known = |prefix: &str, count: u32| {
                name.strip_prefix(prefix).and_then(|i| i.parse::<u32>().ok()).is_some_and(|i| i < count)
            };
            use crate::topology::{CINEMA_PREFIX as C, SEEDER_PREFIX as S};
            check(
                known(C, self.cinemas) || known(S, self.seeders.count),
                "sim.trace",
                format!(
                    "unknown node {name:?}: {C}0 to {C}{} and {S}0 to {S}{} exist",
                    self.cinemas.saturating_sub(1),
                    self.seeders.count.saturating_sub(1)
                ),
            )?;
        }
        let c = &self.churn;
        check(fraction(c.offline_fraction), "churn.offline_fraction", "must be between 0 and 1")?;
        check(c.late <= self.cinemas, "churn.late", "must be <= cinemas")?;
        check(fraction(c.crash), "churn.crash", "must be between 0 and 1")?;
        check(!c.offline_mean.is_zero(), "churn.offline_mean", "must be greater than zero")?;
        if let Some(m) = c.session_mean {
            check(!m.is_zero(), "churn.session_mean", "must be greater than zero")?;
        }
        let p = &self.peers;
        check((1..=1000).contains(&p.degree), "peers.degree", "must be between 1 and 1000")?;
        check(fraction(p.same_isp), "peers.same_isp", "must be between 0 and 1")?;
        check(p.seeder_links >= 1, "peers.seeder_links", "must be at least 1")?;
        check(
            (1..=100_000).contains(&p.max_connections),
            "peers.max_connections",
            "must be between 1 and 100000",
        )?;
        let sim = &self.sim;
        check(
            sim.rate_quantum != RateQuantum::Fixed(Duration::ZERO),
            "sim.rate_quantum",
            "must be greater than zero",
        )?;
        check(
            sim.payload_share > 0.0 && sim.payload_share <= 1.0,
            "sim.payload_share",
            "must be in (0, 1] (payload bytes per byte on the wire)",
        )?;
        check(
            (0.0..1.0).contains(&sim.ack_share),
            "sim.ack_share",
            "must be in [0, 1) (ACK bytes per payload byte)",
        )?;
        check(!sim.horizon.is_zero(), "sim.horizon", "must be greater than zero")?;
        check(sim.full_queue <= Duration::from_secs(10), "sim.full_queue", "must be at most 10s")?;
        check(
            sim.uplink_queue.is_none_or(|q| q <= Duration::from_secs(10)),
            "sim.uplink_queue",
            "must be at most 10s",
        )?;
        check(sim.kad_k >= 2, "sim.kad_k", "must be at least 2")?;
        check(sim.kad_alpha >= 1, "sim.kad_alpha", "must be at least 1")?;
        Ok(())
    }

    /// Bytes per chunk of `film`: `transfer.chunk_size` for its size, as the node's publish picks it.
    pub fn chunk_size(&self, film: &Film) -> u64 {
        self.transfer.chunk_size.for_size(film.size.0)
    }

    /// Number of chunks of `film`.
    pub fn chunks(&self, film: &Film) -> u32 {
        film.size.0.div_ceil(self.chunk_size(film)) as u32
    }

    /// The bandwidth model's grid: `sim.rate_quantum`, or for `auto` the smallest film chunk's bytes at
    /// [`AUTO_QUANTUM_RATE`], within [`AUTO_QUANTUM_RANGE`] (the upper end without films).
    pub fn rate_quantum(&self) -> Duration {
        match self.sim.rate_quantum {
            RateQuantum::Fixed(d) => d,
            RateQuantum::Auto => {
                let chunk = self.film.iter().map(|f| self.chunk_size(f)).min();
                let d = chunk.map_or(*AUTO_QUANTUM_RANGE.end(), |c| {
                    Duration::from_secs_f64(c as f64 / AUTO_QUANTUM_RATE)
                });
                d.clamp(*AUTO_QUANTUM_RANGE.start(), *AUTO_QUANTUM_RANGE.end())
            }
        }
    }
}

/// Applies one `key=value` override to a TOML table. Numeric path parts index arrays (`film.0.size`).
/// The value is read as TOML (`12`, `true`, `"x"`, `[1, 2]`), else taken as a string (`150GB`, `2h`).
pub fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), Error> {
    let err = |reason: &str| Error::Set { set: set.to_owned(), reason: reason.to_owned() };
    let (key, raw) = set.split_once('=').ok_or_else(|| err("expected key=value"))?;
    if key.contains('[') {
        return Err(err(
            "array elements are addressed by number in the dotted key: film.0.size, not film[0].size",
        ));
    }
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err("empty part in the dotted key"));
    }
    let (last, path) = parts.split_last().ok_or_else(|| err("empty key"))?;
    let mut cur: &mut toml::Value = table_entry(table, path.first().copied().unwrap_or(last));
    if path.is_empty() {
        *cur = value;
        return Ok(());
    }
    for part in path[1..].iter().chain(std::iter::once(last)) {
        cur = match cur {
            toml::Value::Table(t) => table_entry(t, part),
            toml::Value::Array(a) => {
                let i: usize = part.parse().map_err(|_| err("array elements are indexed by number"))?;
                let len = a.len();
                a.get_mut(i).ok_or_else(|| err(&format!("index {i} out of range (length {len})")))?
            }
            _ => return Err(err(&format!("`{part}` is inside a value that is not a table"))),
        };
    }
    *cur = value;
    Ok(())
}

fn table_entry<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Value {
    t.entry(key.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_sets() {
        let s = Scenario::parse(crate::testing::MINI, "mini", &[]).unwrap();
        assert_eq!(s.cinemas, 4);
        assert_eq!(s.transfer, TransferConfig::default());
        let sets =
            ["transfer.upload_slots=12".to_owned(), "film.0.size=1GiB".to_owned(), "cinemas=9".to_owned()];
        let s = Scenario::parse(crate::testing::MINI, "mini", &sets).unwrap();
        assert_eq!(s.transfer.upload_slots, 12);
        assert_eq!(s.film[0].size, ByteSize(1 << 30));
        assert_eq!(s.cinemas, 9);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Scenario::parse(crate::testing::MINI, "mini", &["transfer.upload_slot=3".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload_slot"), "{e}");
        let e = Scenario::parse(crate::testing::MINI, "mini", &["transfer.upload_slots=0".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("transfer.upload_slots"), "{e}");
        let e = Scenario::parse(crate::testing::MINI, "mini", &["isp.0.share=0.5".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("isp.share") && e.contains("sum"), "{e}");
        let e = Scenario::parse(crate::testing::MINI, "mini", &["isp.0.mix.adsl=0.0".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("isp[0].mix.adsl") && e.contains("unknown access class"), "{e}");
        let bad = crate::testing::MINI.replace("cinemas = 4", "cinemas = 4\ncinema = 3");
        let e = Scenario::parse(&bad, "mini", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown field `cinema`") && e.contains("line 4"), "{e}");
        let e = Scenario::parse(crate::testing::MINI, "mini", &["film.7.size=1".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn the_rate_quantum_follows_the_chunk_size_unless_given() {
        let quantum = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Scenario::parse(crate::testing::MINI, "mini", &sets).map(|s| s.rate_quantum())
        };
        // MINI's 64 MiB film gets 256 KiB chunks (auto): 3.1 ms.
        assert_eq!(quantum(&[]).unwrap(), Duration::from_micros(3125));
        assert_eq!(quantum(&["transfer.chunk_size=4MiB"]).unwrap(), Duration::from_millis(50));
        assert_eq!(quantum(&["transfer.chunk_size=64MiB"]).unwrap(), Duration::from_millis(800));
        assert_eq!(quantum(&["transfer.chunk_size=64KiB"]).unwrap(), Duration::from_millis(1), "clamped");
        assert_eq!(quantum(&["sim.rate_quantum=20ms"]).unwrap(), Duration::from_millis(20));
        assert_eq!(
            quantum(&["sim.rate_quantum=AUTO", "transfer.chunk_size=4MiB"]).unwrap(),
            Duration::from_millis(50)
        );
        let e = quantum(&["sim.rate_quantum=0s"]).unwrap_err().to_string();
        assert!(e.contains("sim.rate_quantum") && e.contains("greater than zero"), "{e}");
        let e = quantum(&["sim.rate_quantum=fast"]).unwrap_err().to_string();
        assert!(e.contains("auto") && e.contains("\"fast\""), "{e}");
        assert_eq!(RateQuantum::Fixed(Duration::from_millis(50)).to_string(), "50ms");
        for (set, field) in [
            ("sim.payload_share=0.0", "sim.payload_share"),
            ("sim.payload_share=1.5", "sim.payload_share"),
            ("sim.ack_share=1.0", "sim.ack_share"),
            ("sim.ack_share=-0.1", "sim.ack_share"),
            ("sim.uplink_queue=11s", "sim.uplink_queue"),
            ("sim.full_queue=11s", "sim.full_queue"),
        ] {
            let e = quantum(&[set]).unwrap_err().to_string();
            assert!(e.contains(field), "{set}: {e}");
        }
        assert!(quantum(&["sim.payload_share=1.0", "sim.ack_share=0.0"]).is_ok(), "the ideal link");
        let sc = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Scenario::parse(crate::testing::MINI, "mini", &sets).unwrap()
        };
        assert_eq!(sc(&[]).sim.uplink_queue, None, "unset: the links' full_queue");
        assert_eq!(sc(&["sim.uplink_queue=1s"]).sim.uplink_queue, Some(Duration::from_secs(1)));
        assert_eq!("50ms".parse::<RateQuantum>().unwrap(), RateQuantum::Fixed(Duration::from_millis(50)));
    }
}
