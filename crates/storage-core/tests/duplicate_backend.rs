//! A second registration of a registered dotted path makes the registry refuse to work, naming the path.

use std::sync::Arc;
use storage_core::{Backend, InMemoryStorage, Settings, Storage, StorageSettings, Storages};

fn build(settings: &StorageSettings) -> storage_core::Result<Arc<dyn Storage>> {
    Ok(Arc::new(InMemoryStorage::with_alias(settings.alias())))
}

storage_core::inventory::submit! {
    Backend { path: "shadow.Memory", aliases: &["storages.backends.memory.InMemoryStorage"], env: &[], build }
}

#[test]
fn a_path_registered_twice_is_an_error() {
    let message = storage_core::registered_paths().expect_err("duplicate").to_string();
    assert!(message.contains("`storages.backends.memory.InMemoryStorage` is registered twice"), "{message}");

    let settings =
        Settings::empty().merge(figment::providers::Serialized::default("storages.default.backend", "shadow.Memory"));
    let message = Storages::new(settings).get("default").expect_err("duplicate").to_string();
    assert!(message.contains("registered twice"), "{message}");
}
