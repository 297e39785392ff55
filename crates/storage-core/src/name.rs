//! Name rules, alternative names and Django's file-name cleaning.

use crate::error::{Error, NameRule, Result};
use serde::{Deserialize, Serialize};

/// The longest name a storage accepts, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Checks `name` against the name rules every storage shares.
///
/// Names are relative, `/`-separated, with no empty, `.` or `..` segments, no backslash, no NUL or other control
/// character, and at most [`MAX_NAME_LEN`] bytes.
///
/// ```
/// use storage_core::{validate_name, NameRule};
///
/// assert!(validate_name("tests/django_test.txt").is_ok());
/// assert_eq!(validate_name("../etc/passwd"), Err(NameRule::ParentSegment));
/// assert_eq!(validate_name("/etc/passwd"), Err(NameRule::Absolute));
/// ```
pub fn validate_name(name: &str) -> Result<(), NameRule> {
    if name.is_empty() {
        return Err(NameRule::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameRule::TooLong);
    }
    if name.starts_with('/') {
        return Err(NameRule::Absolute);
    }
    if name.contains('\\') {
        return Err(NameRule::Backslash);
    }
    if name.contains('\0') {
        return Err(NameRule::Nul);
    }
    if name.chars().any(char::is_control) {
        return Err(NameRule::ControlCharacter);
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err(NameRule::EmptySegment),
            "." => return Err(NameRule::CurrentSegment),
            ".." => return Err(NameRule::ParentSegment),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a directory path given to `listdir`: empty means the root, otherwise the name rules apply
/// (a trailing `/` is allowed).
pub(crate) fn validate_dir(path: &str) -> Result<String, NameRule> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok(String::new());
    }
    validate_name(path)?;
    Ok(path.to_owned())
}

/// How a storage picks another name when the one asked for is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlternativeNames {
    /// `django_test.txt` -> `django_test_.txt` -> `django_test__.txt`, as in the original django-storages session.
    #[default]
    Underscore,
    /// `django_test.txt` -> `django_test_a1B2c3D.txt`: a 7-character random suffix, Django's modern behaviour.
    Random,
}

/// The most candidates [`candidate_names`] yields before a save gives up with [`Error::NoAvailableName`].
pub const MAX_NAME_ATTEMPTS: usize = 1000;

/// The names a save tries in order: `name` itself, then its alternatives under `policy`.
///
/// Yields at most [`MAX_NAME_ATTEMPTS`] names and stops early when the next one would exceed [`MAX_NAME_LEN`].
///
/// ```
/// use storage_core::{candidate_names, AlternativeNames};
///
/// let names: Vec<String> = candidate_names("tests/django_test.txt", AlternativeNames::Underscore).take(3).collect();
/// assert_eq!(names, ["tests/django_test.txt", "tests/django_test_.txt", "tests/django_test__.txt"]);
/// ```
pub fn candidate_names(name: &str, policy: AlternativeNames) -> impl Iterator<Item = String> + Send + 'static {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (name[..=i].to_owned(), &name[i + 1..]),
        None => (String::new(), name),
    };
    // Like Python's os.path.splitext: the extension starts at the last dot that is not the first character.
    let (root, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (file[..i].to_owned(), file[i..].to_owned()),
        _ => (file.to_owned(), String::new()),
    };
    let first = name.to_owned();
    (0..MAX_NAME_ATTEMPTS)
        .map(move |attempt| match (attempt, policy) {
            (0, _) => first.clone(),
            (n, AlternativeNames::Underscore) => format!("{dir}{root}{}{ext}", "_".repeat(n)),
            (_, AlternativeNames::Random) => format!("{dir}{root}_{}{ext}", random_suffix()),
        })
        .take_while(|candidate| candidate.len() <= MAX_NAME_LEN)
}

fn random_suffix() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(7).collect()
}

/// Django's `get_valid_filename`: trims, turns spaces into `_` and drops every character that is not a letter,
/// digit, `-`, `_` or `.`.
///
/// ```
/// assert_eq!(storage_core::get_valid_name("test with space.txt").unwrap(), "test_with_space.txt");
/// assert!(storage_core::get_valid_name("???").is_err());
/// ```
pub fn get_valid_name(name: &str) -> Result<String, String> {
    let cleaned: String =
        name.trim().replace(' ', "_").chars().filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    match cleaned.as_str() {
        "" | "." | ".." => Err(format!("Could not derive file name from '{name}'")),
        _ => Ok(cleaned),
    }
}

/// Django's `validate_file_name` and `Storage.generate_filename`: refuses a name without a file part or with a
/// `..` segment, keeps the directory part, cleans the file part with [`get_valid_name`] and checks the result
/// against the name rules.
pub(crate) fn generate_filename(storage: &str, name: &str) -> Result<String> {
    let suspicious = |message: String| Error::SuspiciousOperation { storage: storage.into(), message };
    let (dir, file) = match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    };
    if matches!(file, "" | "." | "..") {
        return Err(suspicious(format!("Could not derive file name from '{name}'")));
    }
    if name.starts_with('/') || name.split('/').any(|segment| segment == "..") {
        return Err(suspicious(format!("Detected path traversal attempt in '{name}'")));
    }
    let file = get_valid_name(file).map_err(suspicious)?;
    // normpath: drop empty and '.' segments of the directory.
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    parts.push(&file);
    let joined = parts.join("/");
    validate_name(&joined).map_err(|rule| Error::SuspiciousName {
        storage: storage.into(),
        name: joined.clone(),
        rule,
    })?;
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_each_rule() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let cases = [
            ("", NameRule::Empty),
            ("/abs", NameRule::Absolute),
            ("a/../b", NameRule::ParentSegment),
            ("..", NameRule::ParentSegment),
            ("./a", NameRule::CurrentSegment),
            ("a//b", NameRule::EmptySegment),
            ("a/", NameRule::EmptySegment),
            ("a\\b", NameRule::Backslash),
            ("a\0b", NameRule::Nul),
            ("a\nb", NameRule::ControlCharacter),
            (long.as_str(), NameRule::TooLong),
        ];
        for (name, rule) in cases {
            assert_eq!(validate_name(name), Err(rule), "{name:?}");
        }
        assert_eq!(validate_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
        assert_eq!(validate_name("dir/ü n i.c.o.d.e"), Ok(()));
        assert_eq!(validate_name("..."), Ok(()));
    }

    #[test]
    fn underscore_alternatives_keep_the_extension() {
        let names: Vec<_> = candidate_names("a.b/.hidden", AlternativeNames::Underscore).take(2).collect();
        assert_eq!(names, ["a.b/.hidden", "a.b/.hidden_"]);
        let names: Vec<_> = candidate_names("x.tar.gz", AlternativeNames::Underscore).take(2).collect();
        assert_eq!(names, ["x.tar.gz", "x.tar_.gz"]);
    }

    #[test]
    fn random_alternatives_have_seven_characters() {
        let names: Vec<_> = candidate_names("d/f.txt", AlternativeNames::Random).take(50).collect();
        assert_eq!(names[0], "d/f.txt");
        for n in &names[1..] {
            let suffix = n.strip_prefix("d/f_").and_then(|s| s.strip_suffix(".txt")).expect("shape");
            assert_eq!(suffix.len(), 7);
            assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
    }

    #[test]
    fn alternatives_stop_at_the_length_limit() {
        let name = format!("{}.txt", "a".repeat(MAX_NAME_LEN - 6));
        assert_eq!(candidate_names(&name, AlternativeNames::Underscore).count(), 3);
    }

    #[test]
    fn generate_filename_is_djangos() {
        assert_eq!(
            generate_filename("s", "some/folder/test with space.txt").unwrap(),
            "some/folder/test_with_space.txt"
        );
        let err = generate_filename("s", "some/folder/../path").unwrap_err().to_string();
        assert!(err.contains("Detected path traversal attempt in 'some/folder/../path'"), "{err}");
        let err = generate_filename("s", "/etc/passwd").unwrap_err().to_string();
        assert!(err.contains("Detected path traversal attempt in '/etc/passwd'"), "{err}");
        let err = generate_filename("s", "..").unwrap_err().to_string();
        assert!(err.contains("Could not derive file name from '..'"), "{err}");
        let err = generate_filename("s", "some/folder/???").unwrap_err().to_string();
        assert!(err.contains("Could not derive file name from '???'"), "{err}");
    }
}
