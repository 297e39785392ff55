//! `FileSystemStorage`: Django's `FileSystemStorage`, with saves that are atomic and never overwrite.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use storage_core::Storage;
//! use storage_fs::{FileSystemStorage, FsOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let storage = FileSystemStorage::new("default", FsOptions { location: dir.path().into(), ..FsOptions::default() })?;
//! assert_eq!(storage.save("tests/django_test.txt", "content".into()).await?, "tests/django_test.txt");
//! assert_eq!(storage.save("tests/django_test.txt", "more".into()).await?, "tests/django_test_.txt");
//! assert_eq!(std::fs::read(dir.path().join("tests/django_test_.txt"))?, b"more");
//! # Ok::<_, Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! A save writes a temporary file in the target directory, syncs it, then publishes it under its final name
//! with a hard link (or `renameat2(RENAME_NOREPLACE)` where hard links are refused), which fails if the name is
//! taken: the next alternative name is tried, so concurrent saves never replace each other and a reader never
//! sees a partial file. With `file_overwrite`, the temporary file is renamed over the name, also atomically.
//! Names that lead outside `location`, also through a symlink, are refused.

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Deserializer};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use storage_core::{
    AlternativeNames, Backend, Capabilities, Error, FileSource, FileWriter, NameRule, Result, Storage, StorageSettings,
    StoredFile, Upload, candidate_names, check_dir, check_name, join_url,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Options of `[storages.<alias>]` for `storages.backends.fs.FileSystemStorage`, as in Django.
///
/// ```toml
/// [storages.default]
/// backend = "storages.backends.fs.FileSystemStorage"
/// location = "/srv/media"
/// base_url = "https://media.example.com/"
/// file_permissions_mode = 0o644
/// directory_permissions_mode = "0755"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FsOptions {
    /// The directory files live in, created when first needed (default `media`). A relative path in a settings
    /// file is relative to that file's directory; from the environment or code, to the working directory.
    pub location: PathBuf,
    /// The URL prefix of `url()` (default `/media/`).
    pub base_url: String,
    /// The mode of saved files (an integer like `0o644`, or an octal string like `"0644"`); by default
    /// `0o666` less the umask.
    #[serde(deserialize_with = "octal_mode")]
    pub file_permissions_mode: Option<u32>,
    /// The mode of created directories; by default `0o777` less the umask.
    #[serde(deserialize_with = "octal_mode")]
    pub directory_permissions_mode: Option<u32>,
    /// Whether a save replaces an existing file instead of picking an alternative name (default false).
    pub file_overwrite: bool,
    /// How alternative names are picked (default `underscore`).
    pub alternative_names: AlternativeNames,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            location: PathBuf::from("media"),
            base_url: "/media/".into(),
            file_permissions_mode: None,
            directory_permissions_mode: None,
            file_overwrite: false,
            alternative_names: AlternativeNames::default(),
        }
    }
}

/// A permission mode: an integer (TOML's `0o644`) or an octal string (`"0644"`, `"0o644"`).
fn octal_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Text(String),
    }
    let mode = match Option::<Mode>::deserialize(deserializer)? {
        None => return Ok(None),
        // `644` in TOML is decimal (0o1204, sticky): almost surely meant as octal.
        Some(Mode::Number(mode)) if mode > 0o777 && mode.to_string().bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            return Err(serde::de::Error::custom(format!(
                "{mode} is a decimal number ({mode:#o}); write 0o{mode} or \"{mode}\" for the octal mode"
            )));
        }
        Some(Mode::Number(mode)) => mode,
        Some(Mode::Text(text)) => {
            let digits = text.trim_start_matches("0o");
            u32::from_str_radix(digits, 8).map_err(|_| {
                serde::de::Error::custom(format!("expected an octal mode like \"0644\", found {text:?}"))
            })?
        }
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!("mode {mode:#o} is larger than 0o7777")));
    }
    Ok(Some(mode))
}

/// Files in a directory, like Django's `FileSystemStorage`.
#[derive(Debug, Clone)]
pub struct FileSystemStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    alias: String,
    root: PathBuf,
    options: FsOptions,
}

/// Temporary files of saves in progress start with this; `listdir` hides them.
const TEMP_PREFIX: &str = ".storages-tmp-";

/// The size of the pieces files are read in.
const READ_PIECE: u64 = 256 * 1024;

storage_core::inventory::submit! {
    Backend {
        path: "storages.backends.fs.FileSystemStorage",
        aliases: &["django.core.files.storage.FileSystemStorage"],
        env: &[],
        build: FileSystemStorage::build,
    }
}

impl FileSystemStorage {
    /// A storage under `alias` with `options`; `location` is made absolute against the working directory now.
    pub fn new(alias: &str, options: FsOptions) -> Result<Self> {
        let root = std::path::absolute(&options.location)
            .map_err(|e| Error::io(alias, "resolve location", &options.location.display().to_string(), e))?;
        Ok(FileSystemStorage { inner: Arc::new(Inner { alias: alias.into(), root, options }) })
    }

    fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
        let mut options: FsOptions = settings.options()?;
        // A relative `location` in a settings file means beside that file, wherever the command runs.
        if let Some(location) = settings.path("location")? {
            options.location = location;
        }
        Ok(Arc::new(Self::new(settings.alias(), options)?))
    }

    /// The absolute directory files live in.
    pub fn location(&self) -> &Path {
        &self.inner.root
    }

    /// The path of `name`, after checking it, in a blocking task.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        name: &str,
        f: impl FnOnce(&Inner, PathBuf) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        check_name(&self.inner.alias, name)?;
        reserved(&self.inner.alias, name)?;
        let inner = self.inner.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let path = inner.resolve(&owned)?;
            f(&inner, path)
        })
        .await
        .map_err(|e| inner_panicked(&self.inner.alias, operation, name, e))?
    }
}

/// Refuses names with a segment that looks like a temporary file of a save in progress: listings hide them, and
/// a save's cleanup could remove them.
fn reserved(storage: &str, name: &str) -> Result<()> {
    match name.split('/').any(|segment| segment.starts_with(TEMP_PREFIX)) {
        true => Err(Error::SuspiciousName {
            storage: storage.into(),
            name: name.into(),
            rule: storage_core::NameRule::Reserved,
        }),
        false => Ok(()),
    }
}

fn inner_panicked(storage: &str, operation: &'static str, name: &str, error: tokio::task::JoinError) -> Error {
    Error::backend(storage, operation, name, storage_core::ErrorKind::Other, error.to_string())
}

impl Inner {
    fn io<'a>(&'a self, operation: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |e| Error::io(&self.alias, operation, name, e)
    }

    /// `root/name`, refusing it when an existing part of it is a symlink that leads outside the root.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let path = self.root.join(name);
        let Ok(root) = self.root.canonicalize() else {
            // No root yet: nothing under it exists, so nothing can be a symlink.
            return Ok(path);
        };
        let mut existing = path.as_path();
        loop {
            match existing.canonicalize() {
                Ok(real) if real.starts_with(&root) => return Ok(path),
                Ok(_) => {
                    return Err(Error::SuspiciousName {
                        storage: self.alias.clone(),
                        name: name.into(),
                        rule: NameRule::EscapesRoot,
                    });
                }
                // A missing part (or a dangling symlink): check what exists above it.
                Err(_) => match existing.parent() {
                    Some(parent) if parent.starts_with(&self.root) => existing = parent,
                    _ => return Ok(path),
                },
            }
        }
    }

    /// Creates the directories above `path` (under the root), with `directory_permissions_mode`.
    fn create_parents(&self, name: &str, path: &Path) -> Result<()> {
        let Some(parent) = path.parent() else { return Ok(()) };
        let mut missing = Vec::new();
        let mut dir = parent;
        while !dir.is_dir() {
            missing.push(dir);
            match dir.parent() {
                Some(up) => dir = up,
                None => break,
            }
        }
        for dir in missing.into_iter().rev() {
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    if let Some(mode) = self.options.directory_permissions_mode {
                        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                            .map_err(self.io("create directory for", name))?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(Error::io(&self.alias, "create directory for", name, e)),
            }
        }
        // A symlink may have been raced in while we created directories: check again.
        self.resolve(name).map(drop)
    }

    /// Removes the now empty directories above `path`, up to the root; stops at the first that is not empty.
    fn prune_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(current) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if std::fs::remove_dir(current).is_err() {
                break;
            }
            dir = current.parent();
        }
    }

    /// Publishes the written temporary file under the first free candidate name, or, replacing, under `name`.
    fn publish(&self, name: &str, temp: tempfile::TempPath, replace: bool) -> Result<String> {
        // Checked again just before publishing: a directory on the way may have been swapped for a symlink
        // out of the root while the content was written.
        self.resolve(name)?;
        if replace {
            let target = self.root.join(name);
            if target.is_dir() {
                let error = std::io::Error::new(ErrorKind::IsADirectory, "a directory has this name");
                return Err(Error::io(&self.alias, "replace", name, error));
            }
            temp.persist(&target).map_err(|e| Error::io(&self.alias, "replace", name, e.error))?;
            return Ok(name.into());
        }
        let mut attempts = 0;
        for candidate in candidate_names(name, self.options.alternative_names) {
            attempts += 1;
            let target = self.root.join(&candidate);
            if self.options.file_overwrite {
                if target.is_dir() {
                    continue;
                }
                temp.persist(&target).map_err(|e| Error::io(&self.alias, "save", &candidate, e.error))?;
                return Ok(candidate);
            }
            match link_no_replace(&temp, &target) {
                Ok(()) => return Ok(candidate),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&self.alias, "save", &candidate, e)),
            }
        }
        Err(Error::NoAvailableName { storage: self.alias.clone(), name: name.into(), attempts })
    }
}

/// Whether an error means there is no such file: a missing name, or a file where a directory of the path would be.
fn is_missing(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Reads' errors: "not a directory" on the way to a name means the name does not exist.
fn read_error(storage: &str, operation: &'static str, name: &str, error: std::io::Error) -> Error {
    if is_missing(&error) {
        return Error::NotFound { storage: storage.into(), name: name.into() };
    }
    Error::io(storage, operation, name, error)
}

/// Makes `temp` appear at `target` unless `target` exists (a file, a directory or a symlink): atomic, never
/// replacing anything.
fn link_no_replace(temp: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(temp, target) {
        #[cfg(target_os = "linux")]
        Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::Unsupported) => {
            // Filesystems without hard links: rename, refusing to replace.
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
        }
        other => other,
    }
}

#[async_trait]
impl Storage for FileSystemStorage {
    fn alias(&self) -> &str {
        &self.inner.alias
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { atomic_create: true, directories: true, ..Capabilities::default() }
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.options.alternative_names
    }

    async fn open_write(&self, name: &str) -> Result<FileWriter> {
        self.writer(name, false).await
    }

    /// A rename over the name: readers see the old file or the new one.
    async fn replace(&self, name: &str, content: storage_core::Content) -> Result<()> {
        let mut writer = self.writer(name, true).await?;
        content.write_to(&mut writer, &self.inner.alias, name).await?;
        writer.commit().await.map(drop)
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        self.open_file(name).await
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.blocking("exists", name, |_, path| Ok(path.symlink_metadata().is_ok())).await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self.file_metadata("size", name).await?.len())
    }

    /// Deletes the file, then the directories above it that it leaves empty: as on the other backends, a
    /// directory exists while it holds a file.
    async fn delete(&self, name: &str) -> Result<()> {
        let owned = name.to_owned();
        self.blocking("delete", name, move |inner, path| {
            let result = match path.symlink_metadata() {
                Ok(metadata) if metadata.is_dir() => std::fs::remove_dir(&path),
                _ => std::fs::remove_file(&path),
            };
            match result {
                Err(e) if !is_missing(&e) => Err(Error::io(&inner.alias, "delete", &owned, e)),
                _ => {
                    inner.prune_empty_parents(&path);
                    Ok(())
                }
            }
        })
        .await
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let dir = check_dir(&self.inner.alias, path)?;
        reserved(&self.inner.alias, &dir)?;
        let list = move |inner: &Inner, path: PathBuf| {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => return Ok((Vec::new(), Vec::new())),
                Err(e) => return Err(Error::io(&inner.alias, "listdir", &path.display().to_string(), e)),
            };
            let (mut dirs, mut files) = (Vec::new(), Vec::new());
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&inner.alias, "listdir", &path.display().to_string(), e))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                if entry.path().is_dir() { dirs.push(name) } else { files.push(name) }
            }
            dirs.sort();
            files.sort();
            Ok((dirs, files))
        };
        if dir.is_empty() {
            let inner = self.inner.clone();
            let root = inner.root.clone();
            return tokio::task::spawn_blocking(move || list(&inner, root))
                .await
                .map_err(|e| inner_panicked(&self.inner.alias, "listdir", "", e))?;
        }
        self.blocking("listdir", &dir, list).await
    }

    async fn url(&self, name: &str) -> Result<String> {
        check_name(&self.inner.alias, name)?;
        reserved(&self.inner.alias, name)?;
        Ok(join_url(&self.inner.options.base_url, name))
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        let owned = name.to_owned();
        let metadata = self.file_metadata("modified_time", name).await?;
        metadata.modified().map_err(|e| Error::io(&self.inner.alias, "modified_time", &owned, e))
    }
}

impl FileSystemStorage {
    /// The metadata of the regular file `name`; a directory is not found.
    async fn file_metadata(&self, operation: &'static str, name: &str) -> Result<std::fs::Metadata> {
        let owned = name.to_owned();
        self.blocking(operation, name, move |inner, path| {
            let metadata = std::fs::metadata(&path).map_err(|e| read_error(&inner.alias, operation, &owned, e))?;
            if metadata.is_dir() {
                return Err(Error::NotFound { storage: inner.alias.clone(), name: owned });
            }
            Ok(metadata)
        })
        .await
    }
}

impl FileSystemStorage {
    /// A writer whose temporary file beside `name` is published under a free name, or, with `replace`, renamed
    /// over `name`.
    async fn writer(&self, name: &str, replace: bool) -> Result<FileWriter> {
        let owned = name.to_owned();
        let (file, temp) = self
            .blocking("save", name, move |inner, path| {
                let dir = path.parent().unwrap_or(&inner.root);
                // A concurrent delete may prune the directory between its creation and the temporary file's:
                // create both again.
                let mut attempts = 0;
                loop {
                    std::fs::create_dir_all(&inner.root).map_err(inner.io("create location for", &owned))?;
                    match inner.create_parents(&owned, &path) {
                        Err(Error::NotFound { .. }) if attempts < 10 => {
                            attempts += 1;
                            continue;
                        }
                        other => other?,
                    }
                    let temp = tempfile::Builder::new()
                        .prefix(TEMP_PREFIX)
                        .permissions(std::fs::Permissions::from_mode(0o666))
                        .tempfile_in(dir);
                    match temp {
                        Ok(temp) => return Ok(temp.into_parts()),
                        Err(e) if e.kind() == ErrorKind::NotFound && attempts < 10 => attempts += 1,
                        Err(e) => return Err(Error::io(&inner.alias, "save", &owned, e)),
                    }
                }
            })
            .await?;
        let file = tokio::fs::File::from_std(file);
        let upload = FsUpload { storage: self.clone(), name: name.into(), file, temp, replace };
        Ok(FileWriter::new(&self.inner.alias, name, Box::new(upload)))
    }

    async fn open_file(&self, name: &str) -> Result<StoredFile> {
        let owned = name.to_owned();
        let (file, size) = self
            .blocking("open", name, move |inner, path| {
                let file = std::fs::File::open(&path).map_err(|e| read_error(&inner.alias, "open", &owned, e))?;
                let metadata = file.metadata().map_err(inner.io("open", &owned))?;
                if metadata.is_dir() {
                    return Err(Error::NotFound { storage: inner.alias.clone(), name: owned });
                }
                Ok((file, metadata.len()))
            })
            .await?;
        let source = FsSource { file: Arc::new(file), size, storage: self.inner.alias.clone(), name: name.into() };
        Ok(StoredFile::new(&self.inner.alias, name, Arc::new(source)))
    }
}

/// Reads an opened file by position, so every read stream is independent and sees the file as it was opened.
#[derive(Debug)]
struct FsSource {
    file: Arc<std::fs::File>,
    size: u64,
    storage: String,
    name: String,
}

impl FileSource for FsSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let (file, storage, name) = (self.file.clone(), self.storage.clone(), self.name.clone());
        futures::stream::unfold(range.start, move |position| {
            let (file, storage, name) = (file.clone(), storage.clone(), name.clone());
            async move {
                if position >= range.end {
                    return None;
                }
                let length = (range.end - position).min(READ_PIECE);
                let piece = tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; usize::try_from(length).unwrap_or(0)];
                    file.read_exact_at(&mut buffer, position).map(|()| Bytes::from(buffer))
                })
                .await;
                match piece {
                    Ok(Ok(piece)) => Some((Ok(piece), position + length)),
                    Ok(Err(e)) => Some((Err(Error::io(&storage, "read", &name, e)), range.end)),
                    Err(e) => Some((Err(inner_panicked(&storage, "read", &name, e)), range.end)),
                }
            }
        })
        .boxed()
    }
}

/// A save in progress: a temporary file beside the target, removed if dropped uncommitted.
struct FsUpload {
    storage: FileSystemStorage,
    name: String,
    file: tokio::fs::File,
    temp: tempfile::TempPath,
    /// Publish under exactly `name`, renaming over a file there.
    replace: bool,
}

impl AsyncWrite for FsUpload {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl Upload for FsUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>> {
        Box::pin(async move {
            let FsUpload { storage, name, mut file, temp, replace } = *self;
            let inner = storage.inner.clone();
            file.flush().await.map_err(inner.io("save", &name))?;
            // Durable before it has a name: a crash never leaves a partial file under the final name.
            file.sync_all().await.map_err(inner.io("save", &name))?;
            if let Some(mode) = inner.options.file_permissions_mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode)).await.map_err(inner.io("save", &name))?;
            }
            drop(file);
            let alias = inner.alias.clone();
            let task_name = name.clone();
            tokio::task::spawn_blocking(move || inner.publish(&task_name, temp, replace))
                .await
                .map_err(|e| inner_panicked(&alias, "save", &name, e))?
        })
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
