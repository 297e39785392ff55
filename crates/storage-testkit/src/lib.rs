//! The conformance suite of **storages**: the django-storages doctest session and the behaviours every storage
//! owes, as proptest properties over generated names and contents, runnable against any [`Storage`] backend.
//!
//! A backend crate (a third party's too) runs the whole suite from its tests with [`conformance!`]; see the
//! crate's README for a complete example. Scenarios that need a capability (atomic creation, presigned URLs)
//! are selected by the backend's declared [`Capabilities`](storage_core::Capabilities), and report "n/a"
//! elsewhere.
//!
//! ```
//! use std::sync::Arc;
//! use storage_core::InMemoryStorage;
//! use storage_testkit::{Fixture, Outcome, SCENARIOS};
//!
//! let fixture = Fixture::new(Arc::new(InMemoryStorage::with_alias("memory"))).cases(4);
//! for scenario in SCENARIOS {
//!     assert!(matches!(scenario.run(&fixture), Outcome::Passed | Outcome::NotApplicable(_)), "{}", scenario.name);
//! }
//! ```

mod doctest;
mod faults;
mod model;
mod storage;
mod strategies;

pub use faults::{Fault, FaultyStorage};
pub use model::{ModelTable, MyStorage};
pub use strategies::Blob;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use storage_core::{Capabilities, Storage};

/// A storage under test.
pub struct Fixture {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// A local directory the storage writes in, checked for leftover temporary files.
    pub root: Option<PathBuf>,
    cases: u32,
    persist: bool,
    regressions: Option<PathBuf>,
    _keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture for `storage`, with 16 cases per property (`PROPTEST_CASES` overrides).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Fixture { storage, root: None, cases: 16, persist: true, regressions: None, _keep: Vec::new() }
    }

    /// Checks `root`, where the storage writes, for leftover temporary files.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Runs `cases` cases per property, unless `PROPTEST_CASES` says otherwise.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Keeps `value` (a temporary directory, a server) alive as long as the fixture.
    pub fn keep(mut self, value: impl Any + Send + Sync) -> Self {
        self._keep.push(Box::new(value));
        self
    }

    /// Records failing cases in `<dir>/proptest-regressions/<scenario>.txt` (commit them: they are replayed
    /// first). [`conformance!`] sets this to the calling crate's directory unless it is set already.
    pub fn regressions(mut self, dir: impl Into<PathBuf>) -> Self {
        self.regressions = Some(dir.into());
        self
    }

    #[doc(hidden)]
    pub fn regressions_or(self, dir: &str) -> Self {
        if self.regressions.is_some() { self } else { self.regressions(dir) }
    }

    /// Does not record failing cases in `proptest-regressions/` (for deliberately broken backends).
    pub fn without_persistence(mut self) -> Self {
        self.persist = false;
        self
    }

    fn config(&self, scenario: &str) -> Config {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(self.cases);
        let persistence = self.regressions.as_ref().filter(|_| self.persist).map(|dir| {
            let path = dir.join("proptest-regressions").join(format!("{scenario}.txt"));
            // proptest wants a `&'static str`; one small string per scenario run.
            let path: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
            Box::new(FileFailurePersistence::Direct(path)) as Box<dyn proptest::test_runner::FailurePersistence>
        });
        Config { cases, failure_persistence: persistence, max_shrink_iters: 256, ..Config::default() }
    }
}

/// How a scenario went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every case held.
    Passed,
    /// A case failed; the message has proptest's minimal failing input.
    Failed(String),
    /// The backend lacks a capability the scenario needs.
    NotApplicable(&'static str),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("pass"),
            Outcome::Failed(message) => write!(f, "fail: {message}"),
            Outcome::NotApplicable(needs) => write!(f, "n/a (needs {needs})"),
        }
    }
}

/// One behaviour, checked as a property.
pub struct Scenario {
    /// Its name, as test names and the matrix show it.
    pub name: &'static str,
    /// The capability it needs, if any, in words.
    pub needs: Option<&'static str>,
    applies: fn(&Capabilities) -> bool,
    check: fn(&Ctx) -> Result<(), String>,
}

impl Scenario {
    /// Whether the scenario applies to a backend with `capabilities`.
    pub fn applies_to(&self, capabilities: &Capabilities) -> bool {
        (self.applies)(capabilities)
    }

    /// Runs the scenario's property against `fixture` (in a runtime of its own).
    pub fn run(&self, fixture: &Fixture) -> Outcome {
        if !self.applies_to(&fixture.storage.capabilities()) {
            return Outcome::NotApplicable(self.needs.unwrap_or("a capability"));
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => return Outcome::Failed(format!("cannot start a tokio runtime: {error}")),
        };
        let ctx = Ctx { fixture, runtime, scenario: self.name };
        match (self.check)(&ctx) {
            Ok(()) => Outcome::Passed,
            Err(message) => Outcome::Failed(message),
        }
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).field("needs", &self.needs).finish()
    }
}

const fn always(_: &Capabilities) -> bool {
    true
}

macro_rules! scenarios {
    ($($module:ident::$name:ident $(needs $needs:literal if $applies:expr)?),* $(,)?) => {
        /// Every scenario, in the order the matrix shows them.
        pub const SCENARIOS: &[Scenario] = &[
            $(Scenario {
                name: stringify!($name),
                needs: scenarios!(@needs $($needs)?),
                applies: scenarios!(@applies $($applies)?),
                check: $module::$name,
            }),*
        ];
    };
    (@needs) => { None };
    (@needs $needs:literal) => { Some($needs) };
    (@applies) => { always };
    (@applies $applies:expr) => { $applies };
}

scenarios!(
    doctest::storage_file_cycle,
    doctest::empty_field_file,
    doctest::field_file_save,
    doctest::same_name_alternative,
    doctest::serde_round_trip,
    doctest::owner_delete,
    doctest::default_survives,
    doctest::upload_to_once,
    doctest::cleanup,
    storage::round_trip,
    storage::chunks_exact,
    storage::size_is_length,
    storage::ranges,
    storage::listdir_model,
    storage::delete_idempotent,
    storage::replace_in_place,
    storage::concurrent_saves needs "atomic_create" if |c: &Capabilities| c.atomic_create,
    storage::invalid_names,
    storage::max_length,
    storage::content_type,
    storage::dropped_writer,
    storage::failed_save,
    storage::faults,
    storage::presigned_url needs "presigned_urls" if |c: &Capabilities| c.presigned_urls,
);

/// Records a measurement: printed now, and, under `cargo xtask test-backends` (which names the file in
/// `STORAGES_REPORT_FILE`), appended to the lines it prints under "measurements:" after the tests, where a
/// passing test's own output is hidden.
///
/// ```no_run
/// storage_testkit::report("symlink swap: 0 files outside the root");
/// ```
pub fn report(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("STORAGES_REPORT_FILE") {
        use std::io::Write as _;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            eprintln!("cannot write the report file {}: {error}", PathBuf::from(path).display());
        }
    }
}

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// What a scenario's cases run with.
pub(crate) struct Ctx<'a> {
    fixture: &'a Fixture,
    runtime: tokio::runtime::Runtime,
    scenario: &'static str,
}

impl Ctx<'_> {
    fn storage(&self) -> &Arc<dyn Storage> {
        &self.fixture.storage
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Checks `test` on values of `strategy`; the error names the minimal failing input.
    fn property<S>(&self, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) -> Result<(), String>
    where
        S: Strategy,
        S::Value: fmt::Debug,
    {
        let mut runner = TestRunner::new(self.fixture.config(self.scenario));
        runner.run(&strategy, test).map_err(|error| error.to_string())
    }

    /// Checks `test` on the doctest session's own `literal` values first, then on values of `strategy`.
    fn session_then_property<S>(
        &self,
        literal: S::Value,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) -> Result<(), String>
    where
        S: Strategy,
        S::Value: fmt::Debug,
    {
        let shown = format!("{literal:?}");
        test(literal).map_err(|error| format!("the session's own case {shown} failed: {error}"))?;
        self.property(strategy, test)
    }
}

/// A directory no other case uses: every case works inside one, so that cases and backends' runs never meet.
fn fresh_dir() -> String {
    let random: String = std::iter::repeat_with(fastrand::alphanumeric).take(10).collect();
    format!("case-{random}")
}

/// `Result`s whose error becomes a failed case, with context.
trait OrFail<T> {
    fn or_fail(self, context: &str) -> Result<T, TestCaseError>;
}

impl<T, E: fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, context: &str) -> Result<T, TestCaseError> {
        self.map_err(|error| TestCaseError::fail(format!("{context}: {error}")))
    }
}

/// A reader that yields some bytes, then fails, as a client that goes away mid-upload.
pub struct FailingReader {
    bytes: std::io::Cursor<Vec<u8>>,
}

impl FailingReader {
    /// Yields `bytes`, then fails.
    pub fn after(bytes: Vec<u8>) -> Self {
        FailingReader { bytes: std::io::Cursor::new(bytes) }
    }
}

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.bytes.position() < self.bytes.get_ref().len() as u64 {
            return std::pin::Pin::new(&mut self.bytes).poll_read(cx, buf);
        }
        std::task::Poll::Ready(Err(std::io::Error::other("the client went away")))
    }
}

/// Deletes every file under `dir`, so that a case leaves the storage as it found it.
async fn remove_tree(storage: &dyn Storage, dir: &str) -> Result<(), TestCaseError> {
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let (dirs, files) = storage.listdir(&dir).await.or_fail("listdir while cleaning up")?;
        for file in files {
            storage.delete(&format!("{dir}/{file}")).await.or_fail("delete while cleaning up")?;
        }
        pending.extend(dirs.into_iter().map(|d| format!("{dir}/{d}")));
    }
    Ok(())
}

/// Temporary files left under `root` (the filesystem backend's `.storages-tmp-*`).
fn leftover_temporary_files(root: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(".storages-tmp-") {
                found.push(path);
            }
        }
    }
    found
}

/// The one list of scenario names the macros expand: `@conformance $fixture` gives [`conformance!`]'s tests,
/// `@names` an array of the names (a test checks it against [`SCENARIOS`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_names {
    ($($args:tt)*) => {
        $crate::__scenario_apply! {
            ($($args)*)
            storage_file_cycle, empty_field_file, field_file_save, same_name_alternative, serde_round_trip,
            owner_delete, default_survives, upload_to_once, cleanup, round_trip, chunks_exact, size_is_length,
            ranges, listdir_model, delete_idempotent, replace_in_place, concurrent_saves, invalid_names, max_length,
            content_type, dropped_writer, failed_save, faults, presigned_url
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_apply {
    ((@conformance $fixture:expr) $($name:ident),*) => {
        $crate::conformance!(@tests $fixture; $($name),*);
    };
    ((@names) $($name:ident),*) => {
        [$(stringify!($name)),*]
    };
}

/// Runs every scenario against a fixture, one `#[test]` each (sync tests: each scenario has its own runtime).
///
/// ```
/// use std::sync::Arc;
///
/// fn fixture() -> storage_testkit::Fixture {
///     storage_testkit::Fixture::new(Arc::new(storage_core::InMemoryStorage::with_alias("memory")))
/// }
///
/// storage_testkit::conformance!(fixture());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance {
    ($fixture:expr) => {
        $crate::__scenario_names!(@conformance $fixture);
    };
    (@tests $fixture:expr; $($scenario:ident),*) => {
        $(
            #[test]
            fn $scenario() {
                let fixture = ($fixture).regressions_or(env!("CARGO_MANIFEST_DIR"));
                let scenario = $crate::scenario(stringify!($scenario)).expect("a scenario of the testkit");
                match scenario.run(&fixture) {
                    $crate::Outcome::Failed(message) => {
                        ::std::panic!("{} failed on {}:\n{message}", scenario.name, fixture.storage.alias())
                    }
                    outcome => ::std::println!("{}: {outcome}", scenario.name),
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macro_list_is_the_scenario_list() {
        let listed: Vec<&str> = crate::__scenario_names!(@names).to_vec();
        let scenarios: Vec<&str> = crate::SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(listed, scenarios);
    }
}

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
