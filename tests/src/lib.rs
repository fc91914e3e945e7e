//! cinemesh integration tests: real nodes on 127.0.0.1. The tests live in `tests/tests.rs` (one test
//! binary, as ripgrep does); the root-only ones in `tests/netns.rs` (network namespaces) and
//! `tests/faults.rs` (faults with real daemons), the browser tests in `tests/dashboard.rs`.
//!
//! Helpers shared by the test binaries: [`node_config`] (an in-process node on loopback),
//! [`process::NodeProcess`] (a real daemon process, killed when dropped) and [`netns::Lab`] (hosts in
//! network namespaces).
//!
//! This library holds [`decode`]: every decoder of untrusted input behind one function, shared by the
//! coverage-guided fuzz targets (`tests/fuzz/`, cargo-afl, outside the workspace) and the corpus replay
//! test (`tests/tests/fuzz_corpus.rs`, run by `cargo test` in CI).

pub mod netns;
pub mod process;

pub use process::NodeProcess;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cinemesh::local::LocalNode;
use cinemesh_overlay::catalogue::{Body, DistributorKey, Entry, Keypair, Publish, Targets};
use cinemesh_overlay::content;
use cinemesh_overlay::net::{self, Role};
use cinemesh_overlay::ContentId;

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

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What [`publish`] published.
#[derive(Debug)]
pub struct Published {
    /// The content id.
    pub id: ContentId,
    /// Its chunks.
    pub chunks: u32,
    /// The published tree.
    pub source: PathBuf,
}

/// Publishes the tree at `dir` (chunks of `chunk_size` bytes, to every node) from `distributor`, signed by
/// `key` as entry `seq` dated now.
pub async fn publish(
    distributor: &LocalNode,
    key: &Keypair,
    seq: u64,
    dir: &Path,
    chunk_size: u32,
) -> anyhow::Result<Published> {
    let manifest = Manifest::from_path(dir, chunk_size)?;
    let id = manifest.id();
    let chunks = manifest.chunk_count();
    let entry = Entry {
        key: key.public(),
        seq,
        issued_at: unix_now(),
        body: Body::Publish(Publish {
            content: id,
            title: format!("film {seq}"),
            size: manifest.total_size(),
            chunk_size: manifest.chunk_size(),
            chunks,
            targets: Targets::All,
            deadline: None,
        }),
    }
    .sign(key)?;
    distributor.client.publish(manifest, content::base_dir(dir)?, entry).await?;
    Ok(Published { id, chunks, source: dir.to_owned() })
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
            let decoded = protocol::decode_body::<Response>(data, protocol::MAX_RESPONSE_BYTES)
                .ok()
                .filter(|r| r.check().is_ok());
            // The codec reads chunk answers without the decoder: the same bytes must give the same answer.
            if let Ok(len) = u32::try_from(data.len()) {
                use libp2p::request_response::Codec as _;
                let mut frame = len.to_be_bytes().to_vec();
                frame.extend_from_slice(data);
                let read = futures::executor::block_on(
                    protocol::Codec::default()
                        .read_response(&protocol::PROTOCOL, &mut futures::io::Cursor::new(frame)),
                )
                .ok();
                let encode = |r: &Response| protocol::encode_frame(r, usize::MAX).ok();
                assert_eq!(
                    read.as_ref().map(encode),
                    decoded.as_ref().map(encode),
                    "the codec and the decoder disagree"
                );
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
