//! Publishing saved content under a free name, never replacing an object unless `file_overwrite` says so.
//!
//! - Small content: one PutObject with `If-None-Match: *`; on 412 the next alternative name is tried.
//! - Staged multipart uploads: a server-side multipart copy to the name, whose CompleteMultipartUpload carries
//!   `If-None-Match: *`; on 412 the copy is aborted and the next name tried, without uploading again. Parts are
//!   copied by ranges (`x-amz-copy-source-range`) in parallel, so objects of any size (up to S3's 5 TiB) publish.
//!
//! Concurrent saves of one name are safe where the server checks these conditions atomically: AWS S3 does for
//! both; moto does for PutObject but not for CompleteMultipartUpload; s3s-fs does for neither.

use crate::Inner;
use futures::stream::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use storage_core::{Error, Result, candidate_names};

/// RFC 3986 unreserved characters stay; everything else in a key segment is percent-encoded, as SigV4 expects.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The largest part UploadPartCopy accepts.
const MAX_COPY_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The most parts a multipart upload may have.
const MAX_PARTS: u64 = 10_000;

/// What a publishing attempt under one name came to.
enum Attempt {
    Published,
    Taken,
}

impl Inner {
    /// Stores `bytes` under `name` or the first free alternative, with conditional PutObjects; with `overwrite`,
    /// under `name` with one plain PutObject.
    pub(crate) async fn publish_bytes(&self, name: &str, bytes: PutPayload, overwrite: bool) -> Result<String> {
        if overwrite {
            let path = self.path(name, &self.key(name))?;
            self.store.put(&path, bytes).await.map_err(|e| self.error("save", name, e))?;
            return Ok(name.into());
        }
        self.first_free(name, |candidate, path| {
            let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            let bytes = bytes.clone();
            async move {
                match self.store.put_opts(&path, bytes, options).await {
                    Ok(_) => Ok(Attempt::Published),
                    Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                        Ok(Attempt::Taken)
                    }
                    Err(error) => Err(self.error("save", &candidate, error)),
                }
            }
        })
        .await
    }

    /// Copies the staged object (`staged_key`, `size` bytes) to `name` or the first free alternative.
    pub(crate) async fn publish_copy(&self, name: &str, staged_key: &str) -> Result<String> {
        let size = self.store.head(&self.path(name, staged_key)?).await.map_err(|e| self.error("save", name, e))?.size;
        self.first_free(name, |candidate, path| async move {
            self.copy_if_absent(&candidate, staged_key, path.as_ref(), size).await
        })
        .await
    }

    /// Tries `attempt` on `name`, then on its alternatives while they are taken.
    async fn first_free<F, Fut>(&self, name: &str, attempt: F) -> Result<String>
    where
        F: Fn(String, object_store::path::Path) -> Fut,
        Fut: std::future::Future<Output = Result<Attempt>>,
    {
        let mut attempts = 0;
        for candidate in candidate_names(name, self.options.alternative_names) {
            attempts += 1;
            let path = self.path(&candidate, &self.key(&candidate))?;
            // Once a name was taken, look before sending the content again: a HEAD is cheaper than an upload or
            // a copy. The conditional request still decides.
            if attempts > 1 && self.store.head(&path).await.is_ok() {
                continue;
            }
            if let Attempt::Published = attempt(candidate.clone(), path).await? {
                return Ok(candidate);
            }
        }
        Err(Error::NoAvailableName { storage: self.alias.clone(), name: name.into(), attempts })
    }

    /// One multipart copy of `source` to `target`, completed only if `target` does not exist.
    async fn copy_if_absent(&self, name: &str, source: &str, target: &str, size: u64) -> Result<Attempt> {
        let fail = |message: String| Error::Backend {
            storage: self.alias.clone(),
            operation: "save",
            name: name.into(),
            message: format!("{} (bucket '{}'): {message}", self.endpoint, self.options.bucket_name),
            source: None,
        };
        let url = format!("{}/{}", self.bucket_url, encode_key(target));
        let created = self.send_ok(Method::POST, &format!("{url}?uploads"), HeaderMap::new(), String::new()).await;
        let upload_id = xml_text(&created.map_err(&fail)?, "UploadId")
            .map(unescape)
            .ok_or_else(|| fail("CreateMultipartUpload answered without an UploadId".into()))?;
        let upload_url = format!("{url}?uploadId={}", utf8_percent_encode(&upload_id, KEY_SEGMENT));

        let result = self.copy_parts(&url, &upload_id, source, size).await.map_err(&fail);
        let completed = match result {
            Ok(parts) => {
                let mut headers = HeaderMap::new();
                headers.insert("if-none-match", HeaderValue::from_static("*"));
                let body = complete_body(&parts);
                match self.send(Method::POST, &upload_url, headers, body).await {
                    Ok((412, _)) => Ok(Attempt::Taken),
                    Ok((status, text)) if (200..300).contains(&status) && !text.contains("<Error>") => {
                        return Ok(Attempt::Published);
                    }
                    Ok((status, text)) => Err(fail(format!(
                        "CompleteMultipartUpload failed with {status}: {}",
                        crate::bucket::s3_error_code(&text)
                    ))),
                    Err(message) => Err(fail(message)),
                }
            }
            Err(error) => Err(error),
        };
        // Not published: abort, so that no part is left pending.
        let _ = self.send(Method::DELETE, &upload_url, HeaderMap::new(), String::new()).await;
        completed
    }

    /// Copies `source` into the upload by ranges, a few at a time; returns the parts' ETags in order.
    async fn copy_parts(&self, url: &str, upload_id: &str, source: &str, size: u64) -> Result<Vec<String>, String> {
        let part =
            (self.options.multipart_chunksize.max(512 * 1024 * 1024)).max(size.div_ceil(MAX_PARTS)).min(MAX_COPY_PART);
        let ranges: Vec<(u64, u64)> =
            (0..size.div_ceil(part)).map(|i| (i * part, ((i + 1) * part).min(size) - 1)).collect();
        let copy_source = format!("/{}/{}", self.options.bucket_name, encode_key(source));
        futures::stream::iter(ranges.into_iter().enumerate())
            .map(|(index, (first, last))| {
                let copy_source = copy_source.clone();
                async move {
                    let mut headers = HeaderMap::new();
                    let value = |text: String| HeaderValue::from_str(&text).map_err(|e| e.to_string());
                    headers.insert("x-amz-copy-source", value(copy_source)?);
                    headers.insert("x-amz-copy-source-range", value(format!("bytes={first}-{last}"))?);
                    let part_url = format!(
                        "{url}?partNumber={}&uploadId={}",
                        index + 1,
                        utf8_percent_encode(upload_id, KEY_SEGMENT)
                    );
                    let text = self.send_ok(Method::PUT, &part_url, headers, String::new()).await?;
                    xml_text(&text, "ETag")
                        .map(String::from)
                        .ok_or_else(|| "UploadPartCopy answered without an ETag".into())
                }
            })
            .buffered(self.options.max_concurrency)
            .try_collect()
            .await
    }

    /// A signed request's status and body text.
    async fn send(&self, method: Method, url: &str, headers: HeaderMap, body: String) -> Result<(u16, String), String> {
        let response = self.signed_request(method, url, headers, body.into()).await?;
        let status = response.status().as_u16();
        let text = response.into_body().bytes().await.map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }

    /// A signed request that must succeed (S3 may also report an error in a 200 body); its body text.
    async fn send_ok(&self, method: Method, url: &str, headers: HeaderMap, body: String) -> Result<String, String> {
        let name = format!("{method}");
        match self.send(method, url, headers, body).await? {
            (status, text) if (200..300).contains(&status) && !text.contains("<Error>") => Ok(text),
            (status, text) => Err(format!("{name} failed with {status}: {}", crate::bucket::s3_error_code(&text))),
        }
    }
}

/// The size of the ranges a staged object of `size` bytes is copied by (which its ETag reflects).
pub(crate) fn copy_part_size(options: &crate::S3Options, size: u64) -> u64 {
    options.multipart_chunksize.max(512 * 1024 * 1024).max(size.div_ceil(MAX_PARTS)).min(MAX_COPY_PART)
}

fn encode_key(key: &str) -> String {
    key.split('/').map(|segment| utf8_percent_encode(segment, KEY_SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// The text of the first `<tag>` element (raw, entities left as they are).
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let (_, rest) = xml.split_once(&format!("<{tag}>"))?;
    rest.split_once(&format!("</{tag}>")).map(|(text, _)| text)
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The CompleteMultipartUpload document; ETags go back exactly as S3 sent them (entities included).
fn complete_body(etags: &[String]) -> String {
    let parts: String = etags
        .iter()
        .enumerate()
        .map(|(i, etag)| format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>", i + 1))
        .collect();
    format!(
        "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{parts}</CompleteMultipartUpload>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(encode_key("a b/ü&x~y.txt"), "a%20b/%C3%BC%26x~y.txt");
    }

    #[test]
    fn xml_fields_and_completion() {
        let xml = "<InitiateMultipartUploadResult><UploadId>a&amp;b</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(xml_text(xml, "UploadId").map(unescape).as_deref(), Some("a&b"));
        assert_eq!(xml_text(xml, "ETag"), None);
        let body = complete_body(&["&quot;e1&quot;".into(), "\"e2\"".into()]);
        assert!(body.contains("<Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag></Part>"), "{body}");
        assert!(body.contains("<Part><PartNumber>2</PartNumber><ETag>\"e2\"</ETag></Part>"), "{body}");
    }
}
