//! The lab's network, built with `ip` and `tc` from iproute2: one namespace per node, one per ISP holding
//! its bridge, and a core namespace whose bridge joins the ISPs. Everything is on one layer-2 segment
//! (10.201.0.0/16), so no routing is involved.
//!
//! ```text
//!  [cml-n3] eth0 ──veth── v3 [cml-isp1: br0] up0 ──veth── i1 [cml-core: br0] i0 ──veth── up0 [cml-isp0] ...
//!   tbf: upload            tbf: download   tbf: ISP egress    tbf: ISP ingress
//! ```
//!
//! Every link is shaped with a token bucket (`tbf`, a burst of 4 ms at the rate, at least 4 KiB, and a
//! 50 ms queue, [`QUEUE`]; a cinema's upload queue can be longer, as a modem's is: `--uplink-queue`). This
//! kernel has no `netem`: the scenario's latency is added by the lab's delay line ([`super::delay`]);
//! without it the one-way latency is that of veth and bridges (tens of microseconds). Only namespaces are
//! created (the interfaces live inside them), all named with [`PREFIX`], so deleting the namespaces removes
//! everything.

use std::process::Command;
use std::time::Duration;

use super::LabError;

/// The prefix of every namespace (and of the work directory) the lab creates.
pub const PREFIX: &str = "cml-";

/// Rates at or above this are left unshaped (a "100 Gbit/s" loopback class).
pub const UNSHAPED: f64 = 10e9 / 8.0;

/// Runs a command, returning its stdout; the error carries the command line and its stderr.
pub fn run(cmd: &[&str]) -> Result<String, LabError> {
    let line = cmd.join(" ");
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| LabError::Command {
        cmd: line.clone(),
        reason: format!("{e} (is iproute2 installed?)"),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: line,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespace of node `i`.
pub fn node_ns(i: usize) -> String {
    format!("{PREFIX}n{i}")
}

/// Namespace of ISP `k`.
pub fn isp_ns(k: usize) -> String {
    format!("{PREFIX}isp{k}")
}

/// The core namespace.
pub fn core_ns() -> String {
    format!("{PREFIX}core")
}

/// IPv4 address of node `i` (`i` < 62,500).
pub fn node_ip(i: usize) -> String {
    format!("10.201.{}.{}", i / 250, i % 250 + 1)
}

/// How long a shaped link's queue is (`tbf`'s `latency`: the bytes it holds are the rate times this).
pub const QUEUE: Duration = Duration::from_millis(50);

/// The `tc` arguments shaping a device's egress to `rate` bytes/s with a queue of `queue` at that rate,
/// or `None` when it stays unshaped.
pub fn tbf_args(rate: f64, queue: Duration) -> Option<Vec<String>> {
    if rate >= UNSHAPED {
        return None;
    }
    let bits = (rate * 8.0).round() as u64;
    let burst = ((rate * 0.004) as u64).max(4096);
    Some(
        ["qdisc", "add", "dev", "DEV", "root", "tbf", "rate"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                format!("{bits}bit"),
                "burst".into(),
                burst.to_string(),
                "latency".into(),
                format!("{}us", queue.as_micros().max(1)),
            ])
            .collect(),
    )
}

fn shape(ns: &str, dev: &str, rate: f64, queue: Duration) -> Result<(), LabError> {
    let Some(mut args) = tbf_args(rate, queue) else { return Ok(()) };
    args[3] = dev.to_owned();
    let mut cmd = vec!["ip", "netns", "exec", ns, "tc"];
    cmd.extend(args.iter().map(String::as_str));
    run(&cmd).map(|_| ())
}

/// The per-namespace sysctl naming TCP's congestion control.
const CONGESTION_CONTROL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Runs `f` on a thread inside namespace `ns` (`/proc/sys/net` and `/proc/thread-self/net` are then
/// the namespace's).
pub(super) fn in_ns<T: Send>(
    ns: &str,
    f: impl FnOnce() -> Result<T, LabError> + Send,
) -> Result<T, LabError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            super::probe::enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(LabError::Unsupported(format!("a thread in {ns} panicked"))))
    })
}

/// TCP's congestion control in namespace `ns` (`net.ipv4.tcp_congestion_control`: a new namespace
/// starts with the host's).
pub fn congestion_control(ns: &str) -> Result<String, LabError> {
    in_ns(ns, || {
        std::fs::read_to_string(CONGESTION_CONTROL)
            .map(|t| t.trim().to_owned())
            .map_err(LabError::io(format!("cannot read {CONGESTION_CONTROL} in {ns}")))
    })
}

/// Sets TCP's congestion control in namespace `ns` to `name` (`cubic`, `bbr`, `reno`...); a name the
/// kernel does not have, or does not allow outside the host's namespace, is an error naming the ones it has
/// and allows.
pub fn set_congestion_control(ns: &str, name: &str) -> Result<(), LabError> {
    in_ns(ns, || {
        std::fs::write(CONGESTION_CONTROL, name).map_err(|e| {
            let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
            let have = read("/proc/sys/net/ipv4/tcp_available_congestion_control");
            let allowed = read("/proc/sys/net/ipv4/tcp_allowed_congestion_control");
            LabError::Unsupported(congestion_control_error(name, &e, &have, &allowed))
        })
    })
}

/// Why `name` could not be set (`e`), given the kernel's available and allowed lists: a namespace may set
/// only an allowed one, and the host's root can allow another.
fn congestion_control_error(name: &str, e: &std::io::Error, have: &str, allowed: &str) -> String {
    let (have, allowed) = (have.trim(), allowed.trim());
    let listed = |list: &str| list.split_whitespace().any(|n| n == name);
    if listed(have) && !allowed.is_empty() && !listed(allowed) {
        format!(
            "TCP congestion control {name:?} ({e}): this kernel has it, but a network namespace may set only \
             those in net.ipv4.tcp_allowed_congestion_control ({allowed}); allow it on the host as root: \
             sysctl -w net.ipv4.tcp_allowed_congestion_control=\"{allowed} {name}\""
        )
    } else {
        format!("TCP congestion control {name:?} ({e}); this kernel has: {have}")
    }
}

/// Sets the network sysctl `key` (`net.ipv4.tcp_slow_start_after_idle`: dotted, under `net.`, as `sysctl`
/// names them) to `value` in namespace `ns`; one the namespace lacks is an error naming it.
pub fn set_sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let ok = key.starts_with("net.")
        && key.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if !ok {
        return Err(LabError::Unsupported(format!(
            "sysctl {key:?}: the lab sets network sysctls only (net.ipv4.tcp_slow_start_after_idle...)"
        )));
    }
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_ns(ns, || {
        std::fs::write(&path, value)
            .map_err(|e| LabError::Unsupported(format!("sysctl {key} = {value} in {ns}: {e} ({path})")))
    })
}

/// Creates namespace `ns` with its loopback up.
pub fn add_ns(ns: &str) -> Result<(), LabError> {
    run(&["ip", "netns", "add", ns])?;
    run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates bridge `br0` in `ns`, up.
pub fn add_bridge(ns: &str) -> Result<(), LabError> {
    run(&["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", ns, "link", "set", "br0", "up"])?;
    Ok(())
}

/// A veth pair `a` in `ns_a` and `b` in `ns_b`, both up; `b` enslaved to `ns_b`'s bridge, and `a` to
/// `ns_a`'s when `a_bridged`.
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str, a_bridged: bool) -> Result<(), LabError> {
    run(&["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b])?;
    run(&["ip", "-n", ns_b, "link", "set", b, "master", "br0", "up"])?;
    if a_bridged {
        run(&["ip", "-n", ns_a, "link", "set", a, "master", "br0", "up"])?;
    } else {
        run(&["ip", "-n", ns_a, "link", "set", a, "up"])?;
    }
    Ok(())
}

/// Creates the core and one ISP namespace each with its bridge; the ISP's border shaped both ways to
/// `transit[k]` bytes/s (`None`: unshaped).
pub fn build_isps(transit: &[Option<f64>]) -> Result<(), LabError> {
    let core = core_ns();
    add_ns(&core)?;
    add_bridge(&core)?;
    for (k, t) in transit.iter().enumerate() {
        let ns = isp_ns(k);
        add_ns(&ns)?;
        add_bridge(&ns)?;
        let inner = format!("i{k}");
        veth(&ns, "up0", &core, &inner, true)?;
        if let Some(rate) = *t {
            shape(&ns, "up0", rate, QUEUE)?;
            shape(&core, &inner, rate, QUEUE)?;
        }
    }
    Ok(())
}

/// Creates node `i`'s namespace on ISP `isp`, its address, and shapes its upload (with a queue of
/// `up_queue`) and its download.
pub fn build_node(i: usize, isp: usize, up: f64, down: f64, up_queue: Duration) -> Result<(), LabError> {
    let ns = node_ns(i);
    let isp_ns = isp_ns(isp);
    add_ns(&ns)?;
    let outer = format!("v{i}");
    veth(&ns, "eth0", &isp_ns, &outer, false)?;
    run(&["ip", "-n", &ns, "addr", "add", &format!("{}/16", node_ip(i)), "dev", "eth0"])?;
    shape(&ns, "eth0", up, up_queue)?;
    shape(&isp_ns, &outer, down, QUEUE)?;
    Ok(())
}

/// Namespaces whose name starts with [`PREFIX`].
pub fn ours() -> Result<Vec<String>, LabError> {
    Ok(run(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Ends every process left in our namespaces (SIGKILL) and deletes the namespaces. Returns how many
/// namespaces were removed.
pub fn remove_all() -> Result<usize, LabError> {
    let list = ours()?;
    for ns in &list {
        if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    for ns in &list {
        // A namespace whose processes are still exiting can refuse for a moment: retry briefly.
        let mut left = 50;
        while run(&["ip", "netns", "del", ns]).is_err() && left > 0 {
            left -= 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(list.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_shaping() {
        assert_eq!(node_ns(3), "cml-n3");
        assert_eq!(isp_ns(0), "cml-isp0");
        assert!(core_ns().starts_with(PREFIX));
        assert_eq!(node_ip(0), "10.201.0.1");
        assert_eq!(node_ip(251), "10.201.1.2");
        // 20 Mbit/s: burst 4 ms = 10,000 bytes.
        let a = tbf_args(20e6 / 8.0, QUEUE).unwrap();
        assert_eq!(a[7..], ["20000000bit", "burst", "10000", "latency", "50000us"]);
        // 1 Mbit/s: 4 ms is 500 bytes, less than a packet: 4 KiB.
        assert_eq!(tbf_args(1e6 / 8.0, QUEUE).unwrap()[9], "4096");
        assert_eq!(tbf_args(100e9 / 8.0, QUEUE), None);
        // A modem's queue of 1.5 s.
        assert_eq!(tbf_args(1e6 / 8.0, Duration::from_millis(1500)).unwrap()[11], "1500000us");
    }

    #[test]
    fn a_congestion_control_the_kernel_has_but_does_not_allow_says_how_to_allow_it() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let msg = congestion_control_error("cubic", &e, "reno bbr cubic\n", "reno bbr\n");
        assert!(msg.contains("net.ipv4.tcp_allowed_congestion_control (reno bbr)"), "{msg}");
        assert!(
            msg.contains("sysctl -w net.ipv4.tcp_allowed_congestion_control=\"reno bbr cubic\""),
            "{msg}"
        );
        // One the kernel lacks names those it has.
        let msg = congestion_control_error("nosuchcc", &e, "reno bbr cubic\n", "reno bbr\n");
        assert!(msg.ends_with("this kernel has: reno bbr cubic"), "{msg}");
        // One allowed that failed for another reason is not told to be allowed again.
        let msg = congestion_control_error("bbr", &e, "reno bbr cubic", "reno bbr");
        assert!(!msg.contains("sysctl -w"), "{msg}");
    }
}
