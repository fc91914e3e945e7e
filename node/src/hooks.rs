//! Post-download hooks: `hooks.on_complete` runs through `sh -c` once per completed content, with
//! `CINEMESH_CONTENT_ID`, `CINEMESH_TITLE` and `CINEMESH_PATH` in its environment. A failing hook is
//! retried with exponential back-off (at most [`MAX_ATTEMPTS`] times) in its own task, so it never blocks
//! the node or other hooks.

use std::time::Duration;

use cinemesh_overlay::net::node::Event;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Attempts per completed content before giving up.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubled each time.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// Runs `command` for every completion event until the channel closes.
pub async fn run(command: String, mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::Complete { content, title, path }) => {
                let command = command.clone();
                let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                tokio::spawn(run_one(command, content.to_hex(), title, path, FIRST_RETRY));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => warn!("hook runner lagged, {n} events lost"),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Runs the hook for one content, retrying on failure. Returns the number of attempts and whether the
/// last one succeeded.
pub async fn run_one(
    command: String,
    content: String,
    title: String,
    path: String,
    first_retry: Duration,
) -> (u32, bool) {
    let mut delay = first_retry;
    for attempt in 1..=MAX_ATTEMPTS {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("CINEMESH_CONTENT_ID", &content)
            .env("CINEMESH_TITLE", &title)
            .env("CINEMESH_PATH", &path)
            .kill_on_drop(true)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                info!(%content, attempt, stdout = %String::from_utf8_lossy(&o.stdout).trim(), "on_complete hook succeeded");
                return (attempt, true);
            }
            Ok(o) => warn!(
                %content, attempt, status = %o.status, stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                "on_complete hook failed"
            ),
            Err(e) => warn!(%content, attempt, "on_complete hook could not start: {e}"),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    (MAX_ATTEMPTS, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_hook_is_retried_and_a_good_one_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // Fails twice (counter file below 2 lines), then succeeds.
        let cmd = format!(
            "echo \"$CINEMESH_CONTENT_ID\" >> {log}; [ $(wc -l < {log}) -ge 3 ]",
            log = log.display()
        );
        let (attempts, ok) =
            run_one(cmd, "abc".into(), "t".into(), "/p".into(), Duration::from_millis(1)).await;
        assert!(ok);
        assert_eq!(attempts, 3);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "abc\nabc\nabc\n");

        let once = dir.path().join("once");
        let cmd = format!("echo \"$CINEMESH_TITLE:$CINEMESH_PATH\" >> {}", once.display());
        let (attempts, ok) =
            run_one(cmd, "c".into(), "Film".into(), "/data/x".into(), Duration::from_millis(1)).await;
        assert!(ok && attempts == 1);
        assert_eq!(std::fs::read_to_string(&once).unwrap(), "Film:/data/x\n");

        let (attempts, ok) =
            run_one("exit 3".into(), "c".into(), "t".into(), "p".into(), Duration::from_millis(1)).await;
        assert!(!ok);
        assert_eq!(attempts, MAX_ATTEMPTS);
    }
}
