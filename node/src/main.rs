//! The `cinemesh` binary: everything is in the library (`cinemesh::cli`).

fn main() -> std::process::ExitCode {
    cinemesh::cli::main()
}
