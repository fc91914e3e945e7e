//! Fuzz target `protocol`: see [`cinemesh_tests::decode`].

fn main() {
    afl::fuzz!(|data: &[u8]| cinemesh_tests::decode("protocol", data));
}
