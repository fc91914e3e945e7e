//! cinemesh integration tests: real nodes on 127.0.0.1. The tests live in `tests/tests.rs` (one test
//! binary, as ripgrep does).
//!
//! This library holds [`decode`]: every decoder of untrusted input behind one function, shared by the
//! coverage-guided fuzz targets (`tests/fuzz/`, cargo-afl, outside the workspace) and the corpus replay
//! test (`tests/tests/fuzz_corpus.rs`, run by `cargo test` in CI).

use std::path::Path;
use std::time::Duration;

use cinemesh_overlay::catalogue::DistributorKey;
use cinemesh_overlay::net::{self, Role};

use cinemesh_overlay::catalogue::SignedEntry;
use cinemesh_overlay::content::Manifest;
use cinemesh_overlay::net::fleet::Report;
use cinemesh_overlay::net::protocol::{self, Request, Response};

/// A node on loopback for the integration tests: a fresh identity, its data under `dir/name`, trusting
/// `trusted`, with anti-entropy every second and a 10 s request timeout so that tests move quickly.
pub fn node_config(dir: &Path, name: &str, role: Role, isp: &str, trusted: &[DistributorKey]) -> net::Config {
    let mut c = net::Config::loopback(libp2p::identity::Keypair::generate_ed25519(), dir.join(name));
    c.role = role;
    c.name = Some(name.to_owned());
    c.isp = Some(isp.to_owned());
    c.trusted = trusted.to_vec();
    c.gossip.anti_entropy_interval = Duration::from_secs(1);
    c.transfer.request_timeout = Duration::from_secs(10);
    c
}

/// The fuzz targets: one per decoder of untrusted input.
pub const TARGETS: [&str; 6] = ["protocol", "manifest", "entry", "fleet", "config", "scenario"];

/// Feeds `data` to the decoder `target` names (one of [`TARGETS`]); it must return, never panic or hang,
/// whatever the bytes. A decoded value is re-encoded and decoded again where the format has one encoding.
pub fn decode(target: &str, data: &[u8]) {
    match target {
        "protocol" => {
            // A frame body, as the codec hands it over after the length check.
            if let Ok(r) = protocol::decode_body::<Request>(data, protocol::MAX_REQUEST_BYTES) {
                let _ = r.check();
            }
            if let Ok(r) = protocol::decode_body::<Response>(data, protocol::MAX_RESPONSE_BYTES) {
                let _ = r.check();
            }
        }
        "manifest" => {
            if let Ok(m) = Manifest::decode(data) {
                let again = Manifest::decode(&m.encode()).expect("a decoded manifest re-encodes");
                assert_eq!(again, m, "a manifest survives its own encoding");
            }
        }
        "entry" => {
            if let Ok(e) = SignedEntry::decode(data) {
                assert_eq!(e.encode(), data, "one encoding per entry");
                let _ = e.verify();
            }
        }
        "fleet" => {
            let _ = Report::decode(data);
        }
        "config" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = cinemesh::config::Config::from_toml(text, Path::new("fuzz.toml"));
            }
        }
        "scenario" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = cinemesh_sim::scenario::Scenario::parse(text, "fuzz.toml", &[]);
            }
        }
        other => panic!("unknown fuzz target {other:?}; expected one of {TARGETS:?}"),
    }
}
