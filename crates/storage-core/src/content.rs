//! What goes into a storage ([`Content`], [`FileWriter`]) and what comes out ([`StoredFile`]).

use crate::error::{Error, ErrorKind, Result};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The content of a save: bytes in memory, a local file, or any reader. Files and readers are streamed, never
/// read whole into memory.
///
/// ```
/// use storage_core::Content;
///
/// let from_str = Content::from("storage contents");
/// let from_path = Content::from_path("README.md");
/// let from_reader = Content::from_reader(&b"any AsyncRead"[..]);
/// # let _ = (from_str, from_path, from_reader);
/// ```
pub enum Content {
    /// Bytes already in memory.
    Bytes(Bytes),
    /// A local file, read as it is stored.
    Path(PathBuf),
    /// Any reader, read to its end.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl Content {
    /// Content read from the local file at `path`.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Content::Path(path.into())
    }

    /// Content read from `reader` until it ends.
    pub fn from_reader(reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        Content::Reader(Box::new(reader))
    }

    /// The length in bytes, when it is known without reading (bytes, or a file's metadata).
    pub fn size_hint(&self) -> impl std::future::Future<Output = Option<u64>> + Send + 'static {
        let known = match self {
            Content::Bytes(bytes) => Ok(Some(bytes.len() as u64)),
            Content::Path(path) => Err(path.clone()),
            Content::Reader(_) => Ok(None),
        };
        async move {
            match known {
                Ok(size) => size,
                Err(path) => tokio::fs::metadata(path).await.ok().map(|m| m.len()),
            }
        }
    }

    /// Streams the content into `writer` (without committing it); returns the number of bytes written.
    ///
    /// Errors name `storage` and the target `name`; a failure to read the content is told apart from a failure
    /// to write it.
    pub async fn write_to(self, writer: &mut FileWriter, storage: &str, name: &str) -> Result<u64> {
        let content_error =
            |source: std::io::Error| Error::Content { storage: storage.into(), name: name.into(), source };
        let write_error = |source: std::io::Error| Error::io(storage, "write", name, source);
        match self {
            Content::Bytes(bytes) => {
                writer.write_all(&bytes).await.map_err(write_error)?;
                Ok(bytes.len() as u64)
            }
            Content::Path(path) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| content_error(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
                copy(file, writer, content_error, write_error).await
            }
            Content::Reader(reader) => copy(reader, writer, content_error, write_error).await,
        }
    }
}

/// Like `tokio::io::copy`, but tells a read failure from a write failure.
async fn copy(
    mut reader: impl AsyncRead + Unpin,
    writer: &mut FileWriter,
    on_read: impl Fn(std::io::Error) -> Error,
    on_write: impl Fn(std::io::Error) -> Error,
) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer).await.map_err(&on_read)?;
        if n == 0 {
            return Ok(total);
        }
        writer.write_all(&buffer[..n]).await.map_err(&on_write)?;
        total += n as u64;
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(bytes) => write!(f, "Content::Bytes({} bytes)", bytes.len()),
            Content::Path(path) => f.debug_tuple("Content::Path").field(path).finish(),
            Content::Reader(_) => f.write_str("Content::Reader(..)"),
        }
    }
}

impl From<Bytes> for Content {
    fn from(bytes: Bytes) -> Self {
        Content::Bytes(bytes)
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        Content::Bytes(bytes.into())
    }
}

impl From<&'static [u8]> for Content {
    fn from(bytes: &'static [u8]) -> Self {
        Content::Bytes(Bytes::from_static(bytes))
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Content::Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Content::Bytes(text.into())
    }
}

/// A backend's read access to one stored file; [`StoredFile`] builds every read on it.
pub trait FileSource: Send + Sync + fmt::Debug {
    /// The file's length in bytes.
    fn size(&self) -> u64;

    /// The bytes of `range` (already checked to lie within the file) as pieces of any length, in order.
    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>>;

    /// What tells this content from any other the name ever had (an ETag, an inode with its modification time):
    /// what a cache keys the file's blocks by. `None`: the backend cannot tell.
    fn version(&self) -> Option<String> {
        None
    }

    /// Whether reads yield the content decoded from what [`FileSource::size`] counts (an object stored
    /// gzipped, read back decompressed): then a read's length is not the range's, and is not checked. By default
    /// a read that brings fewer or more bytes than its range fails.
    fn decoded(&self) -> bool {
        false
    }
}

/// An opened file: its name, size and content, read whole, in exact chunks, by range or as an `AsyncRead`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use futures::TryStreamExt;
/// use storage_core::{InMemoryStorage, Storage};
///
/// let storage = InMemoryStorage::new();
/// storage.save("a.txt", "content".into()).await?;
/// let file = storage.open("a.txt").await?;
/// let chunks: Vec<_> = file.chunks(2).try_collect().await?;
/// assert_eq!(chunks, ["co", "nt", "en", "t"]);
/// assert_eq!(file.range(1..4).await?, "ont");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct StoredFile {
    storage: String,
    name: String,
    pub(crate) source: Arc<dyn FileSource>,
}

impl StoredFile {
    /// A file `name` of `storage`, read through `source`.
    pub fn new(storage: impl Into<String>, name: impl Into<String>, source: Arc<dyn FileSource>) -> Self {
        StoredFile { storage: storage.into(), name: name.into(), source }
    }

    /// The file's name in its storage.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.source.size()
    }

    /// What tells this content from any other the name ever had (see [`FileSource::version`]).
    pub fn version(&self) -> Option<String> {
        self.source.version()
    }

    /// Whether reads yield the content decoded from what [`StoredFile::size`] counts (see
    /// [`FileSource::decoded`]).
    pub fn decoded(&self) -> bool {
        self.source.decoded()
    }

    /// The whole content.
    pub async fn read_all(&self) -> Result<Bytes> {
        let size = self.size();
        let mut pieces = self.exact(0..size);
        let mut buffer = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(piece) = pieces.next().await {
            buffer.extend_from_slice(&piece?);
        }
        Ok(buffer.freeze())
    }

    /// The content as chunks of exactly `chunk_size` bytes, but the last, which may be shorter. An empty file
    /// yields no chunk; a `chunk_size` of 0 yields one error.
    pub fn chunks(&self, chunk_size: usize) -> BoxStream<'static, Result<Bytes>> {
        if chunk_size == 0 {
            let error = Error::backend(
                &self.storage,
                "chunks",
                &self.name,
                ErrorKind::InvalidInput,
                "chunk_size must be at least 1",
            );
            return futures::stream::once(async { Err(error) }).boxed();
        }
        rechunk(self.exact(0..self.size()), chunk_size)
    }

    /// The bytes of `range`; a range past the end of the file is an error.
    pub async fn range(&self, range: Range<u64>) -> Result<Bytes> {
        self.range_stream(range)?
            .try_fold(BytesMut::new(), |mut acc, piece| async move {
                acc.extend_from_slice(&piece);
                Ok(acc)
            })
            .await
            .map(BytesMut::freeze)
    }

    /// The bytes of `range` as a stream of pieces, as they arrive.
    pub fn range_stream(&self, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        if range.start > range.end || range.end > self.size() {
            return Err(Error::backend(
                &self.storage,
                "range",
                &self.name,
                ErrorKind::InvalidInput,
                format!("range {range:?} is outside the file's {} bytes", self.size()),
            ));
        }
        Ok(self.exact(range))
    }

    /// The content as an `AsyncRead`.
    pub fn reader(&self) -> impl AsyncRead + Send + Unpin + 'static {
        tokio_util::io::StreamReader::new(self.exact(0..self.size()).map_err(Error::into_io))
    }

    /// The source's pieces of `range`, failing when they add up to fewer or more bytes than the range holds: a
    /// backend's stream that ends early (a connection cut, a file truncated meanwhile) is an error, never short
    /// content.
    fn exact(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        if self.source.decoded() {
            return self.source.read(range);
        }
        let expected = range.end - range.start;
        let (storage, name, shown) = (self.storage.clone(), self.name.clone(), format!("{range:?}"));
        let wrong = move |got: u64| {
            let message = format!("the read of {expected} bytes from {shown} brought {got}");
            Error::backend(&storage, "read", &name, ErrorKind::Other, message)
        };
        futures::stream::unfold((self.source.read(range), 0u64, false), move |(mut pieces, got, done)| {
            let wrong = wrong.clone();
            async move {
                if done {
                    return None;
                }
                match pieces.next().await {
                    Some(Ok(piece)) => {
                        let got = got + piece.len() as u64;
                        match got > expected {
                            true => Some((Err(wrong(got)), (pieces, got, true))),
                            false => Some((Ok(piece), (pieces, got, false))),
                        }
                    }
                    Some(Err(error)) => Some((Err(error), (pieces, got, true))),
                    None if got < expected => Some((Err(wrong(got)), (pieces, got, true))),
                    None => None,
                }
            }
        })
        .boxed()
    }
}

/// Regroups `pieces` into chunks of exactly `size` bytes, the last one possibly shorter; stops after an error.
/// A chunk that lies within one piece is a slice of it, not a copy.
fn rechunk(pieces: BoxStream<'static, Result<Bytes>>, size: usize) -> BoxStream<'static, Result<Bytes>> {
    struct State {
        pieces: BoxStream<'static, Result<Bytes>>,
        /// What is left of the last piece.
        current: Bytes,
        /// A chunk being put together from several pieces.
        buffer: BytesMut,
        ended: bool,
    }
    let state = State { pieces, current: Bytes::new(), buffer: BytesMut::new(), ended: false };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if !state.current.is_empty() {
                if state.buffer.is_empty() && state.current.len() >= size {
                    let chunk = state.current.split_to(size);
                    return Some((Ok(chunk), state));
                }
                let take = (size - state.buffer.len()).min(state.current.len());
                state.buffer.extend_from_slice(&state.current.split_to(take));
                if state.buffer.len() == size {
                    return Some((Ok(state.buffer.split().freeze()), state));
                }
                continue;
            }
            if state.ended {
                if state.buffer.is_empty() {
                    return None;
                }
                let last = state.buffer.split().freeze();
                return Some((Ok(last), state));
            }
            match state.pieces.next().await {
                Some(Ok(piece)) => state.current = piece,
                Some(Err(error)) => {
                    state.ended = true;
                    state.buffer.clear();
                    return Some((Err(error), state));
                }
                None => state.ended = true,
            }
        }
    })
    .boxed()
}

/// A backend's pending write: bytes go in through `AsyncWrite`, and nothing is visible under a name before
/// [`Upload::commit`]. Dropping it uncommitted must leave nothing behind.
pub trait Upload: AsyncWrite + Send + Unpin {
    /// Publishes what was written and returns the final name, chosen by the storage's overwrite and
    /// alternative-name rules.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>>;
}

/// A file being written: an `AsyncWrite` whose file appears only on [`FileWriter::commit`] or `shutdown`.
/// Dropped before that, it leaves nothing behind.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use storage_core::{InMemoryStorage, Storage};
/// use tokio::io::AsyncWriteExt;
///
/// let storage = InMemoryStorage::new();
/// let mut file = storage.open_write("storage_test").await?;
/// file.write_all(b"storage contents").await?;
/// assert!(!storage.exists("storage_test").await?);
/// assert_eq!(file.commit().await?, "storage_test");
/// assert_eq!(storage.open("storage_test").await?.read_all().await?, "storage contents");
/// # Ok::<_, Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct FileWriter {
    storage: String,
    name: String,
    pub(crate) state: WriterState,
}

pub(crate) enum WriterState {
    Open(Box<dyn Upload>),
    Committing(BoxFuture<'static, Result<String>>),
    Committed(String),
    /// The commit failed (with this error), or is being taken apart.
    Failed(Option<Error>),
}

impl FileWriter {
    /// A writer of `name` in `storage` over a backend's upload.
    pub fn new(storage: &str, name: &str, upload: Box<dyn Upload>) -> Self {
        FileWriter { storage: storage.into(), name: name.into(), state: WriterState::Open(upload) }
    }

    /// Publishes the file and returns its final name (which differs from the name asked for when that was
    /// taken and the storage does not overwrite).
    ///
    /// Once started, publishing runs to its end even if this future is dropped (a timeout, say): the file may
    /// then appear although no name was returned.
    pub async fn commit(mut self) -> Result<String> {
        match std::mem::replace(&mut self.state, WriterState::Failed(None)) {
            WriterState::Open(upload) => upload.commit().await,
            WriterState::Committing(future) => future.await,
            WriterState::Committed(name) => Ok(name),
            WriterState::Failed(error) => Err(self.closed(error.as_ref())),
        }
    }

    /// This writer, with `then` run on the outcome of its commit (by [`FileWriter::commit`] or a shutdown)
    /// before the commit answers: how a layer forgets what the write changed.
    pub fn on_commit<F>(self, then: F) -> FileWriter
    where
        F: FnOnce(&Result<String>) -> BoxFuture<'static, ()> + Send + 'static,
    {
        let FileWriter { storage, name, state } = self;
        let state = match state {
            WriterState::Open(upload) => WriterState::Open(Box::new(OnCommit { upload, then: Box::new(then) })),
            other => other,
        };
        FileWriter { storage, name, state }
    }

    /// The final name, once `shutdown` has committed the file.
    pub fn committed_name(&self) -> Option<&str> {
        match &self.state {
            WriterState::Committed(name) => Some(name),
            _ => None,
        }
    }

    fn upload(&mut self) -> std::io::Result<&mut Box<dyn Upload>> {
        let closed = match &self.state {
            WriterState::Open(_) => None,
            WriterState::Failed(error) => Some(self.closed(error.as_ref())),
            _ => Some(self.closed(None)),
        };
        if let Some(error) = closed {
            return Err(error.into_io());
        }
        match &mut self.state {
            WriterState::Open(upload) => Ok(upload),
            _ => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// The error of a call after the commit: the commit's own failure again, if it failed.
    fn closed(&self, failure: Option<&Error>) -> Error {
        match failure {
            Some(error) => error.replay(),
            None => {
                let why = std::io::Error::other("the file was already committed");
                Error::io(&self.storage, "write", &self.name, why)
            }
        }
    }
}

/// What the hook of [`FileWriter::on_commit`] is.
type CommitHook = Box<dyn FnOnce(&Result<String>) -> BoxFuture<'static, ()> + Send>;

/// An upload whose commit runs a hook on its outcome.
struct OnCommit {
    upload: Box<dyn Upload>,
    then: CommitHook,
}

impl AsyncWrite for OnCommit {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.upload).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.upload).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.upload).poll_shutdown(cx)
    }
}

impl Upload for OnCommit {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>> {
        let OnCommit { upload, then } = *self;
        Box::pin(async move {
            let result = upload.commit().await;
            then(&result).await;
            result
        })
    }
}

impl fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            WriterState::Open(_) => "open",
            WriterState::Committing(_) => "committing",
            WriterState::Committed(_) => "committed",
            WriterState::Failed(_) => "failed",
        };
        f.debug_struct("FileWriter")
            .field("storage", &self.storage)
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}

impl AsyncWrite for FileWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **self.upload()?).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.state {
            WriterState::Open(upload) => Pin::new(&mut **upload).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Commits the file: after `shutdown`, it is visible under [`FileWriter::committed_name`].
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match std::mem::replace(&mut self.state, WriterState::Failed(None)) {
                WriterState::Open(upload) => self.state = WriterState::Committing(upload.commit()),
                WriterState::Committing(mut future) => match future.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = WriterState::Committing(future);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(name)) => {
                        self.state = WriterState::Committed(name);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(error)) => {
                        let io = error.replay().into_io();
                        self.state = WriterState::Failed(Some(error));
                        return Poll::Ready(Err(io));
                    }
                },
                WriterState::Committed(name) => {
                    self.state = WriterState::Committed(name);
                    return Poll::Ready(Ok(()));
                }
                WriterState::Failed(error) => {
                    let io = self.closed(error.as_ref()).into_io();
                    self.state = WriterState::Failed(error);
                    return Poll::Ready(Err(io));
                }
            }
        }
    }
}
