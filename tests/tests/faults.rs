//! Fault tests with real daemons (issue 11): processes killed with SIGKILL, a disk that fills, a quarter
//! of the cinemas killed, two ISPs cut off from each other, clocks a day off. Each checks that nothing is
//! lost: no verified chunk fetched again, no file marked complete that differs from its source, and the
//! transfers complete once the fault is gone. Random choices are seeded; the seed is printed (set
//! `CINEMESH_FAULT_SEED` to replay one). Every process, mount and namespace a test makes is removed on
//! drop, also when it fails. They need root (mounts, namespaces, faketime installed by `.ci/run`), so
//! they are `#[ignore]`d and `.ci/run` runs them as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cinemesh::demo::generate_film;
use cinemesh::local::{wait_for, LocalNode};
use cinemesh_overlay::catalogue::{DistributorKey, Keypair};
use cinemesh_overlay::config::Rate;
use cinemesh_overlay::core::Bitfield;
use cinemesh_overlay::net::Role;
use cinemesh_overlay::store::Store;
use cinemesh_tests::netns::{run, same_files, Lab};
use cinemesh_tests::{node_config, publish, NodeProcess, Published};
use rand::{Rng, SeedableRng};

/// How long any one condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(120);
/// Chunks of 1 MiB: many chunks in little data.
const CHUNK: u32 = 1 << 20;

/// The seed of a test's random choices: `CINEMESH_FAULT_SEED`, else the clock; printed either way.
fn seed(test: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("CINEMESH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(cinemesh_tests::unix_now);
    eprintln!("{test}: seed {seed} (replay with CINEMESH_FAULT_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// A temp dir, a distributor key, and the list of trusted keys holding it.
fn setup() -> anyhow::Result<(tempfile::TempDir, Keypair, [DistributorKey; 1])> {
    let key = Keypair::generate(&mut rand::rngs::OsRng);
    let trusted = [key.public()];
    Ok((tempfile::tempdir()?, key, trusted))
}

/// An in-process distributor uploading at most `rate` bytes/s, and a published film of `size` bytes.
async fn distributor(
    dir: &Path,
    key: &Keypair,
    trusted: &[DistributorKey],
    rate: f64,
    size: u64,
) -> anyhow::Result<(LocalNode, Published)> {
    let mut c = node_config(dir, "distributor", Role::Distributor, "dc", trusted);
    c.transfer.upload_limit = Some(Rate(rate));
    let node = LocalNode::start(c).await?;
    let film = dir.join("film");
    generate_film(&film, size, 7)?;
    let p = publish(&node, key, 1, &film, CHUNK).await?;
    Ok((node, p))
}

/// A config file for the test daemons: anti-entropy every second, requests timing out after 10 s, and
/// `reserve` kept free on the data directory's disk.
fn config_file(dir: &Path, reserve: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("daemon-{reserve}.toml"));
    std::fs::write(
        &path,
        format!(
            "[gossip]\nanti_entropy_interval = \"1s\"\n\n[transfer]\nrequest_timeout = \"10s\"\n\n\
             [storage]\nreserve = \"{reserve}\"\n"
        ),
    )?;
    Ok(path)
}

/// What the store in `data` holds of `id`, read with the daemon stopped: the chunks marked held, after
/// checking that every one of them has the manifest's hash on disk.
fn held_on_disk(data: &Path, p: &Published) -> anyhow::Result<Bitfield> {
    let store = Store::open(data).context("open the killed daemon's store")?;
    let Some(bits) = store.bitfield(&p.id)? else { return Ok(Bitfield::new(p.chunks)) };
    let report = store.verify(&p.id)?;
    if report.bad > 0 {
        bail!("{} of {} chunks marked held have the wrong bytes on disk", report.bad, report.checked);
    }
    if bits.is_complete() {
        same_files(&p.source, &data.join("content").join(p.id.to_hex()))?;
    }
    Ok(bits)
}

/// SIGKILL at 20 random moments of a transfer: every chunk verified before a kill is still held after
/// it (checked on disk, hashes included), none is fetched again, the last life receives exactly the bytes
/// that were missing, and the copy is identical at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn sigkill_at_20_random_moments_loses_no_verified_chunk() -> anyhow::Result<()> {
    let mut rng = seed("sigkill");
    let (tmp, key, trusted) = setup()?;
    // 34 chunks at 1 MB/s: 20 lives of at most 1.5 s fetch at most 30 of them.
    let (dist, p) = distributor(tmp.path(), &key, &trusted, 1e6, 32 << 20).await?;
    let boot = dist.addr.to_string();
    let data = tmp.path().join("cinema");
    let mut held = Bitfield::new(p.chunks);
    let mut kills = 0;
    while kills < 20 {
        let daemon = NodeProcess::start(&data, &key.public(), &boot)?;
        let life = Duration::from_millis(rng.gen_range(100..1500));
        tokio::time::sleep(life).await;
        // Counted only once written, synced and marked: every chunk counted here is durable.
        let fetched = daemon.metric("cinemesh_chunks_verified_total").await?;
        if daemon.have_chunks(&p.id).await?.1 {
            bail!("the transfer completed after {kills} kills; slow the distributor down");
        }
        daemon.kill();
        kills += 1;
        let now = held_on_disk(&data, &p)?;
        let lost: Vec<u32> = held.iter_ones().filter(|&i| !now.get(i)).collect();
        assert!(lost.is_empty(), "kill {kills} after {life:?}: verified chunks {lost:?} no longer held");
        let new = now.count() - held.count();
        assert!(
            fetched <= f64::from(new),
            "kill {kills} after {life:?}: {fetched} chunks verified in that life, only {new} new ones held: \
             chunks held before were fetched again"
        );
        eprintln!("kill {kills} after {life:?}: {} of {} chunks held", now.count(), p.chunks);
        held = now;
    }
    let missing: u64 = {
        let store = Store::open(&data)?;
        let manifest = store.manifest(&p.id)?.context("no manifest installed after 20 lives")?;
        held.iter_zeros().filter_map(|i| manifest.chunk(i)).map(|c| u64::from(c.len)).sum()
    };
    let daemon = NodeProcess::start(&data, &key.public(), &boot)?;
    wait_for("the cinema to complete after 20 kills", WAIT, || async {
        Ok(daemon.have_chunks(&p.id).await.ok().filter(|h| h.1).map(|_| ()))
    })
    .await?;
    let fetched = daemon.metric("cinemesh_chunks_verified_total").await?;
    assert_eq!(fetched, f64::from(p.chunks - held.count()), "the last life fetched exactly what was missing");
    assert_eq!(daemon.bytes_received().await?, missing as f64, "bytes received in the last life");
    same_files(&p.source, &data.join("content").join(p.id.to_hex()))?;
    daemon.kill();
    dist.stop().await
}

/// A tmpfs the test mounts, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let at = at.to_str().context("mount point path")?;
        run(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "cinemesh-fault", at])?;
        Ok(Self(PathBuf::from(at)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the disk is full; returns the bytes written.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for _ in 0..4096 {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// A disk that fills during a transfer: the content is refused with the reason in the status and the
/// metrics, the cinema stops downloading, nothing held is lost or corrupt, and once space is freed the
/// transfer resumes by itself and completes identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_disk_that_fills_refuses_then_resumes_once_space_is_freed() -> anyhow::Result<()> {
    let (tmp, key, trusted) = setup()?;
    let (dist, p) = distributor(tmp.path(), &key, &trusted, 4e6, 24 << 20).await?;
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "40m")?;
    let data = disk.0.join("cinema");
    let config = config_file(tmp.path(), "1MiB")?;
    let daemon = NodeProcess::start_with(
        &data,
        &key.public(),
        &dist.addr.to_string(),
        &["--config", config.to_str().context("path")?],
        &[],
    )?;
    let before = daemon.wait_partly_held(&p.id, 4, "the disk filled", WAIT).await?;
    let ballast = disk.0.join("ballast");
    let filled = fill(&ballast)?;
    let state = wait_for("the content to be refused for lack of space", WAIT, || async {
        let films: Vec<serde_json::Value> = serde_json::from_str(&daemon.get("/films").await?)?;
        let state = films.iter().find(|f| f["content_id"] == p.id.to_hex()).map(|f| f["state"].to_string());
        let refused = daemon.metric("cinemesh_contents_refused").await? == 1.0;
        Ok(state.filter(|s| refused && s.contains("refused") && s.contains("space")))
    })
    .await?;
    eprintln!("disk full ({filled} bytes of ballast) after {before} chunks: {state}");
    // Refused means no more downloading: over 3 s, at most the chunks that were on the way arrive.
    let (r0, t0) = (daemon.bytes_received().await?, Instant::now());
    assert!(r0 >= f64::from(before * CHUNK), "{r0} bytes received for {before} chunks");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let thrown = daemon.bytes_received().await? - r0;
    eprintln!("while refused: {thrown} bytes received in {:?}", t0.elapsed());
    assert!(
        thrown <= 4.0 * f64::from(CHUNK),
        "{thrown} bytes downloaded in {:?} while refused",
        t0.elapsed()
    );
    let (have, complete) = daemon.have_chunks(&p.id).await?;
    assert!(!complete && have >= before, "held {have} (had {before}) complete {complete}");

    std::fs::remove_file(&ballast)?;
    wait_for("the transfer to resume and complete once space is freed", WAIT, || async {
        Ok(daemon.have_chunks(&p.id).await?.1.then_some(()))
    })
    .await?;
    same_files(&p.source, &data.join("content").join(p.id.to_hex()))?;
    assert_eq!(daemon.metric("cinemesh_contents_refused").await?, 0.0);
    daemon.kill();
    drop(disk);
    dist.stop().await
}

/// A quarter of the cinemas (2 of 8, chosen at random) killed mid-distribution: every survivor completes
/// with an identical copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_quarter_of_the_cinemas_killed_mid_distribution_every_survivor_completes() -> anyhow::Result<()> {
    let mut rng = seed("quarter");
    let (tmp, key, trusted) = setup()?;
    let (dist, p) = distributor(tmp.path(), &key, &trusted, 8e6, 16 << 20).await?;
    let boot = dist.addr.to_string();
    let mut cinemas = Vec::new();
    for i in 0..8 {
        cinemas.push(Some(NodeProcess::start(&tmp.path().join(format!("c{i}")), &key.public(), &boot)?));
    }
    let mut victims = Vec::new();
    while victims.len() < 2 {
        let v = rng.gen_range(0..8);
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    eprintln!("victims: cinemas {victims:?}");
    for &v in &victims {
        let c = cinemas[v].as_ref().context("victim")?;
        wait_for("the victim to hold a chunk", WAIT, || async {
            let (have, complete) = c.have_chunks(&p.id).await?;
            if complete {
                bail!("cinema {v} completed before it was killed; slow the distributor down");
            }
            Ok((have >= 1).then_some(()))
        })
        .await?;
    }
    for &v in &victims {
        cinemas[v].take().context("victim")?.kill();
    }
    for (i, c) in cinemas.iter().enumerate() {
        let Some(c) = c else { continue };
        wait_for(&format!("survivor {i} to complete"), WAIT, || async {
            Ok(c.have_chunks(&p.id).await?.1.then_some(()))
        })
        .await?;
        same_files(&p.source, &tmp.path().join(format!("c{i}/content")).join(p.id.to_hex()))?;
    }
    drop(cinemas);
    dist.stop().await
}

/// Polls `probe` every 100 ms until it is true, failing after `timeout` naming `what`.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if probe()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two ISPs cut off from each other at their border mid-transfer, a film published while cut off, then
/// reconnected: the catalogue converges (the new film reaches the other side) and both transfers
/// complete there with identical copies.
#[test]
#[ignore = "needs root"]
fn two_isps_cut_off_then_reconnected_converge_and_complete() -> anyhow::Result<()> {
    // ISP 0: the distributor and a cinema; ISP 1: two cinemas. Every upload 40 Mbit/s.
    let hosts = [("dist", 0), ("a1", 0), ("b1", 1), ("b2", 1)];
    let mut lab = Lab::tagged("p", &hosts, 2, "40mbit")?;
    let tmp = tempfile::tempdir()?;
    let key = tmp.path().join("distributor.key");
    let bin = cinemesh_tests::process::bin();
    let public = run(&[bin.to_str().context("path")?, "keygen", "--out", key.to_str().context("path")?])?;
    let public = public.trim().to_owned();
    let config = config_file(tmp.path(), "1MiB")?;
    let config = config.to_str().context("path")?;
    let data = |n: &str| -> PathBuf { tmp.path().join(n) };
    lab.daemon(0, &data("dist"), &["--config", config, "--role", "distributor", "--trust", &public])?;
    let boot = lab.addr(0)?;
    for (i, (name, isp)) in hosts.iter().enumerate().skip(1) {
        let isp = format!("isp-{isp}");
        lab.daemon(
            i,
            &data(name),
            &["--config", config, "--trust", &public, "--bootstrap", &boot, "--isp", &isp],
        )?;
        lab.status(i, Duration::from_secs(30))?;
    }
    let publish = |name: &str, size: u64, seed: u64| -> anyhow::Result<(String, PathBuf)> {
        let film = tmp.path().join(name);
        generate_film(&film, size, seed)?;
        let key = key.to_str().context("path")?;
        let args = ["publish", "--key", key, film.to_str().context("path")?, "--chunk-size", "1MiB"];
        Ok((lab.cli(0, &args)?.trim().to_owned(), film))
    };
    let (first, first_src) = publish("first", 16 << 20, 1)?;
    wait_until("a cinema of ISP 1 to hold part of the first film", WAIT, || {
        let (have, complete) = lab.film(2, &first)?;
        Ok(have >= 2 && !complete)
    })?;
    lab.set_border(false)?;
    let cut = Instant::now();
    let (second, second_src) = publish("second", 8 << 20, 2)?;
    wait_until("ISP 0's cinema to complete both films while cut off", WAIT, || {
        Ok(lab.film(1, &first)?.1 && lab.film(1, &second)?.1)
    })?;
    for i in [2, 3] {
        let films = lab.cli(i, &["films", "--json"])?;
        assert!(
            !films.contains(&second),
            "{} knows the second film through a cut border: {films}",
            lab.ns(i)
        );
    }
    lab.set_border(true)?;
    eprintln!("ISP 1 cut off for {:.1} s", cut.elapsed().as_secs_f64());
    let back = Instant::now();
    for i in [2, 3] {
        wait_until(&format!("{} to complete both films", lab.ns(i)), WAIT, || {
            Ok(lab.film(i, &first)?.1 && lab.film(i, &second)?.1)
        })?;
        let content = data(hosts[i].0).join("content");
        same_files(&first_src, &content.join(&first))?;
        same_files(&second_src, &content.join(&second))?;
    }
    eprintln!("ISP 1 complete {:.1} s after reconnection", back.elapsed().as_secs_f64());
    Ok(())
}

/// libfaketime (Debian's `faketime` package) shifts the wall clock of the process it is preloaded into;
/// the monotonic clock, which the node's timers use, is left alone.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A cinema whose clock is a day ahead and one a day behind, as the clock-skew rule says (operator
/// guide, "Clocks"): the one ahead applies the catalogue and completes; the one behind refuses the entry
/// as from the future (counted, not applied) until its clock is right again, then the entry comes again by
/// anti-entropy, applies, and the transfer completes, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn cinemas_a_day_ahead_and_a_day_behind() -> anyhow::Result<()> {
    if !Path::new(FAKETIME).exists() {
        bail!("{FAKETIME} missing: install Debian's faketime package (.ci/run does, as root)");
    }
    let (tmp, key, trusted) = setup()?;
    let (dist, p) = distributor(tmp.path(), &key, &trusted, 20e6, 8 << 20).await?;
    let boot = dist.addr.to_string();
    let config = config_file(tmp.path(), "1MiB")?;
    let config = config.to_str().context("path")?;
    let start = |name: &str, offset: &Path| {
        let offset = offset.to_str().context("path")?;
        let env = [
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_CACHE_DURATION", "1"),
        ];
        NodeProcess::start_with(&tmp.path().join(name), &key.public(), &boot, &["--config", config], &env)
    };
    let (ahead_clock, behind_clock) = (tmp.path().join("ahead.clock"), tmp.path().join("behind.clock"));
    std::fs::write(&ahead_clock, "+1d\n")?;
    std::fs::write(&behind_clock, "-1d\n")?;
    let ahead = start("ahead", &ahead_clock)?;
    let behind = start("behind", &behind_clock)?;

    wait_for("the cinema a day ahead to complete", WAIT, || async {
        Ok(ahead.have_chunks(&p.id).await?.1.then_some(()))
    })
    .await?;
    same_files(&p.source, &tmp.path().join("ahead/content").join(p.id.to_hex()))?;
    let future = "cinemesh_catalogue_rejected_total{reason=\"from_the_future\"}";
    wait_for("the cinema a day behind to refuse the entry as from the future", WAIT, || async {
        Ok((behind.metric(future).await? >= 1.0).then_some(()))
    })
    .await?;
    assert_eq!(behind.have_chunks(&p.id).await?, (0, false), "an entry from the future was applied");
    assert_eq!(behind.metric("cinemesh_catalogue_applied_total").await?, 0.0);

    std::fs::write(&behind_clock, "+0\n")?; // NTP sets the clock right
    wait_for("the cinema whose clock was set right to complete", WAIT, || async {
        Ok(behind.have_chunks(&p.id).await?.1.then_some(()))
    })
    .await?;
    same_files(&p.source, &tmp.path().join("behind/content").join(p.id.to_hex()))?;
    drop((ahead, behind));
    dist.stop().await
}
