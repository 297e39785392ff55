//! Listings with ListObjectsV2, read by this crate: keys come URL-encoded (`encoding-type=url`, so that any key
//! survives XML), and a key that is no valid name (`a//b`, a `..` segment, a control character, written by another
//! tool) is skipped with a warning instead of failing the listing. Folder markers (`css/`) are not files.
//!
//! A listing shows an object's MD5 only where its ETag is one. For the others (a server whose listings carry no
//! ETag, as s3s-fs; multipart objects), the storage keeps a record, one JSON object
//! named by a single space at the storage's root (see [`RECORD`]), of the MD5s callers stored
//! ([`Storage::record_md5s`](storage_core::Storage::record_md5s)). An entry is made only for an object this
//! storage stored, as a HEAD shows (its save token, and the listed size, ETag and time), and trusted only while
//! the listing shows the object as it was when recorded. Anyone who writes the object changes its modification
//! time, and almost always its ETag; only a writer that keeps the size and lands in the same
//! millisecond-or-second (as the server lists it) on a server without ETags could go unseen. (A recorded MD5 is
//! that of the content as read back: of a gzipped object, the decompressed bytes.)

use crate::Inner;
use crate::protocol::{Failure, Request, encode_query, parse};
use futures::StreamExt;
use http::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;
use storage_core::{FileMeta, Result, validate_name};

/// The name of the record of MD5s, at the storage's root: a single space, reserved. No valid name sorts before
/// it (a name holds no control character, and every other name starting with a space is longer), so a listing
/// of the root that starts after it skips the record and nothing else: the record takes no place in the
/// listing's pages (2,000 files stay 2 requests). (Keys another tool wrote that start with a control character,
/// which are no valid names, are then not seen at all, rather than skipped with a warning.) Not under the staging directory, whose objects the
/// recommended lifecycle rule expires after a day. The object says what it is in its metadata.
pub(crate) const RECORD: &str = " ";

/// The record of MD5s the listing cannot show, by name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Md5Record {
    files: BTreeMap<String, Recorded>,
}

/// One file's MD5 and the version of the object it was recorded for, as the listing showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    md5: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    /// The listed modification time, in milliseconds since 1970.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified_ms: Option<i64>,
}

impl Recorded {
    fn of(listed: &FileMeta, md5: String) -> Self {
        Recorded { md5, size: listed.size, etag: listed.etag.clone(), modified_ms: listed.modified.map(millis) }
    }

    /// Whether `listed` is the object this entry was made for.
    fn describes(&self, listed: &FileMeta) -> bool {
        self.size == listed.size
            && self.etag == listed.etag
            && self.modified_ms.is_some()
            && self.modified_ms == listed.modified.map(millis)
    }
}

fn millis(time: SystemTime) -> i64 {
    chrono::DateTime::<chrono::Utc>::from(time).timestamp_millis()
}

/// One page of ListObjectsV2.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListBucketResult {
    #[serde(default)]
    pub(crate) is_truncated: bool,
    /// `url` when the keys are URL-encoded (a service may ignore the request for it).
    encoding_type: Option<String>,
    pub(crate) next_continuation_token: Option<String>,
    #[serde(rename = "Contents", default)]
    pub(crate) contents: Vec<Object>,
    #[serde(rename = "CommonPrefixes", default)]
    common_prefixes: Vec<CommonPrefix>,
}

impl ListBucketResult {
    /// A listed key as stored (decoded where the service URL-encoded it).
    pub(crate) fn key(&self, object: &Object) -> String {
        self.decoded(&object.key)
    }

    fn decoded(&self, listed: &str) -> String {
        if self.encoding_type.as_deref() == Some("url") { decode(listed) } else { listed.to_owned() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Object {
    key: String,
    last_modified: Option<String>,
    #[serde(rename = "ETag")]
    etag: Option<String>,
    #[serde(default)]
    size: u64,
}

impl Object {
    /// When the object was last written, as listed.
    pub(crate) fn modified(&self) -> Option<SystemTime> {
        let time = chrono::DateTime::parse_from_rfc3339(self.last_modified.as_deref()?).ok()?;
        Some(SystemTime::from(time))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommonPrefix {
    prefix: String,
}

/// A listing: files with their metadata, and with a delimiter the subdirectories.
pub(crate) struct Listing {
    pub(crate) files: Vec<FileMeta>,
    pub(crate) dirs: Vec<String>,
}

impl Inner {
    /// Everything under the directory `dir` (a checked name, `""` for the root): with `recursive`, every file in
    /// it and below; without, its files and its subdirectories' names.
    pub(crate) async fn list(&self, dir: &str, recursive: bool) -> Result<Listing> {
        let fail = |failure: Failure| failure.into_error(self, "list", dir);
        let root = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let prefix = match self.key(dir) {
            key if key.is_empty() => key,
            key => format!("{key}/"),
        };
        let mut listing = Listing { files: Vec::new(), dirs: Vec::new() };
        let mut token: Option<String> = None;
        loop {
            let after = match (&token, dir.is_empty()) {
                (None, true) => Some(self.record_key()),
                _ => None,
            };
            let mut page =
                self.list_page(&prefix, !recursive, after.as_deref(), token.as_deref()).await.map_err(fail)?;
            for object in std::mem::take(&mut page.contents) {
                let key = page.key(&object);
                let Some(name) = key.strip_prefix(&root) else { continue };
                // The directory's own folder marker, and any other one, is not a file.
                if name.is_empty() || name.ends_with('/') {
                    continue;
                }
                if name.split('/').next() == Some(crate::upload::STAGING_DIR) || name == RECORD {
                    continue;
                }
                if let Err(rule) = validate_name(name) {
                    self.skip(&key, &rule.to_string());
                    continue;
                }
                let modified = object.modified();
                listing.files.push(self.file_meta(name.to_owned(), object.size, modified, object.etag));
            }
            for common in std::mem::take(&mut page.common_prefixes) {
                let key = page.decoded(&common.prefix);
                let Some(sub) = key.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix('/')) else { continue };
                if dir.is_empty() && sub == crate::upload::STAGING_DIR {
                    continue;
                }
                if sub.is_empty() || sub.contains('/') || validate_name(sub).is_err() {
                    self.skip(&key, "not a valid directory name");
                    continue;
                }
                listing.dirs.push(sub.to_owned());
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        listing.files.sort_by(|a, b| a.name.cmp(&b.name));
        listing.dirs.sort();
        Ok(listing)
    }

    /// One page of ListObjectsV2 of the keys under `prefix` (with `delimited`, only down to the next `/`),
    /// starting after the key `after` or at `token` from the page before.
    pub(crate) async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListBucketResult, Failure> {
        let mut url = format!("{}?list-type=2&encoding-type=url&prefix={}", self.bucket_url, encode_query(prefix));
        if delimited {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = token {
            url.push_str(&format!("&continuation-token={}", encode_query(token)));
        }
        if let Some(after) = after {
            url.push_str(&format!("&start-after={}", encode_query(after)));
        }
        let reply = self.send(Request::new("LIST", Method::GET, url)).await?;
        if !reply.ok() {
            return Err(reply.failure("ListObjectsV2"));
        }
        parse("ListObjectsV2", &reply.body)
    }

    /// Every file under `dir`, recursively, with the MD5s the record holds for those whose listing shows none.
    pub(crate) async fn list_files(&self, dir: &str) -> Result<Vec<FileMeta>> {
        let mut files = self.list(dir, true).await?.files;
        if files.iter().all(|f| f.md5.is_some()) {
            return Ok(files);
        }
        // The record only saves work: a listing without it is still true.
        let record = match self.md5_record().await {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(storage = %self.alias, "the record of MD5s could not be read: {error}");
                return Ok(files);
            }
        };
        for file in files.iter_mut().filter(|f| f.md5.is_none()) {
            if let Some(recorded) = record.files.get(&file.name).filter(|r| r.describes(file)) {
                file.md5 = Some(recorded.md5.clone());
            }
        }
        Ok(files)
    }

    /// Records the MD5s of `stored` (just stored by the caller) that the listing cannot show, and forgets those
    /// of objects that changed or are gone. Writes the record only when that changed it.
    pub(crate) async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        let listed = self.list("", true).await?.files;
        let listed: BTreeMap<&str, &FileMeta> = listed.iter().map(|f| (f.name.as_str(), f)).collect();
        let unlisted = |file: &FileMeta| listed.get(file.name.as_str()).is_some_and(|l| l.md5.is_none());
        let loaded = self.md5_record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if loaded.is_none() && !stored.iter().any(unlisted) {
            // Nothing to add, and nothing recorded that this process read: nothing to do (entries of changed
            // objects, if any, are never trusted).
            return Ok(());
        }
        let old = self.md5_record().await?;
        let mut new = Md5Record::default();
        for (name, recorded) in &old.files {
            if listed.get(name.as_str()).is_some_and(|l| l.md5.is_none() && recorded.describes(l)) {
                new.files.insert(name.clone(), recorded.clone());
            }
        }
        // Only objects this storage stored, as the listing shows them: another writer may have replaced one
        // since (a HEAD finds its save token, and that it is the listed version).
        let candidates: Vec<(FileMeta, String)> = stored
            .iter()
            .filter_map(|file| {
                let listed = listed.get(file.name.as_str()).filter(|l| l.md5.is_none())?;
                Some(((*listed).clone(), file.md5.clone()?))
            })
            .collect();
        let verified: Vec<Option<(String, Recorded)>> = futures::stream::iter(candidates)
            .map(|(listed, md5)| async move {
                let here = self.stored_here(&listed).await;
                here.then(|| (listed.name.clone(), Recorded::of(&listed, md5)))
            })
            .buffer_unordered(8)
            .collect()
            .await;
        new.files.extend(verified.into_iter().flatten());
        if new == old {
            return Ok(());
        }
        let fail = |failure: Failure| failure.into_error(self, "record", "(the record of MD5s)");
        let json = serde_json::to_vec(&new).map_err(|e| Failure {
            kind: storage_core::ErrorKind::Other,
            retryable: false,
            message: format!("cannot encode the record of MD5s: {e}"),
        });
        let request = Request::new("PUT", Method::PUT, self.object_url(&self.record_key()))
            .body(json.map_err(fail)?)
            .header("content-type", "application/json")
            .and_then(|r| {
                r.header(
                    "x-amz-meta-about",
                    "storages: MD5s of the files this storage stored, for collectstatic; deleting it only makes \
                     the next run copy them again",
                )
            })
            .map_err(fail)?;
        let reply = self.send(request).await.map_err(fail)?;
        if !reply.ok() {
            return Err(fail(reply.failure("PutObject")));
        }
        *self.md5_record.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(new);
        Ok(())
    }

    /// Whether the object `listed` is the one this storage last stored under its name: it holds that save's
    /// token, and its size, ETag and time are the listed ones. Any failure to find out is a no.
    async fn stored_here(&self, listed: &FileMeta) -> bool {
        let Some(token) =
            self.saved_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&listed.name).cloned()
        else {
            return false;
        };
        let head = Request::new("HEAD", Method::HEAD, self.object_url(&self.key(&listed.name)));
        let Ok(reply) = self.send(head).await else { return false };
        // A HEAD tells the time to the second; the listing may tell it to the millisecond.
        let seconds = |time: SystemTime| millis(time).div_euclid(1000);
        let modified = reply.last_modified().map(seconds);
        reply.ok()
            && reply.header(crate::protocol::SAVE_TOKEN) == Some(token.as_str())
            && reply.content_length() == Some(listed.size)
            && (listed.etag.is_none() || reply.header("etag") == listed.etag.as_deref())
            && modified.is_some()
            && modified == listed.modified.map(seconds)
    }

    fn record_key(&self) -> String {
        self.key(RECORD)
    }

    /// The record of MD5s: read once per storage (a missing or unreadable one is empty).
    async fn md5_record(&self) -> Result<Md5Record> {
        if let Some(record) = self.md5_record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(record);
        }
        let fail = |failure: Failure| failure.into_error(self, "list", "(the record of MD5s)");
        let reply = self.send(Request::new("GET", Method::GET, self.object_url(&self.record_key()))).await;
        let reply = reply.map_err(fail)?;
        let record = match reply.status {
            404 => Md5Record::default(),
            _ if reply.ok() => serde_json::from_slice(&reply.body).unwrap_or_else(|error| {
                tracing::warn!(storage = %self.alias, "the record of MD5s is unreadable, and is ignored: {error}");
                Md5Record::default()
            }),
            _ => return Err(fail(reply.failure("GetObject"))),
        };
        *self.md5_record.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(record.clone());
        Ok(record)
    }

    fn skip(&self, key: &str, why: &str) {
        tracing::warn!(storage = %self.alias, key = %key.escape_debug(), "skipped a key that is no valid name: {why}");
    }

    /// A file's metadata; the ETag of an object stored in one request is its MD5, unless it is encrypted with
    /// KMS or a customer key: where this storage encrypts so, no ETag is taken for an MD5 (others' objects
    /// included: it cannot tell them apart in a listing; `stat` looks at each object's own headers).
    pub(crate) fn file_meta(
        &self,
        name: String,
        size: u64,
        modified: Option<SystemTime>,
        etag: Option<String>,
    ) -> FileMeta {
        let encrypted = self.headers.kms_encrypted() || self.customer_key.is_some();
        let md5 = etag
            .as_deref()
            .filter(|_| !encrypted)
            .map(|e| e.trim_matches('"'))
            .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        FileMeta { name, size, modified, content_type: None, etag, md5 }
    }
}

/// A key as `encoding-type=url` gives it.
pub(crate) fn decode(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy().into_owned()
}
