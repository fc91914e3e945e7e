//! Reading the daemons' own API from the lab: a thread enters a node's network namespace (`setns`) and
//! speaks plain HTTP/1.1 to its API on that namespace's loopback. Parsers for `/metrics` text and the
//! `/films`, `/peers` JSON are pure and tested here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::LabError;

/// Enters network namespace `ns` for the rest of the calling thread's life.
pub fn enter(ns: &str) -> Result<(), LabError> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).map_err(LabError::io(format!("cannot open {path}")))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| LabError::Command { cmd: format!("setns {path}"), reason: e.to_string() })
}

/// `GET path` on `addr` (HTTP/1.1, `Connection: close`), the body when the status is 200.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("GET {path}: no HTTP header")))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!("GET {path}: status {status}")));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// Decodes a chunked HTTP body.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sums of a counter family by the value of one label: `cinemesh_bytes_sent_total{locality="SameIsp"} 5`
/// gives `{"SameIsp": 5}` for `(name, "locality")`.
pub fn by_label(metrics: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            continue;
        }
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let value = rest
            .find(&key)
            .map(|at| &rest[at + key.len()..])
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned();
        *out.entry(value).or_insert(0.0) += v;
    }
    out
}

/// The sum of a counter family over all its labels (or its one unlabelled sample).
pub fn total(metrics: &str, name: &str) -> f64 {
    by_label(metrics, name, "").values().sum()
}

/// Content bytes a node sent and received, split by locality, and its busy answers given and received.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bytes {
    /// Sent in all.
    pub up: f64,
    /// Received in all.
    pub down: f64,
    /// Received from the same site or ISP.
    pub down_same_isp: f64,
    /// Received from other ISPs (or of unknown locality).
    pub down_other_isp: f64,
    /// Chunk requests it answered busy (`cinemesh_busy_answers_total`).
    pub busy_answers: f64,
    /// Busy answers to its own chunk requests (`cinemesh_chunks_failed_total{reason="busy"}`).
    pub busy_received: f64,
}

impl Bytes {
    /// From `/metrics` text.
    pub fn from_metrics(m: &str) -> Bytes {
        let sent = by_label(m, "cinemesh_bytes_sent_total", "locality");
        let recv = by_label(m, "cinemesh_bytes_received_total", "locality");
        let get = |k: &str| recv.get(k).copied().unwrap_or(0.0);
        Bytes {
            up: sent.values().sum(),
            down: recv.values().sum(),
            down_same_isp: get("SameSite") + get("SameIsp"),
            down_other_isp: get("OtherIsp") + get("Unknown"),
            busy_answers: total(m, "cinemesh_busy_answers_total"),
            busy_received: by_label(m, "cinemesh_chunks_failed_total", "reason")
                .get("busy")
                .copied()
                .unwrap_or(0.0),
        }
    }

    /// Field-wise sum.
    pub fn plus(self, o: Bytes) -> Bytes {
        Bytes {
            up: self.up + o.up,
            down: self.down + o.down,
            down_same_isp: self.down_same_isp + o.down_same_isp,
            down_other_isp: self.down_other_isp + o.down_other_isp,
            busy_answers: self.busy_answers + o.busy_answers,
            busy_received: self.busy_received + o.busy_received,
        }
    }
}

/// One content in `/films`: (content id, complete).
pub fn films(json: &str) -> Vec<(String, bool)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((f["content_id"].as_str()?.to_owned(), f["complete"].as_bool().unwrap_or(false)))
        })
        .collect()
}

/// `/peers`: (peer id, ISP, content bytes received from it).
pub fn peers(json: &str) -> Vec<(String, String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["peer_id"].as_str()?.to_owned(),
                p["isp"].as_str().unwrap_or("").to_owned(),
                p["bytes_down"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP cinemesh_bytes_sent Content bytes sent.
# TYPE cinemesh_bytes_sent counter
cinemesh_bytes_sent_total{locality="SameIsp"} 100
cinemesh_bytes_sent_total{locality="OtherIsp"} 50
cinemesh_bytes_sent_total_extra{locality="OtherIsp"} 7
cinemesh_bytes_received_total{locality="SameSite"} 1
cinemesh_bytes_received_total{locality="SameIsp"} 2
cinemesh_bytes_received_total{locality="OtherIsp"} 30
cinemesh_bytes_received_total{locality="Unknown"} 4
cinemesh_chunks_served_total 9
cinemesh_busy_answers_total 12
cinemesh_chunks_failed_total{reason="busy"} 5
cinemesh_chunks_failed_total{reason="io"} 2
# EOF
"#;

    #[test]
    fn metrics_by_locality() {
        let b = Bytes::from_metrics(METRICS);
        assert_eq!(
            b,
            Bytes {
                up: 150.0,
                down: 37.0,
                down_same_isp: 3.0,
                down_other_isp: 34.0,
                busy_answers: 12.0,
                busy_received: 5.0
            }
        );
        assert_eq!(by_label(METRICS, "cinemesh_chunks_served_total", "x").get(""), Some(&9.0));
        assert_eq!(total(METRICS, "cinemesh_chunks_failed_total"), 7.0);
        assert_eq!(b.plus(b).up, 300.0);
    }

    #[test]
    fn json_and_chunked_bodies() {
        let f = films(r#"[{"content_id":"ab","complete":true},{"content_id":"cd","complete":false}]"#);
        assert_eq!(f, vec![("ab".to_owned(), true), ("cd".to_owned(), false)]);
        assert!(films("not json").is_empty());
        let p = peers(r#"[{"peer_id":"12D","isp":"isp-a","bytes_down":42}]"#);
        assert_eq!(p, vec![("12D".to_owned(), "isp-a".to_owned(), 42)]);
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }

    #[test]
    fn http_get_against_a_local_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for body in ["[]", ""] {
                let (mut c, _) = l.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") && req.len() < 4096 {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before ending its request");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(String::from_utf8_lossy(&req).starts_with("GET /films HTTP/1.1\r\n"));
                let status = if body.is_empty() { "404 Not Found" } else { "200 OK" };
                write!(c, "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
            }
        });
        assert_eq!(get(addr, "/films", Duration::from_secs(5)).unwrap(), "[]");
        assert!(get(addr, "/films", Duration::from_secs(5)).unwrap_err().to_string().contains("404"));
        server.join().unwrap();
    }
}
