//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) through the decoders, as the fuzz
//! targets do: every input returns, none panics. This is the CI's fuzz smoke test; the coverage-guided
//! runs themselves need cargo-afl (`tests/fuzz/README.md`); `random_mutations_of_the_corpus_decode_without_a_panic`
//! adds seeded random mutations of the corpus, 4 s per target at most. `write_seed_corpus` (ignored) regenerates the
//! seeds from real encodings.

use std::path::{Path, PathBuf};

use cinemesh_overlay::catalogue::{Body, Entry, Keypair, Member, Policy, Publish, RateWindow, Targets};
use cinemesh_overlay::content::Manifest;
use cinemesh_overlay::net::fleet::{ContentProgress, Report};
use cinemesh_overlay::net::protocol::{self, NodeInfo, Request, Response};
use cinemesh_overlay::ContentId;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

#[test]
fn the_fuzz_corpus_decodes_without_a_panic() -> anyhow::Result<()> {
    for target in cinemesh_tests::TARGETS {
        let mut n = 0;
        for file in std::fs::read_dir(corpus(target))? {
            let data = std::fs::read(file?.path())?;
            cinemesh_tests::decode(target, &data);
            // Every prefix too: truncated input is the commonest malformed input.
            for cut in (0..data.len()).step_by(data.len() / 16 + 1) {
                cinemesh_tests::decode(target, &data[..cut]);
            }
            n += 1;
        }
        assert!(n >= 2, "corpus of {target} has {n} inputs");
    }
    Ok(())
}

/// Mutates `data` as a fuzzer's havoc stage does: flips, interesting bytes, inserts, deletes, splices.
fn mutate(rng: &mut impl rand::Rng, data: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xfe, 0xff, b'"', b'['];
    for _ in 0..rng.gen_range(1..8) {
        let at = rng.gen_range(0..=data.len());
        match rng.gen_range(0..6) {
            0 if at < data.len() => data[at] ^= 1 << rng.gen_range(0..8),
            1 if at < data.len() => data[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
            2 => data.insert(at, rng.gen()),
            3 if at < data.len() => {
                let end = rng.gen_range(at..=data.len().min(at + 16));
                data.drain(at..end);
            }
            4 if !other.is_empty() => {
                let from = rng.gen_range(0..other.len());
                let end = rng.gen_range(from..=other.len().min(from + 64));
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ if at + 4 <= data.len() => {
                // A length or count field set to something large.
                data[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, rng.gen_range(0..0x80)]);
            }
            _ => {}
        }
        data.truncate(64 * 1024);
    }
}

/// The CI's fuzz smoke: seeded random mutations of the corpus (no coverage guidance; that is cargo-afl's
/// job) through every decoder: 200,000 per target, 4 s per target at most (`CINEMESH_FUZZ_EXECS`,
/// `CINEMESH_FUZZ_SECS` for a longer run). The seed is printed; `CINEMESH_FUZZ_SEED` replays.
#[test]
fn random_mutations_of_the_corpus_decode_without_a_panic() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("CINEMESH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let (execs, secs) = (env("CINEMESH_FUZZ_EXECS", 200_000), env("CINEMESH_FUZZ_SECS", 4));
    for target in cinemesh_tests::TARGETS {
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(corpus(target))?
            .map(|f| Ok(std::fs::read(f?.path())?))
            .collect::<anyhow::Result<_>>()?;
        let (start, mut tried) = (std::time::Instant::now(), 0u64);
        while tried < execs && start.elapsed() < std::time::Duration::from_secs(secs) {
            let mut data = inputs[rng.gen_range(0..inputs.len())].clone();
            let other = &inputs[rng.gen_range(0..inputs.len())];
            mutate(&mut rng, &mut data, other);
            cinemesh_tests::decode(target, &data);
            tried += 1;
        }
        eprintln!("fuzz smoke {target}: {tried} mutated inputs in {:?} (seed {seed})", start.elapsed());
    }
    Ok(())
}

/// A frame body as the codec hands it to the decoder (without the length prefix).
macro_rules! body {
    ($msg:expr) => {
        protocol::encode_frame($msg, usize::MAX).unwrap()[4..].to_vec()
    };
}

#[test]
#[ignore = "writes the seed corpus into tests/fuzz/corpus"]
fn write_seed_corpus() -> anyhow::Result<()> {
    let content = ContentId([7; 32]);
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let info = NodeInfo {
        role: "cinema".into(),
        name: Some("paris-11".into()),
        isp: Some("orange".into()),
        site: None,
        version: "0.1.0".into(),
        downlink: Some(125_000_000),
    };
    let requests = [
        Request::Hello(info.clone()),
        Request::Manifest { content },
        Request::Bitfield { content },
        Request::Chunk { content, index: 3, rate: 1_000_000 },
        Request::Have { content, chunks: vec![1, 2, 900] },
        Request::Sync { heads: vec![([1; 32], 4), ([2; 32], 0)] },
        Request::Cancel { content, index: 9 },
    ];
    for (i, r) in requests.iter().enumerate() {
        seeds.push(("protocol", format!("request-{i}"), body!(r)));
    }
    let responses = [
        Response::Hello(info),
        Response::Chunk { bytes: vec![0xab; 64], load: 0.5 },
        Response::Busy { load: 1.5 },
        Response::Missing { load: 0.25 },
        Response::Cancelled,
        Response::Entries(vec![vec![1, 2, 3]]),
        Response::Refused { reason: "not admitted".into() },
    ];
    for (i, r) in responses.iter().enumerate() {
        seeds.push(("protocol", format!("response-{i}"), body!(r)));
    }

    let tree = tempfile::tempdir()?;
    std::fs::create_dir_all(tree.path().join("reel/sub"))?;
    std::fs::write(tree.path().join("reel/a.mxf"), vec![1u8; 200_000])?;
    std::fs::write(tree.path().join("reel/sub/b.xml"), b"<xml/>")?;
    std::fs::write(tree.path().join("empty"), b"")?;
    std::fs::create_dir_all(tree.path().join("empty-dir"))?;
    seeds.push(("manifest", "tree".into(), Manifest::from_path(tree.path(), 64 * 1024)?.encode()));
    seeds.push((
        "manifest",
        "file".into(),
        Manifest::from_path(&tree.path().join("reel/a.mxf"), 1 << 16)?.encode(),
    ));

    let key = Keypair::from_secret([9; 32]);
    let peer = "12D3KooWRfVRhxYXAeZcJPfaqisy3nCVnEsDPxjzsyrtJSWxNqTR".to_owned();
    let bodies = [
        Body::Publish(Publish {
            content,
            title: "Film".into(),
            size: 100,
            chunk_size: 10,
            chunks: 10,
            targets: Targets::Groups(vec!["paris".into()]),
            deadline: Some(1_700_000_100),
        }),
        Body::Withdraw { content },
        Body::Admit(Member {
            peer: peer.clone(),
            name: "n".into(),
            isp: "orange".into(),
            site: "s".into(),
            groups: vec!["paris".into()],
        }),
        Body::Revoke { peer },
        Body::Policy(Policy {
            group: None,
            schedule: vec![RateWindow {
                days: vec![0, 6],
                start_minute: 60,
                end_minute: 120,
                upload: Some(1000),
                download: None,
            }],
        }),
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        let e = Entry { key: key.public(), seq: i as u64 + 1, issued_at: 1_700_000_000, body: b };
        seeds.push(("entry", format!("entry-{i}"), e.sign(&key)?.encode()));
    }

    let report = |contents| Report {
        name: Some("lyon-2".into()),
        contents,
        disk_free: Some(1 << 40),
        ..Report::empty("cinema", 1_700_000_000)
    };
    seeds.push(("fleet", "empty".into(), report(vec![]).encode()));
    let progress = ContentProgress {
        content,
        have: 3,
        total: 10,
        rate: 1e6,
        state: cinemesh_overlay::net::fleet::ContentState::Fetching,
    };
    seeds.push(("fleet", "one".into(), report(vec![progress]).encode()));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    seeds.push(("config", "default".into(), cinemesh::config::DEFAULT_TOML.as_bytes().to_vec()));
    seeds.push(("config", "packaged".into(), std::fs::read(root.join("packaging/cinemesh.toml"))?));
    for s in ["small-8", "two-isp-locality", "netns-3"] {
        seeds.push(("scenario", s.into(), std::fs::read(root.join(format!("scenarios/{s}.toml")))?));
    }

    for (target, name, data) in seeds {
        std::fs::create_dir_all(corpus(target))?;
        std::fs::write(corpus(target).join(name), data)?;
    }
    Ok(())
}
