//! The core of **storages**: Django's file-storage API for Rust.
//!
//! An application names each storage's backend by a dotted path in `storages.toml`, and gets an
//! `Arc<dyn Storage>` from [`Storages`]:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use figment::providers::{Format, Toml};
//! use storage_core::{Settings, Storages};
//!
//! let settings = Settings::empty().merge(Toml::string(r#"
//!     [storages.default]
//!     backend = "storages.backends.memory.InMemoryStorage"
//! "#));
//! let storage = Storages::new(settings).get("default")?;
//! let name = storage.save("tests/django_test.txt", "content".into()).await?;
//! assert_eq!(storage.open(&name).await?.read_all().await?, "content");
//! # Ok::<_, storage_core::Error>(()) }).unwrap();
//! ```
//!
//! - [`Storage`] is the trait every backend implements; saves never overwrite unless the settings say so, and
//!   pick alternative names atomically.
//! - [`Settings`] reads `storages.toml` and the environment; each backend takes its typed options from
//!   [`StorageSettings::options`], which refuses unknown keys.
//! - [`Backend`] is what a backend crate registers (with [`inventory::submit!`]); [`Storages`] builds the named
//!   storages from it.
//! - [`InMemoryStorage`] is the in-memory backend, `storages.backends.memory.InMemoryStorage`.
//! - [`FileField`] and [`FieldFile`] are Django's model file fields; [`delete_owner_file`] deletes an owner's
//!   file unless another owner still refers to it.

mod content;
mod error;
mod field;
mod memory;
mod name;
mod observed;
mod registry;
mod secret;
pub mod settings;
pub mod staticfiles;
mod storage;

pub use content::{Content, FileSource, FileWriter, StoredFile, Upload};
pub use error::{Error, ErrorKind, NameRule, Result};
pub use field::{FieldFile, FileField, FileReferences, UploadTo, UploadToFn, delete_owner_file};
pub use memory::{InMemoryStorage, MemoryOptions};
pub use name::{
    AlternativeNames, MAX_NAME_ATTEMPTS, MAX_NAME_LEN, candidate_names, get_valid_name, guess_content_type,
    truncate_name, validate_name,
};
pub use registry::{Backend, Storages, build, registered_backends, registered_paths};
pub use secret::{Secret, redact};
pub use settings::{Settings, SettingsError, StorageSettings};
pub use storage::{
    Capabilities, Cleaned, Cleanup, FileMeta, Local, Metrics, SaveOptions, Storage, UrlMethod, UrlOptions, check_dir,
    check_name, join_url,
};

pub use async_trait::async_trait;
pub use inventory;
