//! The conformance suite of storage-testkit, on the in-memory backend and on a real directory, as any backend
//! crate runs it. (The `conformance` crate runs it on every registered backend, with the matrix.)

use std::sync::Arc;
use storage_core::{AlternativeNames, InMemoryStorage, MemoryOptions};
use storage_fs::{FileSystemStorage, FsOptions};
use storage_testkit::{Fixture, Outcome};

fn fs(options: FsOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = FsOptions { location: dir.path().join("media"), ..options };
    let storage = FileSystemStorage::new("fs", options).expect("storage");
    Fixture::new(Arc::new(storage)).root(dir.path()).keep(dir)
}

mod memory {
    use super::*;
    storage_testkit::conformance!(Fixture::new(Arc::new(InMemoryStorage::with_alias("memory"))));
}

mod filesystem {
    use super::*;
    storage_testkit::conformance!(fs(FsOptions::default()));
}

/// With Django's random suffixes, the scenarios about taken names hold too.
#[test]
fn random_alternative_names() {
    let memory = MemoryOptions { alternative_names: AlternativeNames::Random, ..Default::default() };
    let fixtures = [
        Fixture::new(Arc::new(InMemoryStorage::with_options("memory", memory))),
        fs(FsOptions { alternative_names: AlternativeNames::Random, ..FsOptions::default() }),
    ];
    for fixture in &fixtures {
        for name in ["same_name_alternative", "concurrent_saves", "listdir_model"] {
            let outcome = storage_testkit::scenario(name).expect("scenario").run(fixture);
            assert_eq!(outcome, Outcome::Passed, "{name} on {}", fixture.storage.alias());
        }
    }
}
