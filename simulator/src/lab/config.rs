//! The node configuration file the lab writes for each daemon: identity, listen address and bootstrap in
//! its namespace, the scenario's own `[gossip]`, `[transfer]` and `[policy]` sections (so the daemons run
//! what the simulator modelled), the API on the namespace's loopback and a completion hook that stamps the
//! time into a file the lab reads.

use std::path::Path;

use super::LabError;
use crate::scenario::Scenario;

/// Port of every daemon's libp2p listener (one address per namespace, so one port for all).
pub const P2P_PORT: u16 = 4710;
/// Address of every daemon's HTTP API, inside its own namespace.
pub const API: &str = "127.0.0.1:4711";

/// What differs between the lab's daemons.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec<'a> {
    /// Node name (the simulator's: `cinema-3`, `seeder-0`).
    pub name: &'a str,
    /// `cinema` or `distributor` (the superseeder that publishes).
    pub role: &'a str,
    /// ISP name, the node's self-declared locality.
    pub isp: &'a str,
    /// IPv4 address in the lab.
    pub ip: &'a str,
    /// Data directory.
    pub data_dir: &'a Path,
    /// The distributor's public key (`cmpk1...`).
    pub trust: &'a str,
    /// Bootstrap multiaddr (with `/p2p/`), none for the first node.
    pub bootstrap: Option<&'a str>,
    /// Upload slots when they differ from `transfer.upload_slots` (a superseeder's `seeders.upload_slots`).
    pub upload_slots: Option<u32>,
    /// File the completion hook appends `<unix time> <content id>` to.
    pub done_file: &'a Path,
    /// This daemon's `transfer.upload_limit`, bytes/s (`None`: the scenario's).
    pub upload_limit: Option<f64>,
    /// This daemon's `transfer.downlink`, bytes/s (`None`: the scenario's): its shaped line, declared
    /// as the simulator declares it (`sim.declared_downlinks`).
    pub downlink: Option<f64>,
    /// This daemon's `transfer.uplink`, bytes/s (`None`: the scenario's), as the simulator declares it
    /// (`sim.declared_uplinks`).
    pub uplink: Option<f64>,
}

fn value<T: serde::Serialize>(what: &str, v: &T) -> Result<toml::Value, LabError> {
    toml::Value::try_from(v).map_err(|e| LabError::Config(format!("[{what}]: {e}")))
}

/// The TOML text of one daemon's configuration.
pub fn node_config(sc: &Scenario, spec: &NodeSpec<'_>) -> Result<String, LabError> {
    let mut transfer = sc.transfer.clone();
    if let Some(n) = spec.upload_slots {
        transfer.upload_slots = n;
    }
    if let Some(rate) = spec.upload_limit {
        transfer.upload_limit = Some(cinemesh_core::config::Rate(rate));
    }
    if let Some(rate) = spec.downlink {
        transfer.downlink = Some(cinemesh_core::config::Rate(rate));
    }
    if let Some(rate) = spec.uplink {
        transfer.uplink = Some(cinemesh_core::config::Rate(rate));
    }
    let hook = format!(
        "echo \"$(date +%s.%N) $CINEMESH_CONTENT_ID\" >> '{}'",
        spec.done_file.display().to_string().replace('\'', "")
    );
    let t = toml::toml! {
        [node]
        data_dir = (spec.data_dir.display().to_string())
        role = (spec.role)
        name = (spec.name)
        isp = (spec.isp)
        trust = [(spec.trust)]

        [network]
        listen = [(format!("/ip4/{}/tcp/{P2P_PORT}", spec.ip))]
        bootstrap = (spec.bootstrap.map(|b| vec![b.to_owned()]).unwrap_or_default())
        mdns = false
        // The lab is an open test mesh inside its own namespaces: no admission step.
        private = false

        [storage]
        reserve = "64MiB"

        [api]
        listen = API

        [hooks]
        on_complete = hook
    };
    let mut t = t;
    t.insert("gossip".into(), value("gossip", &sc.gossip)?);
    t.insert("transfer".into(), value("transfer", &transfer)?);
    t.insert("policy".into(), value("policy", &sc.policy)?);
    toml::to_string(&t).map_err(|e| LabError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_s_sections_reach_the_daemon() {
        let sc = Scenario::parse(
            crate::testing::MINI,
            "mini",
            &["transfer.upload_slots=6".to_owned(), "policy.same_isp=0.0".to_owned()],
        )
        .unwrap();
        let spec = NodeSpec {
            name: "cinema-2",
            role: "cinema",
            isp: "a",
            ip: "10.201.0.3",
            data_dir: Path::new("/tmp/cml-lab/n2"),
            trust: "cmpk1abc",
            bootstrap: Some("/ip4/10.201.0.5/tcp/4710/p2p/12D3x"),
            upload_slots: None,
            done_file: Path::new("/tmp/cml-lab/done-n2"),
            upload_limit: None,
            downlink: Some(12.5e6),
            uplink: Some(2.5e6),
        };
        let text = node_config(&sc, &spec).unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["node"]["role"].as_str(), Some("cinema"));
        assert_eq!(t["node"]["trust"][0].as_str(), Some("cmpk1abc"));
        assert_eq!(t["network"]["listen"][0].as_str(), Some("/ip4/10.201.0.3/tcp/4710"));
        assert_eq!(t["network"]["bootstrap"][0].as_str(), Some("/ip4/10.201.0.5/tcp/4710/p2p/12D3x"));
        assert_eq!(t["network"]["mdns"].as_bool(), Some(false));
        assert_eq!(t["transfer"]["upload_slots"].as_integer(), Some(6));
        assert_eq!(t["policy"]["same_isp"].as_float(), Some(0.0));
        assert!(t["hooks"]["on_complete"].as_str().unwrap().ends_with(">> '/tmp/cml-lab/done-n2'"));
        let back: cinemesh_core::config::TransferConfig = t["transfer"].clone().try_into().unwrap();
        assert_eq!(back.chunk_size, sc.transfer.chunk_size);
        assert_eq!(back.downlink.map(|r| r.bytes_per_sec()), Some(12.5e6), "its line, declared");
        assert_eq!(back.uplink.map(|r| r.bytes_per_sec()), Some(2.5e6), "both ways");
        let seeder = NodeSpec { role: "distributor", bootstrap: None, upload_slots: Some(32), ..spec };
        let t: toml::Table = node_config(&sc, &seeder).unwrap().parse().unwrap();
        assert!(t["network"]["bootstrap"].as_array().unwrap().is_empty());
        assert_eq!(t["transfer"]["upload_slots"].as_integer(), Some(32));
        // `--upload-limit-share`: the daemon paces its uploads at its own rate.
        let paced = NodeSpec { upload_limit: Some(2.375e6), ..seeder };
        let t: toml::Table = node_config(&sc, &paced).unwrap().parse().unwrap();
        let back: cinemesh_core::config::TransferConfig = t["transfer"].clone().try_into().unwrap();
        assert_eq!(back.upload_limit.map(|r| r.bytes_per_sec()), Some(2.375e6));
        assert_eq!(sc.transfer.upload_limit, None);
    }
}
