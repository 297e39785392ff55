//! The behaviours every storage backend owes, as scenarios any backend's tests can run.
//!
//! A backend crate runs them all with [`conformance!`]:
//!
//! ```
//! use std::sync::Arc;
//! use storage_core::InMemoryStorage;
//!
//! fn fixture() -> storage_testkit::Fixture {
//!     storage_testkit::Fixture::new(Arc::new(InMemoryStorage::with_alias("memory")))
//! }
//!
//! storage_testkit::conformance!(fixture());
//! # fn main() {}
//! ```
//!
//! Scenarios that depend on what a backend can do check its [`Capabilities`](storage_core::Capabilities), not
//! its name.

use futures::TryStreamExt;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use storage_core::{Content, Error, NameRule, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A storage under test, with the local directory (if any) that must hold no leftover temporary file.
pub struct Fixture {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// A local directory the storage writes in, checked for leftovers.
    pub root: Option<PathBuf>,
}

impl Fixture {
    /// A fixture for a storage that writes no local file.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Fixture { storage, root: None }
    }

    /// A fixture for a storage that writes under `root`.
    pub fn with_root(storage: Arc<dyn Storage>, root: impl Into<PathBuf>) -> Self {
        Fixture { storage, root: Some(root.into()) }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The whole content of `name`.
pub async fn read(storage: &dyn Storage, name: &str) -> Vec<u8> {
    storage.open(name).await.expect("open").read_all().await.expect("read").to_vec()
}

/// Empty, small and multi-megabyte content, saved from bytes, a reader and a local file, reads back whole, through `reader()` and with its size.
pub async fn round_trip(f: &Fixture) {
    let s = &*f.storage;
    for (i, len) in [0usize, 1, 7, 4 * 1024 * 1024 + 3].into_iter().enumerate() {
        let content = bytes(len, i as u64);
        let name = format!("round/trip_{len}.bin");
        assert_eq!(s.save(&name, content.clone().into()).await.expect("save"), name);
        assert_eq!(s.size(&name).await.expect("size"), len as u64);
        assert_eq!(read(s, &name).await, content, "bytes, {len}");
        let file = s.open(&name).await.expect("open");
        assert_eq!(file.size(), len as u64);
        let mut via_reader = Vec::new();
        file.reader().read_to_end(&mut via_reader).await.expect("reader");
        assert_eq!(via_reader, content, "reader, {len}");

        // From a reader and from a local path, streamed.
        let from_reader =
            s.save(&name, Content::from_reader(std::io::Cursor::new(content.clone()))).await.expect("save");
        assert_ne!(from_reader, name);
        assert_eq!(read(s, &from_reader).await, content);
        let local = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(local.path(), &content).expect("write local");
        let from_path = s.save(&name, Content::from_path(local.path())).await.expect("save");
        assert_eq!(read(s, &from_path).await, content);
    }
}

/// `chunks(n)` concatenates to the content, and every chunk but the last has exactly `n` bytes.
pub async fn chunks_are_exact(f: &Fixture) {
    let s = &*f.storage;
    let content = bytes(1024 * 1024 + 5, 9);
    s.save("chunks.bin", content.clone().into()).await.expect("save");
    let file = s.open("chunks.bin").await.expect("open");
    for n in [1usize, 2, 3, 1000, 65536, 300_000, 1024 * 1024 + 5, 5_000_000] {
        if n == 1 {
            // One-byte chunks of a megabyte take a while; check a smaller file.
            s.save("small.bin", bytes(1000, 1).into()).await.expect("save");
            let small = s.open("small.bin").await.expect("open");
            let chunks: Vec<_> = small.chunks(1).try_collect().await.expect("chunks");
            assert_eq!(chunks.len(), 1000);
            assert!(chunks.iter().all(|c| c.len() == 1));
            continue;
        }
        let chunks: Vec<_> = file.chunks(n).try_collect().await.expect("chunks");
        let (last, full) = chunks.split_last().expect("at least one chunk");
        assert!(full.iter().all(|c| c.len() == n), "n = {n}");
        assert!(!last.is_empty() && last.len() <= n, "n = {n}");
        assert_eq!(chunks.concat(), content, "n = {n}");
    }
    s.save("empty", Content::from("")).await.expect("save");
    let empty: Vec<_> = s.open("empty").await.expect("open").chunks(4).try_collect().await.expect("chunks");
    assert!(empty.is_empty());
    s.save("django_test.txt", "content".into()).await.expect("save");
    let chunks: Vec<_> = s.open("django_test.txt").await.expect("open").chunks(2).try_collect().await.expect("chunks");
    let joined: Vec<String> = chunks.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    assert_eq!(joined.join("-"), "co-nt-en-t");
    assert!(file.chunks(0).try_collect::<Vec<_>>().await.is_err());
}

/// `range(a..b)` returns exactly those bytes; a range past the end is an error.
pub async fn ranges(f: &Fixture) {
    let s = &*f.storage;
    let content = bytes(700_000, 3);
    s.save("range.bin", content.clone().into()).await.expect("save");
    let file = s.open("range.bin").await.expect("open");
    for (a, b) in [(0u64, 0u64), (0, 1), (5, 300_000), (262_143, 262_145), (699_999, 700_000), (0, 700_000)] {
        assert_eq!(file.range(a..b).await.expect("range"), content[a as usize..b as usize], "{a}..{b}");
    }
    assert!(file.range(10..700_001).await.is_err());
}

/// 32 tasks saving one name get 32 distinct names, each holding what its task wrote.
pub async fn concurrent_saves_keep_everything(f: &Fixture) {
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let storage = f.storage.clone();
        tasks.push(tokio::spawn(async move {
            let content = format!("task {i} ").repeat(1 + i as usize * 1000).into_bytes();
            let name = storage.save("race/django_test.txt", content.clone().into()).await.expect("save");
            (name, content)
        }));
    }
    let mut names = HashSet::new();
    let mut results = Vec::new();
    for task in tasks {
        let (name, content) = task.await.expect("task");
        assert!(names.insert(name.clone()), "{name} given twice");
        results.push((name, content));
    }
    assert_eq!(names.len(), 32);
    for (name, content) in results {
        assert_eq!(read(&*f.storage, &name).await, content, "{name}");
    }
    let (_, files) = f.storage.listdir("race").await.expect("listdir");
    assert_eq!(files.len(), 32, "{files:?}");
}

/// An `open_write` dropped uncommitted leaves nothing; committed through `shutdown`, the file appears whole.
pub async fn dropped_writer_leaves_nothing(f: &Fixture) {
    let s = &*f.storage;
    let mut writer = s.open_write("dropped/file.txt").await.expect("open_write");
    writer.write_all(&bytes(100_000, 5)).await.expect("write");
    drop(writer);
    assert!(!s.exists("dropped/file.txt").await.expect("exists"));
    assert_eq!(s.listdir("dropped").await.expect("listdir").1, Vec::<String>::new());
    if let Some(root) = &f.root {
        assert_eq!(count_files(root), 0, "a temporary file was left behind");
    }

    // Committed through shutdown, it appears whole.
    let mut writer = s.open_write("storage_test").await.expect("open_write");
    writer.write_all(b"storage contents").await.expect("write");
    assert!(!s.exists("storage_test").await.expect("exists"));
    writer.shutdown().await.expect("shutdown");
    assert_eq!(writer.committed_name(), Some("storage_test"));
    assert_eq!(read(s, "storage_test").await, b"storage contents");
}

/// A save whose content fails halfway, or whose local file is missing, stores nothing.
pub async fn failed_save_leaves_nothing(f: &Fixture) {
    let s = &*f.storage;
    let failing = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(bytes(300_000, 2)), FailingReader);
    let error = s.save("fail/partial.bin", Content::from_reader(failing)).await.expect_err("must fail");
    assert!(matches!(error, Error::Content { .. }), "{error:?}");
    assert!(error.to_string().contains("fail/partial.bin"), "{error}");
    assert!(!s.exists("fail/partial.bin").await.expect("exists"));
    let missing = s.save("fail/missing.bin", Content::from_path("/nonexistent/input.bin")).await.expect_err("missing");
    assert!(missing.to_string().contains("/nonexistent/input.bin"), "{missing}");
    assert!(!s.exists("fail/missing.bin").await.expect("exists"));
    if let Some(root) = &f.root {
        assert_eq!(count_files(root), 0, "a temporary file was left behind");
    }
}

/// A reader that always fails, as a client that went away.
pub struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("the client went away")))
    }
}

/// The files under `dir`, recursively.
pub fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

/// Deleting a missing name is `Ok`, twice.
pub async fn delete_is_idempotent(f: &Fixture) {
    let s = &*f.storage;
    s.delete("never/existed.txt").await.expect("delete missing");
    s.save("gone.txt", "x".into()).await.expect("save");
    s.delete("gone.txt").await.expect("delete");
    s.delete("gone.txt").await.expect("delete again");
    assert!(!s.exists("gone.txt").await.expect("exists"));
    assert!(s.open("gone.txt").await.expect_err("open deleted").is_not_found());
    assert!(s.size("gone.txt").await.expect_err("size deleted").is_not_found());
}

/// `..`, absolute, NUL, backslash, empty and over-long names are refused by every operation and create nothing.
pub async fn suspicious_names_are_refused(f: &Fixture) {
    let s = &*f.storage;
    let long = "a".repeat(1025);
    let cases = [
        ("../escape.txt", NameRule::ParentSegment),
        ("a/../../escape.txt", NameRule::ParentSegment),
        ("/etc/passwd", NameRule::Absolute),
        ("nul\0byte", NameRule::Nul),
        ("back\\slash", NameRule::Backslash),
        (long.as_str(), NameRule::TooLong),
        ("", NameRule::Empty),
    ];
    for (name, expected) in cases {
        let error = s.save(name, "x".into()).await.expect_err(name);
        let Error::SuspiciousName { name: quoted, rule, .. } = &error else {
            unreachable!("{name:?}: expected SuspiciousName, got {error:?}");
        };
        assert_eq!((quoted.as_str(), *rule), (name, expected));
        assert!(error.to_string().contains(&format!("{name:?}")), "{error}");
        assert!(s.open(name).await.is_err());
        assert!(s.exists(name).await.is_err());
        assert!(s.delete(name).await.is_err());
        assert!(s.open_write(name).await.is_err());
    }
    assert_eq!(s.listdir("").await.expect("listdir"), (vec![], vec![]));
    if let Some(root) = &f.root {
        assert_eq!(count_files(root), 0);
        assert!(!root.join("escape.txt").exists());
    }
}

/// `listdir` gives the sorted directories and files directly inside a path.
pub async fn listdir_shows_dirs_and_files(f: &Fixture) {
    let s = &*f.storage;
    for name in ["a.txt", "b/c.txt", "b/d-x/y", "b/d/e.txt", "b/f.txt", "g h/ü.txt", "b/d/g/h"] {
        s.save(name, "x".into()).await.expect("save");
    }
    assert_eq!(s.listdir("").await.expect("root"), (vec!["b".into(), "g h".into()], vec!["a.txt".into()]));
    assert_eq!(
        s.listdir("b").await.expect("b"),
        (vec!["d".into(), "d-x".into()], vec!["c.txt".into(), "f.txt".into()])
    );
    assert_eq!(s.listdir("b/d").await.expect("b/d"), (vec!["g".into()], vec!["e.txt".into()]));
    assert_eq!(s.listdir("b/").await.expect("b/"), s.listdir("b").await.expect("b"));
    assert_eq!(s.listdir("missing").await.expect("missing"), (vec![], vec![]));
    if s.capabilities().directories {
        // A directory takes its name: a save of "b" picks an alternative, a file blocks a directory.
        assert_eq!(s.save("b", "x".into()).await.expect("save b"), "b_");
        assert!(s.save("a.txt/inner", "x".into()).await.is_err());
    }
}

/// A taken name gets `_`, `__`, ... alternatives and the first file is kept.
pub async fn overwrite_and_alternatives(f: &Fixture) {
    let s = &*f.storage;
    assert_eq!(s.save("tests/django_test.txt", "content".into()).await.expect("1"), "tests/django_test.txt");
    assert_eq!(s.save("tests/django_test.txt", "more".into()).await.expect("2"), "tests/django_test_.txt");
    assert_eq!(s.save("tests/django_test.txt", "again".into()).await.expect("3"), "tests/django_test__.txt");
    assert_eq!(read(s, "tests/django_test.txt").await, b"content");
    assert_eq!(s.get_available_name("tests/django_test.txt").await.expect("available"), "tests/django_test___.txt");
}

/// `url()` percent-encodes names; `modified_time` is recent and a missing file is not found.
pub async fn urls_and_times(f: &Fixture) {
    let s = &*f.storage;
    let url = s.url("whacky & filename.mp4").await.expect("url");
    assert!(url.contains("/whacky%20%26%20filename.mp4"), "{url}");
    let url = s.url("dir/ü.txt").await.expect("url");
    assert!(url.contains("/dir/%C3%BC.txt"), "{url}");
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    s.save("t.txt", "x".into()).await.expect("save");
    assert!(s.modified_time("t.txt").await.expect("mtime") >= before);
    assert!(s.modified_time("missing").await.expect_err("missing").is_not_found());
}

/// For a storage configured with `alternative_names = "random"`: 16 concurrent saves of one name keep the name
/// once and get Django's 7-character random suffixes otherwise.
pub async fn random_alternative_names(storage: Arc<dyn Storage>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move { (storage.save("r/photo.jpg", format!("{i}").into()).await.expect("save"), i) })
        })
        .collect();
    let mut names = HashSet::new();
    for task in tasks {
        let (name, i) = task.await.expect("task");
        assert_eq!(read(&*storage, &name).await, format!("{i}").into_bytes());
        if name != "r/photo.jpg" {
            let suffix = name.strip_prefix("r/photo_").and_then(|n| n.strip_suffix(".jpg")).expect("shape");
            assert_eq!(suffix.len(), 7, "{name}");
            assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
        assert!(names.insert(name));
    }
    assert!(names.contains("r/photo.jpg"));
}

/// Defines one `#[tokio::test]` per scenario, each on a fresh fixture built by the given expression.
#[macro_export]
macro_rules! conformance {
    ($fixture:expr) => {
        $crate::conformance!(@tests $fixture;
            round_trip, chunks_are_exact, ranges, concurrent_saves_keep_everything, dropped_writer_leaves_nothing,
            failed_save_leaves_nothing, delete_is_idempotent, suspicious_names_are_refused,
            listdir_shows_dirs_and_files, overwrite_and_alternatives, urls_and_times);
    };
    (@tests $fixture:expr; $($scenario:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                let fixture = $fixture;
                $crate::$scenario(&fixture).await;
            }
        )*
    };
}
