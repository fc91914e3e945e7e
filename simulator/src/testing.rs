//! Shared test fixtures.

/// A tiny valid scenario: 4 fibre cinemas on one ISP, one superseeder in a datacenter, a 64 MiB film.
pub(crate) const MINI: &str = r#"
name = "mini"
cinemas = 4
[[isp]]
name = "a"
share = 1.0
mix = { fibre = 1.0 }
[[isp]]
name = "dc"
share = 0.0
[access.fibre]
up = "100Mbit/s"
down = "100Mbit/s"
[seeders]
count = 1
isp = "dc"
up = "100Mbit/s"
down = "100Mbit/s"
[[film]]
name = "f"
size = "64MiB"
"#;
