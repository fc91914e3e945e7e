//! A real `cinemesh run` process on loopback for the tests: started from any argument list, its HTTP API
//! address read from its JSON log, killed (SIGKILL, no clean shutdown) when dropped. The last lines of its
//! log are kept and written to the test's output when it is dropped, which the harness shows only for a
//! failing test.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cinemesh_overlay::catalogue::DistributorKey;
use cinemesh_overlay::ContentId;

/// The `cinemesh` CLI under the tests' name for it (`tests/src/bin/cinemesh-node.rs`), which cargo builds
/// beside the test binaries' `deps/` directory (a library cannot use `CARGO_BIN_EXE_*`).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(|d| if d.ends_with("deps") { d.parent().unwrap_or(d) } else { d });
    dir.unwrap_or(Path::new(".")).join(format!("cinemesh-node{}", std::env::consts::EXE_SUFFIX))
}

/// Log lines kept of each daemon: enough for the minute before a failure at `info`.
const LOG_TAIL: usize = 200;

/// A `cinemesh run` process, killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Its HTTP API, `host:port`.
    pub api: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Captured by the test harness and shown only if the test fails.
        println!("--- last log lines of the daemon with API {} ---\n{}", self.api, self.log_tail());
    }
}

impl NodeProcess {
    /// A cinema on loopback (open mesh, no mDNS, ISP `isp-a`) with its data in `data_dir`, trusting `key`,
    /// joining through `bootstrap`, keeping 1 MiB free on the disk: the shipped 10 GiB reserve would make
    /// the tests depend on the machine's free space (a CI run refused the content with 9.7 GiB free). The
    /// config file is written beside `data_dir` (`<data_dir>.toml`).
    pub fn start(data_dir: &Path, key: &DistributorKey, bootstrap: &str) -> anyhow::Result<Self> {
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, "[storage]\nreserve = \"1MiB\"\n")
            .with_context(|| format!("cannot write {}", config.display()))?;
        let config = config.to_str().context("a config path that is not UTF-8")?;
        Self::start_with(data_dir, key, bootstrap, &["--config", config], &[])
    }

    /// [`start`](Self::start) with more `run` flags and environment variables.
    pub fn start_with(
        data_dir: &Path,
        key: &DistributorKey,
        bootstrap: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--no-mdns", "--open"])
            .args(["--isp", "isp-a", "--data-dir"])
            .arg(data_dir)
            .args(["--trust", &key.to_string(), "--bootstrap", bootstrap])
            .args(args)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Spawns `cmd` (a `cinemesh run` command line, `--log-format json` is added) and waits until the
    /// daemon logs its API address.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the cinemesh-node daemon")?;
        let stderr = child.stderr.take().context("no stderr")?;
        // The daemon logs its API address; read on (the pipe must be drained) until it exits, keeping the
        // last lines.
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let tail = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(api) = v["fields"]["api"].as_str() {
                        let _ = tx.send(api.to_owned());
                    }
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let mut daemon = Self { child, api: String::new(), log };
        daemon.api =
            rx.recv_timeout(Duration::from_secs(30)).context("the daemon never logged its API address")?;
        Ok(daemon)
    }

    /// The last lines the daemon logged (at most 200), oldest first.
    pub fn log_tail(&self) -> String {
        let tail = self.log.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits until the process is gone (its files and locks are released).
    pub fn kill(self) {
        drop(self)
    }

    /// GET `path` of the API, as text.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}{path}", self.api)).await?.error_for_status()?.text().await?)
    }

    /// One sample of `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        Ok(cinemesh::local::metric_value(&self.get("/metrics").await?, sample))
    }

    /// Content bytes received in all, whatever their sender's locality.
    pub async fn bytes_received(&self) -> anyhow::Result<f64> {
        Ok(cinemesh_sim::lab::probe::Bytes::from_metrics(&self.get("/metrics").await?).down)
    }

    /// Chunks held of `id`, and whether it is complete (0, false when the node does not know it).
    pub async fn have_chunks(&self, id: &ContentId) -> anyhow::Result<(u32, bool)> {
        let films: serde_json::Value = serde_json::from_str(&self.get("/films").await?)?;
        let film = films.as_array().and_then(|a| a.iter().find(|f| f["content_id"] == id.to_hex()));
        Ok(film
            .map(|f| (f["have_chunks"].as_u64().unwrap_or(0) as u32, f["complete"] == true))
            .unwrap_or((0, false)))
    }

    /// Waits (up to `timeout`) until the node holds at least `at_least` chunks of `id` without having
    /// completed it; fails if it completes first (`before` names the event the test needed to come
    /// mid-transfer). Returns the chunks held.
    pub async fn wait_partly_held(
        &self,
        id: &ContentId,
        at_least: u32,
        before: &str,
        timeout: Duration,
    ) -> anyhow::Result<u32> {
        cinemesh::local::wait_for("the cinema to hold a few chunks", timeout, || async {
            let (have, complete) = self.have_chunks(id).await?;
            if complete {
                anyhow::bail!("the download finished before {before}; slow the distributor down");
            }
            Ok((have >= at_least).then_some(have))
        })
        .await
    }
}
