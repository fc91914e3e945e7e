//! Real hosts in Linux network namespaces the test creates itself (root and iproute2 needed): a hub
//! namespace holding one bridge per ISP, one namespace per host on 10.77.0.<i+1>/24 with its upload
//! shaped by `tc tbf`, real `cinemesh run` daemons inside, driven by the real CLI run inside each
//! namespace. With two ISPs, their bridges are joined by one veth pair, the border, which
//! [`Lab::set_border`] takes down and up again. Dropping the [`Lab`] kills the daemons and deletes the
//! namespaces (which removes every interface in them).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::bin;

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces and daemons of one test; everything is removed on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    hosts: Vec<String>,
    daemons: Vec<Option<Child>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().flatten() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.hosts.iter().chain([&self.hub()]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// One ISP: every host on one bridge, its upload shaped to `rate` (e.g. `40mbit`).
    pub fn new(hosts: &[&str], rate: &str) -> anyhow::Result<Self> {
        let hosts: Vec<(&str, usize)> = hosts.iter().map(|h| (*h, 0)).collect();
        Self::tagged("", &hosts, 1, rate)
    }

    /// `isps` ISPs (1 or 2), host `(name, k)` on ISP `k`'s bridge; two ISPs are joined by the border.
    /// `tag` (at most 3 characters) keeps apart the names of labs of one test binary running at once.
    pub fn tagged(tag: &str, hosts: &[(&str, usize)], isps: usize, rate: &str) -> anyhow::Result<Self> {
        let prefix = format!("cm{}{tag}", std::process::id());
        let mut lab = Lab { prefix: prefix.clone(), hosts: Vec::new(), daemons: Vec::new() };
        let hub = lab.hub();
        run(&["ip", "netns", "add", &hub])?;
        for k in 0..isps {
            run(&["ip", "-n", &hub, "link", "add", &format!("br{k}"), "type", "bridge"])?;
            run(&["ip", "-n", &hub, "link", "set", &format!("br{k}"), "up"])?;
        }
        if isps == 2 {
            run(&["ip", "-n", &hub, "link", "add", "bd0", "type", "veth", "peer", "name", "bd1"])?;
            for k in 0..2 {
                run(&[
                    "ip",
                    "-n",
                    &hub,
                    "link",
                    "set",
                    &format!("bd{k}"),
                    "master",
                    &format!("br{k}"),
                    "up",
                ])?;
            }
        }
        for (i, (h, k)) in hosts.iter().enumerate() {
            let ns = format!("{prefix}{h}");
            run(&["ip", "netns", "add", &ns])?;
            lab.hosts.push(ns.clone());
            lab.daemons.push(None);
            let (inner, outer) = (format!("{prefix}i{i}"), format!("{prefix}o{i}"));
            run(&[
                "ip", "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns",
                &hub,
            ])?;
            run(&["ip", "-n", &hub, "link", "set", &outer, "master", &format!("br{k}"), "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", Self::ip(i)), "dev", &inner])?;
            run(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &inner, "root", "tbf", "rate", rate,
                "burst", "64kb", "latency", "200ms",
            ])?;
        }
        Ok(lab)
    }

    fn hub(&self) -> String {
        format!("{}hub", self.prefix)
    }

    /// Host `i`'s address.
    pub fn ip(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Takes the border between the two ISPs down (`false`: cut off) or up again.
    pub fn set_border(&self, up: bool) -> anyhow::Result<()> {
        run(&["ip", "-n", &self.hub(), "link", "set", "bd0", if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Runs the CLI inside host `i`'s namespace.
    pub fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let bin = bin();
        let mut cmd = vec!["ip", "netns", "exec", self.ns(i), bin.to_str().context("binary path")?];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    /// Starts `cinemesh run` inside host `i`'s namespace (listening on port 4710, API on 127.0.0.1:4711
    /// of the namespace, open mesh, no mDNS) with `args` after these. Unless `args` name a `--config`, the
    /// daemon keeps 1 MiB free on the disk as `NodeProcess::start` does (config file `<data>.toml`).
    pub fn daemon(&mut self, i: usize, data: &Path, args: &[&str]) -> anyhow::Result<()> {
        let listen = format!("/ip4/{}/tcp/4710", Self::ip(i));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)])
            .arg(bin())
            .args(["run", "--no-mdns", "--open", "--listen", &listen])
            .args(["--api", "127.0.0.1:4711"]);
        if !args.contains(&"--config") {
            let config = data.with_extension("toml");
            std::fs::write(&config, "[storage]\nreserve = \"1MiB\"\n")?;
            cmd.arg("--config").arg(&config);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut old) = self.daemons[i].replace(child) {
            let _ = old.kill();
            let _ = old.wait();
        }
        Ok(())
    }

    /// Waits until the CLI's `status --json` answers in host `i`, and returns it.
    pub fn status(&self, i: usize, timeout: Duration) -> anyhow::Result<serde_json::Value> {
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

    /// The multiaddr of host `i`'s daemon, waiting until it answers.
    pub fn addr(&self, i: usize) -> anyhow::Result<String> {
        let status = self.status(i, Duration::from_secs(30))?;
        let peer = status["peer_id"].as_str().context("peer id in status")?;
        Ok(format!("/ip4/{}/tcp/4710/p2p/{peer}", Self::ip(i)))
    }

    /// `(have_chunks, complete)` of `content` in host `i` (0, false when it does not know it).
    pub fn film(&self, i: usize, content: &str) -> anyhow::Result<(u64, bool)> {
        let films: serde_json::Value = serde_json::from_str(&self.cli(i, &["films", "--json"])?)?;
        let film = films.as_array().and_then(|a| a.iter().find(|f| f["content_id"] == content));
        Ok(film
            .map(|f| (f["have_chunks"].as_u64().unwrap_or(0), f["complete"] == true))
            .unwrap_or((0, false)))
    }
}

/// Every file under `a` is under `b` with the same bytes.
pub fn same_files(a: &Path, b: &Path) -> anyhow::Result<()> {
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
