//! A storage that fails on purpose: [`FaultyStorage`] wraps any storage and breaks its writes and reads at a
//! chosen byte, the way a client that goes away, a cancelled task or a cut connection does. The `faults`
//! scenario runs every backend through it: each operation either succeeds correctly or fails with nothing
//! changed.

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use storage_core::{
    AlternativeNames, Capabilities, Content, Error, FileMeta, FileSource, FileWriter, Result, SaveOptions, Storage,
    StoredFile, Upload,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a [`FaultyStorage`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The content of a save, or what is written to a writer, fails with an I/O error after this many bytes.
    WriteError {
        /// Bytes that get through first.
        after: u64,
    },
    /// A writer is dropped after this many bytes, as when the task writing it is cancelled; the write that
    /// crosses the point fails.
    DropWriter {
        /// Bytes that get through first.
        after: u64,
    },
    /// A read of an opened file ends without an error after this many bytes: a short read.
    ShortRead {
        /// Bytes that get through first.
        after: u64,
    },
    /// A read of an opened file fails after this many bytes.
    ReadError {
        /// Bytes that get through first.
        after: u64,
    },
}

/// Any storage, with `fault` injected into its writes or reads; every other call goes through unchanged.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use storage_core::{InMemoryStorage, Storage};
/// use storage_testkit::{Fault, FaultyStorage};
///
/// let inner = Arc::new(InMemoryStorage::new());
/// let faulty = FaultyStorage::new(inner.clone(), Fault::WriteError { after: 3 });
/// assert!(faulty.save("a.txt", "content".into()).await.is_err());
/// assert!(!inner.exists("a.txt").await?, "a failed save stores nothing");
///
/// inner.save("b.txt", "content".into()).await?;
/// let short = FaultyStorage::new(inner.clone(), Fault::ShortRead { after: 3 });
/// assert!(short.open("b.txt").await?.read_all().await.is_err(), "short content is never returned as whole");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    fault: Fault,
}

impl FaultyStorage {
    /// `inner` with `fault`.
    pub fn new(inner: Arc<dyn Storage>, fault: Fault) -> Self {
        FaultyStorage { inner, fault }
    }

    /// Writes `content` through a faulty writer of `name`; `replace` renames over `name`.
    async fn write(&self, name: &str, content: Content, replace: bool, options: &SaveOptions) -> Result<String> {
        match self.fault {
            Fault::WriteError { after } => {
                let content: Box<dyn AsyncRead + Send + Unpin> = match content {
                    Content::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
                    Content::Path(path) => {
                        Box::new(tokio::fs::File::open(&path).await.map_err(|e| Error::io("faulty", "save", name, e))?)
                    }
                    Content::Reader(reader) => reader,
                };
                let reader = Content::from_reader(FailingAfter { content, left: after });
                match replace {
                    true => self.inner.replace(name, reader).await.map(|()| name.to_owned()),
                    false => self.inner.save_with(name, reader, options).await,
                }
            }
            _ if replace => self.inner.replace(name, content).await.map(|()| name.to_owned()),
            _ => {
                let mut writer = self.open_write_with(name, options).await?;
                content.write_to(&mut writer, self.inner.alias(), name).await?;
                writer.commit().await
            }
        }
    }
}

/// A reader that fails after `left` bytes of `content`.
struct FailingAfter {
    content: Box<dyn AsyncRead + Send + Unpin>,
    left: u64,
}

impl AsyncRead for FailingAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::other("the content failed (an injected fault)")));
        }
        let room = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.remaining());
        let mut limited = tokio::io::ReadBuf::new(buf.initialize_unfilled_to(room));
        let read = Pin::new(&mut self.content).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = read {
            if n == 0 {
                // The content ended before the fault: nothing to break.
                self.left = u64::MAX;
                return Poll::Ready(Ok(()));
            }
            buf.advance(n);
            self.left -= n as u64;
        }
        read
    }
}

/// A writer that breaks after `left` bytes: with an error, or by dropping the storage's writer.
struct FaultyUpload {
    writer: Option<FileWriter>,
    left: u64,
    drop_writer: bool,
}

impl AsyncWrite for FaultyUpload {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            if self.drop_writer {
                self.writer = None;
            }
            return Poll::Ready(Err(std::io::Error::other("the write failed (an injected fault)")));
        }
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(Err(std::io::Error::other("the writer was dropped (an injected fault)")));
        };
        let written = Pin::new(writer).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.left -= *n as u64;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_flush(cx),
            None => Poll::Ready(Err(std::io::Error::other("the writer was dropped (an injected fault)"))),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_shutdown(cx),
            None => Poll::Ready(Err(std::io::Error::other("the writer was dropped (an injected fault)"))),
        }
    }
}

impl Upload for FaultyUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>> {
        Box::pin(async move {
            match self.writer {
                Some(writer) => writer.commit().await,
                None => Err(Error::io("faulty", "commit", "", std::io::Error::other("the writer was dropped"))),
            }
        })
    }
}

/// An opened file whose reads break after `after` bytes.
#[derive(Debug)]
struct FaultySource {
    file: StoredFile,
    after: u64,
    error: bool,
}

impl FileSource for FaultySource {
    fn size(&self) -> u64 {
        self.file.size()
    }

    fn decoded(&self) -> bool {
        self.file.decoded()
    }

    fn version(&self) -> Option<String> {
        self.file.version()
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let pieces = match self.file.range_stream(range) {
            Ok(pieces) => pieces,
            Err(error) => return futures::stream::once(async { Err(error) }).boxed(),
        };
        let (error, name) = (self.error, self.file.name().to_owned());
        futures::stream::unfold((pieces, self.after, false), move |(mut pieces, left, done)| {
            let name = name.clone();
            async move {
                if done {
                    return None;
                }
                match pieces.next().await? {
                    Ok(piece) if (piece.len() as u64) <= left => {
                        Some((Ok(piece.clone()), (pieces, left - piece.len() as u64, false)))
                    }
                    Ok(piece) => {
                        let cut = piece.slice(..usize::try_from(left).unwrap_or(0));
                        let broken = std::io::Error::other("the read failed (an injected fault)");
                        match error {
                            // The bytes before the fault, then the error.
                            true if !cut.is_empty() => Some((Ok(cut), (pieces, 0, false))),
                            true => Some((Err(Error::io("faulty", "read", &name, broken)), (pieces, 0, true))),
                            // The bytes before the fault, then the end, as if that were all.
                            false if !cut.is_empty() => Some((Ok(cut), (pieces, 0, true))),
                            false => None,
                        }
                    }
                    Err(error) => Some((Err(error), (pieces, 0, true))),
                }
            }
        })
        .boxed()
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn alias(&self) -> &str {
        self.inner.alias()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        let writer = self.inner.open_write_with(name, options).await?;
        let (left, drop_writer) = match self.fault {
            Fault::WriteError { after } => (after, false),
            Fault::DropWriter { after } => (after, true),
            _ => return Ok(writer),
        };
        let upload = FaultyUpload { writer: Some(writer), left, drop_writer };
        Ok(FileWriter::new(self.inner.alias(), name, Box::new(upload)))
    }

    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        self.write(name, content, false, options).await
    }

    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        self.write(name, content, true, &SaveOptions::default()).await.map(drop)
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        let file = self.inner.open(name).await?;
        let (after, error) = match self.fault {
            Fault::ShortRead { after } => (after, false),
            Fault::ReadError { after } => (after, true),
            _ => return Ok(file),
        };
        let source = FaultySource { file, after, error };
        Ok(StoredFile::new(self.inner.alias(), name, Arc::new(source)))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.inner.exists(name).await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name).await
    }

    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        self.inner.delete_many(names).await
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        self.inner.listdir(path).await
    }

    async fn url(&self, name: &str) -> Result<String> {
        self.inner.url(name).await
    }

    async fn url_expiring(&self, name: &str, expires_in: std::time::Duration) -> Result<String> {
        self.inner.url_expiring(name, expires_in).await
    }

    fn url_prefix(&self) -> Option<String> {
        self.inner.url_prefix()
    }

    async fn url_with(&self, name: &str, options: &storage_core::UrlOptions) -> Result<String> {
        self.inner.url_with(name, options).await
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        self.inner.modified_time(name).await
    }

    async fn stat(&self, name: &str) -> Result<FileMeta> {
        self.inner.stat(name).await
    }

    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        self.inner.list_files(path).await
    }

    async fn settle(&self) -> Vec<String> {
        self.inner.settle().await
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.alternative_names()
    }

    fn file_overwrite(&self) -> bool {
        self.inner.file_overwrite()
    }
}
