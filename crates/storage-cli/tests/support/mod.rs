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
