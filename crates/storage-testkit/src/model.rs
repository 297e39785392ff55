//! The doctest's `MyStorage` model, and an owners table an application would keep in its database.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use storage_core::{FieldFile, FileField, FileReferences, Result};

/// The fields of the doctest's `MyStorage` model, under a directory of their own.
#[derive(Debug, Clone)]
pub struct MyStorage {
    /// `normal = FileField(upload_to='tests')`.
    pub normal: FileField,
    /// `default = FileField(upload_to='tests', default='tests/default.txt')`.
    pub default: FileField,
    /// `random = FileField(upload_to=random_upload_to)`: a random directory each time; the directories it gave
    /// are recorded, in order.
    pub random: FileField,
    /// What `random`'s `upload_to` returned, one entry per call.
    pub random_dirs: Arc<Mutex<Vec<String>>>,
}

impl MyStorage {
    /// The model's fields for the storage `alias`, with every name under `dir`.
    pub fn new(alias: &str, dir: &str) -> Self {
        let random_dirs = Arc::new(Mutex::new(Vec::new()));
        let record = random_dirs.clone();
        let base = dir.to_owned();
        MyStorage {
            normal: FileField::new("normal", alias).upload_to(&format!("{dir}/tests")),
            default: FileField::new("default", alias)
                .upload_to(&format!("{dir}/tests"))
                .default(&format!("{dir}/tests/default.txt")),
            random: FileField::new("random", alias).upload_to_fn(move |_owner, filename| {
                let random: String = std::iter::repeat_with(fastrand::alphanumeric).take(8).collect();
                let chosen = format!("{base}/{random}");
                record.lock().unwrap_or_else(PoisonError::into_inner).push(chosen.clone());
                format!("{chosen}/{filename}")
            }),
            random_dirs,
        }
    }
}

/// Owners and the names their fields hold: the in-memory stand-in for a model table. A real application
/// implements [`FileReferences`] with a query such as
/// `SELECT 1 FROM my_storage WHERE normal = $1 AND id <> $2 LIMIT 1`.
#[derive(Debug, Default)]
pub struct ModelTable {
    rows: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl ModelTable {
    /// Records (or updates) owner `id`'s `file`.
    pub fn store(&self, id: &str, file: &FieldFile) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let row = rows.entry(id.into()).or_default();
        match file.name() {
            Some(name) => row.insert(file.attribute().into(), name.into()),
            None => row.remove(file.attribute()),
        };
    }

    /// Forgets owner `id` (after its files were dealt with).
    pub fn remove(&self, id: &str) {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

#[async_trait]
impl FileReferences for ModelTable {
    async fn is_referenced(&self, field: &FileField, name: &str, except_owner: &str) -> Result<bool> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows
            .iter()
            .any(|(id, row)| id != except_owner && row.get(&field.attribute).is_some_and(|held| held == name)))
    }
}
