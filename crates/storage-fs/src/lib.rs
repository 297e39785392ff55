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
//! The directory is synced after publishing, so a save reported done survives a power loss.
//!
//! Names are resolved by the kernel beneath a handle on `location` (`openat2` with `RESOLVE_BENEATH`), and a
//! save creates, links and renames relative to the handle of its directory: a symlink that leads outside
//! (any absolute symlink, or one climbing out with `..`) is refused, even when it is swapped in halfway through
//! a save, and no file of any kind, temporary ones included, is ever made outside. Relative symlinks that stay
//! inside are followed. A FIFO, socket or device is refused, never opened.

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Deserializer};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use storage_core::{
    AlternativeNames, Backend, Capabilities, Error, FileMeta, FileSource, FileWriter, NameRule, Result, SaveOptions,
    Storage, StorageSettings, StoredFile, Upload, check_dir, check_name, join_url,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

mod beneath;

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
    struct OctalMode;
    impl<'de> serde::de::Visitor<'de> for OctalMode {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a permission mode: an octal integer like 0o644, or an octal string like \"0644\"")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_i64<E: serde::de::Error>(self, mode: i64) -> Result<Self::Value, E> {
            match u64::try_from(mode) {
                Ok(mode) => self.visit_u64(mode),
                Err(_) => Err(E::custom(format!("{mode} is negative; write an octal mode like 0o644 or \"0644\""))),
            }
        }

        fn visit_u64<E: serde::de::Error>(self, mode: u64) -> Result<Self::Value, E> {
            let octal_digits = mode.to_string().bytes().all(|b| (b'0'..=b'7').contains(&b));
            match u32::try_from(mode) {
                // `644` or `444` in TOML is decimal (0o1204, 0o674): written as octal digits, it is almost surely
                // meant as octal. (A mode of 100 or more written in decimal is no way anyone writes a mode.)
                Ok(_) if (100..=7777).contains(&mode) && octal_digits => Err(E::custom(format!(
                    "{mode} is a decimal number ({mode:#o} in octal); write 0o{mode} or \"{mode}\" for the octal mode"
                ))),
                Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
                _ => Err(E::custom(format!(
                    "{mode} ({mode:#o}) is larger than the largest mode, 0o7777 (4095); write an octal mode like 0o644 or \"0644\""
                ))),
            }
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            let digits = text.trim_start_matches("0o");
            match u32::from_str_radix(digits, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
                Ok(_) => Err(E::custom(format!("\"{text}\" is larger than the largest mode, 0o7777"))),
                Err(_) => Err(E::custom(format!("expected an octal mode like \"0644\", found {text:?}"))),
            }
        }
    }
    deserializer.deserialize_option(OctalMode)
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
    /// Names that saves dropped while publishing stored after all (the publish runs to its end in its thread).
    stored_after_drop: std::sync::Mutex<Vec<String>>,
    /// Held (shared) by every publish in its thread: `settle` takes it whole to wait for them.
    publishing: Arc<tokio::sync::RwLock<()>>,
}

/// Temporary files of saves in progress start with this; `listdir` hides them.
const TEMP_PREFIX: &str = ".storages-tmp-";

/// The size of the pieces files are read in.
const READ_PIECE: u64 = 256 * 1024;

storage_core::inventory::submit! {
    Backend {
        path: "storages.backends.fs.FileSystemStorage",
        aliases: &[
            "django.core.files.storage.FileSystemStorage",
            "django.contrib.staticfiles.storage.StaticFilesStorage",
            "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
        ],
        env: &[],
        build: FileSystemStorage::build,
    }
}

impl FileSystemStorage {
    /// A storage under `alias` with `options`; `location` is made absolute against the working directory now.
    pub fn new(alias: &str, options: FsOptions) -> Result<Self> {
        let root = std::path::absolute(&options.location)
            .map_err(|e| Error::io(alias, "resolve location", &options.location.display().to_string(), e))?;
        Ok(FileSystemStorage {
            inner: Arc::new(Inner {
                alias: alias.into(),
                root,
                options,
                stored_after_drop: Default::default(),
                publishing: Default::default(),
            }),
        })
    }

    fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
        let mut options: FsOptions = settings.options()?;
        // A relative `location` in a settings file means beside that file, wherever the command runs.
        if let Some(location) = settings.path("location")? {
            options.location = location;
        }
        let storage = Arc::new(Self::new(settings.alias(), options)?);
        // Django's ManifestStaticFilesStorage: `url()` answers with the hashed names of staticfiles.json.
        Ok(match settings.backend().ends_with(".ManifestStaticFilesStorage") {
            true => Arc::new(storage_core::staticfiles::ManifestStorage::new(storage)),
            false => storage,
        })
    }

    /// The absolute directory files live in.
    pub fn location(&self) -> &Path {
        &self.inner.root
    }

    /// Django's `path()`: where the file `name` is on disk (whether or not it exists), for code that needs a
    /// local path, such as a program run on the file. The name is checked first. The path is resolved by the
    /// operating system when used: a symlink swapped in meanwhile is followed, unlike this storage's own
    /// operations, which resolve every name beneath the location's handle.
    ///
    /// ```
    /// use storage_fs::{FileSystemStorage, FsOptions};
    ///
    /// let storage = FileSystemStorage::new("media", FsOptions { location: "/srv/media".into(), ..FsOptions::default() })?;
    /// assert_eq!(storage.path("photos/a.jpg")?, std::path::Path::new("/srv/media/photos/a.jpg"));
    /// assert!(storage.path("../etc/passwd").is_err());
    /// # Ok::<_, storage_core::Error>(())
    /// ```
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(&self.inner.alias, name)?;
        reserved(&self.inner.alias, name)?;
        Ok(self.inner.root.join(name))
    }

    /// Runs `f` with the root's handle (`None`: no root yet) in a blocking task, after checking `name`.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        name: &str,
        create_root: bool,
        f: impl FnOnce(&Inner, Option<OwnedFd>, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        check_name(&self.inner.alias, name)?;
        reserved(&self.inner.alias, name)?;
        self.in_root(operation, name, create_root, f).await
    }

    /// [`Self::blocking`] without the name check, for the root's own listing (`name` is `""`).
    async fn in_root<T: Send + 'static>(
        &self,
        operation: &'static str,
        name: &str,
        create_root: bool,
        f: impl FnOnce(&Inner, Option<OwnedFd>, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let root = beneath::open_root(&inner.root, create_root).map_err(|e| {
                // Not "already exists": the location is in the way, not the name.
                let kind = if e.kind() == ErrorKind::AlreadyExists { ErrorKind::NotADirectory } else { e.kind() };
                let message = format!("location {} is not a usable directory: {e}", inner.root.display());
                Error::io(&inner.alias, operation, &owned, std::io::Error::new(kind, message))
            })?;
            f(&inner, root, &owned)
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

/// A FIFO, socket or device under the location: refused as a file, by every operation that looks at one.
fn not_regular(storage: &str, operation: &'static str, name: &str) -> Error {
    let error = std::io::Error::new(ErrorKind::InvalidInput, "not a regular file (a FIFO, socket or device)");
    Error::io(storage, operation, name, error)
}

fn inner_panicked(storage: &str, operation: &'static str, name: &str, error: tokio::task::JoinError) -> Error {
    Error::backend(storage, operation, name, storage_core::ErrorKind::Other, error.to_string())
}

impl Inner {
    fn io<'a>(&'a self, operation: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |e| Error::io(&self.alias, operation, name, e)
    }

    /// The error for `name` when resolving it beneath the root failed with `errno`.
    fn refused(&self, operation: &'static str, name: &str, errno: Errno) -> Error {
        match errno {
            Errno::NOENT | Errno::NOTDIR => Error::NotFound { storage: self.alias.clone(), name: name.into() },
            Errno::XDEV => {
                Error::SuspiciousName { storage: self.alias.clone(), name: name.into(), rule: NameRule::EscapesRoot }
            }
            Errno::LOOP => Error::io(
                &self.alias,
                operation,
                name,
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "a symlink loop on the way (or, on kernels without openat2, any symlink) is not followed",
                ),
            ),
            errno => Error::io(&self.alias, operation, name, errno.into()),
        }
    }

    /// The error of a save whose directory could not be had, saying which part of the name is in the way.
    fn unsaveable(&self, name: &str, failure: beneath::DirFailure) -> Error {
        let beneath::DirFailure { at, errno, dangling } = failure;
        let problem = match errno {
            _ if dangling => format!("{at:?} is a symlink to nothing, not a directory"),
            Errno::NOTDIR | Errno::EXIST => format!("{at:?} is a file, not a directory"),
            Errno::LOOP => format!("{at:?} is a symlink loop (or, on kernels without openat2, a symlink)"),
            Errno::XDEV => return self.refused("save", name, errno),
            errno => {
                return Error::io(
                    &self.alias,
                    "save",
                    name,
                    std::io::Error::new(
                        std::io::Error::from(errno).kind(),
                        format!("directory {at:?}: {}", std::io::Error::from(errno)),
                    ),
                );
            }
        };
        Error::io(&self.alias, "save", name, std::io::Error::new(ErrorKind::NotADirectory, problem))
    }

    /// The metadata of what `name` resolves to beneath `root`, without opening it for reading.
    fn look(&self, operation: &'static str, root: BorrowedFd<'_>, name: &str) -> Result<std::fs::Metadata> {
        let fd = beneath::open(root, name, beneath::LOOK).map_err(|errno| self.refused(operation, name, errno))?;
        std::fs::File::from(fd).metadata().map_err(self.io(operation, name))
    }

    /// The metadata of the regular file `name` beneath `root` (`None`: no root yet), looked at without opening
    /// it: nothing there, or a directory, is not found; a FIFO, socket or device is refused.
    fn look_file(&self, operation: &'static str, root: Option<&OwnedFd>, name: &str) -> Result<std::fs::Metadata> {
        let not_found = || Error::NotFound { storage: self.alias.clone(), name: name.into() };
        let root = root.ok_or_else(not_found)?;
        let metadata = self.look(operation, root.as_fd(), name)?;
        if metadata.is_dir() {
            return Err(not_found());
        }
        if !metadata.is_file() {
            return Err(not_regular(&self.alias, operation, name));
        }
        Ok(metadata)
    }

    /// Publishes the written temporary file under the first free candidate name, or, replacing, under `name`;
    /// then makes the new name durable by syncing its directory.
    fn publish(&self, name: &str, temp: &mut TempFile, replace: bool, options: &SaveOptions) -> Result<String> {
        let published = if replace {
            let dir = temp.dir.as_fd();
            let (_, leaf) = beneath::split(name);
            if beneath::kind_at(dir, leaf) == Ok(FileType::Directory) {
                let error = std::io::Error::new(ErrorKind::IsADirectory, "a directory has this name");
                return Err(Error::io(&self.alias, "replace", name, error));
            }
            rustix::fs::renameat(dir, &temp.name, dir, leaf)
                .map_err(|e| Error::io(&self.alias, "replace", name, e.into()))?;
            temp.published = true;
            name.to_owned()
        } else {
            self.publish_new(name, temp, options)?
        };
        rustix::fs::fsync(&temp.dir).map_err(|e| Error::io(&self.alias, "save", &published, e.into()))?;
        Ok(published)
    }

    fn publish_new(&self, name: &str, temp: &mut TempFile, options: &SaveOptions) -> Result<String> {
        let dir = temp.dir.as_fd();
        let mut attempts = 0;
        let overwrite = self.options.file_overwrite;
        for candidate in options.candidates(&self.alias, name, self.options.alternative_names, overwrite)? {
            attempts += 1;
            let (_, leaf) = beneath::split(&candidate);
            if self.options.file_overwrite {
                if beneath::kind_at(dir, leaf) == Ok(FileType::Directory) {
                    continue;
                }
                rustix::fs::renameat(dir, &temp.name, dir, leaf)
                    .map_err(|e| Error::io(&self.alias, "save", &candidate, e.into()))?;
                temp.published = true;
                return Ok(candidate);
            }
            match link_no_replace(dir, &temp.name, leaf) {
                Ok(()) => return Ok(candidate),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(&self.alias, "save", &candidate, e.into())),
            }
        }
        Err(Error::NoAvailableName { storage: self.alias.clone(), name: name.into(), attempts })
    }
}

impl Inner {
    /// [`Storage::cleanup`] in the directory `dir_path` and below.
    fn clean_dir(
        &self,
        root: BorrowedFd<'_>,
        dir_path: &str,
        cutoff: SystemTime,
        cleaned: &mut storage_core::Cleaned,
    ) -> Result<()> {
        let fail = |errno: Errno| Error::io(&self.alias, "cleanup", dir_path, errno.into());
        let dir = match beneath::open_dir(root, dir_path) {
            Ok(dir) => dir,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(errno) => return Err(fail(errno)),
        };
        let mut subdirs = Vec::new();
        let mut removed_here = false;
        for entry in rustix::fs::Dir::read_from(&dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if name == "." || name == ".." {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => subdirs.push(name.to_owned()),
                FileType::RegularFile if name.starts_with(TEMP_PREFIX) => {
                    let modified = std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
                    if modified <= cutoff && rustix::fs::unlinkat(&dir, name, AtFlags::empty()).is_ok() {
                        cleaned.count("temporary files");
                        removed_here = true;
                    }
                }
                _ => {}
            }
        }
        for sub in subdirs {
            let path = if dir_path.is_empty() { sub } else { format!("{dir_path}/{sub}") };
            self.clean_dir(root, &path, cutoff, cleaned)?;
        }
        if removed_here {
            beneath::prune_empty(root, dir_path);
        }
        Ok(())
    }
}

/// Makes the file `temp` of `dir` appear as `target` too, unless `target` exists (a file, a directory or a
/// symlink): atomic, never replacing anything.
fn link_no_replace(dir: BorrowedFd<'_>, temp: &str, target: &str) -> std::result::Result<(), Errno> {
    match rustix::fs::linkat(dir, temp, dir, target, AtFlags::empty()) {
        #[cfg(target_os = "linux")]
        Err(Errno::PERM | Errno::OPNOTSUPP) => {
            // Filesystems without hard links: rename, refusing to replace.
            rustix::fs::renameat_with(dir, temp, dir, target, rustix::fs::RenameFlags::NOREPLACE)
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

    fn file_overwrite(&self) -> bool {
        self.inner.options.file_overwrite
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        self.writer(name, false, options.clone()).await
    }

    /// A rename over the name: readers see the old file or the new one.
    async fn replace(&self, name: &str, content: storage_core::Content) -> Result<()> {
        let mut writer = self.writer(name, true, SaveOptions::default()).await?;
        content.write_to(&mut writer, &self.inner.alias, name).await?;
        writer.commit().await.map(drop)
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        self.open_file(name).await
    }

    /// Whether something has this name: a file, a directory, or a symlink (even one leading nowhere).
    async fn exists(&self, name: &str) -> Result<bool> {
        self.blocking("exists", name, false, |inner, root, name| {
            let Some(root) = root else { return Ok(false) };
            match beneath::open(root.as_fd(), name, beneath::LOOK | OFlags::NOFOLLOW) {
                Ok(_) => Ok(true),
                Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
                Err(errno) => Err(inner.refused("exists", name, errno)),
            }
        })
        .await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self.file_metadata("size", name).await?.len())
    }

    /// Deletes the file, then the directories above it that it leaves empty: as on the other backends, a
    /// directory exists while it holds a file. A symlink is removed itself, never what it leads to.
    async fn delete(&self, name: &str) -> Result<()> {
        self.blocking("delete", name, false, |inner, root, name| {
            let Some(root) = root else { return Ok(()) };
            let (dir_path, leaf) = beneath::split(name);
            let dir = match beneath::open_dir(root.as_fd(), dir_path) {
                Ok(dir) => dir,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                Err(errno) => return Err(inner.refused("delete", name, errno)),
            };
            let flags = match beneath::kind_at(dir.as_fd(), leaf) {
                Ok(FileType::Directory) => AtFlags::REMOVEDIR,
                _ => AtFlags::empty(),
            };
            match rustix::fs::unlinkat(&dir, leaf, flags) {
                Ok(()) | Err(Errno::NOENT) => {
                    beneath::prune_empty(root.as_fd(), dir_path);
                    Ok(())
                }
                Err(Errno::NOTEMPTY) => {
                    let error = std::io::Error::new(
                        ErrorKind::DirectoryNotEmpty,
                        "a directory with files in it, not a file: delete its files",
                    );
                    Err(Error::io(&inner.alias, "delete", name, error))
                }
                Err(errno) => Err(Error::io(&inner.alias, "delete", name, errno.into())),
            }
        })
        .await
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let dir = check_dir(&self.inner.alias, path)?;
        reserved(&self.inner.alias, &dir)?;
        let list = |inner: &Inner, root: Option<OwnedFd>, dir_path: &str| {
            let Some(root) = root else { return Ok((Vec::new(), Vec::new())) };
            let dir = match beneath::open_dir(root.as_fd(), dir_path) {
                Ok(dir) => dir,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok((Vec::new(), Vec::new())),
                Err(errno) => return Err(inner.refused("listdir", dir_path, errno)),
            };
            let entries =
                rustix::fs::Dir::read_from(&dir).map_err(|e| Error::io(&inner.alias, "listdir", dir_path, e.into()))?;
            let (mut dirs, mut files) = (Vec::new(), Vec::new());
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&inner.alias, "listdir", dir_path, e.into()))?;
                let Ok(name) = entry.file_name().to_str() else { continue };
                if name == "." || name == ".." || name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let is_dir = match entry.file_type() {
                    FileType::Directory => true,
                    // A symlink is a directory when it leads to one beneath the root.
                    FileType::Symlink | FileType::Unknown => {
                        let path = if dir_path.is_empty() { name.to_owned() } else { format!("{dir_path}/{name}") };
                        inner.look("listdir", root.as_fd(), &path).is_ok_and(|meta| meta.is_dir())
                    }
                    _ => false,
                };
                if is_dir { dirs.push(name.to_owned()) } else { files.push(name.to_owned()) }
            }
            dirs.sort();
            files.sort();
            Ok((dirs, files))
        };
        match dir.is_empty() {
            true => self.in_root("listdir", "", false, list).await,
            false => self.blocking("listdir", &dir, false, list).await,
        }
    }

    async fn url(&self, name: &str) -> Result<String> {
        check_name(&self.inner.alias, name)?;
        reserved(&self.inner.alias, name)?;
        Ok(join_url(&self.inner.options.base_url, name))
    }

    fn url_prefix(&self) -> Option<String> {
        Some(format!("{}/", self.inner.options.base_url.trim_end_matches('/')))
    }

    /// Removes the temporary files of saves a crash stopped (older than `older_than`), in every directory, and the
    /// directories that leaves empty.
    async fn cleanup(&self, options: &storage_core::Cleanup) -> Result<storage_core::Cleaned> {
        let cutoff = SystemTime::now().checked_sub(options.older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let install = options.install_lifecycle;
        self.in_root("cleanup", "", false, move |inner, root, _| {
            let mut cleaned = storage_core::Cleaned::default();
            if install {
                cleaned.notes.push(format!("storage '{}' is a directory: no lifecycle rules to install", inner.alias));
            }
            if let Some(root) = root {
                inner.clean_dir(root.as_fd(), "", cutoff, &mut cleaned)?;
            }
            Ok(cleaned)
        })
        .await
    }

    /// The names saves dropped while publishing stored after all.
    async fn settle(&self) -> Vec<String> {
        drop(self.inner.publishing.write().await);
        std::mem::take(&mut *self.inner.stored_after_drop.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        let owned = name.to_owned();
        let metadata = self.file_metadata("modified_time", name).await?;
        metadata.modified().map_err(|e| Error::io(&self.inner.alias, "modified_time", &owned, e))
    }

    /// Size and time from the file, and the content type its save declared (kept in the extended attribute
    /// `user.storages.content_type` where the file system has them), else the one its name suggests.
    async fn stat(&self, name: &str) -> Result<FileMeta> {
        let (metadata, declared) = self
            .blocking("stat", name, false, |inner, root, name| {
                let metadata = inner.look_file("stat", root.as_ref(), name)?;
                // A file this process may not read still has a size and a time: its declared type is then
                // unknown, and guessed.
                let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
                let declared = root
                    .and_then(|root| beneath::open(root.as_fd(), name, flags).ok())
                    .and_then(|fd| declared_type(&fd));
                Ok((metadata, declared))
            })
            .await?;
        Ok(FileMeta {
            name: name.into(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
            content_type: Some(declared.unwrap_or_else(|| storage_core::guess_content_type(name))),
            ..FileMeta::default()
        })
    }
}

/// The extended attribute that keeps a file's declared content type.
const CONTENT_TYPE_ATTR: &str = "user.storages.content_type";

/// The content type a save declared for the open file `fd`, whatever its length.
fn declared_type(fd: &OwnedFd) -> Option<String> {
    // Most types fit the first buffer; a value is at most 64 KiB (XATTR_SIZE_MAX).
    for size in [256, 64 * 1024] {
        let mut value = vec![0u8; size];
        match rustix::fs::fgetxattr(fd, CONTENT_TYPE_ATTR, &mut value[..]) {
            Ok(len) => {
                value.truncate(len);
                return String::from_utf8(value).ok();
            }
            Err(Errno::RANGE) => continue,
            Err(_) => return None,
        }
    }
    None
}

impl FileSystemStorage {
    /// The metadata of the regular file `name`; a directory is not found.
    async fn file_metadata(&self, operation: &'static str, name: &str) -> Result<std::fs::Metadata> {
        self.blocking(operation, name, false, move |inner, root, name| inner.look_file(operation, root.as_ref(), name))
            .await
    }

    /// A writer whose temporary file beside `name` is published under a free name, or, with `replace`, renamed
    /// over `name`.
    async fn writer(&self, name: &str, replace: bool, options: SaveOptions) -> Result<FileWriter> {
        let (file, temp) = self
            .blocking("save", name, true, |inner, root, name| {
                let root = root.ok_or_else(|| Error::io(&inner.alias, "save", name, ErrorKind::NotFound.into()))?;
                let (dir_path, _) = beneath::split(name);
                // A concurrent delete may prune the directory between its creation and the temporary file's:
                // create both again.
                let mut attempts = 0;
                loop {
                    let dir = beneath::create_dir(root.as_fd(), dir_path, inner.options.directory_permissions_mode)
                        .map_err(|failure| inner.unsaveable(name, failure))?;
                    match TempFile::create(dir) {
                        Ok(created) => return Ok(created),
                        Err(Errno::NOENT) if attempts < 10 => attempts += 1,
                        Err(errno) => return Err(Error::io(&inner.alias, "save", name, errno.into())),
                    }
                }
            })
            .await?;
        let file = tokio::fs::File::from_std(file);
        let upload = FsUpload { storage: self.clone(), name: name.into(), file, temp, replace, options };
        Ok(FileWriter::new(&self.inner.alias, name, Box::new(upload)))
    }

    /// Opens the regular file `name`; a FIFO, socket or device is refused without being opened.
    async fn open_file(&self, name: &str) -> Result<StoredFile> {
        let (file, size, version) = self
            .blocking("open", name, false, |inner, root, name| {
                inner.look_file("open", root.as_ref(), name)?;
                let root = root.ok_or_else(|| Error::NotFound { storage: inner.alias.clone(), name: name.into() })?;
                let not_regular = || not_regular(&inner.alias, "open", name);
                let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
                let fd =
                    beneath::open(root.as_fd(), name, flags).map_err(|errno| inner.refused("open", name, errno))?;
                let file = std::fs::File::from(fd);
                let metadata = file.metadata().map_err(inner.io("open", name))?;
                // Swapped between the look and the open: whatever is there now must be a regular file too.
                if !metadata.is_file() {
                    return Err(not_regular());
                }
                // Saves publish new inodes (a link or a rename of a new file): the inode, with its time and size,
                // tells one content from another.
                use std::os::unix::fs::MetadataExt;
                let version = format!(
                    "{}-{}-{}.{}-{}",
                    metadata.dev(),
                    metadata.ino(),
                    metadata.mtime(),
                    metadata.mtime_nsec(),
                    metadata.len()
                );
                Ok((file, metadata.len(), version))
            })
            .await?;
        let source =
            FsSource { file: Arc::new(file), size, version, storage: self.inner.alias.clone(), name: name.into() };
        Ok(StoredFile::new(&self.inner.alias, name, Arc::new(source)))
    }
}

/// A save's temporary file, created exclusively in the handle of its target's directory; removed when dropped
/// unless it was renamed to its final name.
struct TempFile {
    dir: OwnedFd,
    name: String,
    /// Renamed to the final name: nothing is left to remove.
    published: bool,
}

impl TempFile {
    fn create(dir: OwnedFd) -> std::result::Result<(std::fs::File, TempFile), Errno> {
        loop {
            let name =
                format!("{TEMP_PREFIX}{}", std::iter::repeat_with(fastrand::alphanumeric).take(10).collect::<String>());
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&dir, name.as_str(), flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => return Ok((std::fs::File::from(fd), TempFile { dir, name, published: false })),
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(errno),
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Reads an opened file by position, so every read stream is independent and sees the file as it was opened.
#[derive(Debug)]
struct FsSource {
    file: Arc<std::fs::File>,
    size: u64,
    version: String,
    storage: String,
    name: String,
}

impl FileSource for FsSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn version(&self) -> Option<String> {
        Some(self.version.clone())
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
    temp: TempFile,
    /// Publish under exactly `name`, renaming over a file there.
    replace: bool,
    options: SaveOptions,
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
            let FsUpload { storage, name, mut file, mut temp, replace, options } = *self;
            let inner = storage.inner.clone();
            file.flush().await.map_err(inner.io("save", &name))?;
            if let Some(content_type) = &options.content_type {
                // Where the file system keeps no extended attributes, `stat` guesses the type from the name.
                if let Err(errno) = rustix::fs::fsetxattr(
                    &file,
                    CONTENT_TYPE_ATTR,
                    content_type.as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                ) {
                    tracing::debug!(target: "storages", "{}: no content type kept for {name:?}: {errno}", inner.alias);
                }
            }
            // Durable before it has a name (its content type too): a crash never leaves a partial file under
            // the final name.
            file.sync_all().await.map_err(inner.io("save", &name))?;
            if let Some(mode) = inner.options.file_permissions_mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode)).await.map_err(inner.io("save", &name))?;
            }
            drop(file);
            let alias = inner.alias.clone();
            let task_name = name.clone();
            // The temporary file is removed (or was renamed) when the task ends, published or not. Should this
            // future be dropped meanwhile (Ctrl-C), the publish still runs to its end: what it stored is recorded
            // for `settle`, which tells the caller.
            let (answer, answered) = tokio::sync::oneshot::channel();
            let publishing = inner.publishing.clone().read_owned().await;
            tokio::task::spawn_blocking(move || {
                let _publishing = publishing;
                let published = inner.publish(&task_name, &mut temp, replace, &options);
                // Gone before the answer: a caller that deletes the directory next finds it empty.
                drop(temp);
                if let Err(Ok(stored)) = answer.send(published) {
                    inner.stored_after_drop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(stored);
                }
            });
            answered.await.map_err(|_| {
                let error = std::io::Error::other("the publishing thread ended without an answer");
                Error::io(&alias, "save", &name, error)
            })?
        })
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
