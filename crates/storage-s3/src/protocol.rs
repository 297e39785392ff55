//! The S3 protocol as this crate speaks it: the requests it sends itself (object writes, multipart uploads,
//! deletes, bucket requests), signed once with object_store's SigV4 signer, their one retry policy, their XML
//! answers, part sizing and the ETags that sizing gives.
//!
//! Retry policy: a request is sent again after a connection failure, a timeout, a reset or a retryable status
//! (429, 5xx, an error document in a 200 answer, 409 on a conditional write) while `max_retries` and
//! `retry_timeout` allow. Every request this crate sends may be repeated: reads, deletes, parts and overwriting
//! writes are idempotent, and creating writes carry a save token. A request whose earlier attempt may have taken
//! effect (it was sent, and no answer came) is marked [`Reply::ambiguous`]: creating requests then check what the
//! server holds before they answer.

use crate::Inner;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use object_store::PutPayload;
use object_store::aws::AwsAuthorizer;
use object_store::client::{HttpErrorKind, HttpRequest};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use storage_core::{Error, ErrorKind};

/// The most parts a multipart upload may have.
pub(crate) const MAX_PARTS: u64 = 10_000;

/// The largest part S3 accepts (for uploads and for UploadPartCopy).
pub(crate) const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The smallest part S3 accepts, but the last.
pub(crate) const MIN_PART: u64 = 5 * 1024 * 1024;

/// The largest object one PutObject may store.
pub(crate) const MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// The user metadata that marks an object as written by one particular save, so that a save whose answer was
/// lost can tell its own object from someone else's (same content included).
pub(crate) const SAVE_TOKEN: &str = "x-amz-meta-storages-save";

/// The part size of an upload of `size` bytes known in advance (which its ETag reflects).
pub(crate) fn known_size_part(options: &crate::S3Options, size: u64) -> u64 {
    options.multipart_chunksize.max(size.div_ceil(MAX_PARTS))
}

/// The part size of the `index`-th part (from 0) of an upload of unknown size: one chunk more every 1,000 parts,
/// so that 10,000 parts hold 55,000 chunks (430 GiB at 8 MiB) while memory stays bounded by the part size.
pub(crate) fn streaming_part(options: &crate::S3Options, index: u64) -> u64 {
    options.multipart_chunksize * (1 + index / 1000)
}

/// The size of the ranges a staged object of `size` bytes is copied by (which its ETag reflects).
pub(crate) fn copy_part_size(options: &crate::S3Options, size: u64) -> u64 {
    options.multipart_chunksize.max(512 * 1024 * 1024).max(size.div_ceil(MAX_PARTS)).min(MAX_PART)
}

/// The ETag S3 gives a multipart object whose parts have these MD5s: the MD5 of the concatenated digests, a
/// dash and the number of parts.
pub(crate) fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut hasher = Md5::new();
    for digest in part_md5s {
        hasher.update(digest);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), part_md5s.len())
}

/// RFC 3986 unreserved characters stay; everything else in a key segment is percent-encoded, as SigV4 expects.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `key` for a URL path, segment by segment.
pub(crate) fn encode_key(key: &str) -> String {
    key.split('/').map(|segment| utf8_percent_encode(segment, KEY_SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// `value` for a URL query.
pub(crate) fn encode_query(value: &str) -> String {
    utf8_percent_encode(value, KEY_SEGMENT).to_string()
}

/// What a request is, as `--stats` counts it; carried in the request's extensions so that the transport never
/// guesses it from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestKind(pub(crate) &'static str);

/// One request of this crate's own.
pub(crate) struct Request {
    pub(crate) kind: &'static str,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: PutPayload,
    /// The body's SHA-256, once computed (for a checksum header); the signature uses it too.
    pub(crate) sha256: Option<[u8; 32]>,
    /// Whether a 409 answer (S3's "a conditional request is in progress") is retried.
    pub(crate) retry_conflict: bool,
}

impl Request {
    pub(crate) fn new(kind: &'static str, method: Method, url: String) -> Self {
        Request {
            kind,
            method,
            url,
            headers: HeaderMap::new(),
            body: PutPayload::new(),
            sha256: None,
            retry_conflict: false,
        }
    }

    pub(crate) fn header(mut self, name: impl TryInto<HeaderName>, value: &str) -> Result<Self, Failure> {
        let name = name.try_into().map_err(|_| Failure::invalid("a header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| Failure::invalid(&format!("the value of {name}")))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub(crate) fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    pub(crate) fn body(mut self, body: impl Into<PutPayload>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether S3's 2xx answer to this request always carries the object's ETag: a HEAD or PUT of an object, a
    /// part.
    fn answer_has_etag(&self) -> bool {
        matches!(self.kind, "HEAD" | "PUT" | "UPLOAD_PART") || (self.kind == "PROBE" && self.method == Method::PUT)
    }

    /// Adds `Content-MD5` of the body.
    pub(crate) fn content_md5(self) -> Result<Self, Failure> {
        let digest = payload_md5(&self.body);
        self.header("content-md5", &base64_encode(&digest))
    }
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The MD5 of a payload, chunk by chunk.
pub(crate) fn payload_md5(payload: &PutPayload) -> [u8; 16] {
    let mut hasher = Md5::new();
    for chunk in payload.iter() {
        hasher.update(chunk);
    }
    hasher.finalize().into()
}

/// An answer from the server.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// An earlier attempt was sent and got no usable answer: it may have taken effect.
    pub(crate) ambiguous: bool,
    /// A 2xx answer without what S3 always sends with it (the ETag of an object): not from S3 itself, so it
    /// says nothing about what happened (a proxy that failed after its upstream did or did not do the work).
    pub(crate) malformed: bool,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status) && !has_error_document(&self.body) && !self.malformed
    }

    /// The S3 error code of an error answer (`NoSuchUpload`, `NotImplemented`, ...).
    pub(crate) fn code(&self) -> Option<String> {
        ErrorDocument::parse(&self.body).map(|doc| doc.code)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The object's size, as a HEAD answers it.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// The object's modification time (to the second), as a HEAD answers it.
    pub(crate) fn last_modified(&self) -> Option<std::time::SystemTime> {
        let time = chrono::DateTime::parse_from_rfc2822(self.header("last-modified")?).ok()?;
        Some(time.into())
    }

    /// A failure for an unexpected answer: the status and S3's code and message, never the rest of the document
    /// (which may echo request headers, a session token among them).
    pub(crate) fn failure(&self, request: &str) -> Failure {
        let document = ErrorDocument::parse(&self.body);
        let detail = match &document {
            Some(doc) if doc.message.is_empty() => format!(": {}", doc.code),
            Some(doc) => format!(": {} ({})", doc.code, doc.message),
            None if self.malformed => " without the object's ETag (not an answer of S3 itself)".into(),
            None => String::new(),
        };
        let kind = match self.status {
            401 => ErrorKind::Unauthenticated,
            403 if document.as_ref().is_some_and(|d| CREDENTIAL_CODES.contains(&d.code.as_str())) => {
                ErrorKind::Unauthenticated
            }
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            400 | 411 | 413 | 414 => ErrorKind::InvalidInput,
            405 | 501 => ErrorKind::Unsupported,
            408 => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        };
        Failure {
            kind,
            retryable: self.status == 429
                || (self.status >= 500 && self.status != 501)
                || (has_error_document(&self.body) || self.malformed) && self.status < 300,
            message: format!("{request} answered {}{detail}", self.status),
        }
    }
}

/// S3's codes for credentials that are wrong, rather than not allowed.
const CREDENTIAL_CODES: &[&str] =
    &["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"];

/// Why a request failed, in words that name no secret, with its kind.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) retryable: bool,
    pub(crate) message: String,
}

impl Failure {
    fn invalid(what: &str) -> Self {
        Failure { kind: ErrorKind::InvalidInput, retryable: false, message: format!("{what} is not a valid header") }
    }

    /// This failure as a storage error of `operation` on `name`.
    pub(crate) fn into_error(self, inner: &Inner, operation: &'static str, name: &str) -> Error {
        let place = format!("{} (bucket '{}')", inner.endpoint, inner.options.bucket_name);
        let message = match self.kind {
            ErrorKind::Unreachable => format!("cannot reach {place}: {}", self.message),
            ErrorKind::Unauthenticated => format!("{place} refused the credentials: {}", self.message),
            ErrorKind::PermissionDenied => format!("{place} refused the request: permission denied: {}", self.message),
            _ => format!("{place}: {}", self.message),
        };
        Error::Backend {
            storage: inner.alias.clone(),
            operation,
            name: name.into(),
            message: storage_core::redact(&message).into_owned(),
            kind: self.kind,
            retryable: self.retryable,
            source: None,
        }
    }
}

/// Why an attempt got no answer: the network (retried), or something here (not retried).
enum Attempt {
    Http(HttpErrorKind, String),
    Local(ErrorKind, String),
}

impl Attempt {
    fn http(error: object_store::client::HttpError) -> Self {
        Attempt::Http(error.kind(), crate::transport::describe(&error))
    }
}

/// Whether a 2xx body is in fact an S3 error document, whose root element is `<Error>` (CompleteMultipartUpload
/// and copies answer 200 first and report a failure in the body; a DeleteObjects answer lists per-key `<Error>`s
/// inside its `<DeleteResult>`, which is no failure of the request).
fn has_error_document(body: &[u8]) -> bool {
    let mut rest = body;
    loop {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len());
        rest = &rest[start..];
        // Skip the XML declaration and any processing instruction or comment before the root.
        let skip = if rest.starts_with(b"<?") {
            b"?>".as_slice()
        } else if rest.starts_with(b"<!--") {
            b"-->".as_slice()
        } else {
            return rest.starts_with(b"<Error>") || rest.starts_with(b"<Error ");
        };
        match rest.windows(skip.len()).position(|w| w == skip) {
            Some(end) => rest = &rest[end + skip.len()..],
            None => return false,
        }
    }
}

impl Inner {
    /// Sends `request` under the retry policy; the answer of the last attempt, whatever its status, or why no
    /// answer came.
    pub(crate) async fn send(&self, mut request: Request) -> Result<Reply, Failure> {
        // An object written with a customer key is written, read and copied with it; bucket requests, deletes
        // and listings take none.
        if let Some((key, copy_source)) = &self.customer_key {
            let object = ["PUT", "GET", "HEAD", "CREATE_MULTIPART", "UPLOAD_PART", "COMPLETE_MULTIPART"];
            let probe_write = request.kind == "PROBE" && request.method != Method::DELETE;
            if object.contains(&request.kind) || probe_write || request.kind == "UPLOAD_PART_COPY" {
                request.headers.extend(key.clone());
            }
            if request.kind == "UPLOAD_PART_COPY" {
                request.headers.extend(copy_source.clone());
            }
        }
        let started = Instant::now();
        let retry_timeout = crate::seconds(self.options.retry_timeout);
        // The retry budget runs from the first failure: an attempt that took long (a slow upload) leaves it whole.
        let mut first_failure: Option<Instant> = None;
        let mut attempt = 0usize;
        let mut ambiguous = false;
        let digest = match request.body.content_length() {
            0 => None,
            _ => Some(request.sha256.unwrap_or_else(|| payload_sha256(&request.body))),
        };
        loop {
            let mut outcome = self.attempt(&request, digest.as_ref(), attempt).await;
            if let Ok(reply) = &mut outcome {
                reply.malformed =
                    (200..300).contains(&reply.status) && request.answer_has_etag() && reply.header("etag").is_none();
            }
            let (retry, sent) = match &outcome {
                Ok(reply) => {
                    let status = reply.status;
                    let error_body =
                        (200..300).contains(&status) && (has_error_document(&reply.body) || reply.malformed);
                    let code = || reply.code().unwrap_or_default();
                    let retryable = status == 429
                        || (status >= 500 && status != 501)
                        || error_body
                        || (status == 409 && request.retry_conflict)
                        // A socket that idled too long for S3, and a credential that expired in flight (the next
                        // attempt signs with a refreshed one), as the AWS SDKs retry them.
                        || (status == 400 && matches!(code().as_str(), "RequestTimeout" | "ExpiredToken"));
                    (retryable, true)
                }
                // A connection failure sent nothing.
                Err(Attempt::Http(kind, _)) => (true, *kind != HttpErrorKind::Connect),
                Err(Attempt::Local(..)) => (false, false),
            };
            let failed_at = *first_failure.get_or_insert_with(Instant::now);
            let exhausted = attempt >= self.options.max_retries || failed_at.elapsed() >= retry_timeout;
            if !retry || exhausted {
                return match outcome {
                    Ok(mut reply) => {
                        reply.ambiguous = ambiguous;
                        Ok(reply)
                    }
                    Err(Attempt::Local(kind, message)) => {
                        Err(Failure { kind, retryable: false, message: format!("{} {message}", request.kind) })
                    }
                    Err(Attempt::Http(kind, message)) => Err(Failure {
                        kind: match kind {
                            HttpErrorKind::Connect => ErrorKind::Unreachable,
                            HttpErrorKind::Timeout => ErrorKind::Timeout,
                            _ => ErrorKind::Other,
                        },
                        retryable: true,
                        message: match attempt {
                            0 => format!("{} {message}", request.kind),
                            n => format!("{} {message} (after {n} retries in {:.1?})", request.kind, started.elapsed()),
                        },
                    }),
                };
            }
            // Whatever answered, an attempt that was sent may have been carried out (a 503 from a proxy whose
            // upstream stored the object): a creating request then checks before it answers.
            ambiguous |= sent;
            attempt += 1;
            self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let backoff = backoff(attempt);
            tokio::time::sleep(backoff.min(retry_timeout.saturating_sub(failed_at.elapsed()))).await;
        }
    }

    /// One attempt: signed now (credentials may have been refreshed), sent through the transport.
    async fn attempt(&self, request: &Request, digest: Option<&[u8; 32]>, number: usize) -> Result<Reply, Attempt> {
        let mut http: HttpRequest = http::Request::builder()
            .method(request.method.clone())
            .uri(&request.url)
            .extension(RequestKind(request.kind))
            .extension(crate::transport::Attempt(number))
            .body(match request.body.content_length() {
                0 => object_store::client::HttpRequestBody::empty(),
                _ => request.body.clone().into(),
            })
            .map_err(|e| Attempt::Local(ErrorKind::InvalidInput, format!("cannot be built: {e}")))?;
        http.headers_mut().extend(request.headers.clone());
        // object_store's credential providers retry on their own; what fails here is final.
        let credential = self.store.credentials().get_credential().await.map_err(|e| {
            let chain = crate::bucket::error_chain(&e);
            Attempt::Local(ErrorKind::Unauthenticated, format!("could not get credentials: {chain}"))
        })?;
        AwsAuthorizer::new(&credential, "s3", &self.options.region_name)
            .try_authorize(&mut http, digest.map(|d| d.as_slice()))
            .map_err(|e| Attempt::Local(ErrorKind::InvalidInput, format!("cannot be signed: {e}")))?;
        let response = self.http.execute(http).await.map_err(Attempt::http)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(Attempt::http)?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body, ambiguous: false, malformed: false })
    }

    /// The URL of `key` in the bucket.
    pub(crate) fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.bucket_url, encode_key(key))
    }
}

pub(crate) fn payload_sha256(payload: &PutPayload) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for chunk in payload.iter() {
        context.update(chunk);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// How long to wait before attempt `attempt` (from 1): doubling from 200 ms, at most 6.4 s.
pub(crate) fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6))
}

/// An S3 error document: its code and message, the only parts worth repeating (the rest, a canonical request
/// or a string to sign, can echo request headers, a session token among them).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ErrorDocument {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

impl ErrorDocument {
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        quick_xml::de::from_reader(body).ok()
    }
}

/// The answer to CreateMultipartUpload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InitiateMultipartUploadResult {
    pub(crate) upload_id: String,
}

/// The answer to ListParts: only whether there are parts matters.
#[derive(Debug, Deserialize)]
pub(crate) struct ListPartsResult {
    #[serde(rename = "Part", default)]
    pub(crate) parts: Vec<serde::de::IgnoredAny>,
}

/// The answer to UploadPartCopy.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CopyPartResult {
    #[serde(rename = "ETag")]
    pub(crate) etag: String,
}

/// The body of CompleteMultipartUpload.
#[derive(Debug, Serialize)]
#[serde(rename = "CompleteMultipartUpload", rename_all = "PascalCase")]
pub(crate) struct CompleteMultipartUpload {
    #[serde(rename = "Part")]
    pub(crate) parts: Vec<CompletedPart>,
}

/// One part of [`CompleteMultipartUpload`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CompletedPart {
    pub(crate) part_number: usize,
    #[serde(rename = "ETag")]
    pub(crate) etag: String,
    /// With `checksum = "sha256"`: the part's checksum, which S3 wants repeated here.
    #[serde(rename = "ChecksumSHA256", skip_serializing_if = "Option::is_none")]
    pub(crate) checksum_sha256: Option<String>,
}

/// The body of DeleteObjects.
#[derive(Debug, Serialize)]
#[serde(rename = "Delete", rename_all = "PascalCase")]
pub(crate) struct Delete {
    pub(crate) quiet: bool,
    #[serde(rename = "Object")]
    pub(crate) objects: Vec<ObjectIdentifier>,
}

/// One key of [`Delete`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ObjectIdentifier {
    pub(crate) key: String,
}

/// The answer to DeleteObjects: with `Quiet`, only the keys that failed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteResult {
    #[serde(rename = "Error", default)]
    pub(crate) errors: Vec<DeleteError>,
}

/// One failed key of [`DeleteResult`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteError {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// XML to a struct; a document that does not parse is a failure naming the request.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(request: &str, body: &[u8]) -> Result<T, Failure> {
    quick_xml::de::from_reader(body).map_err(|e| Failure {
        kind: ErrorKind::Other,
        retryable: false,
        message: format!("{request} answered a document that does not parse: {e}"),
    })
}

/// A struct to XML.
pub(crate) fn to_xml<T: Serialize>(value: &T) -> Result<String, Failure> {
    quick_xml::se::to_string(value).map_err(|e| Failure {
        kind: ErrorKind::Other,
        retryable: false,
        message: format!("cannot write a request document: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(encode_key("a b/ü&x~y.txt"), "a%20b/%C3%BC%26x~y.txt");
    }

    #[test]
    fn parts_are_counted_whatever_they_hold() {
        let none: ListPartsResult =
            parse("ListParts", b"<ListPartsResult><UploadId>u</UploadId></ListPartsResult>").unwrap();
        assert!(none.parts.is_empty());
        let xml = b"<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>\"e\"</ETag></Part></ListPartsResult>";
        let one: ListPartsResult = parse("ListParts", xml).unwrap();
        assert_eq!(one.parts.len(), 1);
    }

    #[test]
    fn documents_round_trip() {
        let xml = "<InitiateMultipartUploadResult><Bucket>b</Bucket><UploadId>a&amp;b</UploadId></InitiateMultipartUploadResult>";
        let parsed: InitiateMultipartUploadResult = parse("create", xml.as_bytes()).unwrap();
        assert_eq!(parsed.upload_id, "a&b");
        let body = to_xml(&CompleteMultipartUpload {
            parts: vec![
                CompletedPart { part_number: 1, etag: "\"e1\"".into(), checksum_sha256: None },
                CompletedPart { part_number: 2, etag: "\"e2\"".into(), checksum_sha256: Some("c2".into()) },
            ],
        })
        .unwrap();
        assert!(body.starts_with("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"), "{body}");
        assert!(
            body.contains("<PartNumber>2</PartNumber><ETag>\"e2\"</ETag><ChecksumSHA256>c2</ChecksumSHA256>"),
            "{body}"
        );
        let result: DeleteResult = parse(
            "delete",
            b"<DeleteResult><Error><Key>a</Key><Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>",
        )
        .unwrap();
        assert_eq!(result.errors[0].key, "a");
        assert_eq!(result.errors[0].code, "AccessDenied");
        let empty: DeleteResult = parse("delete", b"<DeleteResult></DeleteResult>").unwrap();
        assert!(empty.errors.is_empty());
    }

    #[test]
    fn error_answers_name_code_and_kind_only() {
        let reply = Reply {
            status: 403,
            headers: HeaderMap::new(),
            body: Bytes::from_static(
                b"<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message><StringToSign>x-amz-security-token:SECRET</StringToSign></Error>",
            ),
            ambiguous: false,
            malformed: false,
        };
        let failure = reply.failure("PutObject");
        assert_eq!(failure.kind, ErrorKind::Unauthenticated);
        assert!(!failure.message.contains("SECRET"), "{}", failure.message);
        assert!(failure.message.contains("SignatureDoesNotMatch"), "{}", failure.message);
        assert_eq!(reply.code().as_deref(), Some("SignatureDoesNotMatch"));
    }

    #[test]
    fn only_a_root_error_element_is_an_error_document() {
        assert!(has_error_document(b"<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code></Error>"));
        assert!(has_error_document(b"  \n<Error><Code>SlowDown</Code></Error>"));
        let result =
            b"<?xml version=\"1.0\"?><DeleteResult><Error><Key>a</Key><Code>AccessDenied</Code></Error></DeleteResult>";
        assert!(!has_error_document(result));
        assert!(!has_error_document(b"<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>"));
        assert!(!has_error_document(b""));
    }

    #[test]
    fn multipart_etags_are_md5s_of_part_md5s() {
        let parts = [Md5::digest(b"ab").into(), Md5::digest(b"c").into()];
        let mut joined = Vec::new();
        joined.extend_from_slice(&Md5::digest(b"ab"));
        joined.extend_from_slice(&Md5::digest(b"c"));
        assert_eq!(multipart_etag(&parts), format!("{}-2", hex::encode(Md5::digest(&joined))));
    }
}
