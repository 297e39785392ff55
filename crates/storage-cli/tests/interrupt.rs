//! Ctrl-C (SIGINT) during collectstatic, put and get: no new work starts, what is under way finishes or is
//! aborted, no temporary file or pending upload stays, a summary is printed and the exit code is 130.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;
use support::{
    command, files_named, fresh_bucket, moto_default_env, moto_endpoint, moto_get, stderr, stdout, storages,
};

fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    command(cwd, args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start storages")
}

fn interrupt(child: &Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
}

/// Waits until `seen()` (or the child ended), sends `count` SIGINTs, and collects what the child printed.
fn interrupt_when(mut child: Child, seen: impl Fn() -> bool, count: usize) -> Output {
    while child.try_wait().expect("wait").is_none() && !seen() {
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..count {
        interrupt(&child);
    }
    child.wait_with_output().expect("output")
}

/// A site of `count` files of 256 KiB each, under `dir/site`.
fn site(dir: &Path, count: usize) -> PathBuf {
    let site = dir.join("site");
    for i in 0..count {
        let sub = site.join(format!("d{}", i % 8));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i:04}.bin")), vec![(i % 251) as u8; 256 << 10]).expect("write");
    }
    site
}

#[test]
fn ctrl_c_stops_collectstatic_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site(dir.path(), 800);
    let site_arg = site.to_str().expect("utf-8");
    let collected = dir.path().join("staticfiles");
    let some_copied = || files_named(&collected, ".bin").len() >= 20;

    // One Ctrl-C: the files under way finish, nothing new starts.
    let run = interrupt_when(start(dir.path(), &["collectstatic", site_arg, "--clear"], &[]), some_copied, 1);
    assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
    assert!(stdout(&run).contains("not started (interrupted)"), "{}", stdout(&run));
    assert!(stderr(&run).contains("Ctrl-C again aborts them"), "{}", stderr(&run));
    assert!(stderr(&run).contains("run again to finish"), "{}", stderr(&run));
    let copied: usize = stdout(&run).split(' ').next().and_then(|n| n.parse().ok()).expect("a count");
    assert_eq!(files_named(&collected, ".bin").len(), copied, "the summary counts what is there");
    assert!(copied < 800, "nothing was left to interrupt: {}", stdout(&run));
    assert!(files_named(&collected, ".storages-tmp-").is_empty(), "temporary files left");
    for file in files_named(&collected, ".bin") {
        let source = site.join(file.strip_prefix(&collected).expect("under staticfiles"));
        assert!(std::fs::read(&file).expect("copied") == std::fs::read(&source).expect("source"), "{file:?}");
    }

    // Two Ctrl-Cs: what is under way is aborted too.
    std::fs::remove_dir_all(&collected).expect("start over");
    let run = interrupt_when(start(dir.path(), &["collectstatic", site_arg], &[]), some_copied, 2);
    assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
    // Either the second Ctrl-C aborted what was under way, or that had finished already: a summary both ways.
    let summarised = stderr(&run).contains("abandoned after")
        || stderr(&run).contains("had already reached the storage")
        || stdout(&run).contains("not started (interrupted)");
    assert!(summarised, "no summary: {}{}", stdout(&run), stderr(&run));
    assert!(files_named(&collected, ".storages-tmp-").is_empty(), "temporary files left after an abort");

    // The next run finishes the job.
    let rerun = storages(dir.path(), &["collectstatic", site_arg], &[]);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(files_named(&collected, ".bin").len(), 800);
}

#[test]
fn ctrl_c_during_get_leaves_no_partial_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 512 << 20]).expect("write");
    assert!(storages(dir.path(), &["put", "big.bin"], &[]).status.success());
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let out = dir.path().join("out");
    let run = interrupt_when(
        start(dir.path(), &["get", "big.bin", "out"], &[]),
        || !files_named(&out, ".storages-part").is_empty(),
        1,
    );
    if run.status.success() {
        // Done before the signal came: whole.
        assert_eq!(std::fs::metadata(out.join("big.bin")).expect("got").len(), 512 << 20);
    } else {
        assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
        assert!(stderr(&run).contains("interrupted: the download of big.bin abandoned"), "{}", stderr(&run));
        assert!(!out.join("big.bin").exists());
    }
    assert!(files_named(&out, ".storages-part").is_empty(), "a partial download stayed");
}

#[test]
fn ctrl_c_during_an_s3_put_aborts_its_upload() {
    let endpoint = moto_endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big.bin"), vec![3u8; 64 << 20]).expect("write");
    let bucket = fresh_bucket("sigint");
    let env = moto_default_env(&bucket, &endpoint);
    assert!(storages(dir.path(), &["ls"], &env).status.success());
    let pending = || moto_get(&endpoint, &format!("/{bucket}?uploads")).matches("<Upload>").count();
    let run = interrupt_when(start(dir.path(), &["put", "big.bin"], &env), || pending() > 0, 1);
    let claims = moto_get(&endpoint, &format!("/{bucket}?list-type=2&prefix=.storages-staging/claims/"));
    if run.status.success() {
        let cat = storages(dir.path(), &["stat", "big.bin"], &env);
        assert!(stdout(&cat).contains(&format!("size:          {}", 64 << 20)), "{}", stdout(&cat));
    } else {
        assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
        assert!(stderr(&run).contains("interrupted: the save of big.bin abandoned"), "{}", stderr(&run));
    }
    assert_eq!(pending(), 0, "a pending upload stayed after Ctrl-C");
    assert_eq!(claims.matches("<Key>").count(), 0, "a claim stayed after Ctrl-C: {claims}");
}
