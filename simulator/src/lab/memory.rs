//! The memory the daemons write into: a virtual machine's free page reporting held off while the lab runs,
//! and that memory backed before the first daemon starts.
//!
//! A guest kernel with free page reporting (`virtio_balloon`) hands free memory back to its host in the
//! background. The next write into such a page faults on the host, several times slower than a write into
//! memory the guest holds. Every chunk a lab daemon writes lands in fresh page cache, so on such a machine
//! the lab measured the host's page faults: on this project's 2-core VM, lab-16 on cubic gave 0.711 and 0.721
//! of the bound with reporting on, 0.834 and 0.821 with it held off and the memory warmed, the same binary
//! (docs/benchmarks.md, "The lab measured its VM's page faults"). Warming alone does not help: within a
//! minute the host has the warmed memory back. So the lab raises `page_reporting_order` beyond the largest
//! free block for the run (no block is reported), writes and deletes the bytes its daemons will write, and
//! restores the order when it ends, error or not. The reports say what was done and how much memory the
//! guest reported during the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::LabError;

/// The kernel's page reporting parameters (absent without free page reporting).
const PARAMS: &str = "/sys/module/page_reporting/parameters";

/// The highest order tried: above any kernel's largest free block.
const ORDER_CEILING: u32 = 20;

/// What the lab did about the machine's memory, for the reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryFigures {
    /// `page_reporting_order` before the run and during it, when reporting was held off.
    pub reporting_order: Option<(u32, u32)>,
    /// Memory the guest reported to its host during the run, KiB (`reported_kib`'s growth); `None`
    /// without the counter.
    pub reported_kib: Option<u64>,
    /// Bytes written and deleted before the first daemon started.
    pub warmed_bytes: u64,
    /// How long that took, seconds.
    pub warm_secs: f64,
}

/// Free page reporting held off; restores the order it found when dropped.
#[derive(Debug)]
pub struct HeldReporting {
    path: PathBuf,
    previous: u32,
    held: u32,
    reported_at_start: Option<u64>,
}

impl HeldReporting {
    /// Holds reporting off: the largest order this kernel accepts, if above the current one. `None` when
    /// the machine has no free page reporting or the order cannot be raised (then nothing changed).
    pub fn hold(params: &Path) -> Option<Self> {
        let path = params.join("page_reporting_order");
        let previous: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
        let held =
            (previous + 1..=ORDER_CEILING).rev().find(|o| std::fs::write(&path, o.to_string()).is_ok())?;
        Some(Self { path, previous, held, reported_at_start: reported_kib(params) })
    }

    /// The machine's own parameters.
    pub fn hold_machine() -> Option<Self> {
        Self::hold(Path::new(PARAMS))
    }

    /// `(before, during)`.
    pub fn orders(&self) -> (u32, u32) {
        (self.previous, self.held)
    }

    /// KiB reported to the host since the hold began.
    pub fn reported_since(&self) -> Option<u64> {
        let params = self.path.parent()?;
        Some(reported_kib(params)?.saturating_sub(self.reported_at_start?))
    }
}

impl Drop for HeldReporting {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, self.previous.to_string()) {
            eprintln!(
                "lab: could not restore {} to {}: {e}; restore it by hand",
                self.path.display(),
                self.previous
            );
        }
    }
}

/// `reported_kib`, the memory the guest has reported to its host since boot.
pub fn reported_kib(params: &Path) -> Option<u64> {
    std::fs::read_to_string(params.join("reported_kib")).ok()?.trim().parse().ok()
}

/// The machine's counter.
pub fn machine_reported_kib() -> Option<u64> {
    reported_kib(Path::new(PARAMS))
}

/// The bytes to warm: what the daemons will write (`writes`), at most half the memory available now.
pub fn warm_budget(writes: u64) -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    available.map_or(writes, |a| writes.min(a / 2))
}

/// Writes `bytes` into a file in `dir` and deletes it, so the page cache the daemons fill next is memory
/// the guest holds. Returns how long it took.
pub fn warm(dir: &Path, bytes: u64) -> Result<Duration, LabError> {
    const BLOCK: usize = 4 << 20;
    let start = Instant::now();
    let path = dir.join("warm.tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        let block = vec![0x5au8; BLOCK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        Ok(())
    })();
    let removed = std::fs::remove_file(&path);
    result.map_err(LabError::io(format!("cannot warm the page cache in {}", dir.display())))?;
    removed.map_err(LabError::io(format!("cannot remove {}", path.display())))?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(order: &str, reported: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("page_reporting_order"), order).unwrap();
        std::fs::write(d.path().join("reported_kib"), reported).unwrap();
        d
    }

    #[test]
    fn reporting_is_held_at_the_highest_order_and_restored_when_dropped() {
        let d = params("9\n", "1000\n");
        let held = HeldReporting::hold(d.path()).expect("held");
        assert_eq!(held.orders(), (9, ORDER_CEILING));
        let read = || std::fs::read_to_string(d.path().join("page_reporting_order")).unwrap();
        assert_eq!(read(), ORDER_CEILING.to_string());
        std::fs::write(d.path().join("reported_kib"), "1500").unwrap();
        assert_eq!(held.reported_since(), Some(500));
        drop(held);
        assert_eq!(read(), "9");
    }

    #[test]
    fn without_page_reporting_nothing_is_held() {
        let d = tempfile::tempdir().unwrap();
        assert!(HeldReporting::hold(d.path()).is_none());
        let bad = params("nine", "0");
        assert!(HeldReporting::hold(bad.path()).is_none());
        assert_eq!(std::fs::read_to_string(bad.path().join("page_reporting_order")).unwrap(), "nine");
        let top = params(&ORDER_CEILING.to_string(), "0");
        assert!(HeldReporting::hold(top.path()).is_none(), "already above every block");
    }

    #[test]
    fn warming_writes_then_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        warm(d.path(), 9 << 20).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        assert!(warm(&d.path().join("missing"), 1).is_err());
        // Bounded by the memory available (read from /proc/meminfo), never the whole request.
        assert!(warm_budget(u64::MAX) < u64::MAX / 2);
    }
}
