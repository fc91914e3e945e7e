//! The fleet dashboard: `GET /` on the API serves one page (HTML, CSS and JavaScript embedded in the
//! binary: no CDN, no build step) that polls `GET /dashboard/state` every 2 s and shows the films, a grid
//! of every reporting cinema, the mesh's traffic and the catalogue log; on any node it also shows that
//! node itself. Read-only: where an action is wanted the page shows the CLI command to run.
//!
//! - [`view`]: the JSON the page reads, built from the node's snapshot.
//! - [`history`]: seeder egress samples over the last hour.

pub mod history;
pub mod view;

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

pub use history::History;

use crate::api::{ApiError, State};

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its style sheet.
pub const STYLE_CSS: &str = include_str!("dashboard.css");
/// Its script.
pub const SCRIPT_JS: &str = include_str!("dashboard.js");

/// The page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes: the page, its two static files and its JSON.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT_JS) }))
        .route("/dashboard/state", get(state))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn state(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    let (snapshot, status, films, peers) =
        tokio::try_join!(s.client.snapshot(), s.client.status(), s.client.films(), s.client.peers())?;
    let view = view::build(snapshot, status, s.hooks.list(), films, peers, s.history.list());
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [INDEX_HTML, STYLE_CSS, SCRIPT_JS] {
            let text = text.replace("http://www.w3.org/2000/svg", ""); // a namespace name, not a load
            assert!(!text.contains("http://") && !text.contains("https://"), "no external URL");
        }
        assert!(INDEX_HTML.contains(r#"<script src="dashboard.js""#));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (the CSP forbids it)");
        assert!(!INDEX_HTML.contains("style="), "no inline style (the CSP forbids it)");
        assert!(SCRIPT_JS.contains("dashboard/state"));
    }

    #[test]
    fn building_the_state_of_1000_cinemas_is_quick() {
        let snap = view::tests::fleet(1000, 20);
        let start = std::time::Instant::now();
        let s = view::build(snap, view::tests::status(), vec![], vec![], vec![], vec![]);
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(s.cinemas.len(), 1000);
        // Generous: a debug build on a shared 2-core machine; the point is that it is not quadratic.
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
        assert!(json.len() < 2 << 20, "{} bytes", json.len());
    }
}
