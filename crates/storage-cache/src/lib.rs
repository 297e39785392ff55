//! `CachedStorage`: a metadata and content cache over any storage, declared in settings as a layer.
//!
//! ```toml
//! [storages.media]
//! backend = "storages.backends.cache.CachedStorage"
//! inner = "media_s3"          # any configured alias
//! memory_capacity = "64 MiB"
//! block_size = "1 MiB"
//! metadata_ttl = "60s"
//! ```
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use figment::providers::{Format, Toml};
//! use storage_core::{Settings, Storages};
//! use storage_cache as _; // links the cache into the registry
//!
//! let storages = Storages::new(Settings::empty().merge(Toml::string(r#"
//!     [storages.files]
//!     backend = "storages.backends.memory.InMemoryStorage"
//!     [storages.cached]
//!     backend = "storages.backends.cache.CachedStorage"
//!     inner = "files"
//!     memory_capacity = "8 MiB"
//! "#)));
//! let cached = storages.get("cached")?;
//! cached.save("a.txt", "content".into()).await?;
//! assert_eq!(cached.open("a.txt").await?.read_all().await?, "content");
//! assert_eq!(cached.open("a.txt").await?.read_all().await?, "content"); // from the cache
//! assert!(storages.get("files")?.exists("a.txt").await?, "the inner storage is the shared one");
//! # Ok::<_, storage_core::Error>(()) }).unwrap();
//! ```
//!
//! - **Metadata** (`exists`, `size`, `stat`, `modified_time`, `listdir`), negative answers included, is kept for
//!   `metadata_ttl`: warm calls make no request to the inner storage.
//! - **Content** is kept in blocks of `block_size`, keyed by the name and the version of the file the inner
//!   storage opened (an ETag, an inode and its time): a range read fetches only the blocks it needs, and a file
//!   changed by another writer is never served as old blocks mixed with new ones. Concurrent readers of a cold
//!   block cause one inner read. The blocks' bytes never exceed `memory_capacity`; eviction is foyer's
//!   S3-FIFO (the README says how it compared with moka's TinyLFU).
//! - **Writes through the layer** (`save`, `replace`, a writer's commit, `delete`, `delete_many`) drop what
//!   they touch, the listings of every directory above included, before they return. Changes by other writers
//!   are seen within `metadata_ttl`.
//! - An error of the inner storage is never cached.
//! - **A disk tier** (`disk_path`, `disk_capacity`) keeps blocks in checked files across restarts (see
//!   `disk.rs`): a damaged file is never served.

use async_trait::async_trait;
use bytes::Bytes;
use foyer_common::event::{Event, EventListener};
use futures::stream::{BoxStream, StreamExt};
use moka::future::Cache;
use serde::{Deserialize, Deserializer};
use std::future::Future;
use std::hash::Hash;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use storage_core::{
    AlternativeNames, Backend, Capabilities, Cleaned, Cleanup, Content, Error, ErrorKind, FileMeta, FileSource,
    FileWriter, Local, Metrics, Result, SaveOptions, Storage, StorageSettings, StoredFile,
};
use tokio::time::Instant;

mod disk;

/// Options of `[storages.<alias>]` for `storages.backends.cache.CachedStorage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheOptions {
    /// The alias of the storage cached (required in settings).
    pub inner: String,
    /// The most bytes of content kept in memory (`"64 MiB"`, or a number of bytes; default 64 MiB).
    #[serde(deserialize_with = "byte_size")]
    pub memory_capacity: u64,
    /// The size of the blocks content is kept in (default 1 MiB).
    #[serde(deserialize_with = "byte_size")]
    pub block_size: u64,
    /// How long metadata is trusted (`"60s"`, `"5m"`, or a number of seconds; default 60 s).
    #[serde(deserialize_with = "duration")]
    pub metadata_ttl: Duration,
    /// A directory for the disk tier, kept across restarts (relative to the settings file); none by default.
    pub disk_path: Option<std::path::PathBuf>,
    /// The most bytes the disk tier's files take (default 1 GiB).
    #[serde(deserialize_with = "byte_size")]
    pub disk_capacity: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            inner: String::new(),
            memory_capacity: 64 << 20,
            block_size: 1 << 20,
            metadata_ttl: Duration::from_secs(60),
            disk_path: None,
            disk_capacity: 1 << 30,
        }
    }
}

/// A size: a number of bytes, or text such as `"64 MiB"` or `"1.5 GB"`.
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer) {
        Ok(Size::Bytes(bytes)) => Ok(bytes),
        Ok(Size::Text(text)) => text.trim().parse::<bytesize::ByteSize>().map(|size| size.as_u64()).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a size like \"64 MiB\" or a number of bytes: {e}"))
        }),
        Err(_) => Err(serde::de::Error::custom("expected a size like \"64 MiB\", or a number of bytes")),
    }
}

/// The longest `metadata_ttl` (moka refuses more than 1000 years).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration: a number of seconds, or text such as `"60s"` or `"5m"`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Span {
        Seconds(f64),
        Text(String),
    }
    match Span::deserialize(deserializer) {
        Ok(Span::Seconds(seconds)) => match Duration::try_from_secs_f64(seconds) {
            Ok(span) if span <= MAX_TTL => Ok(span),
            _ => Err(serde::de::Error::custom(format!("{seconds} is no duration of at most 100 years"))),
        },
        Ok(Span::Text(text)) => match humantime::parse_duration(text.trim()) {
            Ok(span) if span <= MAX_TTL => Ok(span),
            Ok(_) => Err(serde::de::Error::custom(format!("{text:?} is longer than 100 years"))),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"60s\" or a number of seconds: {e}"
            ))),
        },
        Err(_) => Err(serde::de::Error::custom("expected a duration like \"60s\", or a number of seconds")),
    }
}

storage_core::inventory::submit! {
    Backend { path: "storages.backends.cache.CachedStorage", aliases: &[], env: &[], build: CachedStorage::build }
}

/// How many blocks a read fetches at once.
const BLOCKS_AHEAD: usize = 4;

/// A cache of at most `capacity` bytes (each value weighing `weight`), evicting by S3-FIFO, which hit more often
/// than moka's TinyLFU on Zipf traces of blocks when the cache holds few of them (README); `on_leave` hears of
/// every value that leaves it. It is sharded only where each shard holds at least 64 values of `typical` bytes,
/// and a value heavier than a shard is not kept, so the capacity is never exceeded.
pub(crate) fn byte_cache<K: Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static>(
    capacity: u64,
    typical: u64,
    weight: fn(&V) -> usize,
    on_leave: impl Fn(Event, &K, &V) + Send + Sync + 'static,
) -> foyer_memory::Cache<K, V> {
    struct Listener<K, V, F>(F, std::marker::PhantomData<fn(&K, &V)>);
    impl<K: Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static, F: Fn(Event, &K, &V) + Send + Sync + 'static>
        EventListener for Listener<K, V, F>
    {
        type Key = K;
        type Value = V;
        fn on_leave(&self, event: Event, key: &K, value: &V) {
            (self.0)(event, key, value)
        }
    }
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    let shards = (capacity / usize::try_from(typical.max(1)).unwrap_or(usize::MAX) / 64).clamp(1, 16);
    let per_shard = capacity / shards;
    foyer_memory::CacheBuilder::new(capacity)
        .with_shards(shards)
        .with_eviction_config(foyer_memory::S3FifoConfig::default())
        .with_weighter(move |_: &K, value: &V| weight(value))
        .with_filter(move |_: &K, value: &V| weight(value) <= per_shard)
        .with_event_listener(Arc::new(Listener(on_leave, std::marker::PhantomData)))
        .build()
}

/// How many names the metadata caches hold at most.
const METADATA_ENTRIES: u64 = 100_000;

/// A file's content version and size, as the inner storage last opened it.
#[derive(Debug, Clone)]
struct Opened {
    size: u64,
    version: String,
}

/// Answers about names, each trusted for `ttl` from the moment its fetch started (so a change made while the
/// fetch ran is seen within `ttl` too). Ages are measured on tokio's clock, which tests move on with
/// `tokio::time::advance` instead of waiting; moka's own expiry only frees the memory of old answers.
#[derive(Clone)]
struct Answers<V> {
    entries: Cache<String, (V, Instant)>,
    ttl: Duration,
}

impl<V: Clone + Send + Sync + 'static> Answers<V> {
    fn new(ttl: Duration) -> Self {
        Answers { entries: Cache::builder().max_capacity(METADATA_ENTRIES).time_to_live(ttl).build(), ttl }
    }

    /// The answer for `key`, if one is fresh.
    async fn get(&self, key: &str) -> Option<V> {
        let (value, fetched) = self.entries.get(key).await?;
        (fetched.elapsed() < self.ttl).then_some(value)
    }

    /// Keeps `value`, an answer whose fetch started at `fetched`.
    async fn insert(&self, key: &str, value: V, fetched: Instant) {
        self.entries.insert(key.to_owned(), (value, fetched)).await;
    }

    /// The fresh answer for `key` (`true`: it was kept), or the one `fetch` gives (one fetch for concurrent
    /// callers); an error is not kept.
    async fn get_or_fetch(&self, key: &str, fetch: impl Future<Output = Result<V>>) -> Result<(V, bool)> {
        if let Some(value) = self.get(key).await {
            return Ok((value, true));
        }
        self.entries.invalidate(key).await;
        let fetched = AtomicBool::new(false);
        let (value, _) = self
            .entries
            .try_get_with(key.to_owned(), async {
                fetched.store(true, Ordering::Relaxed);
                let started = Instant::now();
                fetch.await.map(|value| (value, started))
            })
            .await
            .map_err(|error| error.replay())?;
        Ok((value, !fetched.load(Ordering::Relaxed)))
    }

    async fn invalidate(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }
}

/// What the layer counts.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    block_hits: AtomicU64,
    block_misses: AtomicU64,
    bytes_from_memory: AtomicU64,
    bytes_from_disk: AtomicU64,
    inner_reads: AtomicU64,
    evictions: Arc<AtomicU64>,
}

/// A storage that caches the metadata and content of another one (see the crate's documentation).
#[derive(Clone)]
pub struct CachedStorage {
    alias: String,
    inner: Arc<dyn Storage>,
    options: CacheOptions,
    stats: Answers<Option<FileMeta>>,
    exists: Answers<bool>,
    listings: Answers<(Vec<String>, Vec<String>)>,
    opened: Answers<Opened>,
    blocks: foyer_memory::Cache<(String, String, u64), Bytes>,
    disk: Option<disk::DiskTier>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for CachedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStorage").field("alias", &self.alias).field("inner", &self.inner).finish()
    }
}

impl CachedStorage {
    /// A cache under `alias` over `inner`, with `options` (`options.inner` is not used: `inner` is given). A disk
    /// tier that cannot be opened is logged and left out.
    /// A `block_size` of 0 counts as 1 byte and a `metadata_ttl` over 100 years as 100 years (settings refuse
    /// both).
    pub fn new(alias: &str, inner: Arc<dyn Storage>, mut options: CacheOptions) -> Self {
        options.block_size = options.block_size.clamp(1, u64::from(u32::MAX));
        options.metadata_ttl = options.metadata_ttl.min(MAX_TTL);
        let ttl = options.metadata_ttl;
        let counters = Arc::new(Counters::default());
        let evictions = counters.evictions.clone();
        let disk = options.disk_path.as_ref().and_then(|dir| {
            match disk::DiskTier::open(dir, options.disk_capacity, options.block_size) {
                Ok(tier) => Some(tier),
                Err(error) => {
                    tracing::warn!(target: "storages", "cache '{alias}': no disk tier in {}: {error}", dir.display());
                    None
                }
            }
        });
        CachedStorage {
            disk,
            alias: alias.into(),
            inner,
            stats: Answers::new(ttl),
            exists: Answers::new(ttl),
            listings: Answers::new(ttl),
            opened: Answers::new(ttl),
            blocks: byte_cache(options.memory_capacity, options.block_size, Bytes::len, move |event, _, _| {
                if event == Event::Evict {
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
            }),
            options,
            counters,
        }
    }

    fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
        let mut options: CacheOptions = settings.options()?;
        options.disk_path = settings.path("disk_path")?;
        if options.block_size == 0 {
            return Err(settings.invalid("block_size", "must be at least 1 byte"));
        }
        if options.block_size > u64::from(u32::MAX) {
            return Err(settings.invalid("block_size", "must be at most 4 GiB"));
        }
        let inner = settings.storage("inner")?;
        Ok(Arc::new(Self::new(settings.alias(), inner, options)))
    }

    /// Empties the cache: metadata, blocks in memory, and the disk tier's files.
    pub async fn clear(&self) {
        self.stats.invalidate_all();
        self.exists.invalidate_all();
        self.listings.invalidate_all();
        self.opened.invalidate_all();
        self.blocks.clear();
        if let Some(disk) = &self.disk {
            disk.clear();
        }
    }

    /// Drops what the cache knows of `name` and of the directories above it.
    async fn forget(&self, name: &str) {
        self.stats.invalidate(name).await;
        self.exists.invalidate(name).await;
        self.opened.invalidate(name).await;
        self.listings.invalidate(name).await;
        let mut dir = name;
        loop {
            dir = dir.rsplit_once('/').map_or("", |(parent, _)| parent);
            self.listings.invalidate(dir).await;
            self.exists.invalidate(dir).await;
            self.stats.invalidate(dir).await;
            if dir.is_empty() {
                break;
            }
        }
    }

    /// A metadata answer from `answers`, or from `fetch` on a miss (one fetch for concurrent callers).
    async fn cached<V: Clone + Send + Sync + 'static>(
        &self,
        answers: &Answers<V>,
        key: &str,
        fetch: impl Future<Output = Result<V>>,
    ) -> Result<V> {
        let (value, hit) = answers.get_or_fetch(key, fetch).await?;
        let counter = if hit { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    async fn stat_or_none(&self, name: &str) -> Result<Option<FileMeta>> {
        self.cached(&self.stats, name, async {
            match self.inner.stat(name).await {
                Ok(meta) => Ok(Some(meta)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        })
        .await
    }

    fn not_found(&self, name: &str) -> Error {
        Error::NotFound { storage: self.alias.clone(), name: name.into() }
    }
}

/// An opened file read through the block cache.
struct CachedSource {
    cache: CachedStorage,
    name: String,
    opened: Opened,
    /// The inner storage's file, opened when a block is missing (or given by the open that found the version).
    inner_file: tokio::sync::OnceCell<StoredFile>,
}

impl std::fmt::Debug for CachedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSource").field("name", &self.name).field("size", &self.opened.size).finish()
    }
}

impl CachedSource {
    /// The inner file of the version this source reads; another version means the file changed since the
    /// cache last looked: an error, and the cache forgets the name.
    async fn inner_file(&self) -> Result<&StoredFile> {
        let file = self.inner_file.get_or_try_init(|| self.cache.inner.open(&self.name)).await?;
        if file.version().as_deref() != Some(self.opened.version.as_str()) || file.size() != self.opened.size {
            self.cache.forget(&self.name).await;
            let message = "the file changed since it was opened; open it again";
            return Err(Error::backend(&self.cache.alias, "read", &self.name, ErrorKind::Other, message));
        }
        Ok(file)
    }

    /// Block `index`, from the cache or read once from the inner file.
    async fn block(self: Arc<Self>, index: u64) -> Result<Bytes> {
        let size = self.cache.options.block_size;
        let key = (self.name.clone(), self.opened.version.clone(), index);
        let counters = &self.cache.counters;
        if let Some(entry) = self.cache.blocks.get(&key) {
            let block = entry.value().clone();
            counters.bytes_from_memory.fetch_add(block.len() as u64, Ordering::Relaxed);
            counters.block_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(block);
        }
        // A block on disk is served from there, not moved into memory: memory keeps what the inner storage
        // gave, and the disk tier is not churned through it (its eviction costs more than the read).
        let disk_key = format!("{}\0{}\0{index}", self.name, self.opened.version);
        if let Some(disk) = &self.cache.disk {
            if let Some(block) = disk.get(&disk_key).await {
                counters.bytes_from_disk.fetch_add(block.len() as u64, Ordering::Relaxed);
                counters.block_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(block);
            }
        }
        let fetched = Arc::new(AtomicBool::new(false));
        let (source, fetching) = (self.clone(), fetched.clone());
        let entry = self
            .cache
            .blocks
            .get_or_fetch(&key, move || async move {
                fetching.store(true, Ordering::Relaxed);
                source.cache.counters.inner_reads.fetch_add(1, Ordering::Relaxed);
                let start = index * size;
                let end = (start + size).min(source.opened.size);
                let block = source.inner_file().await?.range(start..end).await?;
                if let Some(disk) = &source.cache.disk {
                    disk.put(&disk_key, &block).await;
                }
                Ok::<_, Error>(block)
            })
            .await
            .map_err(|error| match error.downcast_ref::<Error>() {
                Some(error) => error.replay(),
                None => Error::backend(&self.cache.alias, "read", &self.name, ErrorKind::Other, error.to_string()),
            })?;
        let block = entry.value().clone();
        if fetched.load(Ordering::Relaxed) {
            counters.block_misses.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.bytes_from_memory.fetch_add(block.len() as u64, Ordering::Relaxed);
            counters.block_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(block)
    }
}

/// Reads through the block cache, as pieces of one block (or less, at the range's ends).
#[derive(Debug)]
struct BlockReader(Arc<CachedSource>);

impl FileSource for BlockReader {
    fn size(&self) -> u64 {
        self.0.opened.size
    }

    fn version(&self) -> Option<String> {
        Some(self.0.opened.version.clone())
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let size = self.0.cache.options.block_size;
        if range.start >= range.end {
            return futures::stream::empty().boxed();
        }
        let (first, last) = (range.start / size, (range.end - 1) / size);
        let source = self.0.clone();
        // A few blocks on their way at once: cold ones from the inner storage, warm ones from disk.
        futures::stream::iter(first..=last)
            .map(move |index| {
                let source = source.clone();
                let range = range.clone();
                async move {
                    let block = source.block(index).await?;
                    let block_start = index * size;
                    let from = usize::try_from(range.start.saturating_sub(block_start)).unwrap_or(0);
                    let to = usize::try_from((range.end - block_start).min(block.len() as u64)).unwrap_or(0);
                    Ok(block.slice(from.min(to)..to))
                }
            })
            .buffered(BLOCKS_AHEAD)
            .boxed()
    }
}

#[async_trait]
impl Storage for CachedStorage {
    fn alias(&self) -> &str {
        &self.alias
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.alternative_names()
    }

    fn file_overwrite(&self) -> bool {
        self.inner.file_overwrite()
    }

    /// The inner storage's writer, whose commit drops what the cache knew of the names it touched.
    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        let writer = self.inner.open_write_with(name, options).await?;
        let (cache, name) = (self.clone(), name.to_owned());
        Ok(writer.on_commit(move |result| {
            let stored = result.as_ref().ok().cloned();
            Box::pin(async move {
                cache.forget(&name).await;
                if let Some(stored) = stored {
                    cache.forget(&stored).await;
                }
            })
        }))
    }

    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        let result = self.inner.save_with(name, content, options).await;
        self.forget(name).await;
        if let Ok(stored) = &result {
            self.forget(stored).await;
        }
        result
    }

    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        let result = self.inner.replace(name, content).await;
        self.forget(name).await;
        result
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        if let Some(opened) = self.opened.get(name).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            let source = CachedSource {
                cache: self.clone(),
                name: name.into(),
                opened,
                inner_file: tokio::sync::OnceCell::new(),
            };
            return Ok(StoredFile::new(&self.alias, name, Arc::new(BlockReader(Arc::new(source)))));
        }
        if let Some(None) = self.stats.get(name).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Err(self.not_found(name));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let file = match self.inner.open(name).await {
            Ok(file) => file,
            Err(error @ Error::NotFound { .. }) => {
                self.stats.insert(name, None, started).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        // A backend that cannot tell one version of a file from another is read through, never cached.
        let Some(version) = file.version() else { return Ok(file) };
        let opened = Opened { size: file.size(), version };
        self.opened.insert(name, opened.clone(), started).await;
        let source = CachedSource {
            cache: self.clone(),
            name: name.into(),
            opened,
            inner_file: tokio::sync::OnceCell::new_with(Some(file)),
        };
        Ok(StoredFile::new(&self.alias, name, Arc::new(BlockReader(Arc::new(source)))))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.cached(&self.exists, name, self.inner.exists(name)).await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        self.stat(name).await.map(|meta| meta.size)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let result = self.inner.delete(name).await;
        self.forget(name).await;
        result
    }

    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        let failed = self.inner.delete_many(names).await;
        for name in names {
            self.forget(name).await;
        }
        failed
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let key = path.trim_end_matches('/');
        self.cached(&self.listings, key, self.inner.listdir(path)).await
    }

    async fn url(&self, name: &str) -> Result<String> {
        self.inner.url(name).await
    }

    async fn url_expiring(&self, name: &str, expires_in: Duration) -> Result<String> {
        self.inner.url_expiring(name, expires_in).await
    }

    fn url_prefix(&self) -> Option<String> {
        self.inner.url_prefix()
    }

    async fn url_with(&self, name: &str, options: &storage_core::UrlOptions) -> Result<String> {
        self.inner.url_with(name, options).await
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        match self.stat(name).await?.modified {
            Some(modified) => Ok(modified),
            None => self.inner.modified_time(name).await,
        }
    }

    async fn stat(&self, name: &str) -> Result<FileMeta> {
        self.stat_or_none(name).await?.ok_or_else(|| self.not_found(name))
    }

    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        self.inner.list_files(path).await
    }

    async fn holds(&self, held: &FileMeta, local: Local<'_>, md5: &str, size: u64) -> Result<bool> {
        self.inner.holds(held, local, md5, size).await
    }

    async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        self.inner.record_md5s(stored).await
    }

    async fn settle(&self) -> Vec<String> {
        let stored = self.inner.settle().await;
        for name in &stored {
            self.forget(name).await;
        }
        stored
    }

    async fn cleanup(&self, options: &Cleanup) -> Result<Cleaned> {
        self.inner.cleanup(options).await
    }

    /// Empties this cache's tiers (not the inner storage's, should it be a cache too).
    async fn clear_cache(&self) -> Result<bool> {
        self.clear().await;
        Ok(true)
    }

    /// The inner storage's requests, and the cache's own counts (`cache ...`).
    fn request_counts(&self) -> Vec<(String, u64)> {
        let mut counts = self.inner.request_counts();
        let c = &self.counters;
        for (kind, counter) in [
            ("cache metadata hits", &c.hits),
            ("cache metadata misses", &c.misses),
            ("cache block hits", &c.block_hits),
            ("cache block misses", &c.block_misses),
            ("cache bytes from memory", &c.bytes_from_memory),
            ("cache bytes from disk", &c.bytes_from_disk),
            ("cache inner block reads", &c.inner_reads),
            ("cache evictions from memory", &c.evictions),
        ] {
            counts.push((kind.to_owned(), counter.load(Ordering::Relaxed)));
        }
        counts.push(("cache bytes in memory".to_owned(), self.blocks.usage() as u64));
        if let Some(disk) = &self.disk {
            counts.push(("cache bytes on disk".to_owned(), disk.bytes()));
        }
        counts
    }

    fn metrics(&self) -> Metrics {
        Metrics { requests: self.request_counts().into_iter().collect(), ..self.inner.metrics() }
    }
}
