//! The settings of `[storages.<alias>]` for `storages.backends.s3.S3Storage`, and the object headers they imply.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use storage_core::{AlternativeNames, SaveOptions, Secret};

/// Options of an S3 storage, named as in django-storages. Every option can also come from the django-storages
/// environment variable named beside it, which applies to every S3 storage that does not set the option itself.
///
/// ```toml
/// [storages.default]
/// backend = "storages.backends.s3.S3Storage"
/// bucket_name = "media"
/// endpoint_url = "http://127.0.0.1:9000"
/// auto_create_bucket = true
/// [storages.default.headers]
/// Cache-Control = "max-age=86400"
/// Expires = "Thu, 15 Apr 2010 20:00:00 GMT"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct S3Options {
    /// The access key id (`AWS_S3_ACCESS_KEY_ID`, `AWS_ACCESS_KEY_ID`); without one, the usual AWS chain
    /// (web identity, container and instance credentials) is asked.
    pub access_key: Option<String>,
    /// The secret access key (`AWS_S3_SECRET_ACCESS_KEY`, `AWS_SECRET_ACCESS_KEY`).
    pub secret_key: Option<Secret>,
    /// A session token for temporary credentials (`AWS_SESSION_TOKEN`, `AWS_SECURITY_TOKEN`).
    pub security_token: Option<Secret>,
    /// An AWS profile of `~/.aws/credentials` and `~/.aws/config` (`AWS_S3_SESSION_PROFILE`): its keys, session
    /// token, region (unless `region_name` is set) and endpoint (unless `endpoint_url` is set). It goes with no
    /// keys. Without keys or a profile, `$AWS_PROFILE` or the `default` profile is used when the files have it.
    pub session_profile: Option<String>,
    /// The bucket (`AWS_STORAGE_BUCKET_NAME`); required.
    pub bucket_name: String,
    /// The region (`AWS_S3_REGION_NAME`, `AWS_DEFAULT_REGION`), default `us-east-1`.
    pub region_name: String,
    /// The endpoint of an S3-compatible service (`AWS_S3_ENDPOINT_URL`); `http://` endpoints are allowed.
    pub endpoint_url: Option<String>,
    /// `path` or `virtual` (`AWS_S3_ADDRESSING_STYLE`); by default `path` with an `endpoint_url`, else `virtual`.
    pub addressing_style: Option<AddressingStyle>,
    /// A key prefix every name lives under (`AWS_LOCATION`); names can never leave it.
    pub location: String,
    /// Create the bucket when it does not exist (`AWS_AUTO_CREATE_BUCKET`).
    pub auto_create_bucket: bool,
    /// HTTP headers sent with every saved object (`AWS_HEADERS`): `Cache-Control`, `Content-Disposition`,
    /// `Content-Encoding`, `Content-Language`, `Content-Type`, `Expires`, `x-amz-meta-*`, `x-amz-storage-class`.
    #[serde(deserialize_with = "table_or_json")]
    pub headers: BTreeMap<String, String>,
    /// Object parameters (`AWS_S3_OBJECT_PARAMETERS`), by boto3's names (`CacheControl`, `ContentDisposition`,
    /// `ACL`, `StorageClass`, `ServerSideEncryption`, `SSEKMSKeyId`, `Metadata = { key = "value" }`, ...; see
    /// [`BOTO3_PARAMETERS`]) or by the header names `headers` takes; merged with `headers`, winning on conflicts.
    /// A `Metadata` table is kept as its `x-amz-meta-*` headers.
    #[serde(deserialize_with = "table_or_json")]
    pub object_parameters: BTreeMap<String, String>,
    /// A canned ACL for saved objects, e.g. `public-read` (`AWS_DEFAULT_ACL`); none by default. An `ACL` in
    /// `object_parameters` wins, as in django-storages.
    pub default_acl: Option<String>,
    /// Server-side encryption of saved objects: `AES256` or `aws:kms` (`AWS_S3_SERVER_SIDE_ENCRYPTION`); a
    /// `ServerSideEncryption` object parameter wins.
    pub server_side_encryption: Option<String>,
    /// The KMS key of `aws:kms` encryption (`AWS_S3_SSE_KMS_KEY_ID`); an `SSEKMSKeyId` object parameter wins.
    pub sse_kms_key_id: Option<String>,
    /// A customer-provided key (SSE-C, `AWS_S3_SSE_CUSTOMER_KEY`): base64 of 32 bytes. Objects are encrypted
    /// with it, and every write and read of them (`open`, `exists`, `size`, `stat`) sends it, as S3 requires;
    /// an object can be read back only with the same key.
    pub sse_customer_key: Option<Secret>,
    /// Whether `url()` is presigned (`AWS_QUERYSTRING_AUTH`), default true.
    pub querystring_auth: bool,
    /// Seconds a presigned URL stays valid (`AWS_QUERYSTRING_EXPIRE`), default 3600.
    pub querystring_expire: u64,
    /// A domain for public, unsigned URLs, e.g. a CDN (`AWS_S3_CUSTOM_DOMAIN`).
    pub custom_domain: Option<String>,
    /// The scheme of custom-domain URLs (`AWS_S3_URL_PROTOCOL`), default `https:`.
    pub url_protocol: String,
    /// The id of a CloudFront key pair (`AWS_CLOUDFRONT_KEY_ID`): with `cloudfront_key`, a custom domain and
    /// `querystring_auth`, URLs are signed for CloudFront with a canned policy.
    pub cloudfront_key_id: Option<String>,
    /// The PEM private key of `cloudfront_key_id` (`AWS_CLOUDFRONT_KEY`); the two go together.
    pub cloudfront_key: Option<Secret>,
    /// Whether a save replaces an existing object (`AWS_S3_FILE_OVERWRITE`), default false.
    pub file_overwrite: bool,
    /// How alternative names are picked when a name is taken.
    pub alternative_names: AlternativeNames,
    /// Gzip objects whose content type is in `gzip_content_types` (`AWS_IS_GZIPPED`).
    pub gzip: bool,
    /// The content types `gzip` applies to (`GZIP_CONTENT_TYPES`), a list or a comma-separated string.
    #[serde(deserialize_with = "list_or_commas")]
    pub gzip_content_types: Vec<String>,
    /// Retries of a failed request, default 3.
    pub max_retries: usize,
    /// Seconds after which a failing request is not retried any more, default 30.
    pub retry_timeout: f64,
    /// Seconds to wait for a connection, default 5.
    pub connect_timeout: f64,
    /// Seconds a request may go without sending or receiving a byte before it fails as stalled, default 60
    /// (`0`: no limit). This is not a limit on the whole request: a slow transfer that makes progress never
    /// times out. It also bounds the wait for an answer once a request is sent (a CompleteMultipartUpload of
    /// many GiB takes a while on some servers); a request that times out is retried within `retry_timeout`.
    pub request_timeout: f64,
    /// Whether the service checks `If-None-Match: *` on writes: `auto` (default: found out once per storage, by
    /// writing a scratch object twice), `on` or `off`. Without it, saves look for a free name with HEAD first
    /// (not atomic: concurrent saves of one name can then replace each other, and the storage says so in
    /// [`Capabilities::atomic_create`](storage_core::Capabilities)).
    pub conditional_writes: ConditionalWrites,
    /// The instance metadata service (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), default `http://169.254.169.254`:
    /// where instance credentials come from when no keys are set.
    pub metadata_endpoint: Option<String>,
    /// An HTTP proxy for every request (`AWS_S3_PROXY_URL`), e.g. `http://proxy.internal:3128`.
    pub proxy_url: Option<String>,
    /// The integrity header sent with uploaded bodies: `none`, `md5` (default), `crc32` or `sha256`.
    pub checksum: ChecksumMode,
    /// Content larger than this many bytes is uploaded in parts, default 8 MiB.
    pub multipart_threshold: u64,
    /// The size of each part, default 8 MiB (at least 5 MiB, as S3 requires).
    pub multipart_chunksize: u64,
    /// Parts uploaded at once while the next one fills, or ranges read ahead of the one being read; default 4.
    /// Memory use is about `multipart_chunksize * (max_concurrency + 1)` either way.
    pub max_concurrency: usize,
    /// An object of at least this many bytes, read whole (`read_all`, `chunks`, `get`), is fetched as ranged GETs
    /// of `multipart_chunksize`, `max_concurrency` of them ahead of the one being read, and yielded in order;
    /// default 8 MiB, as boto3's transfer manager. `0` reads every object as one stream.
    pub parallel_read_threshold: u64,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            access_key: None,
            secret_key: None,
            security_token: None,
            session_profile: None,
            bucket_name: String::new(),
            region_name: "us-east-1".into(),
            endpoint_url: None,
            addressing_style: None,
            location: String::new(),
            auto_create_bucket: false,
            headers: BTreeMap::new(),
            object_parameters: BTreeMap::new(),
            default_acl: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            sse_customer_key: None,
            querystring_auth: true,
            querystring_expire: 3600,
            custom_domain: None,
            url_protocol: "https:".into(),
            cloudfront_key_id: None,
            cloudfront_key: None,
            file_overwrite: false,
            alternative_names: AlternativeNames::default(),
            gzip: false,
            gzip_content_types: [
                "text/css",
                "text/javascript",
                "application/javascript",
                "application/x-javascript",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            max_retries: 3,
            retry_timeout: 30.0,
            connect_timeout: 5.0,
            request_timeout: 60.0,
            conditional_writes: ConditionalWrites::Auto,
            metadata_endpoint: None,
            proxy_url: None,
            checksum: ChecksumMode::Md5,
            multipart_threshold: 8 * 1024 * 1024,
            multipart_chunksize: 8 * 1024 * 1024,
            max_concurrency: 4,
            parallel_read_threshold: 8 * 1024 * 1024,
        }
    }
}

/// The django-storages environment variables of S3 options, `(VAR, option)`; earlier ones win.
pub(crate) const ENV: &[(&str, &str)] = &[
    ("AWS_S3_ACCESS_KEY_ID", "access_key"),
    ("AWS_ACCESS_KEY_ID", "access_key"),
    ("AWS_S3_SECRET_ACCESS_KEY", "secret_key"),
    ("AWS_SECRET_ACCESS_KEY", "secret_key"),
    ("AWS_SESSION_TOKEN", "security_token"),
    ("AWS_S3_SESSION_PROFILE", "session_profile"),
    ("AWS_SECURITY_TOKEN", "security_token"),
    ("AWS_STORAGE_BUCKET_NAME", "bucket_name"),
    ("AWS_S3_REGION_NAME", "region_name"),
    ("AWS_DEFAULT_REGION", "region_name"),
    ("AWS_S3_ENDPOINT_URL", "endpoint_url"),
    ("AWS_S3_ADDRESSING_STYLE", "addressing_style"),
    ("AWS_LOCATION", "location"),
    ("AWS_AUTO_CREATE_BUCKET", "auto_create_bucket"),
    ("AWS_HEADERS", "headers"),
    ("AWS_S3_OBJECT_PARAMETERS", "object_parameters"),
    ("AWS_DEFAULT_ACL", "default_acl"),
    ("AWS_S3_SERVER_SIDE_ENCRYPTION", "server_side_encryption"),
    ("AWS_S3_SSE_KMS_KEY_ID", "sse_kms_key_id"),
    ("AWS_S3_SSE_CUSTOMER_KEY", "sse_customer_key"),
    ("AWS_QUERYSTRING_AUTH", "querystring_auth"),
    ("AWS_QUERYSTRING_EXPIRE", "querystring_expire"),
    ("AWS_S3_CUSTOM_DOMAIN", "custom_domain"),
    ("AWS_S3_URL_PROTOCOL", "url_protocol"),
    ("AWS_CLOUDFRONT_KEY_ID", "cloudfront_key_id"),
    ("AWS_CLOUDFRONT_KEY", "cloudfront_key"),
    ("AWS_S3_FILE_OVERWRITE", "file_overwrite"),
    ("AWS_IS_GZIPPED", "gzip"),
    ("GZIP_CONTENT_TYPES", "gzip_content_types"),
    ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "metadata_endpoint"),
    ("AWS_S3_PROXY_URL", "proxy_url"),
];

/// Whether a service checks `If-None-Match: *` (see [`S3Options::conditional_writes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionalWrites {
    /// Found out once per storage.
    Auto,
    /// The service checks it (AWS S3, MinIO, moto).
    On,
    /// The service ignores it: names are checked with HEAD before writing.
    Off,
}

/// How requests name the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// The integrity header sent with each uploaded body, checked by the server before it stores anything.
///
/// Every S3-compatible service accepts the default, `md5` (`Content-MD5`, part of S3 since its first day).
/// `crc32` sends `x-amz-checksum-crc32` instead; `sha256` uses S3's flexible checksums for every request, parts
/// included, and needs a service that supports them. These headers go with single-request uploads. Every
/// request, parts included and whatever the mode, is also signed with the SHA-256 of its body
/// (`x-amz-content-sha256`), which S3 checks: that is what protects the parts of `md5` and `crc32` uploads.
/// A bucket with Object Lock refuses parts without a checksum header: use `sha256` there, which costs nothing
/// more (the digest that signs a part is its checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumMode {
    /// No integrity header.
    None,
    /// `Content-MD5`.
    Md5,
    /// `x-amz-checksum-crc32`.
    Crc32,
    /// `x-amz-checksum-sha256`.
    Sha256,
}

/// A table, or a string holding a JSON object (how `AWS_HEADERS` arrives from the environment).
fn table_or_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Table;
    impl<'de> serde::de::Visitor<'de> for Table {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of header names to values (`[storages.<alias>.headers]`), or a JSON object as text")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut table = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, Parameter>()? {
                flatten(&mut table, name, value).map_err(serde::de::Error::custom)?;
            }
            Ok(table)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            let parsed: BTreeMap<String, Parameter> = serde_json::from_str(text)
                .map_err(|e| E::custom(format!("expected a table, or a JSON object of header names to values: {e}")))?;
            let mut table = BTreeMap::new();
            for (name, value) in parsed {
                flatten(&mut table, name, value).map_err(E::custom)?;
            }
            Ok(table)
        }
    }
    deserializer.deserialize_any(Table)
}

/// A value of `headers` or `object_parameters`: text, or (for `Metadata`) a table of metadata.
enum Parameter {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for Parameter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Value;
        impl<'de> serde::de::Visitor<'de> for Value {
            type Value = Parameter;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("text (or, for `Metadata`, a table of metadata keys to text)")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Parameter, E> {
                Ok(Parameter::Text(text.to_owned()))
            }

            // `BucketKeyEnabled = true`, as boto3 users write it: a header's text.
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Parameter, E> {
                Ok(Parameter::Text(value.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Parameter, E> {
                Ok(Parameter::Text(value.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Parameter, E> {
                Ok(Parameter::Text(value.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parameter, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    table.insert(key, value);
                }
                Ok(Parameter::Table(table))
            }
        }
        deserializer.deserialize_any(Value)
    }
}

/// Adds `name = value` to `table`; a `Metadata` table becomes its `x-amz-meta-<key>` entries.
fn flatten(table: &mut BTreeMap<String, String>, name: String, value: Parameter) -> Result<(), String> {
    match value {
        Parameter::Text(_) if name.eq_ignore_ascii_case("metadata") => {
            return Err("`Metadata` takes a table of metadata keys to text, as `Metadata = { key = \"value\" }`".into());
        }
        Parameter::Text(text) => {
            table.insert(name, text);
        }
        Parameter::Table(metadata) if name.eq_ignore_ascii_case("metadata") => {
            table.extend(metadata.into_iter().map(|(key, value)| (format!("x-amz-meta-{key}"), value)));
        }
        Parameter::Table(_) => return Err(format!("`{name}` takes text; only `Metadata` takes a table")),
    }
    Ok(())
}

/// boto3's names of object parameters (`AWS_S3_OBJECT_PARAMETERS`, s3transfer's upload arguments) and the
/// headers they are sent as. `Metadata` is a table of `x-amz-meta-*` headers.
pub const BOTO3_PARAMETERS: &[(&str, &str)] = &[
    ("ACL", "x-amz-acl"),
    ("CacheControl", "cache-control"),
    ("ContentDisposition", "content-disposition"),
    ("ContentEncoding", "content-encoding"),
    ("ContentLanguage", "content-language"),
    ("ContentType", "content-type"),
    ("Expires", "expires"),
    ("GrantFullControl", "x-amz-grant-full-control"),
    ("GrantRead", "x-amz-grant-read"),
    ("GrantReadACP", "x-amz-grant-read-acp"),
    ("GrantWriteACP", "x-amz-grant-write-acp"),
    ("ServerSideEncryption", "x-amz-server-side-encryption"),
    ("SSEKMSKeyId", "x-amz-server-side-encryption-aws-kms-key-id"),
    ("SSEKMSEncryptionContext", "x-amz-server-side-encryption-context"),
    ("BucketKeyEnabled", "x-amz-server-side-encryption-bucket-key-enabled"),
    ("StorageClass", "x-amz-storage-class"),
    ("Tagging", "x-amz-tagging"),
    ("WebsiteRedirectLocation", "x-amz-website-redirect-location"),
    ("ObjectLockMode", "x-amz-object-lock-mode"),
    ("ObjectLockRetainUntilDate", "x-amz-object-lock-retain-until-date"),
    ("ObjectLockLegalHoldStatus", "x-amz-object-lock-legal-hold"),
];

/// A list, or a comma-separated string (how `GZIP_CONTENT_TYPES` arrives from the environment).
fn list_or_commas<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings, or one string of comma-separated items")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        }
    }
    deserializer.deserialize_any(List)
}

/// The headers every object of a storage is created with, and how its content type is found.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHeaders {
    /// `headers` merged with `object_parameters` and `default_acl`; `Content-Type` and `Content-Encoding` apart.
    fixed: HeaderMap,
    content_type: Option<HeaderValue>,
    content_encoding: Option<HeaderValue>,
    gzip_types: Option<Vec<String>>,
}

impl ObjectHeaders {
    /// Checks and merges the header settings: `default_acl`, then `headers`, then `object_parameters`, later ones
    /// winning. The error gives the setting and a sentence naming the offending header.
    pub(crate) fn new(options: &S3Options) -> Result<Self, (&'static str, String)> {
        let mut fixed = HeaderMap::new();
        let mut content_type = None;
        let mut content_encoding = None;
        let setting_headers = |setting: &'static str, header: &str, value: &Option<String>| {
            value.iter().map(move |value| (setting, header.to_owned(), value.clone())).collect::<Vec<_>>()
        };
        let mut entries = setting_headers("default_acl", "x-amz-acl", &options.default_acl);
        let encryption = &options.server_side_encryption;
        entries.extend(setting_headers("server_side_encryption", "x-amz-server-side-encryption", encryption));
        let kms_key = "x-amz-server-side-encryption-aws-kms-key-id";
        entries.extend(setting_headers("sse_kms_key_id", kms_key, &options.sse_kms_key_id));
        entries.extend(options.headers.iter().map(|(k, v)| ("headers", k.clone(), v.clone())));
        entries.extend(options.object_parameters.iter().map(|(k, v)| ("object_parameters", k.clone(), v.clone())));
        for (setting, name, value) in &entries {
            let (setting, value) = (*setting, value.as_str());
            let boto3 = BOTO3_PARAMETERS.iter().find(|(boto3, _)| boto3 == name).map(|(_, header)| *header);
            let lower = boto3.map_or_else(|| name.to_ascii_lowercase(), str::to_owned);
            let allowed = BOTO3_PARAMETERS.iter().any(|(_, header)| *header == lower);
            if !allowed && !lower.starts_with("x-amz-meta-") {
                let names: Vec<&str> = BOTO3_PARAMETERS.iter().map(|(boto3, _)| *boto3).collect();
                return Err((
                    setting,
                    format!(
                        "`{name}` cannot be stored with an object; allowed: {}, Metadata (or their header names, \
                         x-amz-meta-*)",
                        names.join(", ")
                    ),
                ));
            }
            let encryptions = ["AES256", "aws:kms", "aws:kms:dsse"];
            if lower == "x-amz-server-side-encryption" && !encryptions.contains(&value) {
                return Err((
                    setting,
                    format!("server-side encryption {value:?} is none of {}", encryptions.join(", ")),
                ));
            }
            let header = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|e| (setting, format!("header name `{name}`: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| (setting, format!("value of header `{name}`: {e}")))?;
            match lower.as_str() {
                "content-type" => content_type = Some(value),
                "content-encoding" => content_encoding = Some(value),
                _ => {
                    fixed.insert(header, value);
                }
            }
        }
        let gzip_types = options.gzip.then(|| options.gzip_content_types.clone());
        Ok(ObjectHeaders { fixed, content_type, content_encoding, gzip_types })
    }

    /// The content type of `key` saved with `save`: the save's own, the configured one, or a guess from its
    /// extension.
    pub(crate) fn content_type(&self, key: &str, save: &SaveOptions) -> HeaderValue {
        if let Some(value) = save.content_type.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            return value;
        }
        self.content_type.clone().unwrap_or_else(|| {
            HeaderValue::from_str(&storage_core::guess_content_type(key))
                .unwrap_or(HeaderValue::from_static("application/octet-stream"))
        })
    }

    /// Whether the content of `key` saved with `save` is gzipped before upload: never when the save declares
    /// its own content encoding (as in django-storages).
    pub(crate) fn gzips(&self, key: &str, save: &SaveOptions) -> bool {
        let Some(types) = &self.gzip_types else { return false };
        if save.content_encoding.is_some() || self.content_encoding.is_some() {
            return false;
        }
        let content_type = self.content_type(key, save);
        types.iter().any(|t| t.as_bytes() == content_type.as_bytes())
    }

    /// Whether objects are created encrypted with a KMS key (`aws:kms`, `aws:kms:dsse`), whose ETag is not the
    /// MD5 of their content.
    pub(crate) fn kms_encrypted(&self) -> bool {
        self.fixed.get("x-amz-server-side-encryption").is_some_and(|value| value.as_bytes().starts_with(b"aws:kms"))
    }

    /// The headers of a save's own attributes, each checked: the error names the attribute.
    pub(crate) fn save_headers(save: &SaveOptions) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let values = [
            ("content type", http::header::CONTENT_TYPE, &save.content_type),
            ("content disposition", http::header::CONTENT_DISPOSITION, &save.content_disposition),
            ("cache control", http::header::CACHE_CONTROL, &save.cache_control),
            ("content encoding", http::header::CONTENT_ENCODING, &save.content_encoding),
        ];
        for (what, name, value) in values {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("the {what} {value:?} is not a valid header value"))?;
                headers.insert(name, value);
            }
        }
        for (key, value) in &save.metadata {
            let name = HeaderName::from_bytes(format!("x-amz-meta-{}", key.to_ascii_lowercase()).as_bytes())
                .map_err(|_| format!("the metadata key {key:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the metadata value of {key:?} is not a valid header value"))?;
            headers.insert(name, value);
        }
        Ok(headers)
    }

    /// Every header an object stored under `key` by a save with `save` is created with: the save's attributes
    /// win over the storage's headers (checked before by [`ObjectHeaders::save_headers`]).
    pub(crate) fn for_save(&self, key: &str, save: &SaveOptions) -> HeaderMap {
        let mut headers = self.fixed.clone();
        headers.insert(http::header::CONTENT_TYPE, self.content_type(key, save));
        if self.gzips(key, save) {
            headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        } else if let Some(encoding) = &self.content_encoding {
            headers.insert(http::header::CONTENT_ENCODING, encoding.clone());
        }
        headers.extend(Self::save_headers(save).unwrap_or_default());
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boto3_parameter_names_and_metadata_tables_are_headers_with_djangos_precedence() {
        use figment::providers::{Format, Toml};
        let settings = r#"
            default_acl = "public-read"
            server_side_encryption = "aws:kms"
            sse_kms_key_id = "alias/settings"
            [object_parameters]
            CacheControl = "max-age=60"
            ACL = "private"
            StorageClass = "REDUCED_REDUNDANCY"
            SSEKMSKeyId = "alias/parameters"
            ContentDisposition = "attachment"
            Metadata = { reviewed-by = "ada", team = "web" }
        "#;
        let options: S3Options = figment::Figment::new().merge(Toml::string(settings)).extract().expect("settings");
        let headers = ObjectHeaders::new(&options).expect("headers").for_save("a.txt", &SaveOptions::default());
        assert_eq!(headers["x-amz-acl"], "private", "object parameters win over default_acl");
        assert_eq!(headers["cache-control"], "max-age=60");
        assert_eq!(headers["x-amz-storage-class"], "REDUCED_REDUNDANCY");
        assert_eq!(headers["x-amz-server-side-encryption"], "aws:kms");
        assert_eq!(headers["x-amz-server-side-encryption-aws-kms-key-id"], "alias/parameters");
        assert_eq!(headers["content-disposition"], "attachment");
        assert_eq!(headers["x-amz-meta-reviewed-by"], "ada");
        assert_eq!(headers["x-amz-meta-team"], "web");
        assert_eq!(headers["content-type"], "text/plain");

        // The environment's JSON, as django-storages users write AWS_S3_OBJECT_PARAMETERS.
        let json = r#"{"CacheControl": "no-cache", "Metadata": {"k": "v"}, "ServerSideEncryption": "AES256"}"#;
        let options: S3Options = figment::Figment::new()
            .merge(figment::providers::Serialized::default("object_parameters", json))
            .extract()
            .expect("JSON object parameters");
        let headers = ObjectHeaders::new(&options).expect("headers").for_save("a.txt", &SaveOptions::default());
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-amz-meta-k"], "v");
        assert_eq!(headers["x-amz-server-side-encryption"], "AES256");

        let bad = |parameters: &[(&str, &str)], encryption: Option<&str>| {
            let options = S3Options {
                object_parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                server_side_encryption: encryption.map(String::from),
                ..S3Options::default()
            };
            ObjectHeaders::new(&options).expect_err("refused")
        };
        let (setting, message) = bad(&[("Bucket", "x")], None);
        assert_eq!(setting, "object_parameters");
        assert!(message.contains("`Bucket` cannot be stored") && message.contains("StorageClass"), "{message}");
        for (toml, says) in [
            ("Metadata = \"oops\"", "`Metadata` takes a table of metadata keys to text"),
            ("ACL = [1]", "expected text (or, for `Metadata`, a table"),
        ] {
            let settings = format!("[object_parameters]\n{toml}\n");
            let error = figment::Figment::new().merge(Toml::string(&settings)).extract::<S3Options>().expect_err(toml);
            assert!(error.to_string().contains(says), "{toml}: {error}");
        }
        let settings = "[object_parameters]\nBucketKeyEnabled = true\nExpires = 3600\n";
        let options: S3Options = figment::Figment::new().merge(Toml::string(settings)).extract().expect("booleans");
        assert_eq!(options.object_parameters["BucketKeyEnabled"], "true");
        let (setting, message) = bad(&[], Some("rot13"));
        assert_eq!(setting, "server_side_encryption");
        assert!(message.contains("\"rot13\" is none of AES256, aws:kms"), "{message}");
    }

    #[test]
    fn headers_merge_with_object_parameters_winning() {
        let options = S3Options {
            headers: [("Cache-Control", "max-age=1"), ("Expires", "Thu, 15 Apr 2010 20:00:00 GMT")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            object_parameters: [("cache-control", "max-age=2"), ("x-amz-meta-Owner", "me"), ("x-amz-acl", "private")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            default_acl: Some("public-read".into()),
            ..S3Options::default()
        };
        let headers = ObjectHeaders::new(&options).unwrap().for_save("css/style.css", &SaveOptions::default());
        assert_eq!(headers["cache-control"], "max-age=2");
        assert_eq!(headers["expires"], "Thu, 15 Apr 2010 20:00:00 GMT");
        assert_eq!(headers["x-amz-meta-owner"], "me");
        assert_eq!(headers["x-amz-acl"], "private", "object_parameters win over default_acl");
        assert_eq!(headers["content-type"], "text/css");
        assert!(headers.get("content-encoding").is_none());
    }

    #[test]
    fn headers_and_lists_take_both_forms_and_name_what_is_wrong() {
        let parse = |json: &str| serde_json::from_str::<S3Options>(json).map_err(|e| e.to_string());
        let table = parse(r#"{"headers": {"Cache-Control": "max-age=1"}}"#).unwrap();
        let text = parse(r#"{"headers": "{\"Cache-Control\": \"max-age=1\"}"}"#).unwrap();
        assert_eq!(table.headers, text.headers);
        assert_eq!(table.headers["Cache-Control"], "max-age=1");
        for bad in [r#"{"headers": 3}"#, r#"{"headers": ["a"]}"#] {
            let message = parse(bad).unwrap_err();
            assert!(message.contains("expected a table of header names to values"), "{bad}: {message}");
        }
        let list = parse(r#"{"gzip_content_types": "text/css, text/javascript"}"#).unwrap();
        assert_eq!(list.gzip_content_types, ["text/css", "text/javascript"]);
        let message = parse(r#"{"gzip_content_types": 3}"#).unwrap_err();
        assert!(message.contains("expected a list of strings, or one string"), "{message}");
    }

    #[test]
    fn gzip_applies_by_content_type() {
        let options = S3Options { gzip: true, ..S3Options::default() };
        let headers = ObjectHeaders::new(&options).unwrap();
        assert!(
            headers.gzips("app.js", &SaveOptions::default()) && headers.gzips("a/style.css", &SaveOptions::default())
        );
        assert!(!headers.gzips("photo.jpg", &SaveOptions::default()));
        assert_eq!(headers.for_save("style.css", &SaveOptions::default())["content-encoding"], "gzip");
    }

    #[test]
    fn unknown_headers_are_named() {
        let options =
            S3Options { headers: [("X-Frame-Options".to_string(), "deny".to_string())].into(), ..S3Options::default() };
        let (setting, error) = ObjectHeaders::new(&options).unwrap_err();
        assert_eq!(setting, "headers");
        assert!(error.contains("`X-Frame-Options`"), "{error}");
    }
}
