//! Builds the manifest of a file or tree and prints its content id and hashing throughput.
//!
//! `cargo run --release -p cinemesh-overlay --example manifest -- PATH [CHUNK_SIZE_BYTES]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cinemesh_overlay::content::{Manifest, DEFAULT_CHUNK_SIZE};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().context("usage: manifest PATH [CHUNK_SIZE_BYTES]")?);
    let chunk_size = match args.next() {
        Some(s) => s.parse().context("chunk size must be a number of bytes")?,
        None => DEFAULT_CHUNK_SIZE,
    };
    let start = Instant::now();
    let m = Manifest::from_path(&path, chunk_size)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}  files={} size={} chunks={} time={:.3}s throughput={:.0}MB/s",
        m.id(),
        m.files().count(),
        m.total_size(),
        m.chunk_count(),
        secs,
        m.total_size() as f64 / secs / 1e6
    );
    Ok(())
}
