//! A 1 GiB save from a local file and its read back through `chunks`, with the process's peak memory measured.
//! (Its own test binary, so that no other test shares the process's memory.) It runs on s3s-fs, where the read
//! is the default one, in concurrent ranged GETs; moto serves each range by reading the whole object.

mod support;

use futures::StreamExt;
use std::io::Write;
use storage_core::{Content, Storage};

const MIB: usize = 1024 * 1024;
const SIZE: usize = 1024 * MIB;

/// One MiB of pseudo-random bytes, different for every block index.
fn block(index: usize) -> Vec<u8> {
    let mut block = vec![0; MIB];
    fastrand::Rng::with_seed(index as u64 + 1).fill(&mut block);
    block
}

/// A value of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_both_ways_in_bounded_memory() {
    let server = support::s3s();
    let storage = server.storage(server.options());

    let mut local = tempfile::NamedTempFile::new().expect("temp file");
    for index in 0..SIZE / MIB {
        local.write_all(&block(index)).expect("write");
    }
    local.flush().expect("flush");

    // Reset the peak to the current resident size, then measure the peak over the save and the read.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let baseline = status_kib("VmRSS:");
    let started = std::time::Instant::now();
    let name = storage.save("big/gibibyte.bin", Content::from_path(local.path())).await.expect("save");
    let saved = started.elapsed();
    let save_peak = status_kib("VmHWM:");
    // The read's own peak, from what the process holds after the save (the allocator keeps memory the save
    // freed, in the arenas of the threads that used it).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let read_baseline = status_kib("VmRSS:");

    let file = storage.open(&name).await.expect("open");
    assert_eq!(file.size(), SIZE as u64);
    // Each chunk is compared with the same MiB of the local file (read, not generated again: the comparison
    // stays cheap next to the transfer).
    let mut expected = std::fs::File::open(local.path()).expect("open the local file");
    let mut block = vec![0; MIB];
    let mut chunks = file.chunks(MIB);
    let mut index = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("chunk");
        std::io::Read::read_exact(&mut expected, &mut block).expect("read the local file");
        assert!(chunk[..] == block[..], "block {index} differs");
        index += 1;
    }
    assert_eq!(index, SIZE / MIB);
    let peak = status_kib("VmHWM:");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let save_growth = mib(save_peak.saturating_sub(baseline));
    let read_growth = mib(peak.saturating_sub(read_baseline));
    let total_growth = mib(peak.max(save_peak).saturating_sub(baseline));
    let line = format!(
        "1 GiB from a file to S3 (s3s-fs) and back, read in ranges, through chunks: saved in {saved:.1?}, read in {:.1?}; RSS growth: save {save_growth:.1} MiB, read {read_growth:.1} MiB (limit 64 each), both {total_growth:.1} MiB (limit 96), from a baseline of {:.1} MiB",
        started.elapsed() - saved,
        mib(baseline),
    );
    storage_testkit::report(&line);
    assert!(save_growth < 64.0, "the save grew the peak RSS by {save_growth:.1} MiB");
    assert!(read_growth < 64.0, "the read grew the peak RSS by {read_growth:.1} MiB");
    // What one phase freed and the allocator kept need not serve the other: at most the two bounds.
    assert!(total_growth < 96.0, "the save and the read grew the peak RSS by {total_growth:.1} MiB");
    storage.delete(&name).await.expect("delete");
}
