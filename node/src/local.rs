//! Nodes in this process on loopback: the demo and the integration tests start meshes with these.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cinemesh_overlay::net::node::{Event, Running};
use cinemesh_overlay::net::{self, Client, NetError, Node};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

/// A node running in this process.
#[derive(Debug)]
pub struct LocalNode {
    /// Its handle.
    pub client: Client,
    /// Its events.
    pub events: broadcast::Receiver<Event>,
    /// Its first listen address, with `/p2p/<peer id>`.
    pub addr: Multiaddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<Result<(), NetError>>,
    api: Option<tokio::task::JoinHandle<()>>,
}

impl LocalNode {
    /// Starts a node and waits (at most 10 s) until it listens.
    pub async fn start(cfg: net::Config) -> anyhow::Result<Self> {
        let data_dir = cfg.data_dir.clone();
        let mut registry = Registry::default();
        let Running { client, events, task } = Node::start(cfg, &mut registry).await?;
        let c = client.clone();
        let addr = wait_for("the node to listen", Duration::from_secs(10), || {
            let c = c.clone();
            async move { Ok(c.status().await?.listen.first().map(|a| a.parse::<Multiaddr>()).transpose()?) }
        })
        .await?;
        Ok(Self { client, events, addr, data_dir, registry: Arc::new(registry), task, api: None })
    }

    /// Serves its HTTP API (dashboard included) on 127.0.0.1 at a free port, until [`stop`](Self::stop);
    /// returns the address.
    pub async fn serve_api(&mut self) -> anyhow::Result<SocketAddr> {
        self.serve_api_with(None).await
    }

    /// Like [`serve_api`](Self::serve_api), requiring `token` on every request when given, as a daemon
    /// does when its API is not on loopback.
    pub async fn serve_api_with(&mut self, token: Option<crate::auth::Token>) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = crate::api::State {
            client: self.client.clone(),
            registry: self.registry.clone(),
            hooks: crate::hooks::Records::default(),
            guard: crate::api_auth::Guard {
                token: crate::api_auth::Token::load_or_create(&self.data_dir)?,
                path: crate::api_auth::Token::path(&self.data_dir),
            },
            history: crate::dashboard::History::spawn(self.client.clone()),
        };
        let router = crate::auth::protect(crate::api::router(state), token);
        if let Some(old) = self.api.replace(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        })) {
            old.abort();
        }
        Ok(addr)
    }

    /// Its metrics as Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The value of one sample of its metrics, e.g. `cinemesh_chunks_verified_total` or
    /// `cinemesh_chunks_failed_total{reason="corrupt"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics_text(), sample)
    }

    /// Stops the node and waits for its event loop to end.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(api) = &self.api {
            api.abort();
        }
        self.client.shutdown().await;
        self.task.await??;
        Ok(())
    }
}

/// The value of one sample in Prometheus text; 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `probe` every 50 ms until it yields `Some`, failing after `timeout` with a message naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
