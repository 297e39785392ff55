//! The cache layer over S3 on moto against the same S3 storage uncached: warm metadata and small reads, a large
//! read from the disk tier, 64 concurrent cold readers of one object, and a small range of a large cold object.

use crate::{Server, Setup, Target, random_bytes, s3_options};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_cache::{CacheOptions, CachedStorage};
use storage_core::Storage;

const MIB: usize = 1024 * 1024;

fn count(storage: &dyn Storage, what: &str) -> u64 {
    storage.request_counts().into_iter().filter(|(kind, _)| kind == what).map(|(_, n)| n).sum()
}

/// Requests the inner storage made (the cache's own counts left out).
fn requests(storage: &dyn Storage) -> u64 {
    storage.request_counts().into_iter().filter(|(kind, _)| !kind.starts_with("cache ")).map(|(_, n)| n).sum()
}

/// Operations per second of `op`, run `n` times.
async fn rate<F: std::future::Future<Output = Result<(), String>>>(
    n: usize,
    op: impl Fn() -> F,
) -> Result<f64, String> {
    let started = Instant::now();
    for _ in 0..n {
        op().await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The hit ratios of the eviction policies weighed for the memory tier, on the same Zipf traces of block reads
/// (100,000 distinct blocks, capacity 1 % and 10 % of them): foyer's S3-FIFO, which the cache uses, and moka's
/// TinyLFU, which it used before. A block missing is read and inserted, as the cache does. Shown, not a target.
fn policies(quick: bool) -> Value {
    let (blocks, reads) = (100_000usize, if quick { 300_000 } else { 1_000_000 });
    let mut rows = Vec::new();
    for skew in [0.8f64, 1.0] {
        // Inverse transform sampling over the Zipf weights, with a fixed seed: the same trace for both.
        let mut cumulative = Vec::with_capacity(blocks);
        let mut total = 0.0;
        for rank in 1..=blocks {
            total += 1.0 / (rank as f64).powf(skew);
            cumulative.push(total);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let mut draw = || {
            let point = rng.f64() * total;
            cumulative.partition_point(|&c| c < point).min(blocks - 1) as u64
        };
        let trace: Vec<u64> = (0..reads).map(|_| draw()).collect();
        for percent in [1usize, 10] {
            let capacity = blocks * percent / 100;
            let s3fifo: foyer_memory::Cache<u64, ()> = foyer_memory::CacheBuilder::new(capacity)
                .with_shards(1)
                .with_eviction_config(foyer_memory::S3FifoConfig::default())
                .build();
            let tinylfu = moka::sync::Cache::<u64, ()>::builder().max_capacity(capacity as u64).build();
            let (mut s3fifo_hits, mut tinylfu_hits) = (0usize, 0usize);
            for block in &trace {
                if s3fifo.get(block).is_some() {
                    s3fifo_hits += 1;
                } else {
                    s3fifo.insert(*block, ());
                }
                if tinylfu.get(block).is_some() {
                    tinylfu_hits += 1;
                } else {
                    tinylfu.insert(*block, ());
                    tinylfu.run_pending_tasks();
                }
            }
            let (a, b) = (s3fifo_hits as f64 / reads as f64, tinylfu_hits as f64 / reads as f64);
            println!(
                "hit ratio, Zipf {skew}, capacity {percent} % of the blocks: S3-FIFO (foyer) {a:.3}, TinyLFU (moka) {b:.3}"
            );
            rows.push(json!({"skew": skew, "capacity_percent": percent, "s3fifo": a, "tinylfu": b}));
        }
    }
    json!(rows)
}

pub async fn run(setup: &Setup, server: &Server, targets: &mut Vec<Target>) -> Result<Value, String> {
    let hit_ratios = policies(setup.quick);
    let e = |e: storage_core::Error| e.to_string();
    let bucket = crate::fresh_bucket("bench-cache");
    // moto serves every range by reading the whole object: the uncached side reads in one stream.
    let plain = |bucket: &str| -> Result<Arc<dyn Storage>, String> {
        let options = storage_s3::S3Options { parallel_read_threshold: 0, ..s3_options(server, bucket) };
        Ok(Arc::new(storage_s3::S3Storage::new("bench", options).map_err(|e| e.to_string())?))
    };
    let uncached = plain(&bucket)?;
    let disk = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cache = |inner: Arc<dyn Storage>, memory: u64| {
        let options = CacheOptions {
            memory_capacity: memory,
            block_size: MIB as u64,
            metadata_ttl: Duration::from_secs(3600),
            disk_path: Some(disk.path().to_path_buf()),
            disk_capacity: 512 * MIB as u64,
            ..CacheOptions::default()
        };
        CachedStorage::new("bench-cache", inner, options)
    };
    let (large_size, huge_size, n) = if setup.quick { (16 * MIB, 64 * MIB, 200) } else { (64 * MIB, 1024 * MIB, 1000) };
    uncached.save("small.txt", random_bytes(1024, 1).into()).await.map_err(e)?;
    uncached.save("eight.bin", random_bytes(8 * MIB, 2).into()).await.map_err(e)?;
    let large = random_bytes(large_size, 3);
    uncached.save("large.bin", large.clone().into()).await.map_err(e)?;

    // Warm metadata and small reads: the cache's inner storage is its own S3 client, to count its requests.
    let inner = plain(&bucket)?;
    let cached = cache(inner.clone(), 64 * MIB as u64);
    let meta = |storage: Arc<dyn Storage>| async move {
        storage.exists("small.txt").await.map_err(e)?;
        storage.size("small.txt").await.map_err(e)?;
        storage.stat("small.txt").await.map_err(e)?;
        Ok::<_, String>(())
    };
    let read = |storage: Arc<dyn Storage>| async move {
        storage.open("small.txt").await.map_err(e)?.read_all().await.map_err(e)?;
        Ok::<_, String>(())
    };
    let cached_dyn: Arc<dyn Storage> = Arc::new(cached.clone());
    meta(cached_dyn.clone()).await?;
    read(cached_dyn.clone()).await?;
    let before = requests(&*inner);
    let meta_cached = rate(n, || meta(cached_dyn.clone())).await?;
    let read_cached = rate(n, || read(cached_dyn.clone())).await?;
    let warm_requests = requests(&*inner) - before;
    let meta_plain = rate(n / 10, || meta(uncached.clone())).await?;
    let read_plain = rate(n / 10, || read(uncached.clone())).await?;
    let meta_ratio = meta_cached / meta_plain;
    let read_ratio = read_cached / read_plain;
    println!("warm exists+size+stat: {meta_cached:.0}/s cached, {meta_plain:.0}/s uncached: {meta_ratio:.0}x");
    println!("warm 1 KiB open+read: {read_cached:.0}/s cached, {read_plain:.0}/s uncached: {read_ratio:.0}x");
    println!("requests of the inner storage during {n} warm rounds of each: {warm_requests}");
    targets.push(Target {
        what: "cache: warm exists/size/stat over S3 (moto) >= 100x the uncached ops/s, 0 inner requests".into(),
        measured: format!("{meta_ratio:.0}x, {warm_requests} inner requests"),
        met: meta_ratio >= 100.0 && warm_requests == 0,
    });
    targets.push(Target {
        what: "cache: warm 1 KiB read >= 50x the uncached ops/s".into(),
        measured: format!("{read_ratio:.0}x"),
        met: read_ratio >= 50.0,
    });

    // A large read from the disk tier (memory too small to hold it), against the uncached read. Both are timed
    // as streams, as `get` and a server answering with the file consume them: `read_all` adds the allocation of
    // the caller's buffer (page faults of 64 MiB), a cost of neither storage, shown apart. The content is
    // checked once, untimed.
    let from_disk = cache(plain(&bucket)?, 4 * MIB as u64);
    if from_disk.open("large.bin").await.map_err(e)?.read_all().await.map_err(e)? != large.as_slice() {
        return Err("the cached large read differs".into());
    }
    let streamed = |storage: Arc<dyn Storage>| async move {
        let file = storage.open("large.bin").await.map_err(e)?;
        let mut pieces = file.range_stream(0..file.size()).map_err(e)?;
        let mut len = 0;
        while let Some(piece) = pieces.next().await {
            len += piece.map_err(e)?.len();
        }
        Ok::<_, String>(len)
    };
    let timed = |storage: Arc<dyn Storage>, whole: bool| async move {
        let started = Instant::now();
        let len = if whole {
            storage.open("large.bin").await.map_err(e)?.read_all().await.map_err(e)?.len()
        } else {
            streamed(storage).await?
        };
        Ok::<_, String>((started.elapsed(), len))
    };
    let from_disk: Arc<dyn Storage> = Arc::new(from_disk);
    let mut best = [Duration::MAX; 4];
    for _ in 0..3 {
        for (slot, storage, whole) in
            [(0, &from_disk, false), (1, &uncached, false), (2, &from_disk, true), (3, &uncached, true)]
        {
            let (time, len) = timed(storage.clone(), whole).await?;
            if len != large_size {
                return Err(format!("a large read gave {len} bytes of {large_size}"));
            }
            best[slot] = best[slot].min(time);
        }
    }
    let ratio = |cached: Duration, plain: Duration| plain.as_secs_f64() / cached.as_secs_f64().max(1e-9);
    let (disk_ratio, whole_ratio) = (ratio(best[0], best[1]), ratio(best[2], best[3]));
    let from_disk_bytes = count(&*from_disk, "cache bytes from disk");
    println!(
        "warm {} MiB read from the disk tier, streamed: {:.2?}, uncached {:.2?}: {disk_ratio:.1}x ({} MiB from disk \
         in all)",
        large_size / MIB,
        best[0],
        best[1],
        from_disk_bytes / MIB as u64
    );
    println!("  the same with read_all into one buffer: {:.2?}, uncached {:.2?}: {whole_ratio:.1}x", best[2], best[3]);
    targets.push(Target {
        what: format!(
            "cache: warm {} MiB read from the disk tier >= 5x the uncached read (streamed)",
            large_size / MIB
        ),
        measured: format!("{disk_ratio:.1}x (read_all: {whole_ratio:.1}x)"),
        met: disk_ratio >= 5.0,
    });

    // 64 concurrent cold readers of one 8 MiB object.
    let cold = Arc::new(cache(plain(&bucket)?, 64 * MIB as u64));
    cold.clear().await;
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let cold = cold.clone();
            tokio::spawn(async move { cold.open("eight.bin").await?.read_all().await.map(|b| b.len()) })
        })
        .collect();
    for reader in readers {
        let len = reader.await.map_err(|e| e.to_string())?.map_err(e)?;
        if len != 8 * MIB {
            return Err(format!("a cold reader got {len} bytes"));
        }
    }
    let block_reads = count(&*cold, "cache inner block reads");
    println!("64 concurrent cold readers of 8 MiB: {block_reads} inner block reads");
    targets.push(Target {
        what: "cache: 64 concurrent cold readers of one 8 MiB object: exactly 8 inner block reads".into(),
        measured: format!("{block_reads}"),
        met: block_reads == 8,
    });

    // A 4 KiB range of a large cold object.
    uncached.save("huge.bin", random_bytes(huge_size, 4).into()).await.map_err(e)?;
    let ranged_inner = plain(&bucket)?;
    let ranged = cache(ranged_inner.clone(), 64 * MIB as u64);
    ranged.clear().await;
    let offset = (huge_size / 2) as u64;
    let got = ranged.open("huge.bin").await.map_err(e)?.range(offset..offset + 4096).await.map_err(e)?;
    let (range_block_reads, gets) = (count(&ranged, "cache inner block reads"), count(&*ranged_inner, "GET"));
    println!(
        "4 KiB range of a cold {} MiB object: {} bytes, {range_block_reads} inner block read, {gets} GETs (the open's, \
         cut after its head, and the block's range)",
        huge_size / MIB,
        got.len()
    );
    targets.push(Target {
        what: format!("cache: a 4 KiB range of a cold {} MiB object reads one block", huge_size / MIB),
        measured: format!("{range_block_reads} block read, {gets} GETs"),
        met: range_block_reads == 1 && got.len() == 4096,
    });
    uncached.delete("huge.bin").await.map_err(e)?;
    Ok(json!({
        "warm_metadata_ratio": meta_ratio,
        "warm_small_read_ratio": read_ratio,
        "warm_inner_requests": warm_requests,
        "disk_read_ratio": disk_ratio,
        "disk_read_all_ratio": whole_ratio,
        "cold_readers_block_reads": block_reads,
        "range_block_reads": range_block_reads,
        "policy_hit_ratios": hit_ratios,
    }))
}
