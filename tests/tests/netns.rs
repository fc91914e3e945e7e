//! Real hosts in Linux network namespaces this test creates itself: a distributor and two cinemas behind a
//! bridge, every host's upload shaped with `tc tbf` (a token bucket: the rate of an access link; the kernels
//! here have no `netem`, so no latency is added), real `cinemesh run` daemons, driven by the real CLI run
//! inside each namespace. Needs root and iproute2 (`.ci/run` installs iproute2); as another
//! user the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const BIN: &str = env!("CARGO_BIN_EXE_cinemesh-node");

fn run(cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces and daemons of one test; everything is removed on drop.
struct Lab {
    prefix: String,
    hosts: Vec<String>,
    daemons: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.hosts.iter().chain([&format!("{}hub", self.prefix)]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// A hub namespace with a bridge, and one namespace per host on 10.77.0.<i+1>/24, its upload shaped to
    /// `rate` (e.g. `40mbit`).
    fn new(hosts: &[&str], rate: &str) -> anyhow::Result<Self> {
        let prefix = format!("cm{}", std::process::id());
        let hub = format!("{prefix}hub");
        let mut lab = Lab { prefix: prefix.clone(), hosts: Vec::new(), daemons: Vec::new() };
        run(&["ip", "netns", "add", &hub])?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        for (i, h) in hosts.iter().enumerate() {
            let ns = format!("{prefix}{h}");
            run(&["ip", "netns", "add", &ns])?;
            lab.hosts.push(ns.clone());
            let (inner, outer) = (format!("{prefix}i{i}"), format!("{prefix}o{i}"));
            run(&[
                "ip", "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns",
                &hub,
            ])?;
            run(&["ip", "-n", &hub, "link", "set", &outer, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("10.77.0.{}/24", i + 1), "dev", &inner])?;
            run(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &inner, "root", "tbf", "rate", rate,
                "burst", "64kb", "latency", "200ms",
            ])?;
        }
        Ok(lab)
    }

    fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Runs the CLI inside host `i`'s namespace.
    fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = vec!["ip", "netns", "exec", self.ns(i), BIN];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    /// Starts `cinemesh run` inside host `i`'s namespace.
    fn daemon(&mut self, i: usize, data: &Path, args: &[&str]) -> anyhow::Result<()> {
        let listen = format!("/ip4/10.77.0.{}/tcp/4710", i + 1);
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(i), BIN, "run", "--no-mdns", "--open", "--listen", &listen])
            .args(["--api", "127.0.0.1:4711", "--data-dir"])
            .arg(data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.daemons.push(child);
        Ok(())
    }

    /// Waits until the CLI's `status --json` answers in host `i`, and returns it.
    fn status(&self, i: usize, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            if let Ok(out) = self.cli(i, &["status", "--json"]) {
                return Ok(serde_json::from_str(&out)?);
            }
            if start.elapsed() > timeout {
                bail!("the daemon in {} never answered", self.ns(i));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn is_root() -> bool {
    run(&["id", "-u"]).map(|s| s.trim() == "0").unwrap_or(false)
}

fn same_files(a: &Path, b: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(a)? {
        let entry = entry?;
        let (x, y) = (entry.path(), b.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            same_files(&x, &y)?;
        } else if std::fs::read(&x)? != std::fs::read(&y)? {
            bail!("{} differs from {}", y.display(), x.display());
        }
    }
    Ok(())
}

#[test]
fn a_film_crosses_shaped_links_between_namespaced_hosts() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("a_film_crosses_shaped_links_between_namespaced_hosts: needs root for network namespaces; not run");
        return Ok(());
    }
    // Every host uploads at 40 Mbit/s.
    let mut lab = Lab::new(&["dist", "cina", "cinb"], "40mbit")?;
    let tmp = tempfile::tempdir()?;
    let key = tmp.path().join("distributor.key");
    let public = run(&[BIN, "keygen", "--out", key.to_str().context("path")?])?.trim().to_owned();
    let data = |n: &str| -> PathBuf { tmp.path().join(n) };

    lab.daemon(0, &data("dist"), &["--role", "distributor", "--trust", &public, "--isp", "dc"])?;
    let peer = lab.status(0, Duration::from_secs(30))?["peer_id"].as_str().context("peer id")?.to_owned();
    let boot = format!("/ip4/10.77.0.1/tcp/4710/p2p/{peer}");
    for (i, isp) in [(1, "isp-a"), (2, "isp-b")] {
        lab.daemon(
            i,
            &data(&format!("cinema{i}")),
            &["--trust", &public, "--bootstrap", &boot, "--isp", isp],
        )?;
        lab.status(i, Duration::from_secs(30))?;
    }

    let film = tmp.path().join("film");
    cinemesh::demo::generate_film(&film, 8 << 20, 9)?;
    let id = lab.cli(
        0,
        &[
            "publish",
            "--key",
            key.to_str().context("path")?,
            film.to_str().context("path")?,
            "--chunk-size",
            "1MiB",
        ],
    )?;
    let id = id.trim().to_owned();
    let started = Instant::now();
    for i in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let films: serde_json::Value = serde_json::from_str(&lab.cli(i, &["films", "--json"])?)?;
            let film = films.as_array().and_then(|a| a.iter().find(|f| f["content_id"] == id.as_str()));
            if film.is_some_and(|f| f["complete"] == true) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} never completed the film: {films}", lab.ns(i));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        same_files(&film, &data(&format!("cinema{i}")).join("content").join(&id))?;
    }
    // Figures for docs/benchmarks.md ("Shaped links in network namespaces"); not asserted.
    eprintln!(
        "netns: 8 MiB to 2 cinemas, every upload 40 Mbit/s: {:.2} s after publish",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
