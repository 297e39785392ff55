//! Every operation of every configured storage, observed: a `tracing` span and counters around each call of a
//! storage [`Storages`](crate::Storages) builds, whatever its backend (third-party ones included).
//!
//! Spans and events use the target `storages`: `RUST_LOG=storages=debug storages ...` shows one line per
//! operation (and, from backends that send requests, one per request). File names appear at debug level only.

use crate::content::{FileWriter, StoredFile, Upload, WriterState};
use crate::error::{Error, Result};
use crate::storage::{Capabilities, Cleaned, Cleanup, FileMeta, Local, Metrics, SaveOptions, Storage};
use crate::{AlternativeNames, Content, FileSource};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWrite;
use tracing::Instrument;

/// A storage with a span and counters around every operation.
#[derive(Debug)]
pub(crate) struct Observed {
    inner: Arc<dyn Storage>,
    backend: &'static str,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    operations: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
}

impl Observed {
    pub(crate) fn new(inner: Arc<dyn Storage>, backend: &'static str) -> Self {
        Observed { inner, backend, counters: Arc::default() }
    }

    /// Runs `operation` on `name` in its span; counts it, its error, and the `bytes` it moved when it succeeds.
    async fn run<T>(
        &self,
        operation: &'static str,
        name: &str,
        bytes: impl FnOnce(&T) -> Option<u64>,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::info_span!(
            target: "storages",
            "storage",
            op = operation,
            storage = self.inner.alias(),
            backend = self.backend,
            name = tracing::field::Empty,
        );
        if tracing::enabled!(target: "storages", tracing::Level::DEBUG) {
            span.record("name", name);
        }
        let started = Instant::now();
        let result = work.instrument(span.clone()).await;
        let elapsed_ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
        *self.counters.operations.lock().unwrap_or_else(PoisonError::into_inner).entry(operation).or_default() += 1;
        match &result {
            Ok(value) => {
                let moved = bytes(value);
                // An opened file counts what is read from it as it is read (see `CountedSource`).
                if let (Some(moved), false) = (moved, operation == "open") {
                    self.counters.bytes_written.fetch_add(moved, Ordering::Relaxed);
                }
                tracing::debug!(target: "storages", parent: &span, status = "ok", bytes = moved, %elapsed_ms, "done");
            }
            Err(error) => {
                let kind = error.kind().as_str();
                *self.counters.errors.lock().unwrap_or_else(PoisonError::into_inner).entry(kind).or_default() += 1;
                tracing::info!(target: "storages", parent: &span, status = kind, %elapsed_ms, "failed");
                tracing::debug!(target: "storages", parent: &span, error = %crate::redact(&error.to_string()), "why");
            }
        }
        result
    }
}

/// A file source that counts the bytes read through it.
#[derive(Debug)]
struct CountedSource {
    inner: Arc<dyn FileSource>,
    counters: Arc<Counters>,
}

impl FileSource for CountedSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn decoded(&self) -> bool {
        self.inner.decoded()
    }

    fn version(&self) -> Option<String> {
        self.inner.version()
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let counters = self.counters.clone();
        self.inner
            .read(range)
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    counters.bytes_read.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
            })
            .boxed()
    }
}

/// An upload that counts the bytes written through it.
struct CountedUpload {
    inner: Box<dyn Upload>,
    counters: Arc<Counters>,
}

impl AsyncWrite for CountedUpload {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.counters.bytes_written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Upload for CountedUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String>> {
        self.inner.commit()
    }
}

#[async_trait]
impl Storage for Observed {
    fn alias(&self) -> &str {
        self.inner.alias()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        let mut writer = self.run("open_write", name, |_| None, self.inner.open_write_with(name, options)).await?;
        if let WriterState::Open(upload) = std::mem::replace(&mut writer.state, WriterState::Failed(None)) {
            writer.state =
                WriterState::Open(Box::new(CountedUpload { inner: upload, counters: self.counters.clone() }));
        }
        Ok(writer)
    }

    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        let size = content.size_hint().await;
        self.run("save", name, |_| size, self.inner.save_with(name, content, options)).await
    }

    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        let size = content.size_hint().await;
        self.run("replace", name, |_| size, self.inner.replace(name, content)).await
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        let file = self.run("open", name, |file: &StoredFile| Some(file.size()), self.inner.open(name)).await?;
        let source = Arc::new(CountedSource { inner: file.source.clone(), counters: self.counters.clone() });
        let mut file = file;
        file.source = source;
        Ok(file)
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.run("exists", name, |_| None, self.inner.exists(name)).await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        self.run("size", name, |_| None, self.inner.size(name)).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.run("delete", name, |_| None, self.inner.delete(name)).await
    }

    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        let what = format!("{} names", names.len());
        let failed = self.run("delete_many", &what, |_| None, async { Ok(self.inner.delete_many(names).await) }).await;
        failed.unwrap_or_default()
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        self.run("listdir", path, |_| None, self.inner.listdir(path)).await
    }

    async fn url(&self, name: &str) -> Result<String> {
        self.run("url", name, |_| None, self.inner.url(name)).await
    }

    async fn url_expiring(&self, name: &str, expires_in: std::time::Duration) -> Result<String> {
        self.run("url_expiring", name, |_| None, self.inner.url_expiring(name, expires_in)).await
    }

    fn url_prefix(&self) -> Option<String> {
        self.inner.url_prefix()
    }

    async fn url_with(&self, name: &str, options: &crate::UrlOptions) -> Result<String> {
        self.run("url_with", name, |_| None, self.inner.url_with(name, options)).await
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        self.run("modified_time", name, |_| None, self.inner.modified_time(name)).await
    }

    async fn stat(&self, name: &str) -> Result<FileMeta> {
        self.run("stat", name, |_| None, self.inner.stat(name)).await
    }

    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        self.run("list_files", path, |_| None, self.inner.list_files(path)).await
    }

    async fn holds(&self, held: &FileMeta, local: Local<'_>, md5: &str, size: u64) -> Result<bool> {
        self.run("holds", &held.name, |_| None, self.inner.holds(held, local, md5, size)).await
    }

    async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        let what = format!("{} files", stored.len());
        self.run("record_md5s", &what, |_| None, self.inner.record_md5s(stored)).await
    }

    async fn settle(&self) -> Vec<String> {
        self.inner.settle().await
    }

    async fn cleanup(&self, options: &Cleanup) -> Result<Cleaned> {
        self.run("cleanup", "", |_| None, self.inner.cleanup(options)).await
    }

    async fn clear_cache(&self) -> Result<bool> {
        self.run("clear_cache", "", |_| None, self.inner.clear_cache()).await
    }

    fn request_counts(&self) -> Vec<(String, u64)> {
        self.inner.request_counts()
    }

    fn metrics(&self) -> Metrics {
        let mut metrics = self.inner.metrics();
        metrics.operations = self.counters.operations.lock().unwrap_or_else(PoisonError::into_inner).clone();
        metrics.errors = self.counters.errors.lock().unwrap_or_else(PoisonError::into_inner).clone();
        metrics.bytes_written = self.counters.bytes_written.load(Ordering::Relaxed);
        metrics.bytes_read = self.counters.bytes_read.load(Ordering::Relaxed);
        metrics
    }

    async fn get_available_name(&self, name: &str, max_length: Option<usize>) -> Result<String> {
        self.run("get_available_name", name, |_| None, self.inner.get_available_name(name, max_length)).await
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.alternative_names()
    }

    fn file_overwrite(&self) -> bool {
        self.inner.file_overwrite()
    }

    fn observed(&self) -> Option<Arc<dyn Storage>> {
        Some(self.inner.clone())
    }

    fn generate_filename(&self, name: &str) -> Result<String> {
        self.inner.generate_filename(name)
    }
}
