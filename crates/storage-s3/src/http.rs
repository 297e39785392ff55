//! The HTTP layer under object_store's S3 client.
//!
//! object_store sends no `Expires`, no ACL, no `Content-MD5` or CRC32 checksum, and creates the destination of a
//! conditional copy without any attribute. Rather than fork its client, this layer sits where object_store hands
//! requests to the network: it recognises the requests that create an object (PutObject, CreateMultipartUpload)
//! and adds the storage's headers for that key, adds the configured checksum of each uploaded body, then signs the
//! request again with object_store's own SigV4 signer ([`AwsAuthorizer`]) so that every added `x-amz-*` header is
//! covered by the signature, as S3 requires. Retries stay object_store's: each attempt passes through here.

use crate::options::{ChecksumMode, ObjectHeaders};
use async_trait::async_trait;
use base64::Engine;
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use md5::Digest;
use object_store::ClientOptions;
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use std::sync::{Arc, OnceLock};

/// What the layer needs to know about its storage.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) headers: ObjectHeaders,
    pub(crate) checksum: ChecksumMode,
    pub(crate) region: String,
    /// `/<bucket>/` with path-style addressing, `/` with virtual hosts: what precedes the key in a URL path.
    pub(crate) key_prefix: String,
    /// Keys under this prefix are staged uploads: they get a checksum but none of the object headers, so that
    /// a storage class, an ACL or metadata apply to published objects only.
    pub(crate) staging_prefix: String,
    /// Set once the store is built: the same provider object_store signs with.
    pub(crate) credentials: OnceLock<AwsCredentialProvider>,
    /// Requests sent, by kind: every request of this storage passes here.
    pub(crate) counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The kinds of request the layer changes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    PutObject(String),
    CreateMultipartUpload(String),
    UploadPart,
    Other,
}

impl Layer {
    /// The kind of an S3 request, as `--stats` counts them.
    fn kind_name(&self, request: &HttpRequest) -> &'static str {
        let path = request.uri().path();
        if path.len() + 1 == self.key_prefix.len() && self.key_prefix.starts_with(path) || path == self.key_prefix {
            // The bucket itself, not an object or a listing.
            if request.uri().query().is_none() {
                return match *request.method() {
                    Method::HEAD => "HEAD_BUCKET",
                    Method::PUT => "CREATE_BUCKET",
                    _ => "BUCKET",
                };
            }
        }
        let keys = query_keys(request);
        let has = |key: &str| keys.contains(&key);
        let copy = request.headers().contains_key("x-amz-copy-source");
        match *request.method() {
            Method::GET if has("list-type") || has("delimiter") => "LIST",
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::PUT if has("partNumber") && copy => "UPLOAD_PART_COPY",
            Method::PUT if has("partNumber") => "UPLOAD_PART",
            Method::PUT if copy => "COPY",
            Method::PUT => "PUT",
            Method::POST if has("uploads") => "CREATE_MULTIPART",
            Method::POST if has("uploadId") => "COMPLETE_MULTIPART",
            Method::POST if has("delete") => "DELETE_OBJECTS",
            Method::DELETE if has("uploadId") => "ABORT_MULTIPART",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        }
    }

    fn count(&self, request: &HttpRequest) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(self.kind_name(request)).or_default() += 1;
    }

    /// Which request this is, and the object key it creates.
    fn classify(&self, request: &HttpRequest) -> Kind {
        let Some(encoded) = request.uri().path().strip_prefix(self.key_prefix.as_str()) else { return Kind::Other };
        if encoded.is_empty() {
            return Kind::Other;
        }
        let key = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().into_owned();
        let query = query_keys(request);
        let copy = request.headers().contains_key("x-amz-copy-source");
        match *request.method() {
            Method::PUT if query.contains(&"partNumber") && query.contains(&"uploadId") && !copy => Kind::UploadPart,
            Method::PUT if query.iter().all(|q| q.is_empty()) && !copy => Kind::PutObject(key),
            Method::POST if query.contains(&"uploads") => Kind::CreateMultipartUpload(key),
            _ => Kind::Other,
        }
    }

    /// Adds this storage's headers to a request; returns whether it changed.
    async fn decorate(&self, request: &mut HttpRequest) -> Result<bool, HttpError> {
        let (key, body_checksum) = match self.classify(request) {
            Kind::PutObject(key) => (Some(key), true),
            Kind::CreateMultipartUpload(key) => (Some(key), false),
            Kind::UploadPart => (None, true),
            Kind::Other => return Ok(false),
        };
        let part = key.is_none();
        let mut changed = false;
        if let Some(key) = key.filter(|key| !key.starts_with(&self.staging_prefix)) {
            request.headers_mut().extend(self.headers.for_key(&key));
            changed = true;
        }
        if body_checksum {
            let header = match (self.checksum, part) {
                (ChecksumMode::Md5, _) | (ChecksumMode::Crc32, true) => {
                    let mut hasher = md5::Md5::new();
                    for_each_frame(request, |data| hasher.update(data)).await?;
                    Some(("content-md5", hasher.finalize().to_vec()))
                }
                (ChecksumMode::Crc32, false) => {
                    let mut hasher = crc32fast::Hasher::new();
                    for_each_frame(request, |data| hasher.update(data)).await?;
                    Some(("x-amz-checksum-crc32", hasher.finalize().to_be_bytes().to_vec()))
                }
                // sha256 is object_store's own flexible checksum; none adds nothing.
                (ChecksumMode::Sha256 | ChecksumMode::None, _) => None,
            };
            if let Some((name, digest)) = header {
                let value = base64::engine::general_purpose::STANDARD.encode(digest);
                let value = HeaderValue::from_str(&value).map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
                request.headers_mut().insert(name, value);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Signs `request` again, keeping the payload hash object_store computed.
    async fn sign(&self, request: &mut HttpRequest) -> Result<(), HttpError> {
        let Some(provider) = self.credentials.get() else { return Ok(()) };
        let credential = provider.get_credential().await.map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let payload_hash = request.headers().get("x-amz-content-sha256").and_then(|v| v.to_str().ok());
        let (sign_payload, digest) = match payload_hash {
            Some("UNSIGNED-PAYLOAD") => (false, None),
            Some(hex) => (true, decode_hex(hex)),
            None => (true, None),
        };
        let authorizer = AwsAuthorizer::new(&credential, "s3", &self.region).with_sign_payload(sign_payload);
        authorizer.try_authorize(request, digest.as_deref()).map_err(|e| HttpError::new(HttpErrorKind::Request, e))
    }
}

/// The keys of the request's query string (`?partNumber=1&uploadId=x` gives `partNumber`, `uploadId`).
fn query_keys(request: &HttpRequest) -> Vec<&str> {
    request.uri().query().unwrap_or("").split('&').map(|p| p.split('=').next().unwrap_or("")).collect()
}

/// Feeds every data frame of the request's body to `f`, without copying it.
async fn for_each_frame(request: &HttpRequest, mut f: impl FnMut(&[u8])) -> Result<(), HttpError> {
    let mut body = request.body().clone();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            f(&data);
        }
    }
    Ok(())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

impl crate::Inner {
    /// A request object_store has no call for (bucket creation, ranged multipart copies), signed like its own
    /// and sent through the same client and layer. Connection failures and the statuses S3 asks to retry
    /// (409 on conditional writes, 429, 5xx) are retried up to `max_retries` times within `retry_timeout`.
    /// The error is a sentence naming the endpoint and bucket.
    pub(crate) async fn signed_request(
        &self,
        method: Method,
        url: &str,
        headers: http::HeaderMap,
        body: object_store::client::HttpRequestBody,
    ) -> Result<HttpResponse, String> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let mut request: HttpRequest = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .body(body.clone())
                .map_err(|e| format!("invalid URL {url}: {e}"))?;
            request.headers_mut().extend(headers.clone());
            if let Some(provider) = self.layer.credentials.get() {
                let credential = provider
                    .get_credential()
                    .await
                    .map_err(|e| format!("cannot get credentials for {}: {e}", self.endpoint))?;
                AwsAuthorizer::new(&credential, "s3", &self.options.region_name)
                    .try_authorize(&mut request, None)
                    .map_err(|e| format!("cannot sign a request to {}: {e}", self.endpoint))?;
            }
            let outcome = self.http.execute(request).await;
            let retry = match &outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    status == 409 || status == 429 || status >= 500
                }
                Err(_) => true,
            };
            if !retry
                || attempt >= self.options.max_retries
                || started.elapsed().as_secs_f64() >= self.options.retry_timeout
            {
                return outcome.map_err(|error| {
                    format!(
                        "cannot reach {} for bucket '{}' after {attempt} retries: {}",
                        self.endpoint,
                        self.options.bucket_name,
                        crate::bucket::error_chain(&error)
                    )
                });
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(6))).await;
        }
    }
}

/// Connects object_store through the [`Layer`].
#[derive(Debug)]
pub(crate) struct Connector(pub(crate) Arc<Layer>);

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(LayeredService { inner, layer: self.0.clone() }))
    }
}

#[derive(Debug)]
struct LayeredService {
    inner: HttpClient,
    layer: Arc<Layer>,
}

#[async_trait]
impl HttpService for LayeredService {
    async fn call(&self, mut request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.layer.count(&request);
        if self.layer.decorate(&mut request).await? {
            self.layer.sign(&mut request).await?;
        }
        self.inner.execute(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::S3Options;

    fn layer(checksum: ChecksumMode) -> Layer {
        let options = S3Options {
            headers: [("Expires".to_string(), "Thu, 15 Apr 2010 20:00:00 GMT".to_string())].into(),
            default_acl: Some("public-read".into()),
            ..S3Options::default()
        };
        Layer {
            headers: ObjectHeaders::new(&options).unwrap(),
            checksum,
            region: "us-east-1".into(),
            key_prefix: "/bucket/".into(),
            staging_prefix: "media/.storages-staging/".into(),
            credentials: OnceLock::new(),
            counts: Default::default(),
        }
    }

    fn request(method: Method, uri: &str, body: &'static [u8]) -> HttpRequest {
        http::Request::builder().method(method).uri(uri).body(bytes::Bytes::from_static(body).into()).unwrap()
    }

    #[tokio::test]
    async fn put_object_gets_headers_and_checksum() {
        let layer = layer(ChecksumMode::Md5);
        let mut put = request(Method::PUT, "http://h/bucket/dir/a%20b.css", b"hello");
        assert!(layer.decorate(&mut put).await.unwrap());
        let h = put.headers();
        assert_eq!(h["expires"], "Thu, 15 Apr 2010 20:00:00 GMT");
        assert_eq!(h["x-amz-acl"], "public-read");
        assert_eq!(h["content-type"], "text/css");
        assert_eq!(h["content-md5"], "XUFAKrxLKna5cZ2REBfFkg==");
    }

    #[tokio::test]
    async fn crc32_on_single_puts_md5_on_parts() {
        let layer = layer(ChecksumMode::Crc32);
        let mut put = request(Method::PUT, "http://h/bucket/k", b"hello");
        layer.decorate(&mut put).await.unwrap();
        assert_eq!(put.headers()["x-amz-checksum-crc32"], "NhCmhg==");
        let mut part = request(Method::PUT, "http://h/bucket/k?partNumber=1&uploadId=x", b"hello");
        layer.decorate(&mut part).await.unwrap();
        assert_eq!(part.headers()["content-md5"], "XUFAKrxLKna5cZ2REBfFkg==");
        assert!(part.headers().get("expires").is_none());
    }

    #[tokio::test]
    async fn other_requests_pass_unchanged() {
        let layer = layer(ChecksumMode::Md5);
        for (method, uri) in [
            (Method::GET, "http://h/bucket/k"),
            (Method::PUT, "http://h/bucket"),
            (Method::POST, "http://h/bucket/k?uploadId=x"),
            (Method::DELETE, "http://h/bucket/k"),
        ] {
            let mut r = request(method, uri, b"");
            assert!(!layer.decorate(&mut r).await.unwrap(), "{uri}");
        }
        let mut create = request(Method::POST, "http://h/bucket/a.js?uploads", b"");
        assert!(layer.decorate(&mut create).await.unwrap());
        assert_eq!(create.headers()["content-type"], "text/javascript");
        assert!(create.headers().get("content-md5").is_none());
    }

    #[tokio::test]
    async fn staged_uploads_get_no_object_headers() {
        let layer = layer(ChecksumMode::Md5);
        let mut create = request(Method::POST, "http://h/bucket/media/.storages-staging/x1?uploads", b"");
        assert!(!layer.decorate(&mut create).await.unwrap());
        assert!(create.headers().get("x-amz-acl").is_none() && create.headers().get("expires").is_none());
    }
}
