//! cinemesh integration tests: real nodes on 127.0.0.1. The tests live in `tests/tests.rs` (one test
//! binary, as ripgrep does).
//!
//! This library holds [`decode`]: every decoder of untrusted input behind one function, shared by the
//! coverage-guided fuzz targets (`tests/fuzz/`, cargo-afl, outside the workspace) and the corpus replay
//! test (`tests/tests/fuzz_corpus.rs`, run by `cargo test` in CI).

use std::path::Path;

use cinemesh_overlay::catalogue::SignedEntry;
use cinemesh_overlay::content::Manifest;
use cinemesh_overlay::net::fleet::Report;
use cinemesh_overlay::net::protocol::{self, Request, Response};

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
