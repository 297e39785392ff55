//! Django's `ManifestStaticFilesStorage`, done in one place: hashed names (`app.css` -> `app.<12 hex>.css`),
//! `url(...)` and `@import` references inside CSS rewritten to them, and `staticfiles.json`.

use md5::{Digest, Md5};
use std::collections::BTreeMap;

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
    hex(&Md5::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collected file, as the manifest sees it.
pub struct Input<'a> {
    pub name: &'a str,
    pub md5: &'a str,
    /// The content of CSS files (the only ones rewritten); `None` for others.
    pub css: Option<&'a str>,
}

/// What the manifest adds: for every input its hashed name, with the rewritten content of CSS files.
pub struct Hashed {
    pub name: String,
    pub hashed: String,
    /// Rewritten CSS, to store under the hashed name; `None` when the original bytes go there.
    pub content: Option<String>,
}

/// Hashes every input; CSS is rewritten to reference hashed names, in passes until the names settle. Returns
/// whether they settled (Django's "max post-process passes exceeded" when not).
pub fn hash_all(inputs: &[Input<'_>]) -> (Vec<Hashed>, bool) {
    let mut names: BTreeMap<String, String> =
        inputs.iter().map(|i| (i.name.to_string(), hashed_name(i.name, i.md5))).collect();
    let mut rewritten: BTreeMap<String, String> = BTreeMap::new();
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        let mut changed = false;
        for input in inputs {
            let Some(css) = input.css else { continue };
            let content = rewrite_css(css, input.name, |target| names.get(target).cloned());
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
    (hashed, settled)
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

/// Rewrites `url(...)` and `@import "..."` references of the CSS file `name` to the names `lookup` gives the
/// files they point at (resolved against `name`'s directory). Absolute, external, data and fragment-only
/// references, and references to files `lookup` does not know, are left as they are.
pub fn rewrite_css(css: &str, name: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    // Case-insensitive, as Django's patterns: `URL(` and `@IMPORT` too. ASCII lowercasing keeps offsets.
    let lower_all = css.to_ascii_lowercase();
    loop {
        let lower = &lower_all[css.len() - rest.len()..];
        let url = lower.find("url(");
        let import = lower.find("@import");
        let (start, is_url) = match (url, import) {
            (Some(u), Some(i)) if i < u => (i, false),
            (Some(u), _) => (u, true),
            (None, Some(i)) => (i, false),
            (None, None) => break,
        };
        let keyword = if is_url { "url(" } else { "@import" };
        out.push_str(&rest[..start + keyword.len()]);
        rest = &rest[start + keyword.len()..];
        // The reference: up to `)` for url(, a quoted string for @import (whose url( form the next turn takes).
        let (reference, quote, length) = if is_url {
            let Some(end) = rest.find(')') else { continue };
            let inner = rest[..end].trim();
            let quote = inner.chars().next().filter(|c| *c == '"' || *c == '\'');
            let unquoted = quote.map_or(inner, |q| inner.trim_matches(q));
            (unquoted, quote, end)
        } else {
            let trimmed = rest.trim_start();
            let skipped = rest.len() - trimmed.len();
            let Some(q) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
            let Some(end) = trimmed[1..].find(q) else { continue };
            (&trimmed[1..1 + end], Some(q), skipped + end + 2)
        };
        match replacement(reference, dir, &lookup) {
            Some(new) => {
                let q = quote.map(String::from).unwrap_or_default();
                if is_url {
                    out.push_str(&format!("{q}{new}{q}"));
                } else {
                    out.push_str(&format!(" {q}{new}{q}"));
                }
            }
            None => out.push_str(&rest[..length]),
        }
        rest = &rest[length..];
    }
    out.push_str(rest);
    out
}

/// The new reference for `reference` in a CSS file of `dir`, if it names a known local file.
fn replacement(reference: &str, dir: &str, lookup: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let external = ["data:", "http:", "https:", "//", "#", "/"];
    if reference.is_empty() || external.iter().any(|p| reference.starts_with(p)) {
        return None;
    }
    let split = reference.find(['?', '#']).unwrap_or(reference.len());
    let (path, suffix) = reference.split_at(split);
    let mut segments: Vec<&str> = if dir.is_empty() { Vec::new() } else { dir.split('/').collect() };
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    // `url(a%20b.png)` names `a b.png`.
    let joined = segments.join("/");
    let decoded = percent_encoding::percent_decode_str(&joined).decode_utf8_lossy();
    let hashed = lookup(&joined).or_else(|| lookup(&decoded))?;
    let hashed_file = hashed.rsplit('/').next()?;
    let kept = path.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
    Some(format!("{kept}{hashed_file}{suffix}"))
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
        let out = rewrite_css(css, "css/app.css", lookup);
        assert!(out.contains(r#"@import "base.bbbbbbbbbbbb.css";"#), "{out}");
        assert!(out.contains("@import url('base.bbbbbbbbbbbb.css');"), "{out}");
        assert!(out.contains("url(../img/logo.aaaaaaaaaaaa.png)"), "{out}");
        assert!(out.contains(r#"url("../img/logo.aaaaaaaaaaaa.png?v=1#x")"#), "{out}");
        assert!(out.contains("url('../fonts/a.cccccccccccc.woff')"), "{out}");
        assert!(out.contains("url(data:image/png;base64,AAA=) url(/abs.png) url(https://cdn/x.png)"), "{out}");
        assert!(out.contains("url(missing.png) url(#f)"), "{out}");
        let upper = rewrite_css("a { b: URL(../img/logo.png) } @IMPORT 'base.css';", "css/x.css", lookup);
        assert!(
            upper.contains("URL(../img/logo.aaaaaaaaaaaa.png)") && upper.contains("'base.bbbbbbbbbbbb.css'"),
            "{upper}"
        );
        let spaced = rewrite_css("a { b: url(my%20logo.png) }", "img/x.css", |n| {
            (n == "img/my logo.png").then(|| "img/my logo.dddddddddddd.png".to_string())
        });
        assert!(spaced.contains("url(my logo.dddddddddddd.png)"), "{spaced}");
        let cut = rewrite_css("a { b: url(%é%2) }", "x.css", |_| None);
        assert_eq!(cut, "a { b: url(%é%2) }", "no panic on escapes cut short");
    }

    #[test]
    fn import_cycles_are_reported() {
        let (a, b) = ("@import 'b.css';", "@import 'a.css';");
        let inputs = [
            Input { name: "a.css", md5: &md5_hex(a.as_bytes()), css: Some(a) },
            Input { name: "b.css", md5: &md5_hex(b.as_bytes()), css: Some(b) },
        ];
        assert!(!hash_all(&inputs).1, "a cycle never settles");
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
            Input { name: "css/base.css", md5: &md5_hex(base.as_bytes()), css: Some(base) },
            Input { name: "css/app.css", md5: &md5_hex(app.as_bytes()), css: Some(app) },
        ];
        let (hashed, settled) = hash_all(&inputs);
        assert!(settled);
        let base_hashed = &hashed[0].hashed;
        let app_content = hashed[1].content.as_deref().unwrap_or_default();
        assert!(app_content.contains(base_hashed.rsplit('/').next().unwrap_or_default()), "{app_content}");
        assert_eq!(hashed[1].hashed, hashed_name("css/app.css", &md5_hex(app_content.as_bytes())));
        let json: serde_json::Value = serde_json::from_str(&manifest_json(&hashed)).unwrap();
        assert_eq!(json["version"], "1.1");
        assert_eq!(json["paths"]["css/base.css"], base_hashed.as_str());
    }
}
