//! The conformance scenarios, on the in-memory backend and on a real directory.

use std::sync::Arc;
use storage_core::{AlternativeNames, InMemoryStorage, MemoryOptions};
use storage_fs::{FileSystemStorage, FsOptions};
use storage_testkit::Fixture;

mod memory {
    use super::*;

    fn fixture() -> Fixture {
        Fixture::new(Arc::new(InMemoryStorage::with_alias("memory")))
    }

    storage_testkit::conformance!(fixture());

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn random_alternative_names() {
        let options = MemoryOptions { alternative_names: AlternativeNames::Random, ..Default::default() };
        storage_testkit::random_alternative_names(Arc::new(InMemoryStorage::with_options("memory", options))).await;
    }
}

mod fs {
    use super::*;

    /// A storage in a fresh temporary directory, removed when the test's runtime ends.
    struct TempFixture {
        fixture: Fixture,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TempFixture {
        type Target = Fixture;
        fn deref(&self) -> &Fixture {
            &self.fixture
        }
    }

    fn storage(options: FsOptions) -> TempFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = FsOptions { location: dir.path().join("media"), ..options };
        let storage = FileSystemStorage::new("fs", options).expect("storage");
        TempFixture { fixture: Fixture::with_root(Arc::new(storage), dir.path()), _dir: dir }
    }

    storage_testkit::conformance!(storage(FsOptions::default()));

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn random_alternative_names() {
        let fixture = storage(FsOptions { alternative_names: AlternativeNames::Random, ..FsOptions::default() });
        storage_testkit::random_alternative_names(fixture.storage.clone()).await;
    }
}
