//! The one error type every storage returns.

use std::fmt;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which name rule a refused name broke (see [`crate::validate_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameRule {
    /// The name is empty.
    Empty,
    /// The name starts with `/`.
    Absolute,
    /// A segment is `..`.
    ParentSegment,
    /// A segment is `.`.
    CurrentSegment,
    /// Two slashes in a row, or a trailing slash.
    EmptySegment,
    /// The name contains `\`.
    Backslash,
    /// The name contains a NUL byte.
    Nul,
    /// The name contains a control character other than NUL.
    ControlCharacter,
    /// The name is longer than [`crate::MAX_NAME_LEN`] bytes.
    TooLong,
    /// The name leads outside the storage's root (for example through a symlink).
    EscapesRoot,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameRule::Empty => "a name must not be empty",
            NameRule::Absolute => "a name must be relative, not start with '/'",
            NameRule::ParentSegment => "a name must not contain a '..' segment",
            NameRule::CurrentSegment => "a name must not contain a '.' segment",
            NameRule::EmptySegment => "a name must not contain empty segments ('//' or a trailing '/')",
            NameRule::Backslash => "a name must use '/' as separator, not '\\'",
            NameRule::Nul => "a name must not contain a NUL byte",
            NameRule::ControlCharacter => "a name must not contain control characters",
            NameRule::TooLong => "a name must be at most 1024 bytes long",
            NameRule::EscapesRoot => "a name must not lead outside the storage's root, also not through a symlink",
        })
    }
}

/// Everything a storage operation, the settings or the registry can fail with.
///
/// Every variant names the storage alias and the file name or setting involved; none ever carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name breaks one of the name rules.
    #[error("storage '{storage}': suspicious file name {name:?}: {rule}")]
    SuspiciousName {
        /// The storage alias.
        storage: String,
        /// The refused name, as given.
        name: String,
        /// The rule it broke.
        rule: NameRule,
    },
    /// An upload's name cannot be used, as Django's `SuspiciousFileOperation`: it reduces to nothing, or
    /// leads out of its directory. The message is Django's.
    #[error("storage '{storage}': {message}")]
    SuspiciousOperation {
        /// The storage alias.
        storage: String,
        /// Django's message, e.g. `Detected path traversal attempt in '../x'`.
        message: String,
    },
    /// No file has this name.
    #[error("storage '{storage}': no file named {name:?}")]
    NotFound {
        /// The storage alias.
        storage: String,
        /// The missing name.
        name: String,
    },
    /// A file with this name exists and the operation may not replace it.
    #[error("storage '{storage}': {name:?} already exists")]
    AlreadyExists {
        /// The storage alias.
        storage: String,
        /// The taken name.
        name: String,
    },
    /// Every alternative name tried was taken.
    #[error("storage '{storage}': no free name found for {name:?} after {attempts} attempts")]
    NoAvailableName {
        /// The storage alias.
        storage: String,
        /// The name asked for.
        name: String,
        /// How many candidates were tried.
        attempts: usize,
    },
    /// The operating system or the network failed on a file.
    #[error("storage '{storage}': {operation} {name:?}: {source}")]
    Io {
        /// The storage alias.
        storage: String,
        /// What was being done (`save`, `open`, ...).
        operation: &'static str,
        /// The file name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the content to save failed (a local file that cannot be read, a reader that errs); nothing was
    /// stored.
    #[error("storage '{storage}': reading the content for {name:?} failed: {source}")]
    Content {
        /// The storage alias.
        storage: String,
        /// The name the content was to be saved under.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend-specific failure (a remote service's refusal, say).
    #[error(
        "storage '{storage}': {operation}{}: {message}",
        if name.is_empty() { String::new() } else { format!(" {name:?}") }
    )]
    Backend {
        /// The storage alias.
        storage: String,
        /// What was being done.
        operation: &'static str,
        /// The file name.
        name: String,
        /// What went wrong, in the backend's words.
        message: String,
        /// The cause, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The settings are wrong: an unknown key, a bad value, a missing backend.
    #[error(transparent)]
    Settings(Box<crate::settings::SettingsError>),
    /// A `FieldFile` without a name was asked for its file.
    #[error("The '{attribute}' attribute has no file associated with it.")]
    NoFile {
        /// The field's attribute name.
        attribute: String,
    },
}

impl From<crate::settings::SettingsError> for Error {
    fn from(error: crate::settings::SettingsError) -> Self {
        Error::Settings(Box::new(error))
    }
}

impl Error {
    /// An [`Error::Io`] for `operation` on `name` in `storage`, mapping "not found" to [`Error::NotFound`] and
    /// "already exists" to [`Error::AlreadyExists`] so that callers can match on them whatever the backend.
    pub fn io(storage: &str, operation: &'static str, name: &str, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { storage: storage.into(), name: name.into() },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { storage: storage.into(), name: name.into() },
            _ => Error::Io { storage: storage.into(), operation, name: name.into(), source },
        }
    }

    /// Whether this error means the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// This error as an `std::io::Error`, for the `AsyncRead`/`AsyncWrite` adapters.
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            Error::Io { ref source, .. } => std::io::Error::new(source.kind(), self),
            Error::NotFound { .. } => std::io::Error::new(std::io::ErrorKind::NotFound, self),
            Error::AlreadyExists { .. } => std::io::Error::new(std::io::ErrorKind::AlreadyExists, self),
            other => std::io::Error::other(other),
        }
    }
}
