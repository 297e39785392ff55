//! Writing objects, never replacing one unless asked to, and answering truthfully.
//!
//! - Small content: one PutObject with `If-None-Match: *`; on 412 the next alternative name is tried.
//! - Large content that can be read again (bytes, a file): claimed, then uploaded in parts straight to its name
//!   and completed with `If-None-Match: *` ([`Inner::publish_once`]).
//! - Large one-shot streams: a multipart upload (see `upload.rs`) to a staging key, published by a server-side
//!   multipart copy whose CompleteMultipartUpload carries `If-None-Match: *`; on 412 the copy is aborted and the
//!   next name tried, without uploading again. Parts are copied by ranges in parallel, so objects of any size
//!   publish.
//! - Every creating request carries a random save token in its metadata ([`SAVE_TOKEN`]). When an attempt was
//!   sent and its answer lost (a timeout, a reset, a 5xx), and a later attempt answers 412 or `NoSuchUpload` or
//!   fails, a HEAD tells whether the object there is this save's own: then the save succeeded, and says so.
//! - Where the server ignores `If-None-Match` (`conditional_writes = "off"`, or found so by the probe), a HEAD
//!   before each write finds a free name; such a storage reports `atomic_create = false`.

use crate::Inner;
use crate::options::{ChecksumMode, ConditionalWrites};
use crate::protocol::{
    CompleteMultipartUpload, CompletedPart, CopyPartResult, Failure, InitiateMultipartUploadResult, ListPartsResult,
    MAX_PUT, Request, SAVE_TOKEN, base64_encode, encode_key, encode_query, parse, to_xml,
};
use crate::upload::Rereadable;
use futures::stream::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method};
use object_store::PutPayload;
use std::sync::Arc;
use storage_core::{Error, ErrorKind, Result, SaveOptions};

/// What writing under one name came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Published,
    Taken,
}

/// The claims this process holds, by bucket URL and claim key.
static LOCAL_CLAIMS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// A claim held in this process; released when dropped (a save that ends, fails or is cancelled).
struct LocalClaim(String);

impl LocalClaim {
    fn take(key: String) -> Option<Self> {
        let mut claims = LOCAL_CLAIMS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Built only when taken: a `LocalClaim` dropped here would release someone else's claim (and lock again).
        if claims.insert(key.clone()) { Some(LocalClaim(key)) } else { None }
    }
}

impl Drop for LocalClaim {
    fn drop(&mut self) {
        LOCAL_CLAIMS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
    }
}

/// A claim object this save stored. It is deleted when the claim ends, also when the save is dropped halfway
/// (its future cancelled): then from a task of its own. (A save dropped while its claim's PutObject was on the way
/// may leave that claim, which only makes saves pass over the name until the staging lifecycle rule expires it.)
struct HeldClaim {
    inner: Arc<Inner>,
    key: String,
    released: bool,
}

impl HeldClaim {
    async fn release(mut self) {
        // Marked first: cancelled during its DELETE, the claim must not be deleted again later, when it may
        // be another save's.
        self.released = true;
        let _ = self.inner.delete_key(&self.key).await;
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (inner, key) = (self.inner.clone(), std::mem::take(&mut self.key));
        self.inner.clean_up_later(async move {
            let _ = inner.delete_key(&key).await;
        });
    }
}

/// The multipart uploads this process started and has not completed or aborted yet, by upload ID (unique per
/// bucket, and in practice across buckets): an upload of a lost CreateMultipartUpload answer is told from the
/// uploads of this process's other saves of the same key by not being here.
static LIVE_UPLOADS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

struct LiveUploads;

impl LiveUploads {
    fn begin(upload_id: &str) {
        LIVE_UPLOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(upload_id.to_owned());
    }

    fn end(upload_id: &str) {
        LIVE_UPLOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(upload_id);
    }

    fn contains(upload_id: &str) -> bool {
        LIVE_UPLOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(upload_id)
    }
}

impl Inner {
    /// Aborts the uploads of `key` that a CreateMultipartUpload whose answer was lost may have started: those
    /// pending without a part that no save of this process holds (a lost upload never gets a part: nobody knows
    /// its ID). Best effort: what it misses, `storages cleanup` and the lifecycle rule remove. (The pending
    /// uploads' start times cannot narrow it down: moto reports one fixed time for all. A save of the same key in
    /// another process, caught between starting its upload and its first part, would lose its upload and fail.)
    async fn abort_lost_uploads(&self, key: &str) {
        let Ok(pending) = self.pending_uploads(key).await else { return };
        for upload in pending {
            if upload.key == key
                && !LiveUploads::contains(&upload.upload_id)
                && self.has_no_parts(&upload.key, &upload.upload_id).await
            {
                let _ = self.abort_upload(&upload.key, &upload.upload_id).await;
            }
        }
    }

    /// Whether the upload `upload_id` of `key` holds no part yet (ListParts); `false` when that cannot be told.
    async fn has_no_parts(&self, key: &str, upload_id: &str) -> bool {
        let url = format!("{}?uploadId={}&max-parts=1", self.object_url(key), encode_query(upload_id));
        match self.send(Request::new("LIST_PARTS", Method::GET, url)).await {
            Ok(reply) if reply.ok() => {
                parse::<ListPartsResult>("ListParts", &reply.body).is_ok_and(|result| result.parts.is_empty())
            }
            _ => false,
        }
    }

    /// Records that a save dropped halfway stored `name` after all (with `token`).
    fn stored_after_drop(&self, name: &str, key: &str, token: String) {
        if key != self.key(name) {
            return;
        }
        self.remember_save(name, key, token);
        self.stored_after_drop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name.to_owned());
    }

    /// Runs `cleanup` (of a save dropped halfway) in a task of its own, which [`Inner::finish_cleanups`] waits for, where
    /// there is a runtime to run it; without one, what it would remove is left to the lifecycle rules.
    fn clean_up_later(&self, cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.cleanups.spawn_on(cleanup, &runtime);
        }
    }

    /// Waits for the cleanups of dropped saves started so far; the names such saves stored after all.
    pub(crate) async fn finish_cleanups(&self) -> Vec<String> {
        self.cleanups.close();
        self.cleanups.wait().await;
        self.cleanups.reopen();
        std::mem::take(&mut *self.stored_after_drop.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

fn md5_of(text: &str) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(text.as_bytes()).into()
}

/// A PutObject on its way; dropped before its answer was settled, it looks (in a task) whether the object
/// arrived, so that [`Inner::finish_cleanups`] can tell the caller a dropped save stored it after all.
struct PendingPut {
    inner: Arc<Inner>,
    name: String,
    key: String,
    token: String,
    done: bool,
}

impl Drop for PendingPut {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (inner, name, key, token) = (self.inner.clone(), self.name.clone(), self.key.clone(), self.token.clone());
        self.inner.clean_up_later(async move {
            // The request may still be on its way to the object: look a few times.
            for look in 0..3u64 {
                if look > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(500 * look)).await;
                }
                if inner.holds_token(&key, &token).await {
                    // A claim of a save that no longer runs is deleted; a file is reported.
                    if key.starts_with(&inner.staging_prefix) {
                        let _ = inner.delete_key(&key).await;
                    } else {
                        inner.stored_after_drop(&name, &key, token);
                    }
                    return;
                }
            }
        });
    }
}

/// How many saves a storage remembers the tokens of (see [`Inner::remember_save`]).
const MAX_REMEMBERED: usize = 200_000;

/// A random token for [`SAVE_TOKEN`].
fn token() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(24).collect()
}

impl Inner {
    /// Stores `bytes` under `name` or the first free alternative; with `overwrite`, under `name`, replacing
    /// what is there.
    pub(crate) async fn publish_bytes(
        self: &Arc<Self>,
        name: &str,
        bytes: PutPayload,
        overwrite: bool,
        options: &Arc<SaveOptions>,
    ) -> Result<String> {
        if overwrite {
            self.put_object(name, &self.key(name), bytes, false, options).await?;
            return Ok(name.into());
        }
        self.first_free(name, options, |candidate| {
            let bytes = bytes.clone();
            async move { self.put_object(&candidate, &self.key(&candidate), bytes, true, options).await }
        })
        .await
    }

    /// One PutObject of `payload` to `key`; with `create`, only if `key` is free.
    async fn put_object(
        self: &Arc<Self>,
        name: &str,
        key: &str,
        payload: PutPayload,
        create: bool,
        options: &SaveOptions,
    ) -> Result<Outcome> {
        let fail = |failure: Failure| failure.into_error(self, "save", name);
        if payload.content_length() as u64 > MAX_PUT {
            return Err(Error::backend(
                &self.alias,
                "save",
                name,
                ErrorKind::InvalidInput,
                "one PutObject stores at most 5 GiB: lower multipart_threshold",
            ));
        }
        let conditional = create && self.conditional_writes().await.map_err(fail)?;
        let token = token();
        let mut request = Request::new("PUT", Method::PUT, self.object_url(key))
            .headers(self.layer_headers(key, options))
            .body(payload);
        request = self.checksum(request, true).map_err(fail)?.header(SAVE_TOKEN, &token).map_err(fail)?;
        if conditional {
            request = request.header(http::header::IF_NONE_MATCH, "*").map_err(fail)?;
            request.retry_conflict = true;
        }
        // Dropped before it answers (Ctrl-C), the PUT may still be carried out: found out later, by its token.
        let mut pending = PendingPut { inner: self.clone(), name: name.into(), key: key.into(), token, done: false };
        let outcome = self.send(request).await;
        let outcome = self.settle(name, key, create.then_some(pending.token.as_str()), outcome, "PutObject").await;
        pending.done = true;
        if matches!(outcome, Ok(Outcome::Published)) {
            self.remember_save(name, key, pending.token.clone());
        }
        outcome
    }

    /// Remembers that this storage stored `name` (at `key`) with the save token `token`: what tells its
    /// [record of MD5s](crate::list) that an object it lists is the one stored here. Claims and staged objects
    /// are not remembered.
    pub(crate) fn remember_save(&self, name: &str, key: &str, token: String) {
        if key != self.key(name) || key.starts_with(&self.staging_prefix) {
            return;
        }
        let mut saved = self.saved_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a save forgotten here is only copied again by a later collectstatic.
        if saved.len() >= MAX_REMEMBERED && !saved.contains_key(name) {
            saved.clear();
        }
        saved.insert(name.to_owned(), token);
    }

    /// What a creating request came to: published, the name taken, or a failure, after checking the object
    /// when an earlier attempt may have stored it.
    async fn settle(
        &self,
        name: &str,
        key: &str,
        token: Option<&str>,
        outcome: Result<crate::protocol::Reply, Failure>,
        request: &str,
    ) -> Result<Outcome> {
        let (ambiguous, result) = match outcome {
            Ok(reply) if reply.ok() => return Ok(Outcome::Published),
            Ok(reply) if reply.status == 412 => (reply.ambiguous, Ok(Outcome::Taken)),
            Ok(reply) => (reply.ambiguous || reply.status >= 500, Err(reply.failure(request))),
            Err(failure) => (true, Err(failure)),
        };
        if ambiguous {
            if let Some(token) = token {
                // A request that timed out may still be carried out (a server assembling a large object): look
                // again for a while before answering that it failed.
                let looks = match &result {
                    Err(failure) if failure.kind == ErrorKind::Timeout => 4,
                    _ => 1,
                };
                for look in 0..looks {
                    if look > 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(1 << look)).await;
                    }
                    if self.holds_token(key, token).await {
                        return Ok(Outcome::Published);
                    }
                }
            }
        }
        result.map_err(|failure| failure.into_error(self, "save", name))
    }

    /// Whether the object at `key` was written by the save holding `token`. Any failure to find out counts as
    /// "no": the caller then reports the failure it has.
    async fn holds_token(&self, key: &str, token: &str) -> bool {
        let head = Request::new("HEAD", Method::HEAD, self.object_url(key));
        match self.send(head).await {
            Ok(reply) if reply.ok() => reply.header(SAVE_TOKEN) == Some(token),
            _ => false,
        }
    }

    /// The headers of an object stored under `key` by a save with `options`: none for staged uploads, so that a
    /// storage class, an ACL or metadata apply to published objects only.
    fn layer_headers(&self, key: &str, options: &SaveOptions) -> HeaderMap {
        if key.starts_with(&self.staging_prefix) { HeaderMap::new() } else { self.headers.for_save(key, options) }
    }

    /// Adds the configured checksum of the body: `single` for a PutObject, else a part.
    ///
    /// A part gets no `Content-MD5`: its SHA-256 already signs the request (`x-amz-content-sha256`), which S3
    /// checks against the body, and a second digest of every byte cost a large save 10 to 15 % of its speed
    /// where the server shares the CPU (see `cargo xtask bench`). Only `sha256` adds a flexible checksum to
    /// parts, with the digest that signs them.
    pub(crate) fn checksum(&self, request: Request, single: bool) -> Result<Request, Failure> {
        match (self.options.checksum, single) {
            (ChecksumMode::None, _) | (ChecksumMode::Md5 | ChecksumMode::Crc32, false) => Ok(request),
            (ChecksumMode::Md5, true) => request.content_md5(),
            (ChecksumMode::Crc32, true) => {
                let mut hasher = crc32fast::Hasher::new();
                for chunk in request.body.iter() {
                    hasher.update(chunk);
                }
                let value = base64_encode(&hasher.finalize().to_be_bytes());
                request.header("x-amz-checksum-crc32", &value)
            }
            (ChecksumMode::Sha256, _) => {
                // The same digest signs the request (see `send`).
                let digest = crate::protocol::payload_sha256(&request.body);
                let mut request = request.header("x-amz-checksum-sha256", &base64_encode(&digest))?;
                request.sha256 = Some(digest);
                Ok(request)
            }
        }
    }

    /// Whether this storage's server checks `If-None-Match: *` (asked once with `auto`).
    pub(crate) async fn conditional_writes(&self) -> Result<bool, Failure> {
        match self.options.conditional_writes {
            ConditionalWrites::On => Ok(true),
            ConditionalWrites::Off => Ok(false),
            ConditionalWrites::Auto => {
                self.conditional.get_or_try_init(|| self.probe_conditional_writes()).await.copied()
            }
        }
    }

    /// Stores a scratch object, then tries to create it again with `If-None-Match: *`: a server that checks the
    /// condition answers 412. The scratch object is deleted.
    async fn probe_conditional_writes(&self) -> Result<bool, Failure> {
        let key = self.key(&format!("{}/probe-{}", crate::upload::STAGING_DIR, token()));
        let put = || Request::new("PROBE", Method::PUT, self.object_url(&key)).body(PutPayload::from_static(b"probe"));
        let first = self.send(put()).await?;
        if !first.ok() {
            return Err(first.failure("PutObject (probing conditional writes)"));
        }
        let second = self.send(put().header(http::header::IF_NONE_MATCH, "*")?).await;
        let _ = self.send(Request::new("PROBE", Method::DELETE, self.object_url(&key))).await;
        let second = second?;
        match second.status {
            412 => Ok(true),
            // Stored again over the scratch object (the header is ignored), or refused (the service does not
            // check it either).
            status if second.ok() || status == 400 || status == 501 => {
                tracing::warn!(
                    storage = %self.alias,
                    endpoint = %self.endpoint,
                    status,
                    "the service does not check If-None-Match: saves look for a free name with HEAD first, which is \
                     not atomic (set conditional_writes = \"off\" to skip this probe)"
                );
                Ok(false)
            }
            _ => Err(second.failure("a conditional PutObject (probing conditional writes)")),
        }
    }

    /// Copies the staged object (`staged_key`, `size` bytes) to `name` or the first free alternative.
    /// Each name is looked at (HEAD) under its claim before the copy: a service may check `If-None-Match` on
    /// PutObject (what the probe finds out) but not on CompleteMultipartUpload.
    pub(crate) async fn publish_copy(
        self: &Arc<Self>,
        name: &str,
        staged_key: &str,
        size: u64,
        options: &Arc<SaveOptions>,
    ) -> Result<String> {
        self.first_free(name, options, |candidate| async move {
            self.claimed(&candidate, async {
                let key = self.key(&candidate);
                let upload = Multipart::create(self, &candidate, &key, true, true, options).await?;
                let parts = upload.copy_parts(staged_key, size).await;
                let parts = match parts {
                    Ok(parts) => parts,
                    Err(failure) => {
                        upload.abort().await;
                        return Err(failure.into_error(self, "save", &candidate));
                    }
                };
                upload.complete(parts).await
            })
            .await
        })
        .await
    }

    /// Runs `complete` (the upload that completes `name`) while holding the claim of `name`: a conditional
    /// PutObject of a claim object, so that no two saves of this crate complete one name at once. A name whose
    /// claim is held is [`Outcome::Taken`].
    async fn claimed(
        self: &Arc<Self>,
        name: &str,
        complete: impl std::future::Future<Output = Result<Outcome>>,
    ) -> Result<Outcome> {
        let claim = self.key(&format!("{}/claims/{}", crate::upload::STAGING_DIR, hex::encode(md5_of(name))));
        // Within this process the claim is exact, also where the server's conditional PutObject is not atomic
        // (s3s-fs); across processes it is as atomic as the server makes it.
        let Some(_held) = LocalClaim::take(format!("{}/{claim}", self.bucket_url)) else { return Ok(Outcome::Taken) };
        if self.put_object(name, &claim, PutPayload::new(), true, &SaveOptions::default()).await? == Outcome::Taken {
            return Ok(Outcome::Taken);
        }
        let held = HeldClaim { inner: self.clone(), key: claim, released: false };
        // Looked at while the claim is held: a save that completed the name before has released its claim by
        // now, so what this HEAD sees is final among this crate's saves.
        let outcome = match self.exists_key(name).await {
            Ok(true) => Ok(Outcome::Taken),
            Ok(false) => complete.await,
            Err(error) => Err(error),
        };
        held.release().await;
        outcome
    }

    /// Stores large `content` (`size` bytes) under `name` or the first free alternative, uploading its parts
    /// straight to that name: every byte is written once. Before uploading, a save claims the name with a
    /// conditional PutObject of a claim object (`.storages-staging/claims/<md5 of the name>`), which is atomic
    /// where conditional PutObjects are; so two saves of this crate never complete the same name at once, even
    /// where the server checks `If-None-Match` on CompleteMultipartUpload without atomicity (moto, s3s-fs). The
    /// Complete still carries `If-None-Match: *` against other writers; when it finds the name taken, the content
    /// is read again and uploaded under the next name. The claim is deleted afterwards; one a crash leaves behind
    /// only makes saves pass over that name until the staging lifecycle rule expires it.
    pub(crate) async fn publish_once(
        self: &Arc<Self>,
        name: &str,
        content: Rereadable,
        size: u64,
        options: &Arc<SaveOptions>,
    ) -> Result<String> {
        let mut attempts = 0;
        for candidate in options.candidates(&self.alias, name, self.options.alternative_names, false)? {
            attempts += 1;
            let upload = crate::upload::upload_once(self, &candidate, &content, size, options);
            if self.claimed(&candidate, upload).await? == Outcome::Published {
                return Ok(candidate);
            }
        }
        Err(Error::NoAvailableName { storage: self.alias.clone(), name: name.into(), attempts })
    }

    /// Tries `attempt` on `name`, then on its alternatives while they are taken.
    async fn first_free<F, Fut>(&self, name: &str, options: &SaveOptions, attempt: F) -> Result<String>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome>>,
    {
        let conditional = self.conditional_writes().await.map_err(|f| f.into_error(self, "save", name))?;
        let mut attempts = 0;
        for candidate in options.candidates(&self.alias, name, self.options.alternative_names, false)? {
            attempts += 1;
            // Once a name was taken, look before sending the content again: a HEAD is cheaper than an upload or
            // a copy. Where the server ignores conditions, the HEAD is all there is.
            if (attempts > 1 || !conditional) && self.exists_key(&candidate).await? {
                continue;
            }
            if attempt(candidate.clone()).await? == Outcome::Published {
                return Ok(candidate);
            }
        }
        Err(Error::NoAvailableName { storage: self.alias.clone(), name: name.into(), attempts })
    }

    async fn exists_key(&self, name: &str) -> Result<bool> {
        let reply = self.send(Request::new("HEAD", Method::HEAD, self.object_url(&self.key(name)))).await;
        let reply = reply.map_err(|failure| failure.into_error(self, "save", name))?;
        match reply.status {
            404 => Ok(false),
            _ if reply.ok() => Ok(true),
            _ => Err(reply.failure("HEAD").into_error(self, "save", name)),
        }
    }
}

/// A multipart upload in progress.
pub(crate) struct Multipart {
    inner: Arc<Inner>,
    name: String,
    key: String,
    upload_id: String,
    token: String,
    /// Completed only if the key is free.
    create: bool,
    /// Completed or aborted: nothing is left to abort when it is dropped.
    settled: std::sync::atomic::AtomicBool,
    /// The Complete was sent: dropped now, the upload may be complete already.
    completing: std::sync::atomic::AtomicBool,
}

impl Drop for Multipart {
    /// An upload neither completed nor aborted (its save was dropped halfway: the future cancelled) is aborted
    /// from a task of its own, so that no pending upload keeps its parts.
    fn drop(&mut self) {
        LiveUploads::end(&self.upload_id);
        if self.settled.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let (inner, key, upload_id) = (self.inner.clone(), self.key.clone(), self.upload_id.clone());
        let (name, token) = (self.name.clone(), self.token.clone());
        let completing = self.completing.load(std::sync::atomic::Ordering::Acquire);
        self.inner.clean_up_later(async move {
            // The abort settles it either way: once it is through, the Complete can no longer succeed; if the
            // upload is gone already, the Complete went through (or a retry's abort did: the token tells).
            let gone = !matches!(inner.abort_upload_reporting(&key, &upload_id).await, Ok(true));
            if completing && gone && inner.holds_token(&key, &token).await {
                inner.stored_after_drop(&name, &key, token);
            }
        });
    }
}

impl Multipart {
    /// Starts an upload to `key` (for `name`); with `create`, its completion will not replace an object.
    /// With `copy`, the parts will be copied (UploadPartCopy), and carry no checksum of their own.
    pub(crate) async fn create(
        inner: &Arc<Inner>,
        name: &str,
        key: &str,
        create: bool,
        copy: bool,
        options: &SaveOptions,
    ) -> Result<Self> {
        let fail = |failure: Failure| failure.into_error(inner, "save", name);
        let create = create && inner.conditional_writes().await.map_err(fail)?;
        let token = token();
        let mut request = Request::new("CREATE_MULTIPART", Method::POST, format!("{}?uploads", inner.object_url(key)))
            .headers(inner.layer_headers(key, options))
            .header(SAVE_TOKEN, &token)
            .map_err(fail)?;
        if inner.options.checksum == ChecksumMode::Sha256 && !copy {
            request = request.header("x-amz-checksum-algorithm", "SHA256").map_err(fail)?;
        }
        let outcome = inner.send(request).await;
        // An attempt whose answer was lost may have started an upload nobody knows the ID of: find and abort it.
        let lost = match &outcome {
            Ok(reply) => reply.ambiguous || (!reply.ok() && reply.status >= 500),
            Err(_) => true,
        };
        let upload_id = outcome.and_then(|reply| match reply.ok() {
            true => parse::<InitiateMultipartUploadResult>("CreateMultipartUpload", &reply.body).map(|r| r.upload_id),
            false => Err(reply.failure("CreateMultipartUpload")),
        });
        if let Ok(upload_id) = &upload_id {
            LiveUploads::begin(upload_id);
        }
        if lost {
            inner.abort_lost_uploads(key).await;
        }
        let upload_id = upload_id.map_err(fail)?;
        Ok(Multipart {
            inner: inner.clone(),
            name: name.into(),
            key: key.into(),
            upload_id,
            token,
            create,
            settled: Default::default(),
            completing: Default::default(),
        })
    }

    fn part_url(&self, number: usize) -> String {
        format!("{}?partNumber={number}&uploadId={}", self.inner.object_url(&self.key), encode_query(&self.upload_id))
    }

    fn upload_url(&self) -> String {
        format!("{}?uploadId={}", self.inner.object_url(&self.key), encode_query(&self.upload_id))
    }

    /// Uploads part `number` (from 1); sending a part twice does no harm, so every failure is retried.
    pub(crate) fn put_part(
        &self,
        number: usize,
        payload: PutPayload,
    ) -> impl std::future::Future<Output = Result<CompletedPart, Failure>> + Send + 'static {
        let inner = self.inner.clone();
        let url = self.part_url(number);
        async move {
            let request = Request::new("UPLOAD_PART", Method::PUT, url).body(payload);
            let request = inner.checksum(request, false)?;
            // With `checksum = "sha256"`, the part's checksum goes into the Complete too.
            let checksum_sha256 = request.sha256.map(|digest| base64_encode(&digest));
            let reply = inner.send(request).await?;
            if !reply.ok() {
                return Err(reply.failure("UploadPart"));
            }
            let etag = reply.header("etag").map(String::from).ok_or_else(|| Failure {
                kind: ErrorKind::Other,
                retryable: false,
                message: "UploadPart answered without an ETag".into(),
            })?;
            Ok(CompletedPart { part_number: number, etag, checksum_sha256 })
        }
    }

    /// Copies `source` (`size` bytes) into the upload by ranges, a few at a time.
    async fn copy_parts(&self, source: &str, size: u64) -> Result<Vec<CompletedPart>, Failure> {
        let part = crate::protocol::copy_part_size(&self.inner.options, size);
        let ranges: Vec<(u64, u64)> =
            (0..size.div_ceil(part)).map(|i| (i * part, ((i + 1) * part).min(size) - 1)).collect();
        let copy_source = format!("/{}/{}", self.inner.options.bucket_name, encode_key(source));
        futures::stream::iter(ranges.into_iter().enumerate())
            .map(|(index, (first, last))| {
                let request = Request::new("UPLOAD_PART_COPY", Method::PUT, self.part_url(index + 1))
                    .header("x-amz-copy-source", &copy_source)
                    .and_then(|r| r.header("x-amz-copy-source-range", &format!("bytes={first}-{last}")));
                async move {
                    let reply = self.inner.send(request?).await?;
                    if !reply.ok() {
                        return Err(reply.failure("UploadPartCopy"));
                    }
                    let result: CopyPartResult = parse("UploadPartCopy", &reply.body)?;
                    Ok(CompletedPart { part_number: index + 1, etag: result.etag, checksum_sha256: None })
                }
            })
            .buffered(self.inner.options.max_concurrency)
            .try_collect()
            .await
    }

    /// Completes the upload with `parts` (in any order). With `create`, a taken name answers
    /// [`Outcome::Taken`] and the upload is aborted; any failure aborts it too.
    pub(crate) async fn complete(&self, mut parts: Vec<CompletedPart>) -> Result<Outcome> {
        let inner = &self.inner;
        let fail = |failure: Failure| failure.into_error(inner, "save", &self.name);
        parts.sort_by_key(|part| part.part_number);
        let body = to_xml(&CompleteMultipartUpload { parts }).map_err(fail)?;
        let mut request = Request::new("COMPLETE_MULTIPART", Method::POST, self.upload_url()).body(body.into_bytes());
        if self.create {
            request = request.header(http::header::IF_NONE_MATCH, "*").map_err(fail)?;
            request.retry_conflict = true;
        }
        self.completing.store(true, std::sync::atomic::Ordering::Release);
        let outcome = inner.send(request).await;
        // A lost answer to an earlier attempt: the upload may be complete, and this one answer NoSuchUpload.
        let outcome = match outcome {
            Ok(reply) if reply.status == 404 && reply.code().as_deref() == Some("NoSuchUpload") => {
                Ok(crate::protocol::Reply { ambiguous: true, ..reply })
            }
            other => other,
        };
        let settled = inner.settle(&self.name, &self.key, Some(&self.token), outcome, "CompleteMultipartUpload").await;
        if matches!(settled, Ok(Outcome::Published)) {
            self.settled.store(true, std::sync::atomic::Ordering::Release);
            inner.remember_save(&self.name, &self.key, self.token.clone());
        } else {
            self.abort().await;
        }
        settled
    }

    /// Aborts the upload, so that no part is left stored; best effort (the error that led here is the one to
    /// report).
    pub(crate) async fn abort(&self) {
        let _ = self.inner.abort_upload(&self.key, &self.upload_id).await;
        self.settled.store(true, std::sync::atomic::Ordering::Release);
        LiveUploads::end(&self.upload_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_claim_is_held_once_and_released_when_dropped() {
        let first = LocalClaim::take("bucket/claims/a".into()).expect("free");
        assert!(LocalClaim::take("bucket/claims/a".into()).is_none(), "held");
        let other = LocalClaim::take("bucket/claims/b".into()).expect("another name is free");
        assert!(LocalClaim::take("bucket/claims/a".into()).is_none(), "a refused claim releases nothing");
        drop(first);
        assert!(LocalClaim::take("bucket/claims/a".into()).is_some(), "released");
        drop(other);
    }
}
