//! Running the `storages` command as a user would, in a directory of the test's own.

#![allow(dead_code)] // each test file uses its own share of these

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the command in `cwd` with `env` and no other settings from the environment.
pub fn storages(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(cwd, args, env).output().expect("run storages")
}

/// The command in `cwd` with `env` and no other settings from the environment, to start.
pub fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storages"));
    command.current_dir(cwd).args(args);
    // A clean environment for settings: only what the test gives.
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") || key.starts_with("STORAGES") || key.ends_with("_STORAGE") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A copy of the example site, to change freely.
pub fn example_site(into: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/static");
    let target = into.join("static");
    copy_tree(&source, &target);
    target
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

/// Every file under `dir` whose name contains `marker`, at any depth.
pub fn files_named(dir: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, marker));
        } else if entry.file_name().to_string_lossy().contains(marker) {
            found.push(path);
        }
    }
    found
}

/// The moto endpoint `cargo xtask test-backends` started.
pub fn moto_endpoint() -> String {
    std::env::var("STORAGES_TEST_MOTO_ENDPOINT")
        .expect("STORAGES_TEST_MOTO_ENDPOINT is not set: run the tests with `cargo xtask test-backends`")
}

/// A bucket name no other test uses, starting with `prefix`.
pub fn fresh_bucket(prefix: &str) -> String {
    format!("{prefix}-{}", std::iter::repeat_with(fastrand::lowercase).take(10).collect::<String>())
}

/// The environment that makes the `default` storage an S3 bucket on moto at `endpoint`, created on first use;
/// generous timeouts, so that a loaded machine slows a test down without failing it.
pub fn moto_default_env<'a>(bucket: &'a str, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DEFAULT_FILE_STORAGE", "storages.backends.s3.S3Storage"),
        ("AWS_STORAGE_BUCKET_NAME", bucket),
        ("AWS_S3_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "AKIDMOTO"),
        ("AWS_SECRET_ACCESS_KEY", "moto"),
        ("AWS_AUTO_CREATE_BUCKET", "true"),
        ("STORAGES__DEFAULT__REQUEST_TIMEOUT", "600"),
        ("STORAGES__DEFAULT__RETRY_TIMEOUT", "600"),
    ]
}

/// A plain GET of `path` on moto (which takes unsigned requests): the body. What the bucket holds, seen
/// without the storage under test.
pub fn moto_get(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).expect("connect to moto");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// A variable `cargo xtask test-backends` sets for the test servers (their endpoints and keys).
pub fn server_var(name: &str) -> String {
    let value =
        std::env::var(name).map_err(|_| format!("{name} is not set: run the tests with `cargo xtask test-backends`"));
    value.expect("a test server variable")
}
