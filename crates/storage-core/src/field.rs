//! Django's model file fields: [`FileField`] describes where a model's files go, [`FieldFile`] is the file a
//! model instance holds.

use crate::content::{Content, StoredFile};
use crate::error::{Error, Result};
use crate::registry::Storages;
use crate::storage::{SaveOptions, Storage, check_name};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// The function form of `upload_to`: given the owner (a model of type `O`) and the uploaded file's name, the
/// name to store under.
pub type UploadToFn<O> = Arc<dyn Fn(&O, &str) -> String + Send + Sync>;

/// Where a field's uploads go, as Django's `upload_to`.
pub enum UploadTo<O = ()> {
    /// A directory, possibly a `strftime` pattern (`photos/%Y/%m/%d`, in UTC, as chrono formats it): the file
    /// goes inside it.
    Path(String),
    /// A function of the owner and the file name that returns the whole name; called once per save.
    Function(UploadToFn<O>),
}

impl<O> Clone for UploadTo<O> {
    fn clone(&self) -> Self {
        match self {
            UploadTo::Path(path) => UploadTo::Path(path.clone()),
            UploadTo::Function(f) => UploadTo::Function(f.clone()),
        }
    }
}

impl<O> fmt::Debug for UploadTo<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadTo::Path(path) => f.debug_tuple("Path").field(path).finish(),
            UploadTo::Function(_) => f.write_str("Function(..)"),
        }
    }
}

/// A file field of models of type `O` (`()` when `upload_to` needs no owner): its attribute name, where uploads
/// go, the storage alias, a default file and the longest name.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use storage_core::{FileField, InMemoryStorage, Storage};
///
/// struct User { id: u32 }
///
/// let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::with_alias("default"));
/// let avatar = FileField::new("avatar", "default").upload_to_fn(|user: &User, name| format!("users/{}/{name}", user.id));
/// let mut file = avatar.file(storage.clone())?;
/// assert_eq!(file.size().await.unwrap_err().to_string(), "The 'avatar' attribute has no file associated with it.");
/// assert_eq!(file.to_string(), "", "an empty file shows as Django's empty name");
///
/// file.save(&User { id: 7 }, "me.png", "content".into()).await?;
/// assert_eq!(file.name(), Some("users/7/me.png"));
/// assert_eq!(file.size().await?, 7);
///
/// // A file of another storage than the field's is refused.
/// let other: Arc<dyn Storage> = Arc::new(InMemoryStorage::with_alias("media"));
/// assert!(avatar.file(other).is_err());
/// # Ok::<_, storage_core::Error>(()) }).unwrap();
/// ```
pub struct FileField<O = ()> {
    /// The attribute name, as errors name it (`normal`).
    pub attribute: String,
    /// Where uploads go.
    pub upload_to: UploadTo<O>,
    /// The alias of the storage files live in.
    pub storage: String,
    /// The name of a file every owner starts with; owner deletion never deletes it.
    pub default: Option<String>,
    /// The longest stored name, in characters (Django's `max_length`, 100 by default): a longer alternative name
    /// is truncated in its stem to fit (see [`SaveOptions::max_length`]).
    pub max_length: usize,
}

impl<O> Clone for FileField<O> {
    fn clone(&self) -> Self {
        FileField {
            attribute: self.attribute.clone(),
            upload_to: self.upload_to.clone(),
            storage: self.storage.clone(),
            default: self.default.clone(),
            max_length: self.max_length,
        }
    }
}

impl<O> fmt::Debug for FileField<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileField")
            .field("attribute", &self.attribute)
            .field("upload_to", &self.upload_to)
            .field("storage", &self.storage)
            .field("default", &self.default)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl FileField {
    /// A field stored in the storage `alias`, with uploads in the storage's root; its owner type is `()` until
    /// [`FileField::upload_to_fn`] names one.
    pub fn new(attribute: &str, storage: &str) -> Self {
        FileField {
            attribute: attribute.into(),
            upload_to: UploadTo::Path(String::new()),
            storage: storage.into(),
            default: None,
            max_length: 100,
        }
    }
}

impl<O: 'static> FileField<O> {
    /// Stored names are at most `max_length` characters long.
    pub fn max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// Uploads go into `path` (a directory or a `strftime` pattern).
    pub fn upload_to(mut self, path: &str) -> Self {
        self.upload_to = UploadTo::Path(path.into());
        self
    }

    /// Uploads are named by `f(owner, file name)`, the owner a model of type `P`.
    pub fn upload_to_fn<P>(self, f: impl Fn(&P, &str) -> String + Send + Sync + 'static) -> FileField<P> {
        FileField {
            attribute: self.attribute,
            upload_to: UploadTo::Function(Arc::new(f)),
            storage: self.storage,
            default: self.default,
            max_length: self.max_length,
        }
    }

    /// Owners start with the file `name`.
    pub fn default(mut self, name: &str) -> Self {
        self.default = Some(name.into());
        self
    }

    /// A new owner's file: the default, or none, in `storage`, which must be the storage of this field's alias.
    pub fn file(&self, storage: Arc<dyn Storage>) -> Result<FieldFile<O>> {
        self.file_named(storage, self.default.clone())
    }

    /// An owner's file as the application stored it (the name from its database, or none), in `storage`, which
    /// must be the storage of this field's alias.
    pub fn file_named(&self, storage: Arc<dyn Storage>, name: Option<String>) -> Result<FieldFile<O>> {
        self.check_storage(storage.alias())?;
        Ok(FieldFile {
            attribute: self.attribute.clone(),
            storage_alias: self.storage.clone(),
            name,
            storage: Some(storage),
            field: Some(Arc::new(self.clone())),
        })
    }

    /// Gives `file` (deserialized, say) this field back, so that it can save: it must be a file of this
    /// field's attribute and storage.
    pub fn attach(&self, file: &mut FieldFile<O>) -> Result<()> {
        self.check_storage(&file.storage_alias)?;
        if let Some(storage) = &file.storage {
            self.check_storage(storage.alias())?;
        }
        if file.attribute != self.attribute {
            let message =
                format!("a file of the field '{}' cannot take the field '{}'", file.attribute, self.attribute);
            return Err(Error::SuspiciousOperation { storage: self.storage.clone(), message });
        }
        file.field = Some(Arc::new(self.clone()));
        Ok(())
    }

    fn check_storage(&self, alias: &str) -> Result<()> {
        if alias == self.storage {
            return Ok(());
        }
        let message =
            format!("the field '{}' stores in storage '{}', not in storage '{alias}'", self.attribute, self.storage);
        Err(Error::SuspiciousOperation { storage: alias.into(), message })
    }

    /// Django's `FileField.generate_filename`: `upload_to` evaluated once, then the storage's cleaning
    /// ([`Storage::generate_filename`]).
    pub fn generate_filename(&self, storage: &dyn Storage, owner: &O, filename: &str) -> Result<String> {
        let name = match &self.upload_to {
            UploadTo::Function(f) => f(owner, filename),
            UploadTo::Path(pattern) => {
                let dir = strftime(pattern, SystemTime::now())
                    .map_err(|message| Error::SuspiciousOperation { storage: storage.alias().into(), message })?;
                match dir.trim_end_matches('/') {
                    "" => filename.to_owned(),
                    dir => format!("{dir}/{filename}"),
                }
            }
        };
        storage.generate_filename(&name)
    }
}

/// A model instance's file: a name, or none, in the storage its field names.
///
/// It serializes as its attribute, storage alias and name; deserialized, it finds its storage again by alias,
/// in the [`Storages`] given to [`FieldFile::bind`] or else in [`Storages::global`], and its field (to save)
/// through [`FileField::attach`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FieldFile<O = ()> {
    attribute: String,
    storage_alias: String,
    name: Option<String>,
    #[serde(skip)]
    storage: Option<Arc<dyn Storage>>,
    #[serde(skip)]
    field: Option<Arc<FileField<O>>>,
}

impl<O> Clone for FieldFile<O> {
    fn clone(&self) -> Self {
        FieldFile {
            attribute: self.attribute.clone(),
            storage_alias: self.storage_alias.clone(),
            name: self.name.clone(),
            storage: self.storage.clone(),
            field: self.field.clone(),
        }
    }
}

impl<O: 'static> FieldFile<O> {
    /// The stored name, if the owner has a file.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The field's attribute name.
    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    /// The alias of the storage the file lives in.
    pub fn storage_alias(&self) -> &str {
        &self.storage_alias
    }

    /// Finds the storage again by alias in `storages` (after deserialization, say).
    pub fn bind(&mut self, storages: &Storages) -> Result<()> {
        self.storage = Some(storages.get(&self.storage_alias)?);
        Ok(())
    }

    /// The storage: the bound one, or the global storages' storage of this alias.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        match &self.storage {
            Some(storage) => Ok(storage.clone()),
            None => Storages::global()?.get(&self.storage_alias),
        }
    }

    fn require_name(&self) -> Result<&str> {
        self.name.as_deref().ok_or_else(|| Error::NoFile { attribute: self.attribute.clone() })
    }

    /// The file's size.
    pub async fn size(&self) -> Result<u64> {
        let name = self.require_name()?;
        self.storage()?.size(name).await
    }

    /// Opens the file.
    pub async fn open(&self) -> Result<StoredFile> {
        let name = self.require_name()?;
        self.storage()?.open(name).await
    }

    /// The whole content.
    pub async fn read(&self) -> Result<Bytes> {
        self.open().await?.read_all().await
    }

    /// The content in chunks of `chunk_size` bytes (see [`StoredFile::chunks`]).
    pub async fn chunks(&self, chunk_size: usize) -> Result<BoxStream<'static, Result<Bytes>>> {
        Ok(self.open().await?.chunks(chunk_size))
    }

    /// The file's URL.
    pub async fn url(&self) -> Result<String> {
        let name = self.require_name()?;
        self.storage()?.url(name).await
    }

    /// Stores `content` as the upload `name` of `owner`: under its field's `upload_to` (evaluated once),
    /// cleaned, and under an alternative name if that is taken, within the field's `max_length`; records the
    /// final name, once checked against the name rules.
    pub async fn save(&mut self, owner: &O, name: &str, content: Content) -> Result<()> {
        let Some(field) = self.field.clone() else {
            let message = format!(
                "this '{}' file has no field to save with (it was deserialized): FileField::attach gives it one",
                self.attribute
            );
            return Err(Error::SuspiciousOperation { storage: self.storage_alias.clone(), message });
        };
        let storage = self.storage()?;
        let target = field.generate_filename(&*storage, owner, name)?;
        let options = SaveOptions::new().max_length(field.max_length);
        let stored = storage.save_with(&target, content, &options).await?;
        check_name(storage.alias(), &stored)?;
        self.name = Some(stored);
        Ok(())
    }

    /// Deletes the file and forgets its name; nothing happens without a file.
    pub async fn delete(&mut self) -> Result<()> {
        if let Some(name) = &self.name {
            self.storage()?.delete(name).await?;
            self.name = None;
        }
        Ok(())
    }
}

/// The name, as Django's `str(file)`: empty when there is no file.
impl<O> fmt::Display for FieldFile<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_deref().unwrap_or(""))
    }
}

/// Django's `repr`: `<FieldFile: tests/django_test.txt>`, or `<FieldFile: None>`.
impl<O> fmt::Debug for FieldFile<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<FieldFile: {}>", self.name.as_deref().unwrap_or("None"))
    }
}

impl<O> PartialEq for FieldFile<O> {
    fn eq(&self, other: &Self) -> bool {
        (&self.attribute, &self.storage_alias, &self.name) == (&other.attribute, &other.storage_alias, &other.name)
    }
}

/// Which owners refer to which files: what an application keeps in its database. [`delete_owner_file`] asks it
/// before deleting a file an owner no longer needs. The question and the deletion are two steps, as in Django:
/// an application that may add references concurrently should delete owners inside a transaction that locks the
/// rows referring to the name.
#[async_trait]
pub trait FileReferences<O: 'static = ()>: Send + Sync {
    /// Whether an owner other than `except_owner` refers to `name` through `field`.
    async fn is_referenced(&self, field: &FileField<O>, name: &str, except_owner: &str) -> Result<bool>;
}

/// Deletes the file `owner` holds in `file` when the owner goes, unless another owner still refers to it or it
/// is the field's default; returns whether it was deleted.
pub async fn delete_owner_file<O: 'static>(
    field: &FileField<O>,
    file: &mut FieldFile<O>,
    owner: &str,
    references: &dyn FileReferences<O>,
) -> Result<bool> {
    let Some(name) = file.name.clone() else { return Ok(false) };
    if field.default.as_deref() == Some(name.as_str()) || references.is_referenced(field, &name, owner).await? {
        return Ok(false);
    }
    file.delete().await?;
    Ok(true)
}

/// Formats `time` (UTC) with the `strftime` directives of `pattern`, as Django's `upload_to` does; a directive
/// chrono does not know is an error naming the pattern.
fn strftime(pattern: &str, time: SystemTime) -> Result<String, String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(pattern).any(|item| item == Item::Error) {
        return Err(format!("upload_to {pattern:?}: a % starts no strftime directive chrono knows (%Y %m %d %H ...)"));
    }
    let time: chrono::DateTime<chrono::Utc> = time.into();
    Ok(time.format(pattern).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn upload_names_are_cleaned_like_djangos() {
        let storage = crate::InMemoryStorage::with_alias("default");
        let field = FileField::new("normal", "default").upload_to("some/folder/");
        let name = |upload: &str| field.generate_filename(&storage, &(), upload).map_err(|e| e.to_string());
        assert_eq!(name("test with space.txt").unwrap(), "some/folder/test_with_space.txt");
        assert!(name("..").unwrap_err().contains("Could not derive file name from 'some/folder/..'"));
        assert!(name("???").unwrap_err().contains("Could not derive file name from '???'"));
        assert!(name("../path").unwrap_err().contains("Detected path traversal attempt in 'some/folder/../path'"));

        let dated = FileField::new("photo", "default").upload_to("photos/%Y/%m");
        // The year before and after the call: a new year may begin in between.
        let before = strftime("%Y", SystemTime::now()).unwrap();
        let stored = dated.generate_filename(&storage, &(), "a.jpg").unwrap();
        let after = strftime("%Y", SystemTime::now()).unwrap();
        let in_year = |year: &str| stored.starts_with(&format!("photos/{year}/"));
        assert!((in_year(&before) || in_year(&after)) && stored.ends_with("/a.jpg"), "{stored}");

        let by_owner =
            FileField::new("avatar", "default").upload_to_fn(|id: &u32, filename| format!("users/{id}/{filename}"));
        assert_eq!(by_owner.generate_filename(&storage, &7u32, "me.png").unwrap(), "users/7/me.png");
    }

    /// Django's `test_file_truncation`: a field of `max_length = 20` under `tests/`.
    #[tokio::test]
    async fn a_field_truncates_alternative_names_to_its_max_length() {
        let options = crate::MemoryOptions { alternative_names: crate::AlternativeNames::Random, ..Default::default() };
        let storage: Arc<dyn Storage> = Arc::new(crate::InMemoryStorage::with_options("default", options));
        let field = FileField::new("limited_length", "default").upload_to("tests").max_length(20);
        assert_eq!(FileField::new("normal", "default").max_length, 100, "Django's default");
        let (mut first, mut second) =
            (field.file(storage.clone()).expect("file"), field.file(storage.clone()).expect("file"));
        first.save(&(), "filename.ext", "Same Content".into()).await.expect("save");
        second.save(&(), "filename.ext", "Same Content".into()).await.expect("save");
        assert_eq!(first.name(), Some("tests/filename.ext"));
        let truncated = second.name().expect("a name").to_owned();
        let suffix = truncated.strip_prefix("tests/fi_").and_then(|s| s.strip_suffix(".ext")).expect(&truncated);
        assert!(suffix.len() == 7 && suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{truncated}");

        first.save(&(), "short.longext", "Same Content".into()).await.expect("save");
        let error = second.save(&(), "short.longext", "Same Content".into()).await.expect_err("no room");
        assert!(error.to_string().contains("Storage can not find an available filename"), "{error}");
        assert_eq!(second.name(), Some(truncated.as_str()), "a failed save keeps the name the owner had");
    }

    /// A file is made only for its field's storage, saves with the field it was made from, and a deserialized
    /// one saves once its field is attached again.
    #[tokio::test]
    async fn a_field_file_cannot_be_misused() {
        let default: Arc<dyn Storage> = Arc::new(crate::InMemoryStorage::with_alias("default"));
        let media: Arc<dyn Storage> = Arc::new(crate::InMemoryStorage::with_alias("media"));
        let field = FileField::new("normal", "default").upload_to("tests");
        let refused = field.file(media.clone()).expect_err("another storage").to_string();
        assert!(
            refused.contains("the field 'normal' stores in storage 'default', not in storage 'media'"),
            "{refused}"
        );
        assert!(field.file_named(media, Some("tests/a.txt".into())).is_err());

        let mut file = field.file(default.clone()).expect("file");
        assert_eq!((file.to_string(), format!("{file:?}")), (String::new(), "<FieldFile: None>".into()));
        file.save(&(), "a.txt", "x".into()).await.expect("save");
        assert_eq!((file.to_string(), format!("{file:?}")), ("tests/a.txt".into(), "<FieldFile: tests/a.txt>".into()));

        let mut back: FieldFile = serde_json::from_str(&serde_json::to_string(&file).expect("json")).expect("json");
        let storages = crate::Storages::new(crate::Settings::empty());
        storages.insert("default", default);
        back.bind(&storages).expect("bind");
        let unattached = back.save(&(), "b.txt", "y".into()).await.expect_err("no field").to_string();
        assert!(unattached.contains("FileField::attach"), "{unattached}");
        let other = FileField::new("other", "default");
        assert!(other.attach(&mut back).is_err(), "a file of another field");
        field.attach(&mut back).expect("attach");
        back.save(&(), "b.txt", "y".into()).await.expect("save");
        assert_eq!(back.name(), Some("tests/b.txt"));
    }

    #[test]
    fn strftime_knows_the_usual_directives() {
        // 2024-02-29 13:45:07 UTC, a leap day.
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_214_307);
        assert_eq!(strftime("photos/%Y/%m/%d", time).unwrap(), "photos/2024/02/29");
        assert_eq!(strftime("%H%M%S-%j-100%%", time).unwrap(), "134507-060-100%");
        assert_eq!(strftime("tests", time).unwrap(), "tests");
        let error = strftime("x/%Q", time).unwrap_err();
        assert!(error.contains("\"x/%Q\"") && error.contains("strftime directive"), "{error}");
    }
}
