//! `cinemesh-sim`: run a scenario, sweep configurations, print the physical bound, run a scenario for real
//! in the lab, or compare a prediction with a lab run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use cinemesh_sim::report::{self, film_bound};
use cinemesh_sim::sweep::{self, Vary};
use cinemesh_sim::{engine, simulate, Scenario};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Discrete-event simulator of cinemesh distributions, driving the overlay's own scheduler.
#[derive(Debug, Parser)]
#[command(name = "cinemesh-sim", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one scenario and write report.json, nodes.csv and SVG plots.
    Run {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override a scenario field, e.g. `transfer.upload_slots=12` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory (default `sim-out/<scenario>-<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the cartesian product of `--vary` values with several seeds, rank, write the best node config.
    Sweep {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// A key and its values, e.g. `transfer.upload_slots=4,8,16` (repeatable).
        #[arg(long, value_name = "KEY=V1,V2,...", required = true)]
        vary: Vec<String>,
        /// Seeds per configuration (1..=K).
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Parallel runs.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Fixed overrides applied to every configuration.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory (default `sim-out/<scenario>-sweep`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the best configuration as a node config (default `<out>/best.toml`).
        #[arg(long, value_name = "FILE")]
        emit_config: Option<PathBuf>,
        /// Run only the I-th of N shares of the jobs and write `<out>/shard-I-of-N.json`; rank the shares
        /// with `cinemesh-sim merge`.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
    },
    /// Merge the shard files of a sharded sweep: check they cover every run once, rank, write the best.
    Merge {
        /// The `shard-I-of-N.json` files (or directories holding them).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Output directory for ranking.csv and best.toml.
        #[arg(long, default_value = "sim-out/merged-sweep")]
        out: PathBuf,
        /// Where to write the best configuration as a node config (default `<out>/best.toml`).
        #[arg(long, value_name = "FILE")]
        emit_config: Option<PathBuf>,
    },
    /// Run a scenario for real (as root): network namespaces, shaped links, real daemons; writes the
    /// simulator's outputs for both bodies (`<out>/sim` holds the prediction) and compares them.
    Lab {
        /// Scenario file (TOML), at most 40 nodes.
        scenario: PathBuf,
        /// Seed (topology, targets, late cinemas; the simulator's).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override a scenario field (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory (default `lab-out/<scenario>-<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The `cinemesh` binary (default: `cinemesh` beside this program).
        #[arg(long)]
        node_bin: Option<PathBuf>,
        /// Stop after this long even if targets are incomplete.
        #[arg(long, default_value = "20m")]
        timeout: humantime::Duration,
        /// Interval of the daemons' API polls.
        #[arg(long, default_value = "250ms")]
        poll: humantime::Duration,
        /// Run every daemon with `transfer.upload_limit` at this share (0-1] of its own link's upload rate,
        /// as an operator following the guide sets it (0.95); unset: the scenario's `transfer.upload_limit`.
        #[arg(long, value_parser = parse_share)]
        upload_limit_share: Option<f64>,
        /// TCP congestion control in every node's namespace (`cubic`, Linux's default; `bbr`; `reno`; any
        /// the kernel has). Unset: the host's (`sysctl net.ipv4.tcp_congestion_control`). The report says
        /// which ran and how much TCP retransmitted.
        #[arg(long, value_parser = parse_congestion_control)]
        congestion_control: Option<String>,
        /// The queue of every cinema's upload, as long as a modem's (`1s`; 1 ms to 10 s); unset: 50 ms,
        /// as every link's. A full queue delays the cinema's own acknowledgements by as much.
        #[arg(long, value_parser = parse_uplink_queue)]
        uplink_queue: Option<humantime::Duration>,
        /// Add no latency: by default every packet a node receives is held for the scenario's one-way
        /// latency of its pair (`[latency]`, as the simulator gives it; needs iptables). The prediction
        /// keeps the scenario's latency either way.
        #[arg(long)]
        no_latency: bool,
        /// A network sysctl set in every node's namespace, as an operator sets it on the hosts
        /// (`net.ipv4.tcp_slow_start_after_idle=0`; repeatable; `net.` keys only). The report lists them.
        #[arg(long = "sysctl", value_name = "KEY=VALUE", value_parser = parse_sysctl)]
        sysctls: Vec<(String, String)>,
    },
    /// Print two runs' figures side by side (the simulator's and the lab's output directories).
    Compare {
        /// The simulator's output directory.
        sim_out: PathBuf,
        /// The lab's output directory.
        lab_out: PathBuf,
    },
    /// Run a scenario twice with the same seed, as given and locality-blind (site and ISP weights 0, no
    /// local first), and compare the two completion curves point by point: what locality costs or saves.
    Locality {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// RNG seed (both runs).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Check seeds 1..=K instead of one (at most 64): each seed's outputs go to `OUT/seed-S`, and a line
        /// per seed to `OUT/seeds.csv` and to the end of the output.
        #[arg(long, conflicts_with = "seed", value_name = "K")]
        seeds: Option<u64>,
        /// Override a scenario field in both runs (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// A point counts as slowed by locality above 1 + this ratio.
        #[arg(long, default_value_t = cinemesh_sim::locality::TOLERANCE)]
        tolerance: f64,
        /// Run each side this many more times with other engine salts (`sim.engine_salt` 1..=N; the same
        /// topology, the engines' choices drawn again, at most 8): the check then compares the sides' mean
        /// curves, and the output says how far runs of one side differ at single points.
        #[arg(long, default_value_t = 0)]
        twins: u32,
        /// Output directory: `local/` and `blind/` (each run's outputs), `locality.csv`, `locality.json`
        /// (default `sim-out/<scenario>-<seed>-locality`, with `--seeds` `sim-out/<scenario>-locality`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the Kumar-Ross bound of a scenario (no simulation).
    Bound {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// RNG seed (access rates drawn in ranges depend on it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override a scenario field (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
    {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb
}

fn run(scenario: &Path, seed: u64, sets: &[String], out: Option<PathBuf>) -> anyhow::Result<()> {
    let sc = Scenario::load(scenario, sets)?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-{seed}", sc.name)));
    let pb = bar(0, "chunks");
    let progress = |done: u64, total: u64| {
        pb.set_length(total);
        pb.set_position(done);
    };
    let started = Instant::now();
    let (outcome, report) = simulate(&sc, seed, Some(&progress))?;
    let wall = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    report::write(&out, &sc, &outcome, &report)?;
    print!("{}", report.summary());
    println!(
        "wall {wall:.2} s, {:.2} M events/s; output in {}",
        report.events as f64 / wall.max(1e-9) / 1e6,
        out.display()
    );
    Ok(())
}

struct SweepArgs {
    scenario: PathBuf,
    vary: Vec<String>,
    seeds: u64,
    jobs: usize,
    sets: Vec<String>,
    out: Option<PathBuf>,
    emit_config: Option<PathBuf>,
    shard: Option<String>,
}

fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let varies: Vec<Vary> = a.vary.iter().map(|v| v.parse()).collect::<Result<_, _>>()?;
    let configs = sweep::product(&varies)?;
    let text = std::fs::read_to_string(&a.scenario)
        .with_context(|| format!("cannot read {}", a.scenario.display()))?;
    let origin = a.scenario.display().to_string();
    // Validate every configuration before running any.
    let mut scenarios = Vec::new();
    for c in &configs {
        let sets: Vec<String> = a.sets.iter().chain(c).cloned().collect();
        scenarios.push(Scenario::parse(&text, &origin, &sets)?);
    }
    let name = scenarios.first().map(|s| s.name.clone()).unwrap_or_default();
    let out = a.out.unwrap_or_else(|| PathBuf::from(format!("sim-out/{name}-sweep")));
    let seeds = a.seeds.max(1);
    let shard: sweep::Shard = match &a.shard {
        Some(s) => s.parse()?,
        None => sweep::Shard::WHOLE,
    };
    let jobs = shard.jobs(configs.len(), seeds);
    let pb = bar(jobs.len() as u64, "runs");
    let done = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.jobs.max(1)).build()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<sweep::ShardRun>> = pool.install(|| {
        jobs.par_iter()
            .map(|&(c, seed)| {
                let r = simulate(&scenarios[c], seed, None)
                    .map(|(_, r)| sweep::ShardRun {
                        config: c,
                        seed,
                        t_measured: r.t_measured,
                        efficiency: r.efficiency,
                        last_point_efficiency: r.last_point_efficiency,
                        transit_ratio: r.transit_ratio,
                        slowdown_p90: r.cdf.slowdown.p90,
                        slowdown_max: r.cdf.slowdown.max,
                    })
                    .map_err(anyhow::Error::from);
                pb.set_position(done.fetch_add(1, Ordering::Relaxed) + 1);
                r
            })
            .collect()
    });
    pb.finish_and_clear();
    let file = sweep::ShardFile {
        origin,
        scenario: text,
        fixed: a.sets.clone(),
        configs,
        seeds,
        shard,
        runs: results.into_iter().collect::<anyhow::Result<_>>()?,
    };
    println!("{} runs in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if a.shard.is_some() {
        let path = out.join(file.file_name());
        std::fs::write(&path, serde_json::to_string_pretty(&file)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "shard {}/{} written to {}; rank all shards with `cinemesh-sim merge`",
            shard.index,
            shard.count,
            path.display()
        );
        return Ok(());
    }
    finish_sweep(sweep::merge(&[file])?, &out, a.emit_config)
}

/// `cinemesh-sim merge`: the shard files given (directories are searched for `shard-*.json`).
fn merge(paths: &[PathBuf], out: &Path, emit_config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".json"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let shards: Vec<sweep::ShardFile> =
        files.iter().map(|f| sweep::ShardFile::read(f)).collect::<Result<_, _>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    finish_sweep(sweep::merge(&shards)?, out, emit_config)
}

/// Writes the ranking and the best configuration of a (merged) sweep.
fn finish_sweep(m: sweep::Merged, out: &Path, emit_config: Option<PathBuf>) -> anyhow::Result<()> {
    let csv = sweep::ranking_csv(&m.ranked);
    std::fs::write(out.join("ranking.csv"), &csv)
        .with_context(|| format!("cannot write {}/ranking.csv", out.display()))?;
    println!(
        "objective: all targets complete, then last-point efficiency >= {} (Kumar-Ross), then lowest mean point \
         slowdown p90 (2% buckets), then lowest transit ratio, then lowest largest point slowdown, then lowest \
         T_measured",
        sweep::KUMAR_ROSS_GOAL
    );
    print!("{csv}");
    if let Some(best) = m.ranked.first() {
        let sets: Vec<String> = m.fixed.iter().chain(&best.sets).cloned().collect();
        let sc = Scenario::parse(&m.scenario, &m.origin, &sets)?;
        let comment = format!(
            "cinemesh node config: best of a cinemesh-sim sweep of {}\nsettings: {}\nmean point slowdown p90 {:.2} max {:.2}, T_measured {:.0} s, efficiency {:.3} (last point {:.3}), transit ratio {:.2} over {} seeds",
            m.origin,
            best.sets.join(" "),
            best.mean_slowdown_p90,
            best.mean_slowdown_max,
            best.mean_t_measured,
            best.mean_efficiency,
            best.mean_last_point_efficiency,
            best.mean_transit_ratio,
            best.runs
        );
        let path = emit_config.unwrap_or_else(|| out.join("best.toml"));
        std::fs::write(&path, sweep::node_config(&sc, &comment)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("best: {} -> {}", best.sets.join(" "), path.display());
    }
    Ok(())
}

fn bound(scenario: &Path, seed: u64, sets: &[String]) -> anyhow::Result<()> {
    let sc = Scenario::load(scenario, sets)?;
    let (topo, targets, _) = engine::world(&sc, seed);
    for (f, film) in sc.film.iter().enumerate() {
        let b = film_bound(&sc, &topo, f, |i| targets[f][i]);
        println!(
            "{}: T_min = {:.1} s ({:.2} h) = max(F/u_s {:.1} s, F/d_min {:.1} s, N*F/(u_s+sum u_i) {:.1} s)",
            film.name,
            b.t_min,
            b.t_min / 3600.0,
            b.seeder_term,
            b.download_term,
            b.aggregate_term
        );
    }
    Ok(())
}

struct LabArgs {
    scenario: PathBuf,
    seed: u64,
    sets: Vec<String>,
    out: Option<PathBuf>,
    node_bin: Option<PathBuf>,
    timeout: std::time::Duration,
    poll: std::time::Duration,
    upload_limit_share: Option<f64>,
    congestion_control: Option<String>,
    uplink_queue: Option<std::time::Duration>,
    no_latency: bool,
    sysctls: Vec<(String, String)>,
}

/// `KEY=VALUE` of `--sysctl`.
fn parse_sysctl(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if k.starts_with("net.") && !v.is_empty() => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not net.KEY=VALUE (net.ipv4.tcp_slow_start_after_idle=0)")),
    }
}

/// A queue's length: 1 ms to 10 s.
fn parse_uplink_queue(text: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let ok = (std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(10)).contains(&*d);
    if ok {
        Ok(d)
    } else {
        Err(format!("{text} is not between 1ms and 10s"))
    }
}

/// A congestion control algorithm's name as the kernel spells them: lower-case letters, digits and `_`.
fn parse_congestion_control(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 16
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a congestion control name (cubic, bbr, reno...)"))
    }
}

/// A share of a link's rate: a number in (0, 1].
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        Ok(x) => Err(format!("{x} is not in (0, 1]: a share of the link's rate (0.95: 95%)")),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

fn lab(a: LabArgs) -> anyhow::Result<()> {
    let sc = Scenario::load(&a.scenario, &a.sets)?;
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The first Ctrl-C (or SIGTERM) makes the lab stop its daemons and remove what it created; a second
    // one exits at once (the next start removes what is left).
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone())
            .context("cannot handle Ctrl-C")?;
        signal_hook::flag::register(sig, interrupted.clone()).context("cannot handle Ctrl-C")?;
    }
    let opts = cinemesh_sim::lab::Options {
        node_bin: cinemesh_sim::lab::daemon::node_bin(a.node_bin.as_deref())?,
        out: a.out.unwrap_or_else(|| PathBuf::from(format!("lab-out/{}-{}", sc.name, a.seed))),
        seed: a.seed,
        timeout: a.timeout,
        poll: a.poll,
        upload_limit_share: a.upload_limit_share,
        congestion_control: a.congestion_control,
        uplink_queue: a.uplink_queue,
        latency: !a.no_latency,
        sysctls: a.sysctls,
    };
    let (report, text) = cinemesh_sim::lab::run_and_compare(&sc, &opts, &interrupted)?;
    print!("{text}");
    println!("output in {}", opts.out.display());
    if !report.finished {
        anyhow::bail!(
            "{} targets incomplete after --timeout {}",
            report.incomplete,
            humantime::format_duration(a.timeout)
        );
    }
    Ok(())
}

fn compare(sim: &Path, lab: &Path) -> anyhow::Result<()> {
    let (s, l) = (cinemesh_sim::compare::Side::load(sim)?, cinemesh_sim::compare::Side::load(lab)?);
    print!("{}", cinemesh_sim::compare::render(&s, &l));
    let p = lab.join("compare-cdf.svg");
    std::fs::write(&p, cinemesh_sim::compare::chart(&s, &l)?)
        .with_context(|| format!("cannot write {}", p.display()))?;
    println!("chart: {}", p.display());
    Ok(())
}

/// The most seeds `cinemesh-sim locality --seeds` checks in one command.
const MAX_LOCALITY_SEEDS: u64 = 64;

/// One seed's locality check, as `--seeds` sums it up.
struct SeedCheck {
    seed: u64,
    holds: bool,
    slowed: usize,
    points: usize,
    worst: (f64, usize),
    fastest_tenth: Option<f64>,
    /// Mean transit ratio of each side's runs: local, blind.
    transit: (f64, f64),
}

/// `cinemesh-sim locality --seeds K`: the check on seeds 1..=K, each in `OUT/seed-S`, and one line per seed.
fn locality_seeds(
    scenario: &Path,
    k: u64,
    sets: &[String],
    tolerance: f64,
    twins: u32,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_LOCALITY_SEEDS).contains(&k),
        "--seeds must be between 1 and {MAX_LOCALITY_SEEDS}, not {k}"
    );
    let name = Scenario::load(scenario, sets)?.name;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("sim-out/{name}-locality")));
    let mut checks = Vec::new();
    for seed in 1..=k {
        println!("== seed {seed}");
        checks.push(locality(
            scenario,
            seed,
            sets,
            tolerance,
            twins,
            Some(out.join(format!("seed-{seed}"))),
        )?);
    }
    let mut csv = String::from(
        "seed,holds,points_slowed,points,worst_ratio,worst_k,fastest_tenth,transit_local,transit_blind\n",
    );
    println!();
    println!(
        "{} seeds, {} run(s) a side; points more than {:.0}% slower than locality-blind:",
        k,
        twins + 1,
        tolerance * 100.0
    );
    println!("seed  slowed  worst  at k  fastest tenth  transit local / blind");
    for c in &checks {
        let tenth = c.fastest_tenth.map_or("-".to_owned(), |t| format!("{t:.3}"));
        csv.push_str(&format!(
            "{},{},{},{},{:.4},{},{},{:.3},{:.3}\n",
            c.seed, c.holds, c.slowed, c.points, c.worst.0, c.worst.1, tenth, c.transit.0, c.transit.1
        ));
        println!(
            "{:<5} {:<7} {:.3}  {:<5} {:<14} {:.2} / {:.2}",
            c.seed, c.slowed, c.worst.0, c.worst.1, tenth, c.transit.0, c.transit.1
        );
    }
    let p = out.join("seeds.csv");
    std::fs::write(&p, csv).with_context(|| format!("cannot write {}", p.display()))?;
    let slowed: usize = checks.iter().map(|c| c.slowed).sum();
    let held = checks.iter().filter(|c| c.holds).count();
    println!(
        "locality holds on {held} of {k} seeds ({slowed} of {} points beyond the tolerance); output in {}",
        checks.iter().map(|c| c.points).sum::<usize>(),
        out.display()
    );
    Ok(())
}

/// `cinemesh-sim locality`: the scenario as given and locality-blind, same seed, run side by side.
fn locality(
    scenario: &Path,
    seed: u64,
    sets: &[String],
    tolerance: f64,
    twins: u32,
    out: Option<PathBuf>,
) -> anyhow::Result<SeedCheck> {
    use cinemesh_sim::locality::{self, BLIND, MAX_TWINS};
    anyhow::ensure!(
        tolerance.is_finite() && tolerance >= 0.0,
        "--tolerance must be a ratio >= 0, not {tolerance}"
    );
    anyhow::ensure!(twins <= MAX_TWINS, "--twins must be at most {MAX_TWINS}, not {twins}");
    let local = Scenario::load(scenario, sets)?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-{seed}-locality", local.name)));
    let started = Instant::now();
    let runs = locality::run(&local, seed, tolerance, twins)?;
    let (l, b, check) = (&runs.local, &runs.blind, &runs.check);
    report::write(&out.join("local"), &local, &l.0, &l.1)?;
    report::write(&out.join("blind"), &runs.blind_scenario, &b.0, &b.1)?;
    let figures = |r: &report::Report| {
        serde_json::json!({
            "slowdown": r.cdf.slowdown, "transit_ratio": r.transit_ratio, "efficiency": r.efficiency,
            "last_point_efficiency": r.last_point_efficiency
        })
    };
    let json = serde_json::json!({
        "scenario": local.name,
        "seed": seed,
        "blind": BLIND,
        "holds": check.holds(),
        "twins": twins,
        "noise": runs.noise,
        "transit_ratios": { "local": runs.transit.0, "blind": runs.transit.1 },
        "check": check,
        "local_run": figures(&l.1),
        "blind_run": figures(&b.1),
    });
    for (name, text) in
        [("locality.csv", check.csv()), ("locality.json", serde_json::to_string_pretty(&json)?)]
    {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    for (name, r) in [("local", &l.1), ("blind", &b.1)] {
        let s = &r.cdf.slowdown;
        println!(
            "{name}: point slowdown p50 {} p90 {} max {}, transit ratio {:.2}",
            f(s.p50),
            f(s.p90),
            f(s.max),
            r.transit_ratio
        );
    }
    println!(
        "local / blind, point by point: p50 {} p90 {} worst {:.3} (k = {}); {} of {} points more than {:.0}% slower",
        f(check.ratio_p50),
        f(check.ratio_p90),
        check.worst.0,
        check.worst.1,
        check.slowed,
        check.points.len(),
        tolerance * 100.0
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    if let Some(n) = runs.noise {
        println!(
            "{} runs per side (the first two lines: each side's first), the comparison on their mean curves; runs of one \
             side differ by up to {:.3} at a single point, with at most {} points more than {:.0}% apart",
            n.runs,
            n.worst,
            n.slowed,
            tolerance * 100.0
        );
        println!(
            "transit ratio, mean of {} runs: local {:.2}, blind {:.2}",
            n.runs,
            mean(&runs.transit.0),
            mean(&runs.transit.1)
        );
    } else {
        println!(
            "one run per side: runs that differ only in the engines' draws can differ beyond the tolerance at \
             single points (on cinemas-350 at 21-36 of 350); --twins 2 or more compares mean curves and says by how much"
        );
    }
    let tenths: Vec<String> =
        check.tenths.iter().map(|t| t.map_or("-".to_owned(), |t| format!("{t:.3}"))).collect();
    println!("local / blind by tenth of the curve (mean times, fastest tenth first): {}", tenths.join(" "));
    println!(
        "locality {} ({:.1} s wall); output in {}",
        if check.holds() {
            "slows no point beyond the tolerance"
        } else {
            "SLOWS some points beyond the tolerance"
        },
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(SeedCheck {
        seed,
        holds: check.holds(),
        slowed: check.slowed,
        points: check.points.len(),
        worst: check.worst,
        fastest_tenth: check.tenths.first().copied().flatten(),
        transit: (mean(&runs.transit.0), mean(&runs.transit.1)),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { scenario, seed, sets, out } => run(&scenario, seed, &sets, out),
        Cmd::Sweep { scenario, vary, seeds, jobs, sets, out, emit_config, shard } => {
            sweep(SweepArgs { scenario, vary, seeds, jobs, sets, out, emit_config, shard })
        }
        Cmd::Merge { shards, out, emit_config } => merge(&shards, &out, emit_config),
        Cmd::Bound { scenario, seed, sets } => bound(&scenario, seed, &sets),
        Cmd::Lab {
            scenario,
            seed,
            sets,
            out,
            node_bin,
            timeout,
            poll,
            upload_limit_share,
            congestion_control,
            uplink_queue,
            no_latency,
            sysctls,
        } => lab(LabArgs {
            scenario,
            seed,
            sets,
            out,
            node_bin,
            timeout: timeout.into(),
            poll: poll.into(),
            upload_limit_share,
            congestion_control,
            uplink_queue: uplink_queue.map(Into::into),
            no_latency,
            sysctls,
        }),
        Cmd::Compare { sim_out, lab_out } => compare(&sim_out, &lab_out),
        Cmd::Locality { scenario, seed, seeds: None, sets, tolerance, twins, out } => {
            locality(&scenario, seed, &sets, tolerance, twins, out).map(drop)
        }
        Cmd::Locality { scenario, seeds: Some(k), sets, tolerance, twins, out, .. } => {
            locality_seeds(&scenario, k, &sets, tolerance, twins, out)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_congestion_control, parse_share, parse_sysctl, parse_uplink_queue};

    #[test]
    fn sysctl_settings() {
        let ssai = ("net.ipv4.tcp_slow_start_after_idle".to_owned(), "0".to_owned());
        assert_eq!(parse_sysctl("net.ipv4.tcp_slow_start_after_idle=0"), Ok(ssai));
        for bad in ["", "net.ipv4.x", "net.ipv4.x=", "kernel.panic=1", "=0"] {
            assert!(parse_sysctl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn congestion_control_names() {
        assert_eq!(parse_congestion_control("cubic"), Ok("cubic".to_owned()));
        assert_eq!(parse_congestion_control("bbr"), Ok("bbr".to_owned()));
        for bad in ["", "Cubic", "cubic; rm", "../x", "averyveryverylongname"] {
            assert!(parse_congestion_control(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_upload_limit_share_is_a_share_of_the_link() {
        assert_eq!(parse_share("0.95"), Ok(0.95));
        assert_eq!(parse_share("1"), Ok(1.0));
        for bad in ["0", "-0.5", "1.2", "NaN", "95%"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_uplink_queue_is_a_duration_between_a_millisecond_and_ten_seconds() {
        let ok = |t: &str| parse_uplink_queue(t).map(|d| *d);
        assert_eq!(ok("1s"), Ok(std::time::Duration::from_secs(1)));
        assert_eq!(ok("300ms"), Ok(std::time::Duration::from_millis(300)));
        assert_eq!(ok("10s"), Ok(std::time::Duration::from_secs(10)));
        for bad in ["0s", "500us", "11s", "1", "fast"] {
            assert!(parse_uplink_queue(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_uplink_queue("11s").unwrap_err(), "11s is not between 1ms and 10s");
    }
}
