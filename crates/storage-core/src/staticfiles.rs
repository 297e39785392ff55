//! Django's `ManifestStaticFilesStorage`: hashed names (`app.css` -> `app.<12 hex>.css`), `url(...)` and
//! `@import` references inside CSS rewritten to them, `staticfiles.json` (what `storages collectstatic` writes),
//! and [`ManifestStorage`], which answers `url("css/app.css")` with the hashed name's URL, as an application
//! asks `{% static %}`.

use crate::AlternativeNames;
use crate::content::{Content, FileWriter, StoredFile};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{
    Capabilities, Cleaned, Cleanup, FileMeta, Local, Metrics, SaveOptions, Storage, UrlOptions, check_name,
};
use async_trait::async_trait;
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

/// The manifest file's name, as Django reads it.
pub const MANIFEST_NAME: &str = "staticfiles.json";

/// Django's passes over CSS that imports CSS before giving up on cycles.
const MAX_PASSES: usize = 5;

/// `name` with the first 12 hex digits of `md5_hex` before its extension.
pub fn hashed_name(name: &str, md5_hex: &str) -> String {
    let hash = &md5_hex[..12.min(md5_hex.len())];
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    let file = match file.rfind('.') {
        Some(i) if i > 0 => format!("{}.{hash}{}", &file[..i], &file[i..]),
        _ => format!("{file}.{hash}"),
    };
    if dir.is_empty() { file } else { format!("{dir}/{file}") }
}

/// The MD5 of `bytes`, lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// A collected file, as the manifest sees it.
pub struct Input<'a> {
    /// Its name in the storage.
    pub name: &'a str,
    /// The MD5 of its content, lowercase hex.
    pub md5: &'a str,
    /// The content of CSS and JavaScript files (the ones rewritten: see [`rewrite_css`], [`rewrite_js`]);
    /// `None` for others.
    pub text: Option<&'a str>,
}

/// What the manifest adds: for every input its hashed name, with the rewritten content of CSS files.
pub struct Hashed {
    /// The input's name.
    pub name: String,
    /// Its hashed name.
    pub hashed: String,
    /// Rewritten CSS, to store under the hashed name; `None` when the original bytes go there.
    pub content: Option<String>,
}

/// What [`hash_all`] made of the inputs.
pub struct HashedAll {
    /// Every input's hashed name, in input order.
    pub hashed: Vec<Hashed>,
    /// Whether the names settled (Django's "max post-process passes exceeded" when not).
    pub settled: bool,
    /// References in CSS to local files that are not among the inputs: `(CSS file, file named)`, an error in
    /// Django ("The file ... could not be found"). They are left as they are.
    pub missing: Vec<(String, String)>,
}

/// Hashes every input; CSS is rewritten to reference hashed names (see [`rewrite_css`] for `static_url`), in
/// passes until the names settle.
pub fn hash_all(inputs: &[Input<'_>], static_url: Option<&str>) -> HashedAll {
    let mut names: BTreeMap<String, String> =
        inputs.iter().map(|i| (i.name.to_string(), hashed_name(i.name, i.md5))).collect();
    let mut rewritten: BTreeMap<String, String> = BTreeMap::new();
    let mut missing = std::collections::BTreeSet::new();
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        let mut changed = false;
        for input in inputs {
            let Some(text) = input.text else { continue };
            let lookup = |target: &str| names.get(target).cloned();
            let (content, absent) = match input.name.ends_with(".js") {
                true => rewrite_js(text, input.name, lookup),
                false => rewrite_css(text, input.name, static_url, lookup),
            };
            missing.extend(absent.into_iter().map(|target| (input.name.to_string(), target)));
            let hashed = hashed_name(input.name, &md5_hex(content.as_bytes()));
            if names.get(input.name) != Some(&hashed) {
                names.insert(input.name.to_string(), hashed);
                changed = true;
            }
            rewritten.insert(input.name.to_string(), content);
        }
        if !changed {
            settled = true;
            break;
        }
    }
    let hashed = inputs
        .iter()
        .map(|i| Hashed { name: i.name.to_string(), hashed: names[i.name].clone(), content: rewritten.remove(i.name) })
        .collect();
    HashedAll { hashed, settled, missing: missing.into_iter().collect() }
}

/// `staticfiles.json` in Django's format: `{"paths": {...}, "version": "1.1", "hash": "..."}`.
pub fn manifest_json(hashed: &[Hashed]) -> String {
    let paths: BTreeMap<&str, &str> = hashed.iter().map(|h| (h.name.as_str(), h.hashed.as_str())).collect();
    // Django's: md5 of `json.dumps(sorted(paths.items()))`, Python's separators and ASCII escapes.
    let listed: Vec<String> = paths.iter().map(|(k, v)| format!("[{}, {}]", python_json(k), python_json(v))).collect();
    let hash = md5_hex(format!("[{}]", listed.join(", ")).as_bytes())[..12].to_string();
    serde_json::json!({ "paths": paths, "version": "1.1", "hash": hash }).to_string()
}

/// A string as Python's `json.dumps` writes it (`ensure_ascii`).
fn python_json(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rewrites the references of the CSS file `name` (`url(...)`, `@import "..."`, `/*# sourceMappingURL=... */`)
/// to the names `lookup` gives the files they point at, as Django's `ManifestStaticFilesStorage`: relative ones
/// resolved against `name`'s directory, absolute ones under `static_url` (the storage's URL prefix, Django's
/// `STATIC_URL`) against the root. External, data and fragment-only references, other absolute ones and
/// references inside comments are left as they are; so are references to local files `lookup` does not know,
/// which are returned beside the CSS.
pub fn rewrite_css(
    css: &str,
    name: &str,
    static_url: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<String>) {
    let mut missing = Vec::new();
    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    // Case-insensitive, as Django's patterns: `URL(` and `@IMPORT` too. ASCII lowercasing keeps offsets.
    let lower_all = css.to_ascii_lowercase();
    let mut replace =
        |reference: &str, out: &mut String, original: &str, wrap: &dyn Fn(&str) -> String| match replacement(
            reference, dir, static_url, &lookup,
        ) {
            Ok(new) => out.push_str(&wrap(&new)),
            Err(Some(absent)) => {
                missing.push(absent);
                out.push_str(original);
            }
            Err(None) => out.push_str(original),
        };
    loop {
        let lower = &lower_all[css.len() - rest.len()..];
        let found = [("url(", lower.find("url(")), ("@import", lower.find("@import")), ("/*", lower.find("/*"))]
            .into_iter()
            .filter_map(|(keyword, at)| at.map(|at| (at, keyword)))
            .min();
        let Some((start, keyword)) = found else { break };
        out.push_str(&rest[..start + keyword.len()]);
        rest = &rest[start + keyword.len()..];
        match keyword {
            // A comment is left as it is (Django 5.1), but for a source map's reference.
            "/*" => {
                let end = rest.find("*/").map_or(rest.len(), |end| end + 2);
                let comment = &rest[..end];
                let map =
                    comment.strip_prefix("# sourceMappingURL=").or_else(|| comment.strip_prefix("@ sourceMappingURL="));
                match map {
                    Some(tail) => {
                        let reference = tail.split(|c: char| c.is_whitespace() || c == '*').next().unwrap_or("");
                        let prefix_len = comment.len() - tail.len();
                        out.push_str(&comment[..prefix_len]);
                        replace(reference, &mut out, reference, &|new| new.to_owned());
                        out.push_str(&tail[reference.len()..]);
                    }
                    None => out.push_str(comment),
                }
                rest = &rest[end..];
            }
            // The reference: up to `)`.
            "url(" => {
                let Some(end) = rest.find(')') else { continue };
                let inner = rest[..end].trim();
                let quote = inner.chars().next().filter(|c| *c == '"' || *c == '\'');
                let unquoted = quote.map_or(inner, |q| inner.trim_matches(q));
                let q = quote.map(String::from).unwrap_or_default();
                replace(unquoted, &mut out, &rest[..end], &|new| format!("{q}{new}{q}"));
                rest = &rest[end..];
            }
            // A quoted string (the url( form is the next turn's).
            _ => {
                let trimmed = rest.trim_start();
                let skipped = rest.len() - trimmed.len();
                let Some(q) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
                let Some(end) = trimmed[1..].find(q) else { continue };
                let length = skipped + end + 2;
                replace(&trimmed[1..1 + end], &mut out, &rest[..length], &|new| format!(" {q}{new}{q}"));
                rest = &rest[length..];
            }
        }
    }
    out.push_str(rest);
    (out, missing)
}

/// Rewrites the source map reference of the JavaScript file `name` (a line `//# sourceMappingURL=...`, as
/// Django's pattern) to the hashed name `lookup` gives; a map `lookup` does not know is returned beside the
/// script.
pub fn rewrite_js(js: &str, name: &str, lookup: impl Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    const MARK: &str = "//# sourceMappingURL=";
    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
    let mut missing = Vec::new();
    let mut out = String::with_capacity(js.len());
    for line in js.split_inclusive('\n') {
        let Some(tail) = line.strip_prefix(MARK) else {
            out.push_str(line);
            continue;
        };
        let reference = tail.trim_end();
        out.push_str(MARK);
        match replacement(reference, dir, None, &lookup) {
            Ok(new) => out.push_str(&new),
            Err(absent) => {
                missing.extend(absent);
                out.push_str(reference);
            }
        }
        out.push_str(&tail[reference.len()..]);
    }
    (out, missing)
}

/// The new reference for `reference` in a CSS file of `dir`: `Ok` when it names a known local file, `Err` with
/// the file's name when it names an unknown one, `Err(None)` when it names no local file (external, data, a
/// fragment, absolute outside `static_url`, or a path above the root).
fn replacement(
    reference: &str,
    dir: &str,
    static_url: Option<&str>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<String, Option<String>> {
    // Under the static URL: from the root, and rewritten whole (`/static/img/a.png` -> `/static/img/a.<hash>.png`).
    let under_static = static_url
        .filter(|prefix| !prefix.is_empty())
        .and_then(|prefix| reference.strip_prefix(prefix).map(|path| (prefix, path)));
    let (reference, dir, prefix) = match under_static {
        Some((prefix, path)) => (path, "", Some(prefix)),
        None => (reference, dir, None),
    };
    // Any `scheme:` (Django's `^[a-z]+:`), a protocol-relative or absolute path, a fragment: not a local file.
    let scheme = reference
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()));
    let external = ["//", "#", "/"];
    if reference.is_empty() || (prefix.is_none() && (scheme || external.iter().any(|p| reference.starts_with(p)))) {
        return Err(None);
    }
    let split = reference.find(['?', '#']).unwrap_or(reference.len());
    let (path, suffix) = reference.split_at(split);
    let mut segments: Vec<&str> = if dir.is_empty() { Vec::new() } else { dir.split('/').collect() };
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(None)?;
            }
            s => segments.push(s),
        }
    }
    // `url(a%20b.png)` names `a b.png`.
    let joined = segments.join("/");
    let decoded = percent_encoding::percent_decode_str(&joined).decode_utf8_lossy();
    let Some(hashed) = lookup(&joined).or_else(|| lookup(&decoded)) else { return Err(Some(decoded.into_owned())) };
    if let Some(prefix) = prefix {
        return Ok(format!("{prefix}{hashed}{suffix}"));
    }
    let hashed_file = hashed.rsplit('/').next().unwrap_or(&hashed);
    let kept = path.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
    Ok(format!("{kept}{hashed_file}{suffix}"))
}

/// A storage whose `url()` gives the URL of a file's hashed name, from the `staticfiles.json` its
/// collectstatic wrote: Django's `ManifestStaticFilesStorage` (`storages.backends.s3.S3ManifestStaticStorage`,
/// `django.contrib.staticfiles.storage.ManifestStaticFilesStorage`). Every other operation is the inner
/// storage's. A name the manifest does not list is an error, as in Django (`manifest_strict`). The manifest is
/// read once, and again after a save through this storage replaced it.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use storage_core::{InMemoryStorage, Storage, staticfiles::ManifestStorage};
///
/// let inner = Arc::new(InMemoryStorage::new());
/// inner.save("staticfiles.json", r#"{"paths": {"css/app.css": "css/app.0123456789ab.css"}, "version": "1.1"}"#.into()).await?;
/// let statics = ManifestStorage::new(inner);
/// assert_eq!(statics.url("css/app.css").await?, "/media/css/app.0123456789ab.css");
/// let missing = statics.url("css/gone.css").await.unwrap_err().to_string();
/// assert!(missing.contains("Missing staticfiles manifest entry for 'css/gone.css'"), "{missing}");
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct ManifestStorage {
    inner: Arc<dyn Storage>,
    paths: Arc<Paths>,
}

/// The manifest's paths once read, and a count of the writes of the manifest, so that a read that started
/// before one never keeps what it read.
#[derive(Debug, Default)]
struct Paths(RwLock<(u64, Option<ManifestPaths>)>);

/// A manifest's paths: names to hashed names.
type ManifestPaths = Arc<BTreeMap<String, String>>;

impl Paths {
    fn forget(&self) {
        let mut paths = self.0.write().unwrap_or_else(PoisonError::into_inner);
        *paths = (paths.0 + 1, None);
    }
}

impl ManifestStorage {
    /// The manifest storage over `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        ManifestStorage { inner, paths: Arc::default() }
    }

    /// The manifest's paths: read from `staticfiles.json` on first use (`None` when the file does not exist).
    async fn paths(&self) -> Result<Option<Arc<BTreeMap<String, String>>>> {
        let (generation, kept) = self.paths.0.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(paths) = kept {
            return Ok(Some(paths));
        }
        let paths = match self.inner.open(MANIFEST_NAME).await {
            Ok(file) => Arc::new(parse_manifest(self.inner.alias(), &file.read_all().await?)?),
            // Not kept: the next call looks again, once collectstatic wrote it.
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut kept = self.paths.0.write().unwrap_or_else(PoisonError::into_inner);
        if kept.0 == generation {
            kept.1 = Some(paths.clone());
        }
        Ok(Some(paths))
    }

    /// The stored (hashed) name of `name`, as Django's `stored_name`: a query or fragment of `name` is kept
    /// after the hashed name.
    pub async fn stored_name(&self, name: &str) -> Result<String> {
        let (hashed, rest) = self.hashed(name).await?;
        Ok(format!("{hashed}{rest}"))
    }

    /// The hashed name of `name` without its query or fragment, and those.
    async fn hashed<'a>(&self, name: &'a str) -> Result<(String, &'a str)> {
        check_name(self.inner.alias(), name)?;
        let clean = name.split(['?', '#']).next().unwrap_or(name);
        let paths = self.paths().await?;
        let stored = paths.as_ref().and_then(|paths| paths.get(clean)).map(|h| (h.clone(), &name[clean.len()..]));
        stored.ok_or_else(|| {
            let hint = if paths.is_none() {
                format!(" (there is no {MANIFEST_NAME} yet: run collectstatic)")
            } else {
                String::new()
            };
            let message = format!("Missing staticfiles manifest entry for '{clean}'{hint}");
            Error::backend(self.inner.alias(), "url", name, ErrorKind::NotFound, message)
        })
    }

    /// Forgets the manifest read when `name` is the manifest (a save replaced it).
    fn touched(&self, name: &str) {
        if name == MANIFEST_NAME {
            self.paths.forget();
        }
    }
}

/// `url` followed by the query and fragment `rest` of the name it was made for: the query joins one the URL
/// has, the fragment goes last.
fn with_rest(url: String, rest: &str) -> String {
    let (query, fragment) = rest.split_once('#').map_or((rest, None), |(query, fragment)| (query, Some(fragment)));
    let (url, url_fragment) = url.split_once('#').map_or((url.as_str(), None), |(url, f)| (url, Some(f)));
    let mut joined = crate::storage::append_query(url.to_owned(), query.strip_prefix('?').unwrap_or(query));
    if let Some(fragment) = fragment.or(url_fragment) {
        joined.push('#');
        joined.push_str(fragment);
    }
    joined
}

/// The `paths` of a `staticfiles.json`.
fn parse_manifest(storage: &str, bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        paths: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Manifest>(bytes).map(|manifest| manifest.paths).map_err(|error| {
        let message = format!("{MANIFEST_NAME} is not a staticfiles manifest: {error}");
        Error::backend(storage, "url", MANIFEST_NAME, ErrorKind::InvalidInput, message)
    })
}

#[async_trait]
impl Storage for ManifestStorage {
    fn alias(&self) -> &str {
        self.inner.alias()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { manifest: true, ..self.inner.capabilities() }
    }

    fn alternative_names(&self) -> AlternativeNames {
        self.inner.alternative_names()
    }

    fn file_overwrite(&self) -> bool {
        self.inner.file_overwrite()
    }

    async fn open_write_with(&self, name: &str, options: &SaveOptions) -> Result<FileWriter> {
        let writer = self.inner.open_write_with(name, options).await?;
        if name != MANIFEST_NAME {
            return Ok(writer);
        }
        let paths = self.paths.clone();
        Ok(writer.on_commit(move |_| {
            paths.forget();
            Box::pin(async {})
        }))
    }

    async fn save_with(&self, name: &str, content: Content, options: &SaveOptions) -> Result<String> {
        let saved = self.inner.save_with(name, content, options).await;
        self.touched(name);
        saved
    }

    async fn replace(&self, name: &str, content: Content) -> Result<()> {
        let replaced = self.inner.replace(name, content).await;
        self.touched(name);
        replaced
    }

    async fn open(&self, name: &str) -> Result<StoredFile> {
        self.inner.open(name).await
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.inner.exists(name).await
    }

    async fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let deleted = self.inner.delete(name).await;
        self.touched(name);
        deleted
    }

    async fn delete_many(&self, names: &[String]) -> Vec<(String, Error)> {
        let failed = self.inner.delete_many(names).await;
        names.iter().for_each(|name| self.touched(name));
        failed
    }

    async fn listdir(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        self.inner.listdir(path).await
    }

    /// The URL of the hashed name the manifest lists for `name` (its query and fragment after it).
    async fn url(&self, name: &str) -> Result<String> {
        let (hashed, rest) = self.hashed(name).await?;
        Ok(with_rest(self.inner.url(&hashed).await?, rest))
    }

    async fn url_expiring(&self, name: &str, expires_in: Duration) -> Result<String> {
        let (hashed, rest) = self.hashed(name).await?;
        Ok(with_rest(self.inner.url_expiring(&hashed, expires_in).await?, rest))
    }

    fn url_prefix(&self) -> Option<String> {
        self.inner.url_prefix()
    }

    /// The inner storage stores what this one does: [`crate::Storages::get_as`] reaches it.
    fn observed(&self) -> Option<Arc<dyn Storage>> {
        Some(self.inner.clone())
    }

    async fn url_with(&self, name: &str, options: &UrlOptions) -> Result<String> {
        let (hashed, rest) = self.hashed(name).await?;
        Ok(with_rest(self.inner.url_with(&hashed, options).await?, rest))
    }

    async fn modified_time(&self, name: &str) -> Result<SystemTime> {
        self.inner.modified_time(name).await
    }

    async fn stat(&self, name: &str) -> Result<FileMeta> {
        self.inner.stat(name).await
    }

    async fn list_files(&self, path: &str) -> Result<Vec<FileMeta>> {
        self.inner.list_files(path).await
    }

    async fn holds(&self, held: &FileMeta, local: Local<'_>, md5: &str, size: u64) -> Result<bool> {
        self.inner.holds(held, local, md5, size).await
    }

    async fn record_md5s(&self, stored: &[FileMeta]) -> Result<()> {
        self.inner.record_md5s(stored).await
    }

    async fn settle(&self) -> Vec<String> {
        self.inner.settle().await
    }

    async fn cleanup(&self, options: &Cleanup) -> Result<Cleaned> {
        self.inner.cleanup(options).await
    }

    async fn clear_cache(&self) -> Result<bool> {
        self.inner.clear_cache().await
    }

    fn request_counts(&self) -> Vec<(String, u64)> {
        self.inner.request_counts()
    }

    fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }

    fn generate_filename(&self, name: &str) -> Result<String> {
        self.inner.generate_filename(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_keep_directories_and_extensions() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert_eq!(hashed_name("css/app.css", md5), "css/app.0123456789ab.css");
        assert_eq!(hashed_name("LICENSE", md5), "LICENSE.0123456789ab");
        assert_eq!(hashed_name(".hidden", md5), ".hidden.0123456789ab");
    }

    #[test]
    fn css_references_are_rewritten_and_others_kept() {
        let lookup = |name: &str| match name {
            "img/logo.png" => Some("img/logo.aaaaaaaaaaaa.png".to_string()),
            "css/base.css" => Some("css/base.bbbbbbbbbbbb.css".to_string()),
            "fonts/a.woff" => Some("fonts/a.cccccccccccc.woff".to_string()),
            _ => None,
        };
        let css = r#"@import "base.css";
@import url('base.css');
body { background: url(../img/logo.png); }
.a { background: url( "../img/logo.png?v=1#x" ) }
@font-face { src: url('../fonts/a.woff') format('woff'); }
.b { background: url(data:image/png;base64,AAA=) url(/abs.png) url(https://cdn/x.png) url(missing.png) url(#f) }"#;
        let (out, missing) = rewrite_css(css, "css/app.css", None, lookup);
        assert_eq!(missing, ["css/missing.png"], "a local file that is not there is reported");
        assert!(out.contains(r#"@import "base.bbbbbbbbbbbb.css";"#), "{out}");
        assert!(out.contains("@import url('base.bbbbbbbbbbbb.css');"), "{out}");
        assert!(out.contains("url(../img/logo.aaaaaaaaaaaa.png)"), "{out}");
        assert!(out.contains(r#"url("../img/logo.aaaaaaaaaaaa.png?v=1#x")"#), "{out}");
        assert!(out.contains("url('../fonts/a.cccccccccccc.woff')"), "{out}");
        assert!(out.contains("url(data:image/png;base64,AAA=) url(/abs.png) url(https://cdn/x.png)"), "{out}");
        assert!(out.contains("url(missing.png) url(#f)"), "{out}");
        let (upper, _) = rewrite_css("a { b: URL(../img/logo.png) } @IMPORT 'base.css';", "css/x.css", None, lookup);
        assert!(
            upper.contains("URL(../img/logo.aaaaaaaaaaaa.png)") && upper.contains("'base.bbbbbbbbbbbb.css'"),
            "{upper}"
        );
        let (spaced, _) = rewrite_css("a { b: url(my%20logo.png) }", "img/x.css", None, |n| {
            (n == "img/my logo.png").then(|| "img/my logo.dddddddddddd.png".to_string())
        });
        assert!(spaced.contains("url(my logo.dddddddddddd.png)"), "{spaced}");
        let (cut, _) = rewrite_css("a { b: url(%é%2) }", "x.css", None, |_| None);
        assert_eq!(cut, "a { b: url(%é%2) }", "no panic on escapes cut short");
    }

    /// Django's rules beyond relative references: under STATIC_URL from the root, source maps, comments.
    #[test]
    fn static_url_references_source_maps_and_comments() {
        let lookup = |name: &str| match name {
            "img/a.png" => Some("img/a.aaaaaaaaaaaa.png".to_string()),
            "css/app.css.map" => Some("css/app.css.bbbbbbbbbbbb.map".to_string()),
            _ => None,
        };
        let css = "a { b: url(/static/img/a.png?v=1) c: url('/other/img/a.png') d: url(about:blank) }\n\
                   /* old: url(../img/gone.png) */\n/*# sourceMappingURL=app.css.map */";
        let (out, missing) = rewrite_css(css, "css/app.css", Some("/static/"), lookup);
        assert!(out.contains("url(/static/img/a.aaaaaaaaaaaa.png?v=1)"), "{out}");
        assert!(out.contains("url('/other/img/a.png')"), "outside the static URL: kept: {out}");
        assert!(out.contains("/* old: url(../img/gone.png) */"), "a comment is kept as it is: {out}");
        assert!(out.contains("/*# sourceMappingURL=app.css.bbbbbbbbbbbb.map */"), "{out}");
        assert!(missing.is_empty(), "nothing in a comment is missing: {missing:?}");
        let (_, missing) = rewrite_css(
            "a { b: url(/static/img/none.png) }\n/*# sourceMappingURL=none.map */",
            "css/x.css",
            Some("/static/"),
            lookup,
        );
        assert_eq!(missing, ["img/none.png", "css/none.map"]);
    }

    #[test]
    fn javascript_source_maps_are_rewritten() {
        let lookup = |name: &str| (name == "js/app.js.map").then(|| "js/app.js.cccccccccccc.map".to_string());
        let (out, missing) = rewrite_js("let a = 1;\n//# sourceMappingURL=app.js.map\n", "js/app.js", lookup);
        assert_eq!(out, "let a = 1;\n//# sourceMappingURL=app.js.cccccccccccc.map\n");
        assert!(missing.is_empty());
        let (out, missing) = rewrite_js("x();\n//# sourceMappingURL=gone.map", "js/b.js", lookup);
        assert_eq!((out.as_str(), missing), ("x();\n//# sourceMappingURL=gone.map", vec!["js/gone.map".to_string()]));
    }

    /// The manifest is read again once a write through the storage replaced it, a writer's commit included,
    /// and a name's query and fragment follow the hashed name.
    #[tokio::test]
    async fn a_new_manifest_is_seen_and_queries_are_kept() {
        use tokio::io::AsyncWriteExt;
        let inner: Arc<dyn Storage> = Arc::new(crate::InMemoryStorage::new());
        let statics = ManifestStorage::new(inner);
        let manifest = |hash: &str| format!(r#"{{"paths": {{"a.css": "a.{hash}.css"}}, "version": "1.1"}}"#);
        statics.save(MANIFEST_NAME, manifest("111111111111").into()).await.expect("save");
        assert_eq!(statics.url("a.css?v=1#top").await.expect("url"), "/media/a.111111111111.css?v=1#top");
        let with_parameter = UrlOptions::new().parameter("version", "10");
        let url = statics.url_with("a.css?v=1#top", &with_parameter).await.expect("url");
        assert_eq!(url, "/media/a.111111111111.css?version=10&v=1#top");
        let mut writer = statics.open_write(MANIFEST_NAME).await.expect("writer");
        // Read while the new manifest is being written: the old one, not kept past the commit.
        assert_eq!(statics.url("a.css").await.expect("url"), "/media/a.111111111111.css");
        statics.delete(MANIFEST_NAME).await.expect("delete the old one");
        assert!(statics.url("a.css").await.is_err(), "no manifest now");
        writer.write_all(manifest("222222222222").as_bytes()).await.expect("write");
        writer.commit().await.expect("commit");
        assert_eq!(statics.url("a.css").await.expect("url"), "/media/a.222222222222.css");
    }

    #[test]
    fn import_cycles_are_reported() {
        let (a, b) = ("@import 'b.css';", "@import 'a.css';");
        let inputs = [
            Input { name: "a.css", md5: &md5_hex(a.as_bytes()), text: Some(a) },
            Input { name: "b.css", md5: &md5_hex(b.as_bytes()), text: Some(b) },
        ];
        assert!(!hash_all(&inputs, None).settled, "a cycle never settles");
    }

    #[test]
    fn the_manifest_hash_is_djangos() {
        // Python: md5(json.dumps(sorted({"a.css": "a.0123456789ab.css"}.items())).encode()).hexdigest()[:12]
        let hashed = [Hashed { name: "a.css".into(), hashed: "a.0123456789ab.css".into(), content: None }];
        let json: serde_json::Value = serde_json::from_str(&manifest_json(&hashed)).unwrap();
        assert_eq!(json["hash"], md5_hex(br#"[["a.css", "a.0123456789ab.css"]]"#)[..12]);
        assert_eq!(python_json("é\"x"), "\"\\u00e9\\\"x\"");
    }

    #[test]
    fn css_that_imports_css_settles_on_its_rewritten_hash() {
        let base = "p { color: red }";
        let app = "@import 'base.css';";
        let inputs = [
            Input { name: "css/base.css", md5: &md5_hex(base.as_bytes()), text: Some(base) },
            Input { name: "css/app.css", md5: &md5_hex(app.as_bytes()), text: Some(app) },
        ];
        let HashedAll { hashed, settled, missing } = hash_all(&inputs, None);
        assert!(settled && missing.is_empty());
        let base_hashed = &hashed[0].hashed;
        let app_content = hashed[1].content.as_deref().unwrap_or_default();
        assert!(app_content.contains(base_hashed.rsplit('/').next().unwrap_or_default()), "{app_content}");
        assert_eq!(hashed[1].hashed, hashed_name("css/app.css", &md5_hex(app_content.as_bytes())));
        let json: serde_json::Value = serde_json::from_str(&manifest_json(&hashed)).unwrap();
        assert_eq!(json["version"], "1.1");
        assert_eq!(json["paths"]["css/base.css"], base_hashed.as_str());
    }
}
