//! Store tests: durability, crash safety, verification, reuse, space.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use proptest::prelude::*;

use super::chunks::Crash;
use super::*;

const CS: u32 = 64 * 1024;

/// Pseudo-random bytes with no repeated chunk (BLAKE3 as a stream).
fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut out);
    out
}

/// A content of two files: 3 chunks + 1 chunk, plus an empty file.
fn film(seed: u8) -> (Manifest, Vec<Vec<u8>>) {
    let a = data(seed, CS as usize * 2 + 100);
    let b = data(seed.wrapping_add(1), 500);
    let m = Manifest::from_memory(CS, &[("reel/a.mxf", &a), ("b.xml", &b), ("empty", b"")]).unwrap();
    // Chunks in manifest order: b.xml (1 chunk), then reel/a.mxf (3 chunks).
    let mut chunks = vec![b.clone()];
    chunks.extend(a.chunks(CS as usize).map(<[u8]>::to_vec));
    (m, chunks)
}

fn open(dir: &Path) -> Store {
    let mut s = Store::open(dir).unwrap();
    s.set_reserve(0);
    s
}

#[test]
fn write_read_round_trip_and_restart_keeps_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = film(1);
    let id = m.id();
    {
        let s = open(dir.path());
        s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        assert_eq!(s.contents().unwrap(), vec![id]);
        assert_eq!(s.bitfield(&id).unwrap().unwrap().count(), 0);
        let base = s.content_path(&id).unwrap().unwrap();
        assert_eq!(fs::metadata(base.join("reel/a.mxf")).unwrap().len(), CS as u64 * 2 + 100);
        assert_eq!(fs::metadata(base.join("empty")).unwrap().len(), 0);
        for i in [0, 2, 3] {
            s.write_chunk(&id, i, &chunks[i as usize]).unwrap();
        }
        assert_eq!(s.read_chunk(&id, 2).unwrap(), chunks[2]);
        assert!(matches!(s.read_chunk(&id, 1), Err(StoreError::NotPresent { chunk: 1, .. })));
        assert!(matches!(s.write_chunk(&id, 4, b"x"), Err(StoreError::ChunkOutOfRange { count: 4, .. })));
    }
    let s = open(dir.path());
    let bits = s.bitfield(&id).unwrap().unwrap();
    assert_eq!(bits.iter_ones().collect::<Vec<_>>(), vec![0, 2, 3]);
    assert_eq!(s.manifest(&id).unwrap().unwrap(), m);
    s.write_chunk(&id, 1, &chunks[1]).unwrap();
    assert!(s.bitfield(&id).unwrap().unwrap().is_complete());
    let a = fs::read(s.content_path(&id).unwrap().unwrap().join("reel/a.mxf")).unwrap();
    assert_eq!(a, chunks[1..].concat());
}

#[test]
fn corrupt_bytes_are_rejected_and_nothing_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let (m, chunks) = film(2);
    let id = m.id();
    s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
    let mut bad = chunks[1].clone();
    bad[10] ^= 1;
    assert!(matches!(s.write_chunk(&id, 1, &bad), Err(StoreError::Corrupt { chunk: 1, .. })));
    assert!(matches!(s.write_chunk(&id, 1, &chunks[1][1..]), Err(StoreError::Corrupt { .. })));
    assert_eq!(s.bitfield(&id).unwrap().unwrap().count(), 0);
    let a = fs::read(s.content_path(&id).unwrap().unwrap().join("reel/a.mxf")).unwrap();
    assert!(a.iter().all(|&b| b == 0), "rejected bytes must not reach the file");
}

#[test]
fn verify_unmarks_a_chunk_corrupted_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let (m, chunks) = film(3);
    let id = m.id();
    s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        s.write_chunk(&id, i as u32, c).unwrap();
    }
    let path = s.content_path(&id).unwrap().unwrap().join("reel/a.mxf");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"rot", u64::from(CS) + 5).unwrap();
    let r = s.verify(&id).unwrap();
    assert_eq!(r, VerifyReport { checked: 4, bad: 1, present: 3, total: 4 });
    assert!(!s.bitfield(&id).unwrap().unwrap().get(2));
    assert_eq!(s.verify(&id).unwrap(), VerifyReport { checked: 3, bad: 0, present: 3, total: 4 });
    s.write_chunk(&id, 2, &chunks[2]).unwrap();
    assert_eq!(s.verify(&id).unwrap().bad, 0);
}

#[test]
fn resized_file_loses_its_marks_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = film(4);
    let id = m.id();
    {
        let s = open(dir.path());
        s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            s.write_chunk(&id, i as u32, c).unwrap();
        }
        let path = s.content_path(&id).unwrap().unwrap().join("reel/a.mxf");
        fs::OpenOptions::new().write(true).open(path).unwrap().set_len(10).unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.bitfield(&id).unwrap().unwrap().iter_ones().collect::<Vec<_>>(), vec![0]);
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A complete write.
    Write,
    /// A crash after the bytes are synced, before the mark.
    CrashBeforeMark,
    /// Garbage written straight into the file (a torn write) with no mark.
    Torn,
    /// Nothing.
    Skip,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Write), Just(Op::CrashBeforeMark), Just(Op::Torn), Just(Op::Skip)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A crash between write and mark loses at most the chunks in flight and never reports an unverified
    /// chunk as held after reopening.
    #[test]
    fn crash_loses_only_chunks_in_flight(ops in prop::collection::vec(op(), 4)) {
        let dir = tempfile::tempdir().unwrap();
        let (m, chunks) = film(5);
        let id = m.id();
        {
            let s = open(dir.path());
            s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
            for (i, op) in ops.iter().enumerate() {
                let i32 = i as u32;
                match op {
                    Op::Write => s.write_chunk(&id, i32, &chunks[i]).unwrap(),
                    Op::CrashBeforeMark => s.write_chunk_with(&id, i32, &chunks[i], Crash::BeforeMark).unwrap(),
                    Op::Torn => {
                        let c = m.chunk(i32).unwrap();
                        let path = s.content_path(&id).unwrap().unwrap().join(m.file_path(c.file).as_str());
                        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                        f.write_all_at(&vec![0xEE; c.len as usize / 2], c.offset).unwrap();
                    }
                    Op::Skip => {}
                }
            }
        } // the store is dropped: the process "dies" here
        let s = open(dir.path());
        let held: Vec<u32> = s.bitfield(&id).unwrap().unwrap().iter_ones().collect();
        let written: Vec<u32> =
            ops.iter().enumerate().filter(|(_, o)| matches!(o, Op::Write)).map(|(i, _)| i as u32).collect();
        prop_assert_eq!(&held, &written);
        for &i in &held {
            prop_assert_eq!(&s.read_chunk(&id, i).unwrap(), &chunks[i as usize]);
        }
        prop_assert_eq!(s.verify(&id).unwrap().bad, 0);
        // The chunks in flight are simply fetched again.
        for (i, c) in chunks.iter().enumerate() {
            s.write_chunk(&id, i as u32, c).unwrap();
        }
        prop_assert!(s.bitfield(&id).unwrap().unwrap().is_complete());
    }
}

#[test]
fn reuse_links_identical_files_and_copies_identical_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let (m1, chunks1) = film(6);
    let id1 = m1.id();
    s.add_content(&m1, ContentRoot::Managed, Have::Nothing).unwrap();
    for (i, c) in chunks1.iter().enumerate() {
        s.write_chunk(&id1, i as u32, c).unwrap();
    }
    // Content 2: the same reel under another name, and a file sharing only its first chunk with reel/a.mxf.
    let a = chunks1[1..].concat();
    let mut partial = chunks1[1].clone();
    partial.extend_from_slice(b"different tail");
    let m2 = Manifest::from_memory(CS, &[("copy/a.mxf", &a), ("partial.bin", &partial), ("new.txt", b"new")])
        .unwrap();
    let id2 = m2.id();
    s.add_content(&m2, ContentRoot::Managed, Have::Nothing).unwrap();
    // copy/a.mxf: 3 chunks linked; new.txt: none; partial.bin: its first chunk copied.
    assert_eq!(s.reuse_local(&id2).unwrap(), 4);
    let bits = s.bitfield(&id2).unwrap().unwrap();
    assert_eq!(bits.iter_zeros().collect::<Vec<_>>(), vec![3, 5]);
    let base1 = s.content_path(&id1).unwrap().unwrap();
    let base2 = s.content_path(&id2).unwrap().unwrap();
    let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(base1.join("reel/a.mxf")), ino(base2.join("copy/a.mxf")), "whole file hard-linked");
    assert_eq!(s.read_chunk(&id2, 4).unwrap(), chunks1[1]);
    assert_eq!(s.verify(&id2).unwrap().bad, 0);
    // Removing the first content keeps the second's linked file.
    s.remove_content(&id1).unwrap();
    assert!(!base1.exists());
    assert_eq!(s.contents().unwrap(), vec![id2]);
    assert_eq!(fs::read(base2.join("copy/a.mxf")).unwrap(), a);
    assert_eq!(s.reuse_local(&id2).unwrap(), 0);
}

#[test]
fn no_space_with_an_absurd_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let e = s.check_space(1, u64::MAX / 2).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace { needed: 1, .. }));
    assert!(e.to_string().contains("not enough disk space"), "{e}");
    s.check_space(1, 0).unwrap();
    s.set_reserve(u64::MAX / 2);
    let (m, _) = film(7);
    assert!(matches!(
        s.add_content(&m, ContentRoot::Managed, Have::Nothing),
        Err(StoreError::NoSpace { .. })
    ));
    assert!(s.contents().unwrap().is_empty());
}

#[test]
fn external_content_trusted_or_verified_and_never_deleted() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("reel")).unwrap();
    let (_, chunks) = film(8);
    fs::write(src.path().join("reel/a.mxf"), chunks[1..].concat()).unwrap();
    fs::write(src.path().join("b.xml"), &chunks[0]).unwrap();
    fs::write(src.path().join("empty"), b"").unwrap();
    let m = Manifest::from_path(src.path(), CS).unwrap();
    let id = m.id();
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.add_content(&m, ContentRoot::External(src.path().into()), Have::Trusted).unwrap();
    assert!(s.bitfield(&id).unwrap().unwrap().is_complete());
    assert_eq!(s.read_chunk(&id, 0).unwrap(), chunks[0]);
    // Same root again: nothing to do; another root: refused.
    s.add_content(&m, ContentRoot::External(src.path().into()), Have::Trusted).unwrap();
    assert!(matches!(
        s.add_content(&m, ContentRoot::Managed, Have::Nothing),
        Err(StoreError::RootConflict { .. })
    ));
    s.remove_content(&id).unwrap();
    assert!(src.path().join("reel/a.mxf").exists(), "external files are never deleted");
    // Verify mode: a corrupted chunk is not marked.
    let f = fs::OpenOptions::new().write(true).open(src.path().join("reel/a.mxf")).unwrap();
    f.write_all_at(b"x", 0).unwrap();
    s.add_content(&m, ContentRoot::External(src.path().into()), Have::Verify).unwrap();
    assert_eq!(s.bitfield(&id).unwrap().unwrap().iter_zeros().collect::<Vec<_>>(), vec![1]);
    // Trusted with a file of the wrong size: refused.
    s.remove_content(&id).unwrap();
    fs::write(src.path().join("b.xml"), b"short").unwrap();
    assert!(matches!(
        s.add_content(&m, ContentRoot::External(src.path().into()), Have::Trusted),
        Err(StoreError::SizeMismatch { .. })
    ));
}

#[test]
fn catalogue_entries_in_key_seq_order_and_peer_stats() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.put_catalogue_entry(&[2; 32], 1, b"k2s1").unwrap();
        s.put_catalogue_entry(&[1; 32], 256, b"k1s256").unwrap();
        s.put_catalogue_entry(&[1; 32], 3, b"k1s3").unwrap();
        let st = PeerStats { bytes_up: 10, bytes_down: 20, failures: 1 };
        s.put_peer_stats("12D3KooW", &st).unwrap();
        s.db.flush().unwrap();
    }
    let s = open(dir.path());
    let got = s.catalogue_entries().unwrap();
    assert_eq!(got, vec![b"k1s3".to_vec(), b"k1s256".to_vec(), b"k2s1".to_vec()]);
    assert_eq!(
        s.peer_stats("12D3KooW").unwrap(),
        Some(PeerStats { bytes_up: 10, bytes_down: 20, failures: 1 })
    );
    assert_eq!(s.peer_stats("other").unwrap(), None);
}

#[test]
fn catalogue_entries_are_flushed_once_per_batch_off_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for seq in 1..=256u64 {
            s.put_catalogue_entry(&[7; 32], seq, &seq.to_be_bytes()).unwrap();
        }
        let flush = s.catalogue_flush().expect("the first flush is scheduled");
        assert!(s.catalogue_flush().is_none(), "a second one waits for the first: one fsync for the batch");
        futures::executor::block_on(flush).unwrap();
        // Once it ran, a later write schedules a new flush.
        s.put_catalogue_entry(&[7; 32], 257, b"late").unwrap();
        futures::executor::block_on(s.catalogue_flush().expect("scheduled again")).unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.catalogue_entries().unwrap().len(), 257);
}

#[test]
fn a_store_reopens_at_once_after_close_and_a_held_one_is_reported_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = film(9);
    for round in 0..20u32 {
        let s = open(dir.path());
        if round == 0 {
            s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        }
        let idx = round % m.chunk_count();
        s.write_chunk(&m.id(), idx, &chunks[idx as usize]).unwrap();
        drop(s); // sled's flusher releases the lock a moment later: open must wait for it, not fail
    }
    let held = open(dir.path());
    assert_eq!(held.bitfield(&m.id()).unwrap().unwrap().count(), m.chunk_count());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

/// One undecodable record does not stop the start: that content is quarantined, the others stay.
#[test]
fn an_undecodable_record_is_quarantined_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = film(1);
    let (bad, _) = film(3);
    {
        let s = open(dir.path());
        s.add_content(&good, ContentRoot::Managed, Have::Nothing).unwrap();
        s.add_content(&bad, ContentRoot::Managed, Have::Nothing).unwrap();
        s.manifests.insert(bad.id().0, b"not a manifest".as_slice()).unwrap();
        s.bitfields.insert([0xee; 7], b"stray".as_slice()).unwrap(); // a key that is no content id
        s.db.flush().unwrap();
    }
    let s = Store::open(dir.path()).expect("opens despite the bad records");
    assert_eq!(s.contents().unwrap(), vec![good.id()]);
    assert!(s.bitfield(&bad.id()).unwrap().is_none() && s.content_path(&bad.id()).unwrap().is_none());
    let kept: Vec<Vec<u8>> = s.quarantine.iter().keys().map(|k| k.unwrap().to_vec()).collect();
    assert_eq!(kept.len(), 4, "manifest, root and bitfield of the bad content, and the stray key");
    assert!(kept.contains(&[b"manifests/".as_slice(), &bad.id().0].concat()));
    // Its files were managed and are now owned by nothing: collected too.
    assert!(!dir.path().join("content").join(bad.id().to_hex()).exists());
    assert!(dir.path().join("content").join(good.id().to_hex()).exists());
}

/// A crash between forgetting a content's metadata and deleting its files leaves files nobody owns: they
/// are collected at the next start; other files under `content/` are left alone.
#[test]
fn files_orphaned_by_a_crash_during_removal_are_collected_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = film(5);
    let id = m.id();
    {
        let s = open(dir.path());
        s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        // The metadata half of remove_content, then "crash".
        for tree in [&s.manifests, &s.roots, &s.bitfields] {
            tree.remove(id.0).unwrap();
        }
        s.db.flush().unwrap();
    }
    let orphan = dir.path().join("content").join(id.to_hex());
    assert!(orphan.join("reel/a.mxf").exists());
    let other = dir.path().join("content").join("README");
    fs::write(&other, "operator's note").unwrap();
    let s = open(dir.path());
    assert!(!orphan.exists(), "orphaned files collected");
    assert!(other.exists(), "a file not named like a content id is not ours to delete");
    assert!(s.contents().unwrap().is_empty());
}

/// A content of `n` chunks in one file.
fn reel(seed: u8, n: usize) -> (Manifest, Vec<Vec<u8>>) {
    let a = data(seed, CS as usize * n);
    let m = Manifest::from_memory(CS, &[("reel.mxf", &a)]).unwrap();
    (m, a.chunks(CS as usize).map(<[u8]>::to_vec).collect())
}

/// Writes chunks `0..n` of `id` without settling them, as writers at once would: their tickets.
fn queue(s: &Store, id: &ContentId, chunks: &[Vec<u8>], n: u32) -> Vec<u64> {
    (0..n)
        .map(|i| s.commits.enqueue(s.write_unsynced(id, i, &chunks[i as usize]).unwrap().unwrap()))
        .collect()
}

#[test]
fn chunks_written_together_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = reel(21, 6);
    let id = m.id();
    {
        let s = open(dir.path());
        s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        // Four writers' chunks are written and queued before any of them settles.
        let tickets = queue(&s, &id, &chunks, 4);
        assert_eq!(s.bitfield(&id).unwrap().unwrap().count(), 0, "nothing is marked before its sync");
        // The last to settle leads and carries all four: one sync of the file, one flush.
        assert_eq!(s.settle(tickets[3]), commit::Settled::Marked);
        assert_eq!(s.commit_counts(), (1, 4));
        for &t in &tickets[..3] {
            assert_eq!(s.settle(t), commit::Settled::Marked);
        }
        assert_eq!(s.commit_counts(), (1, 4), "the others found their chunks already committed");
        assert_eq!(s.bitfield(&id).unwrap().unwrap().iter_ones().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // A lone writer commits alone.
        s.write_chunk(&id, 5, &chunks[5]).unwrap();
        assert_eq!(s.commit_counts(), (2, 5));
        // Already held: nothing written, nothing committed.
        s.write_chunk(&id, 5, &chunks[5]).unwrap();
        assert_eq!(s.commit_counts(), (2, 5));
    }
    let s = open(dir.path());
    assert_eq!(s.bitfield(&id).unwrap().unwrap().iter_ones().collect::<Vec<_>>(), vec![0, 1, 2, 3, 5]);
    assert_eq!(s.verify(&id).unwrap().bad, 0);
}

#[test]
fn a_failed_commit_leaves_each_writer_to_mark_its_own_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = reel(22, 3);
    let id = m.id();
    let s = open(dir.path());
    s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
    let tickets = queue(&s, &id, &chunks, 2);
    s.commits.fail_next.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s.settle(tickets[0]), commit::Settled::Failed);
    assert_eq!(s.settle(tickets[1]), commit::Settled::Failed);
    assert_eq!(s.bitfield(&id).unwrap().unwrap().count(), 0, "a failed batch marks nothing");
    assert_eq!(s.commit_counts(), (0, 0));
    // Through write_chunk, the failure is retried alone and the chunk is stored.
    s.commits.fail_next.store(true, std::sync::atomic::Ordering::Relaxed);
    s.write_chunk(&id, 2, &chunks[2]).unwrap();
    assert_eq!(s.bitfield(&id).unwrap().unwrap().iter_ones().collect::<Vec<_>>(), vec![2]);
    // The next batch is fine again.
    s.write_chunk(&id, 0, &chunks[0]).unwrap();
    assert_eq!(s.commit_counts(), (1, 1));
}

#[test]
fn concurrent_writers_all_land_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (m, chunks) = reel(23, 48);
    let id = m.id();
    {
        let s = Arc::new(open(dir.path()));
        s.add_content(&m, ContentRoot::Managed, Have::Nothing).unwrap();
        let chunks = Arc::new(chunks.clone());
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let (s, chunks) = (s.clone(), chunks.clone());
                std::thread::spawn(move || {
                    for i in (t..48).step_by(8) {
                        s.write_chunk(&id, i, &chunks[i as usize]).unwrap();
                        // Every return means marked and durable.
                        assert!(s.bitfield(&id).unwrap().unwrap().get(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (commits, carried) = s.commit_counts();
        assert_eq!(carried, 48);
        assert!((1..=48).contains(&commits), "{commits} commits");
    }
    let s = open(dir.path());
    assert!(s.bitfield(&id).unwrap().unwrap().is_complete());
    assert_eq!(s.verify(&id).unwrap().bad, 0);
}
