//! `cinemesh demo`: a distributor and N cinemas on loopback, in this process. Generates a film (a few
//! reels and a CPL), publishes it, shows every cinema's progress, checks every copy byte for byte, and
//! prints the time against the Kumar-Ross bound. Every node's upload is limited to `--rate` so the bound is
//! meaningful on one machine: T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cinemesh_overlay::catalogue::{Body, Entry, Keypair, Publish, Targets};
use cinemesh_overlay::config::{ByteSize, Rate};
use cinemesh_overlay::content::{self, Manifest};
use cinemesh_overlay::net::{self, Role};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::{RngCore, SeedableRng};

use crate::local::{wait_for, LocalNode};

/// `cinemesh demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of cinemas.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Size of the generated film.
    #[arg(long, default_value = "256MiB")]
    pub size: ByteSize,
    /// Upload limit of every node (makes the bound meaningful on one machine).
    #[arg(long, default_value = "40MB/s")]
    pub rate: Rate,
    /// Chunk size.
    #[arg(long, default_value = "1MiB")]
    pub chunk_size: ByteSize,
    /// Give up after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Writes a film of `size` bytes under `dir`: three reels and a small CPL, deterministic content.
pub fn generate_film(dir: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("reels"))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cpl = format!("<CompositionPlaylist><Id>urn:uuid:{seed:016x}</Id></CompositionPlaylist>\n");
    std::fs::write(dir.join("CPL.xml"), &cpl)?;
    let body = size.saturating_sub(cpl.len() as u64);
    let reels = [body / 2, body / 3, body - body / 2 - body / 3];
    for (i, len) in reels.iter().enumerate() {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("reels/reel{}.mxf", i + 1)))?);
        let mut left = *len;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            std::io::Write::write_all(&mut f, &buf[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
}

/// The Kumar-Ross lower bound on distribution time, in seconds.
pub fn kumar_ross(file: f64, seed_up: f64, uploads: &[f64], min_down: f64) -> f64 {
    let n = uploads.len() as f64;
    let total: f64 = seed_up + uploads.iter().sum::<f64>();
    (file / seed_up).max(file / min_down).max(n * file / total)
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=64).contains(&args.nodes), "--nodes must be between 1 and 64");
    let chunk = content::check_chunk_size(args.chunk_size.0)?;
    let tmp = tempfile::Builder::new().prefix("cinemesh-demo-").tempdir()?;
    let film_dir = tmp.path().join("film");
    println!(
        "cinemesh demo: 1 distributor + {} cinemas on 127.0.0.1, film of {}, uploads limited to {} per node",
        args.nodes, args.size, args.rate
    );
    generate_film(&film_dir, args.size.0, 7)?;
    let manifest = {
        let d = film_dir.clone();
        tokio::task::spawn_blocking(move || Manifest::from_path(&d, chunk)).await??
    };
    let id = manifest.id();
    println!(
        "film {} ({} files, {} chunks of {})",
        id.short(),
        manifest.files().count(),
        manifest.chunk_count(),
        ByteSize(chunk as u64)
    );

    let key = Keypair::generate(&mut rand::rngs::OsRng);
    let base = |name: &str, role: Role, isp: &str| {
        let mut c = net::Config::loopback(
            libp2p::identity::Keypair::generate_ed25519(),
            tmp.path().join("nodes").join(name),
        );
        c.role = role;
        c.name = Some(name.to_owned());
        c.isp = Some(isp.to_owned());
        c.trusted = vec![key.public()];
        c.transfer.upload_limit = Some(args.rate);
        c.gossip.anti_entropy_interval = Duration::from_secs(2);
        c
    };
    let distributor = LocalNode::start(base("distributor", Role::Distributor, "datacenter")).await?;
    let mut cinemas = Vec::new();
    for i in 0..args.nodes {
        let mut c = base(&format!("cinema-{i:02}"), Role::Cinema, if i % 2 == 0 { "isp-a" } else { "isp-b" });
        c.bootstrap = vec![distributor.addr.clone()];
        cinemas.push(LocalNode::start(c).await?);
    }
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let entry = Entry {
        key: key.public(),
        seq: 1,
        issued_at,
        body: Body::Publish(Publish {
            content: id,
            title: "Demo Feature (2026)".into(),
            size: manifest.total_size(),
            chunk_size: manifest.chunk_size(),
            chunks: manifest.chunk_count(),
            targets: Targets::All,
            deadline: None,
        }),
    }
    .sign(&key)?;
    let size = manifest.total_size();
    let started = Instant::now();
    distributor.client.publish(manifest, content::base_dir(&film_dir)?, entry).await?;

    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:<10} [{bar:40}] {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bars: Vec<ProgressBar> = (0..cinemas.len())
        .map(|i| {
            let b = multi.add(ProgressBar::new(size));
            b.set_style(style.clone());
            b.set_prefix(format!("cinema-{i:02}"));
            b
        })
        .collect();
    let clients: Vec<_> = cinemas.iter().map(|c| c.client.clone()).collect();
    let done = wait_for("every cinema to hold the film", args.timeout, || {
        let clients = clients.clone();
        let bars = bars.clone();
        async move {
            let mut all = true;
            for (c, bar) in clients.iter().zip(&bars) {
                let film = c.films().await?.into_iter().find(|f| f.content_id == id.to_hex());
                let have = film.as_ref().map(|f| f.have_bytes).unwrap_or(0);
                bar.set_position(have);
                all &= film.is_some_and(|f| f.complete);
            }
            Ok(all.then_some(()))
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    for b in &bars {
        b.finish();
    }
    done?;

    // Byte-for-byte: rebuild each copy's manifest from the files on disk.
    for (i, c) in cinemas.iter().enumerate() {
        let path =
            c.client.films().await?.into_iter().find_map(|f| f.path).context("no path for the film")?;
        let copy =
            tokio::task::spawn_blocking(move || Manifest::from_path(Path::new(&path), chunk)).await??;
        anyhow::ensure!(copy.id() == id, "cinema-{i:02}: the files on disk do not match the film");
    }

    let u = args.rate.bytes_per_sec();
    let bound = kumar_ross(size as f64, u, &vec![u; args.nodes], f64::INFINITY);
    println!();
    println!("all {} cinemas hold the film, verified byte for byte", args.nodes);
    println!("time              {elapsed:.2} s");
    println!("Kumar-Ross bound  {bound:.2} s  (F = {}, every upload {})", ByteSize(size), args.rate);
    println!("efficiency        {:.2}  (1.0 is the physical limit)", bound / elapsed);
    for c in cinemas {
        c.stop().await?;
    }
    distributor.stop().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kumar_ross_by_hand() {
        // Seeder-limited: 1 GB at 10 MB/s from the seeder, peers upload nothing.
        assert_eq!(kumar_ross(1e9, 1e7, &[0.0; 4], f64::INFINITY), 400.0);
        // Equal uploads: F/u.
        assert_eq!(kumar_ross(1e9, 1e7, &[1e7; 9], f64::INFINITY), 100.0);
        // Download-limited.
        assert_eq!(kumar_ross(1e9, 1e9, &[1e9; 2], 1e6), 1000.0);
    }
}
