//! `cargo xtask test-backends`: the workspace's tests with the S3 servers running, in timed phases (build,
//! servers, tests), optionally under CPU load (`--stress`), ending with the conformance matrix, the failed tests
//! and a command that reruns each one alone.

use crate::matrix::Matrix;
use crate::servers::Servers;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `cargo xtask test-backends` was asked to run.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    /// Arguments for `cargo test`: packages and targets (`-p storage-s3 --test large`), profile, features.
    cargo: Vec<String>,
    /// Arguments for the test binaries: a filter, `--exact`, and whatever follows `--`.
    harness: Vec<String>,
    /// CPU-burning threads kept running while the tests run.
    stress: Option<usize>,
}

/// `cargo test` options that take a value.
const CARGO_VALUE_FLAGS: &[&str] =
    &["-p", "--package", "--test", "--bin", "--example", "--bench", "--exclude", "-F", "--features", "-j", "--jobs"];
/// `cargo test` options without a value.
const CARGO_FLAGS: &[&str] =
    &["--lib", "--doc", "--bins", "--tests", "--examples", "--all-features", "--no-default-features", "--release"];
/// `cargo test` options that choose packages and targets: a rerun command names its own.
const TARGET_FLAGS: &[&str] = &[
    "-p",
    "--package",
    "--test",
    "--bin",
    "--example",
    "--bench",
    "--lib",
    "--doc",
    "--bins",
    "--tests",
    "--examples",
];
/// Test-binary options without a value (libtest and libtest-mimic alike).
const HARNESS_FLAGS: &[&str] = &["--exact", "--nocapture", "--ignored", "--include-ignored", "--show-output"];
/// Test-binary options that take a value.
const HARNESS_VALUE_FLAGS: &[&str] = &["--skip", "--test-threads"];

impl Selection {
    /// Parses `[--stress[=N]] [CARGO TEST OPTIONS] [FILTER] [--exact] [-- HARNESS ARGS]`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut selection = Selection::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let arg = arg.as_str();
            let mut value = |flag: &str| {
                args.next().cloned().ok_or_else(|| format!("{flag} needs a value (cargo xtask test-backends --help)"))
            };
            match arg {
                "--" => {
                    selection.harness.extend(args.by_ref().cloned());
                }
                "--stress" => selection.stress = Some(default_burners()),
                _ if arg.starts_with("--stress=") => {
                    let count = &arg["--stress=".len()..];
                    let count = count.parse().map_err(|_| format!("--stress={count}: expected a number of threads"))?;
                    selection.stress = Some(count);
                }
                _ if CARGO_VALUE_FLAGS.contains(&arg) => {
                    let value = value(arg)?;
                    selection.cargo.extend([arg.to_string(), value]);
                }
                _ if CARGO_FLAGS.contains(&arg) || is_flag(arg, CARGO_VALUE_FLAGS) => {
                    selection.cargo.push(arg.into());
                }
                _ if HARNESS_FLAGS.contains(&arg) => selection.harness.push(arg.into()),
                _ if HARNESS_VALUE_FLAGS.contains(&arg) => {
                    let value = value(arg)?;
                    selection.harness.extend([arg.to_string(), value]);
                }
                _ if arg.starts_with('-') => {
                    return Err(format!(
                        "unknown option {arg}; cargo test's options go before the filter and test-binary options \
                         after `--` (cargo xtask test-backends --help)"
                    ));
                }
                filter => selection.harness.push(filter.into()),
            }
        }
        Ok(selection)
    }

    /// Whether the whole workspace runs unfiltered (then the conformance matrix must be complete).
    fn is_everything(&self) -> bool {
        let mut harness = self.harness.iter();
        let mut filters = false;
        while let Some(arg) = harness.next() {
            match arg.as_str() {
                "--skip" | "--exact" => filters = true,
                _ if HARNESS_VALUE_FLAGS.contains(&arg.as_str()) => {
                    harness.next();
                }
                _ if arg.starts_with('-') => {}
                _ => filters = true,
            }
        }
        !self.cargo.iter().any(|arg| is_flag(arg, TARGET_FLAGS)) && !filters
    }

    /// The options a rerun of one test keeps: cargo's that are not about which targets run (`--release`,
    /// features), and the test binaries' that decide which tests run at all (`--ignored`, `--include-ignored`).
    fn rerun_options(&self) -> Vec<String> {
        let mut kept = Vec::new();
        let mut cargo = self.cargo.iter();
        while let Some(arg) = cargo.next() {
            if is_flag(arg, TARGET_FLAGS) {
                if CARGO_VALUE_FLAGS.contains(&arg.as_str()) {
                    cargo.next();
                }
                continue;
            }
            kept.push(arg.clone());
        }
        kept.extend(self.harness.iter().filter(|a| *a == "--ignored" || *a == "--include-ignored").cloned());
        kept
    }

    fn cargo_test_args(&self) -> Vec<String> {
        let mut args = vec!["test".to_string()];
        if !self.cargo.iter().any(|arg| is_flag(arg, &["-p", "--package"])) {
            args.push("--workspace".into());
        }
        args.extend(self.cargo.iter().cloned());
        args
    }
}

/// Whether `arg` is one of `flags`, alone or joined to its value (`--package=x`, `-px`).
fn is_flag(arg: &str, flags: &[&str]) -> bool {
    flags.iter().any(|flag| arg == *flag || is_joined(arg, flag))
}

/// `--flag=value` or `-pvalue` forms of a value flag.
fn is_joined(arg: &str, flag: &str) -> bool {
    if flag.starts_with("--") { arg.starts_with(&format!("{flag}=")) } else { arg.starts_with(flag) && arg != flag }
}

fn default_burners() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A test that failed, and how cargo names its binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The cargo arguments that select the test's binary (`-p storage-s3 --test large`).
    pub target: String,
    /// The test's name, or `None` when the binary failed without naming a test (a crash, a failed build).
    pub test: Option<String>,
}

impl Failure {
    /// The command that reruns this test alone, with the servers started (and `options`, from the run's own).
    pub fn rerun(&self, options: &[String]) -> String {
        let mut command = format!("cargo xtask test-backends {}", self.target);
        for option in options {
            command.push(' ');
            command.push_str(&shell_quote(option));
        }
        if let Some(test) = &self.test {
            command.push_str(&format!(" {} --exact", shell_quote(test)));
        }
        command
    }
}

fn shell_quote(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "_-:./=".contains(c)) {
        text.into()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Reads cargo test's combined output line by line: which tests failed in which binary, and the totals.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Tests seen failing since the last `Running`/`Doc-tests` line.
    pending: Vec<String>,
    /// Failures, complete with their binary's cargo arguments.
    pub failures: Vec<Failure>,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Outcomes {
    pub fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        // cargo's status lines, right-aligned as cargo prints them (a test's own output is not).
        if line.starts_with("     Running ") || line.starts_with("   Doc-tests ") {
            self.pending.clear();
        } else if let Some(test) = line.strip_prefix("test ").and_then(|t| t.strip_suffix(" ... FAILED")) {
            // libtest-mimic pads names to a column; libtest adds the mode of some tests to their names.
            let test = test.trim_end();
            let test = [" - should panic", " - compile fail", " - compile"]
                .iter()
                .find_map(|mode| test.strip_suffix(mode))
                .unwrap_or(test);
            self.pending.push(test.to_string());
        } else if let Some(result) = trimmed.strip_prefix("test result: ") {
            for part in result.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(count), Some(what)) = (words.next().and_then(|c| c.parse::<u64>().ok()), words.next()) {
                    match what {
                        "passed" => self.passed += count,
                        "failed" => self.failed += count,
                        "ignored" => self.ignored += count,
                        _ => {}
                    }
                }
            }
        } else if let Some(target) = rerun_target(trimmed) {
            // cargo's own line after a failed binary: `error: test failed, to rerun pass `-p x --test y``.
            let tests = std::mem::take(&mut self.pending);
            if tests.is_empty() {
                self.failures.push(Failure { target, test: None });
            } else {
                self.failures
                    .extend(tests.into_iter().map(|test| Failure { target: target.clone(), test: Some(test) }));
            }
        }
    }
}

fn rerun_target(line: &str) -> Option<String> {
    let rest = line.strip_prefix("error: ")?;
    let (_, args) = rest.split_once("failed, to rerun pass `")?;
    Some(args.strip_suffix('`')?.to_string())
}

/// Threads that keep every core busy until dropped.
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burners {
    fn start(count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                })
            })
            .collect();
        println!("xtask: --stress: {count} CPU-burning threads run until the tests end");
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Phases and how long each took.
#[derive(Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.0.push((name, started.elapsed()));
        result
    }

    fn render(&self) -> String {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        let mut out = String::from("xtask: time:");
        for (name, duration) in &self.0 {
            let _ = write!(out, " {name} {:.0?},", Rounded(*duration));
        }
        let _ = write!(out, " total {:.0?}", Rounded(total));
        out
    }
}

/// A duration shown to the second.
struct Rounded(Duration);

impl std::fmt::Debug for Rounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs_f64().round() as u64;
        if secs >= 60 { write!(f, "{}m{:02}s", secs / 60, secs % 60) } else { write!(f, "{secs}s") }
    }
}

/// Runs the selection: build, start the servers, run the tests, print the matrix, failures and times.
pub fn run(selection: &Selection) -> Result<(), String> {
    let cargo = crate::cargo();
    let mut phases = Phases::default();
    let mut test_args = selection.cargo_test_args();
    let before = checkout_changes();

    // Build first, so that the servers and the load run only while tests do, and build time shows apart.
    let built = phases.time("build", || {
        println!("xtask: building: cargo {} --no-run", test_args.join(" "));
        Command::new(&cargo).args(&test_args).arg("--no-run").env("CARGO_TERM_COLOR", "never").status()
    });
    let built = built.map_err(|e| format!("cannot run cargo: {e}"))?;
    if !built.success() {
        return Err(format!("the build failed ({built})"));
    }

    let servers = phases.time("servers", Servers::start)?;
    let burners = selection.stress.map(Burners::start);
    let matrix_file = std::env::temp_dir().join(format!("storages-matrix-{}.tsv", std::process::id()));
    let report_file = std::env::temp_dir().join(format!("storages-report-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&matrix_file);
    let _ = std::fs::remove_file(&report_file);
    test_args.push("--no-fail-fast".into());
    if !selection.harness.is_empty() {
        test_args.push("--".into());
        test_args.extend(selection.harness.iter().cloned());
    }
    println!("xtask: running cargo {}", test_args.join(" "));
    let mut command = Command::new(&cargo);
    command
        .args(&test_args)
        .envs(servers.env())
        // Plain text: the outcomes are read from it.
        .env("CARGO_TERM_COLOR", "never")
        .env("STORAGES_MATRIX_FILE", &matrix_file)
        .env("STORAGES_REPORT_FILE", &report_file);
    let (status, outcomes) = phases.time("tests", move || run_reading(command))?;
    drop(servers);
    drop(burners);

    let matrix = Matrix::read(&matrix_file);
    let _ = std::fs::remove_file(&matrix_file);
    let mut problems = Vec::new();
    match &matrix {
        Ok(matrix) => {
            print!("{}", matrix.render());
            if matrix.failures() > 0 {
                problems.push(format!("{} conformance cells failed", matrix.failures()));
            }
        }
        // A subset that did not run the conformance suite has no matrix.
        Err(_) if !selection.is_everything() => {}
        Err(message) => problems.push(format!("no conformance matrix: {message}")),
    }
    if let Ok(report) = std::fs::read_to_string(&report_file) {
        println!("\nmeasurements:\n{}", report.trim_end());
        let _ = std::fs::remove_file(&report_file);
    }
    let written = checkout_changes().map(|after| match before {
        Some(before) => after
            .into_iter()
            .filter(|(path, hash)| before.get(path) != Some(hash))
            .map(|(path, _)| path)
            .collect::<Vec<_>>(),
        None => Vec::new(),
    });
    if let Some(written) = written.filter(|w| !w.is_empty()) {
        let regressions = written.iter().any(|f| f.contains("proptest-regressions/"));
        problems.push(format!(
            "the run wrote into the checkout (only target/ is for that), unless these were edited meanwhile: {}{}",
            written.join(", "),
            if regressions {
                "; proptest recorded the failing cases it found there: fix the failure and commit those files, \
                 so that every later run replays them"
            } else {
                ""
            }
        ));
    }
    println!("\n{}", phases.render());
    println!("{} passed, {} failed, {} ignored", outcomes.passed, outcomes.failed, outcomes.ignored);
    if outcomes.passed + outcomes.failed == 0 {
        problems.push("no test matched the selection".into());
    }
    if !status.success() || !outcomes.failures.is_empty() {
        problems.push(format!("cargo test: {status}"));
    }
    if !outcomes.failures.is_empty() {
        println!("\nfailed tests, each with the command that reruns it alone (servers included):");
        let options = selection.rerun_options();
        for failure in &outcomes.failures {
            let test = failure.test.as_deref().unwrap_or("(the binary failed without naming a test)");
            println!("  {} {test}\n      {}", failure.target, failure.rerun(&options));
        }
    }
    if problems.is_empty() {
        println!(
            "xtask: every selected test passed{}",
            if selection.stress.is_some() { " under --stress" } else { "" }
        );
        Ok(())
    } else {
        Err(format!("tests failed: {}", problems.join("; ")))
    }
}

/// Runs `command` with stdout and stderr merged into one pipe (so that cargo's `Running` lines stay in order
/// with the tests' results), echoing each line and reading the outcomes from it.
fn run_reading(mut command: Command) -> Result<(std::process::ExitStatus, Outcomes), String> {
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let writer_err = writer.try_clone().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err)
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    // The child holds the write ends now: closing ours (the command keeps them) lets the read end with the child.
    drop(command);
    // Read in a thread: a process the tests leave behind may hold the pipe open after cargo has exited.
    let outcomes = Arc::new(std::sync::Mutex::new(Outcomes::default()));
    let (done, finished) = std::sync::mpsc::channel();
    let reading = outcomes.clone();
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let _ = writeln!(stdout.lock(), "{line}");
            reading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).line(&line);
        }
        let _ = done.send(());
    });
    let status = child.wait().map_err(|e| format!("cannot wait for cargo: {e}"))?;
    if finished.recv_timeout(Duration::from_secs(60)).is_err() {
        println!("xtask: cargo exited, but a process it started still holds its output open; going on without it");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok((status, outcomes))
}

/// The files `git status` shows as changed or new (outside target/), each with a hash of its content (`None`:
/// deleted), or `None` outside a git checkout. Comparing two of these finds what a run wrote, also into a file
/// that was already changed before it.
fn checkout_changes() -> Option<BTreeMap<String, Option<u64>>> {
    let git = |args: &[&str]| {
        Command::new("git").args(args).stderr(Stdio::null()).output().ok().filter(|o| o.status.success())
    };
    let root = git(&["rev-parse", "--show-toplevel"])?;
    let root = std::path::PathBuf::from(String::from_utf8_lossy(&root.stdout).trim_end());
    let status = git(&["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"])?;
    let files = status
        .stdout
        .split(|b| *b == 0)
        .filter_map(|entry| entry.get(3..))
        .map(|path| String::from_utf8_lossy(path).into_owned())
        .filter(|path| !path.is_empty() && !path.starts_with("target/"))
        .map(|path| {
            let hash = std::fs::read(root.join(&path)).ok().map(|bytes| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut hasher);
                std::hash::Hasher::finish(&hasher)
            });
            (path, hash)
        })
        .collect();
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_subset_goes_to_cargo_and_the_filter_to_the_harness() {
        let selection = Selection::parse(&args("-p storage-s3 --test large gibibyte --exact")).unwrap();
        assert_eq!(selection.cargo, args("-p storage-s3 --test large"));
        assert_eq!(selection.harness, args("gibibyte --exact"));
        assert_eq!(selection.cargo_test_args(), args("test -p storage-s3 --test large"));
        assert!(!selection.is_everything());
    }

    #[test]
    fn no_arguments_run_the_workspace() {
        let selection = Selection::parse(&[]).unwrap();
        assert_eq!(selection.cargo_test_args(), args("test --workspace"));
        assert!(selection.is_everything());
        let stressed = Selection::parse(&args("--stress=3 --release -- --nocapture --test-threads 1")).unwrap();
        assert_eq!(stressed.stress, Some(3));
        assert_eq!(stressed.harness, args("--nocapture --test-threads 1"));
        assert!(stressed.is_everything(), "options that select no tests keep the run whole");
        assert!(!Selection::parse(&args("-- --skip s3")).unwrap().is_everything());
        assert!(!Selection::parse(&args("--package=storage-fs")).unwrap().is_everything());
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let error = Selection::parse(&args("--tset large")).unwrap_err();
        assert!(error.contains("--tset"), "{error}");
        assert!(Selection::parse(&args("-p")).unwrap_err().contains("-p needs a value"));
    }

    #[test]
    fn failures_are_named_with_their_binary_and_a_rerun_command() {
        let mut outcomes = Outcomes::default();
        let output = "\
     Running tests/large.rs (target/debug/deps/large-0123)
running 2 tests
test small ... ok
test a_gibibyte_streams_both_ways_in_bounded_memory ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.10s
error: test failed, to rerun pass `-p storage-s3 --test large`
     Running tests/backends.rs (target/debug/deps/backends-4567)
test s3::round_trip ... ok
test s3::empty_field_file       ... FAILED
test result: FAILED. 50 passed; 1 failed; 12 ignored; 0 measured; 0 filtered out; finished in 40.2s
error: test failed, to rerun pass `-p conformance --test backends`
   Doc-tests storage_core
test crates/storage-core/src/field.rs - field::FileField (line 12) ... FAILED
test crates/storage-s3/src/lib.rs - (line 3) - compile ... FAILED
  Running tests/not_cargo.rs: a line a test printed, indented otherwise than cargo's
test result: FAILED. 0 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.5s
error: doctest failed, to rerun pass `-p storage-core --doc`
     Running unittests src/main.rs (target/debug/deps/crashes-89ab)
error: test failed, to rerun pass `-p storage-cli --bin storages`
";
        for line in output.lines() {
            outcomes.line(line);
        }
        assert_eq!((outcomes.passed, outcomes.failed, outcomes.ignored), (51, 4, 12));
        let reruns: Vec<String> = outcomes.failures.iter().map(|f| f.rerun(&[])).collect();
        assert_eq!(
            reruns,
            [
                "cargo xtask test-backends -p storage-s3 --test large a_gibibyte_streams_both_ways_in_bounded_memory --exact",
                "cargo xtask test-backends -p conformance --test backends s3::empty_field_file --exact",
                "cargo xtask test-backends -p storage-core --doc 'crates/storage-core/src/field.rs - field::FileField (line 12)' --exact",
                "cargo xtask test-backends -p storage-core --doc 'crates/storage-s3/src/lib.rs - (line 3)' --exact",
                "cargo xtask test-backends -p storage-cli --bin storages",
            ]
        );
        // A rerun keeps the options that decide what is built and which tests run at all.
        let selection = Selection::parse(&args("--release -F x -p storage-s3 large -- --include-ignored")).unwrap();
        assert_eq!(selection.rerun_options(), args("--release -F x --include-ignored"));
        assert_eq!(
            outcomes.failures[0].rerun(&selection.rerun_options()),
            "cargo xtask test-backends -p storage-s3 --test large --release -F x --include-ignored \
             a_gibibyte_streams_both_ways_in_bounded_memory --exact"
        );
        // The rerun commands parse back into the same selection.
        let selection = Selection::parse(&args("-p storage-core --doc")).unwrap();
        assert_eq!(selection.cargo_test_args(), args("test -p storage-core --doc"));
    }
}
