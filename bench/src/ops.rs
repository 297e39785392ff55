//! 1 KiB operations: the `Storage` API of `S3Storage` against raw object_store calls doing the same job with
//! the fewest requests, sequential and with 16 tasks, in interleaved rounds.

use crate::{Server, Setup, Target, random_bytes, raw_store, s3_storage};
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::aws::AmazonS3;
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use storage_core::Storage;

/// Requests a raw object_store client sent: every one passes its connector.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl HttpConnector for Counter {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counted { inner, count: self.0.clone() }))
    }
}

#[derive(Debug)]
struct Counted {
    inner: HttpClient,
    count: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl HttpService for Counted {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.execute(request).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Save,
    /// A save with `checksum = "none"`: no `Content-MD5` for the server to verify, as raw object_store sends.
    SaveUnchecked,
    Exists,
    OpenRead,
    Size,
    Delete,
    Url,
}

const OPS: [(Op, &str); 7] = [
    (Op::Save, "save"),
    (Op::SaveUnchecked, "save, checksum none"),
    (Op::Exists, "exists"),
    (Op::OpenRead, "open+read"),
    (Op::Size, "size"),
    (Op::Delete, "delete"),
    (Op::Url, "url"),
];

/// Objects the read-only operations work on.
const FIXTURES: usize = 64;
const TASKS: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Project,
    Raw,
}

#[derive(Clone)]
struct Sides {
    storage: Arc<storage_s3::S3Storage>,
    /// The same bucket with `checksum = "none"`.
    unchecked: Arc<storage_s3::S3Storage>,
    store: Arc<AmazonS3>,
    counter: Counter,
    content: Bytes,
}

impl Sides {
    fn requests(&self, side: Side) -> u64 {
        match side {
            Side::Project => {
                [&self.storage, &self.unchecked].iter().flat_map(|s| s.request_counts()).map(|(_, n)| n).sum()
            }
            Side::Raw => self.counter.get(),
        }
    }

    /// One operation on object `i` of a batch tagged `tag`.
    fn op(&self, op: Op, side: Side, tag: &str, i: usize) -> BoxFuture<'static, Result<(), String>> {
        let storage = if op == Op::SaveUnchecked { self.unchecked.clone() } else { self.storage.clone() };
        let (store, content) = (self.store.clone(), self.content.clone());
        let fixture = format!("fixture/{}.txt", i % FIXTURES);
        let own = match op {
            Op::Save => format!("save/{tag}/{i}.txt"),
            Op::SaveUnchecked => format!("save-unchecked/{tag}/{i}.txt"),
            _ => format!("delete/{tag}/{i}.txt"),
        };
        Box::pin(async move {
            let fail = |e: &dyn std::fmt::Display| format!("{op:?} on {:?}: {e}", side_name(side));
            match (op, side) {
                (Op::Save | Op::SaveUnchecked, Side::Project) => {
                    storage.save(&own, content.into()).await.map(drop).map_err(|e| fail(&e))
                }
                (Op::Save | Op::SaveUnchecked, Side::Raw) => {
                    let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                    store.put_opts(&Path::from(own), content.into(), options).await.map(drop).map_err(|e| fail(&e))
                }
                (Op::Exists, Side::Project) => match storage.exists(&fixture).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(fail(&"a fixture is missing")),
                    Err(e) => Err(fail(&e)),
                },
                (Op::Exists | Op::Size, Side::Raw) => {
                    store.head(&Path::from(fixture)).await.map(drop).map_err(|e| fail(&e))
                }
                (Op::OpenRead, Side::Project) => {
                    let file = storage.open(&fixture).await.map_err(|e| fail(&e))?;
                    let bytes = file.read_all().await.map_err(|e| fail(&e))?;
                    if bytes.len() == content.len() { Ok(()) } else { Err(fail(&"a short read")) }
                }
                (Op::OpenRead, Side::Raw) => {
                    let result = store.get(&Path::from(fixture)).await.map_err(|e| fail(&e))?;
                    let bytes = result.bytes().await.map_err(|e| fail(&e))?;
                    if bytes.len() == content.len() { Ok(()) } else { Err(fail(&"a short read")) }
                }
                (Op::Size, Side::Project) => storage.size(&fixture).await.map(drop).map_err(|e| fail(&e)),
                (Op::Delete, Side::Project) => storage.delete(&own).await.map_err(|e| fail(&e)),
                (Op::Delete, Side::Raw) => store.delete(&Path::from(own)).await.map_err(|e| fail(&e)),
                (Op::Url, Side::Project) => storage.url(&fixture).await.map(drop).map_err(|e| fail(&e)),
                (Op::Url, Side::Raw) => store
                    .signed_url(http::Method::GET, &Path::from(fixture), Duration::from_secs(3600))
                    .await
                    .map(drop)
                    .map_err(|e| fail(&e)),
            }
        })
    }

    /// `n` operations, one after another or spread over 16 tasks; the time they took.
    async fn batch(&self, op: Op, side: Side, tag: &str, n: usize, concurrent: bool) -> Result<Duration, String> {
        let started = Instant::now();
        if !concurrent {
            for i in 0..n {
                self.op(op, side, tag, i).await?;
            }
            return Ok(started.elapsed());
        }
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (sides, next, tag) = (self.clone(), next.clone(), tag.to_string());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok::<(), String>(());
                        }
                        sides.op(op, side, &tag, i).await?;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.map_err(|e| format!("a task failed: {e}"))??;
        }
        Ok(started.elapsed())
    }

    /// The objects a delete batch removes, stored beforehand (not timed, not counted).
    async fn prepare_deletes(&self, tag: &str, n: usize) -> Result<(), String> {
        let store = self.store.clone();
        let content = self.content.clone();
        futures::future::try_join_all((0..n).map(|i| {
            let (store, content) = (store.clone(), content.clone());
            let path = Path::from(format!("delete/{tag}/{i}.txt"));
            async move { store.put(&path, content.into()).await.map(drop).map_err(|e| e.to_string()) }
        }))
        .await
        .map(drop)
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Project => "storages",
        Side::Raw => "object_store",
    }
}

/// Totals of one side over the rounds.
#[derive(Default)]
struct Tally {
    ops: usize,
    time: Duration,
    requests: u64,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.time.as_secs_f64().max(1e-9)
    }

    fn requests_per_op(&self) -> f64 {
        self.requests as f64 / self.ops.max(1) as f64
    }
}

pub async fn run(setup: &Setup, server: &Server, targets: &mut Vec<Target>) -> Result<Value, String> {
    let bucket = crate::fresh_bucket("bench-ops");
    let storage = Arc::new(s3_storage(server, &bucket)?);
    let unchecked = storage_s3::S3Options { checksum: storage_s3::ChecksumMode::None, ..storage.options().clone() };
    let unchecked = Arc::new(storage_s3::S3Storage::new("bench", unchecked).map_err(|e| e.to_string())?);
    let (store, counter) = raw_store(server, &bucket)?;
    let content = Bytes::from(random_bytes(1024, 1));
    let sides = Sides { storage, unchecked, store: Arc::new(store), counter, content };
    sides.unchecked.exists("warm-up").await.map_err(|e| e.to_string())?;
    // The first operation creates the bucket; then the fixtures.
    sides.storage.exists("warm-up").await.map_err(|e| e.to_string())?;
    for i in 0..FIXTURES {
        let path = Path::from(format!("fixture/{i}.txt"));
        sides.store.put(&path, sides.content.clone().into()).await.map_err(|e| e.to_string())?;
    }
    // Warm both clients' connections.
    for side in [Side::Project, Side::Raw] {
        sides.batch(Op::Exists, side, "warm", TASKS, true).await?;
    }
    // Each storage's first save asks once whether the server checks conditional writes (3 requests); that is
    // done before measuring.
    sides.batch(Op::Save, Side::Project, "warm", TASKS, true).await?;
    sides.batch(Op::SaveUnchecked, Side::Project, "warm", TASKS, true).await?;

    let (rounds, sequential, concurrent) = if setup.quick { (2, 10, 32) } else { (12, 50, 200) };
    println!(
        "{:<20} {:<11} {:>12} {:>14} {:>7} {:>13} {:>13}",
        "operation", "mode", "storages/s", "object_store/s", "ratio", "requests/op", "(object_store)"
    );
    let mut rows = Vec::new();
    for (op, label) in OPS {
        for (mode, concurrent_mode, n) in [("sequential", false, sequential), ("16 tasks", true, concurrent)] {
            // Signing is local and fast: more of it, for a measurable time.
            let n = if op == Op::Url { n * 50 } else { n };
            let mut tallies = [Tally::default(), Tally::default()];
            for round in 0..rounds {
                // Alternate which side goes first, so that drift in the machine's load falls on both.
                let order = if round % 2 == 0 { [Side::Project, Side::Raw] } else { [Side::Raw, Side::Project] };
                for side in order {
                    let tag = format!("{}-{mode}-{round}", side_name(side)).replace(' ', "");
                    if op == Op::Delete {
                        sides.prepare_deletes(&tag, n).await?;
                    }
                    let before = sides.requests(side);
                    let time = sides.batch(op, side, &tag, n, concurrent_mode).await?;
                    let tally = &mut tallies[side as usize];
                    tally.ops += n;
                    tally.time += time;
                    tally.requests += sides.requests(side) - before;
                }
            }
            let [project, raw] = tallies;
            let ratio = project.per_second() / raw.per_second();
            println!(
                "{label:<20} {mode:<11} {:>12.0} {:>14.0} {:>7.2} {:>13.2} {:>13.2}",
                project.per_second(),
                raw.per_second(),
                ratio,
                project.requests_per_op(),
                raw.requests_per_op()
            );
            // The checksum-free save shows what `Content-MD5` costs the server; the targets are the defaults'.
            if op != Op::SaveUnchecked {
                targets.push(Target {
                    what: format!("{label} ({mode}): ratio >= 0.95 with the same requests per operation"),
                    measured: format!(
                        "ratio {ratio:.2}, {:.2} requests/op against {:.2}",
                        project.requests_per_op(),
                        raw.requests_per_op()
                    ),
                    met: ratio >= 0.95 && (project.requests_per_op() - raw.requests_per_op()).abs() < 0.005,
                });
            }
            rows.push(json!({
                "operation": label,
                "mode": mode,
                "operations": project.ops,
                "storages_ops_per_s": project.per_second(),
                "object_store_ops_per_s": raw.per_second(),
                "ratio": ratio,
                "storages_requests_per_op": project.requests_per_op(),
                "object_store_requests_per_op": raw.requests_per_op(),
            }));
        }
    }
    Ok(Value::Array(rows))
}
