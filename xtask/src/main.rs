//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `test-backends`: runs every test of the workspace (unit, integration and doc tests) against every
//!   backend the tests configure, and exits non-zero on any failure.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test-backends") => test_backends(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("usage: cargo xtask test-backends [-- <extra cargo test arguments>]");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`; tasks: test-backends");
            ExitCode::from(2)
        }
    }
}

/// `cargo test --workspace`, with the extra arguments passed on.
fn test_backends(extra: &[String]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["test", "--workspace", "--all-features"]).args(extra);
    println!("xtask: running {command:?}");
    match command.status() {
        Ok(status) if status.success() => {
            println!("xtask: every test passed on memory and fs");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("xtask: tests failed ({status})");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("xtask: cannot run cargo: {error}");
            ExitCode::FAILURE
        }
    }
}
