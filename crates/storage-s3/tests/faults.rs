//! Outcomes are never wrong, even through faults: saves and reads through a loopback proxy in front of moto that
//! fails 10 % and then 30 % of all requests in every way a network and a busy service do (503 SlowDown, 500, a
//! reset before the request body and one after the server did the work, a stall past `request_timeout`, a 200
//! whose body is an error document). Then, seen directly on moto: a save that answered OK stored exactly one
//! object, under the name it returned, with its content; one that failed stored nothing; no read returned wrong
//! content; no multipart upload is pending.

mod support;

use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use storage_core::{Content, Storage};
use storage_s3::{ConditionalWrites, S3Options};
use support::moto;
use support::proxy::{Fault, Proxy, Rule};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;
const SAVES: usize = 48;

/// Save `id`'s content: its id first (to find whose an object is), then bytes of its own.
fn content(id: usize, len: usize) -> Vec<u8> {
    let mut bytes = format!("save {id:04}:").into_bytes();
    let seed = fastrand::u64(..);
    bytes.extend((0..len.saturating_sub(bytes.len())).map(|i| (seed.wrapping_add(i as u64 * 7919) >> 3) as u8));
    bytes
}

fn owner(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes.get(5..9)?).ok()?.parse().ok()
}

/// A save: the name asked for, the content given, and what the save answered.
struct Saved {
    id: usize,
    name: String,
    bytes: Vec<u8>,
    result: storage_core::Result<String>,
}

/// One save of one of four kinds: small bytes, small bytes of one shared name (alternative names under
/// faults), a large file (parts), a large stream through `open_write` (staged, then copied).
async fn save(storage: Arc<dyn Storage>, id: usize, dir: &std::path::Path) -> Saved {
    let (name, bytes) = match id % 4 {
        0 => (format!("small/{id}.txt"), content(id, 2000)),
        1 => ("shared.txt".to_owned(), content(id, 3000)),
        2 => (format!("large/{id}.bin"), content(id, 12 * MIB)),
        _ => (format!("stream/{id}.bin"), content(id, 7 * MIB)),
    };
    let result = match id % 4 {
        2 => {
            let path = dir.join(format!("{id}.bin"));
            std::fs::write(&path, &bytes).expect("write the local file");
            storage.save(&name, Content::from_path(path)).await
        }
        3 => {
            async {
                let mut writer = storage.open_write(&name).await?;
                for piece in bytes.chunks(MIB) {
                    writer.write_all(piece).await.map_err(|e| storage_core::Error::io("s3", "save", &name, e))?;
                }
                writer.commit().await
            }
            .await
        }
        _ => storage.save(&name, bytes.clone().into()).await,
    };
    Saved { id, name, bytes, result }
}

async fn outcomes_hold_at(percent: u8) {
    let server = moto();
    let rules = vec![Rule { method: "", target_contains: "", occurrences: Vec::new(), fault: Fault::Random(percent) }];
    let proxy = Proxy::start(&server.endpoint, rules, None).await;
    let direct_options = server.options();
    let bucket = direct_options.bucket_name.clone();
    let direct = server.storage(direct_options.clone());
    assert!(!direct.exists("nothing").await.expect("the bucket, made directly"));
    let options = S3Options {
        endpoint_url: Some(proxy.endpoint.clone()),
        auto_create_bucket: false,
        conditional_writes: ConditionalWrites::On,
        // Enough that a request failing for good is rare at 30 %; a stall ends after 2 s without a byte.
        max_retries: 8,
        request_timeout: 2.0,
        multipart_threshold: 5 * MIB as u64,
        multipart_chunksize: 5 * MIB as u64,
        parallel_read_threshold: 5 * MIB as u64,
        ..direct_options
    };
    let faulty: Arc<dyn Storage> = Arc::new(server.storage(options));
    let dir = tempfile::tempdir().expect("tempdir");

    // Eight at once, as collectstatic would.
    let mut outcomes: Vec<Saved> = futures::stream::iter(0..SAVES)
        .map(|id| {
            let (storage, dir) = (faulty.clone(), dir.path().to_path_buf());
            async move { save(storage, id, &dir).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    outcomes.sort_by_key(|saved| saved.id);
    faulty.settle().await;

    // What the storage holds, seen directly: whose each object is.
    let mut stored: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for file in direct.list_files("").await.expect("list directly") {
        let bytes = direct.open(&file.name).await.expect("open directly").read_all().await.expect("read directly");
        match owner(&bytes) {
            Some(id) => stored.entry(id).or_default().push(file.name),
            None => unknown.push(file.name),
        }
    }
    let (mut orphans, mut duplicates, mut wrong_outcomes, mut wrong_reads, mut failed_reads) = (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    for Saved { id, name, bytes, result } in &outcomes {
        let held = stored.get(id).cloned().unwrap_or_default();
        match result {
            Ok(returned) => {
                if held.len() > 1 {
                    duplicates += held.len() - 1;
                    problems.push(format!("save {id} of {name}: stored as {held:?}"));
                }
                if !held.contains(returned) {
                    wrong_outcomes += 1;
                    problems.push(format!("save {id} answered {returned} but stored {held:?}"));
                }
                match faulty.open(returned).await {
                    Ok(file) => match file.read_all().await {
                        Ok(read) if read == bytes.as_slice() => {}
                        Ok(read) => {
                            wrong_reads += 1;
                            let start = String::from_utf8_lossy(&read[..read.len().min(80)]).into_owned();
                            problems.push(format!(
                                "read of {returned} (save {id}) returned other content: {} bytes instead of {}, \
                                 starting {start:?}",
                                read.len(),
                                bytes.len()
                            ));
                        }
                        Err(_) => failed_reads += 1,
                    },
                    Err(_) => failed_reads += 1,
                }
            }
            Err(error) => {
                if !held.is_empty() {
                    orphans += held.len();
                    problems.push(format!("save {id} of {name} failed ({error}) but stored {held:?}"));
                }
            }
        }
    }
    let failed_saves = outcomes.iter().filter(|saved| saved.result.is_err()).count();
    let retries = faulty.metrics().retries;
    let uploads = server.settled_uploads(&bucket).await;
    let keys = server.all_keys(&bucket);
    let staged = keys.matches(".storages-staging/").count();
    let claims = keys.matches(".storages-staging/claims/").count();
    storage_testkit::report(&format!(
        "faults at {percent} % (moto, {} faults injected, {retries} retries): {SAVES} saves ({failed_saves} failed), \
         orphans {orphans}, \
         duplicates {duplicates}, wrong outcomes {wrong_outcomes}, wrong reads {wrong_reads} ({failed_reads} reads \
         failed), pending uploads {}, staging objects {} and claims {claims} left",
        proxy.injected.load(std::sync::atomic::Ordering::SeqCst),
        uploads.matches('"').count() / 2,
        staged - claims,
    ));
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > 0, "no fault was injected");
    assert!(retries > 0, "faults were injected but no request was retried");
    assert!(unknown.is_empty(), "objects of no save: {unknown:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        uploads,
        "[]",
        "pending multipart uploads: {}",
        server.boto3(&bucket, "print(s3.list_multipart_uploads(Bucket=bucket).get('Uploads', []))")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_true_at_10_percent_faults() {
    outcomes_hold_at(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_true_at_30_percent_faults() {
    outcomes_hold_at(30).await;
}
