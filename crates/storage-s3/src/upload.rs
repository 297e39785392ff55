//! Saving: the bytes written to a [`FileWriter`] flow to a task that uploads them as they come. Content up to
//! `multipart_threshold` is kept and published in one request; larger content is uploaded in parts, with at most
//! `max_concurrency` parts in flight, to a private staging key under `<location>/.storages-staging/` (or, with
//! `file_overwrite`, straight to its name), then published (see `publish.rs`). A failed or dropped upload is
//! aborted.

use crate::Inner;
use crate::protocol::{self, CompletedPart, Failure};
use crate::publish::{Multipart, Outcome};
use bytes::Bytes;
use object_store::PutPayload;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use storage_core::{Error, FileWriter, Result, SaveOptions, Upload};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio_util::sync::PollSender;

/// The directory (under `location`) of staged multipart uploads; `listdir` hides it.
pub(crate) const STAGING_DIR: &str = ".storages-staging";

/// The most bytes one piece of the data channel carries: with the channel's 4 places, at most 4 MiB are in
/// transit between the writer and the upload task.
const MAX_PIECE: usize = 1024 * 1024;

/// A writer for `name`: bytes flow to a task that uploads them as they come. `size`, when known, sizes the parts
/// so that any size fits in S3's 10,000 parts.
/// With `replace`, the content goes under exactly `name`, replacing an object there.
pub(crate) fn writer(
    inner: Arc<Inner>,
    name: &str,
    size: Option<u64>,
    replace: bool,
    options: Arc<SaveOptions>,
) -> FileWriter {
    let (data, receiver) = mpsc::channel(4);
    let (commit, committed) = oneshot::channel();
    let overwrite = replace || inner.options.file_overwrite;
    let gzips = inner.headers.gzips(&inner.key(name), &options);
    let task = tokio::spawn(run(inner.clone(), name.to_owned(), size, overwrite, options, receiver, committed));
    let upload = S3Upload {
        storage: inner.alias.clone(),
        name: name.into(),
        data: PollSender::new(data),
        commit: Some(commit),
        task: Task::Running(task),
    };
    if gzips {
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
    /// The upload task, until it ended; then what it ended with.
    task: Task,
}

enum Task {
    Running(JoinHandle<Result<String>>),
    Ended(Result<String>),
}

impl S3Upload {
    /// The upload task's own error, once it has stopped taking data; the same error on every later call.
    fn failure(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if let Task::Running(task) = &mut self.task {
            let ended = match Pin::new(task).poll(cx) {
                Poll::Ready(ended) => ended,
                Poll::Pending => return Poll::Pending,
            };
            self.task = Task::Ended(ended.unwrap_or_else(|e| Err(self.join_error(e))));
        }
        Poll::Ready(match &self.task {
            Task::Ended(Err(error)) => error.replay().into(),
            _ => std::io::ErrorKind::BrokenPipe.into(),
        })
    }

    fn join_error(&self, error: tokio::task::JoinError) -> Error {
        Error::io(&self.storage, "save", &self.name, std::io::Error::other(error))
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
            match std::mem::replace(&mut self.task, Task::Ended(Ok(String::new()))) {
                Task::Running(task) => task.await.unwrap_or_else(|e| Err(self.join_error(e))),
                Task::Ended(ended) => ended,
            }
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
    options: Arc<SaveOptions>,
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
                    let mut started = Parts::start(inner.clone(), &name, size, overwrite, &options, pending).await?;
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
            inner.publish_bytes(&name, pending.take(len), overwrite, &options).await
        }
        (Some(parts), true) => parts.finish().await,
    }
}

fn cancelled(inner: &Inner, name: &str) -> Error {
    Error::backend(
        &inner.alias,
        "save",
        name,
        storage_core::ErrorKind::Other,
        "the writer was dropped before commit; nothing was stored",
    )
}

/// Content a large save can read again, when its first name was taken at the last moment.
#[derive(Clone)]
pub(crate) enum Rereadable {
    Bytes(Bytes),
    Path(std::path::PathBuf),
}

/// Uploads `content` (`size` bytes) in parts straight to the key of `name`, completed only if the name is still
/// free: every byte is written once. [`Outcome::Taken`] when someone took the name meanwhile.
pub(crate) async fn upload_once(
    inner: &Arc<Inner>,
    name: &str,
    content: &Rereadable,
    size: u64,
    options: &Arc<SaveOptions>,
) -> Result<Outcome> {
    let key = inner.key(name);
    let target = PartsTarget { key, create: true, staged: false };
    let mut parts = Parts::begin(inner.clone(), name, target, Some(size), options, Pending::default()).await?;
    let read_error = |e: std::io::Error| Error::Content { storage: inner.alias.clone(), name: name.into(), source: e };
    let fed = match content {
        Rereadable::Bytes(bytes) => {
            let mut fed = Ok(());
            for start in (0..bytes.len()).step_by(MAX_PIECE) {
                fed = parts.write(bytes.slice(start..(start + MAX_PIECE).min(bytes.len()))).await;
                if fed.is_err() {
                    break;
                }
            }
            fed
        }
        Rereadable::Path(path) => feed_file(&mut parts, path).await.map_err(read_error).and_then(|fed| fed),
    };
    if let Err(error) = fed {
        parts.abort().await;
        return Err(error);
    }
    parts.complete().await
}

/// Reads the file at `path` into `parts`: the outer error is the file's, the inner one the upload's.
async fn feed_file(parts: &mut Parts, path: &std::path::Path) -> std::io::Result<Result<()>> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    loop {
        // Whole pieces, however short the file system's reads: a piece's memory is its bytes.
        let mut buffer = bytes::BytesMut::zeroed(MAX_PIECE);
        let mut filled = 0;
        while filled < MAX_PIECE {
            match file.read(&mut buffer[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        buffer.truncate(filled);
        if filled > 0 {
            if let Err(error) = parts.write(buffer.freeze()).await {
                return Ok(Err(error));
            }
        }
        if filled < MAX_PIECE {
            return Ok(Ok(()));
        }
    }
}

/// A multipart upload in progress, with a bounded number of parts in flight.
/// Where parts go: the key, whether its completion may not replace an object (`create`), and whether it is a
/// staging key, copied to the name afterwards.
struct PartsTarget {
    key: String,
    create: bool,
    staged: bool,
}

struct Parts {
    inner: Arc<Inner>,
    name: String,
    /// The key uploaded to: a staging key, or with `overwrite` the name's own.
    key: String,
    staged: bool,
    /// Part uploads, each a task of its own: they hash and send while the input is read. Dropped (the upload
    /// failed, or its save was dropped), the set aborts them (before the upload's own drop aborts the upload).
    in_flight: JoinSet<Result<CompletedPart, Failure>>,
    upload: Multipart,
    /// What the save asked for: the published object's attributes, the names it may take.
    options: Arc<SaveOptions>,
    pending: Pending,
    done: Vec<CompletedPart>,
    /// The content's size, when known in advance.
    size: Option<u64>,
    /// Parts and bytes sent so far.
    sent: u64,
    bytes: u64,
}

impl Parts {
    /// Sends the last part and completes the upload (aborted unless published).
    async fn complete(&mut self) -> Result<Outcome> {
        if self.pending.len > 0 {
            let last = self.pending.take(self.pending.len);
            self.send(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        let parts = std::mem::take(&mut self.done);
        self.upload.complete(parts).await
    }

    /// An upload for the writer task: to a staging key, or with `overwrite` straight to the name.
    async fn start(
        inner: Arc<Inner>,
        name: &str,
        size: Option<u64>,
        overwrite: bool,
        options: &Arc<SaveOptions>,
        pending: Pending,
    ) -> Result<Self> {
        let staged = !overwrite;
        let key = if staged {
            let random: String = std::iter::repeat_with(fastrand::alphanumeric).take(20).collect();
            inner.key(&format!("{STAGING_DIR}/{random}"))
        } else {
            inner.key(name)
        };
        Self::begin(inner, name, PartsTarget { key, create: false, staged }, size, options, pending).await
    }

    /// An upload to `target` for `name`, with parts sized for `size` and the object attributes of `options`.
    async fn begin(
        inner: Arc<Inner>,
        name: &str,
        target: PartsTarget,
        size: Option<u64>,
        options: &Arc<SaveOptions>,
        pending: Pending,
    ) -> Result<Self> {
        let PartsTarget { key, create, staged } = target;
        let upload = Multipart::create(&inner, name, &key, create, false, options).await?;
        Ok(Parts {
            inner,
            name: name.into(),
            key,
            staged,
            options: options.clone(),
            in_flight: JoinSet::new(),
            upload,
            pending,
            done: Vec::new(),
            size,
            sent: 0,
            bytes: 0,
        })
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

    /// The size of the next part: with the size known, one size for all that fits 10,000 parts; without, growing.
    fn part_size(&self) -> u64 {
        match self.size {
            Some(size) => protocol::known_size_part(&self.inner.options, size),
            None => protocol::streaming_part(&self.inner.options, self.sent),
        }
    }

    async fn send(&mut self, part: PutPayload) -> Result<()> {
        while self.in_flight.len() >= self.inner.options.max_concurrency {
            self.wait_one().await?;
        }
        if self.sent >= protocol::MAX_PARTS {
            self.abort().await;
            return Err(Error::backend(
                &self.inner.alias,
                "save",
                &self.name,
                storage_core::ErrorKind::InvalidInput,
                "the content needs more than 10,000 parts: raise multipart_chunksize",
            ));
        }
        self.sent += 1;
        self.bytes += part.content_length() as u64;
        let number = usize::try_from(self.sent).unwrap_or(usize::MAX);
        self.in_flight.spawn(self.upload.put_part(number, part));
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<()> {
        let joined = self.in_flight.join_next().await.map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(Failure {
                    kind: storage_core::ErrorKind::Other,
                    retryable: false,
                    message: format!("a part upload {e}"),
                })
            })
        });
        match joined {
            Some(Err(failure)) => {
                self.abort().await;
                Err(failure.into_error(&self.inner, "save", &self.name))
            }
            Some(Ok(part)) => {
                self.done.push(part);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn abort(&mut self) {
        // Parts still on their way could land after the abort and keep the upload alive: stop them first.
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.upload.abort().await;
    }

    /// Sends the last part, completes the upload and publishes it.
    async fn finish(mut self) -> Result<String> {
        self.complete().await?;
        if !self.staged {
            return Ok(self.name);
        }
        let published = self.inner.publish_copy(&self.name, &self.key, self.bytes, &self.options).await;
        let _ = self.inner.delete_key(&self.key).await;
        published
    }
}
