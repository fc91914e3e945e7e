//! The `cinemesh` binary: parses arguments and hands over to the library.

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
