//! Chunk writes into a store from several threads at once, as a cinema receiving from many peers does:
//! prints the store's write rate (every chunk verified, written, synced and marked) and how many commits
//! carried the chunks (chunks written at the same time share one sync per file and one metadata flush).
//!
//! `cargo run --release -p cinemesh-overlay --example store_writes -- [THREADS] [CHUNKS] [CHUNK_MIB] [DIR]`
//! (defaults 8, 256, 4, the system's temp dir: put DIR on the disk to measure).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cinemesh_overlay::content::Manifest;
use cinemesh_overlay::store::{ContentRoot, Have, Store};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().with_context(|| format!("argument {}: not a number", i + 1)))
    };
    let (threads, n, mib) = (num(0, 8)?.max(1), num(1, 256)?.max(1), num(2, 4)?.clamp(1, 64));
    let base = args.get(3).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(&base)
        .with_context(|| format!("cannot create a directory in {}", base.display()))?;
    let cs = mib << 20;
    let mut film = vec![0u8; cs * n];
    blake3::Hasher::new().update(b"store_writes").finalize_xof().fill(&mut film);
    let manifest = Manifest::from_memory(cs as u32, &[("film.bin", &film)])?;
    let id = manifest.id();
    let mut store = Store::open(dir.path())?;
    store.set_reserve(0);
    let store = Arc::new(store);
    store.add_content(&manifest, ContentRoot::Managed, Have::Nothing)?;
    let film = Arc::new(film);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, film) = (store.clone(), film.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in (t..n).step_by(threads) {
                    store.write_chunk(&id, i as u32, &film[i * cs..(i + 1) * cs])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let (commits, chunks) = store.commit_counts();
    println!(
        "threads={threads} chunks={n} chunk={mib}MiB time={secs:.3}s rate={:.0}MB/s commits={commits} chunks_committed={chunks}",
        (cs * n) as f64 / secs / 1e6
    );
    Ok(())
}
