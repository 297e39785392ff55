//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `test-backends`: installs what the S3 tests need (moto, s3s-fs), builds the tests, starts both servers on
//!   free loopback ports, runs the tests (all, or a subset) with their endpoints in the environment, stops the
//!   servers, and names each failed test with the command that reruns it alone.
//! - `bench`: the benchmark table (the project's `Storage` API against raw object_store on moto, large
//!   transfers, collectstatic, the filesystem backend), printed and written as JSON under `target/bench/`.
//! - `s3-servers`: starts the servers and waits, for running tests by hand.

mod bench;
mod matrix;
mod servers;
mod suite;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

  test-backends [--stress[=N]] [CARGO TEST OPTIONS] [FILTER] [--exact] [-- TEST-BINARY ARGS]
      build the tests, start the S3 servers, run the tests and print the conformance matrix. With no options
      every test of the workspace runs; `-p CRATE [--test NAME | --lib | --doc] [FILTER] [--exact]` runs a
      subset. --stress keeps N threads (default: one per core) burning CPU while the tests run.
  bench [--quick] [--check]
      start moto and print the benchmark table; JSON under target/bench/ (--quick: smaller sizes, for a try;
      --check: exit 1 when a target is missed)
  s3-servers
      start the S3 servers, print their environment and wait (Ctrl-C stops them)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let wants_help = rest.iter().any(|a| a == "-h" || a == "--help");
    match args.first().map(String::as_str) {
        Some(_) if wants_help => help(),
        Some("test-backends") => report(suite::Selection::parse(rest).and_then(|s| suite::run(&s))),
        Some("bench") => report(bench::run(rest)),
        Some("s3-servers") => report(s3_servers()),
        Some("-h" | "--help" | "help") | None => help(),
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`; tasks: test-backends, bench, s3-servers");
            ExitCode::from(2)
        }
    }
}

/// The cargo that runs xtask (`$CARGO`), for the builds and installs it starts.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn help() -> ExitCode {
    print!("{USAGE}");
    ExitCode::SUCCESS
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the servers and prints their environment, for running tests by hand.
fn s3_servers() -> Result<(), String> {
    let servers = servers::Servers::start()?;
    for (key, value) in servers.env() {
        println!("export {key}={value}");
    }
    if let Some((_, moto)) = servers.env().into_iter().find(|(k, _)| k == "STORAGES_TEST_MOTO_ENDPOINT") {
        println!("# to point the storages command at moto (any keys work):");
        println!(
            "# export AWS_S3_ENDPOINT_URL={moto} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \\\n\
             #   AWS_AUTO_CREATE_BUCKET=true AWS_STORAGE_BUCKET_NAME=media STATICFILES_STORAGE=storages.backends.s3.S3Storage"
        );
    }
    println!("# servers are running; press Ctrl-C to stop them");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
