//! What every storage owes, whatever calls it: round trips, exact chunks, listings that agree with a model,
//! idempotent deletes, concurrent saves that keep everything, refused names, and nothing left by a failure.

use crate::strategies::{Blob, blob, name, segment, small_blob};
use crate::{Ctx, OrFail, fresh_dir, leftover_temporary_files, remove_tree};
use futures::TryStreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};
use storage_core::{AlternativeNames, Content, Error, SaveOptions, Storage, candidate_names};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How `round_trip` hands the content over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Bytes,
    Reader,
    LocalFile,
}

fn content_of(source: Source, bytes: &[u8], local: &tempfile::NamedTempFile) -> Result<Content, TestCaseError> {
    Ok(match source {
        Source::Bytes => bytes.to_vec().into(),
        Source::Reader => Content::from_reader(std::io::Cursor::new(bytes.to_vec())),
        Source::LocalFile => {
            std::fs::write(local.path(), bytes).or_fail("write the local file")?;
            Content::from_path(local.path())
        }
    })
}

/// Saved from bytes, a reader or a local file, content reads back whole, through `reader()`, at its size.
pub(crate) fn round_trip(ctx: &Ctx) -> Result<(), String> {
    let source = prop_oneof![Just(Source::Bytes), Just(Source::Reader), Just(Source::LocalFile)];
    ctx.property((name(), blob(), source), |(name, blob, source)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            let bytes = blob.bytes();
            let local = tempfile::NamedTempFile::new().or_fail("local file")?;
            let saved = s.save(&target, content_of(source, &bytes, &local)?).await.or_fail("save")?;
            prop_assert_eq!(&saved, &target, "a free name is kept");
            let file = s.open(&saved).await.or_fail("open")?;
            prop_assert_eq!(file.size(), bytes.len() as u64);
            prop_assert!(file.read_all().await.or_fail("read_all")? == bytes[..], "read_all differs");
            let mut via_reader = Vec::new();
            file.reader().read_to_end(&mut via_reader).await.or_fail("reader")?;
            prop_assert!(via_reader == bytes, "reader() differs");
            remove_tree(s, &dir).await
        })
    })
}

/// `chunks(n)`, for any `n >= 1`, concatenates to the content, every chunk but the last exactly `n` bytes.
pub(crate) fn chunks_exact(ctx: &Ctx) -> Result<(), String> {
    // Chunk sizes: tiny ones often, else anything up to a little past the content.
    let size = prop_oneof![1 => (1usize..=8).prop_map(Err), 3 => any::<prop::sample::Index>().prop_map(Ok)];
    ctx.property((blob(), size), |(blob, size)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let bytes = blob.bytes();
            let n = match size {
                Err(small) => small,
                Ok(index) => 1 + index.index(bytes.len() + 2),
            };
            let name = s.save(&format!("{dir}/chunks.bin"), bytes.clone().into()).await.or_fail("save")?;
            let chunks: Vec<_> =
                s.open(&name).await.or_fail("open")?.chunks(n).try_collect().await.or_fail("chunks")?;
            prop_assert_eq!(chunks.len(), bytes.len().div_ceil(n), "chunk count for n = {}", n);
            if let Some((last, full)) = chunks.split_last() {
                prop_assert!(full.iter().all(|c| c.len() == n), "a chunk before the last is not {} bytes", n);
                prop_assert!(!last.is_empty() && last.len() <= n);
            }
            prop_assert!(chunks.concat() == bytes, "chunks do not concatenate to the content");
            remove_tree(s, &dir).await
        })
    })
}

/// `size` is the length of what was saved; `modified_time` is about now.
pub(crate) fn size_is_length(ctx: &Ctx) -> Result<(), String> {
    ctx.property(blob(), |blob| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let before = std::time::SystemTime::now() - std::time::Duration::from_secs(300);
            let name = s.save(&format!("{dir}/sized"), blob.bytes().into()).await.or_fail("save")?;
            prop_assert_eq!(s.size(&name).await.or_fail("size")?, blob.len as u64);
            prop_assert!(s.modified_time(&name).await.or_fail("modified_time")? >= before);
            remove_tree(s, &dir).await
        })
    })
}

/// `range(a..b)` gives exactly those bytes; past the end is an error.
pub(crate) fn ranges(ctx: &Ctx) -> Result<(), String> {
    let strategy = (blob(), any::<prop::sample::Index>(), any::<prop::sample::Index>());
    ctx.property(strategy, |(blob, a, b)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let bytes = blob.bytes();
            let (a, b) = (a.index(bytes.len() + 1), b.index(bytes.len() + 1));
            let (start, end) = (a.min(b) as u64, a.max(b) as u64);
            let name = s.save(&format!("{dir}/range"), bytes.clone().into()).await.or_fail("save")?;
            let file = s.open(&name).await.or_fail("open")?;
            let got = file.range(start..end).await.or_fail("range")?;
            prop_assert!(got == bytes[start as usize..end as usize], "range {}..{} differs", start, end);
            prop_assert!(file.range(0..bytes.len() as u64 + 1).await.is_err(), "a range past the end must fail");
            remove_tree(s, &dir).await
        })
    })
}

/// Names that collide: some are prefixes of others, so files and directories meet.
fn pool_name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a".to_string()), Just("b c".to_string()), Just("é".to_string())], 1..=3)
        .prop_map(|segments| segments.join("/"))
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Save(String, u8),
    Delete(String),
}

/// The expected storage: files, and the directories that hold them.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, u8>,
}

impl Model {
    fn is_dir(&self, name: &str) -> bool {
        let prefix = format!("{name}/");
        self.files.keys().any(|k| k.starts_with(&prefix))
    }

    /// Checks what a save of `name` gave (`got`: a name, or an error) against a storage with (or without) real
    /// directories and its alternative-name policy, and records it.
    fn save(&mut self, storage: &dyn Storage, name: &str, value: u8, got: Option<String>) -> Result<(), String> {
        let directories = storage.capabilities().directories;
        let blocked = directories && {
            let mut parent = name;
            let mut blocked = false;
            while let Some((dir, _)) = parent.rsplit_once('/') {
                blocked |= self.files.contains_key(dir);
                parent = dir;
            }
            blocked
        };
        let free = |c: &str| !(self.files.contains_key(c) || directories && self.is_dir(c));
        let acceptable = match (&got, blocked) {
            (None, true) => true,
            (Some(_), true) | (None, false) => false,
            (Some(got), false) if free(name) => got == name,
            (Some(got), false) => match storage.alternative_names() {
                AlternativeNames::Underscore => {
                    candidate_names(name, AlternativeNames::Underscore, None).find(|c| free(c)).as_ref() == Some(got)
                }
                AlternativeNames::Random => free(got) && is_random_alternative(name, got),
            },
        };
        if !acceptable {
            return Err(format!("save of {name:?} gave {got:?}"));
        }
        if let Some(got) = got {
            self.files.insert(got, value);
        }
        Ok(())
    }

    fn listing(&self, dir: &str) -> (Vec<String>, Vec<String>) {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let (mut dirs, mut files) = (BTreeSet::new(), Vec::new());
        for key in self.files.keys().filter_map(|k| k.strip_prefix(&prefix)) {
            match key.split_once('/') {
                Some((d, _)) => {
                    dirs.insert(d.to_owned());
                }
                None => files.push(key.to_owned()),
            }
        }
        (dirs.into_iter().collect(), files)
    }

    fn dirs(&self) -> BTreeSet<String> {
        let mut dirs = BTreeSet::from([String::new()]);
        for key in self.files.keys() {
            let mut rest = key.as_str();
            while let Some((dir, _)) = rest.rsplit_once('/') {
                dirs.insert(dir.to_owned());
                rest = dir;
            }
        }
        dirs
    }
}

/// Whether `candidate` is `name` with Django's random suffix: `dir/root_XXXXXXX.ext`.
pub(crate) fn is_random_alternative(name: &str, candidate: &str) -> bool {
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    // Django's `"".join(PurePath(file).suffixes)`: from the first dot after the leading ones; none when the name
    // ends with a dot.
    let leading = file.len() - file.trim_start_matches('.').len();
    let (root, ext) = match file[leading..].find('.') {
        Some(i) if !file.ends_with('.') => file.split_at(leading + i),
        _ => (file, ""),
    };
    let prefix = if dir.is_empty() { format!("{root}_") } else { format!("{dir}/{root}_") };
    candidate
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(ext))
        .is_some_and(|suffix| suffix.len() == 7 && suffix.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// After any sequence of saves and deletes, `listdir` of every directory agrees with a model of the files.
pub(crate) fn listdir_model(ctx: &Ctx) -> Result<(), String> {
    let op = prop_oneof![
        3 => (pool_name(), any::<u8>()).prop_map(|(n, v)| Op::Save(n, v)),
        1 => pool_name().prop_map(Op::Delete),
    ];
    ctx.property(prop::collection::vec(op, 1..12), |ops| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let mut model = Model::default();
            for op in &ops {
                match op {
                    Op::Save(name, value) => {
                        let got = s.save(&format!("{dir}/{name}"), vec![*value].into()).await;
                        let got = got.ok().map(|n| n.strip_prefix(&format!("{dir}/")).unwrap_or(&n).to_owned());
                        model.save(s, name, *value, got).map_err(TestCaseError::fail)?;
                    }
                    // On a storage with real directories, a name that is a directory is not a file to delete.
                    Op::Delete(name) if s.capabilities().directories && model.is_dir(name) => {}
                    Op::Delete(name) => {
                        s.delete(&format!("{dir}/{name}")).await.or_fail("delete")?;
                        model.files.remove(name);
                    }
                }
            }
            for sub in model.dirs() {
                let path = if sub.is_empty() { dir.clone() } else { format!("{dir}/{sub}") };
                let listed = s.listdir(&path).await.or_fail("listdir")?;
                prop_assert_eq!(listed, model.listing(&sub), "listdir({:?})", sub);
            }
            for (name, value) in &model.files {
                let read = s.open(&format!("{dir}/{name}")).await.or_fail("open")?.read_all().await.or_fail("read")?;
                prop_assert_eq!(&read[..], &[*value][..], "content of {:?}", name);
            }
            remove_tree(s, &dir).await
        })
    })
}

/// `replace` stores under exactly the name, over what is there, whatever `file_overwrite` says.
pub(crate) fn replace_in_place(ctx: &Ctx) -> Result<(), String> {
    ctx.property((name(), small_blob(), blob()), |(name, first, second)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            s.replace(&target, first.bytes().into()).await.or_fail("replace of a new name")?;
            prop_assert!(s.open(&target).await.or_fail("open")?.read_all().await.or_fail("read")? == first.bytes());
            s.replace(&target, second.bytes().into()).await.or_fail("replace")?;
            prop_assert!(s.open(&target).await.or_fail("open")?.read_all().await.or_fail("read")? == second.bytes());
            let files = s.list_files(&dir).await.or_fail("list_files")?;
            prop_assert_eq!(files.len(), 1, "replace left {:?}", files);
            prop_assert_eq!(files[0].size, second.len as u64);
            remove_tree(s, &dir).await
        })
    })
}

/// Deleting a file twice, or a name that never existed, is `Ok`.
pub(crate) fn delete_idempotent(ctx: &Ctx) -> Result<(), String> {
    ctx.property((name(), small_blob()), |(name, blob)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            s.delete(&target).await.or_fail("delete of a missing name")?;
            let saved = s.save(&target, blob.bytes().into()).await.or_fail("save")?;
            s.delete(&saved).await.or_fail("delete")?;
            s.delete(&saved).await.or_fail("second delete")?;
            prop_assert!(!s.exists(&saved).await.or_fail("exists")?);
            prop_assert!(s.open(&saved).await.is_err_and(|e| e.is_not_found()), "open of a deleted file");
            Ok(())
        })
    })
}

/// Concurrent saves of one name all keep their content, each under a name of its own.
pub(crate) fn concurrent_saves(ctx: &Ctx) -> Result<(), String> {
    ctx.property((name(), 2usize..=12, any::<u64>()), |(name, tasks, seed)| {
        ctx.block_on(async {
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let storage = ctx.storage().clone();
                    let target = target.clone();
                    let bytes = Blob { len: 100 + i * 37, seed: seed.wrapping_add(i as u64) }.bytes();
                    tokio::spawn(async move { storage.save(&target, bytes.clone().into()).await.map(|n| (n, bytes)) })
                })
                .collect();
            let mut names = BTreeSet::new();
            for handle in handles {
                let (saved, bytes) = handle.await.or_fail("task")?.or_fail("save")?;
                prop_assert!(names.insert(saved.clone()), "{} was given twice", saved);
                let read = ctx.storage().open(&saved).await.or_fail("open")?.read_all().await.or_fail("read")?;
                prop_assert!(read == bytes, "{} does not hold what its task wrote", saved);
            }
            remove_tree(&**ctx.storage(), &dir).await
        })
    })
}

/// A valid name made invalid in one way, under `dir`.
fn invalid_name(dir: &str, name: &str, defect: usize) -> String {
    match defect {
        0 => format!("/{dir}/{name}"),
        1 => format!("{dir}/{name}/../x"),
        2 => format!("{dir}/./{name}"),
        3 => format!("{dir}/{name}//x"),
        4 => format!("{dir}/{name}\\x"),
        5 => format!("{dir}/{name}\0"),
        6 => format!("{dir}/{name}\u{7}"),
        _ => format!("{dir}/{name}/{}", "x".repeat(1025)),
    }
}

/// Saves under a `max_length` (Django's): a name that fits is kept; a taken or longer one gives way to an
/// alternative whose stem is cut to fit, in the same directory and with the same extension; when no stem is
/// left to cut, the save fails in Django's words and stores nothing.
pub(crate) fn max_length(ctx: &Ctx) -> Result<(), String> {
    ctx.property(("[a-z]{1,12}", "(\\.[a-z]{1,3}){0,2}", 0usize..16), |(stem, ext, room)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{stem}{ext}");
            // `room` characters for the stem and what an alternative adds to it.
            let max = dir.chars().count() + 1 + ext.chars().count() + room;
            let fits = stem.len() <= room;
            // What an alternative keeps whole: every suffix (random, as Django) or the last (underscore); the rest
            // of the file name is the stem it may cut.
            let policy = s.alternative_names();
            let kept_ext = match policy {
                AlternativeNames::Random => ext.clone(),
                AlternativeNames::Underscore => {
                    ext.rsplit_once('.').map_or(String::new(), |(_, last)| format!(".{last}"))
                }
            };
            let room = max - (dir.chars().count() + 1 + kept_ext.chars().count());
            let options = SaveOptions::new().max_length(max);
            let mut stored = Vec::new();
            for round in 0..3usize {
                // Django's rules: the name itself if it fits and is free; else alternative `attempt`, its stem
                // cut so that the name fits, as long as a character of the stem is left.
                let attempt = round + usize::from(!fits);
                let expected = match policy {
                    AlternativeNames::Underscore => attempt == 0 || room > attempt,
                    AlternativeNames::Random => attempt == 0 || room > 8,
                };
                match s.save_with(&target, vec![round as u8].into(), &options).await {
                    Ok(name) => {
                        prop_assert!(expected, "saved as {} with room for {} characters", name, room);
                        prop_assert!(name.chars().count() <= max, "{} is longer than {}", name, max);
                        let in_dir = name.strip_prefix(dir.as_str()).and_then(|rest| rest.strip_prefix('/'));
                        prop_assert!(in_dir.is_some_and(|file| !file.contains('/')), "{} is not in {}", name, dir);
                        prop_assert!(name.ends_with(&kept_ext), "{} lost the extension {}", name, kept_ext);
                        prop_assert_eq!(name == target, attempt == 0, "{} for attempt {}", name, attempt);
                        stored.push((name, round as u8));
                    }
                    Err(error @ Error::NoAvailableName { .. }) => {
                        prop_assert!(!expected, "refused with room for {} characters: {}", room, error);
                        let message = error.to_string();
                        prop_assert!(message.contains("Storage can not find an available filename for"), "{}", message);
                    }
                    Err(error) => return Err(TestCaseError::fail(format!("save under max_length {max}: {error}"))),
                }
            }
            for (name, round) in &stored {
                let read = s.open(name).await.or_fail("open")?.read_all().await.or_fail("read")?;
                prop_assert_eq!(&read[..], &[*round][..], "{} holds another save's content", name);
            }
            let (_, files) = s.listdir(&dir).await.or_fail("listdir")?;
            prop_assert_eq!(files.len(), stored.len(), "a refused save stored something: {:?}", files);
            remove_tree(s, &dir).await
        })
    })
}

/// A content type declared by a save comes back from `stat` as it was declared (`test/foo` stays `test/foo`);
/// without one, the type is guessed from the name, and a name without a known extension is
/// `application/octet-stream`.
pub(crate) fn content_type(ctx: &Ctx) -> Result<(), String> {
    ctx.property("[a-zA-Z0-9_-]{1,12}", |name| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let declared = s
                .save_with(&format!("{dir}/{name}.css"), "x".into(), &SaveOptions::new().content_type("test/foo"))
                .await
                .or_fail("save with a content type")?;
            let stat = s.stat(&declared).await.or_fail("stat")?;
            prop_assert_eq!(stat.content_type.as_deref(), Some("test/foo"));
            let guessed = s.save(&format!("{dir}/{name}.css"), "x".into()).await.or_fail("save")?;
            let stat = s.stat(&guessed).await.or_fail("stat")?;
            prop_assert_eq!(stat.content_type.as_deref(), Some("text/css"));
            let unknown = s.save(&format!("{dir}/{name}"), "x".into()).await.or_fail("save")?;
            let stat = s.stat(&unknown).await.or_fail("stat")?;
            prop_assert_eq!(stat.content_type.as_deref(), Some("application/octet-stream"));
            remove_tree(s, &dir).await
        })
    })
}

/// Invalid names are refused by every operation, as suspicious, and create nothing.
pub(crate) fn invalid_names(ctx: &Ctx) -> Result<(), String> {
    ctx.property((name(), 0usize..8), |(name, defect)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let bad = invalid_name(&dir, &name, defect);
            let suspicious = |result: Result<(), Error>, operation: &str| match result {
                Err(Error::SuspiciousName { .. }) => Ok(()),
                other => Err(TestCaseError::fail(format!("{operation} of {bad:?} gave {other:?}"))),
            };
            suspicious(s.save(&bad, "x".into()).await.map(drop), "save")?;
            suspicious(s.open(&bad).await.map(drop), "open")?;
            suspicious(s.open_write(&bad).await.map(drop), "open_write")?;
            suspicious(s.exists(&bad).await.map(drop), "exists")?;
            suspicious(s.size(&bad).await.map(drop), "size")?;
            suspicious(s.delete(&bad).await, "delete")?;
            suspicious(s.url(&bad).await.map(drop), "url")?;
            prop_assert_eq!(s.listdir(&dir).await.or_fail("listdir")?, (vec![], vec![]), "something was created");
            prop_assert!(!s.exists(&format!("{dir}/{name}")).await.or_fail("exists")?, "the valid name was created");
            Ok(())
        })
    })
}

/// A writer dropped before commit leaves no file and no temporary file.
pub(crate) fn dropped_writer(ctx: &Ctx) -> Result<(), String> {
    ctx.property((segment(), blob()), |(name, blob)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            let mut writer = s.open_write(&target).await.or_fail("open_write")?;
            writer.write_all(&blob.bytes()).await.or_fail("write")?;
            prop_assert!(!s.exists(&target).await.or_fail("exists")?, "visible before commit");
            drop(writer);
            prop_assert!(!s.exists(&target).await.or_fail("exists")?, "a dropped writer left a file");
            nothing_left(ctx, &dir).await
        })
    })
}

/// `dir` holds nothing, and no temporary file is left under the fixture's local root.
async fn nothing_left(ctx: &Ctx<'_>, dir: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(ctx.storage().listdir(dir).await.or_fail("listdir")?, (vec![], vec![]));
    if let Some(root) = &ctx.fixture.root {
        let left = leftover_temporary_files(root);
        prop_assert!(left.is_empty(), "temporary files left: {:?}", left);
    }
    Ok(())
}

/// A save whose content fails partway stores nothing, under any name, and leaves no temporary file.
pub(crate) fn failed_save(ctx: &Ctx) -> Result<(), String> {
    ctx.property((segment(), blob()), |(name, blob)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let reader = crate::FailingReader::after(blob.bytes());
            let result = s.save(&format!("{dir}/{name}"), Content::from_reader(reader)).await;
            prop_assert!(matches!(result, Err(Error::Content { .. })), "got {:?}", result);
            nothing_left(ctx, &dir).await
        })
    })
}

/// Through a [`FaultyStorage`](crate::FaultyStorage) that breaks writes (an error, a dropped writer) or reads (a
/// short read, an error) at a random byte: a save either stores the whole content under the name it returns or
/// fails with nothing stored and no temporary file left; a read either returns the whole content or fails.
pub(crate) fn faults(ctx: &Ctx) -> Result<(), String> {
    use crate::{Fault, FaultyStorage};
    let kind = 0u8..4;
    ctx.property((segment(), blob(), kind, any::<prop::sample::Index>()), |(name, blob, kind, at)| {
        ctx.block_on(async {
            let bytes = blob.bytes();
            let after = at.index(bytes.len() + 1) as u64;
            let triggers = after < bytes.len() as u64;
            let fault = match kind {
                0 => Fault::WriteError { after },
                1 => Fault::DropWriter { after },
                2 => Fault::ShortRead { after },
                _ => Fault::ReadError { after },
            };
            let s = ctx.storage();
            let faulty = FaultyStorage::new(s.clone(), fault);
            let dir = fresh_dir();
            let target = format!("{dir}/{name}");
            if kind < 2 {
                match faulty.save(&target, bytes.clone().into()).await {
                    Ok(stored) => {
                        prop_assert!(!triggers, "a save broken at byte {} of {} succeeded", after, bytes.len());
                        let read = s.open(&stored).await.or_fail("open")?.read_all().await.or_fail("read_all")?;
                        prop_assert!(read == bytes.as_slice(), "the saved content differs");
                    }
                    Err(_) => nothing_left(ctx, &dir).await?,
                }
                return Ok(());
            }
            let stored = s.save(&target, bytes.clone().into()).await.or_fail("save")?;
            let file = faulty.open(&stored).await.or_fail("open through the fault")?;
            let whole = file.read_all().await;
            let chunks: Result<Vec<_>, _> = file.chunks(4096).try_collect().await;
            let mut through_reader = Vec::new();
            let reader = file.reader().read_to_end(&mut through_reader).await;
            if triggers {
                prop_assert!(whole.is_err(), "read_all returned {} of {} bytes as whole", after, bytes.len());
                prop_assert!(chunks.is_err(), "chunks ended without an error after {} bytes", after);
                prop_assert!(reader.is_err(), "reader() ended without an error after {} bytes", after);
            } else {
                prop_assert!(whole.or_fail("read_all")? == bytes.as_slice(), "read_all differs");
                prop_assert!(chunks.or_fail("chunks")?.concat() == bytes, "chunks differ");
                reader.or_fail("reader")?;
                prop_assert!(through_reader == bytes, "reader() differs");
            }
            remove_tree(&**s, &dir).await
        })
    })
}

/// A presigned URL serves the content to a plain HTTP client.
pub(crate) fn presigned_url(ctx: &Ctx) -> Result<(), String> {
    ctx.property((name(), small_blob()), |(name, blob)| {
        ctx.block_on(async {
            let s = &**ctx.storage();
            let dir = fresh_dir();
            let bytes = blob.bytes();
            let saved = s.save(&format!("{dir}/{name}"), bytes.clone().into()).await.or_fail("save")?;
            let url = s.url_expiring(&saved, std::time::Duration::from_secs(300)).await.or_fail("url")?;
            prop_assert!(fetch(&url).await? == bytes, "the URL serves other content");
            remove_tree(s, &dir).await
        })
    })
}

/// The body of a GET of `url`, which must answer 200.
async fn fetch(url: &str) -> Result<bytes::Bytes, TestCaseError> {
    let response = reqwest::get(url).await.or_fail("GET")?;
    prop_assert_eq!(response.status().as_u16(), 200, "GET {}", url);
    response.bytes().await.or_fail("body")
}

/// The query parameters of a presigned URL that change with the clock: the signing time and the signature over
/// it. (The credential's scope holds the date too; `same_url` compares it without.)
const CLOCK_PARAMETERS: [&str; 2] = ["X-Amz-Date", "X-Amz-Signature"];

/// Two URLs of one file, made at different times, are the same URL: equal, or presigned URLs that differ only
/// in their signing time and signature, both serving `content`. (Comparing them as text fails whenever a
/// second boundary falls between the two calls.)
pub(crate) async fn same_url(first: &str, second: &str, content: &[u8]) -> Result<(), TestCaseError> {
    if first == second {
        return Ok(());
    }
    let parts = |url: &str| -> Result<(String, Vec<(String, String)>), TestCaseError> {
        let parsed =
            reqwest::Url::parse(url).or_fail(&format!("{url} is not the same URL as the first, nor absolute"))?;
        let mut query: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(key, _)| !CLOCK_PARAMETERS.contains(&key.as_ref()))
            .map(|(key, value)| match key.as_ref() {
                // `AKID/20261130/us-east-1/s3/aws4_request`: all but the date.
                "X-Amz-Credential" => {
                    let without_date: Vec<&str> =
                        value.split('/').enumerate().filter(|(i, _)| *i != 1).map(|(_, part)| part).collect();
                    (key.into_owned(), without_date.join("/"))
                }
                _ => (key.into_owned(), value.into_owned()),
            })
            .collect();
        query.sort();
        let signed = parsed.query_pairs().any(|(key, _)| key == "X-Amz-Signature");
        prop_assert!(signed, "{} and {} differ, and they are not presigned URLs", first, second);
        Ok((format!("{}{}", parsed.origin().ascii_serialization(), parsed.path()), query))
    };
    prop_assert_eq!(parts(first)?, parts(second)?, "the URLs differ in more than their signing time");
    for url in [first, second] {
        prop_assert!(fetch(url).await? == content, "{} serves other content", url);
    }
    Ok(())
}
