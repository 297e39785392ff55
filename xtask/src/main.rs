//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `test-backends`: installs what the S3 tests need (moto, s3s-fs), starts both servers on free loopback
//!   ports, runs every test of the workspace with their endpoints in the environment, and stops them.

mod matrix;
mod servers;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test-backends") => report(test_backends(&args[1..])),
        Some("s3-servers") => report(s3_servers()),
        Some("-h" | "--help") | None => {
            println!("usage: cargo xtask <task>");
            println!("  test-backends [-- <cargo test arguments>]  start the S3 servers and run every test");
            println!("  s3-servers                                 start the S3 servers and wait (Ctrl-C stops)");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`; tasks: test-backends, s3-servers");
            ExitCode::from(2)
        }
    }
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

/// `cargo test --workspace` with the S3 servers running (extra arguments go to `cargo test`), then the
/// backend x scenario matrix of the conformance suite.
fn test_backends(extra: &[String]) -> Result<(), String> {
    let servers = servers::Servers::start()?;
    let matrix_file = std::env::temp_dir().join(format!("storages-matrix-{}.tsv", std::process::id()));
    let report_file = std::env::temp_dir().join(format!("storages-report-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&matrix_file);
    let _ = std::fs::remove_file(&report_file);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .envs(servers.env())
        .env("STORAGES_MATRIX_FILE", &matrix_file)
        .env("STORAGES_REPORT_FILE", &report_file);
    println!("xtask: running cargo test --workspace --no-fail-fast {}", extra.join(" "));
    let status = command.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    drop(servers);
    let matrix = matrix::Matrix::read(&matrix_file);
    let _ = std::fs::remove_file(&matrix_file);
    match &matrix {
        Ok(matrix) => print!("{}", matrix.render()),
        Err(message) => eprintln!("xtask: no conformance matrix: {message}"),
    }
    if let Ok(report) = std::fs::read_to_string(&report_file) {
        println!("\nmeasurements:\n{}", report.trim_end());
        let _ = std::fs::remove_file(&report_file);
    }
    let matrix_failed = matrix.as_ref().map_or(true, |m| m.failures() > 0);
    if status.success() && !matrix_failed {
        println!("xtask: every test passed (memory, fs, s3 on moto; signature checks on s3s-fs)");
        Ok(())
    } else {
        Err(format!("tests failed (cargo test: {status})"))
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
