//! Real hosts in Linux network namespaces this test creates itself: a distributor and two cinemas behind a
//! bridge, every host's upload shaped with `tc tbf` (a token bucket: the rate of an access link; the kernels
//! here have no `netem`), real `cinemesh run` daemons, driven by the real CLI run
//! inside each namespace. And the lab (`cinemesh-sim lab`) end to end on a tiny scenario, and its delay
//! line (the scenario's latency without netem). Needs root, iproute2 and iptables: these tests are
//! `#[ignore]`d and `.ci/run` runs them as root (`cargo test -- --ignored`), after installing what is
//! missing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cinemesh_tests::netns::{run, same_files, Lab};

const BIN: &str = env!("CARGO_BIN_EXE_cinemesh-node");

#[test]
#[ignore = "needs root"]
fn a_film_crosses_shaped_links_between_namespaced_hosts() -> anyhow::Result<()> {
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

/// The lab's daemon configuration is one the node accepts (no root needed).
#[test]
fn the_lab_writes_configs_the_node_accepts() -> anyhow::Result<()> {
    let sc = cinemesh_sim::Scenario::load(&scenario("lab-hetero"), &["transfer.upload_slots=5".to_owned()])?;
    let spec = cinemesh_sim::lab::config::NodeSpec {
        name: "cinema-1",
        role: "cinema",
        isp: "isp-b",
        ip: "10.201.0.2",
        data_dir: Path::new("/tmp/cml-lab/n1"),
        trust: "cmpk1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        bootstrap: Some("/ip4/10.201.0.13/tcp/4710/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
        upload_slots: None,
        done_file: Path::new("/tmp/cml-lab/n1.done"),
        upload_limit: None,
        downlink: Some(125e6),
        uplink: Some(1e6),
    };
    let text = cinemesh_sim::lab::config::node_config(&sc, &spec)?;
    let cfg = cinemesh::config::Config::from_toml(&text, Path::new("lab.toml"))?;
    cfg.validate()?;
    assert_eq!(cfg.transfer.upload_slots, 5);
    assert_eq!(cfg.transfer.downlink.map(|r| r.bytes_per_sec()), Some(125e6));
    assert_eq!(cfg.transfer.uplink.map(|r| r.bytes_per_sec()), Some(1e6));
    let mut undeclared = cfg.transfer.clone();
    undeclared.downlink = None;
    undeclared.uplink = None;
    assert_eq!(undeclared, sc.transfer);
    assert_eq!(cfg.gossip, sc.gossip);
    assert_eq!(cfg.policy, sc.policy);
    assert_eq!(cfg.node.isp.as_deref(), Some("isp-b"));
    assert!(!cfg.network.mdns);
    assert_eq!(cfg.api.listen.to_string(), cinemesh_sim::lab::config::API);
    // `--upload-limit-share`: a per-daemon upload limit the node takes as its own.
    let paced = cinemesh_sim::lab::config::NodeSpec { upload_limit: Some(2.375e6), ..spec };
    let cfg = cinemesh::config::Config::from_toml(
        &cinemesh_sim::lab::config::node_config(&sc, &paced)?,
        Path::new("lab.toml"),
    )?;
    cfg.validate()?;
    assert_eq!(cfg.transfer.upload_limit.map(|r| r.bytes_per_sec()), Some(2.375e6));
    Ok(())
}

/// The lab's namespaces share one prefix: one test at a time uses them.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes the lab's namespaces when dropped (on a failed assertion too).
struct LabNamespaces;

impl Drop for LabNamespaces {
    fn drop(&mut self) {
        let _ = cinemesh_sim::lab::net::remove_all();
    }
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            cinemesh_sim::lab::probe::enter(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
    })
}

/// The lab's latency without netem: what a node receives is held for its pair's one-way latency. A TCP
/// handshake between two namespaces 60 ms apart takes at least the 120 ms round trip, a megabyte crosses
/// whole, and a pair with no latency connects at once.
#[test]
#[ignore = "needs root"]
fn the_lab_holds_what_a_node_receives_for_its_pairs_latency() -> anyhow::Result<()> {
    use cinemesh_sim::lab::{self, delay, net};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    let _one_lab = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    lab::clean_previous()?;
    let _cleanup = LabNamespaces;
    net::build_isps(&[None])?;
    for i in 0..3 {
        net::build_node(i, 0, 1e12, 1e12, net::QUEUE)?;
    }
    let ip = |i: usize| net::node_ip(i).parse::<Ipv4Addr>().expect("IPv4");
    let far = Duration::from_millis(60);
    let receivers = vec![
        delay::Receiver { ns: net::node_ns(0), from: [(ip(1), far)].into() },
        delay::Receiver { ns: net::node_ns(1), from: [(ip(0), far)].into() },
        delay::Receiver { ns: net::node_ns(2), from: Default::default() },
    ];
    let line = delay::DelayLine::start(receivers)?;

    let port = 7070;
    let listener = in_ns(&net::node_ns(1), || Ok(TcpListener::bind((ip(1), port))?))?;
    let server = std::thread::spawn(move || -> anyhow::Result<u64> {
        // Node 2's connection, then node 0's: read each to its end, echo the count.
        let mut total = 0;
        for _ in 0..2 {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut n = 0u64;
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf)? {
                    0 => break,
                    k => n += k as u64,
                }
            }
            s.write_all(&n.to_be_bytes())?;
            total += n;
        }
        Ok(total)
    });
    let to = SocketAddr::from((ip(1), port));
    let connect = |from: usize, bytes: usize| -> anyhow::Result<(Duration, u64)> {
        in_ns(&net::node_ns(from), || {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
            let took = t.elapsed();
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(&vec![7u8; bytes])?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut echo = [0u8; 8];
            s.read_exact(&mut echo)?;
            Ok((took, u64::from_be_bytes(echo)))
        })
    };
    let (near, near_bytes) = connect(2, 1000)?;
    let (far_took, far_bytes) = connect(0, 1 << 20)?;
    assert_eq!(server.join().map_err(|_| anyhow::anyhow!("server panicked"))??, (1 << 20) + 1000);
    assert_eq!((near_bytes, far_bytes), (1000, 1 << 20));
    assert!(far_took >= 2 * far, "a handshake over a 120 ms round trip took {far_took:?}");
    assert!(near < far, "a pair with no latency took {near:?} to connect");
    let figures = line.stop()?;
    // Node 2's packets pass at once, node 0's and node 1's to each other are held; none is lost.
    assert!(figures.packets >= 2 && figures.passed >= 2, "{figures:?}");
    assert_eq!(figures.overruns, 0, "{figures:?}");
    Ok(())
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"))
}

/// Namespaces, work directory and processes of the lab still present.
fn lab_leftovers() -> anyhow::Result<Vec<String>> {
    let mut left: Vec<String> = cinemesh_sim::lab::net::ours()?;
    if cinemesh_sim::lab::work_dir().exists() {
        left.push(cinemesh_sim::lab::work_dir().display().to_string());
    }
    let ps = run(&["ps", "-eo", "args"])?;
    left.extend(ps.lines().filter(|l| l.contains("cml-lab/n")).map(str::to_owned));
    Ok(left)
}

/// The lab end to end: a run interrupted (as by Ctrl-C) leaves nothing; a crashed run's leftovers are
/// removed at the next start; a tiny scenario runs to completion with the simulator's outputs and the
/// comparison, and leaves nothing behind.
#[test]
#[ignore = "needs root"]
fn the_lab_runs_a_tiny_scenario_and_leaves_nothing_behind() -> anyhow::Result<()> {
    use cinemesh_sim::lab::{self, LabError, Options};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _one_lab = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());

    // Latency as a far fleet's: the lab holds what each node receives for its pair's.
    let sets = ["latency.intra_isp=4ms".to_owned(), "latency.inter_isp=15ms".to_owned()];
    let sc = cinemesh_sim::Scenario::load(&scenario("lab-tiny"), &sets)?;
    let out = tempfile::tempdir()?;
    let opts = Options {
        node_bin: PathBuf::from(BIN),
        out: out.path().join("lab"),
        seed: 1,
        timeout: Duration::from_secs(120),
        poll: Duration::from_millis(250),
        upload_limit_share: None,
        // Reno: in every kernel, and not the default of any, so the report can only say it if the lab set it.
        congestion_control: Some("reno".to_owned()),
        // A modem's queue on every cinema's upload: `tc` must show it on theirs.
        uplink_queue: Some(Duration::from_millis(700)),
        latency: true,
        sysctls: vec![("net.ipv4.tcp_slow_start_after_idle".to_owned(), "0".to_owned())],
    };

    // Interrupted once the cinemas' namespaces exist.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let until = Instant::now() + Duration::from_secs(60);
            let (mut qdisc, mut ssai) = (String::new(), String::new());
            while Instant::now() < until {
                if lab::net::ours().is_ok_and(|l| l.iter().any(|n| n == "cml-n2")) {
                    // The cinema's upload, once shaped, and its namespace's sysctl, once set.
                    qdisc = run(&["ip", "netns", "exec", "cml-n2", "tc", "qdisc", "show", "dev", "eth0"])
                        .unwrap_or_default();
                    ssai = run(&[
                        "ip",
                        "netns",
                        "exec",
                        "cml-n2",
                        "cat",
                        "/proc/sys/net/ipv4/tcp_slow_start_after_idle",
                    ])
                    .unwrap_or_default();
                    if qdisc.contains("tbf") && ssai.trim() == "0" {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::SeqCst);
            (qdisc, ssai)
        }
    });
    let r = lab::run(&sc, &opts, &stop);
    let (qdisc, ssai) = watcher.join().map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    assert!(qdisc.contains("tbf") && qdisc.contains("lat 700ms"), "cinema-2's upload: {qdisc:?}");
    assert_eq!(ssai.trim(), "0", "--sysctl in cinema-2's namespace");
    assert!(matches!(r, Err(LabError::Interrupted)), "{r:?}");
    assert_eq!(lab_leftovers()?, Vec::<String>::new(), "an interrupted lab leaves nothing");

    // What a crashed lab leaves: a namespace and a work directory whose pid is gone.
    run(&["ip", "netns", "add", "cml-leftover"])?;
    std::fs::create_dir_all(lab::work_dir())?;
    std::fs::write(lab::work_dir().join("lab.pid"), "4194303")?;

    let (report, text) = lab::run_and_compare(&sc, &opts, &AtomicBool::new(false))?;
    assert_eq!(lab_leftovers()?, Vec::<String>::new(), "a finished lab leaves nothing");
    assert!(report.finished, "{text}");
    assert_eq!((report.films[0].targets, report.films[0].complete), (3, 3), "{text}");
    for f in [
        "report.json",
        "nodes.csv",
        "timeline.csv",
        "requests.csv",
        "completion-cdf.svg",
        "seeder-egress.svg",
        "isp-matrix.svg",
        "compare.txt",
        "compare-cdf.svg",
        "sim/report.json",
        "sim/nodes.csv",
        "sim/timeline.csv",
        "sim/requests.csv",
        "logs/seeder-0.log",
    ] {
        assert!(opts.out.join(f).is_file(), "{f} missing");
    }
    let csv = cinemesh_sim::compare::parse_csv(&std::fs::read_to_string(opts.out.join("nodes.csv"))?);
    assert_eq!(csv.len(), 4);
    let size = 8u64 << 20;
    for row in csv.iter().filter(|r| r["seeder"] == "false") {
        let num = |k: &str| row[k].parse::<f64>().unwrap_or(f64::NAN);
        assert!(num("complete_s") > 0.0 && num("bytes_down") >= size as f64, "{row:?}");
        assert_eq!(num("down_same_isp") + num("down_other_isp"), num("bytes_down"), "{row:?}");
    }
    // Both bodies report the engine's busy counters per node, and the comparison sets them side by side.
    for dir in [opts.out.clone(), opts.out.join("sim")] {
        let rows = cinemesh_sim::compare::parse_csv(&std::fs::read_to_string(dir.join("nodes.csv"))?);
        for row in &rows {
            for col in ["busy_answers", "busy_received"] {
                assert!(row[col].parse::<u64>().is_ok(), "{col} in {}: {row:?}", dir.display());
            }
            // Time offline before completing: the simulator's churn; the lab's daemons run throughout.
            assert!(row.contains_key("offline_s"), "offline_s in {}: {row:?}", dir.display());
        }
    }
    let compare = std::fs::read_to_string(opts.out.join("compare.txt"))?;
    assert!(compare.contains("busy answers received"), "{compare}");
    let late: Vec<_> =
        csv.iter().filter(|r| (2.95..4.0).contains(&r["online_s"].parse::<f64>().unwrap_or(0.0))).collect();
    assert_eq!(late.len(), 1, "the late cinema comes online 3 s after the publish: {csv:?}");
    let seeder = csv.iter().find(|r| r["seeder"] == "true").context("seeder row")?;
    assert!(seeder["bytes_up"].parse::<u64>()? >= size, "the distributor sent at least one copy");
    // A lower bound is a lower bound: no cinema beats B(k) (5% for the poll and publish timing).
    let p50 = report.cdf.slowdown.p50.context("p50")?;
    assert!(p50 >= 0.95 && report.cdf.slowdown.max.context("max")? >= p50, "{text}");
    // The last point counts each cinema from its start (the late one 3 s after the publish), so it is at
    // least the efficiency from the publish, and still below the bound (5% for the timing).
    let (last, from_publish) =
        (report.last_point_efficiency.context("last point")?, report.efficiency.context("efficiency")?);
    assert!(last >= from_publish - 1e-9 && last <= 1.05, "{last} against {from_publish}: {text}");
    // isp-a's border is shaped and no seeder is inside: B(k) with the borders is higher, still a bound.
    let bordered = report.cdf.bordered.context("lab-tiny shapes isp-a's border")?;
    let b50 = bordered.p50.context("bordered p50")?;
    assert!((0.95..=p50).contains(&b50), "{b50} against {p50}: {text}");
    // The daemon counts a chunk as sent when it hands it to the stream, so over a few seconds the
    // utilisation can read a little above 1; far above would mean the shaping failed.
    assert!(report.seeder_utilisation > 0.2 && report.seeder_utilisation <= 1.5, "{text}");
    // The links' own counters: content is most of what they carried, never all of it (headers, ACKs), so
    // the bound on those content rates is above Kumar-Ross.
    let wire = report.wire.context("the links' counters were read")?;
    for share in [wire.seeder_payload_share, wire.cinema_payload_share, wire.cinema_down_payload_share] {
        assert!((0.5..1.0).contains(&share), "{wire:?}: {text}");
    }
    assert!(wire.t_min > report.t_min && wire.efficiency > report.efficiency, "{wire:?}: {text}");
    assert!(text.contains("wire: content is"), "{text}");
    // TCP as the lab set it, and what it resent: a share, counted in every namespace.
    assert_eq!(report.tcp.congestion_control.as_deref(), Some("reno"), "{text}");
    for share in [report.tcp.seeder_retransmitted, report.tcp.cinema_retransmitted] {
        assert!(share.is_some_and(|s| (0.0..1.0).contains(&s)), "{:?}: {text}", report.tcp);
    }
    assert!(text.contains("TCP congestion control reno; segments retransmitted:"), "{text}");
    assert_eq!(report.uplink_queue_ms, Some(700.0), "{text}");
    assert!(text.contains("cinemas' upload queues: 700 ms (--uplink-queue)"), "{text}");
    assert!(
        text.contains("sysctls in every node's namespace (--sysctl): net.ipv4.tcp_slow_start_after_idle=0")
    );
    let held = report.latency.context("the lab applied the scenario's latency")?;
    assert!(held.packets > 1000 && held.overruns == 0, "{held:?}: {text}");
    assert!(text.contains("latency: the scenario's one-way latency per pair"), "{text}");
    // The timeline bins the links' own counters beside the daemons' content counters.
    let timeline = std::fs::read_to_string(opts.out.join("timeline.csv"))?;
    assert!(timeline.lines().next().is_some_and(|h| h.ends_with(",fleet_wire_utilisation")), "{timeline}");
    let wire_peak = timeline
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(',').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(wire_peak > 0.05 && wire_peak <= 1.2, "{timeline}");
    assert!(text.contains("per-node |error|"), "{text}");
    // Each cinema's requests, about once a second and at the end: it asked for each of the film's 8 chunks
    // of 1 MiB at least once, within a window of at least one request.
    let requests = cinemesh_sim::compare::parse_csv(&std::fs::read_to_string(opts.out.join("requests.csv"))?);
    for row in csv.iter().filter(|r| r["seeder"] == "false") {
        let name = &row["name"];
        let last = requests
            .iter()
            .rev()
            .find(|r| &r["node"] == name)
            .with_context(|| format!("{name} in requests.csv"))?;
        let num = |k: &str| last[k].parse::<f64>().unwrap_or(f64::NAN);
        assert!(num("window") >= 1.0 && num("requests") >= (size >> 20) as f64, "{last:?}");
    }

    // A congestion control the kernel lacks: a clear error naming those it has, and nothing left behind.
    let bad = Options { congestion_control: Some("nosuchcc".to_owned()), ..opts.clone() };
    match lab::run(&sc, &bad, &AtomicBool::new(false)) {
        Err(LabError::Unsupported(msg)) => {
            assert!(
                msg.contains("\"nosuchcc\"") && msg.contains("this kernel has: ") && msg.contains("reno"),
                "{msg}"
            )
        }
        other => panic!("expected an error naming the kernel's congestion controls, got {other:?}"),
    }
    assert_eq!(lab_leftovers()?, Vec::<String>::new(), "a lab stopped by its setup leaves nothing");
    // A sysctl the namespaces lack, or one outside `net.`: an error naming it, nothing left behind.
    for key in ["net.ipv4.no_such_setting", "kernel.panic", "net.ipv4/../../kernel"] {
        let bad = Options { sysctls: vec![(key.to_owned(), "1".to_owned())], ..opts.clone() };
        match lab::run(&sc, &bad, &AtomicBool::new(false)) {
            Err(LabError::Unsupported(msg)) => assert!(msg.contains(key), "{msg}"),
            other => panic!("expected an error naming sysctl {key}, got {other:?}"),
        }
        assert_eq!(lab_leftovers()?, Vec::<String>::new(), "a lab stopped by its setup leaves nothing");
    }
    Ok(())
}
