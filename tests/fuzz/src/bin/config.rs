//! Fuzz target `config`: see [`cinemesh_tests::decode`].

fn main() {
    afl::fuzz!(|data: &[u8]| cinemesh_tests::decode("config", data));
}
