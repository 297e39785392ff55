//! The backend registry (on `inventory`) and [`Storages`], the named storages of an application.

use crate::error::Result;
use crate::settings::{Settings, SettingsError, StorageSettings, closest};
use crate::storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A backend a crate registers with [`inventory::submit!`]: its dotted path, aliases and factory.
///
/// ```
/// use std::sync::Arc;
/// use storage_core::{Backend, InMemoryStorage, Storage, StorageSettings};
///
/// fn build(settings: &StorageSettings) -> storage_core::Result<Arc<dyn Storage>> {
///     // A real backend reads its typed options with `settings.options::<MyOptions>()?`.
///     Ok(Arc::new(InMemoryStorage::with_alias(settings.alias())))
/// }
///
/// storage_core::inventory::submit! {
///     Backend { path: "myapp.storage.Scratch", aliases: &[], env: &[], build }
/// }
/// # fn main() {
/// assert!(storage_core::registered_paths().unwrap().contains(&"myapp.storage.Scratch"));
/// # }
/// ```
#[derive(Debug)]
pub struct Backend {
    /// The dotted path settings name it by, e.g. `storages.backends.fs.FileSystemStorage`.
    pub path: &'static str,
    /// Other dotted paths that mean the same backend (Django's own names, older django-storages names).
    pub aliases: &'static [&'static str],
    /// Global environment variables of this backend, `(VAR, key)`: they fill `key` of every storage of this
    /// backend unless its own settings set it. Earlier variables win over later ones for the same key.
    pub env: &'static [(&'static str, &'static str)],
    /// Builds a storage from its settings.
    pub build: fn(&StorageSettings) -> Result<Arc<dyn Storage>>,
}

inventory::collect!(Backend);

/// Every registered backend, keyed by each of its paths and aliases; a path registered twice is an error.
fn registry() -> Result<HashMap<&'static str, &'static Backend>> {
    let mut by_path = HashMap::new();
    for backend in inventory::iter::<Backend> {
        for path in std::iter::once(&backend.path).chain(backend.aliases) {
            if by_path.insert(*path, backend).is_some() {
                return Err(SettingsError::DuplicateBackend { path: (*path).into() }.into());
            }
        }
    }
    Ok(by_path)
}

/// The dotted paths of every registered backend (not their aliases), sorted.
pub fn registered_paths() -> Result<Vec<&'static str>> {
    let registry = registry()?;
    let mut paths: Vec<_> = registry.values().map(|b| b.path).collect();
    paths.sort_unstable();
    paths.dedup();
    Ok(paths)
}

/// Every registered backend with its aliases, sorted by path.
pub fn registered_backends() -> Result<Vec<&'static Backend>> {
    let registry = registry()?;
    let mut backends: Vec<&'static Backend> = Vec::new();
    for backend in registry.into_values() {
        if !backends.iter().any(|b| std::ptr::eq(*b, backend)) {
            backends.push(backend);
        }
    }
    backends.sort_by_key(|b| b.path);
    Ok(backends)
}

/// How a storage is being built: the [`Storages`] it belongs to (so that a layer's inner storage is the shared
/// instance), and the layers being built above it (to find cycles).
#[derive(Clone, Default)]
pub(crate) struct BuildContext {
    storages: Option<std::sync::Weak<Shared>>,
    /// The layers above, outermost first: each alias, and how an error shows it (`alias (its inner from ...)`).
    pub(crate) chain: Vec<(String, String)>,
}

/// The storage `inner` for the layer `layer`, whose chain of layers (itself included) is `chain`.
pub(crate) fn build_inner(
    layer: &StorageSettings,
    inner: &str,
    chain: Vec<(String, String)>,
) -> Result<Arc<dyn Storage>> {
    match layer.context.storages.as_ref().and_then(std::sync::Weak::upgrade) {
        Some(shared) => shared.get(inner, chain),
        None => {
            let mut settings = layer.sibling(inner)?;
            settings.context = BuildContext { storages: None, chain };
            build(&settings)
        }
    }
}

/// Builds the storage `settings` describe, with its registered backend, observed: every operation gets a
/// `tracing` span (target `storages`) and is counted in [`Storage::metrics`].
pub fn build(settings: &StorageSettings) -> Result<Arc<dyn Storage>> {
    let registry = registry()?;
    let Some(backend) = registry.get(settings.backend()) else {
        let mut registered: Vec<&str> = registry.keys().copied().collect();
        registered.sort_unstable();
        return Err(SettingsError::UnknownBackend {
            alias: settings.alias().into(),
            path: settings.backend().into(),
            closest: closest(settings.backend(), registered.iter().copied()).map(String::from),
            registered: registered.into_iter().map(String::from).collect(),
        }
        .into());
    };
    let storage = (backend.build)(&settings.clone().with_backend_env(backend.env))?;
    Ok(Arc::new(crate::observed::Observed::new(storage, backend.path)))
}

/// The named storages of an application, like Django's `storages`: each built on first use from its settings,
/// then shared.
///
/// ```
/// use figment::providers::{Format, Toml};
/// use storage_core::{Settings, Storages};
///
/// let storages = Storages::new(Settings::empty().merge(Toml::string(r#"
///     [storages.default]
///     backend = "django.core.files.storage.InMemoryStorage"
/// "#)));
/// let default = storages.get("default")?;
/// assert!(std::sync::Arc::ptr_eq(&default, &storages.get("default")?));
/// assert!(storages.get("nope").unwrap_err().to_string().contains("storage 'nope' is not configured"));
/// # Ok::<_, storage_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Storages {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    built: Mutex<HashMap<String, Arc<dyn Storage>>>,
}

impl Shared {
    fn get(self: &Arc<Self>, alias: &str, chain: Vec<(String, String)>) -> Result<Arc<dyn Storage>> {
        if let Some(storage) = self.built.lock().unwrap_or_else(PoisonError::into_inner).get(alias) {
            return Ok(storage.clone());
        }
        // Built without the lock, so that a layer may ask for its inner storage; if two threads build the same
        // alias, the first one stored is the one everybody gets.
        let mut settings = self.settings.storage(alias)?;
        settings.context = BuildContext { storages: Some(Arc::downgrade(self)), chain };
        let storage = build(&settings)?;
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(built.entry(alias.into()).or_insert(storage).clone())
    }
}

impl Storages {
    /// Storages configured by `settings`.
    pub fn new(settings: Settings) -> Self {
        Storages { shared: Arc::new(Shared { settings, built: Mutex::new(HashMap::new()) }) }
    }

    /// Storages configured by `storages.toml` and the environment ([`Settings::load`]).
    pub fn load() -> Result<Self> {
        Ok(Self::new(Settings::load()?))
    }

    /// The settings these storages are built from.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// The storage `alias`, built on first use (a layer's inner storage with it).
    pub fn get(&self, alias: &str) -> Result<Arc<dyn Storage>> {
        self.shared.get(alias, Vec::new())
    }

    /// The storage `alias` as its backend's own type, for what only that backend has (as
    /// `FileSystemStorage::path`). An error says which backend the alias has when it is another.
    ///
    /// ```
    /// use figment::providers::{Format, Toml};
    /// use storage_core::{InMemoryStorage, Settings, Storages};
    ///
    /// let storages = Storages::new(Settings::empty().merge(Toml::string(
    ///     "[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorage\"\n",
    /// )));
    /// let memory: std::sync::Arc<InMemoryStorage> = storages.get_as("default")?;
    /// # Ok::<_, storage_core::Error>(())
    /// ```
    pub fn get_as<T: Storage>(&self, alias: &str) -> Result<Arc<T>> {
        let mut storage = self.get(alias)?;
        loop {
            let any: Arc<dyn std::any::Any + Send + Sync> = storage.clone();
            if let Ok(typed) = any.downcast::<T>() {
                return Ok(typed);
            }
            match storage.observed() {
                Some(inner) => storage = inner,
                None => {
                    let message = format!("its backend is not {}", std::any::type_name::<T>());
                    return Err(crate::Error::backend(alias, "get_as", "", crate::ErrorKind::InvalidInput, message));
                }
            }
        }
    }

    /// Adds a storage built by code under `alias` (replacing one of that alias), so that names bound to the alias
    /// ([`crate::FieldFile`]s) find it.
    pub fn insert(&self, alias: &str, storage: Arc<dyn Storage>) {
        self.shared.built.lock().unwrap_or_else(PoisonError::into_inner).insert(alias.into(), storage);
    }

    /// The application's storages, like Django's global `storages`: those given to [`Storages::set_global`], or
    /// else loaded on first use from `storages.toml` and the environment.
    pub fn global() -> Result<&'static Storages> {
        if let Some(storages) = GLOBAL.get() {
            return Ok(storages);
        }
        let loaded = Storages::load()?;
        Ok(GLOBAL.get_or_init(|| loaded))
    }

    /// Makes `storages` the application's global storages; returns false (and drops them) if the global storages
    /// were already set or loaded.
    pub fn set_global(storages: Storages) -> bool {
        GLOBAL.set(storages).is_ok()
    }
}

static GLOBAL: std::sync::OnceLock<Storages> = std::sync::OnceLock::new();
