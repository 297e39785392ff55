//! `storages collectstatic` of 2,000 generated files to S3, as a user runs it: the first run, a rerun with
//! nothing changed, and a rerun after changing 10 files, each timed with the requests it reports (`--stats`).

use crate::{Server, Setup, Target};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// What one run printed and took.
struct Run {
    label: &'static str,
    seconds: f64,
    summary: String,
    requests: BTreeMap<String, u64>,
}

impl Run {
    fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

pub async fn run(setup: &Setup, server: &Server, targets: &mut Vec<Target>) -> Result<Value, String> {
    let files = if setup.quick { 200 } else { 2000 };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let site = dir.path().join("site");
    let kinds = ["css", "js", "txt", "svg"];
    for i in 0..files {
        let path = site.join(format!("d{}/f{i:04}.{}", i % 20, kinds[i % kinds.len()]));
        std::fs::create_dir_all(path.parent().unwrap_or(&site)).map_err(|e| e.to_string())?;
        let len = 200 + (i * 37) % 3800;
        let text: String = std::iter::repeat_with(fastrand::alphanumeric).take(len).collect();
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    let bucket = crate::fresh_bucket("bench-static");
    let mut runs = vec![collect(setup, server, dir.path(), &site, &bucket, "first run")?];
    runs.push(collect(setup, server, dir.path(), &site, &bucket, "rerun, nothing changed")?);
    for i in 0..10 {
        let path = site.join(format!("d{}/f{:04}.{}", (i * 7) % 20, (i * 7), kinds[(i * 7) % kinds.len()]));
        let mut text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        text.push_str("\nchanged");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    runs.push(collect(setup, server, dir.path(), &site, &bucket, "rerun, 10 changed")?);

    println!("{:<24} {:>9} {:>9}  {:<40} collectstatic said", "run", "seconds", "requests", "by kind");
    let mut rows = Vec::new();
    for run in &runs {
        let kinds: Vec<String> = run.requests.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("{:<24} {:>9.2} {:>9}  {:<40} {}", run.label, run.seconds, run.total(), kinds.join(", "), run.summary);
        rows.push(json!({
            "run": run.label,
            "files": files,
            "seconds": run.seconds,
            "requests": run.total(),
            "requests_by_kind": run.requests,
            "summary": run.summary,
        }));
    }
    let rerun = &runs[1];
    // A listing answers 1,000 keys per request; one more request may read what the storage recorded.
    let limit = 3;
    targets.push(Target {
        what: format!("collectstatic rerun of {files} unchanged files on {}: <= 3 requests, no upload", server.name),
        measured: format!("{} requests", rerun.total()),
        met: rerun.total() <= limit && !rerun.requests.contains_key("PUT"),
    });
    Ok(Value::Array(rows))
}

/// One `storages collectstatic SITE --stats` to `bucket` on `server`, in `cwd` (no settings file there: the
/// environment says everything, as in the README).
fn collect(
    setup: &Setup,
    server: &Server,
    cwd: &Path,
    site: &Path,
    bucket: &str,
    label: &'static str,
) -> Result<Run, String> {
    let mut command = std::process::Command::new(&setup.cli);
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") || key.starts_with("STORAGES") || key.ends_with("_STORAGE") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(cwd)
        .arg("collectstatic")
        .arg(site)
        .arg("--stats")
        .env("STATICFILES_STORAGE", "storages.backends.s3.S3Storage")
        .env("AWS_STORAGE_BUCKET_NAME", bucket)
        .env("AWS_S3_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env("AWS_AUTO_CREATE_BUCKET", "true");
    let started = Instant::now();
    let output = command.output().map_err(|e| format!("cannot run {}: {e}", setup.cli.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "collectstatic failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let summary = stdout.lines().next().unwrap_or_default().to_string();
    // `requests: 3 (HEAD 1, LIST 2)`
    let line = stdout.lines().find_map(|l| l.strip_prefix("requests: ")).ok_or("collectstatic printed no requests")?;
    let kinds = line.split_once('(').map_or("", |(_, rest)| rest.trim_end_matches(')'));
    let requests = kinds
        .split(", ")
        .filter_map(|pair| pair.rsplit_once(' '))
        .filter_map(|(kind, n)| Some((kind.to_string(), n.parse().ok()?)))
        .collect();
    Ok(Run { label, seconds, summary, requests })
}
