//! Settings: one [`figment::Figment`] of defaults, `storages.toml`, the environment and code, with named
//! storages in `[storages.<alias>]`.

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Deserializer;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::secret::Secret;

/// Everything wrong with settings. Every variant names the storage alias and the key or value involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A key no option of the backend has (often a typo).
    #[error(
        "storage '{alias}': unknown setting `{key}` (from {origin}){}. Valid settings of {backend}: {}",
        closest.as_ref().map(|c| format!(", did you mean `{c}`?")).unwrap_or_default(),
        valid.join(", ")
    )]
    UnknownKey {
        /// The storage alias.
        alias: String,
        /// The unknown key.
        key: String,
        /// Where it came from: a file path or an environment variable.
        origin: String,
        /// The backend's dotted path.
        backend: String,
        /// The valid key closest to it.
        closest: Option<&'static str>,
        /// Every valid key.
        valid: &'static [&'static str],
    },
    /// A value of the wrong type or shape.
    #[error("storage '{alias}': invalid setting `{key}` (from {origin}): {message}")]
    InvalidValue {
        /// The storage alias.
        alias: String,
        /// The key whose value is wrong.
        key: String,
        /// Where the value came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The settings could not be read at all (a missing or malformed file).
    #[error("cannot read the settings: {0}")]
    Unreadable(String),
    /// No storage has this alias, or it names no backend.
    #[error(
        "storage '{alias}' is not configured{}: set `backend` in [storages.{alias}] of storages.toml{}; configured storages: {}",
        closest.as_ref().map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default(),
        legacy.map(|v| format!(" or the {v} environment variable")).unwrap_or_default(),
        if configured.is_empty() { "none".to_string() } else { configured.join(", ") }
    )]
    NotConfigured {
        /// The alias asked for.
        alias: String,
        /// The configured alias closest to it.
        closest: Option<String>,
        /// The legacy environment variable that can choose its backend, if any.
        legacy: Option<&'static str>,
        /// The aliases that are configured.
        configured: Vec<String>,
    },
    /// `backend` names no registered backend.
    #[error(
        "storage '{alias}': unknown backend `{path}`{}. Registered backends: {}. (A backend crate that code never names is not linked: add `use storage_s3 as _;` or the like to your binary or test.)",
        closest.as_ref().map(|c| format!(", did you mean `{c}`?")).unwrap_or_default(),
        registered.join(", ")
    )]
    UnknownBackend {
        /// The storage alias.
        alias: String,
        /// The path asked for.
        path: String,
        /// The registered path closest to it.
        closest: Option<String>,
        /// Every registered path and alias.
        registered: Vec<String>,
    },
    /// Storages that wrap each other in a circle (`a` over `b` over `a`).
    #[error("storages wrap each other in a cycle: {chain}; a layer's inner storage must lead to a backend")]
    Cycle {
        /// The aliases of the cycle in order, each with where its `inner` was set.
        chain: String,
    },
    /// Two backends registered the same dotted path.
    #[error("backend path `{path}` is registered twice: two linked crates claim it")]
    DuplicateBackend {
        /// The path registered twice.
        path: String,
    },
}

/// The environment variable that names the settings file (default `storages.toml` in the working directory).
pub const CONFIG_ENV: &str = "STORAGES_CONFIG";

/// The prefix of per-storage environment variables: `STORAGES__<ALIAS>__<KEY>`, for example
/// `STORAGES__DEFAULT__LOCATION=/srv/media`.
pub const ENV_PREFIX: &str = "STORAGES__";

/// Legacy Django settings that choose the backend of one storage, as environment variables.
pub const LEGACY_BACKEND_ENV: [(&str, &str); 2] =
    [("DEFAULT_FILE_STORAGE", "default"), ("STATICFILES_STORAGE", "staticfiles")];

/// The settings of every named storage.
///
/// Sources, lowest to highest: a backend's own environment variables (`AWS_*`, like Django's global
/// settings), `storages.toml` (or the file in `$STORAGES_CONFIG`), `STORAGES__<ALIAS>__<KEY>` and the legacy
/// `DEFAULT_FILE_STORAGE`/`STATICFILES_STORAGE` environment variables, then whatever code merges.
///
/// ```
/// use storage_core::Settings;
/// use figment::providers::{Format, Toml};
///
/// let settings = Settings::empty().merge(Toml::string(r#"
///     [storages.default]
///     backend = "storages.backends.memory.InMemoryStorage"
///     base_url = "/uploads/"
/// "#));
/// assert_eq!(settings.aliases(), ["default"]);
/// assert_eq!(settings.storage("default").unwrap().backend(), "storages.backends.memory.InMemoryStorage");
/// ```
#[derive(Clone)]
pub struct Settings {
    figment: Figment,
    /// The environment variables the settings were read with, for backends' own variables.
    env: Arc<BTreeMap<String, String>>,
    /// The settings file read, absolute.
    file: Option<PathBuf>,
}

impl Settings {
    /// `storages.toml` in the working directory (or `$STORAGES_CONFIG`, which must exist) and the process's
    /// environment.
    ///
    /// Parent directories are never searched: a project without its own `storages.toml` must not pick up one
    /// meant for another project (and its bucket) further up.
    pub fn load() -> crate::Result<Self> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::from_file(PathBuf::from(path)),
            // Anything named storages.toml here is meant as the settings: a directory or an unreadable file is
            // an error naming it, never silently no settings.
            None if Path::new("storages.toml").exists() => Self::from_file("storages.toml"),
            None => Self::with_env(Figment::new(), std::env::vars()).checked(),
        }
    }

    /// The settings file these settings were read from, as an absolute path (`None`: no file).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The file at `path` (which must exist) and the process's environment.
    pub fn from_file(path: impl AsRef<Path>) -> crate::Result<Self> {
        Self::from_file_and_env(path, std::env::vars())
    }

    /// The file at `path` (which must exist) and the environment variables `env` (instead of the process's).
    pub fn from_file_and_env(
        path: impl AsRef<Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> crate::Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(SettingsError::Unreadable(format!("settings file {} does not exist", path.display())).into());
        }
        if let Err(error) = std::fs::File::open(path).and_then(|file| {
            if file.metadata()?.is_dir() { Err(std::io::Error::other("it is a directory")) } else { Ok(()) }
        }) {
            return Err(SettingsError::Unreadable(format!("settings file {}: {error}", path.display())).into());
        }
        let file = std::path::absolute(path).map_err(|e| {
            SettingsError::Unreadable(format!("settings file {} cannot be resolved: {e}", path.display()))
        })?;
        let settings = Self::with_env(Figment::from(Toml::file_exact(&file)), env);
        Settings { file: Some(file), ..settings }.checked()
    }

    /// No settings at all: add sources with [`Settings::merge`].
    pub fn empty() -> Self {
        Self::from_figment(Figment::new())
    }

    /// Settings from a figment you built; its `storages` table holds the named storages. No environment
    /// variable is read.
    pub fn from_figment(figment: Figment) -> Self {
        Settings { figment, env: Arc::default(), file: None }
    }

    /// Adds `provider` above every current source (code overriding files and environment, say).
    pub fn merge(self, provider: impl Provider) -> Self {
        Settings { figment: self.figment.merge(provider), ..self }
    }

    /// Adds `provider` below every current source: it only fills in what nothing else sets (built-in defaults).
    pub fn join(self, provider: impl Provider) -> Self {
        Settings { figment: self.figment.join(provider), ..self }
    }

    /// Reads every source now, so that a malformed file (a TOML syntax error, `storages = 3`) is reported as
    /// such rather than as a storage that is not configured.
    fn checked(self) -> crate::Result<Self> {
        let data = self.figment.data().map_err(|e| {
            let shown = crate::secret::mask_assignments(&e.to_string());
            SettingsError::Unreadable(crate::redact(&shown).replace('\n', " "))
        })?;
        let storages = data.values().find_map(|dict| dict.get("storages"));
        match storages {
            None | Some(Value::Dict(..)) => Ok(self),
            Some(_) => Err(SettingsError::Unreadable(format!(
                "`storages` must be a table of named storages ([storages.default] ...), in {}",
                origin(&self.figment, "storages")
            ))
            .into()),
        }
    }

    /// `figment` with the `STORAGES__<ALIAS>__<KEY>` and legacy variables of `env` above it.
    fn with_env(mut figment: Figment, env: impl IntoIterator<Item = (String, String)>) -> Self {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (var, alias) in LEGACY_BACKEND_ENV {
            if let Some(value) = env.get(var) {
                figment = figment.merge(EnvVar::new(var, &format!("storages.{alias}.backend"), value));
            }
        }
        for (var, value) in &env {
            if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
                let key = rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".");
                figment = figment.merge(EnvVar::new(var, &format!("storages.{key}"), value));
            }
        }
        Settings { figment, env: Arc::new(env), file: None }
    }

    /// The underlying figment.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// The configured storage aliases, sorted.
    pub fn aliases(&self) -> Vec<String> {
        match self.figment.find_value("storages") {
            Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The settings of the storage `alias`.
    pub fn storage(&self, alias: &str) -> crate::Result<StorageSettings> {
        let not_configured = || {
            // A table without `backend` but with a key close to it: the key is misspelt.
            if let Ok(Value::Dict(_, table)) = self.figment.find_value(&format!("storages.{alias}")) {
                if let Some(key) = table.keys().find(|k| closest(k, ["backend"]).is_some()) {
                    return SettingsError::UnknownKey {
                        alias: alias.into(),
                        key: key.clone(),
                        origin: origin(&self.figment, &format!("storages.{alias}.{key}")),
                        backend: "any storage".into(),
                        closest: Some("backend"),
                        valid: &["backend"],
                    };
                }
            }
            let configured = self.aliases();
            SettingsError::NotConfigured {
                alias: alias.into(),
                legacy: LEGACY_BACKEND_ENV.iter().find(|(_, a)| *a == alias).map(|(var, _)| *var),
                closest: closest(alias, configured.iter().map(String::as_str)).map(String::from),
                configured,
            }
        };
        let backend = match self.figment.find_value(&format!("storages.{alias}.backend")) {
            Ok(Value::String(_, backend)) => backend,
            Ok(_) => {
                return Err(SettingsError::InvalidValue {
                    alias: alias.into(),
                    key: "backend".into(),
                    origin: origin(&self.figment, &format!("storages.{alias}.backend")),
                    message: "expected a dotted path string".into(),
                }
                .into());
            }
            Err(_) => return Err(not_configured().into()),
        };
        Ok(StorageSettings {
            alias: alias.into(),
            backend,
            figment: self.figment.clone(),
            env: self.env.clone(),
            context: crate::registry::BuildContext::default(),
        })
    }
}

/// One named storage's settings, handed to its backend's factory.
#[derive(Clone)]
pub struct StorageSettings {
    alias: String,
    backend: String,
    figment: Figment,
    env: Arc<BTreeMap<String, String>>,
    /// How this storage is being built: the storages it is built from, and the layers above it.
    pub(crate) context: crate::registry::BuildContext,
}

impl StorageSettings {
    /// The storage alias (`default`, `staticfiles`, ...).
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The backend's dotted path as configured.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// An [`SettingsError::InvalidValue`] for `key` of this storage, naming where the value came from: for
    /// backends that check values beyond their type.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> crate::Error {
        let path = format!("storages.{}.{key}", self.alias);
        let origin = match self.figment.find_value(&path) {
            Ok(_) => origin(&self.figment, &path),
            Err(_) => "not set anywhere".into(),
        };
        SettingsError::InvalidValue { alias: self.alias.clone(), key: key.into(), origin, message: message.into() }
            .into()
    }

    /// Whether `key` is set for this storage, by any source (a backend's default for a variant of it, such as
    /// a static storage's `querystring_auth`, applies when it is not).
    pub fn is_set(&self, key: &str) -> bool {
        self.figment.find_value(&format!("storages.{}.{key}", self.alias)).is_ok()
    }

    /// The settings of the storage `alias`, from the same sources as these.
    pub(crate) fn sibling(&self, alias: &str) -> crate::Result<StorageSettings> {
        Settings { figment: self.figment.clone(), env: self.env.clone(), file: None }.storage(alias)
    }

    /// The storage named by the alias in `key` (a layer's `inner`), from the same storages as this one: a
    /// storage that is also used by its own alias is one instance, shared. A missing alias, or a chain of layers
    /// that comes back to a storage it started from, is a settings error naming the chain.
    pub fn storage(&self, key: &str) -> crate::Result<Arc<dyn crate::Storage>> {
        let path = format!("storages.{}.{key}", self.alias);
        let inner = match self.figment.find_value(&path) {
            Ok(Value::String(_, inner)) => inner,
            Ok(_) => return Err(self.invalid(key, "expected the alias of a configured storage")),
            Err(_) => return Err(self.invalid(key, "not set: a layer needs the alias of the storage it wraps")),
        };
        let here = format!("{} (its {key} from {})", self.alias, origin(&self.figment, &path));
        let mut chain = self.context.chain.clone();
        chain.push((self.alias.clone(), here));
        if chain.iter().any(|(alias, _)| *alias == inner) {
            let shown: Vec<&str> = chain.iter().map(|(_, shown)| shown.as_str()).chain([inner.as_str()]).collect();
            return Err(SettingsError::Cycle { chain: shown.join(" -> ") }.into());
        }
        crate::registry::build_inner(self, &inner, chain).map_err(|error| match error {
            crate::Error::Settings(settings) if matches!(*settings, SettingsError::NotConfigured { .. }) => {
                self.invalid(key, format!("names storage '{inner}': {settings}"))
            }
            other => other,
        })
    }

    /// The path in `key`, resolved against the directory of the settings file that set it; a path from the
    /// environment or from code is returned as given (relative to the working directory). `None` when unset.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("storages.toml");
    /// std::fs::write(&file, "[storages.default]\nbackend = \"x\"\nlocation = \"media\"\n")?;
    /// let settings = storage_core::Settings::from_file_and_env(&file, [])?.storage("default")?;
    /// assert_eq!(settings.path("location")?, Some(dir.path().join("media")));
    /// # Ok(()) }
    /// ```
    pub fn path(&self, key: &str) -> crate::Result<Option<PathBuf>> {
        use figment::value::magic::RelativePathBuf;
        let path = format!("storages.{}.{key}", self.alias);
        if self.figment.find_value(&path).is_err() {
            return Ok(None);
        }
        match self.figment.extract_inner::<RelativePathBuf>(&path) {
            Ok(value) => Ok(Some(value.relative())),
            Err(_) => Err(self.invalid(key, "expected a path")),
        }
    }

    /// Adds the backend's own environment variables (`(VAR, key)`, earlier ones win) below every other source,
    /// like Django's global settings under a storage's `OPTIONS`.
    pub(crate) fn with_backend_env(mut self, env: &[(&str, &str)]) -> Self {
        for (var, key) in env {
            if let Some(value) = self.env.get(*var) {
                self.figment = self.figment.join(EnvVar::new(var, &format!("storages.{}.{key}", self.alias), value));
            }
        }
        self
    }

    /// The backend's options, typed. Text fills booleans and numbers where it reads as one (`"true"`, `"3600"`),
    /// as environment variables need.
    ///
    /// Every key of `[storages.<alias>]` but `backend` must be a field of `T`: an unknown key is an
    /// [`SettingsError::UnknownKey`] naming it, the alias, its origin and the closest valid key. (Core enforces
    /// this for every backend, so options structs need no `deny_unknown_fields`, which `backend` would trip.)
    pub fn options<T: DeserializeOwned>(&self) -> crate::Result<T> {
        let table = format!("storages.{}", self.alias);
        if let Some(fields) = struct_fields::<T>() {
            let keys = match self.figment.find_value(&table) {
                Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
                _ => Vec::new(),
            };
            for key in keys {
                if key != "backend" && !fields.contains(&key.as_str()) {
                    return Err(SettingsError::UnknownKey {
                        origin: origin(&self.figment, &format!("{table}.{key}")),
                        closest: closest(&key, fields.iter().copied()),
                        alias: self.alias.clone(),
                        key,
                        backend: self.backend.clone(),
                        valid: fields,
                    }
                    .into());
                }
            }
        }
        let figment = match self.figment.find_value(&table) {
            Ok(_) => self.figment.clone(),
            // A storage named only by a legacy variable has no table of its own yet: options take defaults.
            Err(_) => self.figment.clone().join(figment::providers::Serialized::default(&table, Dict::new())),
        };
        figment.extract_inner_lossy::<T>(&table).map_err(|error| {
            // figment reports the path inside the table, followed or preceded by the table's own path.
            let table_path = ["storages", self.alias.as_str()];
            let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
            let inner =
                path.strip_suffix(&table_path[..]).or_else(|| path.strip_prefix(&table_path[..])).unwrap_or(&path);
            let key = inner.join(".");
            let origin = match &error.metadata {
                Some(_) if !key.is_empty() => origin(&self.figment, &format!("{table}.{key}")),
                Some(metadata) => describe(metadata),
                None => "defaults".into(),
            };
            let message = redacted(&error.kind, &key);
            SettingsError::InvalidValue { alias: self.alias.clone(), key, origin, message }.into()
        })
    }
}

/// What is wrong with the value of `key`: the value is shown unless the key names a secret.
fn redacted(kind: &figment::error::Kind, key: &str) -> String {
    use figment::error::Kind;
    let secret = crate::secret::SECRET_WORDS.iter().any(|word| key.contains(word));
    match kind {
        Kind::UnknownVariant(value, expected) => {
            format!("unknown value {value:?}; expected one of: {}", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) if !secret => {
            format!("expected {expected}, found {actual}")
        }
        other => value_hidden(other),
    }
}

/// What is wrong with a value, naming its type but never the value itself: it may be a secret.
fn value_hidden(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let type_of = |actual: &Actual| match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "an array",
        Actual::Map => "a table",
        _ => "another kind of value",
    };
    match kind {
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {}", type_of(actual)),
        Kind::InvalidValue(actual, expected) => format!(
            "expected {expected}, found a different {}",
            type_of(actual).trim_start_matches("a ").trim_start_matches("an ")
        ),
        other => other.to_string(),
    }
}

/// Shows the storages and the sources, never a value: values include secrets.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self.figment.metadata().map(describe).collect();
        f.debug_struct("Settings").field("storages", &self.aliases()).field("sources", &sources).finish()
    }
}

/// Shows the alias and the backend, never a value: values include secrets.
impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageSettings").field("alias", &self.alias).field("backend", &self.backend).finish()
    }
}

/// Where the value at `path` came from, as a reader would look for it: a file path or an environment variable.
fn origin(figment: &Figment, path: &str) -> String {
    figment.find_metadata(path).map(describe).unwrap_or_else(|| "an unknown source".into())
}

fn describe(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(Source::File(path)) => format!("file {}", path.display()),
        Some(Source::Custom(var)) => format!("environment variable {var}"),
        Some(Source::Code(location)) => format!("code at {}:{}", location.file(), location.line()),
        _ => metadata.name.to_string(),
    }
}

/// The candidate closest to `key` by edit distance, if it is plausibly a typo of it: what every "did you mean"
/// of the settings uses.
///
/// ```
/// assert_eq!(storage_core::settings::closest("locaton", ["location", "base_url"]), Some("location"));
/// assert_eq!(storage_core::settings::closest("zzz", ["location"]), None);
/// ```
pub fn closest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(key, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// One environment variable as one settings key, with the variable's name as its origin. The value stays text;
/// options are extracted leniently, so `true` or `3600` still fill a boolean or a number, while `12345` stays
/// a bucket name or a key.
struct EnvVar {
    var: String,
    data: Dict,
}

impl EnvVar {
    fn new(var: &str, key: &str, value: &str) -> Self {
        let data = match figment::util::nest(key, Value::from(value.to_owned())) {
            Value::Dict(_, dict) => dict,
            _ => Dict::new(),
        };
        EnvVar { var: var.into(), data }
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::from(format!("environment variable {}", self.var), Source::Custom(self.var.clone()))
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// The field names of a struct `T` derives `Deserialize` for, read from serde itself.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{self, Visitor};
    struct Capture<'a>(&'a mut Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("fields captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = None;
    let _ = T::deserialize(Capture(&mut fields));
    fields
}
