//! The filesystem backend against `std::fs::copy` of the same files: saving a local file into the storage, and
//! reading a stored file out to a local one, for one large file and many small ones.

use futures::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use storage_core::{Content, Storage};
use storage_fs::{FileSystemStorage, FsOptions};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;

/// A set of source files and the time each side took to save and read them.
struct Set {
    label: String,
    files: Vec<PathBuf>,
    bytes: usize,
    /// [storage save, copy in, storage read, copy out]
    times: [Duration; 4],
}

pub async fn run(setup: &crate::Setup) -> Result<Value, String> {
    let (large, small_count, rounds) = if setup.quick { (16 * MIB, 100, 2) } else { (128 * MIB, 500, 3) };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sources = dir.path().join("sources");
    let mut sets = vec![
        make_set(&sources.join("large"), format!("1 file of {} MiB", large / MIB), 1, large)?,
        make_set(&sources.join("small"), format!("{small_count} files of 16 KiB"), small_count, 16 * 1024)?,
    ];
    let location = dir.path().join("media");
    let storage = FileSystemStorage::new("bench-fs", FsOptions { location: location.clone(), ..FsOptions::default() })
        .map_err(|e| e.to_string())?;
    let copies = dir.path().join("copies");
    let out = dir.path().join("out");
    for round in 0..rounds {
        for set in &mut sets {
            for dir in [&copies, &out] {
                let _ = std::fs::remove_dir_all(dir);
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            let storage_first = round % 2 == 0;
            for storage_side in [storage_first, !storage_first] {
                let started = Instant::now();
                for (i, file) in set.files.iter().enumerate() {
                    if storage_side {
                        let name = format!("r{round}/{i}.bin");
                        storage.save(&name, Content::from_path(file)).await.map_err(|e| e.to_string())?;
                    } else {
                        std::fs::copy(file, copies.join(format!("{i}.bin"))).map_err(|e| e.to_string())?;
                    }
                }
                set.times[if storage_side { 0 } else { 1 }] += started.elapsed();
            }
            for storage_side in [storage_first, !storage_first] {
                let started = Instant::now();
                for i in 0..set.files.len() {
                    let target = out.join(format!("{i}-{storage_side}.bin"));
                    if storage_side {
                        read_out(&storage, &format!("r{round}/{i}.bin"), &target).await?;
                    } else {
                        std::fs::copy(location.join(format!("r{round}/{i}.bin")), &target)
                            .map_err(|e| e.to_string())?;
                    }
                }
                set.times[if storage_side { 2 } else { 3 }] += started.elapsed();
            }
            for i in 0..set.files.len() {
                storage.delete(&format!("r{round}/{i}.bin")).await.map_err(|e| e.to_string())?;
            }
        }
    }

    println!(
        "{:<22} {:>10} {:>14} {:>7} {:>10} {:>14} {:>7}",
        "files", "save MB/s", "fs::copy MB/s", "ratio", "read MB/s", "fs::copy MB/s", "ratio"
    );
    let mut rows = Vec::new();
    for set in &sets {
        let rate = |time: Duration| (set.bytes * rounds) as f64 / 1e6 / time.as_secs_f64().max(1e-9);
        let [save, copy_in, read, copy_out] = set.times.map(rate);
        println!(
            "{:<22} {save:>10.0} {copy_in:>14.0} {:>7.2} {read:>10.0} {copy_out:>14.0} {:>7.2}",
            set.label,
            save / copy_in,
            read / copy_out
        );
        rows.push(json!({
            "files": set.label,
            "bytes": set.bytes,
            "rounds": rounds,
            "save_mb_per_s": save,
            "copy_in_mb_per_s": copy_in,
            "save_ratio": save / copy_in,
            "read_mb_per_s": read,
            "copy_out_mb_per_s": copy_out,
            "read_ratio": read / copy_out,
        }));
    }
    Ok(Value::Array(rows))
}

fn make_set(dir: &Path, label: String, count: usize, size: usize) -> Result<Set, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for i in 0..count {
        let path = dir.join(format!("{i}.bin"));
        std::fs::write(&path, crate::random_bytes(size, i as u64)).map_err(|e| e.to_string())?;
        files.push(path);
    }
    Ok(Set { label, files, bytes: count * size, times: Default::default() })
}

/// A stored file streamed out to a local file, as `storages get` does.
async fn read_out(storage: &FileSystemStorage, name: &str, target: &Path) -> Result<(), String> {
    let file = storage.open(name).await.map_err(|e| e.to_string())?;
    let mut local = tokio::fs::File::create(target).await.map_err(|e| e.to_string())?;
    let mut chunks = file.chunks(MIB);
    while let Some(chunk) = chunks.next().await {
        local.write_all(&chunk.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    }
    local.flush().await.map_err(|e| e.to_string())
}
