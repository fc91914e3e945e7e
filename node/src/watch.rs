//! `cinemesh status --watch`: live progress bars per content, with rate and ETA, polled from the API.

use std::collections::BTreeMap;
use std::time::Duration;

use cinemesh_overlay::net::client::FilmStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::{get, ApiArgs};

/// Poll interval.
const POLL: Duration = Duration::from_secs(1);

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:<28} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta:<5} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Shows bars until interrupted (Ctrl-C).
pub async fn run(api: &ApiArgs, mut films: Vec<FilmStatus>) -> anyhow::Result<()> {
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    loop {
        for f in &films {
            let bar = bars.entry(f.content_id.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(f.size));
                b.set_style(style());
                b.set_prefix(f.title.chars().take(28).collect::<String>());
                b
            });
            bar.set_position(f.have_bytes);
            bar.set_message(f.state.clone());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        films = get(api, "/films").await?;
    }
    for b in bars.values() {
        b.abandon();
    }
    Ok(())
}
