//! The local HTTP API (default 127.0.0.1:4711): JSON for the CLI and dashboards, `/metrics` for Prometheus.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the fleet dashboard (with `/dashboard.css`, `/dashboard.js`; see [`dashboard`](crate::dashboard)) |
//! | GET | `/dashboard/state` | everything the dashboard shows, as JSON |
//! | GET | `/status` | peer id, listen addresses, role, ISP, catalogue heads, disk free, recent hook runs |
//! | GET | `/films` | the catalogue with local progress per content |
//! | GET | `/peers` | connected peers: ISP, load, bytes up/down |
//! | GET | `/fleet` | per content: which nodes have it, which are behind, which will miss the deadline |
//! | GET | `/metrics` | Prometheus / OpenMetrics text: `cinemesh_*` and libp2p's metrics |
//! | POST | `/publish` | `{path, manifest, entry}` (hex): seed a content from where it lies and gossip its Publish |
//! | POST | `/catalogue` | `{entry}` (hex): apply and gossip a signed entry (withdraw, admit, revoke, policy) |
//! | POST | `/verify` | `{content_id?}`: recheck stored chunks, re-fetch bad ones |
//!
//! Errors are JSON `{"error": "..."}` with a 4xx/5xx status. Every `POST` needs the API token and a
//! foreign `Host` header is refused on every call ([`crate::api_auth`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cinemesh_overlay::catalogue::SignedEntry;
use cinemesh_overlay::content::{Manifest, MAX_MANIFEST_BYTES};
use cinemesh_overlay::net::{Client, NetError};
use cinemesh_overlay::ContentId;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct State {
    /// The node.
    pub client: Client,
    /// Every metric of the node.
    pub registry: Arc<Registry>,
    /// Recent post-download hook runs.
    pub hooks: crate::hooks::Records,
    /// Seeder egress samples for the dashboard.
    pub history: crate::dashboard::History,
    /// Who may change the node.
    pub guard: crate::api_auth::Guard,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// A JSON error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
    #[serde(skip)]
    status: Option<u16>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self { error: error.into(), status: Some(status.as_u16()) }
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        let status = match e {
            NetError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            self.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self)).into_response()
    }
}

/// Body of `POST /publish`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The directory the manifest's paths resolve against (absolute).
    pub path: PathBuf,
    /// The manifest's canonical bytes, hex.
    pub manifest: String,
    /// The signed Publish entry, hex.
    pub entry: String,
}

/// Body of `POST /catalogue`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryRequest {
    /// A signed entry, hex.
    pub entry: String,
}

/// Body of `POST /verify`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// One content, or all when absent.
    pub content_id: Option<String>,
}

/// The router.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/films", get(films))
        .route("/peers", get(peers))
        .route("/fleet", get(fleet))
        .route("/metrics", get(metrics))
        .route("/publish", post(publish))
        .route("/catalogue", post(catalogue))
        .route("/verify", post(verify))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see GET /status") })
        .layer(DefaultBodyLimit::max(2 * MAX_MANIFEST_BYTES + 64 * 1024))
        .layer(axum::middleware::from_fn_with_state(state.guard.clone(), crate::api_auth::check))
        .with_state(state)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn decode_entry(hex_text: &str) -> Result<SignedEntry, ApiError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|e| bad(format!("entry: not hex: {e}")))?;
    SignedEntry::decode(&bytes).map_err(|e| bad(format!("entry: {e}")))
}

async fn status(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    let mut v = serde_json::to_value(s.client.status().await?)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["hooks"] = serde_json::to_value(s.hooks.list()).unwrap_or_default();
    v["api_token_file"] = serde_json::Value::String(s.guard.path.display().to_string());
    Ok(Json(v))
}

async fn films(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.client.films().await?))
}

async fn peers(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.client.peers().await?))
}

async fn fleet(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.client.fleet().await?))
}

async fn metrics(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &s.registry)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

async fn publish(
    AxState(s): AxState<State>,
    Json(req): Json<PublishRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = hex::decode(req.manifest.trim()).map_err(|e| bad(format!("manifest: not hex: {e}")))?;
    let manifest = Manifest::decode(&bytes).map_err(|e| bad(format!("manifest: {e}")))?;
    let entry = decode_entry(&req.entry)?;
    if !req.path.is_absolute() {
        return Err(bad("path must be absolute"));
    }
    let id = manifest.id();
    s.client.publish(manifest, req.path, entry).await?;
    Ok(Json(serde_json::json!({ "content_id": id.to_hex() })))
}

async fn catalogue(
    AxState(s): AxState<State>,
    Json(req): Json<EntryRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let entry = decode_entry(&req.entry)?;
    let seq = entry.entry.seq;
    s.client.submit(entry).await?;
    Ok(Json(serde_json::json!({ "applied": seq })))
}

async fn verify(
    AxState(s): AxState<State>,
    Json(req): Json<VerifyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let content = match req.content_id {
        Some(c) => Some(c.parse::<ContentId>().map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    Ok(Json(s.client.verify(content).await?))
}
