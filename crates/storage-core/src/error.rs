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
    /// The name is one the backend keeps for its own files (staged uploads, temporary files, records).
    Reserved,
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
            NameRule::Reserved => "the storage keeps names like this one for its own files",
        })
    }
}

/// What kind of failure an [`Error`] is, whatever the backend: what a caller matches on to decide what to do.
///
/// ```
/// use storage_core::{Error, ErrorKind};
///
/// let error = Error::NotFound { storage: "media".into(), name: "a.txt".into() };
/// assert_eq!(error.kind(), ErrorKind::NotFound);
/// assert!(!error.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file (or the bucket, the directory) does not exist.
    NotFound,
    /// The name is taken and may not be replaced, or no free alternative was found.
    AlreadyExists,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// The credentials are missing, wrong or expired.
    Unauthenticated,
    /// A request made no progress for longer than the storage's timeout.
    Timeout,
    /// No connection could be made.
    Unreachable,
    /// A name, a setting or an argument is invalid.
    InvalidInput,
    /// The service or the backend cannot do this.
    Unsupported,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind's name in snake case (`not_found`, `timeout`, ...), as metrics and logs show it.
    ///
    /// ```
    /// assert_eq!(storage_core::ErrorKind::NotFound.as_str(), "not_found");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
        }
    }

    fn from_io(kind: std::io::ErrorKind) -> Self {
        use std::io::ErrorKind as Io;
        match kind {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::TimedOut => ErrorKind::Timeout,
            Io::ConnectionRefused | Io::HostUnreachable | Io::NetworkUnreachable => ErrorKind::Unreachable,
            Io::InvalidInput => ErrorKind::InvalidInput,
            Io::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        }
    }

    fn to_io(self) -> std::io::ErrorKind {
        use std::io::ErrorKind as Io;
        match self {
            ErrorKind::NotFound => Io::NotFound,
            ErrorKind::AlreadyExists => Io::AlreadyExists,
            ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => Io::PermissionDenied,
            ErrorKind::Timeout => Io::TimedOut,
            ErrorKind::Unreachable => Io::ConnectionRefused,
            ErrorKind::InvalidInput => Io::InvalidInput,
            ErrorKind::Unsupported => Io::Unsupported,
            ErrorKind::Other => Io::Other,
        }
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
    /// Every alternative name tried was taken, or none fits the save's `max_length`.
    #[error(
        "storage '{storage}': Storage can not find an available filename for \"{name}\". Please make sure that the \
         corresponding file field allows sufficient \"max_length\". ({attempts} names tried)"
    )]
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
        /// What kind of failure it is.
        kind: ErrorKind,
        /// Whether trying again later can help (a timeout, a busy server).
        retryable: bool,
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
    /// "already exists" to [`Error::AlreadyExists`] so that callers can match on them whatever the backend. An
    /// `io::Error` that carries a storage error (as [`FileWriter`](crate::FileWriter)'s writes return them) gives
    /// that error back, not a copy nested in a second one.
    pub fn io(storage: &str, operation: &'static str, name: &str, source: std::io::Error) -> Self {
        let source = match source.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            true => {
                let kind = source.kind();
                match source.into_inner().map(|inner| inner.downcast::<Error>()) {
                    Some(Ok(error)) => return *error,
                    Some(Err(other)) => std::io::Error::new(kind, other),
                    None => kind.into(),
                }
            }
            false => source,
        };
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { storage: storage.into(), name: name.into() },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { storage: storage.into(), name: name.into() },
            _ => Error::Io { storage: storage.into(), operation, name: name.into(), source },
        }
    }

    /// An [`Error::Backend`] without a source; retryable when `kind` is a timeout or an unreachable service.
    pub fn backend(
        storage: &str,
        operation: &'static str,
        name: &str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Error::Backend {
            storage: storage.into(),
            operation,
            name: name.into(),
            message: message.into(),
            retryable: matches!(kind, ErrorKind::Timeout | ErrorKind::Unreachable),
            kind,
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::SuspiciousName { .. } | Error::SuspiciousOperation { .. } | Error::Settings(_) => {
                ErrorKind::InvalidInput
            }
            Error::NoFile { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } | Error::NoAvailableName { .. } => ErrorKind::AlreadyExists,
            Error::Io { source, .. } | Error::Content { source, .. } => ErrorKind::from_io(source.kind()),
            Error::Backend { kind, .. } => *kind,
        }
    }

    /// Whether the same call may succeed if tried again later: a timeout, an unreachable or busy service. A
    /// refused name, missing credentials or a missing file are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Io { source, .. } => {
                matches!(self.kind(), ErrorKind::Timeout | ErrorKind::Unreachable)
                    || matches!(
                        source.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                    )
            }
            _ => false,
        }
    }

    /// The same error again, with its source reduced to its text: how a failure is reported to every later call
    /// on an object that failed once (a writer whose upload failed).
    pub fn replay(&self) -> Error {
        let io = |source: &std::io::Error| std::io::Error::new(source.kind(), source.to_string());
        match self {
            Error::SuspiciousName { storage, name, rule } => {
                Error::SuspiciousName { storage: storage.clone(), name: name.clone(), rule: *rule }
            }
            Error::SuspiciousOperation { storage, message } => {
                Error::SuspiciousOperation { storage: storage.clone(), message: message.clone() }
            }
            Error::NotFound { storage, name } => Error::NotFound { storage: storage.clone(), name: name.clone() },
            Error::AlreadyExists { storage, name } => {
                Error::AlreadyExists { storage: storage.clone(), name: name.clone() }
            }
            Error::NoAvailableName { storage, name, attempts } => {
                Error::NoAvailableName { storage: storage.clone(), name: name.clone(), attempts: *attempts }
            }
            Error::Io { storage, operation, name, source } => {
                Error::Io { storage: storage.clone(), operation, name: name.clone(), source: io(source) }
            }
            Error::Content { storage, name, source } => {
                Error::Content { storage: storage.clone(), name: name.clone(), source: io(source) }
            }
            Error::Backend { storage, operation, name, message, kind, retryable, source } => Error::Backend {
                storage: storage.clone(),
                operation,
                name: name.clone(),
                message: match source {
                    Some(source) => format!("{message}: {source}"),
                    None => message.clone(),
                },
                kind: *kind,
                retryable: *retryable,
                source: None,
            },
            Error::Settings(error) => Error::Settings(error.clone()),
            Error::NoFile { attribute } => Error::NoFile { attribute: attribute.clone() },
        }
    }

    /// Whether this error means the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// This error as an `std::io::Error`, for the `AsyncRead`/`AsyncWrite` adapters.
    pub(crate) fn into_io(self) -> std::io::Error {
        self.into()
    }
}

/// For `AsyncRead`/`AsyncWrite` adapters: the `io::Error` has the matching kind and carries the storage error,
/// which [`Error::io`] takes back out.
impl From<Error> for std::io::Error {
    fn from(error: Error) -> Self {
        match &error {
            Error::Io { source, .. } => std::io::Error::new(source.kind(), error),
            _ => std::io::Error::new(error.kind().to_io(), error),
        }
    }
}
