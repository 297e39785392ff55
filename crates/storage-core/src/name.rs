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

/// The names a save tries in order: `name` itself, then its alternatives under `policy`, each at most
/// `max_length` characters (Django's `get_available_name`).
///
/// An alternative longer than `max_length` has its stem truncated to fit, as Django does: `tests/filename.ext`
/// at 20 characters gives `tests/fi_a1B2c3D.ext` with the random scheme. `name` itself comes first only when it
/// fits. The names end when the stem would be truncated away (the save then fails with
/// [`Error::NoAvailableName`], in Django's words), after [`MAX_NAME_ATTEMPTS`] names, or when the next one would
/// exceed [`MAX_NAME_LEN`].
///
/// The random scheme keeps every suffix as Django does (`archive.tar.gz` → `archive_a1B2c3D.tar.gz`); the
/// underscore scheme of the original django-storages keeps the last one (`archive.tar_.gz`).
///
/// ```
/// use storage_core::{candidate_names, AlternativeNames};
///
/// let names: Vec<String> = candidate_names("tests/django_test.txt", AlternativeNames::Underscore, None).take(3).collect();
/// assert_eq!(names, ["tests/django_test.txt", "tests/django_test_.txt", "tests/django_test__.txt"]);
/// let names: Vec<String> = candidate_names("tests/filename.ext", AlternativeNames::Random, Some(20)).take(2).collect();
/// assert_eq!(names[0], "tests/filename.ext");
/// assert!(names[1].starts_with("tests/fi_") && names[1].ends_with(".ext") && names[1].chars().count() == 20);
/// ```
pub fn candidate_names(
    name: &str,
    policy: AlternativeNames,
    max_length: Option<usize>,
) -> impl Iterator<Item = String> + Send + 'static {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (name[..=i].to_owned(), &name[i + 1..]),
        None => (String::new(), name),
    };
    let (root, ext) = match policy {
        AlternativeNames::Underscore => split_last_extension(file),
        AlternativeNames::Random => split_suffixes(file),
    };
    let (root, ext) = (root.to_owned(), ext.to_owned());
    let fits = |candidate: &str| max_length.is_none_or(|max| candidate.chars().count() <= max);
    let first = fits(name).then(|| name.to_owned());
    let mut root: Vec<char> = root.chars().collect();
    let alternatives = (1..MAX_NAME_ATTEMPTS).map_while(move |attempt| {
        let alternative = |root: &[char]| {
            let root: String = root.iter().collect();
            match policy {
                AlternativeNames::Underscore => format!("{dir}{root}{}{ext}", "_".repeat(attempt)),
                AlternativeNames::Random => format!("{dir}{root}_{}{ext}", random_suffix()),
            }
        };
        let mut candidate = alternative(&root);
        if let Some(max) = max_length {
            let over = candidate.chars().count().saturating_sub(max);
            if over > 0 {
                // Django truncates the stem for good, so later alternatives keep the shorter stem.
                root.truncate(root.len().saturating_sub(over));
                if root.is_empty() {
                    return None;
                }
                candidate = alternative(&root);
            }
        }
        Some(candidate)
    });
    first.into_iter().chain(alternatives).take_while(|candidate| candidate.len() <= MAX_NAME_LEN)
}

/// `name` shortened in its stem to at most `max_length` characters, for a storage that overwrites
/// (django-storages' `get_available_overwrite_name`): `parent/child.txt` at 15 is `parent/chil.txt`. `None` when
/// the directory and extension alone are too long.
///
/// ```
/// assert_eq!(storage_core::truncate_name("parent/child.txt", 15).as_deref(), Some("parent/chil.txt"));
/// assert_eq!(storage_core::truncate_name("parent/child.txt", 11), None);
/// ```
pub fn truncate_name(name: &str, max_length: usize) -> Option<String> {
    let over = name.chars().count().saturating_sub(max_length);
    if over == 0 {
        return Some(name.to_owned());
    }
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(dir, file)| (dir, file));
    let (root, ext) = split_last_extension(file);
    let kept = root.chars().count().checked_sub(over).filter(|&kept| kept > 0)?;
    let root: String = root.chars().take(kept).collect();
    Some(if dir.is_empty() { format!("{root}{ext}") } else { format!("{dir}/{root}{ext}") })
}

/// Python's `os.path.splitext`: the extension starts at the last dot that is not a leading one.
fn split_last_extension(file: &str) -> (&str, &str) {
    let stem_start = file.len() - file.trim_start_matches('.').len();
    match file[stem_start..].rfind('.') {
        Some(i) => file.split_at(stem_start + i),
        None => (file, ""),
    }
}

/// Django's `"".join(PurePath(file).suffixes)`: every suffix after the first dot that is not a leading one; none
/// when the name ends with a dot.
fn split_suffixes(file: &str) -> (&str, &str) {
    if file.ends_with('.') {
        return (file, "");
    }
    let stem_start = file.len() - file.trim_start_matches('.').len();
    match file[stem_start..].find('.') {
        Some(i) => file.split_at(stem_start + i),
        None => (file, ""),
    }
}

fn random_suffix() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(7).collect()
}

/// The content type of a file called `name`, guessed from its extension; `application/octet-stream` when there
/// is none or it is unknown.
///
/// ```
/// assert_eq!(storage_core::guess_content_type("css/app.css"), "text/css");
/// assert_eq!(storage_core::guess_content_type("README"), "application/octet-stream");
/// ```
pub fn guess_content_type(name: &str) -> String {
    mime_guess::from_path(name).first_or_octet_stream().to_string()
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
        let names: Vec<_> = candidate_names("a.b/.hidden", AlternativeNames::Underscore, None).take(2).collect();
        assert_eq!(names, ["a.b/.hidden", "a.b/.hidden_"]);
        let names: Vec<_> = candidate_names("x.tar.gz", AlternativeNames::Underscore, None).take(2).collect();
        assert_eq!(names, ["x.tar.gz", "x.tar_.gz"]);
        let names: Vec<_> = candidate_names("..x.txt", AlternativeNames::Underscore, None).take(2).collect();
        assert_eq!(names, ["..x.txt", "..x_.txt"]);
    }

    #[test]
    fn random_alternatives_have_seven_characters() {
        let names: Vec<_> = candidate_names("d/f.txt", AlternativeNames::Random, None).take(50).collect();
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
        assert_eq!(candidate_names(&name, AlternativeNames::Underscore, None).count(), 3);
    }

    #[test]
    fn random_alternatives_keep_every_suffix_as_django() {
        for (name, stem, ext) in [
            ("archive.tar.gz", "archive_", ".tar.gz"),
            ("d/.hidden", "d/.hidden_", ""),
            ("d/.hidden.txt", "d/.hidden_", ".txt"),
            ("trailing.", "trailing._", ""),
            ("plain", "plain_", ""),
        ] {
            let alternative = candidate_names(name, AlternativeNames::Random, None).nth(1).expect("an alternative");
            let suffix = alternative.strip_prefix(stem).and_then(|s| s.strip_suffix(ext)).expect(&alternative);
            assert_eq!(suffix.len(), 7, "{name} -> {alternative}");
        }
    }

    #[test]
    fn alternatives_are_truncated_to_max_length_as_django() {
        // Django's test_get_available_name_max_length shapes: the stem gives way, the extension stays.
        let names: Vec<_> = candidate_names("tests/filename.ext", AlternativeNames::Random, Some(20)).take(5).collect();
        assert_eq!(names[0], "tests/filename.ext");
        for alternative in &names[1..] {
            assert!(alternative.starts_with("tests/fi_") && alternative.ends_with(".ext"), "{alternative}");
            assert_eq!(alternative.chars().count(), 20);
        }
        // A name longer than max_length is never tried itself.
        let names: Vec<_> =
            candidate_names("tests/filename.ext", AlternativeNames::Underscore, Some(17)).take(2).collect();
        assert_eq!(names, ["tests/filena_.ext", "tests/filen__.ext"]);
        let names: Vec<_> = candidate_names("tests/filename.ext", AlternativeNames::Random, Some(19)).take(2).collect();
        assert!(names[1].starts_with("tests/f_") && names[1].len() == 19, "{names:?}");
        // Underscores grow, so the stem shrinks by one at each attempt, until it is gone.
        let names: Vec<_> = candidate_names("d/abc.txt", AlternativeNames::Underscore, Some(9)).collect();
        assert_eq!(names, ["d/abc.txt", "d/ab_.txt", "d/a__.txt"]);
        // Nothing fits: no candidate at all.
        assert_eq!(candidate_names("tests/filename.ext", AlternativeNames::Random, Some(14)).count(), 0);
        // Characters, not bytes, as Python's len.
        let names: Vec<_> = candidate_names("ü/ääää.txt", AlternativeNames::Underscore, Some(10)).take(2).collect();
        assert_eq!(names, ["ü/ääää.txt", "ü/äää_.txt"]);
    }

    #[test]
    fn an_overwritten_name_is_truncated_in_its_stem() {
        assert_eq!(truncate_name("parent/child.txt", 16).as_deref(), Some("parent/child.txt"));
        assert_eq!(truncate_name("parent/child.txt", 15).as_deref(), Some("parent/chil.txt"));
        assert_eq!(truncate_name("parent/child.txt", 12).as_deref(), Some("parent/c.txt"));
        assert_eq!(truncate_name("parent/child.txt", 11), None);
        assert_eq!(truncate_name("a.tar.gz", 7).as_deref(), Some("a.ta.gz"));
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
