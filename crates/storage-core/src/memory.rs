//! [`InMemoryStorage`]: Django's `InMemoryStorage`, with the same semantics as the other backends.

use crate::content::{FileSource, FileWriter, StoredFile, Upload};
use crate::error::{Error, Result};
use crate::name::AlternativeNames;
use crate::registry::Backend;
use crate::settings::StorageSettings;
use crate::storage::{Capabilities, FileMeta, SaveOptions, Storage, check_dir, check_name, join_url};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::AsyncWrite;

/// Options of `[storages.<alias>]` for `storages.backends.memory.InMemoryStorage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MemoryOptions {
    /// The URL prefix of `url()`.
    pub base_url: String,
    /// Whether a save replaces an existing file instead of picking an alternative name.
    pub file_overwrite: bool,
    /// How alternative names are picked.
    pub alternative_names: AlternativeNames,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            base_url: "/media/".into(),
            file_overwrite: false,
            alternative_names: AlternativeNames::default(),
        }
    }
}

/// A storage that keeps files in memory, safe to share between tasks; for tests and caches.
///
/// Directories are real, as on disk: saving `a/b` while a file `a` exists fails, and a directory `a` makes the
/// name `a` taken.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use storage_core::{InMemoryStorage, Storage};
///
/// let storage = InMemoryStorage::new();
/// storage.save("storage_test", "storage contents".into()).await?;
/// assert_eq!(storage.open("storage_test").await?.read_all().await?, "storage contents");
/// assert_eq!(storage.url("a b.txt").await?, "/media/a%20b.txt");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryStorage {
    alias: String,
    options: MemoryOptions,
    files: Arc<RwLock<BTreeMap<String, MemoryFile>>>,
}

#[derive(Debug, Clone)]
struct MemoryFile {
    data: Bytes,
    modified: SystemTime,
    /// The content type the save declared.
    content_type: Option<String>,
}

impl Default for InMemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStorage {
    /// An empty storage with default options, under the alias `memory`.
    pub fn new() -> Self {
        Self::with_options("memory", MemoryOptions::default())
    }

    /// An empty storage with default options under `alias`.
    pub fn with_alias(alias: &str) -> Self {
        Self::with_options(alias, MemoryOptions::default())
    }

    /// An empty storage with `options` under `alias`.
    pub fn with_options(alias: &str, options: MemoryOptions) -> Self {
        InMemoryStorage { alias: alias.into(), options, files: Arc::default() }
    }

    fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(Self::with_options(settings.alias(), settings.options()?)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, MemoryFile>> {
        self.files.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, name: &str) -> Result<MemoryFile> {
        check_name(&self.alias, name)?;
        self.read().get(name).cloned().ok_or_else(|| Error::NotFound { storage: self.alias.clone(), name: name.into() })
    }
}

/// Whether a directory `name` exists in `files`, that is, a file lies under `name/`.
fn is_dir(files: &BTreeMap<String, MemoryFile>, name: &str) -> bool {
    let prefix = format!("{name}/");
    files.range(prefix.clone()..).next().is_some_and(|(key, _)| key.starts_with(&prefix))
}

inventory::submit! {
    Backend {
        path: "storages.backends.memory.InMemoryStorage",
        aliases: &["django.core.files.storage.InMemoryStorage"],
        env: &[],
        build: InMemoryStorage::build,
    }
}

#[async_trait]
impl Storage for InMemoryStorage {
    fn alias(&self) -> &str {
        &self.alias
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { atomic_create: true, directories: true, ..Capabilities::default() }
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.options.alternative_names
    }

    fn file_overwrite(&self) -> bool {
        self.options.file_overwrite
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        check_name(&self.alias, name)?;
        let upload = MemoryUpload {
            storage: self.clone(),
            name: name.into(),
            buffer: Vec::new(),
            replace: false,
            options: options.clone(),
        };
        Ok(FileWriter::new(&self.alias, name, Box::new(upload)))
    }

    async fn replace(&self, name: &str, content: crate::Content) -> Result<()> {
        check_name(&self.alias, name)?;
        let upload = MemoryUpload {
            storage: self.clone(),
            name: name.into(),
            buffer: Vec::new(),
            replace: true,
            options: SaveOptions::default(),
        };
        let mut writer = FileWriter::new(&self.alias, name, Box::new(upload));
        content.write_to(&mut writer, &self.alias, name).await?;
        writer.commit().await.map(drop)
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        let file = self.file(name)?;
        let modified = file.modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        // A save makes new bytes at a new time: their address, length and time tell this content from any other.
        let version = format!("{:x}-{}-{modified}", file.data.as_ptr() as usize, file.data.len());
        Ok(StoredFile::new(&self.alias, name, Arc::new(MemorySource(file.data, version))))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        check_name(&self.alias, name)?;
        let files = self.read();
        Ok(files.contains_key(name) || is_dir(&files, name))
    }

    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self.file(name)?.data.len() as u64)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        check_name(&self.alias, name)?;
        self.files.write().unwrap_or_else(PoisonError::into_inner).remove(name);
        Ok(())
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let path = check_dir(&self.alias, path)?;
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        for key in self.read().range(prefix.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&prefix)) {
            match key[prefix.len()..].split_once('/') {
                Some((dir, _)) => dirs.push(dir.to_owned()),
                None => files.push(key[prefix.len()..].to_owned()),
            }
        }
        // Keys come sorted, but "d-x/f" sorts before "d/e": sort directory names again.
        dirs.sort();
        dirs.dedup();
        Ok((dirs, files))
    }

    async fn url(&self, name: &str) -> Result<String> {
        check_name(&self.alias, name)?;
        Ok(join_url(&self.options.base_url, name))
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        Ok(self.file(name)?.modified)
    }

    fn url_prefix(&self) -> Option<String> {
        Some(format!("{}/", self.options.base_url.trim_end_matches('/')))
    }

    async fn stat(&self, name: &str) -> Result<FileMeta> {
        let file = self.file(name)?;
        Ok(FileMeta {
            name: name.into(),
            size: file.data.len() as u64,
            modified: Some(file.modified),
            content_type: Some(file.content_type.unwrap_or_else(|| crate::guess_content_type(name))),
            ..FileMeta::default()
        })
    }

    async fn list_files(&self, path: &str) -> Result<Vec<crate::FileMeta>> {
        let dir = check_dir(&self.alias, path)?;
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        Ok(self
            .read()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(name, file)| crate::FileMeta {
                name: name.clone(),
                size: file.data.len() as u64,
                modified: Some(file.modified),
                ..crate::FileMeta::default()
            })
            .collect())
    }
}

#[derive(Debug)]
struct MemorySource(Bytes, String);

impl FileSource for MemorySource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn version(&self) -> Option<String> {
        Some(self.1.clone())
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        // Ranges are checked by StoredFile; clamp anyway so a bad range can never panic.
        let end = usize::try_from(range.end).unwrap_or(usize::MAX).min(self.0.len());
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
        futures::stream::once(std::future::ready(Ok(self.0.slice(start..end)))).boxed()
    }
}

struct MemoryUpload {
    storage: InMemoryStorage,
    name: String,
    buffer: Vec<u8>,
    /// Store under exactly `name`, replacing a file there.
    replace: bool,
    options: SaveOptions,
}

impl MemoryUpload {
    /// Inserts under the first free candidate name, all under one lock: create-if-absent.
    fn publish(self) -> Result<String> {
        let storage = &self.storage;
        let mut files = storage.files.write().unwrap_or_else(PoisonError::into_inner);
        let file = MemoryFile {
            data: self.buffer.into(),
            modified: SystemTime::now(),
            content_type: self.options.content_type.clone(),
        };
        // A file where a directory of the name should be makes the name impossible, as on disk.
        let mut parent = self.name.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            if files.contains_key(dir) {
                return Err(Error::io(
                    &storage.alias,
                    "save",
                    &self.name,
                    std::io::Error::new(std::io::ErrorKind::NotADirectory, format!("{dir:?} is a file")),
                ));
            }
            parent = dir;
        }
        let overwrite = self.replace || storage.options.file_overwrite;
        let mut attempts = 0;
        for candidate in
            self.options.candidates(&storage.alias, &self.name, storage.options.alternative_names, overwrite)?
        {
            attempts += 1;
            let is_directory = is_dir(&files, &candidate);
            if !is_directory && (overwrite || !files.contains_key(&candidate)) {
                files.insert(candidate.clone(), file);
                return Ok(candidate);
            }
            if self.replace {
                break;
            }
        }
        Err(Error::NoAvailableName { storage: storage.alias.clone(), name: self.name, attempts })
    }
}

impl AsyncWrite for MemoryUpload {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Upload for MemoryUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>> {
        Box::pin(async move { self.publish() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Django's `get_available_name` with `max_length`, and django-storages' overwrite branch.
    #[tokio::test]
    async fn available_names_follow_file_overwrite_and_max_length() {
        let keeping = InMemoryStorage::new();
        keeping.save("parent/child.txt", "x".into()).await.expect("save");
        assert_eq!(keeping.get_available_name("parent/child.txt", None).await.expect("name"), "parent/child_.txt");
        assert_eq!(keeping.get_available_name("parent/child.txt", Some(15)).await.expect("name"), "parent/chi_.txt");

        let options = MemoryOptions { file_overwrite: true, ..MemoryOptions::default() };
        let overwriting = InMemoryStorage::with_options("memory", options);
        overwriting.save("parent/child.txt", "x".into()).await.expect("save");
        assert_eq!(overwriting.get_available_name("parent/child.txt", None).await.expect("name"), "parent/child.txt");
        assert_eq!(
            overwriting.get_available_name("parent/child.txt", Some(15)).await.expect("name"),
            "parent/chil.txt"
        );
        let error = overwriting.get_available_name("parent/child.txt", Some(11)).await.expect_err("too short");
        assert!(error.to_string().contains("Storage tried to truncate away entire filename"), "{error}");
    }
}
