//! `collectstatic`: Django's command, done better. Every file under the sources is compared, by MD5, with what
//! the storage holds (learned from one listing), and only new or changed files are uploaded, in parallel and
//! streamed. `--manifest` adds hashed copies, rewritten CSS and `staticfiles.json`; `--clear` removes what the
//! sources no longer have; `--dry-run` only says what would happen. A file that fails is reported and the
//! others go on: a rerun finishes the job.

use futures::stream::{self, StreamExt};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use storage_core::staticfiles::{self as manifest, HashedAll, Input, MANIFEST_NAME};
use storage_core::{Content, FileMeta, Storage, validate_name};
use tokio::io::AsyncReadExt;

/// What `collectstatic` was asked to do.
pub struct Options {
    pub sources: Vec<PathBuf>,
    pub jobs: usize,
    pub manifest: bool,
    /// CSS references to files not collected are left as they are (a warning) instead of failing.
    pub allow_missing_references: bool,
    pub clear: bool,
    pub dry_run: bool,
    pub progress: bool,
    /// Patterns of names to skip, as Django's `--ignore`: matched against each file's and directory's own name,
    /// and against a file's path under its source (`*` there spans `/`, as in `fnmatch`).
    pub ignore: Vec<String>,
    /// Counts the files copied so far, for a summary when the run is aborted halfway.
    pub copied: Arc<std::sync::atomic::AtomicUsize>,
}

/// The names Django's collectstatic skips unless told otherwise.
pub const DEFAULT_IGNORE: [&str; 3] = [".*", "*~", "CVS"];

/// What happened, for the summary line.
#[derive(Default)]
pub struct Summary {
    pub copied: usize,
    pub unmodified: usize,
    pub post_processed: usize,
    pub deleted: usize,
    /// Files that failed: what, and why.
    pub failures: Vec<(String, String)>,
    /// Things worth knowing that are not failures (a name found in two sources).
    pub warnings: Vec<String>,
    /// Files not started because the run was interrupted (Ctrl-C).
    pub not_started: usize,
    /// The run was interrupted (Ctrl-C), even if every file had started already.
    pub interrupted: bool,
}

impl Summary {
    /// Django's summary line: `2000 static files copied, 0 unmodified.`
    pub fn line(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would be copied" } else { "copied" };
        let files = if self.copied == 1 { "file" } else { "files" };
        let mut line = format!("{} static {files} {verb}, {} unmodified", self.copied, self.unmodified);
        if self.post_processed > 0 {
            let verb = if dry_run { "would be post-processed" } else { "post-processed" };
            line.push_str(&format!(", {} {verb}", self.post_processed));
        }
        if self.deleted > 0 {
            line.push_str(&format!(", {} {}", self.deleted, if dry_run { "would be deleted" } else { "deleted" }));
        }
        if !self.failures.is_empty() {
            line.push_str(&format!(", {} failed", self.failures.len()));
        }
        if self.interrupted {
            line.push_str(&format!(", {} not started (interrupted)", self.not_started));
        }
        line.push('.');
        line
    }
}

/// Bad input found before anything is changed.
#[derive(Debug)]
pub struct Refused(pub String);

/// A file of the sources.
struct SourceFile {
    name: String,
    path: PathBuf,
}

/// What to store under a name.
#[derive(Clone)]
enum Body {
    File(PathBuf),
    Text(Arc<str>),
}

/// One name to store, with the MD5 of what goes there.
struct Output {
    name: String,
    body: Body,
    md5: String,
    size: u64,
    /// A hashed copy or the manifest, counted as post-processing rather than as a copied file.
    extra: bool,
}

/// Runs collectstatic. Once `stop()` says so (Ctrl-C), no new file is started: the ones under way finish, the
/// manifest is not written and nothing is cleared, and the summary counts the files not started.
pub async fn run(
    storage: Arc<dyn Storage>,
    options: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Summary, Refused> {
    for source in &options.sources {
        if !source.exists() {
            return Err(Refused(format!("source directory {} does not exist", source.display())));
        }
        if !source.is_dir() {
            return Err(Refused(format!("source {} is not a directory", source.display())));
        }
    }
    let mut summary = Summary::default();
    // Names whose local file could not be read: what the storage holds under them is kept, even with --clear.
    let mut unreadable = BTreeSet::new();
    let ignore = Ignore::new(&options.ignore)?;
    let locals = walk(&options.sources, &ignore, &mut summary, &mut unreadable);

    // Hash every local file (in parallel, streamed); the ones that cannot be read are reported and skipped.
    let hashed: Vec<(SourceFile, FileDigest)> = stream::iter(locals)
        .map(|local| async move {
            let digest = md5_of_file(&local.path).await;
            (local, digest)
        })
        .buffer_unordered(options.jobs)
        .collect()
        .await;
    let mut outputs = Vec::new();
    for (local, digest) in hashed {
        if digest.is_err() {
            unreadable.insert(local.name.clone());
        }
        match digest {
            Ok((md5, size)) => {
                outputs.push(Output { name: local.name, body: Body::File(local.path), md5, size, extra: false })
            }
            Err(reason) => summary.failures.push((local.path.display().to_string(), reason)),
        }
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    // staticfiles.json goes last, once everything it names is stored.
    let mut manifest_file = None;
    if options.manifest {
        let static_url = storage.url_prefix();
        let allow = options.allow_missing_references;
        let mut extra = manifest_outputs(&outputs, static_url.as_deref(), allow, &mut summary.failures).await;
        manifest_file = extra.pop();
        summary.post_processed = extra.len();
        outputs.extend(extra);
    }

    // What the storage holds: one listing.
    let held: BTreeMap<String, FileMeta> = match storage.list_files("").await {
        Ok(files) => files.into_iter().map(|f| (f.name.clone(), f)).collect(),
        Err(error) => return Err(Refused(format!("cannot list the storage: {error}"))),
    };

    let progress = progress_bar(options.progress, outputs.len());
    let results: Vec<(&Output, Result<bool, String>)> = stream::iter(&outputs)
        .take_while(|_| std::future::ready(!stop()))
        .map(|output| {
            let (storage, held, progress) = (&storage, &held, &progress);
            async move {
                let result = store(&**storage, output, held.get(&output.name), options.dry_run).await;
                if matches!(result, Ok(true)) && !output.extra {
                    options.copied.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(progress) = progress {
                    progress.inc(1);
                }
                (output, result)
            }
        })
        .buffer_unordered(options.jobs)
        .collect()
        .await;
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    summary.not_started = outputs.len() - results.len();
    // A Ctrl-C after the last file started still stops what follows: the manifest and --clear.
    summary.interrupted = stop();
    let stored_meta = |output: &Output| FileMeta {
        name: output.name.clone(),
        size: output.size,
        md5: Some(output.md5.clone()),
        ..FileMeta::default()
    };
    let mut stored: Vec<FileMeta> = results
        .iter()
        .filter(|(_, result)| matches!(result, Ok(true)))
        .map(|(output, _)| stored_meta(output))
        .collect();
    for (output, result) in results {
        match result {
            Ok(_) if output.extra => {}
            Ok(true) => summary.copied += 1,
            Ok(false) => summary.unmodified += 1,
            Err(reason) => summary.failures.push((output.name.clone(), reason)),
        }
    }
    if let Some(manifest_file) = &manifest_file {
        if summary.interrupted {
            summary.warnings.push(format!("{MANIFEST_NAME} was not updated, because the run was interrupted"));
        } else if summary.failures.is_empty() {
            let held = held.get(&manifest_file.name);
            match store(&*storage, manifest_file, held, options.dry_run).await {
                Ok(true) => stored.push(stored_meta(manifest_file)),
                Ok(false) => {}
                Err(reason) => summary.failures.push((manifest_file.name.clone(), reason)),
            }
        } else {
            // A manifest without the failed files' entries would break `{% static %}` for them: keep the old one.
            summary.warnings.push(format!("{MANIFEST_NAME} was not updated, because some files failed"));
        }
    }

    // What the storage cannot show in its listing (S3 servers whose ETag is no MD5), it can record, so that the
    // next run skips these files too.
    if !options.dry_run && !stored.is_empty() {
        if let Err(error) = storage.record_md5s(&stored).await {
            summary.warnings.push(format!("the next run may copy these files again: {error}"));
        }
    }

    if options.clear && summary.interrupted {
        summary.warnings.push("--clear deleted nothing, because the run was interrupted".into());
    } else if options.clear && !summary.failures.is_empty() {
        // What failed may still be needed (a source that could not be read, a hashed copy the old manifest names).
        summary.warnings.push("--clear deleted nothing, because some files failed".into());
    } else if options.clear {
        let mut wanted: BTreeSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        if let Some(manifest_file) = &manifest_file {
            wanted.insert(manifest_file.name.as_str());
        }
        let stale: Vec<String> =
            held.keys().filter(|n| !wanted.contains(n.as_str()) && !unreadable.contains(n.as_str())).cloned().collect();
        summary.deleted = stale.len();
        if options.dry_run {
            for name in &stale {
                println!("would delete {name}");
            }
        } else if !stale.is_empty() {
            for (name, error) in storage.delete_many(&stale).await {
                summary.deleted -= 1;
                summary.failures.push((name, error.to_string()));
            }
        }
    }
    Ok(summary)
}

/// The `--ignore` patterns, compiled once: `fnmatch`'s `*`, `?` and `[...]` (a backslash is itself, `*` spans `/`),
/// and globset's `{a,b}`.
pub struct Ignore(globset::GlobSet);

impl Ignore {
    /// Compiles `patterns`; an invalid one is refused with its error.
    pub fn new(patterns: &[String]) -> Result<Self, Refused> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .backslash_escape(false)
                .build()
                .map_err(|e| Refused(format!("invalid ignore pattern {pattern:?}: {}", e.kind())))?;
            set.add(glob);
        }
        set.build().map(Ignore).map_err(|e| Refused(format!("invalid ignore patterns: {e}")))
    }

    /// Whether `name` (a file's or a directory's own name, or a file's path under its source) is skipped.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// The files of the sources, sorted; the first source that has a name wins, as with Django's finders. Files and
/// directories whose name matches an `ignore` pattern are skipped, and so are files whose path does (Django's
/// `get_files`); what is not a regular file (a FIFO, a socket) is reported.
fn walk(
    sources: &[PathBuf],
    ignore: &Ignore,
    summary: &mut Summary,
    unreadable: &mut BTreeSet<String>,
) -> Vec<SourceFile> {
    use std::os::unix::fs::MetadataExt;
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for source in sources {
        // Directories already walked, by device and inode: a symlink back to one (a cycle) is not walked again.
        let mut walked: BTreeSet<(u64, u64)> = BTreeSet::new();
        if let Ok(metadata) = std::fs::metadata(source) {
            walked.insert((metadata.dev(), metadata.ino()));
        }
        let mut pending = vec![source.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) => {
                    summary.failures.push((dir.display().to_string(), error.to_string()));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(error) => {
                        summary.failures.push((dir.display().to_string(), error.to_string()));
                        continue;
                    }
                };
                let path = entry.path();
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if ignore.matches(&file_name) {
                    continue;
                }
                let relative = path.strip_prefix(source).unwrap_or(&path);
                let name: Vec<String> =
                    relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let name = name.join("/");
                match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.is_dir() => {
                        if walked.insert((metadata.dev(), metadata.ino())) {
                            pending.push(path);
                        } else {
                            summary.warnings.push(format!(
                                "skipped {}: it leads to a directory already collected (a symlink cycle?)",
                                path.display()
                            ));
                        }
                        continue;
                    }
                    Ok(metadata) if metadata.is_file() => {
                        if ignore.matches(&name) {
                            continue;
                        }
                    }
                    Ok(_) => {
                        let reason = "not a regular file (a FIFO, socket or device)".to_string();
                        summary.failures.push((path.display().to_string(), reason));
                        unreadable.insert(name);
                        continue;
                    }
                    Err(error) => {
                        let reason = match std::fs::symlink_metadata(&path) {
                            Ok(link) if link.file_type().is_symlink() => format!("a symlink to nothing: {error}"),
                            _ => error.to_string(),
                        };
                        summary.failures.push((path.display().to_string(), reason));
                        unreadable.insert(name);
                        continue;
                    }
                }
                match validate_name(&name) {
                    Ok(()) => match found.get(&name) {
                        Some(first) => summary.warnings.push(format!(
                            "{} is ignored: {} has the same name ({name})",
                            path.display(),
                            first.display()
                        )),
                        None => {
                            found.insert(name, path);
                        }
                    },
                    Err(rule) => {
                        summary.failures.push((path.display().to_string(), format!("cannot be stored: {rule}")))
                    }
                }
            }
        }
    }
    found.into_iter().map(|(name, path)| SourceFile { name, path }).collect()
}

/// A local file's MD5 (hex) and size, or why it could not be read.
type FileDigest = Result<(String, u64), String>;

async fn md5_of_file(path: &Path) -> FileDigest {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

/// The hashed copies (CSS rewritten) and `staticfiles.json`.
async fn manifest_outputs(
    outputs: &[Output],
    static_url: Option<&str>,
    allow_missing: bool,
    failures: &mut Vec<(String, String)>,
) -> Vec<Output> {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for output in outputs.iter().filter(|o| o.name.ends_with(".css") || o.name.ends_with(".js")) {
        if let Body::File(path) = &output.body {
            match tokio::fs::read_to_string(path).await {
                Ok(text) => {
                    texts.insert(output.name.clone(), text);
                }
                Err(error) => failures.push((path.display().to_string(), format!("cannot be read as text: {error}"))),
            }
        }
    }
    let inputs: Vec<Input<'_>> = outputs
        .iter()
        .map(|o| Input { name: &o.name, md5: &o.md5, text: texts.get(&o.name).map(String::as_str) })
        .collect();
    let HashedAll { hashed, settled, missing } = manifest::hash_all(&inputs, static_url);
    // As Django, a reference to a file that is not collected fails its CSS file, whose hashed copy is not stored.
    let mut failed_css = BTreeSet::new();
    for (css, file) in missing {
        let message = format!("The file '{file}' could not be found (referenced by {css})");
        match allow_missing {
            true => eprintln!("collectstatic: warning: {message}; the reference is left as it is"),
            false => {
                failed_css.insert(css.clone());
                failures.push((css, format!("{message}; --allow-missing-references leaves it as it is")));
            }
        }
    }
    if !settled {
        failures.push((
            MANIFEST_NAME.into(),
            "CSS references did not settle after 5 passes (an @import cycle?): hashed names may be stale".into(),
        ));
    }
    let mut extra: Vec<Output> = hashed
        .iter()
        .zip(outputs)
        .filter(|(h, _)| !failed_css.contains(&h.name))
        .map(|(h, original)| match &h.content {
            Some(text) => Output {
                name: h.hashed.clone(),
                md5: manifest::md5_hex(text.as_bytes()),
                size: text.len() as u64,
                body: Body::Text(Arc::from(text.as_str())),
                extra: true,
            },
            None => Output {
                name: h.hashed.clone(),
                body: original.body.clone(),
                md5: original.md5.clone(),
                size: original.size,
                extra: true,
            },
        })
        .collect();
    let json = manifest::manifest_json(&hashed);
    extra.push(Output {
        name: MANIFEST_NAME.into(),
        md5: manifest::md5_hex(json.as_bytes()),
        size: json.len() as u64,
        body: Body::Text(Arc::from(json.as_str())),
        extra: true,
    });
    extra
}

/// Stores `output` unless the storage holds the same content; returns whether it was (or would be) copied.
async fn store(storage: &dyn Storage, output: &Output, held: Option<&FileMeta>, dry_run: bool) -> Result<bool, String> {
    if let Some(held) = held {
        let local = match &output.body {
            Body::File(path) => storage_core::Local::Path(path),
            Body::Text(text) => storage_core::Local::Bytes(text.as_bytes()),
        };
        if storage.holds(held, local, &output.md5, output.size).await.map_err(|e| e.to_string())? {
            return Ok(false);
        }
    }
    if dry_run {
        println!("would copy {}", output.name);
        return Ok(true);
    }
    let content = match &output.body {
        Body::File(path) => Content::from_path(path),
        Body::Text(text) => Content::from(text.to_string()),
    };
    if held.is_some() {
        // A changed file is replaced in place, atomically: readers see the old file or the new one.
        return storage.replace(&output.name, content).await.map(|()| true).map_err(|e| e.to_string());
    }
    let saved = storage.save(&output.name, content).await.map_err(|e| e.to_string())?;
    if saved != output.name {
        return Err(format!("was stored as {saved}: the name was taken meanwhile"));
    }
    Ok(true)
}

fn progress_bar(enabled: bool, total: usize) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed}") {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::Ignore;

    fn matches(pattern: &str, name: &str) -> bool {
        Ignore::new(&[pattern.to_string()]).unwrap_or_else(|e| panic!("{}", e.0)).matches(name)
    }

    #[test]
    fn patterns_match_like_fnmatch() {
        assert!(matches(".*", ".hidden") && matches("*~", "app.js~") && matches("CVS", "CVS"));
        assert!(matches("*.map", "app.js.map") && matches("a?c", "abc") && matches("*", ""));
        assert!(!matches(".*", "app.js") && !matches("*.map", "app.js") && !matches("a?c", "ac"));
        assert!(matches("[ab].css", "a.css") && !matches("[ab].css", "c.css") && matches("[!ab].css", "c.css"));
        // `*` spans `/`, as in fnmatch: a path pattern reaches any depth.
        assert!(matches("admin/*.css", "admin/css/base.css") && !matches("admin/*.css", "site/base.css"));
        // A backslash is a character, not an escape.
        assert!(matches("a\\*", "a\\b") && !matches("a\\*", "a*"));
        assert!(!matches("CVS", "cvs"), "case matters, as in fnmatchcase");
    }

    #[test]
    fn an_invalid_pattern_is_refused_with_its_reason() {
        let error = Ignore::new(&["*.css".into(), "[a".into()]).err().map(|e| e.0).unwrap_or_default();
        assert!(error.starts_with("invalid ignore pattern \"[a\": "), "{error}");
    }
}
