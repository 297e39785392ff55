//! What the cache promises, checked against the operations its inner storage saw: warm metadata costs nothing,
//! cold blocks are read once whatever the number of readers, a range reads only its blocks, writes through the
//! layer are seen at once, writes around it never mix versions, and memory stays within its capacity.

use figment::providers::{Format, Toml};
use std::sync::Arc;
use storage_cache as _;
use storage_core::{Error, Settings, SettingsError, Storage, Storages};

/// A cache (`cached`) over a memory storage (`files`), with these extra cache settings.
fn storages(extra: &str) -> Storages {
    Storages::new(Settings::empty().merge(Toml::string(&format!(
        "[storages.files]\nbackend = \"storages.backends.memory.InMemoryStorage\"\n\
         [storages.cached]\nbackend = \"storages.backends.cache.CachedStorage\"\ninner = \"files\"\n{extra}"
    ))))
}

/// How many times the inner storage was asked to do `operation`.
fn inner_calls(storages: &Storages, operation: &str) -> u64 {
    let metrics = storages.get("files").expect("files").metrics();
    metrics.operations.get(operation).copied().unwrap_or(0)
}

fn count(storage: &dyn Storage, what: &str) -> u64 {
    storage.request_counts().into_iter().find(|(kind, _)| kind == what).map_or(0, |(_, n)| n)
}

#[tokio::test]
async fn warm_metadata_asks_the_inner_storage_nothing() {
    let storages = storages("metadata_ttl = \"1h\"\n");
    let cached = storages.get("cached").expect("cached");
    cached.save("docs/a.txt", "hello".into()).await.expect("save");
    for _ in 0..2 {
        assert!(cached.exists("docs/a.txt").await.expect("exists"));
        assert!(!cached.exists("docs/none.txt").await.expect("exists"));
        assert_eq!(cached.size("docs/a.txt").await.expect("size"), 5);
        assert!(matches!(cached.stat("docs/none.txt").await, Err(Error::NotFound { .. })));
        assert_eq!(cached.listdir("docs").await.expect("listdir").1, ["a.txt"]);
    }
    let before: u64 = ["exists", "stat", "listdir"].iter().map(|op| inner_calls(&storages, op)).sum();
    for _ in 0..100 {
        assert!(cached.exists("docs/a.txt").await.expect("exists"));
        assert!(!cached.exists("docs/none.txt").await.expect("exists"));
        assert_eq!(cached.size("docs/a.txt").await.expect("size"), 5);
        cached.modified_time("docs/a.txt").await.expect("modified");
        assert_eq!(cached.listdir("docs").await.expect("listdir").1, ["a.txt"]);
    }
    let after: u64 =
        ["exists", "stat", "listdir", "size", "modified_time"].iter().map(|op| inner_calls(&storages, op)).sum();
    assert_eq!(after, before, "warm metadata calls reached the inner storage");
}

#[tokio::test]
async fn writes_through_the_layer_are_seen_at_once() {
    let storages = storages("metadata_ttl = \"1h\"\n");
    let cached = storages.get("cached").expect("cached");
    assert!(!cached.exists("d/a.txt").await.expect("exists"));
    assert_eq!(cached.listdir("d").await.expect("listdir"), (vec![], vec![]));
    assert_eq!(cached.listdir("").await.expect("listdir"), (vec![], vec![]));
    cached.save("d/a.txt", "one".into()).await.expect("save");
    assert!(cached.exists("d/a.txt").await.expect("exists"));
    assert_eq!(cached.listdir("d").await.expect("listdir").1, ["a.txt"]);
    assert_eq!(cached.listdir("").await.expect("listdir").0, ["d"]);
    assert_eq!(cached.open("d/a.txt").await.expect("open").read_all().await.expect("read"), "one");
    cached.replace("d/a.txt", "second".into()).await.expect("replace");
    assert_eq!(cached.size("d/a.txt").await.expect("size"), 6);
    assert_eq!(cached.open("d/a.txt").await.expect("open").read_all().await.expect("read"), "second");
    let mut writer = cached.open_write("d/a.txt").await.expect("open_write");
    tokio::io::AsyncWriteExt::write_all(&mut writer, b"third!!").await.expect("write");
    let stored = writer.commit().await.expect("commit");
    assert_eq!(stored, "d/a_.txt");
    assert_eq!(cached.listdir("d").await.expect("listdir").1, ["a.txt", "a_.txt"]);
    cached.delete("d/a.txt").await.expect("delete");
    assert!(!cached.exists("d/a.txt").await.expect("exists"));
    let failed = cached.delete_many(&["d/a_.txt".to_owned()]).await;
    assert!(failed.is_empty());
    assert_eq!(cached.listdir("").await.expect("listdir"), (vec![], vec![]));
}

#[tokio::test]
async fn a_file_changed_around_the_cache_is_never_read_as_a_mix() {
    let storages = storages("metadata_ttl = \"1h\"\nblock_size = 4\n");
    let (cached, files) = (storages.get("cached").expect("cached"), storages.get("files").expect("files"));
    files.save("a.txt", "aaaabbbbcccc".into()).await.expect("save");
    let file = cached.open("a.txt").await.expect("open");
    assert_eq!(file.range(0..4).await.expect("first block"), "aaaa");
    // Another writer replaces the file behind the cache's back.
    files.replace("a.txt", "xxxxyyyyzzzz".into()).await.expect("replace");
    let reopened = cached.open("a.txt").await.expect("open");
    match reopened.read_all().await {
        Ok(content) => assert_eq!(content, "aaaabbbbcccc", "read as a mix of versions"),
        Err(error) => assert!(error.to_string().contains("changed since it was opened"), "{error}"),
    }
    // Once it noticed, the cache reads the new version whole.
    assert_eq!(cached.open("a.txt").await.expect("open").read_all().await.expect("read"), "xxxxyyyyzzzz");
}

#[tokio::test]
async fn a_bypass_write_is_seen_when_metadata_is_not_kept() {
    let storages = storages("metadata_ttl = 0\n");
    let (cached, files) = (storages.get("cached").expect("cached"), storages.get("files").expect("files"));
    assert!(!cached.exists("b.txt").await.expect("exists"));
    files.save("b.txt", "new".into()).await.expect("save");
    assert!(cached.exists("b.txt").await.expect("exists"));
    assert_eq!(cached.open("b.txt").await.expect("open").read_all().await.expect("read"), "new");
}

/// Changes by another writer are seen once `metadata_ttl` has passed, and never as a mix of versions before.
/// Time is tokio's paused clock, moved on by hand: the test waits for nothing and cannot depend on load.
#[tokio::test(start_paused = true)]
async fn a_bypass_write_is_seen_within_the_ttl_and_never_mixed() {
    let storages = storages("metadata_ttl = \"60s\"\nblock_size = 4\n");
    let (cached, files) = (storages.get("cached").expect("cached"), storages.get("files").expect("files"));
    files.save("d/a.txt", "aaaabbbbcccc".into()).await.expect("save");
    assert_eq!(cached.open("d/a.txt").await.expect("open").read_all().await.expect("read"), "aaaabbbbcccc");
    assert!(!cached.exists("d/b.txt").await.expect("exists"));
    assert_eq!(cached.listdir("d").await.expect("listdir").1, ["a.txt"]);
    let asked = |op: &str| inner_calls(&storages, op);
    let before = (asked("open"), asked("exists"), asked("listdir"));

    // Another writer replaces one file and adds one, behind the cache's back.
    files.replace("d/a.txt", "xxxxyyyyzzzzwwww".into()).await.expect("replace");
    files.save("d/b.txt", "new".into()).await.expect("save");
    tokio::time::advance(std::time::Duration::from_secs(59)).await;
    // Within the TTL the cache answers from what it holds: the old version whole, never a mix.
    assert_eq!(cached.open("d/a.txt").await.expect("open").read_all().await.expect("read"), "aaaabbbbcccc");
    assert!(!cached.exists("d/b.txt").await.expect("exists"));
    assert_eq!(cached.listdir("d").await.expect("listdir").1, ["a.txt"]);
    assert_eq!((asked("open"), asked("exists"), asked("listdir")), before, "answers within the TTL were fetched");

    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    assert_eq!(cached.open("d/a.txt").await.expect("open").read_all().await.expect("read"), "xxxxyyyyzzzzwwww");
    assert_eq!(cached.size("d/a.txt").await.expect("size"), 16);
    assert!(cached.exists("d/b.txt").await.expect("exists"));
    assert_eq!(cached.listdir("d").await.expect("listdir").1, ["a.txt", "b.txt"]);
    assert_eq!(cached.open("d/b.txt").await.expect("open").read_all().await.expect("read"), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cold_readers_cause_one_read_per_block() {
    let storages = storages("block_size = \"1 MiB\"\nmemory_capacity = \"64 MiB\"\n");
    let cached = storages.get("cached").expect("cached");
    let content: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    storages.get("files").expect("files").save("big.bin", content.clone().into()).await.expect("save");
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { cached.open("big.bin").await.expect("open").read_all().await.expect("read") })
        })
        .collect();
    for reader in readers {
        assert!(reader.await.expect("reader") == content.as_slice());
    }
    assert_eq!(count(&*cached, "cache inner block reads"), 8, "{:?}", cached.request_counts());
}

#[tokio::test]
async fn a_range_reads_only_its_block() {
    let storages = storages("block_size = \"64 KiB\"\n");
    let cached = storages.get("cached").expect("cached");
    let content: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    storages.get("files").expect("files").save("big.bin", content.clone().into()).await.expect("save");
    let file = cached.open("big.bin").await.expect("open");
    let range = 3_000_000..3_004_096u64;
    assert!(file.range(range.clone()).await.expect("range") == content[3_000_000..3_004_096]);
    assert_eq!(count(&*cached, "cache inner block reads"), 1);
    assert!(file.range(range).await.is_ok());
    assert_eq!(count(&*cached, "cache block hits"), 1, "the second read came from memory");
}

#[tokio::test]
async fn memory_stays_within_its_capacity() {
    let storages = storages("block_size = \"64 KiB\"\nmemory_capacity = \"1 MiB\"\n");
    let cached = storages.get("cached").expect("cached");
    let files = storages.get("files").expect("files");
    for i in 0..10 {
        let content = vec![i as u8; 1 << 20];
        files.save(&format!("f{i}.bin"), content.clone().into()).await.expect("save");
        assert!(cached.open(&format!("f{i}.bin")).await.expect("open").read_all().await.expect("read") == content);
    }
    let held = count(&*cached, "cache bytes in memory");
    assert!(held <= 1 << 20, "{held} bytes held for a capacity of 1 MiB");
    assert!(held > 0, "nothing kept at all");
}

#[test]
fn layers_that_wrap_each_other_or_nothing_are_named() {
    let cycle = Storages::new(Settings::empty().merge(Toml::string(
        "[storages.a]\nbackend = \"storages.backends.cache.CachedStorage\"\ninner = \"b\"\n\
         [storages.b]\nbackend = \"storages.backends.cache.CachedStorage\"\ninner = \"a\"\n",
    )));
    let error = cycle.get("a").expect_err("a cycle");
    assert!(matches!(&error, Error::Settings(e) if matches!(**e, SettingsError::Cycle { .. })), "{error}");
    let message = error.to_string();
    assert!(message.contains("a (its inner from") && message.contains("-> b (its inner from"), "{message}");
    assert!(message.ends_with("-> a; a layer's inner storage must lead to a backend"), "{message}");

    let missing = storages("").get("cached").map(drop);
    assert!(missing.is_ok());
    let missing = Storages::new(Settings::empty().merge(Toml::string(
        "[storages.cached]\nbackend = \"storages.backends.cache.CachedStorage\"\ninner = \"nowhere\"\n",
    )));
    let message = missing.get("cached").expect_err("a missing inner").to_string();
    assert!(message.contains("`inner`") && message.contains("names storage 'nowhere'"), "{message}");

    let bad = storages("memory_capacity = \"lots\"\n").get("cached").expect_err("bad size").to_string();
    assert!(bad.contains("memory_capacity") && bad.contains("not a size like"), "{bad}");
    for (ttl, says) in [("1e30", "at most 100 years"), ("\"2000 years\"", "longer than 100 years"), ("-1", "at most")] {
        let bad = storages(&format!("metadata_ttl = {ttl}\n")).get("cached").expect_err("bad ttl").to_string();
        assert!(bad.contains("metadata_ttl") && bad.contains(says), "{ttl}: {bad}");
    }
    assert!(storages("metadata_ttl = \"90 years\"\n").get("cached").is_ok());
    let shared = storages("");
    let inner = shared.get("files").expect("files");
    let _cached = shared.get("cached").expect("cached");
    assert!(Arc::ptr_eq(&inner, &shared.get("files").expect("files")), "the inner storage is shared");
}

mod model {
    //! Random interleavings of operations through the cache give exactly what the same operations give on a
    //! storage without it.

    use super::storages;
    use proptest::prelude::*;
    use storage_core::{InMemoryStorage, Storage};

    #[derive(Debug, Clone)]
    enum Op {
        Save(usize, Vec<u8>),
        Replace(usize, Vec<u8>),
        Delete(usize),
        Read(usize),
        Range(usize, u64, u64),
        Exists(usize),
        Size(usize),
        Listdir(usize),
    }

    const NAMES: [&str; 6] = ["a.txt", "d/b.txt", "d/c.txt", "d/e/f.txt", "g", "d/e/h"];
    const DIRS: [&str; 3] = ["", "d", "d/e"];

    fn op() -> impl Strategy<Value = Op> {
        let name = 0..NAMES.len();
        let content = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (name.clone(), content.clone()).prop_map(|(n, c)| Op::Save(n, c)),
            (name.clone(), content).prop_map(|(n, c)| Op::Replace(n, c)),
            name.clone().prop_map(Op::Delete),
            name.clone().prop_map(Op::Read),
            (name.clone(), 0..48u64, 0..48u64).prop_map(|(n, a, b)| Op::Range(n, a.min(b), a.max(b))),
            name.clone().prop_map(Op::Exists),
            name.prop_map(Op::Size),
            (0..DIRS.len()).prop_map(Op::Listdir),
        ]
    }

    /// What an operation answered, comparable across storages.
    async fn apply(storage: &dyn Storage, op: &Op) -> String {
        let shown = |result: storage_core::Result<String>| match result {
            Ok(value) => format!("ok {value}"),
            Err(error) => format!("err {:?}", error.kind()),
        };
        match op {
            Op::Save(n, c) => shown(storage.save(NAMES[*n], c.clone().into()).await),
            Op::Replace(n, c) => shown(storage.replace(NAMES[*n], c.clone().into()).await.map(|()| String::new())),
            Op::Delete(n) => shown(storage.delete(NAMES[*n]).await.map(|()| String::new())),
            Op::Read(n) => match storage.open(NAMES[*n]).await {
                Ok(file) => shown(file.read_all().await.map(|b| format!("{b:?}"))),
                Err(error) => shown(Err(error)),
            },
            Op::Range(n, a, b) => match storage.open(NAMES[*n]).await {
                Ok(file) => shown(file.range(*a..*b).await.map(|b| format!("{b:?}"))),
                Err(error) => shown(Err(error)),
            },
            Op::Exists(n) => shown(storage.exists(NAMES[*n]).await.map(|e| e.to_string())),
            Op::Size(n) => shown(storage.size(NAMES[*n]).await.map(|s| s.to_string())),
            Op::Listdir(d) => shown(storage.listdir(DIRS[*d]).await.map(|l| format!("{l:?}"))),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn the_cache_answers_as_its_inner_storage_alone(ops in proptest::collection::vec(op(), 1..40)) {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let cached = storages("metadata_ttl = \"1h\"\nblock_size = 8\nmemory_capacity = 64\n").get("cached").expect("cached");
                let alone = InMemoryStorage::new();
                for (step, op) in ops.iter().enumerate() {
                    let (through, without) = (apply(&*cached, op).await, apply(&alone, op).await);
                    prop_assert_eq!(through, without, "step {}: {:?}", step, op);
                }
                Ok(())
            })?;
        }
    }
}

mod disk {
    //! The disk tier: used by the next process, and never trusted when a file is damaged.

    use super::count;
    use std::sync::Arc;
    use storage_cache::{CacheOptions, CachedStorage};
    use storage_core::{InMemoryStorage, Storage};

    fn cache(inner: &Arc<InMemoryStorage>, dir: &std::path::Path) -> CachedStorage {
        let options = CacheOptions {
            block_size: 64 << 10,
            memory_capacity: 1 << 20,
            disk_path: Some(dir.to_path_buf()),
            disk_capacity: 4 << 20,
            ..CacheOptions::default()
        };
        CachedStorage::new("cached", inner.clone(), options)
    }

    #[tokio::test]
    async fn a_restarted_cache_reads_warm_blocks_from_disk_and_refetches_damaged_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(InMemoryStorage::new());
        let content: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 249) as u8).collect();
        inner.save("big.bin", content.clone().into()).await.expect("save");
        let first = cache(&inner, dir.path());
        assert!(first.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
        assert_eq!(count(&first, "cache inner block reads"), 16);
        drop(first);

        // The next process: no block from the inner storage.
        let second = cache(&inner, dir.path());
        assert!(second.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
        assert_eq!(count(&second, "cache inner block reads"), 0, "{:?}", second.request_counts());
        assert_eq!(count(&second, "cache bytes from disk"), 1 << 20);
        drop(second);

        // A flipped bit in one block file: that block alone is read again, and the content stays right.
        let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.path()).collect();
        assert_eq!(files.len(), 16, "{files:?}");
        let mut bytes = std::fs::read(&files[3]).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&files[3], &bytes).expect("corrupt");
        let third = cache(&inner, dir.path());
        assert!(third.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
        assert_eq!(count(&third, "cache inner block reads"), 1);
    }

    #[tokio::test]
    async fn the_disk_tier_stays_within_its_capacity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(InMemoryStorage::new());
        let cached = cache(&inner, dir.path());
        for i in 0..10u8 {
            inner.save(&format!("f{i}.bin"), vec![i; 4 << 20].into()).await.expect("save");
            cached.open(&format!("f{i}.bin")).await.expect("open").read_all().await.expect("read");
        }
        let on_disk: u64 =
            std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.metadata().expect("meta").len()).sum();
        assert!(on_disk <= 4 << 20, "{on_disk} bytes on disk for a capacity of 4 MiB");
        assert!(on_disk > 0);
        cached.clear().await;
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "clear empties the disk tier");
    }

    /// What the cache logged while `f` ran.
    async fn logged<F: std::future::Future<Output = ()>>(f: F) -> String {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f.await;
        drop(guard);
        String::from_utf8_lossy(&lines.0.lock().expect("log")).into_owned()
    }

    /// An unreadable block file, a block that cannot be written, and a disk tier that cannot be opened: each is
    /// logged, and the content comes whole from the inner storage.
    #[tokio::test]
    async fn a_failing_disk_degrades_to_the_inner_storage_with_a_log_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(InMemoryStorage::new());
        let content: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8).collect();
        inner.save("big.bin", content.clone().into()).await.expect("save");
        let first = cache(&inner, dir.path());
        assert!(first.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
        drop(first);

        // Every block file becomes a directory: it can be neither read nor replaced.
        for file in std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.path()) {
            std::fs::remove_file(&file).expect("remove");
            std::fs::create_dir(&file).expect("a directory in its place");
        }
        let log = logged(async {
            let second = cache(&inner, dir.path());
            assert!(second.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
            assert_eq!(count(&second, "cache inner block reads"), 16);
            assert_eq!(count(&second, "cache bytes from disk"), 0);
        })
        .await;
        assert!(log.contains("cannot read block file"), "{log}");
        assert!(log.contains("cannot write a block file"), "{log}");

        // The disk tier's directory is a file: no disk tier, the cache works from memory and the inner storage.
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").expect("write");
        let log = logged(async {
            let third = cache(&inner, &file);
            assert!(third.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
            assert!(third.open("big.bin").await.expect("open").read_all().await.expect("read") == content);
            assert_eq!(count(&third, "cache inner block reads"), 16, "the second read came from memory");
        })
        .await;
        assert!(log.contains("no disk tier"), "{log}");
    }
}
