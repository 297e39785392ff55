//! `kill -9` in the middle of the command's saves and downloads, on the filesystem and on S3 (moto): nothing
//! partial ever appears under a final name, and after `storages cleanup` nothing the killed commands left stays.
//!
//! Half the rounds kill the command once its work is seen under way (a temporary file, a pending upload), so
//! that every run has leftovers to clean; the others at a random moment.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;
use support::{
    command, files_named, fresh_bucket, moto_default_env, moto_endpoint, moto_get, stderr, stdout, storages,
};

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

#[test]
fn killed_s3_saves_leave_nothing_partial_and_cleanup_removes_the_rest() {
    let endpoint = moto_endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let data = content(24 << 20);
    std::fs::write(cwd.join("big.bin"), &data).expect("write");
    let bucket = fresh_bucket("crash");
    let mut env = moto_default_env(&bucket, &endpoint);
    // moto reads a whole object for every range: one stream is faster there.
    env.push(("STORAGES__DEFAULT__PARALLEL_READ_THRESHOLD", "0"));
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
