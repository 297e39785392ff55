//! Listings with ListObjectsV2, read by this crate: keys come URL-encoded (`encoding-type=url`, so that any key
//! survives XML), and a key that is no valid name (`a//b`, a `..` segment, a control character, written by another
//! tool) is skipped with a warning instead of failing the listing. Folder markers (`css/`) are not files.

use crate::Inner;
use crate::protocol::{Failure, Request, encode_query, parse};
use http::Method;
use serde::Deserialize;
use std::time::SystemTime;
use storage_core::{FileMeta, Result, validate_name};

/// One page of ListObjectsV2.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    /// `url` when the keys are URL-encoded (a service may ignore the request for it).
    encoding_type: Option<String>,
    next_continuation_token: Option<String>,
    #[serde(rename = "Contents", default)]
    contents: Vec<Object>,
    #[serde(rename = "CommonPrefixes", default)]
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Object {
    key: String,
    last_modified: Option<String>,
    #[serde(rename = "ETag")]
    etag: Option<String>,
    #[serde(default)]
    size: u64,
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
            let mut url = format!("{}?list-type=2&encoding-type=url&prefix={}", self.bucket_url, encode_query(&prefix));
            if !recursive {
                url.push_str("&delimiter=%2F");
            }
            if let Some(token) = &token {
                url.push_str(&format!("&continuation-token={}", encode_query(token)));
            }
            let reply = self.send(Request::new("LIST", Method::GET, url)).await.map_err(fail)?;
            if !reply.ok() {
                return Err(fail(reply.failure("ListObjectsV2")));
            }
            let page: ListBucketResult = parse("ListObjectsV2", &reply.body).map_err(fail)?;
            let encoded = page.encoding_type.as_deref() == Some("url");
            let decode = |key: &str| if encoded { decode(key) } else { key.to_owned() };
            for object in page.contents {
                let key = decode(&object.key);
                let Some(name) = key.strip_prefix(&root) else { continue };
                // The directory's own folder marker, and any other one, is not a file.
                if name.is_empty() || name.ends_with('/') {
                    continue;
                }
                if name.split('/').next() == Some(crate::upload::STAGING_DIR) {
                    continue;
                }
                if let Err(rule) = validate_name(name) {
                    self.skip(&key, &rule.to_string());
                    continue;
                }
                let modified = object
                    .last_modified
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(SystemTime::from);
                listing.files.push(self.file_meta(name.to_owned(), object.size, modified, object.etag));
            }
            for common in page.common_prefixes {
                let key = decode(&common.prefix);
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

    fn skip(&self, key: &str, why: &str) {
        tracing::warn!(storage = %self.alias, key = %key.escape_debug(), "skipped a key that is no valid name: {why}");
    }

    /// A file's metadata; the ETag of an object stored in one request is its MD5 (unless it is encrypted with
    /// KMS or a customer key, which only a HEAD tells: see `stat`).
    pub(crate) fn file_meta(
        &self,
        name: String,
        size: u64,
        modified: Option<SystemTime>,
        etag: Option<String>,
    ) -> FileMeta {
        let md5 = etag
            .as_deref()
            .map(|e| e.trim_matches('"'))
            .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        FileMeta { name, size, modified, content_type: None, etag, md5 }
    }
}

/// A key as `encoding-type=url` gives it.
fn decode(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy().into_owned()
}
