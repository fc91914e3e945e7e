//! Peer choice: a score from locality (same site, same ISP), load and measured throughput.
//!
//! Weights come from [`PolicyConfig`]. Reference: Dragonfly's parent scoring
//! (IDC 0.2, location 0.1, load 0.6, host type 0.1). Locality is kept by `policy.local_first` in the
//! scheduler (cinemas of other ISPs are asked only for what the own ISP lacks), so the shipped site and ISP
//! weights are 0: a same-ISP weight made fast cinemas wait on slow same-ISP peers.

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;

/// Where a node sits: its ISP and site (LAN). `None` means unknown, which never counts as "same".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Locality {
    /// ISP name, e.g. `orange`.
    pub isp: Option<String>,
    /// Site name (building / LAN), e.g. `paris-11`.
    pub site: Option<String>,
}

impl Locality {
    /// A locality with both fields set.
    pub fn new(isp: impl Into<String>, site: impl Into<String>) -> Self {
        Self { isp: Some(isp.into()), site: Some(site.into()) }
    }

    /// True when both ISPs are known and equal.
    pub fn same_isp(&self, other: &Locality) -> bool {
        matches!((&self.isp, &other.isp), (Some(a), Some(b)) if a == b)
    }

    /// True when both sites are known and equal.
    pub fn same_site(&self, other: &Locality) -> bool {
        matches!((&self.site, &other.site), (Some(a), Some(b)) if a == b)
    }
}

/// The inputs of a peer's score, each in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreInputs {
    /// 1 when same site, else 0.
    pub same_site: bool,
    /// 1 when same ISP, else 0.
    pub same_isp: bool,
    /// The peer's last reported load, 0 (idle) ..= 1 (all upload slots busy).
    pub load: f64,
    /// Measured throughput from that peer relative to the best peer, 0..=1 (0.5 when unmeasured).
    pub throughput: f64,
}

/// The weighted score: higher is better.
pub fn score(weights: &PolicyConfig, inputs: &ScoreInputs) -> f64 {
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    weights.same_site * b(inputs.same_site)
        + weights.same_isp * b(inputs.same_isp)
        + weights.low_load * (1.0 - inputs.load.clamp(0.0, 1.0))
        + weights.throughput * inputs.throughput.clamp(0.0, 1.0)
}
