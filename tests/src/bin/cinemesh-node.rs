//! The `cinemesh` command line, built inside the test crate so integration tests can start and kill real
//! daemon processes (`CARGO_BIN_EXE_cinemesh-node`).

fn main() -> std::process::ExitCode {
    cinemesh::cli::main()
}
