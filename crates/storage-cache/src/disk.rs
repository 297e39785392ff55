//! The disk tier: one file per block under `disk_path`, kept across restarts, never more bytes than
//! `disk_capacity`.
//!
//! A block file holds a header (a magic number, the block's key, its length and its CRC-32) and the block. A file
//! is trusted only when all of them match what is asked and what it holds: a truncated, corrupted or foreign
//! file is removed and the block read again from the inner storage, never served. Files are written under a
//! temporary name and renamed, so a crash leaves either a whole file or a temporary one (removed at the next
//! start). Any failure of the disk (full, unreadable) is logged and the block served without it.

use bytes::Bytes;
use foyer_common::event::Event;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"STCBLK02";
/// Magic, key length (u32), block length (u64), CRC-32 of the block (u32): a checksum against damage (not
/// against an attacker, who could write the cache directory anyway), at memory speed.
const HEADER: usize = 8 + 4 + 8 + 4;
const SUFFIX: &str = ".blk";
const TEMP_SUFFIX: &str = ".blk-tmp";

/// Block files on disk, with an index of their sizes that evicts (and deletes) beyond the capacity.
#[derive(Clone)]
pub(crate) struct DiskTier {
    dir: PathBuf,
    index: foyer_memory::Cache<String, u64>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier").field("dir", &self.dir).finish()
    }
}

/// The file name of a block: the MD5 of its key, so any name and version fit.
fn file_id(key: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(key.as_bytes()))
}

impl DiskTier {
    /// The tier in `dir` (created if missing) for blocks of about `block_size` bytes, with the block files a
    /// previous process left indexed.
    pub(crate) fn open(dir: &Path, capacity: u64, block_size: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let evicted_dir = dir.to_path_buf();
        let weight = |size: &u64| usize::try_from(*size).unwrap_or(usize::MAX);
        let index = crate::byte_cache(capacity, block_size, weight, move |event, id: &String, _| {
            // Evicted and removed entries lose their file. A replaced one keeps it (the new one), and a cleared
            // one too: foyer clears when the index is dropped, at the end of a process whose files the next one
            // uses (`clear` removes the files itself).
            if matches!(event, Event::Evict | Event::Remove) {
                let _ = std::fs::remove_file(evicted_dir.join(format!("{id}{SUFFIX}")));
            }
        });
        let tier = DiskTier { dir: dir.to_path_buf(), index };
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(metadata) = entry.metadata() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(SUFFIX) {
                // A file too short for its header is no block: removed now, the rest checked when read.
                if metadata.len() < HEADER as u64 {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
                tier.index.insert(id.to_owned(), metadata.len());
            }
        }
        Ok(tier)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// The block of `key`, if a whole, matching file holds it. A file that does not is removed.
    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        let id = file_id(key);
        self.index.get(&id)?;
        let path = self.path(&id);
        let owned_key = key.to_owned();
        let read =
            tokio::task::spawn_blocking(move || std::fs::read(&path).map(|bytes| check(bytes, &owned_key))).await;
        match read {
            Ok(Ok(Some(block))) => Some(block),
            Ok(Ok(None)) => {
                tracing::warn!(target: "storages", "cache: block file {id}{SUFFIX} is damaged; removed, reading the block again");
                self.index.remove(&id);
                None
            }
            Ok(Err(error)) => {
                tracing::warn!(target: "storages", "cache: cannot read block file {id}{SUFFIX}: {error}; reading the block again");
                self.index.remove(&id);
                None
            }
            Err(_) => None,
        }
    }

    /// Keeps `block` of `key`; a failure is logged and otherwise ignored.
    pub(crate) async fn put(&self, key: &str, block: &Bytes) {
        let id = file_id(key);
        let (path, temp) = (self.path(&id), self.dir.join(format!("{id}.{}{TEMP_SUFFIX}", fastrand::u64(..))));
        let mut file = Vec::with_capacity(HEADER + key.len() + block.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        file.extend_from_slice(&(block.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
        file.extend_from_slice(key.as_bytes());
        file.extend_from_slice(block);
        let size = file.len() as u64;
        let written = tokio::task::spawn_blocking(move || {
            std::fs::write(&temp, &file).and_then(|()| std::fs::rename(&temp, &path)).inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.index.insert(id, size);
            }
            Ok(Err(error)) => {
                tracing::warn!(target: "storages", "cache: cannot write a block file: {error}; serving without the disk")
            }
            Err(_) => {}
        }
    }

    /// The bytes the block files take.
    pub(crate) fn bytes(&self) -> u64 {
        self.index.usage() as u64
    }

    /// Removes every block file.
    pub(crate) fn clear(&self) {
        self.index.clear();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(SUFFIX) || name.ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The block in `file` if it is a whole block file of `key` (a slice of `file`, not a copy).
fn check(file: Vec<u8>, key: &str) -> Option<Bytes> {
    let magic = file.get(..8)?;
    let key_len = u32::from_le_bytes(file.get(8..12)?.try_into().ok()?) as usize;
    let block_len = usize::try_from(u64::from_le_bytes(file.get(12..20)?.try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(file.get(20..24)?.try_into().ok()?);
    let stored_key = file.get(HEADER..HEADER + key_len)?;
    let block = file.get(HEADER + key_len..)?;
    let whole = magic == MAGIC && stored_key == key.as_bytes() && block.len() == block_len;
    if !(whole && crc == crc32fast::hash(block)) {
        return None;
    }
    Some(Bytes::from(file).slice(HEADER + key_len..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_damaged_or_foreign_file_is_never_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 20, 16).expect("tier");
        let block = Bytes::from_static(b"0123456789");
        tier.put("a\0v1\0#0", &block).await;
        assert_eq!(tier.get("a\0v1\0#0").await, Some(block.clone()));
        assert_eq!(tier.get("a\0v2\0#0").await, None, "another version");
        let path = tier.path(&file_id("a\0v1\0#0"));
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("corrupt");
        assert_eq!(tier.get("a\0v1\0#0").await, None, "a flipped bit");
        assert!(!path.exists(), "the damaged file is removed");
        tier.put("a\0v1\0#0", &block).await;
        std::fs::write(&path, &std::fs::read(&path).expect("read")[..HEADER + 3]).expect("truncate");
        assert_eq!(tier.get("a\0v1\0#0").await, None, "a truncated file");
    }
}
