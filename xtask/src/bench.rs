//! `cargo xtask bench`: builds the benchmark and the `storages` command in release mode, starts moto and s3s-fs,
//! runs the benchmark (crate `bench`) against them and stops them. The figures go to `target/bench/` as JSON.

use crate::servers::Servers;
use std::path::PathBuf;
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    let known = |a: &String| ["--quick", "--check"].contains(&a.as_str()) || a.starts_with("--only=");
    if let Some(unknown) = args.iter().find(|a| !known(a)) {
        return Err(format!("bench: unknown option {unknown}; options: --quick, --check, --only=SECTION[,SECTION]"));
    }
    // A misspelt section would run nothing and report "0 of 0 met".
    const SECTIONS: [&str; 5] = ["operations", "large", "collectstatic", "cache", "fs"];
    for section in args.iter().filter_map(|a| a.strip_prefix("--only=")).flat_map(|list| list.split(',')) {
        if !SECTIONS.contains(&section) {
            return Err(format!("bench: unknown section {section:?}; sections: {}", SECTIONS.join(", ")));
        }
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().map_or_else(|| manifest_dir.join(".."), PathBuf::from);
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_relative() { root.join(target) } else { target };
    println!("xtask: building the benchmark and the storages command (release)");
    let built = Command::new(crate::cargo())
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "bench", "-p", "storage-cli"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !built.success() {
        return Err(format!("the build failed ({built})"));
    }
    let release = target.join("release");
    let servers = Servers::start()?;
    let status = Command::new(release.join("storages-bench"))
        .args(args)
        .envs(servers.env())
        .env("STORAGES_BENCH_CLI", release.join("storages"))
        .env("STORAGES_BENCH_OUT", target.join("bench"))
        .status()
        .map_err(|e| format!("cannot run the benchmark: {e}"))?;
    drop(servers);
    if status.success() { Ok(()) } else { Err(format!("the benchmark failed ({status})")) }
}
