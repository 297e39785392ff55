//! `storages`: everyday operations on any configured storage, and `collectstatic`, the main job.
//!
//! With no configuration at all, `default` is a filesystem storage in `./media` and `staticfiles` one in
//! `./staticfiles`; `storages.toml` (or `--config`) and the environment configure the rest, as for the library.

mod collectstatic;

use clap::{Parser, Subcommand};
use figment::Provider;
use figment::providers::{Format, Toml};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;
use storage_core::{Content, Settings, Storage, Storages};
use tokio::io::AsyncWriteExt;

// Linked so that they register.
use storage_cache as _;
use storage_fs as _;
use storage_s3 as _;

/// Files in any storage: the filesystem, S3 or any registered backend, configured like Django's STORAGES.
#[derive(Parser)]
#[command(name = "storages", version, about, long_about = None)]
struct Cli {
    /// The settings file (default: storages.toml, if there is one, or $STORAGES_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The storage to use (default: `default`; `staticfiles` for collectstatic).
    #[arg(long, global = true, value_name = "ALIAS")]
    storage: Option<String>,
    /// After the command, print on standard error the storage's operations and bytes, the requests it made
    /// (S3) and, for a cache layer, its counts (`storages --stats cat NAME`).
    #[arg(long)]
    stats: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered backends' dotted paths and aliases.
    Backends,
    /// Store a local file (under its own file name, or NAME); prints the stored name.
    Put {
        /// The local file.
        local: PathBuf,
        /// The name to store it under (an alternative is chosen if it is taken).
        name: Option<String>,
    },
    /// Fetch a stored file into LOCAL (default: its file name), or `-` for standard output.
    Get {
        /// The stored name.
        name: String,
        /// Where to write it.
        local: Option<PathBuf>,
    },
    /// Print a stored file.
    Cat {
        /// The stored name.
        name: String,
    },
    /// List the directories and files in PATH (default: the root).
    Ls {
        /// The directory.
        path: Option<String>,
        /// Show sizes and modification times.
        #[arg(short = 'l')]
        long: bool,
    },
    /// Delete stored files (a missing one is not an error).
    Rm {
        /// The stored names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a stored file's size, modification time, content type and ETag.
    Stat {
        /// The stored name.
        name: String,
    },
    /// Print a stored file's URL.
    Url {
        /// The stored name.
        name: String,
        /// Seconds a presigned URL stays valid (backends that sign URLs).
        #[arg(long, value_name = "SECONDS")]
        expires: Option<u64>,
        /// The HTTP method a presigned URL is for: GET, HEAD, or PUT for an upload straight from a browser.
        #[arg(long, default_value = "GET")]
        method: storage_core::UrlMethod,
        /// The Content-Disposition a presigned URL's answer is given with.
        #[arg(long, value_name = "VALUE")]
        response_content_disposition: Option<String>,
        /// The Content-Type a presigned URL's answer is given with.
        #[arg(long, value_name = "VALUE")]
        response_content_type: Option<String>,
        /// A query parameter added to the URL (signed with it, where URLs are signed); repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
        params: Vec<(String, String)>,
    },
    /// Remove what interrupted commands left behind: temporary files of saves, staging objects, name claims and
    /// pending multipart uploads in the storage, and partial downloads of `get` in DOWNLOADS.
    Cleanup {
        /// Only leftovers at least this old, so that work running now keeps its own (`1d`, `2h`, `0s`).
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Also install the bucket lifecycle rules that clean up by themselves (S3).
        #[arg(long)]
        install_lifecycle: bool,
        /// The local directory of partial downloads to look in.
        #[arg(long, default_value = ".")]
        downloads: PathBuf,
    },
    /// Show (`stats`) or empty (`clear`) the cache of a storage that is a cache layer (`--storage ALIAS`).
    Cache {
        /// `stats` or `clear`.
        #[arg(value_parser = ["stats", "clear"])]
        action: String,
    },
    /// Copy static files into the staticfiles storage, uploading only what changed.
    Collectstatic {
        /// Source directories (default: staticfiles_dirs from the settings, or $STATICFILES_DIRS).
        sources: Vec<PathBuf>,
        /// Files uploaded at once.
        #[arg(long, short = 'j', default_value_t = 16)]
        jobs: usize,
        /// Also store hashed copies (app.css -> app.<12 hex>.css, CSS references rewritten) and staticfiles.json;
        /// always done for a manifest storage (`S3ManifestStaticStorage`, `ManifestStaticFilesStorage`).
        #[arg(long)]
        manifest: bool,
        /// Leave CSS references to files that are not collected as they are, with a warning, rather than fail
        /// (Django fails: "The file ... could not be found").
        #[arg(long)]
        allow_missing_references: bool,
        /// Delete stored files the sources do not have.
        #[arg(long)]
        clear: bool,
        /// Change nothing; say what would be done.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Print (on standard output) the storage's operations and bytes, and the requests made, by kind.
        #[arg(long)]
        stats: bool,
        /// Skip files and directories whose name matches PATTERN, and files whose path under their source does
        /// (`*`, `?`, `[...]`, as Django's fnmatch; `admin/*.css`); repeatable.
        #[arg(long, short = 'i', value_name = "PATTERN")]
        ignore: Vec<String>,
        /// Do not skip the names Django skips by default: `.*`, `*~` and `CVS`.
        #[arg(long)]
        no_default_ignore: bool,
    },
}

impl Command {
    /// What the command was doing, for the message when it is interrupted.
    fn describe(&self) -> String {
        match self {
            Command::Put { local, name } => {
                format!("the save of {}", name.clone().unwrap_or_else(|| local.display().to_string()))
            }
            Command::Get { name, .. } => format!("the download of {name}"),
            Command::Collectstatic { .. } => "collectstatic".into(),
            Command::Rm { .. } => "the deletes".into(),
            _ => "the command".into(),
        }
    }

    /// Whether the command adds, replaces or deletes files of the storage.
    fn changes_files(&self) -> bool {
        match self {
            Command::Put { .. } | Command::Rm { .. } | Command::Cleanup { .. } => true,
            Command::Cache { action } => action == "clear",
            Command::Collectstatic { dry_run, .. } => !dry_run,
            _ => false,
        }
    }
}

/// How the temporary file of a `get` ends (`.NAME.XXXXXX.storages-part`, beside the target).
const PARTIAL_SUFFIX: &str = ".storages-part";

/// The embedded defaults, used for an alias only when nothing configures it.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "default",
        "[storages.default]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocation = \"media\"\nbase_url = \"/media/\"\n",
    ),
    (
        "staticfiles",
        "[storages.staticfiles]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocation = \"staticfiles\"\nbase_url = \"/static/\"\n",
    ),
];

/// A failure: bad input (exit 2) or failed files (exit 1), told in one line.
struct Failure {
    code: u8,
    message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure { code: 2, message: error.to_string() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic is a bug, but its message still must not show a secret.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("storages: internal error (a bug; please report it): {}", storage_core::redact(&info.to_string()));
    }));
    // Backends' warnings (a listing that skipped a key no name can hold, a service without conditional
    // writes) go to standard error; `RUST_LOG=storages=debug` adds a line per operation and per request.
    let directives = format!("warn,{}", std::env::var("RUST_LOG").unwrap_or_default());
    let filter: tracing_subscriber::filter::Targets = directives.parse().unwrap_or_else(|_| {
        eprintln!("storages: RUST_LOG={directives:?} is not understood; showing warnings only");
        tracing_subscriber::filter::Targets::new().with_default(tracing_subscriber::filter::LevelFilter::WARN)
    });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| Redacting(std::io::stderr()))
                .with_target(false)
                .without_time(),
        )
        .with(filter)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(Failure::from(error)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

/// Standard error through [`storage_core::redact`]: what a backend logs never shows a secret it was given.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one event per call; a secret split across two calls is not recognised.
        self.0.write_all(storage_core::redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn report(failure: Failure) -> ExitCode {
    eprintln!("storages: {}", storage_core::redact(&failure.message.replace('\n', " ")));
    ExitCode::from(failure.code)
}

fn settings(config: Option<&PathBuf>) -> Result<Settings, Failure> {
    let mut settings = match config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::load()?,
    };
    for (alias, table) in EMBEDDED {
        if let Err(storage_core::Error::Settings(error)) = settings.storage(alias) {
            if matches!(*error, storage_core::SettingsError::NotConfigured { .. }) {
                settings = settings.join(Toml::string(table));
            }
        }
    }
    // The command's own top-level settings: a misspelt one is an error, as a storage's are.
    let known = ["storages", "staticfiles_dirs"];
    if let Ok(data) = settings.figment().data() {
        for key in data.values().flat_map(|dict| dict.keys()) {
            if !known.contains(&key.as_str()) {
                let hint = storage_core::settings::closest(key, known)
                    .map(|k| format!(", did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err(Failure::from(format!(
                    "unknown setting `{key}`{hint}; top-level settings: {}",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(settings)
}

/// `staticfiles_dirs` from the settings: a list of directories or one, relative to the settings file.
fn staticfiles_dirs(settings: &Settings) -> Result<Option<Vec<PathBuf>>, Failure> {
    use figment::value::magic::RelativePathBuf;
    let figment = settings.figment();
    if figment.find_value("staticfiles_dirs").is_err() {
        return Ok(None);
    }
    if let Ok(dirs) = figment.extract_inner::<Vec<RelativePathBuf>>("staticfiles_dirs") {
        return Ok(Some(dirs.iter().map(RelativePathBuf::relative).collect()));
    }
    match figment.extract_inner::<RelativePathBuf>("staticfiles_dirs") {
        Ok(dir) => Ok(Some(vec![dir.relative()])),
        Err(_) => {
            Err(Failure::from("invalid setting `staticfiles_dirs`: expected a directory or a list of directories"))
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Backends = cli.command {
        for backend in storage_core::registered_backends()? {
            println!("{}", backend.path);
            for alias in backend.aliases {
                println!("    alias {alias}");
            }
        }
        return Ok(());
    }
    let settings = settings(cli.config.as_ref())?;
    let default_alias = if matches!(cli.command, Command::Collectstatic { .. }) { "staticfiles" } else { "default" };
    let alias = cli.storage.clone().unwrap_or_else(|| default_alias.to_string());
    let staticfiles_dirs = staticfiles_dirs(&settings)?;
    if cli.command.changes_files() {
        // Which file chose the storage that is about to change: a surprise here must be visible before it costs.
        match settings.file() {
            Some(file) => eprintln!("storages: settings from {}", file.display()),
            None => eprintln!(
                "storages: no settings file (no storages.toml in {}): embedded defaults and the environment",
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| ".".into())
            ),
        }
    }
    let storage = Storages::new(settings).get(&alias)?;
    let interrupts = Interrupts::listen()?;
    // collectstatic takes a first Ctrl-C as "start nothing new" and a second as "abort"; every other command
    // aborts on the first.
    let abort_after = if matches!(cli.command, Command::Collectstatic { .. }) { 2 } else { 1 };
    let what = cli.command.describe();
    let stats = cli.stats;
    let copied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let result = tokio::select! {
        biased;
        result = execute(cli.command, storage.clone(), &alias, staticfiles_dirs, &interrupts, copied.clone()) => result,
        () = interrupts.reached(abort_after) => {
            let done = match abort_after {
                2 => format!(" after {} files were copied", copied.load(std::sync::atomic::Ordering::Relaxed)),
                _ => String::new(),
            };
            Err(Failure {
                code: INTERRUPTED,
                message: format!(
                    "interrupted: {what} abandoned{done}; partial uploads and temporary files are removed"
                ),
            })
        }
    };
    // The aborts of dropped uploads run in the background: the process must not end before them. A save
    // interrupted while its last step was on its way may have stored its file after all: say so.
    let stored = storage.settle().await;
    if stats {
        for line in counts(&*storage) {
            eprintln!("{line}");
        }
    }
    match result {
        Err(failure) if failure.code == INTERRUPTED && !stored.is_empty() => {
            for name in &stored {
                println!("{name}");
            }
            Err(Failure {
                code: INTERRUPTED,
                message: format!(
                    "interrupted, but {what} had already reached the storage: {} stored (nothing partial is left)",
                    stored.join(", ")
                ),
            })
        }
        other => other,
    }
}

/// The storage's requests (`requests: N (GET 1, ...)`) and, for a cache layer, its own counts (`cache: ...`),
/// which are no requests: a line each, none when there is nothing to show.
fn counts(storage: &dyn Storage) -> Vec<String> {
    let metrics = storage.metrics();
    let (cache, requests): (Vec<_>, Vec<_>) =
        storage.request_counts().into_iter().partition(|(kind, _)| kind.starts_with("cache "));
    let mut lines = Vec::new();
    if !metrics.operations.is_empty() {
        let listed: Vec<String> = metrics.operations.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let errors: u64 = metrics.errors.values().sum();
        lines.push(format!(
            "operations: {} ({} bytes written, {} read, {errors} failed)",
            listed.join(", "),
            metrics.bytes_written,
            metrics.bytes_read
        ));
    }
    if !requests.is_empty() {
        let total: u64 = requests.iter().map(|(_, n)| n).sum();
        let listed: Vec<String> = requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
        lines.push(format!("requests: {total} ({})", listed.join(", ")));
    }
    if !cache.is_empty() {
        let listed: Vec<String> = cache.iter().map(|(k, v)| format!("{} {v}", &k["cache ".len()..])).collect();
        lines.push(format!("cache: {}", listed.join(", ")));
    }
    lines
}

/// The exit code after Ctrl-C, as a shell reports a command SIGINT ended.
const INTERRUPTED: u8 = 130;

/// Counts the Ctrl-Cs the process received, once it listens for them (then SIGINT no longer ends it at once).
#[derive(Clone)]
struct Interrupts(tokio::sync::watch::Receiver<u32>);

impl Interrupts {
    fn listen() -> std::io::Result<Self> {
        let (count, receiver) = tokio::sync::watch::channel(0u32);
        // Registered now, so that a Ctrl-C from here on is caught, not fatal.
        let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                count.send_modify(|count| *count += 1);
            }
        });
        Ok(Interrupts(receiver))
    }

    /// How many Ctrl-Cs came so far.
    fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Returns once `n` Ctrl-Cs came.
    async fn reached(&self, n: u32) {
        let mut receiver = self.0.clone();
        if receiver.wait_for(|count| *count >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn execute(
    command: Command,
    storage: Arc<dyn Storage>,
    alias: &str,
    staticfiles_dirs: Option<Vec<PathBuf>>,
    interrupts: &Interrupts,
    copied: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(), Failure> {
    match command {
        Command::Backends => Ok(()),
        Command::Put { local, name } => {
            let name = match name {
                Some(name) => name,
                None => local.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
                    Failure::from(format!("{} has no file name: give the NAME to store it under", local.display()))
                })?,
            };
            let why = match std::fs::metadata(&local) {
                Ok(metadata) if metadata.is_file() => None,
                Ok(metadata) if metadata.is_dir() => Some("is a directory".to_owned()),
                Ok(_) => Some("is not a regular file".to_owned()),
                Err(error) => Some(format!("cannot be read: {error}")),
            };
            if let Some(why) = why {
                return Err(Failure::from(format!("{} {why}", local.display())));
            }
            println!("{}", storage.save(&name, Content::from_path(&local)).await?);
            Ok(())
        }
        Command::Get { name, local } => {
            let base = PathBuf::from(name.rsplit('/').next().unwrap_or(&name));
            let target = match local {
                Some(dir) if dir.is_dir() => dir.join(base),
                // `nodir/`: meant as a directory, which is missing.
                Some(dir) if dir.as_os_str().to_string_lossy().ends_with('/') => {
                    return Err(Failure::from(format!("local directory {} does not exist", dir.display())));
                }
                Some(local) => local,
                None => base,
            };
            if target.as_os_str() == "-" {
                return copy_out(storage.open(&name).await?, tokio::io::stdout()).await;
            }
            download(&*storage, &name, &target).await
        }
        Command::Cat { name } => copy_out(storage.open(&name).await?, tokio::io::stdout()).await,
        Command::Ls { path, long } => ls(&*storage, path.as_deref().unwrap_or(""), long).await,
        Command::Rm { names } => {
            for name in names {
                storage.delete(&name).await?;
            }
            Ok(())
        }
        Command::Stat { name } => {
            let meta = storage.stat(&name).await?;
            let content_type = match meta.content_type {
                Some(content_type) => content_type,
                None => format!("{} (guessed from the name)", mime_guess::from_path(&name).first_or_octet_stream()),
            };
            println!("name:          {}", meta.name);
            println!("size:          {}", meta.size);
            println!("modified:      {}", meta.modified.map(timestamp).unwrap_or_else(|| "unknown".into()));
            println!("content type:  {content_type}");
            if let Some(etag) = meta.etag {
                println!("etag:          {etag}");
            }
            Ok(())
        }
        Command::Url { name, expires, method, response_content_disposition, response_content_type, params } => {
            if expires.is_some() && !storage.capabilities().expiring_urls {
                eprintln!("storages: note: storage '{alias}' does not sign URLs; its URLs do not expire");
            }
            let mut options = storage_core::UrlOptions::new().method(method);
            options.expires_in = expires.map(Duration::from_secs);
            options.response_content_disposition = response_content_disposition;
            options.response_content_type = response_content_type;
            options.parameters = params;
            println!("{}", storage.url_with(&name, &options).await?);
            Ok(())
        }
        Command::Cache { action } if action == "clear" => match storage.clear_cache().await? {
            true => {
                println!("cache of storage '{alias}' emptied");
                Ok(())
            }
            false => Err(Failure::from(format!("storage '{alias}' is not a cache layer: nothing to clear"))),
        },
        Command::Cache { .. } => {
            let counts: Vec<(String, u64)> =
                storage.request_counts().into_iter().filter(|(kind, _)| kind.starts_with("cache ")).collect();
            if counts.is_empty() {
                return Err(Failure::from(format!("storage '{alias}' is not a cache layer: no cache to show")));
            }
            for (kind, count) in counts {
                println!("{:<24} {count}", &kind["cache ".len()..]);
            }
            Ok(())
        }
        Command::Cleanup { older_than, install_lifecycle, downloads } => {
            let options = storage_core::Cleanup::older_than(older_than).install_lifecycle(install_lifecycle);
            let mut cleaned = storage.cleanup(&options).await?;
            let partial = remove_partial_downloads(&downloads, older_than)
                .map_err(|e| Failure::from(format!("{}: {e}", downloads.display())))?;
            if partial > 0 {
                cleaned.removed.insert("partial downloads", partial);
            }
            for note in &cleaned.notes {
                println!("{note}");
            }
            let removed: Vec<String> = cleaned.removed.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            match removed.is_empty() {
                true => println!(
                    "nothing to clean up (older than {})",
                    humantime::format_duration(older_than).to_string().replace("day", " day")
                ),
                false => println!("removed {}", removed.join(", ")),
            }
            Ok(())
        }
        Command::Collectstatic {
            sources,
            jobs,
            manifest,
            allow_missing_references,
            clear,
            dry_run,
            stats,
            ignore,
            no_default_ignore,
        } => {
            let sources = if !sources.is_empty() {
                sources
            } else if let Some(dirs) = staticfiles_dirs {
                dirs
            } else if let Ok(dirs) = std::env::var("STATICFILES_DIRS") {
                std::env::split_paths(&dirs).collect()
            } else {
                return Err(Failure::from(
                    "collectstatic: no source directories: pass them, set staticfiles_dirs in storages.toml, or set \
                     $STATICFILES_DIRS (directories separated by ':')",
                ));
            };
            let options = collectstatic::Options {
                sources,
                jobs: jobs.max(1),
                manifest: manifest || storage.capabilities().manifest,
                allow_missing_references,
                clear,
                dry_run,
                progress: std::io::stderr().is_terminal(),
                ignore: if no_default_ignore {
                    ignore
                } else {
                    collectstatic::DEFAULT_IGNORE.iter().map(|p| p.to_string()).chain(ignore).collect()
                },
                copied,
            };
            let notice = {
                let interrupts = interrupts.clone();
                tokio::spawn(async move {
                    interrupts.reached(1).await;
                    eprintln!("storages: interrupted: finishing the files under way; Ctrl-C again aborts them");
                })
            };
            let stop = || interrupts.count() > 0;
            let summary = collectstatic::run(storage.clone(), &options, &stop).await;
            notice.abort();
            let summary = summary.map_err(|refused| Failure::from(format!("collectstatic: {}", refused.0)))?;
            // Failures first: the warnings that follow say what they stopped.
            for (what, reason) in &summary.failures {
                eprintln!("collectstatic: failed: {what}: {}", storage_core::redact(&reason.replace('\n', " ")));
            }
            for warning in &summary.warnings {
                eprintln!("collectstatic: warning: {}", storage_core::redact(warning));
            }
            println!("{}", summary.line(dry_run));
            if stats {
                for line in counts(&*storage) {
                    println!("{line}");
                }
            }
            if summary.interrupted {
                Err(Failure {
                    code: INTERRUPTED,
                    message: format!("interrupted: {} files not started; run again to finish", summary.not_started),
                })
            } else if summary.failures.is_empty() {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    message: match summary.failures.len() {
                        1 => "1 file failed (see above)".into(),
                        n => format!("{n} files failed (see above)"),
                    },
                })
            }
        }
    }
}

async fn copy_out(file: storage_core::StoredFile, mut out: impl tokio::io::AsyncWrite + Unpin) -> Result<(), Failure> {
    use futures::StreamExt;
    let mut chunks = file.chunks(256 * 1024);
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok(())
}

/// Writes `file` to `target` through a temporary file beside it (its own, created exclusively), so that a
/// failed download leaves nothing under the name and concurrent downloads into one directory never mix; an
/// existing `target` is never replaced.
async fn download(storage: &dyn Storage, name: &str, target: &std::path::Path) -> Result<(), Failure> {
    if tokio::fs::symlink_metadata(target).await.is_ok() {
        return Err(Failure::from(format!("{} exists: give another LOCAL, or remove it first", target.display())));
    }
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::from(format!("local path {} is not a directory", dir.display())));
    }
    if !dir.is_dir() {
        return Err(Failure::from(format!("local directory {} does not exist", dir.display())));
    }
    let base = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Made as any new file is: 0o666 less the umask (tempfile's own default, 0o600, would stay on the file).
    use std::os::unix::fs::PermissionsExt;
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{base}."))
        .suffix(PARTIAL_SUFFIX)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let file = storage.open(name).await?;
    let out = tokio::fs::File::from_std(partial.reopen().map_err(|e| format!("{}: {e}", partial.path().display()))?);
    // Dropping `partial` removes the temporary file, whatever happens below.
    copy_out(file, out).await?;
    // A hard link publishes without replacing anything that appeared meanwhile.
    tokio::fs::hard_link(partial.path(), target).await.map_err(|e| Failure::from(format!("{}: {e}", target.display())))
}

/// Removes the temporary files of interrupted `get`s in `dir` (`.NAME.XXXXXX.storages-part`) older than `age`.
fn remove_partial_downloads(dir: &std::path::Path, age: Duration) -> std::io::Result<u64> {
    let cutoff = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)) {
            continue;
        }
        let metadata = entry.metadata()?;
        if metadata.is_file() && metadata.modified()? <= cutoff && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

async fn ls(storage: &dyn Storage, path: &str, long: bool) -> Result<(), Failure> {
    let (dirs, files) = storage.listdir(path).await?;
    if dirs.is_empty() && files.is_empty() && !path.trim_end_matches('/').is_empty() {
        // Not a directory with files: a file, or nothing at all.
        let name = path.trim_end_matches('/');
        if storage.exists(name).await? {
            let meta = storage.stat(name).await?;
            if long {
                let modified = meta.modified.map(timestamp).unwrap_or_else(|| "-".into());
                println!("{:>12}  {modified:20}  {name}", meta.size);
            } else {
                println!("{name}");
            }
            return Ok(());
        }
        return Err(Failure::from(format!("ls: no file or directory named {name:?} in storage '{}'", storage.alias())));
    }
    let join = |entry: &str| {
        if path.is_empty() { entry.to_owned() } else { format!("{}/{entry}", path.trim_end_matches('/')) }
    };
    for dir in dirs {
        if long {
            println!("{:>12}  {:20}  {dir}/", "-", "-");
        } else {
            println!("{dir}/");
        }
    }
    for file in files {
        if long {
            // One entry that cannot be looked at (a symlink out of the location) does not hide the others.
            match storage.stat(&join(&file)).await {
                Ok(meta) => {
                    let modified = meta.modified.map(timestamp).unwrap_or_else(|| "-".into());
                    println!("{:>12}  {modified:20}  {file}", meta.size);
                }
                Err(error) => {
                    println!("{:>12}  {:20}  {file}", "?", "?");
                    eprintln!("storages: {}", storage_core::redact(&error.to_string()));
                }
            }
        } else {
            println!("{file}");
        }
    }
    Ok(())
}

fn timestamp(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A `KEY=VALUE` argument.
fn key_value(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}
