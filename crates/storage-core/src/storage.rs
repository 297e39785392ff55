//! The [`Storage`] trait every backend implements.

use crate::content::{Content, FileWriter, StoredFile};
use crate::error::{Error, Result};
use crate::name::{AlternativeNames, candidate_names, validate_name};
use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::fmt;
use std::time::SystemTime;

/// What a backend can do, so that callers and the testkit pick behaviour by capability, not by backend name.
///
/// ```
/// let caps = storage_core::Capabilities { atomic_create: true, ..Default::default() };
/// assert!(!caps.presigned_urls);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Saves pick alternative names with an atomic create-if-absent, so concurrent saves never lose data.
    pub atomic_create: bool,
    /// `url()` returns presigned, expiring URLs.
    pub presigned_urls: bool,
    /// [`Storage::url_with`] honours an expiry ([`UrlOptions::expires_in`]): the URL it gives stops working.
    pub expiring_urls: bool,
    /// Saves can carry HTTP metadata (content type, cache headers, user metadata).
    pub metadata: bool,
    /// Directories are real: a file `a` and a file `a/b` cannot both exist.
    pub directories: bool,
    /// `url()` answers with the hashed name of `staticfiles.json`, so `collectstatic` writes hashed copies and
    /// the manifest (Django's `ManifestStaticFilesStorage`).
    pub manifest: bool,
}

/// A file storage: Django's `Storage` API, async and object-safe (`Arc<dyn Storage>`).
///
/// Names are relative and `/`-separated (see [`crate::validate_name`]); every method refuses a suspicious name
/// with [`Error::SuspiciousName`] before touching anything.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use storage_core::{InMemoryStorage, Storage};
///
/// let storage = InMemoryStorage::new();
/// assert_eq!(storage.save("tests/django_test.txt", "content".into()).await?, "tests/django_test.txt");
/// assert_eq!(storage.save("tests/django_test.txt", "more content".into()).await?, "tests/django_test_.txt");
/// assert_eq!(storage.size("tests/django_test_.txt").await?, 12);
/// assert_eq!(storage.listdir("tests").await?, (vec![], vec!["django_test.txt".into(), "django_test_.txt".into()]));
/// storage.delete("tests/django_test.txt").await?;
/// storage.delete("tests/django_test.txt").await?; // deleting a missing file is Ok
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[async_trait]
pub trait Storage: std::any::Any + Send + Sync + fmt::Debug {
    /// The alias this storage was configured under (`default`, `staticfiles`, ...), used in every error.
    fn alias(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts writing a file with `options` (a longest name, attributes to store with it). It appears only when
    /// the writer is committed (or shut down), under `name` or, when `name` is taken (or longer than
    /// [`SaveOptions::max_length`]) and the storage does not overwrite, under the first free alternative name,
    /// chosen atomically. Dropped uncommitted, it leaves nothing.
    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter>;

    /// [`Storage::open_write_with`] without options.
    async fn open_write(&self, name: &str) -> Result<FileWriter> {
        self.open_write_with(name, &SaveOptions::default()).await
    }

    /// Stores `content` under `name` (or an alternative name, as [`Storage::open_write_with`]) with `options`,
    /// and returns the final name. Content is streamed; a failed save leaves nothing under any name.
    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        let mut writer = self.open_write_with(name, options).await?;
        content.write_to(&mut writer, self.alias(), name).await?;
        writer.commit().await
    }

    /// [`Storage::save_with`] without options.
    async fn save(&self, name: &str, content: Content) -> Result<String> {
        self.save_with(name, content, &SaveOptions::default()).await
    }

    /// Stores `content` under exactly `name`, replacing a file that is there: an explicit replacement, such as
    /// `collectstatic` makes of a changed file, whatever `file_overwrite` says. Backends make it atomic (a rename
    /// on disk, one request on S3), so readers see the old file or the new one, never none; the default deletes,
    /// then saves.
    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        self.delete(name).await?;
        let saved = self.save(name, content).await?;
        if saved != name {
            return Err(Error::AlreadyExists { storage: self.alias().into(), name: name.into() });
        }
        Ok(())
    }

    /// Opens a file for reading.
    async fn open(&self, name: &str) -> Result<StoredFile>;

    /// Whether a file has this name.
    async fn exists(&self, name: &str) -> Result<bool>;

    /// The file's length in bytes.
    async fn size(&self, name: &str) -> Result<u64>;

    /// Deletes a file; deleting a missing file is `Ok`.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Deletes many files; returns the names that could not be deleted, with why. Backends with a bulk call use
    /// it (S3: one request per 1,000 names); the default deletes one by one.
    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for name in names {
            if let Err(error) = self.delete(name).await {
                failed.push((name.clone(), error));
            }
        }
        failed
    }

    /// The directories and files directly inside `path` (`""` is the root), each sorted. A directory that does
    /// not exist lists as empty.
    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)>;

    /// A URL where the file can be fetched: public or presigned, per the storage's settings.
    async fn url(&self, name: &str) -> Result<String>;

    /// A URL valid for `expires_in`, for backends that sign URLs; others give their [`Storage::url`], which does
    /// not expire.
    async fn url_expiring(&self, name: &str, expires_in: std::time::Duration) -> Result<String> {
        let _ = expires_in;
        self.url(name).await
    }

    /// A URL of `name` made as `options` ask (django-storages' `url(name, parameters, expire, http_method)`):
    /// an expiry, an HTTP method and response overrides for signed URLs, extra query parameters for public
    /// ones. The default serves storages whose URLs are public: it adds `parameters` to [`Storage::url`] (or
    /// [`Storage::url_expiring`] with an expiry) and refuses a method other than GET and response overrides,
    /// which only a signed URL can carry.
    async fn url_with(&self, name: &str, options: &UrlOptions) -> Result<String> {
        if options.needs_signature() {
            let message = "this storage's URLs are not signed: they take no HTTP method but GET and no response \
                           overrides";
            return Err(Error::backend(self.alias(), "url", name, crate::ErrorKind::Unsupported, message));
        }
        let url = match options.expires_in {
            Some(expires_in) => self.url_expiring(name, expires_in).await?,
            None => self.url(name).await?,
        };
        Ok(options.with_parameters(url))
    }

    /// The prefix every URL of a name starts with, when URLs are the prefix and the name (a `base_url`, a
    /// custom domain): Django's `STATIC_URL` for a static storage, under which CSS may reference files by
    /// absolute path. `None` when URLs are signed per name. The default has none.
    fn url_prefix(&self) -> Option<String> {
        None
    }

    /// When the file was last modified.
    async fn modified_time(&self, name: &str) -> Result<SystemTime>;

    /// What the storage knows of a file: size, modification time and, where the backend has them, content type,
    /// ETag and MD5. The default asks [`Storage::size`] and [`Storage::modified_time`].
    async fn stat(&self, name: &str) -> Result<FileMeta> {
        Ok(FileMeta {
            name: name.into(),
            size: self.size(name).await?,
            modified: Some(self.modified_time(name).await?),
            ..FileMeta::default()
        })
    }

    /// Every file under the directory `path` (`""` for all), recursively, with names relative to the storage's
    /// root, sorted. Backends answer from one listing where they can (S3: one request per 1,000 files); the
    /// default walks [`Storage::listdir`] and asks [`Storage::stat`] per file.
    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        let root = check_dir(self.alias(), path)?;
        let mut pending = vec![root];
        let mut found = Vec::new();
        while let Some(dir) = pending.pop() {
            let join = |entry: &str| if dir.is_empty() { entry.to_owned() } else { format!("{dir}/{entry}") };
            let (dirs, files) = self.listdir(&dir).await?;
            for file in files {
                found.push(self.stat(&join(&file)).await?);
            }
            pending.extend(dirs.iter().map(|d| join(d)));
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Whether the stored file `held` (as [`Storage::list_files`] gave it) has the content `local`, whose MD5
    /// (lowercase hex) and size are `md5` and `size`: what `collectstatic` asks to skip unchanged files.
    /// Backends answer from the listing where they can (S3 also for multipart and gzipped objects); the default
    /// compares the listed MD5, or reads the stored file. `local` is bytes or a local file.
    async fn holds(&self, held: &FileMeta, local: Local<'_>, md5: &str, size: u64) -> Result<bool> {
        let _ = local;
        if held.size != size {
            return Ok(false);
        }
        if let Some(held_md5) = &held.md5 {
            return Ok(held_md5 == md5);
        }
        use futures::StreamExt;
        use md5::Digest;
        let mut chunks = self.open(&held.name).await?.chunks(256 * 1024);
        let mut hasher = md5::Md5::new();
        while let Some(chunk) = chunks.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()) == md5)
    }

    /// Tells the storage that the files `stored` (name, size and MD5 of the content each was just given, as the
    /// caller computed them) now hold that content, so that a later [`Storage::list_files`] can show their MD5
    /// where the listing itself cannot. `collectstatic` calls it after copying files. S3 keeps such a record for
    /// objects whose listed ETag is not their MD5 (a server that lists no ETag, multipart uploads, gzipped
    /// objects), trusted for a file only while the listing shows the version it was made for. The default
    /// records nothing: backends that know their files' MD5, or have none to record, need not.
    async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        let _ = stored;
        Ok(())
    }

    /// Waits until the work this storage left running in the background is done: the cleanups of saves whose
    /// futures were dropped halfway (S3 aborts their multipart uploads and deletes their name claims from tasks
    /// of their own), and returns the names such saves stored after all (a save dropped while its last request
    /// was on its way). Call it before the process exits after cancelling saves, as on Ctrl-C, to tell the user
    /// what happened. The default has nothing to wait for.
    async fn settle(&self) -> Vec<String> {
        Vec::new()
    }

    /// Removes what interrupted work left behind and no reader can see: temporary files of saves a crash
    /// (`kill -9`, a power loss) stopped, staging objects, name claims and pending multipart uploads. Only
    /// leftovers older than [`Cleanup::older_than`] are touched, so that saves running now (elsewhere too) keep
    /// theirs; stored files never are. The default has nothing to clean.
    async fn cleanup(&self, options: &Cleanup) -> Result<Cleaned> {
        let mut cleaned = Cleaned::default();
        if options.install_lifecycle {
            cleaned.notes.push(format!("storage '{}' has no lifecycle rules to install", self.alias()));
        }
        Ok(cleaned)
    }

    /// Empties what a caching layer keeps (its memory and disk tiers); `false` for a storage that keeps no cache.
    async fn clear_cache(&self) -> Result<bool> {
        Ok(false)
    }

    /// Requests this storage has made to the service behind it, by kind (`GET`, `PUT`, `LIST`, ...), for
    /// backends that count them; empty otherwise.
    fn request_counts(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// What this storage did since it was built: operations, errors and bytes (counted for every storage that
    /// [`Storages`](crate::Storages) builds), requests and retries (where the backend counts them). The default
    /// has the requests of [`Storage::request_counts`].
    fn metrics(&self) -> Metrics {
        Metrics { requests: self.request_counts().into_iter().collect(), ..Metrics::default() }
    }

    /// Django's `get_available_name`: the first of `name` and its alternatives, at most `max_length` characters
    /// long, that is free **now**. Another writer may take it before you use it; [`Storage::save`] does not rely
    /// on this and never loses data.
    /// A storage that overwrites answers `name` itself, truncated to `max_length` (django-storages'
    /// `get_available_overwrite_name`).
    async fn get_available_name(&self, name: &str, max_length: Option<usize>) -> Result<String> {
        check_name(self.alias(), name)?;
        let options = SaveOptions { max_length, ..SaveOptions::default() };
        let overwrite = self.file_overwrite();
        let mut attempts = 0;
        for candidate in options.candidates(self.alias(), name, self.alternative_names(), overwrite)? {
            attempts += 1;
            if overwrite || !self.exists(&candidate).await? {
                return Ok(candidate);
            }
        }
        Err(Error::NoAvailableName { storage: self.alias().into(), name: name.into(), attempts })
    }

    /// How this storage names a file whose name is taken.
    fn alternative_names(&self) -> AlternativeNames {
        AlternativeNames::default()
    }

    /// Whether a save replaces a file of its name (`file_overwrite`) instead of taking another name.
    fn file_overwrite(&self) -> bool {
        false
    }

    /// The storage this one wraps without changing what it stores (the instrumentation
    /// [`Storages`](crate::Storages) puts around every storage it builds, the manifest's URLs); `None` for a
    /// backend or a layer with a state of its own (a cache). [`Storages::get_as`](crate::Storages::get_as)
    /// looks through it.
    fn observed(&self) -> Option<std::sync::Arc<dyn Storage>> {
        None
    }

    /// Django's `generate_filename`: the name an upload called `name` (possibly prefixed by `upload_to`) is
    /// stored under, cleaned by [`crate::get_valid_name`].
    fn generate_filename(&self, name: &str) -> Result<String> {
        crate::name::generate_filename(self.alias(), name)
    }
}

/// Content on this side, to compare with a stored file: bytes, or a local file.
#[derive(Debug, Clone, Copy)]
pub enum Local<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A local file.
    Path(&'a std::path::Path),
}

/// What a storage knows of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// The name, relative to the storage's root.
    pub name: String,
    /// The size in bytes.
    pub size: u64,
    /// When it was last modified, if known.
    pub modified: Option<SystemTime>,
    /// Its content type, if the backend stores one.
    pub content_type: Option<String>,
    /// Its ETag, if the backend has one.
    pub etag: Option<String>,
    /// The MD5 of its content, lowercase hex, when the backend knows it without reading the file (S3's ETag of
    /// an object stored in one request).
    pub md5: Option<String>,
}

/// What one save asks for besides its content: a longest name, and attributes stored with the file. Explicit
/// attributes win over a content type guessed from the name and over the storage's own `headers` and
/// `object_parameters`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use storage_core::{InMemoryStorage, SaveOptions, Storage};
///
/// let storage = InMemoryStorage::new();
/// let options = SaveOptions::new().max_length(20).content_type("test/foo");
/// let name = storage.save_with("tests/filename.ext", "1".into(), &options).await?;
/// assert_eq!(name, "tests/filename.ext");
/// assert_eq!(storage.stat(&name).await?.content_type.as_deref(), Some("test/foo"));
/// let other = storage.save_with("tests/filename.ext", "2".into(), &options).await?;
/// assert!(other.starts_with("tests/") && other.chars().count() <= 20, "{other}");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// The longest name the save may store under, in characters (Django's `max_length`). A longer alternative
    /// name has its stem truncated to fit; where the storage overwrites, a longer name is truncated itself.
    pub max_length: Option<usize>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// User metadata (`x-amz-meta-<key>` on S3).
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl SaveOptions {
    /// No limit and no attributes: what [`Storage::save`] uses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`SaveOptions::max_length`].
    pub fn max_length(mut self, max_length: usize) -> Self {
        self.max_length = Some(max_length);
        self
    }

    /// Sets [`SaveOptions::content_type`].
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = Some(value.into());
        self
    }

    /// Sets [`SaveOptions::content_disposition`].
    pub fn content_disposition(mut self, value: impl Into<String>) -> Self {
        self.content_disposition = Some(value.into());
        self
    }

    /// Sets [`SaveOptions::cache_control`].
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Sets [`SaveOptions::content_encoding`].
    pub fn content_encoding(mut self, value: impl Into<String>) -> Self {
        self.content_encoding = Some(value.into());
        self
    }

    /// Adds one entry of [`SaveOptions::metadata`].
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The names a save under `name` tries, in order: as [`candidate_names`] under `policy` and `max_length`
    /// when the storage keeps files; where it overwrites, `name` alone, truncated to `max_length` (an error
    /// when only its stem could give way and that is not enough).
    pub fn candidates(
        &self,
        storage: &str,
        name: &str,
        policy: AlternativeNames,
        overwrite: bool,
    ) -> Result<Box<dyn Iterator<Item = String> + Send>> {
        if !overwrite {
            return Ok(Box::new(candidate_names(name, policy, self.max_length)));
        }
        let Some(max_length) = self.max_length else { return Ok(Box::new(std::iter::once(name.to_owned()))) };
        match crate::name::truncate_name(name, max_length) {
            Some(truncated) => {
                check_name(storage, &truncated)?;
                Ok(Box::new(std::iter::once(truncated)))
            }
            None => Err(Error::SuspiciousOperation {
                storage: storage.into(),
                message: format!(
                    "Storage tried to truncate away entire filename \"{name}\". Please make sure that the \
                     corresponding file field allows sufficient \"max_length\"."
                ),
            }),
        }
    }
}

/// The HTTP method a URL is made for (see [`UrlOptions`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UrlMethod {
    /// Download (the default).
    #[default]
    Get,
    /// Look at the headers only.
    Head,
    /// Upload, for a browser that sends a file straight to the storage.
    Put,
}

impl std::str::FromStr for UrlMethod {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Ok(UrlMethod::Get),
            "HEAD" => Ok(UrlMethod::Head),
            "PUT" => Ok(UrlMethod::Put),
            _ => Err(format!("{text:?} is not an HTTP method a URL is made for: GET, HEAD or PUT")),
        }
    }
}

/// How [`Storage::url_with`] makes a URL: django-storages' `url(name, parameters, expire, http_method)`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use storage_core::{InMemoryStorage, Storage, UrlOptions};
///
/// let storage = InMemoryStorage::new();
/// let url = storage.url_with("video.mp4", &UrlOptions::new().parameter("version", "10")).await?;
/// assert_eq!(url, "/media/video.mp4?version=10");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UrlOptions {
    /// How long a signed URL stays valid; the storage's own expiry when `None`.
    pub expires_in: Option<std::time::Duration>,
    /// The method the URL is for (signed URLs).
    pub method: UrlMethod,
    /// The `Content-Disposition` the answer is given with (`ResponseContentDisposition`; signed URLs).
    pub response_content_disposition: Option<String>,
    /// The `Content-Type` the answer is given with (`ResponseContentType`; signed URLs).
    pub response_content_type: Option<String>,
    /// Query parameters added to the URL (`?version=10`), in this order; signed URLs sign them.
    pub parameters: Vec<(String, String)>,
}

impl UrlOptions {
    /// A URL as [`Storage::url`] makes it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`UrlOptions::expires_in`].
    pub fn expires_in(mut self, expires_in: std::time::Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }

    /// Sets [`UrlOptions::method`].
    pub fn method(mut self, method: UrlMethod) -> Self {
        self.method = method;
        self
    }

    /// Sets [`UrlOptions::response_content_disposition`].
    pub fn response_content_disposition(mut self, value: impl Into<String>) -> Self {
        self.response_content_disposition = Some(value.into());
        self
    }

    /// Sets [`UrlOptions::response_content_type`].
    pub fn response_content_type(mut self, value: impl Into<String>) -> Self {
        self.response_content_type = Some(value.into());
        self
    }

    /// Adds a query parameter.
    pub fn parameter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.push((key.into(), value.into()));
        self
    }

    /// Whether these options ask for what only a signed URL carries: a method but GET, response overrides.
    pub fn needs_signature(&self) -> bool {
        self.method != UrlMethod::Get
            || self.response_content_disposition.is_some()
            || self.response_content_type.is_some()
    }

    /// `url` with [`UrlOptions::parameters`] added to its query, form-encoded as Python's `urlencode`.
    pub fn with_parameters(&self, url: String) -> String {
        let query: Vec<String> =
            self.parameters.iter().map(|(key, value)| format!("{}={}", form_encode(key), form_encode(value))).collect();
        append_query(url, &query.join("&"))
    }
}

/// `url` with `query` (already encoded) joined to the query it has, if any; nothing for an empty `query`.
pub(crate) fn append_query(mut url: String, query: &str) -> String {
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(query);
    }
    url
}

/// Python's `quote_plus`: letters, digits and `_.-~` stay, a space is `+`, the rest is percent-encoded.
fn form_encode(text: &str) -> String {
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-').remove(b'~');
    utf8_percent_encode(text, FORM).to_string().replace("%20", "+")
}

/// Checks `name` against the name rules, as an [`Error::SuspiciousName`] of `storage`.
pub fn check_name(storage: &str, name: &str) -> Result<()> {
    validate_name(name).map_err(|rule| Error::SuspiciousName { storage: storage.into(), name: name.into(), rule })
}

/// Checks a `listdir` path: `""` (or `"/"`-less root) is allowed, a trailing `/` is dropped.
pub fn check_dir(storage: &str, path: &str) -> Result<String> {
    crate::name::validate_dir(path).map_err(|rule| Error::SuspiciousName {
        storage: storage.into(),
        name: path.into(),
        rule,
    })
}

/// Characters Django's `filepath_to_uri` leaves as they are: unreserved ones, `/` and `~!*()'`.
const URI_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')')
    .remove(b'\'');

/// `base_url` followed by `name` percent-encoded as UTF-8 (Django's `filepath_to_uri`), with exactly one `/`
/// between them.
///
/// ```
/// assert_eq!(
///     storage_core::join_url("https://cdn.example.com", "whacky & filename.mp4"),
///     "https://cdn.example.com/whacky%20%26%20filename.mp4",
/// );
/// assert_eq!(storage_core::join_url("/media/", "ü.txt"), "/media/%C3%BC.txt");
/// ```
pub fn join_url(base_url: &str, name: &str) -> String {
    let encoded = utf8_percent_encode(name, URI_SAFE);
    format!("{}/{encoded}", base_url.trim_end_matches('/'))
}

/// What [`Storage::cleanup`] does.
///
/// ```
/// let options = storage_core::Cleanup::older_than(std::time::Duration::from_secs(3600)).install_lifecycle(true);
/// assert_eq!(options.older_than, std::time::Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Leftovers younger than this are kept: they may belong to a save in progress.
    pub older_than: std::time::Duration,
    /// Also install the service's own rules that clean such leftovers by themselves (S3: a bucket lifecycle
    /// rule).
    pub install_lifecycle: bool,
}

impl Cleanup {
    /// Removes leftovers older than `age`.
    pub fn older_than(age: std::time::Duration) -> Self {
        Cleanup { older_than: age, install_lifecycle: false }
    }

    /// Also installs the service's rules that clean leftovers by themselves.
    pub fn install_lifecycle(self, install: bool) -> Self {
        Cleanup { install_lifecycle: install, ..self }
    }
}

/// What [`Storage::cleanup`] did: how many leftovers of each kind it removed, and what else it did or found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Removed leftovers by kind: `temporary files`, `staging objects`, `claims`, `pending uploads`.
    pub removed: std::collections::BTreeMap<&'static str, u64>,
    /// Lines for the user: a lifecycle rule installed, or why not.
    pub notes: Vec<String>,
}

impl Cleaned {
    /// Counts one removed leftover of `kind`.
    pub fn count(&mut self, kind: &'static str) {
        *self.removed.entry(kind).or_default() += 1;
    }
}

/// What a storage did since it was built (see [`Storage::metrics`]).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use figment::providers::{Format, Toml};
/// use storage_core::{Settings, Storages};
///
/// let storages = Storages::new(Settings::empty().merge(Toml::string(
///     "[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorage\"",
/// )));
/// let storage = storages.get("default")?;
/// storage.save("a.txt", "12345".into()).await?;
/// assert_eq!(storage.open("a.txt").await?.read_all().await?, "12345");
/// assert!(storage.open("missing.txt").await.is_err());
/// let metrics = storage.metrics();
/// assert_eq!((metrics.operations["save"], metrics.operations["open"]), (1, 2));
/// assert_eq!((metrics.bytes_written, metrics.bytes_read), (5, 5));
/// assert_eq!(metrics.errors["not_found"], 1);
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Calls of each operation (`save`, `open`, `exists`, ...).
    pub operations: std::collections::BTreeMap<&'static str, u64>,
    /// Failed calls, by [`ErrorKind::as_str`](crate::ErrorKind::as_str).
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes saved (of content whose size is known, and written through writers).
    pub bytes_written: u64,
    /// Bytes read from opened files.
    pub bytes_read: u64,
    /// Requests sent to the service, by kind.
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Requests sent again after a failed attempt.
    pub retries: u64,
}
