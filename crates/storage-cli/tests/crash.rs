//! `kill -9` in the middle of the command's saves and downloads, on the filesystem and on S3 (moto): nothing
//! partial ever appears under a final name, and after `storages cleanup` nothing the killed commands left stays.
//!
//! Half the rounds kill the command once its work is seen under way (a temporary file, a pending upload), so
//! that every run has leftovers to clean; the others at a random moment.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use support::{command, stderr, stdout, storages};

const ROUNDS: usize = 10;

fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    command(cwd, args, env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start storages")
}

/// Kills `child` once `under_way` says so (or it ended), or, without `under_way`, after a random moment.
fn kill_when(mut child: Child, under_way: Option<&dyn Fn() -> bool>) {
    match under_way {
        Some(seen) => {
            while child.try_wait().expect("wait").is_none() && !seen() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None => std::thread::sleep(Duration::from_millis(fastrand::u64(0..300))),
    }
    let _ = child.kill(); // SIGKILL
    child.wait().expect("reap");
}

/// Every file under `dir` whose name contains `marker`, at any depth.
fn files_named(dir: &Path, marker: &str) -> Vec<PathBuf> {
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

fn content(size: usize) -> Vec<u8> {
    let seed = fastrand::u8(..);
    (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8).collect()
}

#[test]
fn killed_fs_saves_and_gets_leave_nothing_partial_and_cleanup_removes_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let data = content(96 << 20);
    std::fs::write(cwd.join("big.bin"), &data).expect("write");
    let media = cwd.join("media");
    let temps = || files_named(&media, ".storages-tmp-").len();

    for round in 0..ROUNDS {
        let name = format!("r{round}.bin");
        let before = temps();
        let child = start(cwd, &["put", "big.bin", &name], &[]);
        let new_temp = || temps() > before;
        kill_when(child, (round % 2 == 0).then_some(&new_temp as &dyn Fn() -> bool));
        if let Ok(stored) = std::fs::read(media.join(&name)) {
            assert!(stored == data, "round {round}: a partial file under the final name {name}");
        }
    }
    let left = files_named(&media, ".storages-tmp-").len();

    let whole = storages(cwd, &["put", "big.bin", "whole.bin"], &[]);
    assert!(whole.status.success(), "{}", stderr(&whole));
    let out = cwd.join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let parts = || files_named(&out, ".storages-part").len();
    for round in 0..ROUNDS {
        let before = parts();
        let child = start(cwd, &["get", "whole.bin", "out"], &[]);
        let new_part = || parts() > before;
        kill_when(child, (round % 2 == 0).then_some(&new_part as &dyn Fn() -> bool));
        if let Ok(got) = std::fs::read(out.join("whole.bin")) {
            assert!(got == data, "round {round}: a partial download under the final name");
            std::fs::remove_file(out.join("whole.bin")).expect("remove");
        }
    }
    let parts = parts();

    let cleanup = storages(cwd, &["cleanup", "--older-than", "0s", "--downloads", "out"], &[]);
    assert!(cleanup.status.success(), "{}", stderr(&cleanup));
    assert!(files_named(&media, ".storages-tmp-").is_empty(), "temporary files stayed after cleanup");
    assert!(files_named(&out, ".storages-part").is_empty(), "partial downloads stayed after cleanup");
    storage_testkit::report(&format!(
        "kill -9 of {ROUNDS} fs saves and {ROUNDS} gets: 0 partial files under a final name; {left} temporary \
         files and {parts} partial downloads left, 0 after cleanup ({})",
        stdout(&cleanup).trim()
    ));
    assert!(left > 0 && parts > 0, "no kill left anything: the test tested nothing");
    assert!(stdout(&cleanup).contains(&format!("{left} temporary files")), "{}", stdout(&cleanup));
    // Stored files are never cleanup's business.
    assert!(std::fs::read(media.join("whole.bin")).expect("whole") == data);
}

/// A plain GET of `path` on moto (which takes unsigned requests): the body.
fn moto_get(endpoint: &str, path: &str) -> String {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).expect("connect to moto");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

#[test]
fn killed_s3_saves_leave_nothing_partial_and_cleanup_removes_the_rest() {
    let endpoint = std::env::var("STORAGES_TEST_MOTO_ENDPOINT")
        .expect("STORAGES_TEST_MOTO_ENDPOINT is not set: run the tests with `cargo xtask test-backends`");
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let data = content(24 << 20);
    std::fs::write(cwd.join("big.bin"), &data).expect("write");
    let bucket = format!("crash-{}", std::iter::repeat_with(fastrand::lowercase).take(10).collect::<String>());
    let env = [
        ("DEFAULT_FILE_STORAGE", "storages.backends.s3.S3Storage"),
        ("AWS_STORAGE_BUCKET_NAME", bucket.as_str()),
        ("AWS_S3_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDMOTO"),
        ("AWS_SECRET_ACCESS_KEY", "moto"),
        ("AWS_AUTO_CREATE_BUCKET", "true"),
        // moto reads a whole object for every range: one stream is faster there.
        ("STORAGES__DEFAULT__PARALLEL_READ_THRESHOLD", "0"),
        ("STORAGES__DEFAULT__REQUEST_TIMEOUT", "600"),
        ("STORAGES__DEFAULT__RETRY_TIMEOUT", "600"),
    ];
    // The bucket, with its lifecycle rules: auto-created by the first command.
    assert!(storages(cwd, &["ls"], &env).status.success());
    let lifecycle = moto_get(&endpoint, &format!("/{bucket}?lifecycle"));
    assert!(
        lifecycle.contains("storages-abort-incomplete-uploads") && lifecycle.contains("storages-expire-staging"),
        "auto_create_bucket installs the lifecycle rules: {lifecycle}"
    );

    let pending = || moto_get(&endpoint, &format!("/{bucket}?uploads")).matches("<Upload>").count();
    let staged =
        || moto_get(&endpoint, &format!("/{bucket}?list-type=2&prefix=.storages-staging/")).matches("<Key>").count();
    for round in 0..ROUNDS {
        let name = format!("r{round}.bin");
        let before = pending();
        let child = start(cwd, &["put", "big.bin", &name], &env);
        let uploading = || pending() > before;
        kill_when(child, (round % 2 == 0).then_some(&uploading as &dyn Fn() -> bool));
        let cat = storages(cwd, &["cat", &name], &env);
        if cat.status.success() {
            assert!(cat.stdout == data, "round {round}: a partial object under the final name {name}");
        }
    }
    let (uploads_left, staging_left) = (pending(), staged());

    let cleanup = storages(cwd, &["cleanup", "--older-than", "0s"], &env);
    assert!(cleanup.status.success(), "{}", stderr(&cleanup));
    let (uploads_after, staging_after) = (pending(), staged());
    storage_testkit::report(&format!(
        "kill -9 of {ROUNDS} S3 saves (moto): 0 partial objects under a final name; {uploads_left} pending uploads \
         and {staging_left} staging objects and claims left, {uploads_after} and {staging_after} after cleanup ({})",
        stdout(&cleanup).trim()
    ));
    assert_eq!((uploads_after, staging_after), (0, 0), "leftovers stayed after cleanup");
    assert!(uploads_left > 0, "no kill left a pending upload: the test tested nothing");

    // An existing bucket gets the rules on request, next to rules of its own.
    let installed = storages(cwd, &["cleanup", "--install-lifecycle"], &env);
    assert!(installed.status.success(), "{}", stderr(&installed));
    assert!(stdout(&installed).contains("installed the lifecycle rules"), "{}", stdout(&installed));
}
