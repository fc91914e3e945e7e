//! Fuzz target `fleet`: see [`cinemesh_tests::decode`].

fn main() {
    afl::fuzz!(|data: &[u8]| cinemesh_tests::decode("fleet", data));
}
