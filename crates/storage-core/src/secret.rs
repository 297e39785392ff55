//! Secret settings, and the one redactor that scrubs every secret value this process has read from any text
//! that is about to be shown: errors, log lines, a settings file's syntax error.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// Every secret value read so far, with its percent-encoded form where that differs, longest first.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Values shorter than this are not scrubbed from text: they would match ordinary words everywhere, and a
/// secret that short protects nothing anyway.
const SHORTEST: usize = 4;

/// What a scrubbed value is replaced with.
const MASK: &str = "***";

/// A secret setting (a secret key, a session token): its value never appears in `Debug`, `Display`, errors or
/// logs; read it with [`Secret::expose`]. Every value made into a `Secret` is known to [`redact`] from then on.
///
/// ```
/// let secret: storage_core::Secret = "hunter2".into();
/// assert_eq!(format!("{secret:?} {secret}"), "Secret(\"***\") ***");
/// assert_eq!(secret.expose(), "hunter2");
/// assert_eq!(storage_core::redact("a server said: token=hunter2"), "a server said: token=***");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::from(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        remember(&value);
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&MASK).finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Serializes as `"***"`, so a settings dump never carries the value.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

fn remember(value: &str) {
    if value.len() < SHORTEST {
        return;
    }
    // As a query string carries it (presigned URLs, an echoed request line).
    let encoded = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut known = KNOWN.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for form in [value.to_owned(), encoded] {
        if !known.contains(&form) {
            known.push(form);
        }
    }
    // Longest first: a secret that contains another is masked whole.
    known.sort_by_key(|form| std::cmp::Reverse(form.len()));
}

/// `text` with every known secret value (each [`Secret`] made so far, and its percent-encoded form) replaced
/// by `***`. Backends pass every text that comes from outside (a server's error body, a transport error)
/// through it before it becomes part of an error; the CLI passes everything it prints.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = Cow::Borrowed(text);
    for form in known.iter() {
        if text.contains(form.as_str()) {
            text = Cow::Owned(text.replace(form.as_str(), MASK));
        }
    }
    text
}

/// The words that make a settings key secret: its value is never repeated, not even in a syntax error.
pub(crate) const SECRET_WORDS: [&str; 4] = ["secret", "token", "password", "key"];

/// A settings file's syntax error with every value masked on the lines it quotes (`3 | secret_key = ***`): such
/// a value is not known to [`redact`] yet, since the file could not be read, and any line may hold a secret (the
/// second line of a multi-line string, a misspelt key). Keys and table headers stay, to find the line by.
pub(crate) fn mask_assignments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some((number, content)) = line.split_once('|') else { return line.to_owned() };
            if !number.trim().bytes().all(|b| b.is_ascii_digit()) || number.trim().is_empty() {
                return line.to_owned();
            }
            let content = content.trim();
            if content.is_empty() || content.starts_with('[') {
                return line.to_owned();
            }
            // Only a bare key is kept: text before an `=` that is no key (a secret holding `=`) is masked too.
            let bare = |key: &str| key.chars().all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c));
            match content.split_once('=') {
                Some((key, _)) if bare(key) => format!("{number}| {} = {MASK}", key.trim()),
                _ => format!("{number}| {MASK}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_known_secret_is_scrubbed() {
        let secret = Secret::from("wJalr/XUtnFEMI+K7MDENG=");
        let encoded = "wJalr%2FXUtnFEMI%2BK7MDENG%3D";
        let text = format!("header {} and query X-Amz-Security-Token={encoded}", secret.expose());
        assert_eq!(redact(&text), "header *** and query X-Amz-Security-Token=***");
        assert_eq!(redact("nothing secret here"), "nothing secret here");
        // Too short to scrub without mangling ordinary text.
        let _short = Secret::from("ab");
        assert_eq!(redact("about"), "about");
    }

    #[test]
    fn syntax_errors_show_no_value() {
        let error = "TOML parse error at line 3\n  |\n3 | secret_key = \"SUPER\" x\n  |     ^\nexpected newline";
        let masked = mask_assignments(error);
        assert!(!masked.contains("SUPER"), "{masked}");
        assert!(masked.contains("3 | secret_key = ***"), "{masked}");
        assert!(masked.contains("expected newline"), "{masked}");
        // The second line of a multi-line string, a misspelt key: masked all the same.
        assert_eq!(mask_assignments("4 | wJalrXUtnFEMI\"x"), "4 | ***");
        assert_eq!(mask_assignments("2 | security_tokn = \"FQoG\" x"), "2 | security_tokn = ***");
        assert_eq!(mask_assignments("1 | [storages.default"), "1 | [storages.default");
        assert_eq!(mask_assignments("4 | \"wJal/r+K=Value x"), "4 | ***", "text before an `=` that is no key");
        assert_eq!(mask_assignments("invalid key"), "invalid key");
    }
}
