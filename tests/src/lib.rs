//! cinemesh integration tests: real nodes on 127.0.0.1. The tests live in `tests/tests.rs` (one test
//! binary, as ripgrep does); this library is empty.
