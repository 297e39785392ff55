//! A 256 MiB object saved from a local file and read back, by `S3Storage` and by raw object_store
//! (`put_multipart` with the same part size and concurrency, and one GET stream): throughput, peak RSS growth,
//! CPU time, and the time to a read's first MiB. Two diagnostic rows show what the defaults cost: a save with
//! `checksum = "none"` and a read as one stream (`parallel_read_threshold = 0`); curl's GET of the same object is
//! the CPU reference for one stream. Ratios are the median of the rounds' own ratios.

use crate::memory::Peak;
use crate::{Server, Setup, Target, raw_store, s3_storage};
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

/// One transfer: how long, the first chunk (reads), the peak memory growth and the CPU it took.
struct Measured {
    time: Duration,
    first_chunk: Option<Duration>,
    growth_mib: f64,
    cpu: Duration,
    requests: u64,
}

/// The sides of the comparison, in the order of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Save,
    SaveUnchecked,
    RawSave,
    Read,
    ReadOneStream,
    RawRead,
    Curl,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Save => "storages save",
            Side::SaveUnchecked => "  checksum none",
            Side::RawSave => "object_store put_multipart",
            Side::Read => "storages read",
            Side::ReadOneStream => "  one stream",
            Side::RawRead => "object_store GET",
            Side::Curl => "curl GET",
        }
    }
}

const SAVES: [Side; 3] = [Side::Save, Side::SaveUnchecked, Side::RawSave];
const READS: [Side; 4] = [Side::Read, Side::ReadOneStream, Side::RawRead, Side::Curl];

pub async fn run(setup: &Setup, server: &Server, targets: &mut Vec<Target>) -> Result<Value, String> {
    let size = if setup.quick { 32 * MIB } else { 256 * MIB };
    let rounds = if setup.quick { 1 } else { 5 };
    let mut local = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    for index in 0..size / MIB {
        local.write_all(&crate::random_bytes(MIB, index as u64)).map_err(|e| e.to_string())?;
    }
    local.flush().map_err(|e| e.to_string())?;

    let bucket = crate::fresh_bucket("bench-large");
    let storage = s3_storage(server, &bucket)?;
    let variant = |options: storage_s3::S3Options| storage_s3::S3Storage::new("bench", options);
    let unchecked =
        variant(storage_s3::S3Options { checksum: storage_s3::ChecksumMode::None, ..storage.options().clone() })
            .map_err(|e| e.to_string())?;
    let one_stream = variant(storage_s3::S3Options { parallel_read_threshold: 0, ..storage.options().clone() })
        .map_err(|e| e.to_string())?;
    let (store, counter) = raw_store(server, &bucket)?;
    // Each storage's first save asks once whether the server checks conditional writes.
    for warm in [&storage, &unchecked] {
        warm.save("warm-up", "x".into()).await.map_err(|e| e.to_string())?;
    }
    let curl = curl_available();
    let options = storage.options().clone();
    let requests = |side: Side| match side {
        Side::Save | Side::Read => storage.request_counts().iter().map(|(_, n)| n).sum::<u64>(),
        Side::SaveUnchecked => unchecked.request_counts().iter().map(|(_, n)| n).sum::<u64>(),
        Side::ReadOneStream => one_stream.request_counts().iter().map(|(_, n)| n).sum::<u64>(),
        Side::RawSave | Side::RawRead => counter.get(),
        Side::Curl => 0,
    };

    let mut results: Vec<(Side, Vec<Measured>)> = SAVES.iter().chain(&READS).map(|&s| (s, Vec::new())).collect();
    for round in 0..rounds {
        let name = |side: Side| format!("large/{round}-{}.bin", side as u8);
        // Rotate which side goes first, so that drift in the machine's load falls on all of them.
        let mut saves = SAVES.to_vec();
        saves.rotate_left(round % SAVES.len());
        for side in saves {
            let peak = Peak::start();
            let (started, cpu) = (Instant::now(), cpu_time());
            let before = requests(side);
            let saved = match side {
                Side::Save => storage.save(&name(side), Content::from_path(local.path())).await.map(drop),
                Side::SaveUnchecked => unchecked.save(&name(side), Content::from_path(local.path())).await.map(drop),
                _ => {
                    let part = options.multipart_chunksize as usize;
                    raw_put(&store, &Path::from(name(side)), local.path(), part, options.max_concurrency).await?;
                    Ok(())
                }
            };
            saved.map_err(|e| e.to_string())?;
            let measured = Measured {
                time: started.elapsed(),
                first_chunk: None,
                growth_mib: peak.growth_mib(),
                cpu: cpu_time().saturating_sub(cpu),
                requests: requests(side) - before,
            };
            if let Some((_, runs)) = results.iter_mut().find(|(s, _)| *s == side) {
                runs.push(measured);
            }
        }
        // Every read reads the object the default save stored.
        let object = name(Side::Save);
        let mut reads = READS.to_vec();
        reads.rotate_left(round % READS.len());
        for side in reads {
            if side == Side::Curl && !curl {
                continue;
            }
            let peak = Peak::start();
            let (started, cpu) = (Instant::now(), cpu_time());
            let before = requests(side);
            let (first_chunk, child_cpu) = match side {
                Side::Read | Side::ReadOneStream => {
                    let reader = if side == Side::Read { &storage } else { &one_stream };
                    let file = reader.open(&object).await.map_err(|e| e.to_string())?;
                    // As `storages get` and a server consume a file: the pieces as they come, no copy.
                    let stream = file.range_stream(0..file.size()).map_err(|e| e.to_string())?;
                    let stream = stream.map(|c| c.map(|c| c.len()).map_err(|e| e.to_string())).boxed();
                    (drain(stream, size, started).await?, None)
                }
                Side::RawRead => {
                    let result = store.get(&Path::from(object.clone())).await.map_err(|e| e.to_string())?;
                    let stream = result.into_stream().map(|c| c.map(|c| c.len()).map_err(|e| e.to_string()));
                    (drain(stream.boxed(), size, started).await?, None)
                }
                _ => {
                    let url = storage.url(&object).await.map_err(|e| e.to_string())?;
                    (None, Some(curl_cpu(&url)?))
                }
            };
            let measured = Measured {
                time: started.elapsed(),
                first_chunk,
                growth_mib: peak.growth_mib(),
                cpu: child_cpu.unwrap_or_else(|| cpu_time().saturating_sub(cpu)),
                requests: requests(side) - before,
            };
            if let Some((_, runs)) = results.iter_mut().find(|(s, _)| *s == side) {
                runs.push(measured);
            }
        }
    }

    let mib = size / MIB;
    let throughput = |runs: &[Measured]| {
        (size * runs.len()) as f64 / 1e6 / runs.iter().map(|m| m.time.as_secs_f64()).sum::<f64>().max(1e-9)
    };
    let growth = |runs: &[Measured]| runs.iter().map(|m| m.growth_mib).reduce(f64::max).unwrap_or(f64::NAN);
    let cpu =
        |runs: &[Measured]| runs.iter().map(|m| m.cpu.as_secs_f64()).sum::<f64>() / runs.len().max(1) as f64 * 1000.0;
    let first = |runs: &[Measured]| {
        let firsts: Vec<f64> = runs.iter().filter_map(|m| m.first_chunk.map(|d| d.as_secs_f64())).collect();
        (!firsts.is_empty()).then(|| firsts.iter().sum::<f64>() / firsts.len() as f64 * 1000.0)
    };
    let requests = |runs: &[Measured]| runs.iter().map(|m| m.requests).sum::<u64>() / runs.len().max(1) as u64;
    // The median over the rounds of each round's ratio: the two sides of a round ran one after the other, so
    // drift in the machine's load (large on a shared 2-core machine) falls on both.
    let ratio_of = |runs: &[Measured], reference: &[Measured]| {
        let mut ratios: Vec<f64> = runs
            .iter()
            .zip(reference)
            .map(|(run, reference)| reference.time.as_secs_f64() / run.time.as_secs_f64().max(1e-9))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let runs_of = |side: Side| results.iter().find(|(s, _)| *s == side).map_or(&[][..], |(_, runs)| runs);

    println!(
        "{:<28} {:>10} {:>7} {:>10} {:>9} {:>12} {:>9}",
        format!("{mib} MiB"),
        "MB/s",
        "ratio",
        "RSS (MiB)",
        "CPU (ms)",
        "first chunk",
        "requests"
    );
    let mut rows = Vec::new();
    for (side, runs) in &results {
        if runs.is_empty() {
            continue;
        }
        let reference = if SAVES.contains(side) { runs_of(Side::RawSave) } else { runs_of(Side::RawRead) };
        let ratio = ratio_of(runs, reference);
        let shown_first = first(runs).map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
        println!(
            "{:<28} {:>10.0} {:>7.2} {:>10.1} {:>9.0} {:>12} {:>9}",
            side.label(),
            throughput(runs),
            ratio,
            growth(runs),
            cpu(runs),
            shown_first,
            requests(runs)
        );
        rows.push(json!({
            "side": side.label().trim(),
            "bytes": size,
            "rounds": rounds,
            "mb_per_s": throughput(runs),
            "ratio": ratio,
            "rss_growth_mib": growth(runs),
            "cpu_ms": cpu(runs),
            "first_chunk_ms": first(runs),
            "requests": requests(runs),
        }));
    }
    let (save, raw_save) = (runs_of(Side::Save), runs_of(Side::RawSave));
    let (read, raw_read) = (runs_of(Side::Read), runs_of(Side::RawRead));
    let at = server.name;
    let save_ratio = ratio_of(save, raw_save);
    targets.push(Target {
        what: format!("save {mib} MiB on {at}: >= 0.95x object_store's put_multipart, RSS growth <= 64 MiB"),
        measured: format!("{save_ratio:.2}x, {:.1} MiB", growth(save)),
        met: save_ratio >= 0.95 && growth(save) <= RSS_LIMIT_MIB,
    });
    let read_ratio = ratio_of(read, raw_read);
    let (first_read, first_raw) = (first(read).unwrap_or(f64::NAN), first(raw_read).unwrap_or(f64::NAN));
    targets.push(Target {
        what: format!(
            "read {mib} MiB on {at}: >= 2x one GET stream, first chunk <= 2x its first, RSS growth <= 64 MiB"
        ),
        measured: format!(
            "{read_ratio:.2}x, first chunk {first_read:.1} ms against {first_raw:.1} ms, {:.1} MiB",
            growth(read)
        ),
        met: read_ratio >= 2.0 && first_read <= 2.0 * first_raw && growth(read) <= RSS_LIMIT_MIB,
    });
    let (one_stream, curl_runs) = (runs_of(Side::ReadOneStream), runs_of(Side::Curl));
    if !curl_runs.is_empty() {
        let (ours, theirs) = (cpu(one_stream), cpu(curl_runs));
        targets.push(Target {
            what: format!("read {mib} MiB on {at} as one stream: CPU <= curl's GET of the same object"),
            measured: format!("{ours:.0} ms against {theirs:.0} ms ({:.2}x)", ours / theirs.max(1e-9)),
            met: ours <= theirs,
        });
    }
    Ok(Value::Array(rows))
}

/// Reads `stream` to its end, checking that it held `size` bytes: when its first MiB had come (the pieces of
/// the streams differ in size, so their count is no fair measure).
async fn drain(
    mut stream: futures::stream::BoxStream<'_, Result<usize, String>>,
    size: usize,
    started: Instant,
) -> Result<Option<Duration>, String> {
    let mut first_chunk = None;
    let mut read = 0;
    while let Some(len) = stream.next().await {
        read += len?;
        if read >= MIB.min(size) {
            first_chunk.get_or_insert_with(|| started.elapsed());
        }
    }
    if read != size {
        return Err(format!("read {read} bytes of {size}"));
    }
    Ok(first_chunk)
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

/// The CPU time (user and system, all threads) this process has used, to the nanosecond (/proc's ticks are 10 ms,
/// a tenth of what a stream of 256 MiB costs).
fn cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// curl's CPU time (user and system) for a GET of `url` to /dev/null, as bash's `times` reports its children.
fn curl_cpu(url: &str) -> Result<Duration, String> {
    let output = std::process::Command::new("bash")
        .args(["-c", r#"curl -sf -o /dev/null "$1" && times"#, "curl", url])
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `times` prints the shell's times, then its children's: `0m0.010s 0m0.020s`.
    let children = text.lines().nth(1).filter(|_| output.status.success()).ok_or("curl's GET failed")?;
    let seconds = |field: &str| -> f64 {
        let (minutes, rest) = field.split_once('m').unwrap_or(("0", field));
        minutes.parse::<f64>().unwrap_or(0.0) * 60.0 + rest.trim_end_matches('s').parse::<f64>().unwrap_or(0.0)
    };
    Ok(Duration::from_secs_f64(children.split_whitespace().map(seconds).sum()))
}
