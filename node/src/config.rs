//! The node's configuration file: TOML with sections `node`, `network`, `gossip`, `transfer`, `policy`,
//! `storage`, `api`, `hooks`.
//!
//! Two layers (ripgrep's lowargs -> hiargs): the file is deserialized into [`Config`] (unknown fields are
//! errors naming the field, with line and column), command-line flags override fields, then
//! [`Config::validate`] checks every value and names the field. Every field has a default and the defaults
//! are valid: `cinemesh run` starts with no file at all. `gossip`, `transfer` and `policy` are the overlay's
//! own structs, the same ones the simulator's scenarios and `cinemesh-sim sweep --emit-config` use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cinemesh_overlay::catalogue::DistributorKey;
use cinemesh_overlay::config::{
    human_duration, ByteSize, ConfigError, GossipConfig, PolicyConfig, TransferConfig,
};
use cinemesh_overlay::net::nat::NatConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`: who this node is.
    pub node: NodeSection,
    /// `[network]`: listening, bootstrap, limits.
    pub network: NetworkSection,
    /// `[gossip]`: catalogue dissemination.
    pub gossip: GossipConfig,
    /// `[transfer]`: chunk requests, upload slots, rate limits.
    pub transfer: TransferConfig,
    /// `[policy]`: peer choice weights.
    pub policy: PolicyConfig,
    /// `[storage]`: disk reserve and capacity.
    pub storage: StorageSection,
    /// `[api]`: the local HTTP API.
    pub api: ApiSection,
    /// `[hooks]`: commands run on events.
    pub hooks: HooksSection,
}

pub use cinemesh_overlay::net::Role;

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Where metadata, the node key and fetched content live.
    pub data_dir: PathBuf,
    /// cinema, superseeder or distributor.
    pub role: Role,
    /// A human name for this node (shown to the distributor).
    pub name: Option<String>,
    /// Self-declared ISP (in a private mesh the distributor's signed Admit entry wins).
    pub isp: Option<String>,
    /// Self-declared site / LAN.
    pub site: Option<String>,
    /// Distributor public keys whose catalogue entries are trusted (hex).
    pub trust: Vec<String>,
    /// Log format: `human` or `json`.
    pub log_format: LogFormat,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cinemesh-data"),
            role: Role::Cinema,
            name: None,
            isp: None,
            site: None,
            trust: Vec::new(),
            log_format: LogFormat::Human,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<peer id>`) of peers to join through; retried with backoff.
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Established connections at most.
    pub max_connections: u32,
    /// Established connections per peer at most.
    pub max_connections_per_peer: u32,
    /// Inbound connections per remote IP address at most (loopback not counted).
    pub max_connections_per_ip: u32,
    /// Close a connection idle (no transfer, no stream) for this long.
    #[serde(with = "human_duration")]
    pub idle_timeout: Duration,
    /// Exchange catalogue and content only with admitted peers (admit the distributor's own node too).
    /// On by default: a node serves nothing to strangers unless the operator says `private = false`.
    pub private: bool,
    /// Optional pre-shared key file (libp2p pnet, TCP only) for a closed mesh.
    pub psk_file: Option<PathBuf>,
    /// `[network.nat]`: UPnP, AutoNAT, relays, hole punching, QUIC.
    pub nat: NatConfig,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/4710".into()],
            bootstrap: Vec::new(),
            mdns: true,
            max_connections: 256,
            max_connections_per_peer: 5,
            max_connections_per_ip: 16,
            idle_timeout: Duration::from_secs(300),
            private: true,
            psk_file: None,
            nat: NatConfig::default(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Free space always left on the data directory's disk; content that would eat into it is refused.
    pub reserve: ByteSize,
    /// Most bytes of fetched content to keep (none = as much as the disk allows); content no longer targeted
    /// at this node is evicted first, then new content is refused.
    pub capacity: Option<ByteSize>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self { reserve: ByteSize(10 * 1024 * 1024 * 1024), capacity: None }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the HTTP API (JSON, `/metrics`, the dashboard). Keep it on loopback; elsewhere it
    /// requires the token in `<data dir>/api.token` ([`crate::auth`]).
    pub listen: SocketAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 4711)) }
    }
}

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSection {
    /// Command run (through `sh -c`) when a content is complete and verified; gets `CINEMESH_CONTENT_ID`,
    /// `CINEMESH_TITLE` and `CINEMESH_PATH` in its environment.
    pub on_complete: Option<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown / mistyped fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, naming line, column and field.
        message: String,
    },
    /// A value is out of range.
    #[error("config file {path}: {source}")]
    Invalid {
        /// The file (or `<defaults and flags>`).
        path: PathBuf,
        /// The field and reason.
        source: ConfigError,
    },
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, LoadError> {
        toml::from_str(text).map_err(|e| LoadError::Parse { path: origin.to_owned(), message: e.to_string() })
    }

    /// Reads and parses a file (not validated: flags may still override fields).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gossip.validate()?;
        self.transfer.validate()?;
        self.policy.validate()?;
        let n = &self.network;
        if n.listen.is_empty() {
            return Err(ConfigError::new("network.listen", "needs at least one multiaddr"));
        }
        for (field, list) in [("network.listen", &n.listen), ("network.bootstrap", &n.bootstrap)] {
            for a in list {
                a.parse::<libp2p::Multiaddr>()
                    .map_err(|e| ConfigError::new(field, format!("{a:?} is not a multiaddr: {e}")))?;
            }
        }
        if !(1..=10_000).contains(&n.max_connections) {
            return Err(ConfigError::new("network.max_connections", "must be between 1 and 10000"));
        }
        if !(1..=16).contains(&n.max_connections_per_peer) {
            return Err(ConfigError::new("network.max_connections_per_peer", "must be between 1 and 16"));
        }
        if !(1..=10_000).contains(&n.max_connections_per_ip) {
            return Err(ConfigError::new("network.max_connections_per_ip", "must be between 1 and 10000"));
        }
        if n.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new("network.idle_timeout", "must be at least 1s"));
        }
        if n.psk_file.is_some() && n.listen.iter().any(|a| a.contains("/quic")) {
            return Err(ConfigError::new(
                "network.psk_file",
                "a pre-shared key works over TCP only: remove QUIC listen addresses",
            ));
        }
        n.nat.validate()?;
        for k in &self.node.trust {
            k.parse::<DistributorKey>().map_err(|e| ConfigError::new("node.trust", format!("{k:?}: {e}")))?;
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("node.data_dir", "must not be empty"));
        }
        if let Some(c) = self.storage.capacity {
            if c.0 == 0 {
                return Err(ConfigError::new(
                    "storage.capacity",
                    "must be greater than zero (omit it for no limit)",
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }
}

/// The default configuration as commented TOML: every field, its default and what it does. A test checks
/// it parses back to `Config::default()`, so it cannot drift.
pub const DEFAULT_TOML: &str = include_str!("default-config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn commented_default_parses_to_the_default() {
        let parsed = Config::from_toml(DEFAULT_TOML, Path::new("default")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    /// A node started with no file, or with the packaged file, serves nothing to peers the distributor
    /// did not admit, and caps inbound connections per IP.
    #[test]
    fn the_default_and_the_packaged_config_are_a_private_mesh() {
        let packaged = include_str!("../../packaging/cinemesh.toml");
        let packaged = Config::from_toml(packaged, Path::new("packaging/cinemesh.toml")).unwrap();
        for c in [Config::default(), packaged] {
            assert!(c.network.private);
            assert_eq!(c.network.max_connections_per_ip, 16);
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let mut c = Config::default();
        c.transfer.upload_limit = Some("5MB/s".parse().unwrap());
        c.node.isp = Some("orange".into());
        let back = Config::from_toml(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = Config::from_toml("[transfer]\nupload_slot = 3\n", Path::new("node.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("upload_slot") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let err =
            Config::from_toml("[transfer]\nupload_slots = \"many\"\n", Path::new("n.toml")).unwrap_err();
        assert!(err.to_string().contains("upload_slots"), "{err}");
        let c = Config::from_toml("[network]\nlisten = [\"nonsense\"]\n", Path::new("n.toml")).unwrap();
        assert_eq!(c.validate().unwrap_err().field, "network.listen");
        let c = Config::from_toml("[gossip]\nmesh_n = 3\n", Path::new("n.toml")).unwrap();
        assert_eq!(c.validate().unwrap_err().field, "gossip.mesh_n_low");
    }

    #[test]
    fn a_simulator_emitted_config_is_accepted() {
        let text = "[gossip]\nmesh_n = 8\nmesh_n_high = 12\n[transfer]\nupload_slots = 12\n[policy]\nsame_isp = 0.5\n";
        let c = Config::from_toml(text, Path::new("tuned.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.transfer.upload_slots, 12);
    }
}
