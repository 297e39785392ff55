//! The suite catches a broken backend and says how: a storage that drops the last byte of every read fails
//! `round_trip` with a shrunk, readable counterexample.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;
use storage_core::{
    Capabilities, Content, FileSource, FileWriter, InMemoryStorage, Result, SaveOptions, Storage, StoredFile,
};
use storage_testkit::{Fixture, Outcome};

/// What a [`Broken`] storage does wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Every read loses the file's last byte.
    DropsLastByte,
    /// Every save answers a name that breaks the name rules.
    AnswersBadNames,
}

/// In-memory storage with one [`Fault`].
#[derive(Debug)]
struct Broken(InMemoryStorage, Fault);

impl Broken {
    fn new(fault: Fault) -> Self {
        Broken(InMemoryStorage::with_alias("broken"), fault)
    }
}

#[derive(Debug)]
struct Truncated(StoredFile);

impl FileSource for Truncated {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
        let end = if range.end == self.0.size() { range.end.saturating_sub(1).max(range.start) } else { range.end };
        match self.0.range_stream(range.start..end) {
            Ok(stream) => stream,
            Err(error) => Box::pin(futures::stream::once(async { Err(error) })),
        }
    }
}

#[async_trait]
impl Storage for Broken {
    fn alias(&self) -> &str {
        "broken"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        self.0.open_write_with(name, options).await
    }
    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        let saved = self.0.save_with(name, content, options).await?;
        Ok(if self.1 == Fault::AnswersBadNames { "../outside.txt".to_owned() } else { saved })
    }
    async fn open(&self, name: &str) -> Result<StoredFile> {
        let inner = self.0.open(name).await?;
        if self.1 != Fault::DropsLastByte {
            return Ok(inner);
        }
        Ok(StoredFile::new("broken", name, Arc::new(Truncated(inner))))
    }
    async fn exists(&self, name: &str) -> Result<bool> {
        self.0.exists(name).await
    }
    async fn size(&self, name: &str) -> Result<u64> {
        self.0.size(name).await
    }
    async fn delete(&self, name: &str) -> Result<()> {
        self.0.delete(name).await
    }
    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        self.0.listdir(path).await
    }
    async fn url(&self, name: &str) -> Result<String> {
        self.0.url(name).await
    }
    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        self.0.modified_time(name).await
    }
}

#[test]
fn a_backend_that_drops_the_last_byte_fails_with_a_minimal_counterexample() {
    let fixture = Fixture::new(Arc::new(Broken::new(Fault::DropsLastByte))).cases(64).without_persistence();
    let outcome = storage_testkit::scenario("round_trip").expect("scenario").run(&fixture);
    let Outcome::Failed(message) = outcome else { unreachable!("the broken backend passed: {outcome:?}") };
    println!("round_trip on the broken backend:\n{message}");
    // The short read is caught where the bytes are read, whatever the scenario compares after.
    assert!(message.contains("read_all: storage 'broken'") && message.contains("brought 0"), "{message}");
    assert!(message.contains("minimal failing input"), "{message}");
    // Shrunk to the smallest content that shows the bug: one byte.
    assert!(message.contains("Blob { len: 1,"), "{message}");

    // Scenarios that never read a file's end are not fooled into failing.
    let outcome = storage_testkit::scenario("invalid_names").expect("scenario").run(&fixture);
    assert_eq!(outcome, Outcome::Passed);
}

/// A name a backend's save answers is checked before a `FieldFile` records it: a bad one is an error, and the
/// file keeps the name it had.
#[tokio::test]
async fn a_bad_name_from_a_backend_is_never_recorded() {
    let storage: Arc<dyn Storage> = Arc::new(Broken::new(Fault::AnswersBadNames));
    let field = storage_core::FileField::new("normal", "broken").upload_to("tests");
    let mut file = field.file(storage).expect("file");
    let error = file.save(&(), "a.txt", "x".into()).await.expect_err("a bad name answered");
    assert!(matches!(error, storage_core::Error::SuspiciousName { .. }), "{error}");
    assert_eq!(file.name(), None);
}
