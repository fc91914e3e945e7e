//! The `cinemesh` command line, built inside the test crate so integration tests can start and kill real
//! daemon processes (`CARGO_BIN_EXE_cinemesh-node`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match cinemesh::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cinemesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
