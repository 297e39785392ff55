//! Attacks on the filesystem backend's confinement: a directory swapped for a symlink out of the location while
//! saves, reads, listings and deletes run through it, special files under the location, and names in the way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use storage_core::{Error, NameRule, Storage};
use storage_fs::{FileSystemStorage, FsOptions};

fn storage(dir: &Path) -> FileSystemStorage {
    FileSystemStorage::new("fs", FsOptions { location: dir.join("media"), ..FsOptions::default() }).expect("storage")
}

/// Every entry under `dir`, at any depth (symlinks are counted, not followed).
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(entries(&entry.path()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_symlink_swapped_in_at_any_moment_leads_nothing_outside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let storage = Arc::new(storage(dir.path()));
    let root = storage.location().to_path_buf();
    std::fs::create_dir_all(root.join("d")).expect("d");

    // The attacker moves the directory away, puts a symlink out of the location in its place, and back, as fast
    // as it can, whatever the saves have done meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, swaps, root, outside) = (stop.clone(), swaps.clone(), root.clone(), outside.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(root.join("d.away"));
                let _ = std::fs::rename(root.join("d"), root.join("d.away"));
                let _ = std::os::unix::fs::symlink(&outside, root.join("d"));
                std::thread::yield_now();
                let _ = std::fs::remove_file(root.join("d"));
                let _ = std::fs::rename(root.join("d.away"), root.join("d"));
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    const TASKS: usize = 8;
    const ROUNDS: usize = 400;
    let saved = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (storage, saved, refused) = (storage.clone(), saved.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let name = match round % 3 {
                    0 => "d/planted.txt".to_owned(),
                    1 => format!("d/new{task}/deeper/planted.txt"),
                    _ => format!("d/planted{task}.txt"),
                };
                match storage.save(&name, "planted".into()).await {
                    Ok(_) => saved.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
                if round % 4 == 0 {
                    let _ = storage.open("d/planted.txt").await;
                    let _ = storage.listdir("d").await;
                    let _ = storage.delete(&name).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("saver");
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("attacker");

    let escaped = entries(&outside);
    let leftovers: Vec<_> =
        entries(&root).into_iter().filter(|p| p.to_string_lossy().contains(".storages-tmp-")).collect();
    storage_testkit::report(&format!(
        "fs symlink swap: {} saves ({} stored, {} refused) during {} swaps of a directory for a symlink out of the \
         location: {} files outside the location, {} temporary files left",
        TASKS * ROUNDS,
        saved.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        swaps.load(Ordering::Relaxed),
        escaped.len(),
        leftovers.len(),
    ));
    assert!(escaped.is_empty(), "written outside the location: {escaped:?}");
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(saved.load(Ordering::Relaxed) > 0, "no save got through at all: the attack tested nothing");
    assert!(swaps.load(Ordering::Relaxed) > 0, "the attacker never swapped");
}

#[tokio::test]
async fn a_fifo_under_the_location_is_refused_not_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = storage(dir.path());
    storage.save("keep.txt", "x".into()).await.expect("save");
    let fifo = storage.location().join("pipe");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .expect("mkfifo");
    // Opening a FIFO for reading blocks until a writer comes. Should the storage open it, a writer comes after
    // a while, so that the test fails instead of hanging; a refusal returns without one.
    let opening = tokio::spawn({
        let storage = storage.clone();
        async move { storage.open("pipe").await.map(drop) }
    });
    let (released, writer) = {
        let fifo = fifo.clone();
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let writer = std::thread::spawn(move || {
            for _ in 0..600 {
                if flag.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK;
            rustix::fs::open(&fifo, flags, rustix::fs::Mode::empty()).is_ok()
        });
        (released, writer)
    };
    let outcome = opening.await.expect("open task");
    released.store(true, Ordering::Relaxed);
    assert!(!writer.join().expect("writer"), "the open waited for a writer: it opened the FIFO");
    let error = outcome.expect_err("a FIFO is no file");
    assert!(error.to_string().contains("not a regular file"), "{error}");
    let size = storage.size("pipe").await.expect_err("a FIFO has no size as a file");
    assert!(size.to_string().contains("not a regular file"), "{size}");
    assert!(storage.exists("pipe").await.expect("exists"));
}

#[tokio::test]
async fn what_is_in_the_way_of_a_save_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = storage(dir.path());
    storage.save("keep.txt", "x".into()).await.expect("save");
    let root = storage.location().to_path_buf();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("loop", root.join("loop")).expect("symlink");

    let cases = [
        ("keep.txt/inner.txt", "\"keep.txt\" is a file, not a directory"),
        ("dangling/inner.txt", "\"dangling\" is a symlink to nothing, not a directory"),
        ("loop/inner.txt", "\"loop\" is a symlink loop"),
    ];
    for (name, expected) in cases {
        let error = storage.save(name, "y".into()).await.expect_err(name);
        assert!(!matches!(error, Error::AlreadyExists { .. }), "{name}: {error}");
        assert!(error.to_string().contains(expected), "{name}: {error}");
    }
    assert_eq!(std::fs::read_to_string(root.join("keep.txt")).expect("kept"), "x");
    // A dangling symlink as the name itself is a name taken: the save takes the next one.
    assert_eq!(storage.save("dangling", "z".into()).await.expect("save"), "dangling_");
    // A location that is a file is named as such, not as a name taken.
    std::fs::write(dir.path().join("plain"), "x").expect("write");
    let misplaced =
        FileSystemStorage::new("fs", FsOptions { location: dir.path().join("plain"), ..FsOptions::default() })
            .expect("storage");
    let error = misplaced.save("a.txt", "y".into()).await.expect_err("a location that is a file");
    assert!(!matches!(error, Error::AlreadyExists { .. }), "{error}");
    assert!(error.to_string().contains("is not a usable directory"), "{error}");
    let error = storage.save("../escape.txt", "x".into()).await.expect_err("escape");
    assert!(matches!(error, Error::SuspiciousName { rule: NameRule::ParentSegment, .. }), "{error}");
}
