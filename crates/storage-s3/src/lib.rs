//! `S3Storage`: django-storages' S3 backend, on `object_store`'s AWS client.
//!
//! ```no_run
//! # async fn run() -> storage_core::Result<()> {
//! use storage_core::Storage;
//! use storage_s3::{S3Options, S3Storage};
//!
//! let storage = S3Storage::new("default", S3Options {
//!     bucket_name: "media".into(),
//!     endpoint_url: Some("http://127.0.0.1:9000".into()),
//!     access_key: Some("minio".into()),
//!     secret_key: Some("minio123".into()),
//!     auto_create_bucket: true,
//!     ..S3Options::default()
//! })?;
//! let name = storage.save("tests/django_test.txt", "content".into()).await?;
//! println!("{}", storage.url(&name).await?); // presigned for an hour
//! # Ok(()) }
//! ```
//!
//! Registered as `storages.backends.s3.S3Storage` (aliases `storages.backends.s3boto.S3BotoStorage` and
//! `storages.backends.s3boto3.S3Boto3Storage`) with the settings of [`S3Options`].
//!
//! - Saves never overwrite unless `file_overwrite` is set: small content is stored with a conditional PutObject
//!   (`If-None-Match: *`) and, when the name is taken, under the next alternative name; large bytes or files
//!   are uploaded in parts straight to a claimed name, large one-shot streams to a staging key, then published
//!   with a conditional multipart copy. 32 concurrent saves of one name give 32 objects.
//! - Content is streamed both ways: memory stays near `multipart_chunksize * (max_concurrency + 1)` whatever the
//!   size; reads yield bytes as they arrive. A large object read whole comes as concurrent ranged GETs pinned
//!   to the opened version (`parallel_read_threshold`, see `read.rs`); a range that comes short fails the read.
//! - collectstatic skips unchanged files from one listing, also where the listed ETag is no MD5, through a
//!   record of the MD5s this storage stored (see `list.rs`).
//! - Object headers (`headers`, `object_parameters`, `default_acl`, content type, gzip) and `Content-MD5` or CRC32
//!   checksums go with the requests that create objects, which this crate sends itself (see `protocol.rs`).
//! - Outcomes are true: a save whose answer was lost checks, by its save token, whether the object there is its
//!   own before it answers. Requests fail as stalled after `request_timeout` seconds without progress, never
//!   for being slow. Errors have a [`kind`](storage_core::Error::kind).

mod bucket;
mod cleanup;
mod cloudfront;
mod delete;
mod digest;
mod list;
mod options;
mod profile;
mod protocol;
mod publish;
mod read;
mod transport;
mod upload;

pub use options::{AddressingStyle, BOTO3_PARAMETERS, ChecksumMode, ConditionalWrites, S3Options};

use crate::options::ObjectHeaders;
use crate::transport::{Connector, Transport};
use ::http::Method as http_method;
use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use storage_core::{
    AlternativeNames, Backend, Capabilities, Content, Error, ErrorKind, FileMeta, FileWriter, Local, Result,
    SaveOptions, Storage, StorageSettings, StoredFile, UrlMethod, UrlOptions, check_dir, check_name, join_url,
    validate_name,
};

storage_core::inventory::submit! {
    Backend {
        path: "storages.backends.s3.S3Storage",
        aliases: &[
            "storages.backends.s3boto.S3BotoStorage",
            "storages.backends.s3boto3.S3Boto3Storage",
            "storages.backends.s3.S3StaticStorage",
            "storages.backends.s3boto3.S3StaticStorage",
            "storages.backends.s3.S3ManifestStaticStorage",
            "storages.backends.s3boto3.S3ManifestStaticStorage",
        ],
        env: options::ENV,
        build: S3Storage::build,
    }
}

/// Files in an S3 bucket (or any S3-compatible service), like django-storages' `S3Storage`.
#[derive(Debug, Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    alias: String,
    options: S3Options,
    store: AmazonS3,
    /// The headers every object is created with.
    headers: ObjectHeaders,
    /// The SSE-C headers of `sse_customer_key` (values marked sensitive), sent with every request that writes
    /// or reads an object; and the same for the source of a copy.
    customer_key: Option<(http::HeaderMap, http::HeaderMap)>,
    /// The signer of custom-domain URLs, with `cloudfront_key_id` and `cloudfront_key`.
    cloudfront: Option<cloudfront::CloudFrontSigner>,
    /// `<location>/.storages-staging/`: where large saves are staged.
    staging_prefix: String,
    transport: Arc<Transport>,
    /// A client through the same transport as object_store's, for this crate's own requests.
    http: HttpClient,
    /// Whether the server checks `If-None-Match` (found out once, with `conditional_writes = "auto"`).
    conditional: tokio::sync::OnceCell<bool>,
    /// Set once the service answered that it does not implement DeleteObjects.
    bulk_delete_unsupported: std::sync::atomic::AtomicBool,
    /// The cleanups of saves dropped halfway (aborts, claim deletes), running in tasks of their own.
    cleanups: tokio_util::task::TaskTracker,
    /// Requests of this crate's own sent again after a failed attempt.
    retries: std::sync::atomic::AtomicU64,
    /// Names that saves dropped halfway stored after all, found by their cleanups.
    stored_after_drop: Mutex<Vec<String>>,
    /// The endpoint, as errors name it.
    endpoint: String,
    /// The URL of the bucket: `<endpoint>/<bucket>` or `https://<bucket>.<endpoint host>`.
    bucket_url: String,
    /// `location` without surrounding slashes.
    prefix: String,
    bucket_checked: tokio::sync::OnceCell<()>,
    /// The record of MD5s the listing cannot show, once read (see `list.rs`).
    md5_record: Mutex<Option<list::Md5Record>>,
    /// The save tokens of the objects this storage stored, by name (see `publish.rs`).
    saved_tokens: Mutex<std::collections::HashMap<String, String>>,
}

impl S3Storage {
    /// A storage under `alias` with `options`. Nothing is sent before the first operation, which checks (once)
    /// that the bucket exists, creating it with `auto_create_bucket`. Without keys, the AWS profile of
    /// `session_profile`, `$AWS_PROFILE` or `default` fills them in, with its region (when `region_name` is the
    /// default) and endpoint.
    pub fn new(alias: &str, options: S3Options) -> Result<Self> {
        let invalid = |key: &str, message: String| {
            Error::from(storage_core::SettingsError::InvalidValue {
                alias: alias.into(),
                key: key.into(),
                origin: "the options given".into(),
                message,
            })
        };
        // In code, a region other than the default is a region given.
        let region_given = options.region_name != S3Options::default().region_name;
        Self::with_validation(alias, options, region_given, invalid)
    }

    /// Builds the storage; the static variants (`S3StaticStorage`, `S3ManifestStaticStorage`) have
    /// `querystring_auth` off unless it is set, and the manifest one answers `url()` from `staticfiles.json`.
    fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
        let mut options: S3Options = settings.options()?;
        let (static_files, manifest) = match settings.backend().rsplit('.').next() {
            Some("S3StaticStorage") => (true, false),
            Some("S3ManifestStaticStorage") => (true, true),
            _ => (false, false),
        };
        if static_files && !settings.is_set("querystring_auth") {
            options.querystring_auth = false;
        }
        let region_given = settings.is_set("region_name");
        let invalid = |key: &str, message| settings.invalid(key, message);
        let storage = Self::with_validation(settings.alias(), options, region_given, invalid)?;
        Ok(match manifest {
            true => Arc::new(storage_core::staticfiles::ManifestStorage::new(Arc::new(storage))),
            false => Arc::new(storage),
        })
    }

    /// Builds after checking `options` (and filling in their AWS profile; `region_given`: the region was set,
    /// so the profile's does not apply).
    fn with_validation(
        alias: &str,
        options: S3Options,
        region_given: bool,
        invalid: impl Fn(&str, String) -> Error,
    ) -> Result<Self> {
        let options = profile::apply(options, region_given).map_err(|(key, message)| invalid(key, message))?;
        if options.bucket_name.is_empty() {
            return Err(invalid("bucket_name", "a bucket name is required (or AWS_STORAGE_BUCKET_NAME)".into()));
        }
        if options.secret_key.is_some() != options.access_key.is_some() {
            return Err(invalid("access_key", "access_key and secret_key go together: set both or neither".into()));
        }
        if options.multipart_chunksize < protocol::MIN_PART {
            return Err(invalid("multipart_chunksize", "S3 parts are at least 5 MiB (5242880 bytes)".into()));
        }
        if options.multipart_chunksize > protocol::MAX_PART {
            return Err(invalid("multipart_chunksize", "S3 parts are at most 5 GiB (5368709120 bytes)".into()));
        }
        if options.multipart_threshold > protocol::MAX_PUT {
            return Err(invalid(
                "multipart_threshold",
                "one PutObject stores at most 5 GiB (5368709120 bytes): larger content must go in parts".into(),
            ));
        }
        if options.querystring_expire == 0 || options.querystring_expire > 604_800 {
            return Err(invalid(
                "querystring_expire",
                format!(
                    "{} seconds: a presigned URL is valid for 1 to 604800 seconds (7 days)",
                    options.querystring_expire
                ),
            ));
        }
        // `request_timeout = 0` means no limit; a connection needs some time.
        for (key, value, least) in [
            ("retry_timeout", options.retry_timeout, "0 or more"),
            ("connect_timeout", options.connect_timeout, "more than 0"),
            ("request_timeout", options.request_timeout, "0 or more"),
        ] {
            if !value.is_finite() || value < 0.0 || (value == 0.0 && key == "connect_timeout") {
                return Err(invalid(key, format!("{value} is not a number of seconds ({least})")));
            }
            if value > MAX_SECONDS {
                return Err(invalid(key, format!("{value} seconds is more than a year; use 0 for no limit")));
            }
        }
        if options.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "at least one part must be in flight".into()));
        }
        // As django-storages' check_location: a leading slash is a mistake to point out, not to repair.
        if options.location.starts_with('/') {
            let correct = options.location.trim_start_matches('/');
            return Err(invalid(
                "location",
                format!("cannot begin with a leading slash. Found '{}'. Use '{correct}' instead.", options.location),
            ));
        }
        let prefix = options.location.trim_end_matches('/').to_owned();
        if !prefix.is_empty() {
            validate_name(&prefix).map_err(|rule| invalid("location", format!("{rule}")))?;
        }
        let headers = ObjectHeaders::new(&options).map_err(|(setting, message)| invalid(setting, message))?;
        let style = options.addressing_style.unwrap_or(if options.endpoint_url.is_some() {
            AddressingStyle::Path
        } else {
            AddressingStyle::Virtual
        });
        let region = &options.region_name;
        let bucket = &options.bucket_name;
        let endpoint = options.endpoint_url.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let Some((scheme, host_and_path)) = endpoint.split_once("://") else {
            return Err(invalid("endpoint_url", format!("{endpoint:?} is not a URL like http://127.0.0.1:9000")));
        };
        // Checked here, so that a bad host (`http://256.1.1.1`) or scheme is a settings error, not a failure
        // deep in a request (object_store panics signing for a host it cannot parse).
        let parsed = reqwest::Url::parse(&endpoint).map_err(|e| {
            invalid(
                "endpoint_url",
                format!("{:?} is not a URL like http://127.0.0.1:9000: {e}", storage_core::redact(&endpoint)),
            )
        })?;
        if let Some(password) = parsed.password() {
            // A password in the endpoint is a secret like the keys: known to the redactor from now on.
            let _ = storage_core::Secret::from(password);
        }
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(invalid(
                "endpoint_url",
                format!("{scheme}:// is not served: use http:// or https:// with a host"),
            ));
        }
        let bucket_url = match style {
            AddressingStyle::Path => format!("{endpoint}/{bucket}"),
            AddressingStyle::Virtual => format!("{scheme}://{bucket}.{host_and_path}"),
        };
        let key_prefix = match bucket_url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])) {
            Some(path) => format!("{path}/"),
            None => "/".into(),
        };

        let staging_prefix = match prefix.as_str() {
            "" => format!("{}/", upload::STAGING_DIR),
            prefix => format!("{prefix}/{}/", upload::STAGING_DIR),
        };
        let bucket_authority = bucket_url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_owned())
            .unwrap_or_default();
        let transport = Arc::new(Transport {
            idle: (options.request_timeout > 0.0).then(|| seconds(options.request_timeout)),
            bucket_authority,
            key_prefix,
            counts: Default::default(),
        });
        // The transport times requests out when they stall; object_store's total limit would fail slow
        // transfers that progress.
        let mut client_options = ClientOptions::new()
            .with_allow_http(scheme == "http")
            .with_connect_timeout(seconds(options.connect_timeout))
            .with_timeout_disabled();
        if let Some(proxy) = &options.proxy_url {
            client_options = client_options.with_proxy_url(proxy);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: options.max_retries,
            retry_timeout: seconds(options.retry_timeout),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_retry(retry)
            .with_client_options(client_options.clone())
            .with_http_connector(Connector(transport.clone()));
        builder = match style {
            AddressingStyle::Path => builder.with_endpoint(&endpoint),
            AddressingStyle::Virtual => builder.with_endpoint(&bucket_url).with_virtual_hosted_style_request(true),
        };
        if let Some(metadata) = &options.metadata_endpoint {
            builder = builder.with_metadata_endpoint(metadata);
        }
        if let (Some(key), Some(secret)) = (&options.access_key, &options.secret_key) {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret.expose());
        } else {
            // No keys: the rest of the AWS chain. Instance metadata needs nothing; web identity (EKS) and
            // container credentials (ECS) are found through these deployment variables.
            for (var, key) in CREDENTIAL_CHAIN_ENV {
                if let Ok(value) = std::env::var(var) {
                    builder = builder.with_config(key, value);
                }
            }
        }
        if let Some(token) = &options.security_token {
            builder = builder.with_token(token.expose());
        }
        let cloudfront = match (&options.cloudfront_key_id, &options.cloudfront_key) {
            (Some(id), Some(key)) => {
                Some(cloudfront::CloudFrontSigner::new(id, key.expose()).map_err(|e| invalid("cloudfront_key", e))?)
            }
            (None, None) => None,
            _ => {
                let together = "Both AWS_CLOUDFRONT_KEY_ID/cloudfront_key_id and AWS_CLOUDFRONT_KEY/cloudfront_key \
                                must be provided together.";
                // Named after the one that is set, so that the error says where it came from.
                let setting = if options.cloudfront_key_id.is_some() { "cloudfront_key_id" } else { "cloudfront_key" };
                return Err(invalid(setting, together.into()));
            }
        };
        let customer_key = match &options.sse_customer_key {
            Some(key) => {
                builder = builder.with_ssec_encryption(key.expose().trim());
                Some(customer_key_headers(key.expose()).map_err(|message| invalid("sse_customer_key", message))?)
            }
            None => None,
        };
        let store = builder.build().map_err(|e| invalid("endpoint_url", bucket::error_chain(&e)))?;
        let http = Connector(transport.clone())
            .connect(&client_options)
            .map_err(|e| invalid("endpoint_url", bucket::error_chain(&e)))?;
        Ok(S3Storage {
            inner: Arc::new(Inner {
                alias: alias.into(),
                options,
                store,
                headers,
                customer_key,
                cloudfront,
                staging_prefix,
                transport,
                http,
                conditional: tokio::sync::OnceCell::new(),
                bulk_delete_unsupported: Default::default(),
                cleanups: tokio_util::task::TaskTracker::new(),
                retries: Default::default(),
                stored_after_drop: Default::default(),
                endpoint,
                bucket_url,
                prefix,
                bucket_checked: tokio::sync::OnceCell::new(),
                md5_record: Mutex::new(None),
                saved_tokens: Mutex::default(),
            }),
        })
    }

    /// The options this storage was built with.
    pub fn options(&self) -> &S3Options {
        &self.inner.options
    }

    /// The bucket key of `name`: `location/name`.
    pub fn key(&self, name: &str) -> String {
        self.inner.key(name)
    }
}

/// The deployment variables of the AWS credential chain past static keys.
const CREDENTIAL_CHAIN_ENV: [(&str, AmazonS3ConfigKey); 7] = [
    ("AWS_WEB_IDENTITY_TOKEN_FILE", AmazonS3ConfigKey::WebIdentityTokenFile),
    ("AWS_ROLE_ARN", AmazonS3ConfigKey::RoleArn),
    ("AWS_ROLE_SESSION_NAME", AmazonS3ConfigKey::RoleSessionName),
    ("AWS_ENDPOINT_URL_STS", AmazonS3ConfigKey::StsEndpoint),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", AmazonS3ConfigKey::ContainerCredentialsRelativeUri),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", AmazonS3ConfigKey::ContainerCredentialsFullUri),
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", AmazonS3ConfigKey::ContainerAuthorizationTokenFile),
];

/// The longest a presigned URL is valid, as S3's SigV4 allows: 7 days.
const MAX_PRESIGN_SECONDS: u64 = 604_800;

/// The longest timeout a setting may give: a year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

impl S3Storage {
    /// Stores `content` under `name` (with `replace`, exactly there, over what is there) and returns the final
    /// name. Bytes already in memory that go in one PutObject as they are (up to `multipart_threshold`, not
    /// gzipped) skip the upload task and its channel, which would only add a hop between threads to the request.
    async fn store(&self, name: &str, content: Content, replace: bool, options: &SaveOptions) -> Result<String> {
        self.inner.check_save(name, options)?;
        let inner = &self.inner;
        let options = Arc::new(options.clone());
        let overwrite = replace || inner.options.file_overwrite;
        // A replace takes the name as it is.
        let name = inner.save_name(name, &options, !replace)?;
        let name = name.as_ref();
        let size = content.size_hint().await;
        let large = size.is_some_and(|size| size > inner.options.multipart_threshold);
        let plain = !inner.headers.gzips(&inner.key(name), &options);
        if large && plain && !replace && !inner.options.file_overwrite {
            // Content that can be read again goes straight to its name (see `publish_once`), where the server
            // checks conditional writes.
            let rereadable = match &content {
                Content::Bytes(bytes) => Some(upload::Rereadable::Bytes(bytes.clone())),
                Content::Path(path) => Some(upload::Rereadable::Path(path.clone())),
                _ => None,
            };
            if let (Some(rereadable), Some(size)) = (rereadable, size) {
                inner.ready().await?;
                let conditional = inner.conditional_writes().await.map_err(|f| f.into_error(inner, "save", name))?;
                if conditional {
                    return inner.publish_once(name, rereadable, size, &options).await;
                }
            }
        }
        match content {
            Content::Bytes(bytes) if (bytes.len() as u64) <= inner.options.multipart_threshold && plain => {
                inner.ready().await?;
                inner.publish_bytes(name, bytes.into(), overwrite, &options).await
            }
            content => {
                let mut writer = upload::writer(inner.clone(), name, size, replace, options);
                content.write_to(&mut writer, &inner.alias, name).await?;
                writer.commit().await
            }
        }
    }
}

/// The SSE-C headers of a customer key given as base64 of 32 bytes, and those of a copy's source; the error
/// never repeats the key.
fn customer_key_headers(key: &str) -> std::result::Result<(http::HeaderMap, http::HeaderMap), String> {
    use base64::Engine;
    use md5::Digest;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| "is not base64 (of a 32-byte key)".to_owned())?;
    if raw.len() != 32 {
        return Err(format!("is {} bytes once decoded; an SSE-C key is 32 bytes (base64 of them)", raw.len()));
    }
    let md5 = protocol::base64_encode(&md5::Md5::digest(&raw));
    let encoded = protocol::base64_encode(&raw);
    let headers = |prefix: &str| -> std::result::Result<http::HeaderMap, String> {
        let mut map = http::HeaderMap::new();
        for (suffix, value) in [("algorithm", "AES256"), ("key", encoded.as_str()), ("key-MD5", md5.as_str())] {
            let name =
                http::HeaderName::from_bytes(format!("{prefix}server-side-encryption-customer-{suffix}").as_bytes())
                    .map_err(|e| e.to_string())?;
            let mut value = http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        Ok(map)
    };
    Ok((headers("x-amz-")?, headers("x-amz-copy-source-")?))
}

impl Inner {
    fn key(&self, name: &str) -> String {
        match (self.prefix.as_str(), name) {
            ("", name) => name.into(),
            (prefix, "") => prefix.into(),
            (prefix, name) => format!("{prefix}/{name}"),
        }
    }

    /// A save of `name` with `options` can be made: the name is valid and the attributes make valid headers.
    fn check_save(&self, name: &str, options: &SaveOptions) -> Result<()> {
        self.check_user_name(name)?;
        ObjectHeaders::save_headers(options)
            .map(drop)
            .map_err(|message| Error::backend(&self.alias, "save", name, ErrorKind::InvalidInput, message))
    }

    /// The name a save (`fits`: not a replace, which takes its name as it is) starts from: with
    /// `file_overwrite`, `name` truncated in its stem to the save's `max_length`; else `name`, whose
    /// alternatives the publish tries.
    fn save_name<'a>(&self, name: &'a str, options: &SaveOptions, fits: bool) -> Result<Cow<'a, str>> {
        if !(fits && self.options.file_overwrite) {
            return Ok(Cow::Borrowed(name));
        }
        let policy = self.options.alternative_names;
        let fitted = options.candidates(&self.alias, name, policy, true)?.next().unwrap_or_else(|| name.into());
        self.check_user_name(&fitted)?;
        Ok(Cow::Owned(fitted))
    }

    /// `name` is a valid name and not under a prefix this backend keeps for itself.
    fn check_user_name(&self, name: &str) -> Result<()> {
        check_name(&self.alias, name)?;
        reserved(&self.alias, name)
    }

    /// `path` is a valid directory name (possibly empty) and not a reserved one.
    fn check_user_dir(&self, path: &str) -> Result<String> {
        let dir = check_dir(&self.alias, path)?;
        reserved(&self.alias, &dir)?;
        Ok(dir)
    }

    fn path(&self, name: &str, key: &str) -> Result<Path> {
        Path::parse(key).map_err(|e| Error::backend(&self.alias, "name", name, ErrorKind::InvalidInput, e.to_string()))
    }

    /// The bucket exists (checked once per storage).
    async fn ready(&self) -> Result<()> {
        self.bucket_checked.get_or_try_init(|| self.ensure_bucket()).await.map(|_| ())
    }

    /// An object_store error as a storage error naming the endpoint and bucket, never a secret, with its kind.
    fn error(&self, operation: &'static str, name: &str, error: object_store::Error) -> Error {
        use object_store::Error as Os;
        let (storage, name) = (self.alias.clone(), name.to_owned());
        let place = format!("{} (bucket '{}')", self.endpoint, self.options.bucket_name);
        let detail = storage_core::redact(&summarize(&bucket::error_chain(&error))).into_owned();
        let transport = transport_kind(&error);
        let (kind, message) = match &error {
            Os::NotFound { .. } => return Error::NotFound { storage, name },
            // A conditional create found the name taken.
            Os::AlreadyExists { .. } | Os::Precondition { .. } if operation == "save" => {
                return Error::AlreadyExists { storage, name };
            }
            Os::Precondition { .. } if operation == "read" => {
                (ErrorKind::Other, "the object changed since it was opened; open it again".to_owned())
            }
            Os::PermissionDenied { .. } if operation == "head" => (
                ErrorKind::PermissionDenied,
                format!(
                    "{place} refused HEAD with 403 Forbidden: credentials without s3:ListBucket permission get \
                     403 for a missing key, and wrong credentials get it for every key"
                ),
            ),
            Os::PermissionDenied { .. } => {
                (ErrorKind::PermissionDenied, format!("{place} refused the request: permission denied: {detail}"))
            }
            Os::Unauthenticated { .. } => {
                (ErrorKind::Unauthenticated, format!("{place} refused the credentials: {detail}"))
            }
            Os::NotSupported { .. } | Os::NotImplemented { .. } => {
                (ErrorKind::Unsupported, format!("{place}: {detail}"))
            }
            _ => match transport {
                Some(object_store::client::HttpErrorKind::Connect) => {
                    (ErrorKind::Unreachable, format!("cannot reach {place}: {detail}"))
                }
                Some(object_store::client::HttpErrorKind::Timeout) => {
                    (ErrorKind::Timeout, format!("{place}: {detail}"))
                }
                _ => (ErrorKind::Other, format!("{place}: {detail}")),
            },
        };
        // The source is not kept: its text may carry a server's echo of the request.
        use object_store::client::HttpErrorKind as Http;
        let cut_off = matches!(transport, Some(Http::Interrupted | Http::Request));
        let retryable = cut_off || matches!(kind, ErrorKind::Timeout | ErrorKind::Unreachable);
        Error::Backend { storage, operation, name, message, kind, retryable, source: None }
    }

    async fn head(&self, name: &str) -> Result<object_store::ObjectMeta> {
        self.check_user_name(name)?;
        self.ready().await?;
        let path = self.path(name, &self.key(name))?;
        self.well_formed("head", name, || self.store.head(&path), |meta| meta.e_tag.is_some()).await
    }

    /// The answer of `request` (a GET or HEAD by object_store) once it carries the object's ETag, which S3 always
    /// sends: object_store takes any 2xx answer for the object, also one a failing proxy made up (its error
    /// document would be read as the content). Such an answer is tried again like a failed attempt.
    async fn well_formed<T, F: std::future::Future<Output = object_store::Result<T>>>(
        &self,
        operation: &'static str,
        name: &str,
        request: impl Fn() -> F,
        has_etag: impl Fn(&T) -> bool,
    ) -> Result<T> {
        for attempt in 0..=self.options.max_retries {
            if attempt > 0 {
                tokio::time::sleep(protocol::backoff(attempt)).await;
            }
            let answer = request().await.map_err(|e| self.error(operation, name, e))?;
            if has_etag(&answer) {
                return Ok(answer);
            }
        }
        Err(Error::Backend {
            storage: self.alias.clone(),
            operation,
            name: name.into(),
            message: format!(
                "{} (bucket '{}') answered without the object's ETag, {} times: not an answer of S3 itself",
                self.endpoint,
                self.options.bucket_name,
                self.options.max_retries + 1
            ),
            kind: ErrorKind::Other,
            retryable: true,
            source: None,
        })
    }

    /// A presigned URL of `name` for `options`' method, valid for `expires_in`, with its response overrides and
    /// parameters signed.
    async fn presign(&self, name: &str, expires_in: Duration, options: &UrlOptions) -> Result<String> {
        if expires_in > Duration::from_secs(MAX_PRESIGN_SECONDS) {
            let message = format!("a presigned URL is valid at most 7 days ({MAX_PRESIGN_SECONDS} seconds)");
            return Err(Error::backend(&self.alias, "url", name, ErrorKind::InvalidInput, message));
        }
        let path = self.path(name, &self.key(name))?;
        let method = match options.method {
            UrlMethod::Get => ::http::Method::GET,
            UrlMethod::Head => ::http::Method::HEAD,
            UrlMethod::Put => ::http::Method::PUT,
        };
        let overrides = [
            ("response-content-disposition", &options.response_content_disposition),
            ("response-content-type", &options.response_content_type),
        ];
        let query: Vec<(String, String)> = overrides
            .into_iter()
            .filter_map(|(key, value)| value.as_ref().map(|value| (key.to_owned(), value.clone())))
            .chain(options.parameters.iter().cloned())
            .collect();
        let url = match query.is_empty() {
            true => self.store.signed_url(method, &path, expires_in).await,
            false => {
                let signed = object_store::signer::SignedUrlOptions::new().with_query(query);
                self.store.signed_url_opts(method, &path, expires_in, &signed).await
            }
        };
        match url {
            Ok(url) => Ok(url.to_string()),
            Err(error) => {
                // A missing credential is reported as such, not as the endpoint's failure.
                if let Err(missing) = self.store.credentials().get_credential().await {
                    let chain = storage_core::redact(&bucket::error_chain(&missing)).into_owned();
                    let message = format!(
                        "could not get credentials to sign the URL (no keys set: access_key and secret_key, \
                         AWS_ACCESS_KEY_ID, a session_profile, or the instance's): {chain}"
                    );
                    return Err(Error::backend(&self.alias, "url", name, ErrorKind::Unauthenticated, message));
                }
                Err(self.error("url", name, error))
            }
        }
    }

    /// `<url_protocol>//<custom_domain>`, with a custom domain.
    fn custom_base(&self) -> Option<String> {
        let domain = self.options.custom_domain.as_ref()?;
        Some(format!("{}//{domain}", self.options.url_protocol))
    }

    fn public_url(&self, name: &str) -> Option<String> {
        Some(join_url(&self.custom_base()?, &self.key(name)))
    }

    /// Refuses what an unsigned URL cannot carry: a method but GET, response overrides.
    fn unsigned(&self, name: &str, options: &UrlOptions, why: &str) -> Result<()> {
        if !options.needs_signature() {
            return Ok(());
        }
        let message = format!("{why}: it takes no HTTP method but GET and no response overrides");
        Err(Error::backend(&self.alias, "url", name, ErrorKind::InvalidInput, message))
    }
}

/// Refuses a name under the staging directory (such objects are hidden from listings, stored without the
/// storage's headers and expired by the recommended lifecycle rule) and the name of the record of MD5s.
fn reserved(storage: &str, name: &str) -> Result<()> {
    match name.split('/').next() == Some(upload::STAGING_DIR) || name == list::RECORD {
        true => Err(Error::SuspiciousName {
            storage: storage.into(),
            name: name.into(),
            rule: storage_core::NameRule::Reserved,
        }),
        false => Ok(()),
    }
}

/// The kind of the HTTP failure behind an object_store error, when no answer came.
fn transport_kind(error: &object_store::Error) -> Option<object_store::client::HttpErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        source = current.source();
    }
    None
}

/// How much of an error text that is no S3 error document is kept.
const SUMMARY_CHARS: usize = 300;

/// An error text with an S3 error document reduced to its `<Code>` and `<Message>`: the rest of such a document
/// (a canonical request, a string to sign) can echo request headers, a session token among them. Other text is
/// cut short. Either way the caller still scrubs it with [`storage_core::redact`].
fn summarize(text: &str) -> String {
    let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        // Not S3's document (a proxy's page, a JSON error): its start says enough.
        return match text.char_indices().nth(SUMMARY_CHARS) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_owned(),
        };
    };
    let mut summary = text[..start].trim_end().to_owned();
    if let Some(document) = protocol::ErrorDocument::parse(&text.as_bytes()[start..]) {
        for value in [document.code, document.message].into_iter().filter(|v| !v.is_empty()) {
            summary.push(' ');
            summary.push_str(&value);
        }
    }
    summary
}

#[async_trait]
impl Storage for S3Storage {
    fn alias(&self) -> &str {
        &self.inner.alias
    }

    fn capabilities(&self) -> Capabilities {
        let options = &self.inner.options;
        Capabilities {
            atomic_create: match options.conditional_writes {
                ConditionalWrites::On => true,
                ConditionalWrites::Off => false,
                // Assumed until the first save's probe finds out.
                ConditionalWrites::Auto => self.inner.conditional.get().copied().unwrap_or(true),
            },
            presigned_urls: options.querystring_auth
                && (options.custom_domain.is_none() || self.inner.cloudfront.is_some()),
            // An expiry asked for presigns even with querystring_auth off; a custom domain's URL expires only
            // when CloudFront signs it.
            expiring_urls: options.custom_domain.is_none()
                || (options.querystring_auth && self.inner.cloudfront.is_some()),
            metadata: true,
            manifest: false,
            directories: false,
        }
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.options.alternative_names
    }

    fn file_overwrite(&self) -> bool {
        self.inner.options.file_overwrite
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        self.inner.check_save(name, options)?;
        let name = self.inner.save_name(name, options, true)?;
        Ok(upload::writer(self.inner.clone(), &name, None, false, Arc::new(options.clone())))
    }

    /// One PutObject (or a multipart upload straight to the key): readers see the old object or the new one.
    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        self.store(name, content, true, &SaveOptions::default()).await.map(drop)
    }

    /// As the default, with the content's size (when known) sizing the parts of large uploads.
    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        self.store(name, content, false, options).await
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        self.inner.check_user_name(name)?;
        self.inner.ready().await?;
        let path = self.inner.path(name, &self.inner.key(name))?;
        let get = || self.inner.store.get_opts(&path, GetOptions::default());
        let result = self.inner.well_formed("open", name, get, |result| result.meta.e_tag.is_some()).await?;
        let encoding = result.attributes.get(&object_store::Attribute::ContentEncoding);
        let gzipped = encoding.is_some_and(|e| e.as_ref().trim().eq_ignore_ascii_case("gzip"));
        let source = read::S3Source {
            inner: self.inner.clone(),
            name: name.into(),
            gzipped,
            size: result.meta.size,
            etag: result.meta.e_tag.clone(),
            path,
            first: Mutex::new(Some(result.into_stream())),
        };
        Ok(StoredFile::new(&self.inner.alias, name, Arc::new(source)))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        match self.inner.head(name).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self.inner.head(name).await?.size)
    }

    /// One `DELETE /key`; deleting a missing file is `Ok`.
    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.check_user_name(name)?;
        self.inner.ready().await?;
        self.inner.delete_key(&self.inner.key(name)).await.map_err(|f| f.into_error(&self.inner, "delete", name))
    }

    /// Bulk deletes: one DeleteObjects request per 1,000 names, or single deletes where the service does not
    /// implement DeleteObjects.
    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        let mut valid = Vec::new();
        for name in names {
            match self.inner.check_user_name(name) {
                Ok(()) => valid.push(name.clone()),
                Err(error) => failed.push((name.clone(), error)),
            }
        }
        if let Err(error) = self.inner.ready().await {
            failed.extend(valid.into_iter().map(|name| (name, error.replay())));
            return failed;
        }
        failed.extend(self.inner.delete_names(&valid).await);
        failed
    }

    /// One listing with a delimiter (a request per 1,000 entries); keys that are no valid names are skipped.
    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let dir = self.inner.check_user_dir(path)?;
        self.inner.ready().await?;
        let listing = self.inner.list(&dir, false).await?;
        Ok((listing.dirs, listing.files.into_iter().map(|file| file_name(&file.name).to_owned()).collect()))
    }

    async fn url(&self, name: &str) -> Result<String> {
        self.url_with(name, &UrlOptions::new()).await
    }

    /// A custom domain's URL (unless CloudFront signs it), or with `querystring_auth` off the bucket's.
    fn url_prefix(&self) -> Option<String> {
        let inner = &self.inner;
        let signed = inner.options.querystring_auth;
        let base = match inner.custom_base() {
            Some(_) if signed && inner.cloudfront.is_some() => return None,
            Some(base) => base,
            None if signed => return None,
            None => inner.bucket_url.clone(),
        };
        Some(match inner.prefix.as_str() {
            "" => format!("{base}/"),
            prefix => join_url(&base, &format!("{prefix}/")),
        })
    }

    /// Presigned for `expires_in` (even with `querystring_auth` off); a custom domain's URL does not expire,
    /// unless CloudFront signs it (then for `expires_in`).
    async fn url_expiring(&self, name: &str, expires_in: Duration) -> Result<String> {
        self.url_with(name, &UrlOptions::new().expires_in(expires_in)).await
    }

    /// As django-storages' `url(name, parameters, expire, http_method)`. On a custom domain, the public URL with
    /// the parameters (and the names of directories, `""` and `path/`, as django-storages gives them). Else a
    /// presigned URL (with `querystring_auth`, or an expiry asked for) whose method, response overrides and
    /// parameters are signed; else the bucket's public URL with the parameters.
    async fn url_with(&self, name: &str, options: &UrlOptions) -> Result<String> {
        let inner = &self.inner;
        let expires_in = options.expires_in.unwrap_or(Duration::from_secs(inner.options.querystring_expire));
        let custom = if inner.options.custom_domain.is_some() && (name.is_empty() || name.ends_with('/')) {
            let dir = inner.check_user_dir(name)?;
            let url = inner.public_url(&dir).unwrap_or_default();
            Some(if dir.is_empty() || url.ends_with('/') { url } else { format!("{url}/") })
        } else {
            inner.check_user_name(name)?;
            inner.public_url(name)
        };
        if let Some(url) = custom {
            inner.unsigned(name, options, "a custom domain's URL is not signed by S3")?;
            let url = options.with_parameters(url);
            return match (&inner.cloudfront, inner.options.querystring_auth) {
                (Some(signer), true) => {
                    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    Ok(signer.sign(&url, now.as_secs().saturating_add(expires_in.as_secs())))
                }
                _ => Ok(url),
            };
        }
        if inner.options.querystring_auth || options.expires_in.is_some() {
            return inner.presign(name, expires_in, options).await;
        }
        inner.unsigned(name, options, "with querystring_auth off, the URL is not signed")?;
        Ok(options.with_parameters(join_url(&inner.bucket_url, &inner.key(name))))
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        Ok(self.inner.head(name).await?.last_modified.into())
    }

    /// One HEAD: size, modification time, ETag, content type, and the MD5 when the ETag is one (not for
    /// objects encrypted with KMS or a customer key, whose ETag is something else).
    async fn stat(&self, name: &str) -> Result<FileMeta> {
        self.inner.check_user_name(name)?;
        self.inner.ready().await?;
        let fail = |failure: protocol::Failure| failure.into_error(&self.inner, "head", name);
        let head = protocol::Request::new("HEAD", http_method::HEAD, self.inner.object_url(&self.inner.key(name)));
        let reply = self.inner.send(head).await.map_err(fail)?;
        if reply.status == 404 {
            return Err(Error::NotFound { storage: self.inner.alias.clone(), name: name.into() });
        }
        if !reply.ok() {
            return Err(fail(reply.failure("HEAD")));
        }
        let (size, modified) = (reply.content_length().unwrap_or(0), reply.last_modified());
        let mut meta = self.inner.file_meta(name.into(), size, modified, reply.header("etag").map(String::from));
        let keyed = reply.header("x-amz-server-side-encryption").is_some_and(|v| v.starts_with("aws:kms"))
            || reply.header("x-amz-server-side-encryption-customer-algorithm").is_some();
        if keyed {
            meta.md5 = None;
        }
        meta.content_type = reply.header("content-type").map(String::from);
        Ok(meta)
    }

    /// One paginated listing: a request per 1,000 objects, with each one's size, time, ETag and MD5. A listing
    /// that succeeds shows that the bucket exists, so the first one goes without the bucket check, which is made
    /// (and the listing repeated) only when the listing fails: a collectstatic rerun is its listing alone.
    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        let dir = self.inner.check_user_dir(path)?;
        let checked = self.inner.bucket_checked.initialized();
        match self.inner.list_files(&dir).await {
            Ok(files) => {
                let _ = self.inner.bucket_checked.set(());
                Ok(files)
            }
            Err(_) if !checked => {
                self.inner.ready().await?;
                self.inner.list_files(&dir).await
            }
            Err(error) => Err(error),
        }
    }

    /// From the listing alone: the ETag is the MD5 of an object stored in one request, and of a multipart object
    /// the MD5 of its parts' MD5s, which this backend's part sizes let us compute from `local`; a gzipped object's
    /// ETag is compared with the gzip of `local`, made as uploads make it. Where the listing shows no usable ETag,
    /// the MD5 comes from the storage's record (see [`Storage::record_md5s`]).
    async fn holds(&self, held: &FileMeta, local: Local<'_>, md5: &str, size: u64) -> Result<bool> {
        let etag = held.etag.as_deref().unwrap_or_default().trim_matches('"').to_ascii_lowercase();
        let local_error = |e: std::io::Error| Error::Content {
            storage: self.inner.alias.clone(),
            name: held.name.clone(),
            source: e,
        };
        if self.inner.headers.gzips(&self.inner.key(&held.name), &SaveOptions::default()) {
            // A recorded MD5 is that of the content stored (the object reads back decompressed).
            if held.md5.as_deref() == Some(md5) {
                return Ok(true);
            }
            let (gzipped_md5, gzipped_size) = digest::gzipped(local).await.map_err(local_error)?;
            return Ok(held.size == gzipped_size && etag == gzipped_md5);
        }
        if held.size != size {
            return Ok(false);
        }
        if held.md5.is_some() || !etag.contains('-') {
            return Ok(held.md5.as_deref() == Some(md5));
        }
        let options = &self.inner.options;
        let part_sizes = [protocol::copy_part_size(options, size), protocol::known_size_part(options, size)];
        let etags = digest::multipart_etags(local, &part_sizes).await.map_err(local_error)?;
        Ok(etags.contains(&etag))
    }

    async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        self.inner.ready().await?;
        self.inner.record_md5s(stored).await
    }

    /// Waits for the aborts and claim deletes of saves that were dropped halfway.
    async fn settle(&self) -> Vec<String> {
        self.inner.finish_cleanups().await
    }

    /// Deletes staging objects and claims, and aborts pending multipart uploads under the location, older than
    /// `options.older_than`; installs the lifecycle rules that do the same by themselves when asked.
    async fn cleanup(&self, options: &storage_core::Cleanup) -> Result<storage_core::Cleaned> {
        self.inner.ready().await?;
        self.inner.cleanup(options).await
    }

    fn request_counts(&self) -> Vec<(String, u64)> {
        let counts = self.inner.transport.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(kind, count)| (kind.to_string(), *count)).collect()
    }

    /// The requests to the bucket by kind, and the retries of this crate's own requests (object_store retries
    /// its reads itself: those show as more GETs and HEADs).
    fn metrics(&self) -> storage_core::Metrics {
        storage_core::Metrics {
            requests: self.request_counts().into_iter().collect(),
            retries: self.inner.retries.load(std::sync::atomic::Ordering::Relaxed),
            ..storage_core::Metrics::default()
        }
    }
}

/// The last segment of a name.
fn file_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
