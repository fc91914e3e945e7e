//! Who may change the node through its HTTP API.
//!
//! - **State-changing calls** (every `POST`: `/publish`, `/catalogue`, `/verify`) need
//!   `Authorization: Bearer <token>`. The token is 32 random bytes (hex) in `<data_dir>/api.token`,
//!   created at the first start with mode 0600, so whoever can read it can drive the node: the operator
//!   (the user the daemon runs as, as for `node.key`), not any local user who can reach the port. The CLI
//!   reads it (`--token-file`, or the path `GET /status` names) and sends it.
//! - **Foreign `Host` headers** are refused on every call: a host name other than `localhost` or an IP
//!   literal means a browser was led to the API by DNS rebinding (a web page whose name resolves to
//!   127.0.0.1); such a page cannot set a `Host` header of its own.
//!
//! Reads (`GET`) need no token: status and metrics hold nothing secret and Prometheus scrapes them.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "api.token";

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or restricting the file failed.
    #[error("API token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file does not hold a token.
    #[error("API token file {path} does not hold a token (64 hex characters); delete it and restart the daemon to make a new one")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// The API token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token file of a data directory.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(TOKEN_FILE)
    }

    /// Reads the data directory's token, or creates it (mode 0600) at the first start. An existing file
    /// readable by others is restricted to 0600 again.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, TokenError> {
        let path = Self::path(data_dir);
        let io = |source| TokenError::Io { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                let token = hex::encode(rand::random::<[u8; 32]>());
                file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
                Ok(Self(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), "API token file readable by others; restricting it to 0600");
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                            .map_err(io)?;
                    }
                }
                Self::read(&path)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads a token file.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenError::Io { path: path.to_owned(), source })?;
        let token = text.trim();
        if token.len() != 64 || hex::decode(token).is_err() {
            return Err(TokenError::Malformed { path: path.to_owned() });
        }
        Ok(Self(token.to_owned()))
    }

    /// The `Authorization` header value that carries it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `header` (an `Authorization` value) carries this token; compared in constant time.
    pub fn matches(&self, header: &str) -> bool {
        let Some(given) = header.strip_prefix("Bearer ") else { return false };
        let (a, b) = (given.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// What the API knows to check callers.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The token state-changing calls must carry.
    pub token: Token,
    /// Where it lives (named in refusals and in `GET /status`).
    pub path: PathBuf,
}

/// Whether a `Host` header names this machine by IP literal or `localhost` (with any port).
pub fn host_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

/// The axum middleware: `Host` check on every call, token check on every `POST`.
pub async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host_allowed(host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} refused: the API answers only to localhost or an IP address (a host name \
                 here means a web page reached it through DNS rebinding)"
            ),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let auth = request.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        if !auth.is_some_and(|a| guard.token.matches(a)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} {} needs the API token: send `Authorization: Bearer <token>` with the token from {} \
                     (the cinemesh CLI does so when run by a user who can read that file, or with --token-file)",
                    request.method(),
                    request.uri().path(),
                    guard.path.display()
                ),
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let t = Token::load_or_create(dir.path()).unwrap();
        assert_eq!(Token::load_or_create(dir.path()).unwrap(), t);
        assert_eq!(Token::read(&Token::path(dir.path())).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Token::path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(t.matches(&t.bearer()));
        assert!(!t.matches("Bearer 00"));
        assert!(!t.matches(&t.bearer().replace("Bearer", "Basic")));
        std::fs::write(Token::path(dir.path()), "nope").unwrap();
        assert!(matches!(Token::read(&Token::path(dir.path())), Err(TokenError::Malformed { .. })));
    }

    #[test]
    fn only_localhost_and_ip_literals_are_accepted_as_host() {
        for ok in ["localhost", "localhost:4711", "127.0.0.1:4711", "[::1]:4711", "10.0.0.5", "LOCALHOST"] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in ["", "evil.example", "evil.example:4711", "localhost.evil.example", "127.0.0.1.nip.io:80"]
        {
            assert!(!host_allowed(bad), "{bad}");
        }
    }
}
