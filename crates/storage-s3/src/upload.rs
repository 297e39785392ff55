//! Saving: the bytes written to a [`FileWriter`] flow to a task that uploads them as they come. Content up to
//! `multipart_threshold` is kept and published in one request; larger content is uploaded in parts, with at most
//! `max_concurrency` parts in flight, to a private staging key under `<location>/.storages-staging/` (or, with
//! `file_overwrite`, straight to its name), then published (see `publish.rs`). A failed or dropped upload is
//! aborted.

use crate::Inner;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload, UploadPart};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use storage_core::{Error, FileWriter, Result, Upload};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

/// The directory (under `location`) of staged multipart uploads; `listdir` hides it.
pub(crate) const STAGING_DIR: &str = ".storages-staging";

/// The most bytes one piece of the data channel carries: with the channel's 4 places, at most 4 MiB are in
/// transit between the writer and the upload task.
const MAX_PIECE: usize = 1024 * 1024;

/// The most parts a multipart upload may have.
const MAX_PARTS: u64 = 10_000;

/// The part size of an upload of `size` bytes known in advance (which its ETag reflects).
pub(crate) fn known_size_part(options: &crate::S3Options, size: u64) -> u64 {
    options.multipart_chunksize.max(size.div_ceil(MAX_PARTS))
}

/// A writer for `name`: bytes flow to a task that uploads them as they come. `size`, when known, sizes the parts
/// so that any size fits in S3's 10,000 parts.
/// With `replace`, the content goes under exactly `name`, replacing an object there.
pub(crate) fn writer(inner: Arc<Inner>, name: &str, size: Option<u64>, replace: bool) -> FileWriter {
    let (data, receiver) = mpsc::channel(4);
    let (commit, committed) = oneshot::channel();
    let overwrite = replace || inner.options.file_overwrite;
    let task = tokio::spawn(run(inner.clone(), name.to_owned(), size, overwrite, receiver, committed));
    let upload = S3Upload {
        storage: inner.alias.clone(),
        name: name.into(),
        data: PollSender::new(data),
        commit: Some(commit),
        task,
    };
    let key = inner.key(name);
    if inner.layer.headers.gzips(&key) {
        let gzip = GzipUpload(async_compression::tokio::write::GzipEncoder::new(upload));
        return FileWriter::new(&inner.alias, name, Box::new(gzip));
    }
    FileWriter::new(&inner.alias, name, Box::new(upload))
}

struct S3Upload {
    storage: String,
    name: String,
    data: PollSender<Bytes>,
    commit: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<String>>,
}

impl S3Upload {
    /// The upload task's own error, once it has stopped taking data.
    fn failure(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match Pin::new(&mut self.task).poll(cx) {
            Poll::Ready(Ok(Err(error))) => Poll::Ready(std::io::Error::other(error)),
            Poll::Ready(_) => Poll::Ready(std::io::ErrorKind::BrokenPipe.into()),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl AsyncWrite for S3Upload {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.data.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let piece = &buf[..buf.len().min(MAX_PIECE)];
                match self.data.send_item(Bytes::copy_from_slice(piece)) {
                    Ok(()) => Poll::Ready(Ok(piece.len())),
                    Err(_) => self.failure(cx).map(Err),
                }
            }
            Poll::Ready(Err(_)) => self.failure(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Upload for S3Upload {
    fn commit(mut self: Box<Self>) -> futures::future::BoxFuture<'static, Result<String>> {
        Box::pin(async move {
            if let Some(commit) = self.commit.take() {
                let _ = commit.send(());
            }
            self.data.close();
            let S3Upload { task, storage, name, .. } = *self;
            task.await.unwrap_or_else(|e| Err(Error::io(&storage, "save", &name, std::io::Error::other(e))))
        })
    }
}

/// Gzips what is written, then commits the compressed stream.
struct GzipUpload(async_compression::tokio::write::GzipEncoder<S3Upload>);

impl AsyncWrite for GzipUpload {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Upload for GzipUpload {
    fn commit(mut self: Box<Self>) -> futures::future::BoxFuture<'static, Result<String>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            // Writes the gzip trailer; the inner upload's shutdown does nothing.
            if let Err(error) = self.0.shutdown().await {
                let inner = self.0.get_ref();
                return Err(Error::io(&inner.storage, "save", &inner.name, error));
            }
            Box::new(self.0.into_inner()).commit().await
        })
    }
}

/// Bytes received and not sent yet, kept as the pieces they arrived in: nothing is copied or regrouped, so memory
/// is the bytes themselves.
#[derive(Default)]
struct Pending {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push(piece);
    }

    /// The first `n` bytes (or all, if fewer), splitting the piece that crosses the boundary without copying.
    fn take(&mut self, n: usize) -> PutPayload {
        let mut taken = Vec::new();
        let mut remaining = n.min(self.len);
        self.len -= remaining;
        let mut rest = std::mem::take(&mut self.pieces).into_iter();
        while remaining > 0 {
            let Some(mut piece) = rest.next() else { break };
            if piece.len() > remaining {
                self.pieces.push(piece.split_off(remaining));
            }
            remaining -= piece.len();
            taken.push(piece);
        }
        self.pieces.extend(rest);
        taken.into_iter().collect()
    }
}

/// The upload task: buffers up to the threshold, then streams parts; publishes on commit, aborts otherwise.
async fn run(
    inner: Arc<Inner>,
    name: String,
    size: Option<u64>,
    overwrite: bool,
    mut data: mpsc::Receiver<Bytes>,
    mut committed: oneshot::Receiver<()>,
) -> Result<String> {
    let threshold = usize::try_from(inner.options.multipart_threshold).unwrap_or(usize::MAX);
    let mut pending = Pending::default();
    let mut parts: Option<Parts> = None;
    // The writer sends `commit` before closing the data channel; if it is dropped instead, the commit sender
    // goes with it, and the upload stops at once rather than after what is queued.
    let mut commit = false;
    inner.ready().await?;
    loop {
        let bytes = tokio::select! {
            biased;
            signal = &mut committed, if !commit => match signal {
                Ok(()) => {
                    commit = true;
                    continue;
                }
                Err(_) => break,
            },
            bytes = data.recv() => bytes,
        };
        let Some(bytes) = bytes else {
            // The data channel closed after the select looked at the signal: the signal is settled by now
            // (sent before the close, or dropped with the writer), so wait for it rather than assume.
            if !commit {
                commit = (&mut committed).await.is_ok();
            }
            break;
        };
        match parts.as_mut() {
            Some(parts) => parts.write(bytes).await?,
            None => {
                pending.push(bytes);
                if pending.len > threshold {
                    let pending = std::mem::take(&mut pending);
                    let mut started = Parts::start(inner.clone(), &name, size, overwrite, pending).await?;
                    started.send_full_parts().await?;
                    parts = Some(started);
                }
            }
        }
    }
    match (parts, commit) {
        (Some(mut parts), false) => {
            parts.abort().await;
            Err(cancelled(&inner, &name))
        }
        (None, false) => Err(cancelled(&inner, &name)),
        (None, true) => {
            let len = pending.len;
            inner.publish_bytes(&name, pending.take(len), overwrite).await
        }
        (Some(parts), true) => parts.finish().await,
    }
}

fn cancelled(inner: &Inner, name: &str) -> Error {
    Error::Backend {
        storage: inner.alias.clone(),
        operation: "save",
        name: name.into(),
        message: "the writer was dropped before commit; nothing was stored".into(),
        source: None,
    }
}

/// A multipart upload in progress, with a bounded number of parts in flight.
struct Parts {
    inner: Arc<Inner>,
    name: String,
    target: Path,
    staged: bool,
    upload: Box<dyn MultipartUpload>,
    pending: Pending,
    in_flight: FuturesUnordered<UploadPart>,
    /// The content's size, when known in advance.
    size: Option<u64>,
    /// Parts sent so far.
    sent: u64,
}

impl Parts {
    async fn start(
        inner: Arc<Inner>,
        name: &str,
        size: Option<u64>,
        overwrite: bool,
        pending: Pending,
    ) -> Result<Self> {
        let staged = !overwrite;
        let key = if staged {
            let random: String = std::iter::repeat_with(fastrand::alphanumeric).take(20).collect();
            inner.key(&format!("{STAGING_DIR}/{random}"))
        } else {
            inner.key(name)
        };
        let target = inner.path(name, &key)?;
        let upload = inner.store.put_multipart(&target).await.map_err(|e| inner.error("save", name, e))?;
        let in_flight = FuturesUnordered::new();
        Ok(Parts { inner, name: name.into(), target, staged, upload, pending, in_flight, size, sent: 0 })
    }

    /// Takes `bytes`, sending every full part; aborts the upload on failure.
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.pending.push(bytes);
        self.send_full_parts().await
    }

    async fn send_full_parts(&mut self) -> Result<()> {
        loop {
            let part_size = usize::try_from(self.part_size()).unwrap_or(usize::MAX);
            if self.pending.len < part_size {
                return Ok(());
            }
            let part = self.pending.take(part_size);
            self.send(part).await?;
        }
    }

    /// The size of the next part: `multipart_chunksize`, raised so that the whole content fits in 10,000 parts.
    /// (See [`known_size_part`] for content of a known size.)
    /// With the size known, that is one size for all; without, parts grow by one chunk every 1,000 parts, so that
    /// 10,000 parts hold 55,000 chunks (430 GiB at 8 MiB) while memory stays bounded by the part size.
    fn part_size(&self) -> u64 {
        let chunk = self.inner.options.multipart_chunksize;
        match self.size {
            Some(size) => known_size_part(&self.inner.options, size),
            None => chunk * (1 + self.sent / 1000),
        }
    }

    async fn send(&mut self, part: PutPayload) -> Result<()> {
        while self.in_flight.len() >= self.inner.options.max_concurrency {
            self.wait_one().await?;
        }
        self.in_flight.push(self.upload.put_part(part));
        self.sent += 1;
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<()> {
        if let Some(Err(error)) = self.in_flight.next().await {
            self.abort().await;
            return Err(self.inner.error("save", &self.name, error));
        }
        Ok(())
    }

    async fn abort(&mut self) {
        self.in_flight.clear();
        // Best effort: the error that brought us here is the one worth reporting.
        let _ = self.upload.abort().await;
    }

    /// Sends the last part, completes the upload and publishes it.
    async fn finish(mut self) -> Result<String> {
        if self.pending.len > 0 {
            let last = self.pending.take(self.pending.len);
            self.send(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        if let Err(error) = self.upload.complete().await {
            self.abort().await;
            return Err(self.inner.error("save", &self.name, error));
        }
        if !self.staged {
            return Ok(self.name);
        }
        let published = self.inner.publish_copy(&self.name, self.target.as_ref()).await;
        let _ = self.inner.store.delete(&self.target).await;
        published
    }
}
