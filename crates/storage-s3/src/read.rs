//! Reading an object: the response `open` already has serves the first full read; a large object read whole is
//! fetched as ranged GETs, `max_concurrency` of them ahead of the one being read, yielded in order.
//!
//! Every GET after `open`'s is pinned to the opened version by its ETag (`If-Match`), so that a read never mixes
//! two versions of an object: a replaced object fails the read with "changed since it was opened".

use crate::Inner;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use storage_core::{Error, FileSource, Result};
use tokio::sync::mpsc;

/// An opened object.
pub(crate) struct S3Source {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: String,
    /// Stored with `Content-Encoding: gzip`: reads return the decompressed bytes, as django-storages' do, while
    /// `size` stays the stored size; a range addresses the decompressed bytes.
    pub(crate) gzipped: bool,
    pub(crate) path: Path,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    /// The body of `open`'s GET, until a read takes it.
    pub(crate) first: Mutex<Option<BoxStream<'static, object_store::Result<Bytes>>>>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Source").field("path", &self.path).field("size", &self.size).finish()
    }
}

impl FileSource for S3Source {
    fn size(&self) -> u64 {
        self.size
    }

    /// The ETag `open` saw: every range of this file is read with `If-Match` on it.
    fn version(&self) -> Option<String> {
        self.etag.clone()
    }

    /// A gzipped object reads back decompressed, longer than its stored size.
    fn decoded(&self) -> bool {
        self.gzipped
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        if range.start == range.end {
            return futures::stream::empty().boxed();
        }
        if self.gzipped {
            return self.read_gzipped(range);
        }
        self.read_stored(range)
    }
}

impl S3Source {
    /// The decompressed bytes of `range`; the whole object when `range` is the stored size (as `read_all` and
    /// `chunks` ask).
    fn read_gzipped(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        use tokio_util::io::{ReaderStream, StreamReader};
        let whole = range == (0..self.size);
        let compressed = self.read_stored(0..self.size).map_err(std::io::Error::from);
        let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(StreamReader::new(compressed));
        decoder.multiple_members(true);
        let (storage, name) = (self.inner.alias.clone(), self.name.clone());
        let decompressed = ReaderStream::new(decoder).map_err(move |e| Error::io(&storage, "read", &name, e));
        if whole {
            return decompressed.boxed();
        }
        // Skip to the range's start, then take its length.
        let mut position = 0u64;
        decompressed
            .try_filter_map(move |mut piece: Bytes| {
                let start = position;
                position += piece.len() as u64;
                let end = position;
                let keep = if end <= range.start || start >= range.end {
                    None
                } else {
                    let from = usize::try_from(range.start.saturating_sub(start)).unwrap_or(0);
                    let to = usize::try_from(range.end.min(end) - start).unwrap_or(piece.len());
                    Some(piece.split_to(to).split_off(from))
                };
                futures::future::ready(Ok(keep))
            })
            .boxed()
    }

    /// The stored bytes of `range`.
    fn read_stored(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let options = &self.inner.options;
        let piece = options.multipart_chunksize.max(1);
        let whole = range == (0..self.size);
        let first = whole.then(|| self.first.lock().unwrap_or_else(PoisonError::into_inner).take()).flatten();
        let threshold = options.parallel_read_threshold;
        // Ranges of different versions must not be mixed: without an ETag to pin them, one stream.
        let parallel = threshold > 0
            && range.end - range.start >= threshold
            && range.end - range.start > piece
            && self.etag.is_some();
        let inner = self.inner.clone();
        let name = self.name.clone();
        let map = move |e| inner.error("read", &name, e);
        if !parallel {
            return match first {
                Some(stream) => stream.map_err(map).boxed(),
                None => get(self.fetcher(), range).map_err(map).boxed(),
            };
        }
        let mut ranges: VecDeque<Range<u64>> = (range.start..range.end)
            .step_by(usize::try_from(piece).unwrap_or(usize::MAX))
            .map(|start| start..(start + piece).min(range.end))
            .collect();
        // `open`'s response already streams from 0: it serves the first range and is then let go.
        let head = match (first, ranges.front()) {
            (Some(stream), Some(front)) if front.start == 0 => {
                let len = front.end;
                ranges.pop_front();
                Some(take(stream, len))
            }
            _ => None,
        };
        // `max_concurrency` ranges read ahead of the one being read, as an upload sends that many parts while it
        // fills the next: memory stays within `multipart_chunksize * (max_concurrency + 1)` both ways.
        InOrder::new(self.fetcher(), head, ranges, options.max_concurrency + 1).stream().map_err(map).boxed()
    }

    fn fetcher(&self) -> Fetcher {
        Fetcher { store: self.inner.store.clone(), path: self.path.clone(), etag: self.etag.clone() }
    }
}

/// What a ranged GET of this object needs.
#[derive(Clone)]
struct Fetcher {
    store: object_store::aws::AmazonS3,
    path: Path,
    etag: Option<String>,
}

/// `range` of the object, pinned to its version, as one GET; an answer that holds fewer bytes than the range
/// (well-formed, but short) ends with an error.
fn get(fetcher: Fetcher, range: Range<u64>) -> BoxStream<'static, object_store::Result<Bytes>> {
    let expected = range.end - range.start;
    let options = GetOptions { range: Some(GetRange::from(range)), if_match: fetcher.etag, ..GetOptions::default() };
    let (store, path) = (fetcher.store, fetcher.path);
    let body = futures::stream::once(async move { store.get_opts(&path, options).await.map(|r| r.into_stream()) })
        .try_flatten()
        .boxed();
    futures::stream::unfold(Some((body, 0u64)), move |state| async move {
        let (mut body, received) = state?;
        match body.next().await {
            Some(Ok(bytes)) => {
                let received = received + bytes.len() as u64;
                Some((Ok(bytes), Some((body, received))))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None if received != expected => Some((Err(short(expected, received)), None)),
            None => None,
        }
    })
    .boxed()
}

/// The first `len` bytes of `stream`, which is dropped (closing its connection) once they have arrived.
fn take(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    len: u64,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    futures::stream::unfold((stream, len), move |(mut stream, left)| async move {
        if left == 0 {
            return None;
        }
        match stream.next().await {
            Some(Ok(mut bytes)) => {
                if bytes.len() as u64 > left {
                    bytes.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                }
                let left = left - bytes.len() as u64;
                Some((Ok(bytes), (stream, left)))
            }
            Some(Err(error)) => Some((Err(error), (stream, 0))),
            None => Some((Err(short(len, len - left)), (stream, 0))),
        }
    })
    .boxed()
}

/// What `open`'s response yields before the other ranges start: a reader's first MiB comes as fast as from a
/// single GET, and the others start a moment later.
const HEAD_START: u64 = 1024 * 1024;

/// The blocks a buffered range keeps its bytes in.
const BLOCK: usize = 256 * 1024;

/// A range that ended early: the connection was cut, or a server answered less than it was asked.
fn short(expected: u64, received: u64) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: format!("a ranged GET ended after {received} of its {expected} bytes").into(),
    }
}

/// Ranges fetched concurrently and yielded in order. The range at the front is yielded as its bytes arrive;
/// those behind it buffer theirs (at most `concurrency` ranges, the front one included, are fetched or held at
/// once), each in its own task, so that all of them transfer while the front one is consumed. When the front
/// is `open`'s response, the others start once it has yielded its first MiB, so that those come as fast as from
/// a single GET.
struct InOrder {
    fetcher: Fetcher,
    waiting: VecDeque<Range<u64>>,
    /// Ranges being fetched, in order: each one's bytes, received as they arrive, its length and how much of it
    /// came (a task that ends without sending it all, and without an error, cut the range short).
    started: VecDeque<(mpsc::UnboundedReceiver<object_store::Result<Bytes>>, u64, u64)>,
    /// Aborts the fetches when the read is dropped before its end.
    tasks: tokio::task::JoinSet<()>,
    head: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    concurrency: usize,
    /// An error was yielded: the read ends there.
    failed: bool,
    /// Bytes the head yielded: the other ranges start once it yielded [`HEAD_START`] (before, they would slow
    /// its first bytes down).
    head_yielded: u64,
}

impl InOrder {
    fn new(
        fetcher: Fetcher,
        head: Option<BoxStream<'static, object_store::Result<Bytes>>>,
        waiting: VecDeque<Range<u64>>,
        concurrency: usize,
    ) -> Self {
        InOrder {
            fetcher,
            waiting,
            started: VecDeque::new(),
            tasks: tokio::task::JoinSet::new(),
            head,
            concurrency,
            failed: false,
            head_yielded: 0,
        }
    }

    /// Starts fetches until `concurrency` ranges (the head's included) are in flight.
    fn fill(&mut self) {
        // Finished fetches leave their (empty) results behind.
        while self.tasks.try_join_next().is_some() {}
        while self.started.len() + usize::from(self.head.is_some()) < self.concurrency {
            let Some(range) = self.waiting.pop_front() else { return };
            let (sender, receiver) = mpsc::unbounded_channel();
            let expected = range.end - range.start;
            let mut body = get(self.fetcher.clone(), range);
            self.tasks.spawn(async move {
                // Bytes wait to be read in blocks of their own, not in the larger buffers of the HTTP client
                // each piece arrived in (which a waiting piece would keep whole).
                let mut block = BytesMut::new();
                while let Some(piece) = body.next().await {
                    let piece = match piece {
                        Ok(piece) => piece,
                        Err(error) => {
                            let _ = sender.send(Err(error));
                            return;
                        }
                    };
                    let mut piece = &piece[..];
                    while !piece.is_empty() {
                        if block.capacity() == block.len() {
                            block = BytesMut::with_capacity(BLOCK);
                        }
                        let take = (block.capacity() - block.len()).min(piece.len());
                        block.extend_from_slice(&piece[..take]);
                        piece = &piece[take..];
                        // The reader is gone: nothing more to fetch.
                        if block.len() == block.capacity() && sender.send(Ok(block.split().freeze())).is_err() {
                            return;
                        }
                    }
                }
                // (A range that came short is found by the reader, which counts what it got.)
                if !block.is_empty() {
                    let _ = sender.send(Ok(block.split().freeze()));
                }
            });
            self.started.push_back((receiver, expected, 0));
        }
    }

    fn stream(self) -> BoxStream<'static, object_store::Result<Bytes>> {
        futures::stream::unfold(self, |mut this| async move {
            if this.failed {
                // Stops the fetches still running.
                this.tasks.abort_all();
                return None;
            }
            if this.head.is_none() || this.head_yielded >= HEAD_START {
                this.fill();
            }
            loop {
                if let Some(head) = &mut this.head {
                    match head.next().await {
                        Some(piece) => {
                            this.failed = piece.is_err();
                            this.head_yielded += piece.as_ref().map_or(0, |bytes| bytes.len() as u64);
                            return Some((piece, this));
                        }
                        None => {
                            this.head = None;
                            this.fill();
                            continue;
                        }
                    }
                }
                let (front, expected, received) = this.started.front_mut()?;
                match front.recv().await {
                    Some(piece) => {
                        this.failed = piece.is_err();
                        *received += piece.as_ref().map_or(0, |bytes| bytes.len() as u64);
                        return Some((piece, this));
                    }
                    // Its task ended without the range's last bytes, and without saying why (it panicked, or
                    // the runtime is shutting down).
                    None if *received != *expected => {
                        let error = short(*expected, *received);
                        this.failed = true;
                        return Some((Err(error), this));
                    }
                    // That range is complete (or failed, and said so): the next one.
                    None => {
                        this.started.pop_front();
                        this.fill();
                    }
                }
            }
        })
        .boxed()
    }
}
