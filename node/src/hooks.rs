//! Post-download hooks: `hooks.on_complete` runs through `sh -c` once per completed content, with
//! `CINEMESH_CONTENT_ID`, `CINEMESH_TITLE` and `CINEMESH_PATH` in its environment. A failing hook is
//! retried with exponential back-off (at most [`MAX_ATTEMPTS`] times) in its own task, so it never blocks
//! the node or other hooks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cinemesh_overlay::net::node::Event;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Attempts per completed content before giving up.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubled each time.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// Hook runs remembered for `/status` (the most recent first are kept).
pub const MAX_RECORDS: usize = 100;
/// Bytes of a hook's output kept in its record.
pub const MAX_OUTPUT: usize = 1024;

/// The outcome of a hook for one content, as shown by `cinemesh status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Content id, hex.
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Attempts so far.
    pub attempts: u32,
    /// `running`, `ok`, `retrying` or `failed`.
    pub state: String,
    /// Exit status of the last attempt.
    pub status: Option<String>,
    /// The last attempt's output (stdout then stderr), truncated.
    pub output: String,
}

/// The shared, bounded list of hook records.
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<Mutex<VecDeque<Record>>>);

impl Records {
    /// A copy of the records, oldest first.
    pub fn list(&self) -> Vec<Record> {
        self.0.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    fn update(&self, record: Record) {
        if let Ok(mut r) = self.0.lock() {
            match r.iter_mut().find(|x| x.content_id == record.content_id) {
                Some(x) => *x = record,
                None => {
                    if r.len() >= MAX_RECORDS {
                        r.pop_front();
                    }
                    r.push_back(record);
                }
            }
        }
    }
}

/// Runs `command` for every completion event until the channel closes. Each final result (`ok: <title>`
/// or `failed: <title>`) is told to `node`, when given, for its fleet report.
pub async fn run(
    command: String,
    mut events: broadcast::Receiver<Event>,
    records: Records,
    node: Option<cinemesh_overlay::net::Client>,
) {
    loop {
        match events.recv().await {
            Ok(Event::Complete { content, title, path }) => {
                let command = command.clone();
                let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                let (records, node) = (records.clone(), node.clone());
                tokio::spawn(async move {
                    let run = run_one(command, content.to_hex(), title.clone(), path, FIRST_RETRY, records);
                    let (_, ok) = run.await;
                    if let Some(node) = node {
                        let _ =
                            node.hook_result(format!("{}: {title}", if ok { "ok" } else { "failed" })).await;
                    }
                });
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
    records: Records,
) -> (u32, bool) {
    let mut delay = first_retry;
    for attempt in 1..=MAX_ATTEMPTS {
        let mut record = Record {
            content_id: content.clone(),
            title: title.clone(),
            attempts: attempt,
            state: "running".into(),
            status: None,
            output: String::new(),
        };
        records.update(record.clone());
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("CINEMESH_CONTENT_ID", &content)
            .env("CINEMESH_TITLE", &title)
            .env("CINEMESH_PATH", &path)
            .kill_on_drop(true)
            .output()
            .await;
        if let Ok(o) = &out {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            record.output = text.chars().take(MAX_OUTPUT).collect();
            record.status = Some(o.status.to_string());
        }
        record.state = match &out {
            Ok(o) if o.status.success() => "ok",
            _ if attempt < MAX_ATTEMPTS => "retrying",
            _ => "failed",
        }
        .into();
        records.update(record);
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
            run_one(cmd, "abc".into(), "t".into(), "/p".into(), Duration::from_millis(1), Records::default())
                .await;
        assert!(ok);
        assert_eq!(attempts, 3);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "abc\nabc\nabc\n");

        let once = dir.path().join("once");
        let cmd = format!("echo \"$CINEMESH_TITLE:$CINEMESH_PATH\" >> {}", once.display());
        let (attempts, ok) = run_one(
            cmd,
            "c".into(),
            "Film".into(),
            "/data/x".into(),
            Duration::from_millis(1),
            Records::default(),
        )
        .await;
        assert!(ok && attempts == 1);
        assert_eq!(std::fs::read_to_string(&once).unwrap(), "Film:/data/x\n");

        let (attempts, ok) = run_one(
            "exit 3".into(),
            "c".into(),
            "t".into(),
            "p".into(),
            Duration::from_millis(1),
            Records::default(),
        )
        .await;
        assert!(!ok);
        assert_eq!(attempts, MAX_ATTEMPTS);

        let records = Records::default();
        run_one(
            "echo out; echo err >&2; exit 4".into(),
            "d".into(),
            "t".into(),
            "p".into(),
            Duration::from_millis(1),
            records.clone(),
        )
        .await;
        let r = records.list();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].state.as_str(), r[0].attempts), ("failed", MAX_ATTEMPTS));
        assert_eq!(r[0].output, "out\nerr\n");
        assert!(r[0].status.as_deref().is_some_and(|s| s.contains('4')), "{:?}", r[0].status);
    }
}
