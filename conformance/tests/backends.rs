//! Every scenario of storage-testkit against every registered backend, one trial each. The backends come from
//! the registry: one registered without a configuration below fails. With `STORAGES_MATRIX_FILE` set, the
//! outcomes are written there (backend, scenario, outcome per line) for `cargo xtask test-backends` to print.

use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use storage_core::{Settings, Storages};
use storage_testkit::{Fixture, Outcome, SCENARIOS};

// Linked so that they register.
use storage_cache as _;
use storage_fs as _;
use storage_s3 as _;

/// The settings a backend is tested with, and the fixture around the storage built from them.
/// The cache, a layer: its rows wrap each of these backends.
const CACHE: &str = "storages.backends.cache.CachedStorage";
const UNDER_CACHE: [&str; 3] = [
    "storages.backends.memory.InMemoryStorage",
    "storages.backends.fs.FileSystemStorage",
    "storages.backends.s3.S3Storage",
];

/// A row of the matrix: a backend, or a layer over a backend.
#[derive(Clone)]
struct Row {
    name: String,
    path: &'static str,
    inner: Option<&'static str>,
}

fn rows(paths: Vec<&'static str>) -> Vec<Row> {
    let mut rows = Vec::new();
    for path in paths {
        match path {
            CACHE => rows.extend(UNDER_CACHE.iter().map(|inner| Row {
                name: format!("cache/{}", short(inner)),
                path,
                inner: Some(inner),
            })),
            _ => rows.push(Row { name: short(path).to_string(), path, inner: None }),
        }
    }
    rows
}

fn fixture(row: &Row) -> Result<Fixture, String> {
    Ok(configured(row)?.regressions(env!("CARGO_MANIFEST_DIR")))
}

/// The settings table of a storage `alias` of the backend `path`, and the directory it writes in, if any.
fn table(alias: &str, path: &str) -> Result<(String, Option<tempfile::TempDir>), String> {
    match path {
        "storages.backends.memory.InMemoryStorage" => Ok((format!("[storages.{alias}]\nbackend = {path:?}\n"), None)),
        "storages.backends.fs.FileSystemStorage" => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let location = dir.path().join("media").display().to_string();
            Ok((format!("[storages.{alias}]\nbackend = {path:?}\nlocation = {location:?}\n"), Some(dir)))
        }
        "storages.backends.s3.S3Storage" => {
            let endpoint = std::env::var("STORAGES_TEST_MOTO_ENDPOINT").map_err(|_| {
                "STORAGES_TEST_MOTO_ENDPOINT is not set: run the suite with `cargo xtask test-backends -p conformance`"
                    .to_string()
            })?;
            let bucket: String = std::iter::repeat_with(fastrand::lowercase).take(12).collect();
            Ok((
                format!(
                    "[storages.{alias}]\nbackend = {path:?}\nendpoint_url = {endpoint:?}\nbucket_name = \"conformance-{bucket}\"\n\
                     access_key = \"AKIDMOTO\"\nsecret_key = \"moto\"\nauto_create_bucket = true\n\
                     multipart_threshold = 5242880\nmultipart_chunksize = 5242880\n\
                     request_timeout = 600.0\nretry_timeout = 600.0\n"
                ),
                None,
            ))
        }
        other => Err(format!(
            "backend {other} is registered but has no test configuration in conformance/tests/backends.rs: add one"
        )),
    }
}

fn configured(row: &Row) -> Result<Fixture, String> {
    let build = |toml: String| {
        let settings = Settings::empty()
            .merge(figment::providers::Serialized::default("storages", ()))
            .merge(<figment::providers::Toml as figment::providers::Format>::string(&toml));
        Storages::new(settings).get("test").map_err(|e| e.to_string())
    };
    let (toml, dir) = match row.inner {
        // Small blocks and little memory, so that files span blocks and blocks get evicted.
        Some(inner) => {
            let (under, dir) = table("under", inner)?;
            let cache = format!(
                "[storages.test]\nbackend = {:?}\ninner = \"under\"\nmemory_capacity = \"4 MiB\"\nblock_size = \"64 KiB\"\n",
                row.path
            );
            (under + &cache, dir)
        }
        None => table("test", row.path)?,
    };
    let fixture = Fixture::new(build(toml)?);
    let cases = if row.path.contains("s3") || row.inner.is_some_and(|inner| inner.contains("s3")) { 8 } else { 32 };
    Ok(match dir {
        Some(dir) => fixture.root(dir.path()).keep(dir).cases(cases),
        None => fixture.cases(cases),
    })
}

fn short(path: &str) -> &str {
    match path {
        "storages.backends.memory.InMemoryStorage" => "memory",
        "storages.backends.fs.FileSystemStorage" => "fs",
        "storages.backends.s3.S3Storage" => "s3",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

fn main() {
    let arguments = Arguments::from_args();
    // Keyed by (backend, scenario) positions, so that the file lists them in the suite's order.
    let results: Arc<Mutex<BTreeMap<(usize, usize), String>>> = Arc::default();
    let mut trials = Vec::new();
    let paths = storage_core::registered_paths().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    for (backend_index, row) in rows(paths).into_iter().enumerate() {
        let backend = row.name.clone();
        // What the backend can do decides which scenarios apply: ask a fixture once.
        let capabilities = fixture(&row).ok().map(|f| f.storage.capabilities());
        for (scenario_index, scenario) in SCENARIOS.iter().enumerate() {
            let record = {
                let (results, backend) = (results.clone(), backend.clone());
                move |outcome: &Outcome| {
                    let line = format!("{backend}\t{}\t{outcome}", scenario.name).replace('\n', " ");
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((backend_index, scenario_index), line);
                }
            };
            let name = format!("{backend}::{}", scenario.name);
            if capabilities.is_some_and(|c| !scenario.applies_to(&c)) {
                if selected(&arguments, &name) {
                    record(&Outcome::NotApplicable(scenario.needs.unwrap_or("a capability")));
                }
                trials.push(Trial::test(name, || Ok(())).with_ignored_flag(true));
                continue;
            }
            // One fixture per backend and scenario: scenarios run in parallel and must not share state.
            let row = row.clone();
            trials.push(Trial::test(name, move || {
                let outcome = match fixture(&row) {
                    Ok(fixture) => scenario.run(&fixture),
                    Err(message) => Outcome::Failed(message),
                };
                record(&outcome);
                match outcome {
                    Outcome::Failed(message) => Err(Failed::from(message)),
                    _ => Ok(()),
                }
            }));
        }
    }
    trials.push(Trial::test("registry::every_backend_crate_is_linked", every_backend_crate_is_linked));
    let conclusion = libtest_mimic::run(&arguments, trials);
    if let Ok(file) = std::env::var("STORAGES_MATRIX_FILE") {
        let lines: Vec<String> = results.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let lines = lines.join("\n");
        if let Err(error) = std::fs::write(&file, lines + "\n") {
            eprintln!("cannot write {file}: {error}");
        }
    }
    conclusion.exit();
}

/// Whether the command line selects the trial called `name` (so that a subset's matrix shows only its cells).
fn selected(arguments: &Arguments, name: &str) -> bool {
    let matches = |pattern: &String| if arguments.exact { name == pattern } else { name.contains(pattern.as_str()) };
    arguments.filter.as_ref().is_none_or(matches) && !arguments.skip.iter().any(matches)
}

/// Every backend a crate of this workspace registers is linked here, so that the suite cannot miss one: the
/// dotted paths of `inventory::submit!` blocks in the crates' sources must all be in the registry.
fn every_backend_crate_is_linked() -> Result<(), Failed> {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut declared = Vec::new();
    let mut pending = vec![crates];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with("tests") {
                    pending.push(path);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            // Code only: a doc comment's example registers nothing.
            let text: String =
                text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            if path.extension().is_none_or(|e| e != "rs") || !text.contains("inventory::submit!") {
                continue;
            }
            for block in text.split("inventory::submit!").skip(1) {
                let path_field = block.split_once("path: \"").and_then(|(_, rest)| rest.split_once('"'));
                if let Some((dotted, _)) = path_field {
                    declared.push(dotted.to_string());
                }
            }
        }
    }
    let registered = storage_core::registered_paths().map_err(|e| e.to_string())?;
    let missing: Vec<&String> = declared.iter().filter(|p| !registered.contains(&p.as_str())).collect();
    if declared.is_empty() || !missing.is_empty() {
        return Err(format!(
            "backends declared in crates/ but not linked into the conformance suite: {missing:?} (declared: {declared:?}); add the crate to conformance's dev-dependencies and a `use ... as _;`"
        )
        .into());
    }
    Ok(())
}
