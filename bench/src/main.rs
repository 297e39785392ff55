//! The benchmark behind `cargo xtask bench` (which builds it in release mode, starts moto and s3s-fs and runs
//! it).
//!
//! One run, side by side, interleaved so that a busy machine slows both sides alike:
//! - 1 KiB operations (save, exists, open+read, size, delete, url) on moto: the `Storage` API of `S3Storage`
//!   against raw object_store calls doing the least requests for the same job, sequential and with 16 tasks
//!   (not on s3s-fs, whose small answers stall without TCP_NODELAY: that would measure the server);
//! - 256 MiB save and read on each server: throughput, peak RSS growth, CPU time, time to the first chunk of a
//!   read;
//! - collectstatic of 2,000 generated files to each server (the `storages` command): first run, rerun, rerun
//!   after 10 changes, with the requests each made;
//! - the cache layer over S3 on moto against the same storage uncached;
//! - the filesystem backend's save and read against `std::fs::copy` of the same files.
//!
//! It prints tables and the targets met or missed, and writes the figures as JSON to `$STORAGES_BENCH_OUT`.
//! Ratios are the project's throughput over the reference's: above 1 the project is faster.

mod cache;
mod collectstatic;
mod fs;
mod large;
mod ops;

use serde_json::{Value, json};
use std::time::Duration;

/// What the run was given by `cargo xtask bench`.
pub struct Setup {
    /// The servers, moto first.
    pub servers: Vec<Server>,
    /// The `storages` command (release build).
    pub cli: std::path::PathBuf,
    /// Smaller sizes and fewer rounds, to try the benchmark quickly.
    pub quick: bool,
    /// The sections to run (`--only=large,collectstatic`); all when empty.
    pub only: Vec<String>,
}

impl Setup {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// An S3 server the bench runs against.
pub struct Server {
    /// `moto` or `s3s-fs`.
    pub name: &'static str,
    /// Where it listens.
    pub endpoint: String,
    /// The credentials it accepts.
    pub access_key: String,
    /// The secret of `access_key`.
    pub secret_key: String,
}

/// A target of the issue the bench checks: what it says, what was measured, and whether it holds.
pub struct Target {
    /// The target, in words.
    pub what: String,
    /// What this run measured.
    pub measured: String,
    /// Whether the measurement meets the target.
    pub met: bool,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set: run `cargo xtask bench`"));
    let setup = (|| -> Result<Setup, String> {
        let moto = Server {
            name: "moto",
            endpoint: var("STORAGES_TEST_MOTO_ENDPOINT")?,
            access_key: "AKIDBENCH".into(),
            secret_key: "bench".into(),
        };
        let s3s = Server {
            name: "s3s-fs",
            endpoint: var("STORAGES_TEST_S3S_ENDPOINT")?,
            access_key: var("STORAGES_TEST_S3S_ACCESS_KEY")?,
            secret_key: var("STORAGES_TEST_S3S_SECRET_KEY")?,
        };
        Ok(Setup {
            servers: vec![moto, s3s],
            cli: var("STORAGES_BENCH_CLI")?.into(),
            quick: args.iter().any(|a| a == "--quick"),
            only: args
                .iter()
                .filter_map(|a| a.strip_prefix("--only="))
                .flat_map(|list| list.split(',').map(String::from))
                .collect(),
        })
    })();
    let out = std::env::var_os("STORAGES_BENCH_OUT").map(std::path::PathBuf::from);
    let check = args.iter().any(|a| a == "--check");
    let result = setup.and_then(|setup| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(run(&setup))
    });
    match result {
        Ok((report, targets)) => {
            let missed: Vec<&Target> = targets.iter().filter(|t| !t.met).collect();
            println!("\ntargets: {} of {} met", targets.len() - missed.len(), targets.len());
            for target in &targets {
                println!("  [{}] {}: {}", if target.met { "met" } else { "MISSED" }, target.what, target.measured);
            }
            if let Some(out) = out {
                if let Err(error) = write_report(&out, &report, &targets) {
                    eprintln!("bench: cannot write the report under {}: {error}", out.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            if check && !missed.is_empty() {
                eprintln!("bench: {} target(s) missed", missed.len());
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(setup: &Setup) -> Result<(Value, Vec<Target>), String> {
    let mut targets = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("quick".into(), json!(setup.quick));

    let moto = &setup.servers[0];
    if setup.runs("operations") {
        println!("== 1 KiB operations on S3 (moto): storages' Storage API / raw object_store ==");
        report.insert("operations".into(), ops::run(setup, moto, &mut targets).await?);
    }
    let (mut large, mut collectstatic) = (serde_json::Map::new(), serde_json::Map::new());
    for server in setup.servers.iter().filter(|_| setup.runs("large")) {
        println!("\n== large objects on S3 ({}): storages / raw object_store ==", server.name);
        large.insert(server.name.into(), large::run(setup, server, &mut targets).await?);
    }
    for server in setup.servers.iter().filter(|_| setup.runs("collectstatic")) {
        println!("\n== collectstatic to S3 ({}), the storages command ==", server.name);
        collectstatic.insert(server.name.into(), collectstatic::run(setup, server, &mut targets).await?);
    }
    report.insert("large".into(), Value::Object(large));
    report.insert("collectstatic".into(), Value::Object(collectstatic));
    if setup.runs("cache") {
        println!("\n== the cache layer over S3 (moto) / the same storage uncached ==");
        report.insert("cache".into(), cache::run(setup, moto, &mut targets).await?);
    }
    if setup.runs("fs") {
        println!("\n== the filesystem backend / std::fs::copy of the same files ==");
        report.insert("fs".into(), fs::run(setup).await?);
    }
    Ok((Value::Object(report), targets))
}

fn write_report(dir: &std::path::Path, report: &Value, targets: &[Target]) -> std::io::Result<()> {
    let mut report = report.clone();
    report["targets"] =
        targets.iter().map(|t| json!({"target": t.what, "measured": t.measured, "met": t.met})).collect();
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    let stamped = dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&stamped, &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    println!("\nbench: figures written to {} (and latest.json beside it)", stamped.display());
    Ok(())
}

/// The process's resident memory, for peak-growth measurements over one phase.
pub mod memory {
    /// A value of /proc/self/status, in bytes.
    fn status(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    }

    /// A phase whose peak resident memory is measured from now on. (Memory the allocator keeps from an earlier
    /// phase is reused without growth: the sides alternate which goes first, and the larger figure is shown.)
    pub struct Peak {
        baseline: Option<u64>,
    }

    impl Peak {
        /// Resets the kernel's peak (VmHWM) to the current resident size and remembers that size.
        pub fn start() -> Self {
            let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            Peak { baseline: status("VmRSS:").filter(|_| reset) }
        }

        /// How far the peak rose above the start, in MiB (NaN where the peak cannot be reset).
        pub fn growth_mib(&self) -> f64 {
            match (self.baseline, status("VmHWM:")) {
                (Some(baseline), Some(peak)) => peak.saturating_sub(baseline) as f64 / (1024.0 * 1024.0),
                _ => f64::NAN,
            }
        }
    }
}

/// Pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// A bucket name no other run uses.
pub fn fresh_bucket(prefix: &str) -> String {
    let random: String = std::iter::repeat_with(fastrand::lowercase).take(10).collect();
    format!("{prefix}-{random}")
}

/// The S3 storage the bench measures: default settings, a fresh bucket on `server`.
pub fn s3_storage(server: &Server, bucket: &str) -> Result<storage_s3::S3Storage, String> {
    storage_s3::S3Storage::new("bench", s3_options(server, bucket)).map_err(|e| e.to_string())
}

/// The options of [`s3_storage`].
pub fn s3_options(server: &Server, bucket: &str) -> storage_s3::S3Options {
    storage_s3::S3Options {
        bucket_name: bucket.into(),
        endpoint_url: Some(server.endpoint.clone()),
        access_key: Some(server.access_key.clone()),
        secret_key: Some(server.secret_key.as_str().into()),
        auto_create_bucket: true,
        request_timeout: 600.0,
        ..storage_s3::S3Options::default()
    }
}

/// Raw object_store on the same bucket, counting its requests.
pub fn raw_store(server: &Server, bucket: &str) -> Result<(object_store::aws::AmazonS3, ops::Counter), String> {
    let counter = ops::Counter::default();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(&server.endpoint)
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(&server.secret_key)
        .with_client_options(
            object_store::ClientOptions::new().with_allow_http(true).with_timeout(Duration::from_secs(600)),
        )
        .with_http_connector(counter.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((store, counter))
}
