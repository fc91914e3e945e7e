//! Who may read the HTTP API. On loopback (the default, `api.listen = 127.0.0.1:4711`) the API answers
//! anyone on the host, as before. Bound to any other address, every request must carry
//! `Authorization: Bearer <token>`, the token being the text of `<data dir>/api.token` (mode 0600,
//! generated at the daemon's first start). Only the dashboard's static files (`/`, `/dashboard.css`,
//! `/dashboard.js`: no data in them) are served without it, so that the page can ask for the token.
//!
//! The CLI sends the token when `CINEMESH_API_TOKEN` is set ([`client_headers`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

/// The token file inside the data directory.
pub const TOKEN_FILE: &str = crate::api_auth::TOKEN_FILE;
/// The environment variable the CLI reads the token from.
pub const TOKEN_ENV: &str = "CINEMESH_API_TOKEN";
/// Paths served without a token: the dashboard's static files, which hold no data.
pub const PUBLIC_PATHS: [&str; 3] = ["/", "/dashboard.css", "/dashboard.js"];

/// The API token.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads `data_dir/api.token`, creating it (64 hex characters, mode 0600) when absent: the one token
    /// file of [`api_auth`](crate::api_auth), which also guards every `POST`.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let token = crate::api_auth::Token::load_or_create(data_dir)?;
        Ok(Self(token.as_str().into()))
    }

    /// Whether an `Authorization` header value carries this token (compared in constant time).
    pub fn accepts(&self, authorization: &str) -> bool {
        let Some(given) = authorization.strip_prefix("Bearer ") else { return false };
        let (a, b) = (given.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Whether an API listening on `addr` must require the token: any address but loopback.
pub fn required(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// The router, behind the token check when `token` is given.
pub fn protect<S: Clone + Send + Sync + 'static>(router: Router<S>, token: Option<Token>) -> Router<S> {
    match token {
        Some(t) => router.layer(middleware::from_fn_with_state(t, check)),
        None => router,
    }
}

async fn check(State(token): State<Token>, req: Request, next: Next) -> Response {
    let public = req.method() == axum::http::Method::GET && PUBLIC_PATHS.contains(&req.uri().path());
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| token.accepts(v));
    if public || ok {
        return next.run(req).await;
    }
    let body = serde_json::json!({
        "error": format!(
            "this API needs `Authorization: Bearer <token>`; the token is in {TOKEN_FILE} in the daemon's \
             data directory (the CLI reads it from {TOKEN_ENV})"
        )
    });
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
}

/// Headers for the CLI's requests: `Authorization: Bearer $CINEMESH_API_TOKEN` when that is set.
pub fn client_headers() -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .with_context(|| format!("{TOKEN_ENV} is not a valid token"))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_created_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = Token::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Token::load_or_create(dir.path()).unwrap();
        assert_eq!(t.0, again.0, "the second start reads the same token");
        assert!(t.accepts(&format!("Bearer {}", t.0)));
        assert!(!t.accepts(&t.0), "the Bearer scheme is required");
        assert!(!t.accepts("Bearer wrong"));
        assert!(!t.accepts(&format!("Bearer {}x", t.0)));
        std::fs::write(dir.path().join(TOKEN_FILE), "short").unwrap();
        assert!(Token::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn only_loopback_goes_without_a_token() {
        assert!(!required(&"127.0.0.1:4711".parse().unwrap()));
        assert!(!required(&"[::1]:4711".parse().unwrap()));
        assert!(required(&"0.0.0.0:4711".parse().unwrap()));
        assert!(required(&"192.0.2.7:4711".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_protected_router_wants_the_token_except_for_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::load_or_create(dir.path()).unwrap();
        let secret = token.0.to_string();
        let router: Router = protect(
            Router::new()
                .route("/", axum::routing::get(|| async { "page" }))
                .route("/status", axum::routing::get(|| async { "data" })),
            Some(token),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let http = reqwest::Client::new();
        let get = |path: &str, auth: Option<String>| {
            let mut req = http.get(format!("http://{addr}{path}"));
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            req.send()
        };
        assert_eq!(get("/status", None).await.unwrap().status(), 401);
        let denied = get("/status", Some("Bearer nope".into())).await.unwrap();
        assert_eq!(denied.status(), 401);
        assert!(denied.text().await.unwrap().contains(TOKEN_FILE), "the error says where the token is");
        let ok = get("/status", Some(format!("Bearer {secret}"))).await.unwrap();
        assert_eq!((ok.status().as_u16(), ok.text().await.unwrap()), (200, "data".to_owned()));
        assert_eq!(get("/", None).await.unwrap().status(), 200, "the page itself holds no data");
        server.abort();
    }
}
