//! A 256 MiB object saved from a local file and read back, by `S3Storage` and by raw object_store
//! (`put_multipart` with the same part size and concurrency, and one GET stream): throughput, peak RSS growth,
//! and the time to a read's first chunk.

use crate::memory::Peak;
use crate::{Setup, Target, raw_store, s3_storage};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};
use storage_core::{Content, Storage};
use tokio::io::AsyncReadExt;

const MIB: usize = 1024 * 1024;
/// The growth of the process's peak memory a transfer of any size may cause.
const RSS_LIMIT_MIB: f64 = 64.0;

/// One transfer: how long, the first chunk (reads), and the peak memory growth.
struct Measured {
    time: Duration,
    first_chunk: Option<Duration>,
    growth_mib: f64,
    requests: u64,
}

pub async fn run(setup: &Setup, targets: &mut Vec<Target>) -> Result<Value, String> {
    let size = if setup.quick { 32 * MIB } else { 256 * MIB };
    let rounds = if setup.quick { 1 } else { 2 };
    let mut local = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    for index in 0..size / MIB {
        local.write_all(&crate::random_bytes(MIB, index as u64)).map_err(|e| e.to_string())?;
    }
    local.flush().map_err(|e| e.to_string())?;

    let bucket = crate::fresh_bucket("bench-large");
    let storage = s3_storage(setup, &bucket)?;
    let (store, counter) = raw_store(setup, &bucket)?;
    storage.exists("warm-up").await.map_err(|e| e.to_string())?;
    let options = storage.options().clone();
    let project_requests = || storage.request_counts().iter().map(|(_, n)| n).sum::<u64>();

    // [project save, raw save, project read, raw read], summed over the rounds.
    let mut results: Vec<Vec<Measured>> = (0..4).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let name = format!("large/storages-{round}.bin");
        let path = Path::from(format!("large/object_store-{round}.bin"));
        let project_first = round % 2 == 0;
        for project in [project_first, !project_first] {
            let peak = Peak::start();
            let started = Instant::now();
            let before = if project { project_requests() } else { counter.get() };
            if project {
                storage.save(&name, Content::from_path(local.path())).await.map_err(|e| e.to_string())?;
            } else {
                raw_put(&store, &path, local.path(), options.multipart_chunksize as usize, options.max_concurrency)
                    .await?;
            }
            let after = if project { project_requests() } else { counter.get() };
            let measured = Measured {
                time: started.elapsed(),
                first_chunk: None,
                growth_mib: peak.growth_mib(),
                requests: after - before,
            };
            results[if project { 0 } else { 1 }].push(measured);
        }
        for project in [project_first, !project_first] {
            let peak = Peak::start();
            let started = Instant::now();
            let before = if project { project_requests() } else { counter.get() };
            let mut stream = if project {
                let file = storage.open(&name).await.map_err(|e| e.to_string())?;
                file.chunks(MIB).map(|c| c.map_err(|e| e.to_string())).boxed()
            } else {
                let result = store.get(&path).await.map_err(|e| e.to_string())?;
                result.into_stream().map(|c| c.map_err(|e| e.to_string())).boxed()
            };
            let mut first_chunk = None;
            let mut read = 0;
            while let Some(chunk) = stream.next().await {
                read += chunk?.len();
                first_chunk.get_or_insert_with(|| started.elapsed());
            }
            if read != size {
                return Err(format!("read {read} bytes of {size}"));
            }
            let after = if project { project_requests() } else { counter.get() };
            let measured = Measured {
                time: started.elapsed(),
                first_chunk,
                growth_mib: peak.growth_mib(),
                requests: after - before,
            };
            results[if project { 2 } else { 3 }].push(measured);
        }
    }

    let mib = size / MIB;
    println!(
        "{:<20} {:>9} {:>9} {:>7} {:>17} {:>12} {:>9}",
        "transfer", "storages", "obj_store", "ratio", "RSS growth (MiB)", "first chunk", "requests"
    );
    let mut rows = Vec::new();
    for (label, project, raw) in [("save", &results[0], &results[1]), ("read", &results[2], &results[3])] {
        let throughput = |runs: &[Measured]| {
            (size * runs.len()) as f64 / 1e6 / runs.iter().map(|m| m.time.as_secs_f64()).sum::<f64>().max(1e-9)
        };
        let growth = |runs: &[Measured]| runs.iter().map(|m| m.growth_mib).reduce(f64::max).unwrap_or(f64::NAN);
        let first = |runs: &[Measured]| {
            let firsts: Vec<f64> = runs.iter().filter_map(|m| m.first_chunk.map(|d| d.as_secs_f64())).collect();
            (!firsts.is_empty()).then(|| firsts.iter().sum::<f64>() / firsts.len() as f64 * 1000.0)
        };
        let requests = |runs: &[Measured]| runs.iter().map(|m| m.requests).sum::<u64>() / runs.len().max(1) as u64;
        let ratio = throughput(project) / throughput(raw);
        let shown_first = |runs: &[Measured]| first(runs).map_or("-".to_string(), |ms| format!("{ms:.0} ms"));
        println!(
            "{:<20} {:>6.0} MB/s {:>4.0} MB/s {:>7.2} {:>8.1} / {:<6.1} {:>5} / {:<5} {:>4} / {:<4}",
            format!("{label} {mib} MiB"),
            throughput(project),
            throughput(raw),
            ratio,
            growth(project),
            growth(raw),
            shown_first(project),
            shown_first(raw),
            requests(project),
            requests(raw)
        );
        targets.push(Target {
            what: format!("{label} {mib} MiB: peak RSS growth <= {RSS_LIMIT_MIB} MiB"),
            measured: format!("{:.1} MiB", growth(project)),
            met: growth(project) <= RSS_LIMIT_MIB,
        });
        rows.push(json!({
            "transfer": label,
            "bytes": size,
            "rounds": rounds,
            "storages_mb_per_s": throughput(project),
            "object_store_mb_per_s": throughput(raw),
            "ratio": ratio,
            "storages_rss_growth_mib": growth(project),
            "object_store_rss_growth_mib": growth(raw),
            "storages_first_chunk_ms": first(project),
            "object_store_first_chunk_ms": first(raw),
            "storages_requests": requests(project),
            "object_store_requests": requests(raw),
        }));
    }
    Ok(Value::Array(rows))
}

/// object_store's own multipart upload of a local file: parts of `part` bytes, `concurrency` in flight.
async fn raw_put(
    store: &object_store::aws::AmazonS3,
    path: &Path,
    local: &std::path::Path,
    part: usize,
    concurrency: usize,
) -> Result<(), String> {
    let upload = store.put_multipart(path).await.map_err(|e| e.to_string())?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
    let mut file = tokio::fs::File::open(local).await.map_err(|e| e.to_string())?;
    loop {
        let mut buffer = bytes::BytesMut::with_capacity(part);
        while buffer.len() < part {
            if file.read_buf(&mut buffer).await.map_err(|e| e.to_string())? == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            break;
        }
        writer.wait_for_capacity(concurrency).await.map_err(|e| e.to_string())?;
        writer.put(buffer.freeze());
    }
    writer.finish().await.map(drop).map_err(|e| e.to_string())
}
