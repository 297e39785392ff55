//! Generated names and contents.

use proptest::prelude::*;
use std::fmt;

/// Content of a given length, its bytes drawn from a seed: shrinks by length, and prints short.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// The length in bytes.
    pub len: usize,
    /// The seed of the bytes.
    pub seed: u64,
}

impl Blob {
    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        (0..self.len).map(|_| rng.u8(..)).collect()
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob {{ len: {}, seed: {} }}", self.len, self.seed)
    }
}

/// Bytes that print short: as text when they are short text, else as their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.len() <= 64 => write!(f, "{text:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

/// Generated content as [`Data`].
pub(crate) fn data(strategy: impl Strategy<Value = Blob>) -> impl Strategy<Value = Data> {
    strategy.prop_map(|blob| Data(blob.bytes()))
}

/// Contents from empty to 6 MiB, mostly small (large enough to go multipart where the threshold is 5 MiB).
pub(crate) fn blob() -> impl Strategy<Value = Blob> {
    let len = prop_oneof![
        6 => 0usize..=4096,
        3 => 4097usize..=256 * 1024usize,
        1 => 256 * 1024 + 1usize..=6 * 1024 * 1024usize,
    ];
    (len, any::<u64>()).prop_map(|(len, seed)| Blob { len, seed })
}

/// Contents up to 64 KiB, for scenarios that store many.
pub(crate) fn small_blob() -> impl Strategy<Value = Blob> {
    (0usize..=64 * 1024, any::<u64>()).prop_map(|(len, seed)| Blob { len, seed })
}

/// One path segment: letters, digits, spaces, dots, dashes, underscores and some non-ASCII letters.
pub(crate) fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._üé漢-]{1,12}".prop_filter("`.` and `..` are not names", |s| s != "." && s != "..")
}

/// A valid name of one to three segments.
pub(crate) fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..=3).prop_map(|segments| segments.join("/"))
}

/// A file name as a browser uploads it (anything printable, cleaned by the field), sometimes under a folder.
pub(crate) fn upload_name() -> impl Strategy<Value = String> {
    let file = prop_oneof![
        3 => "[a-zA-Z0-9 ._üé漢-]{1,16}",
        1 => "[a-zA-Z0-9 ._?*:<>|\"'üé-]{1,16}",
    ];
    let folder = prop::option::weighted(0.2, "[a-z0-9]{1,6}(/[a-z0-9]{1,6})?");
    (folder, file).prop_map(|(folder, file)| match folder {
        Some(folder) => format!("{folder}/{file}"),
        None => file,
    })
}

/// An upload name that cleans to a file name.
pub(crate) fn valid_upload_name() -> impl Strategy<Value = String> {
    upload_name()
        .prop_filter("cleans to a name", |n| storage_core::get_valid_name(n.rsplit('/').next().unwrap_or(n)).is_ok())
}
