//! The lab's processes: `cinemesh run` daemons started inside a node's namespace (`ip netns exec` execs
//! the daemon, so the child's pid is the daemon's), each in its own process group so a Ctrl-C at the
//! terminal reaches only the lab, which then stops them in order. Stopping is SIGTERM and a bounded wait,
//! then SIGKILL; a crash is SIGKILL at once. Every daemon is reaped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::LabError;

/// How long a daemon gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// One running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `bin run --config config` in namespace `ns`, its stdout and stderr appended to `log`.
    pub fn start(ns: &str, bin: &Path, config: &Path, log: &Path) -> Result<Daemon, LabError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(LabError::io(format!("cannot open {}", log.display())))
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .process_group(0)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: format!("ip netns exec {ns} {} run", bin.display()),
                reason: e.to_string(),
            })?;
        Ok(Daemon { child })
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the daemon: SIGKILL when `crash`, else SIGTERM and up to [`STOP_GRACE`] before SIGKILL.
    /// Returns true when it exited on SIGTERM in time.
    pub fn stop(mut self, crash: bool) -> bool {
        let pid = Pid::from_raw(self.child.id() as i32);
        if !crash && self.running() {
            let _ = kill(pid, Signal::SIGTERM);
            let until = Instant::now() + STOP_GRACE;
            while Instant::now() < until {
                if !self.running() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// Runs the node CLI (`bin args...`) in namespace `ns` and returns its stdout.
pub fn cli(ns: &str, bin: &Path, args: &[&str]) -> Result<String, LabError> {
    let bin = bin.display().to_string();
    let mut cmd = vec!["ip", "netns", "exec", ns, bin.as_str()];
    cmd.extend_from_slice(args);
    super::net::run(&cmd)
}

/// The node binary: `explicit`, else `cinemesh` beside the running executable.
pub fn node_bin(explicit: Option<&Path>) -> Result<PathBuf, LabError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .map_err(LabError::io("cannot locate the running executable"))?
            .with_file_name("cinemesh"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::Unsupported(format!(
            "no node binary at {}: build it (cargo build --release -p cinemesh) or pass --node-bin",
            path.display()
        )))
    }
}
