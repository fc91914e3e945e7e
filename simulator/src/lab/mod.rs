//! The lab: a scenario run for real, beside the simulator's prediction. One network namespace per node,
//! a bridge per ISP, shaped links ([`net`]), real `cinemesh run` daemons configured from the scenario's
//! `[gossip]`, `[transfer]` and `[policy]` ([`config`], [`daemon`]), the distributor publishing with the
//! real CLI, cinemas started, stopped and crashed at the scenario's times ([`plan`]), and what the
//! daemons say about themselves read from their API ([`observe`], [`probe`]) and completion hooks. The
//! outputs are the simulator's: `report.json`, `nodes.csv`, the plots ([`outputs`]).
//!
//! Safe to run: it needs root and says so; everything it creates carries [`net::PREFIX`] (namespaces and
//! the work directory) and is removed on exit, on error, on Ctrl-C and at the next start after a crash;
//! every daemon it starts it stops; the run is bounded by `timeout`. One lab at a time per machine.

pub mod config;
pub mod daemon;
pub mod delay;
pub mod error;
pub mod memory;
pub mod net;
pub mod observe;
pub mod outputs;
pub mod plan;
pub mod probe;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use error::LabError;

use crate::engine;
use crate::scenario::Scenario;
use daemon::Daemon;
use observe::Observer;
use plan::Action;

/// Most nodes the lab runs (each is a daemon; this machine has 2 cores).
pub const MAX_NODES: u32 = 40;
/// How long a daemon gets to answer on its API after it starts.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `cinemesh` binary the daemons run.
    pub node_bin: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// The seed (the simulator's: same topology, targets and late cinemas).
    pub seed: u64,
    /// The run stops after this long even if targets are incomplete.
    pub timeout: Duration,
    /// Interval of the API polls (`/films`; `/metrics` and `/peers` every fourth).
    pub poll: Duration,
    /// Every daemon's `transfer.upload_limit` at this share of its own link's upload rate (`None`: the
    /// scenario's `transfer.upload_limit`, the same for all).
    pub upload_limit_share: Option<f64>,
    /// TCP's congestion control in every node's namespace (`cubic`, `bbr`...; `None`: the host's, which a
    /// new namespace inherits).
    pub congestion_control: Option<String>,
    /// The queue of every cinema's upload (`tbf`'s `latency`; `None`: [`net::QUEUE`], as every link's):
    /// a DSL modem's is often a second or more.
    pub uplink_queue: Option<Duration>,
    /// Network sysctls set in every node's namespace (`net.ipv4.tcp_slow_start_after_idle`, `0`), as an
    /// operator would set them on the hosts.
    pub sysctls: Vec<(String, String)>,
    /// Hold every packet a node receives for the scenario's one-way latency of its pair ([`delay`]);
    /// false: no latency is added (veth and bridges: tens of microseconds).
    pub latency: bool,
}

/// What a lab run measured, before formatting.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Per node.
    pub nodes: Vec<observe::NodeObs>,
    /// Per node: seconds (after time 0) when its daemon was first started.
    pub first_start: Vec<Option<f64>>,
    /// Per node: content id -> completion time from its hook (seconds after time 0).
    pub hook_done: Vec<std::collections::BTreeMap<String, f64>>,
    /// Per film: content id and publish time (seconds after time 0), if published.
    pub published: Vec<Option<(String, f64)>>,
    /// Seconds from time 0 to the end of the run.
    pub end: f64,
    /// True when every target completed before the timeout.
    pub finished: bool,
    /// Per node: bytes its link sent and received (`eth0`, read by its poller at the end of the run,
    /// [`observe::link_counters`]); `None` when they could not be read.
    pub wire: Vec<Option<(u64, u64)>>,
    /// Per node: its namespace's TCP `(segments sent, retransmitted)` at the end of the run
    /// ([`observe::tcp_segments`]); `None` when unread.
    pub tcp: Vec<Option<(u64, u64)>>,
    /// TCP's congestion control in the nodes' namespaces (node 0's, read after setting up the network).
    pub congestion_control: Option<String>,
    /// What was done about the machine's memory, and what the guest reported to its host meanwhile.
    pub memory: memory::MemoryFigures,
    /// What the delay line did (`None`: the run added no latency).
    pub latency: Option<delay::DelayFigures>,
}

/// The work directory (one per machine: one lab at a time).
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{}lab", net::PREFIX))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Removes what a previous lab left (processes, namespaces, the work directory) unless one is running.
pub fn clean_previous() -> Result<(), LabError> {
    let work = work_dir();
    if let Ok(pid) = std::fs::read_to_string(work.join("lab.pid")) {
        if let Ok(pid) = pid.trim().parse::<u32>() {
            if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
                return Err(LabError::Busy(pid));
            }
        }
    }
    let n = net::remove_all()?;
    if n > 0 {
        eprintln!("lab: removed {n} namespaces left by an earlier run");
    }
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(LabError::io(format!("cannot remove {}", work.display())))?;
    }
    Ok(())
}

/// Everything the run holds; dropping it stops the daemons and removes namespaces and the work directory.
#[derive(Debug)]
struct Guard {
    daemons: Vec<Option<Daemon>>,
    work: PathBuf,
    /// Free page reporting held off for the run; restored after the daemons stop (fields drop after
    /// [`Guard::drop`]).
    reporting: Option<memory::HeldReporting>,
    /// The scenario's latency on the links; stopped when the guard drops if not before.
    delay: Option<delay::DelayLine>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().filter_map(Option::take) {
            d.stop(false);
        }
        let _ = net::remove_all();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A film's bytes: `size` pseudo-random bytes (seeded by the film's index) in `dir/<name>`.
fn write_film(dir: &Path, name: &str, size: u64, k: usize) -> Result<PathBuf, LabError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(LabError::io(format!("cannot create {}", dir.display())))?;
    let path = dir.join(name.replace('/', "_"));
    let f =
        std::fs::File::create(&path).map_err(LabError::io(format!("cannot create {}", path.display())))?;
    let mut w = std::io::BufWriter::new(f);
    let mut rng = ChaCha8Rng::seed_from_u64(0x66696c6d ^ k as u64);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        w.write_all(&buf[..n]).map_err(LabError::io(format!("cannot write {}", path.display())))?;
        left -= n as u64;
    }
    w.flush().map_err(LabError::io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// Reads a completion-hook file: `<unix seconds> <content id>` per line, as seconds after `t0_unix`.
pub fn read_done(path: &Path, t0_unix: f64) -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(t), Some(id)) = (it.next().and_then(|t| t.parse::<f64>().ok()), it.next()) {
            out.entry(id.to_owned()).or_insert(t - t0_unix);
        }
    }
    out
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Waits until node `ns`'s API answers `/status` with at least `peers` peers; returns the status.
fn wait_status(ns: &str, api: SocketAddr, peers: u64, timeout: Duration) -> Option<serde_json::Value> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        probe::enter(&ns).ok()?;
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(body) = probe::get(api, "/status", Duration::from_secs(2)) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    if v["peers"].as_u64().unwrap_or(0) >= peers {
                        return Some(v);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .join()
    .ok()
    .flatten()
}

/// Runs `sc` for real. `interrupted` is set by the caller's Ctrl-C handler.
pub fn run(sc: &Scenario, opts: &Options, interrupted: &AtomicBool) -> Result<Measured, LabError> {
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    if sc.nodes() > MAX_NODES {
        return Err(LabError::Unsupported(format!("{} nodes; the lab runs at most {MAX_NODES}", sc.nodes())));
    }
    if sc.seeders.count != 1 {
        return Err(LabError::Unsupported(
            "the lab runs one superseeder, the distributor that publishes: set seeders.count = 1".into(),
        ));
    }
    clean_previous()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(LabError::io(format!("cannot create {}", work.display())))?;
    let mut guard = Guard { daemons: Vec::new(), work: work.clone(), reporting: None, delay: None };
    std::fs::write(work.join("lab.pid"), std::process::id().to_string())
        .map_err(LabError::io("cannot write the lab's pid file"))?;
    let check = || if interrupted.load(Ordering::SeqCst) { Err(LabError::Interrupted) } else { Ok(()) };

    let (topo, targets, mut rng) = engine::world(sc, opts.seed);
    let n = topo.len();
    let seeder = topo.first_seeder as usize;
    let horizon = opts.timeout.as_secs_f64();
    let steps = plan::plan(sc, opts.seed, &mut rng, horizon);
    guard.daemons = (0..n).map(|_| None).collect();

    // The network.
    net::build_isps(&sc.isp.iter().map(|i| i.transit.map(|r| r.0)).collect::<Vec<_>>())?;
    for (i, node) in topo.nodes.iter().enumerate() {
        check()?;
        let up_queue = if node.seeder { None } else { opts.uplink_queue };
        net::build_node(i, node.isp as usize, node.up, node.down, up_queue.unwrap_or(net::QUEUE))?;
        if let Some(cc) = &opts.congestion_control {
            net::set_congestion_control(&net::node_ns(i), cc)?;
        }
        for (key, value) in &opts.sysctls {
            net::set_sysctl(&net::node_ns(i), key, value)?;
        }
    }
    let congestion_control = net::congestion_control(&net::node_ns(0)).ok();
    if opts.latency {
        let receivers = (0..n)
            .map(|j| delay::Receiver {
                ns: net::node_ns(j),
                from: (0..n)
                    .filter(|&i| i != j)
                    .map(|i| {
                        let ip = net::node_ip(i).parse().expect("node_ip is an IPv4 address");
                        (ip, Duration::from_micros(topo.latency(i as u32, j as u32)))
                    })
                    .collect(),
            })
            .collect();
        guard.delay = Some(delay::DelayLine::start(receivers)?);
    }

    // Films, key, configs.
    let films: Vec<PathBuf> = sc
        .film
        .iter()
        .enumerate()
        .map(|(k, f)| write_film(&work.join(format!("film{k}")), &f.name, f.size.0, k))
        .collect::<Result<_, _>>()?;
    let key = work.join("distributor.key");
    let key_s = key.display().to_string();
    let public =
        net::run(&[&opts.node_bin.display().to_string(), "keygen", "--out", &key_s])?.trim().to_owned();
    let api: SocketAddr = config::API.parse().map_err(|_| LabError::Config("bad API address".into()))?;
    let path = |i: usize, what: &str| work.join(format!("n{i}{what}"));
    let write_config = |i: usize, bootstrap: Option<&str>| -> Result<(), LabError> {
        let node = &topo.nodes[i];
        let ip = net::node_ip(i);
        let spec = config::NodeSpec {
            name: &node.name,
            role: if node.seeder { "distributor" } else { "cinema" },
            isp: &topo.isps[node.isp as usize],
            ip: &ip,
            data_dir: &path(i, ""),
            trust: &public,
            bootstrap,
            upload_slots: if node.seeder { sc.seeders.upload_slots } else { None },
            done_file: &path(i, ".done"),
            upload_limit: opts.upload_limit_share.map(|share| node.up * share),
            downlink: (!node.seeder && sc.sim.declared_downlinks).then_some(node.down),
            uplink: (!node.seeder && sc.sim.declared_uplinks).then_some(node.up),
        };
        let text = config::node_config(sc, &spec)?;
        std::fs::write(path(i, ".toml"), text).map_err(LabError::io("cannot write a node config"))
    };
    let start = |guard: &mut Guard, i: usize| -> Result<(), LabError> {
        let d = Daemon::start(&net::node_ns(i), &opts.node_bin, &path(i, ".toml"), &path(i, ".log"))?;
        guard.daemons[i] = Some(d);
        Ok(())
    };
    let failed = |i: usize, reason: &str| LabError::Daemon {
        node: topo.nodes[i].name.clone(),
        reason: reason.to_owned(),
        log: path(i, ".log").display().to_string(),
    };

    // The memory the daemons write into: reporting held off, then warmed (module `memory`).
    guard.reporting = memory::HeldReporting::hold_machine();
    let writes = (n as u64) * sc.film.iter().map(|f| f.size.0).sum::<u64>();
    let warmed_bytes = memory::warm_budget(writes);
    let warm_secs = memory::warm(&work, warmed_bytes)?.as_secs_f64();
    let reported_before = memory::machine_reported_kib();

    // The distributor first; everyone bootstraps from it.
    write_config(seeder, None)?;
    start(&mut guard, seeder)?;
    let status = wait_status(&net::node_ns(seeder), api, 0, START_TIMEOUT)
        .ok_or_else(|| failed(seeder, "its API never answered"))?;
    let peer = status["peer_id"].as_str().ok_or_else(|| failed(seeder, "no peer_id in /status"))?;
    let boot = format!("/ip4/{}/tcp/{}/p2p/{peer}", net::node_ip(seeder), config::P2P_PORT);
    for i in (0..n).filter(|&i| i != seeder) {
        write_config(i, Some(&boot))?;
    }
    let initial: Vec<usize> =
        steps.iter().filter(|s| s.at == 0.0 && s.action == Action::Start).map(|s| s.node).collect();
    let partial = sc.film.iter().any(|f| f.targets < 1.0);
    // With partial targets every cinema starts once so its peer id is known for the Publish's targets.
    let first: Vec<usize> = if partial { (0..seeder).collect() } else { initial.clone() };
    for &i in &first {
        start(&mut guard, i)?;
    }
    let mut peer_ids = vec![String::new(); n];
    for &i in &first {
        check()?;
        let s = wait_status(&net::node_ns(i), api, 1, START_TIMEOUT)
            .ok_or_else(|| failed(i, "did not answer or connect to the distributor"))?;
        peer_ids[i] = s["peer_id"].as_str().unwrap_or_default().to_owned();
    }
    for &i in first.iter().filter(|i| !initial.contains(i)) {
        if let Some(d) = guard.daemons[i].take() {
            d.stop(false);
        }
    }

    // Time 0.
    let t0 = Instant::now();
    let t0_unix = unix(SystemTime::now());
    let namespaces: Vec<String> = (0..n).map(net::node_ns).collect();
    let observer = Observer::start(&namespaces, api, t0, opts.poll);
    let mut first_start: Vec<Option<f64>> = vec![None; n];
    first_start[seeder] = Some(0.0);
    for &i in &initial {
        first_start[i] = Some(0.0);
    }
    let mut published: Vec<Option<(String, f64)>> = vec![None; sc.film.len()];
    let mut next = steps.iter().position(|s| s.at > 0.0 || s.action != Action::Start).unwrap_or(steps.len());
    let bin = opts.node_bin.display().to_string();
    let chunk = sc.transfer.chunk_size.to_string();
    let deadline_of = |d: Duration| humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string();
    let mut finished = false;
    let result = (|| -> Result<(), LabError> {
        loop {
            check()?;
            let t = t0.elapsed().as_secs_f64();
            if t > horizon {
                eprintln!("lab: timeout after {t:.0} s with targets incomplete");
                return Ok(());
            }
            for (k, film) in sc.film.iter().enumerate() {
                if published[k].is_none() && film.publish.as_secs_f64() <= t {
                    let mut args =
                        vec!["publish", "--key", &key_s, "--chunk-size", &chunk, "--title", &film.name];
                    let chosen: Vec<String> = if film.targets < 1.0 {
                        (0..seeder)
                            .filter(|&i| targets[k][i])
                            .map(|i| format!("node:{}", peer_ids[i]))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    for c in &chosen {
                        args.extend(["--targets", c.as_str()]);
                    }
                    let deadline = film.deadline.map(deadline_of);
                    if let Some(d) = &deadline {
                        args.extend(["--deadline", d.as_str()]);
                    }
                    let film_path = films[k].display().to_string();
                    args.push(&film_path);
                    let ns = net::node_ns(seeder);
                    let mut cmd = vec!["ip", "netns", "exec", ns.as_str(), bin.as_str()];
                    cmd.extend(args);
                    let id = net::run(&cmd)?.trim().to_owned();
                    published[k] = Some((id, t0.elapsed().as_secs_f64()));
                }
            }
            // The scenario's times count from the publish: shift them by how late the publish came
            // (the CLI hashes the film first).
            let shift = published
                .iter()
                .zip(&sc.film)
                .filter_map(|(p, f)| p.as_ref().map(|p| p.1 - f.publish.as_secs_f64()))
                .next()
                .unwrap_or(0.0);
            while next < steps.len() && steps[next].at + shift <= t {
                let s = steps[next];
                next += 1;
                match s.action {
                    Action::Start => {
                        if guard.daemons[s.node].is_none() {
                            observer.new_session(s.node);
                            start(&mut guard, s.node)?;
                            first_start[s.node].get_or_insert(t);
                        }
                    }
                    Action::Stop { crash } => {
                        if let Some(d) = guard.daemons[s.node].take() {
                            d.stop(crash);
                        }
                    }
                }
            }
            if let Some(line) = guard.delay.as_mut() {
                line.check()?;
            }
            for i in 0..n {
                if guard.daemons[i].as_mut().is_some_and(|d| !d.running()) {
                    eprintln!(
                        "lab: {} exited on its own; see {}",
                        topo.nodes[i].name,
                        path(i, ".log").display()
                    );
                    guard.daemons[i] = None;
                }
            }
            let done = published.iter().enumerate().all(|(k, p)| {
                p.as_ref().is_some_and(|(id, _)| {
                    (0..seeder).filter(|&i| targets[k][i]).all(|i| {
                        observer.complete(i).contains_key(id)
                            || read_done(&path(i, ".done"), t0_unix).contains_key(id)
                    })
                })
            });
            if done {
                finished = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    let end = t0.elapsed().as_secs_f64();
    let nodes = observer.finish();
    let wire = nodes.iter().map(|o| o.link).collect();
    let tcp = nodes.iter().map(|o| o.tcp).collect();
    result?;
    let hook_done = (0..n).map(|i| read_done(&path(i, ".done"), t0_unix)).collect();
    // Keep the daemons' logs beside the outputs.
    let logs = opts.out.join("logs");
    if std::fs::create_dir_all(&logs).is_ok() {
        for (i, node) in topo.nodes.iter().enumerate() {
            let _ = std::fs::copy(path(i, ".log"), logs.join(format!("{}.log", node.name)));
        }
    }
    let latency = guard.delay.take().map(delay::DelayLine::stop).transpose()?;
    let memory = memory::MemoryFigures {
        reporting_order: guard.reporting.as_ref().map(memory::HeldReporting::orders),
        reported_kib: memory::machine_reported_kib().zip(reported_before).map(|(a, b)| a.saturating_sub(b)),
        warmed_bytes,
        warm_secs,
    };
    drop(guard);
    Ok(Measured {
        nodes,
        first_start,
        hook_done,
        published,
        end,
        finished,
        wire,
        tcp,
        congestion_control,
        memory,
        latency,
    })
}

/// The scenario the lab's prediction runs: the lab's own network, whose every shaped link holds a queue
/// when full (its `tbf`s' [`net::QUEUE`], of which [`crate::scenario::LAB_FULL_QUEUE`] is what they were
/// measured to hold), and the cinemas' uplink queue the lab shapes (`--uplink-queue`). The scenario's own
/// `sim.full_queue` describes the network it models, not the lab's, so the lab's replaces it.
pub fn prediction_scenario(sc: &Scenario, uplink_queue: Option<Duration>) -> Scenario {
    let mut predicted = sc.clone();
    predicted.sim.full_queue = crate::scenario::LAB_FULL_QUEUE;
    if uplink_queue.is_some() {
        predicted.sim.uplink_queue = uplink_queue;
    }
    predicted
}

/// What `cinemesh-sim lab` does: the simulator's prediction into `out/sim`, the lab run into `out`, and
/// the comparison (`out/compare.txt`, `out/compare-cdf.svg`). Returns the lab's report and the text
/// printed.
pub fn run_and_compare(
    sc: &Scenario,
    opts: &Options,
    interrupted: &AtomicBool,
) -> Result<(outputs::LabReport, String), LabError> {
    let sim_dir = opts.out.join("sim");
    let predicted = prediction_scenario(sc, opts.uplink_queue);
    let (outcome, prediction) = crate::simulate(&predicted, opts.seed, None)?;
    crate::report::write(&sim_dir, &predicted, &outcome, &prediction)?;
    let m = run(sc, opts, interrupted)?;
    let (topo, targets, _) = engine::world(sc, opts.seed);
    let mut built = outputs::build(sc, opts.seed, &topo, &targets, &m);
    built.report.upload_limit_share = opts.upload_limit_share;
    built.report.uplink_queue_ms = opts.uplink_queue.map(|q| q.as_secs_f64() * 1e3);
    built.report.sysctls = opts.sysctls.clone();
    outputs::write(&opts.out, sc, &built)?;
    let sim = crate::compare::Side::load(&sim_dir)?;
    let lab = crate::compare::Side::load(&opts.out)?;
    let table = crate::compare::render(&sim, &lab);
    let write = |name: &str, body: &str| {
        let p = opts.out.join(name);
        std::fs::write(&p, body).map_err(LabError::io(format!("cannot write {}", p.display())))
    };
    write("compare.txt", &table)?;
    write("compare-cdf.svg", &crate::compare::chart(&sim, &lab)?)?;
    let text = format!(
        "{}\nsimulator (seed {}, the lab's queues modelled: sim.full_queue {} ms):\n{}\n{table}",
        outputs::summary(&built.report),
        opts.seed,
        predicted.sim.full_queue.as_millis(),
        prediction.summary()
    );
    Ok((built.report, text))
}
