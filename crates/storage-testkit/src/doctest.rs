//! The django-storages doctest session, step by step, each step a property over generated names and contents.
//! Every property first checks the session's own values (`ctx.session_then_property`), then generated ones.

use crate::model::{ModelTable, MyStorage};
use crate::strategies::{Data, blob, data, name, small_blob, upload_name, valid_upload_name};
use crate::{Ctx, OrFail, fresh_dir, remove_tree};
use futures::TryStreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::sync::PoisonError;
use storage_core::{FieldFile, Settings, Storages, candidate_names, delete_owner_file};
use tokio::io::AsyncWriteExt;

/// exists / open('w') / write / close / exists / open('r') / read / delete / exists.
pub(crate) fn storage_file_cycle(ctx: &Ctx) -> Result<(), String> {
    let literal = ("storage_test".to_string(), Data(b"storage contents".to_vec()));
    ctx.session_then_property(literal, (name(), data(blob())), |(name, Data(content))| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            prop_assert!(!s.exists(&target).await.or_fail("exists")?);
            let mut file = s.open_write(&target).await.or_fail("open('w')")?;
            file.write_all(&content).await.or_fail("write")?;
            prop_assert_eq!(file.commit().await.or_fail("close")?, target.clone());
            prop_assert!(s.exists(&target).await.or_fail("exists")?);
            let read = s.open(&target).await.or_fail("open('r')")?.read_all().await.or_fail("read")?;
            prop_assert!(read == content, "read differs from what was written");
            s.delete(&target).await.or_fail("delete")?;
            prop_assert!(!s.exists(&target).await.or_fail("exists")?);
            remove_tree(s, &dir).await
        })
    })
}

/// An object without a file: `size`, `open`, `chunks` and `url` fail with Django's message.
pub(crate) fn empty_field_file(ctx: &Ctx) -> Result<(), String> {
    ctx.session_then_property("normal".to_string(), "[a-z][a-z_]{0,11}", |attribute| {
        ctx.block_on(async {
            let field = storage_core::FileField::new(&attribute, ctx.storage().alias()).upload_to("tests");
            let mut file = field.file(ctx.storage().clone()).or_fail("file")?;
            let expected = format!("The '{attribute}' attribute has no file associated with it.");
            prop_assert_eq!(format!("{file:?}"), "<FieldFile: None>");
            prop_assert_eq!(file.size().await.map_err(|e| e.to_string()), Err(expected.clone()));
            prop_assert_eq!(file.open().await.map(drop).map_err(|e| e.to_string()), Err(expected.clone()));
            prop_assert_eq!(file.chunks(2).await.map(drop).map_err(|e| e.to_string()), Err(expected.clone()));
            prop_assert_eq!(file.url().await.map_err(|e| e.to_string()), Err(expected.clone()));
            file.delete().await.or_fail("delete of an empty FieldFile")?;
            Ok(())
        })
    })
}

/// `'-'.join(chunks(2))` of the content, as the session prints it.
fn dash_joined(chunks: &[bytes::Bytes]) -> Vec<u8> {
    chunks.join(&b'-')
}

/// What Django's `get_valid_name` leaves: letters, digits, `-`, `_` and `.`.
fn is_clean(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Saving enables full functionality: the name under `upload_to`, cleaned; its size; `chunks(2)`.
pub(crate) fn field_file_save(ctx: &Ctx) -> Result<(), String> {
    // The examples of cleaning, then the session's save.
    let examples: [(&str, Result<&str, &str>); 5] = [
        ("test with space.txt", Ok("test_with_space.txt")),
        ("some/folder/test with space.txt", Ok("some/folder/test_with_space.txt")),
        ("???", Err("Could not derive file name from '")),
        ("..", Err("Could not derive file name from '")),
        ("../path", Err("Detected path traversal attempt in '")),
    ];
    for (upload, expected) in examples {
        let dir = fresh_dir();
        let model = MyStorage::new(ctx.storage().alias(), &dir);
        let result = model.normal.generate_filename(&**ctx.storage(), &(), upload).map_err(|e| e.to_string());
        match (result, expected) {
            (Ok(name), Ok(suffix)) if name == format!("{dir}/tests/{suffix}") => {}
            (Err(message), Err(start)) if message.contains(start) => {}
            (got, _) => return Err(format!("the upload {upload:?} gave {got:?}, expected {expected:?}")),
        }
    }
    let literal = ("django_test.txt".to_string(), Data(b"content".to_vec()));
    ctx.session_then_property(literal, (upload_name(), data(blob())), |(upload, Data(content))| {
        ctx.block_on(async {
            let dir = fresh_dir();
            let model = MyStorage::new(ctx.storage().alias(), &dir);
            let mut file = model.normal.file(ctx.storage().clone()).or_fail("file")?;
            let result = file.save(&(), &upload, content.clone().into()).await;
            let (folder, base) = upload.rsplit_once('/').map_or(("", upload.as_str()), |(d, f)| (d, f));
            // Django's rule, stated here on its own: strip, spaces to `_`, keep `[\w.-]`; nothing, `.` or `..` left
            // means the name is refused with Django's message.
            let kept: String =
                base.trim().replace(' ', "_").chars().filter(|c| c.is_alphanumeric() || "-_.".contains(*c)).collect();
            if matches!(kept.as_str(), "" | "." | "..") {
                let message = result.err().map(|e| e.to_string()).unwrap_or_default();
                prop_assert!(message.contains("Could not derive file name from"), "{}", message);
                prop_assert_eq!(file.name(), None);
                return remove_tree(&**ctx.storage(), &dir).await;
            }
            result.or_fail("save")?;
            let stored = file.name().unwrap_or_default().to_owned();
            let prefix = if folder.is_empty() { format!("{dir}/tests/") } else { format!("{dir}/tests/{folder}/") };
            let stored_base = stored.strip_prefix(&prefix).unwrap_or_default();
            prop_assert!(is_clean(stored_base), "{:?} is stored as {:?}", upload, stored);
            if is_clean(base) {
                prop_assert_eq!(stored_base, base, "a clean name is kept as it is");
            }
            prop_assert_eq!(file.size().await.or_fail("size")?, content.len() as u64);
            let chunks: Vec<_> = file.chunks(2).await.or_fail("chunks")?.try_collect().await.or_fail("chunks")?;
            let expected: Vec<bytes::Bytes> = content.chunks(2).map(bytes::Bytes::copy_from_slice).collect();
            prop_assert!(dash_joined(&chunks) == dash_joined(&expected), "'-'.join(chunks(2)) differs");
            if upload == "django_test.txt" && content == b"content" {
                prop_assert_eq!(stored, format!("{dir}/tests/django_test.txt"));
                prop_assert_eq!(dash_joined(&chunks), b"co-nt-en-t".to_vec());
            }
            remove_tree(&**ctx.storage(), &dir).await
        })
    })
}

/// Save another file with the same name: it gets the next alternative name, and the first file is kept.
pub(crate) fn same_name_alternative(ctx: &Ctx) -> Result<(), String> {
    let literal = ("django_test.txt".to_string(), Data(b"content".to_vec()), Data(b"more content".to_vec()));
    let generated = (valid_upload_name(), data(small_blob()), data(small_blob()));
    ctx.session_then_property(literal, generated, |(upload, Data(first), Data(second))| {
        ctx.block_on(async {
            let dir = fresh_dir();
            let model = MyStorage::new(ctx.storage().alias(), &dir);
            let mut obj1 = model.normal.file(ctx.storage().clone()).or_fail("file")?;
            let mut obj2 = model.normal.file(ctx.storage().clone()).or_fail("file")?;
            obj1.save(&(), &upload, first.clone().into()).await.or_fail("save obj1")?;
            obj2.save(&(), &upload, second.clone().into()).await.or_fail("save obj2")?;
            let name1 = obj1.name().unwrap_or_default().to_owned();
            let alternatives: Vec<String> = candidate_names(&name1, ctx.storage().alternative_names(), None).collect();
            let name2 = obj2.name().unwrap_or_default().to_owned();
            match ctx.storage().alternative_names() {
                storage_core::AlternativeNames::Underscore => prop_assert_eq!(&name2, &alternatives[1]),
                storage_core::AlternativeNames::Random => {
                    prop_assert!(crate::storage::is_random_alternative(&name1, &name2), "{} after {}", name2, name1)
                }
            }
            let underscore = ctx.storage().alternative_names() == storage_core::AlternativeNames::Underscore;
            if upload == "django_test.txt" && underscore {
                prop_assert_eq!(name2.clone(), format!("{dir}/tests/django_test_.txt"));
            }
            prop_assert_eq!(obj2.size().await.or_fail("size")?, second.len() as u64);
            prop_assert!(obj1.read().await.or_fail("read obj1")? == first, "the first file changed");
            prop_assert!(obj2.read().await.or_fail("read obj2")? == second);
            remove_tree(&**ctx.storage(), &dir).await
        })
    })
}

/// Push the objects into the cache: a FieldFile serialized (JSON, postcard) and read back works as before,
/// bound to its storage again by alias.
pub(crate) fn serde_round_trip(ctx: &Ctx) -> Result<(), String> {
    ctx.property((valid_upload_name(), small_blob()), |(upload, blob)| {
        ctx.block_on(async {
            let dir = fresh_dir();
            let model = MyStorage::new(ctx.storage().alias(), &dir);
            let mut file = model.normal.file(ctx.storage().clone()).or_fail("file")?;
            let content = blob.bytes();
            file.save(&(), &upload, content.clone().into()).await.or_fail("save")?;
            let storages = Storages::new(Settings::empty());
            storages.insert(ctx.storage().alias(), ctx.storage().clone());
            let json = serde_json::to_string(&file).or_fail("to JSON")?;
            let binary = postcard::to_allocvec(&file).or_fail("to postcard")?;
            let from_json: FieldFile = serde_json::from_str(&json).or_fail("from JSON")?;
            let from_binary: FieldFile = postcard::from_bytes(&binary).or_fail("from postcard")?;
            for mut back in [from_json, from_binary] {
                back.bind(&storages).or_fail("bind")?;
                prop_assert_eq!(&back, &file);
                prop_assert_eq!(format!("{back:?}"), format!("{file:?}"));
                prop_assert!(back.read().await.or_fail("read")? == content, "read after the round trip differs");
                let (url, expected) = (back.url().await.or_fail("url")?, file.url().await.or_fail("url")?);
                crate::storage::same_url(&url, &expected, &content).await?;
            }
            remove_tree(&**ctx.storage(), &dir).await
        })
    })
}

/// Deleting an object deletes the file it uses, if there are no other objects still using that file.
pub(crate) fn owner_delete(ctx: &Ctx) -> Result<(), String> {
    ctx.property((valid_upload_name(), small_blob()), |(upload, blob)| {
        ctx.block_on(async {
            let s = ctx.storage();
            let dir = fresh_dir();
            let model = MyStorage::new(s.alias(), &dir);
            let table = ModelTable::default();
            let field = &model.normal;
            let (mut obj1, mut obj2) = (field.file(s.clone()).or_fail("file")?, field.file(s.clone()).or_fail("file")?);
            obj1.save(&(), &upload, blob.bytes().into()).await.or_fail("save obj1")?;
            obj2.save(&(), &upload, "more content".into()).await.or_fail("save obj2")?;
            table.store("1", &obj1);
            table.store("2", &obj2);
            // A third object shares obj1's file.
            let shared = obj1.clone();
            table.store("3", &shared);
            let (name1, name2) =
                (obj1.name().unwrap_or_default().to_owned(), obj2.name().unwrap_or_default().to_owned());

            prop_assert!(delete_owner_file(field, &mut obj2, "2", &table).await.or_fail("delete obj2")?);
            table.remove("2");
            prop_assert!(!s.exists(&name2).await.or_fail("exists")?, "an unused file was kept");
            prop_assert!(!delete_owner_file(field, &mut obj1, "1", &table).await.or_fail("delete obj1")?);
            table.remove("1");
            prop_assert!(s.exists(&name1).await.or_fail("exists")?, "a file still in use was deleted");

            // obj2 saves again: the freed name is free again.
            let mut obj2 = field.file(s.clone()).or_fail("file")?;
            obj2.save(&(), &upload, "more content".into()).await.or_fail("save obj2 again")?;
            if s.alternative_names() == storage_core::AlternativeNames::Underscore {
                prop_assert_eq!(obj2.name(), Some(name2.as_str()));
            }
            remove_tree(&**s, &dir).await
        })
    })
}

/// Default values allow objects to access a single file, which is not deleted, even when no object uses it.
pub(crate) fn default_survives(ctx: &Ctx) -> Result<(), String> {
    let literal = (Data(b"default content".to_vec()), 1usize);
    ctx.session_then_property(literal, (data(small_blob()), 1usize..4), |(Data(content), owners)| {
        ctx.block_on(async {
            let s = ctx.storage();
            let dir = fresh_dir();
            let model = MyStorage::new(s.alias(), &dir);
            let default_name = model.default.default.clone().unwrap_or_default();
            s.save(&default_name, content.clone().into()).await.or_fail("create the default file")?;
            let table = ModelTable::default();
            let mut files: Vec<(String, FieldFile)> = (0..owners)
                .map(|i| Ok((format!("obj{i}"), model.default.file(s.clone()).or_fail("file")?)))
                .collect::<Result<_, TestCaseError>>()?;
            for (id, file) in &files {
                table.store(id, file);
                prop_assert_eq!(file.name(), Some(default_name.as_str()));
                prop_assert!(file.read().await.or_fail("read")? == content);
            }
            for (id, file) in &mut files {
                let deleted = delete_owner_file(&model.default, file, id, &table).await.or_fail("delete")?;
                prop_assert!(!deleted, "the default file was deleted");
                table.remove(id);
            }
            let obj3 = model.default.file(s.clone()).or_fail("file")?;
            prop_assert!(obj3.read().await.or_fail("read after the delete")? == content, "the default file is gone");
            remove_tree(&**s, &dir).await
        })
    })
}

/// The fix for #5655: `upload_to` is evaluated once per save, and the stored name lies in the directory it gave.
pub(crate) fn upload_to_once(ctx: &Ctx) -> Result<(), String> {
    ctx.session_then_property("random_file".to_string(), valid_upload_name(), |upload| {
        ctx.block_on(async {
            let dir = fresh_dir();
            let model = MyStorage::new(ctx.storage().alias(), &dir);
            let mut obj4 = model.random.file(ctx.storage().clone()).or_fail("file")?;
            obj4.save(&(), &upload, "random content".into()).await.or_fail("save")?;
            let dirs = model.random_dirs.lock().unwrap_or_else(PoisonError::into_inner).clone();
            prop_assert_eq!(dirs.len(), 1, "upload_to was called {} times for one save", dirs.len());
            let name = obj4.name().unwrap_or_default();
            prop_assert!(name.starts_with(&format!("{}/", dirs[0])), "{} is not in {}", name, dirs[0]);
            prop_assert_eq!(obj4.read().await.or_fail("read")?, "random content".as_bytes());
            remove_tree(&**ctx.storage(), &dir).await
        })
    })
}

/// Clean up the temporary files: deleting each FieldFile removes its file and forgets its name.
pub(crate) fn cleanup(ctx: &Ctx) -> Result<(), String> {
    ctx.property(prop::collection::vec(valid_upload_name(), 1..6), |uploads| {
        ctx.block_on(async {
            let s = ctx.storage();
            let dir = fresh_dir();
            let model = MyStorage::new(s.alias(), &dir);
            let mut files = Vec::new();
            for (i, upload) in uploads.iter().enumerate() {
                // Each upload in a folder of its own: `9` and `9/0` cannot both be files where directories are
                // real.
                let mut file = model.normal.file(s.clone()).or_fail("file")?;
                file.save(&(), &format!("u{i}/{upload}"), "x".into()).await.or_fail("save")?;
                files.push(file);
            }
            let mut random = model.random.file(s.clone()).or_fail("file")?;
            random.save(&(), "random_file", "random content".into()).await.or_fail("save")?;
            files.push(random);
            // obj3.default.delete(): an explicit delete removes even the default file.
            let default_name = model.default.default.clone().unwrap_or_default();
            s.save(&default_name, "default content".into()).await.or_fail("create the default file")?;
            files.push(model.default.file(s.clone()).or_fail("file")?);
            for file in &mut files {
                let name = file.name().unwrap_or_default().to_owned();
                file.delete().await.or_fail("delete")?;
                prop_assert_eq!(file.name(), None);
                prop_assert!(!s.exists(&name).await.or_fail("exists")?, "{} is still there", name);
                file.delete().await.or_fail("a second delete")?;
            }
            let (dirs, left) = s.listdir(&dir).await.or_fail("listdir")?;
            prop_assert!(dirs.is_empty() && left.is_empty(), "left behind: {:?} {:?}", dirs, left);
            Ok::<(), TestCaseError>(())
        })
    })
}
