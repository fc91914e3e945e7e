//! `cinemesh run`: the daemon. Maps the config file onto the overlay's network configuration, starts the
//! node's event loop, the HTTP API and the hook runner, and shuts down cleanly on SIGINT / SIGTERM.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cinemesh_overlay::catalogue::DistributorKey;
use cinemesh_overlay::net::{self, node::Running, Client, Node};
use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::config::Config;
use crate::{api, api_auth, auth, dashboard, hooks};

/// The node's libp2p identity file inside the data directory.
pub const IDENTITY_FILE: &str = "node.key";

/// Loads the node identity from `data_dir/node.key`, creating it (mode 0600) on first start.
pub fn load_or_create_identity(data_dir: &Path) -> anyhow::Result<Keypair> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).with_context(|| {
            format!("{} is not a cinemesh node key; move it away to create a new one", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("cannot encode the new node key")?;
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Maps the validated config onto the network layer's configuration.
pub fn net_config(cfg: &Config, keypair: Keypair) -> anyhow::Result<net::Config> {
    let parse_all = |list: &[String]| -> anyhow::Result<Vec<libp2p::Multiaddr>> {
        list.iter().map(|a| a.parse().with_context(|| format!("bad multiaddr {a:?}"))).collect()
    };
    let trusted = cfg
        .node
        .trust
        .iter()
        .map(|k| k.parse::<DistributorKey>().with_context(|| format!("node.trust: {k:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let psk = match &cfg.network.psk_file {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read psk file {}", p.display()))?;
            Some(text.parse::<libp2p::pnet::PreSharedKey>().map_err(|e| {
                anyhow::anyhow!("network.psk_file {}: not a pre-shared key file ({e})", p.display())
            })?)
        }
    };
    Ok(net::Config {
        keypair,
        data_dir: cfg.node.data_dir.clone(),
        listen: parse_all(&cfg.network.listen)?,
        bootstrap: parse_all(&cfg.network.bootstrap)?,
        mdns: cfg.network.mdns,
        max_connections: cfg.network.max_connections,
        max_connections_per_peer: cfg.network.max_connections_per_peer,
        max_connections_per_ip: cfg.network.max_connections_per_ip,
        idle_timeout: cfg.network.idle_timeout,
        private: cfg.network.private,
        psk,
        role: cfg.node.role,
        name: cfg.node.name.clone(),
        isp: cfg.node.isp.clone(),
        site: cfg.node.site.clone(),
        trusted,
        gossip: cfg.gossip.clone(),
        transfer: cfg.transfer.clone(),
        policy: cfg.policy.clone(),
        reserve: cfg.storage.reserve.0,
        capacity: cfg.storage.capacity.map(|c| c.0),
        nat: cfg.network.nat.clone(),
        inbound_bytes: Default::default(),
        fault: None,
        record_engine: false,
    })
}

/// A started daemon: the node, its API address, and the tasks to wait on.
#[derive(Debug)]
pub struct Daemon {
    /// Handle to the node.
    pub client: Client,
    /// Where the HTTP API listens.
    pub api: SocketAddr,
    node: tokio::task::JoinHandle<Result<(), net::NetError>>,
    api_task: tokio::task::JoinHandle<()>,
    hooks_task: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the node and the API (binding `cfg.api.listen`; port 0 picks a free one).
    pub async fn start(cfg: &Config, netcfg: net::Config) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let data_dir = netcfg.data_dir.clone();
        let path = api_auth::Token::path(&netcfg.data_dir);
        let guard = api_auth::Guard { token: api_auth::Token::load_or_create(&netcfg.data_dir)?, path };
        let Running { client, events, task } = Node::start(netcfg, &mut registry).await?;
        let listener = tokio::net::TcpListener::bind(cfg.api.listen).await.with_context(|| {
            format!("cannot bind the HTTP API on {} (api.listen / --api)", cfg.api.listen)
        })?;
        let api = listener.local_addr()?;
        let token = auth::Token::load_or_create(&data_dir)?;
        let token = auth::required(&api).then_some(token);
        if token.is_some() {
            info!(%api, "the HTTP API is not on loopback: requests need the token in {}", auth::TOKEN_FILE);
        }
        let hooks = hooks::Records::default();
        let state = api::State {
            client: client.clone(),
            registry: Arc::new(registry),
            hooks: hooks.clone(),
            guard,
            history: dashboard::History::spawn(client.clone()),
        };
        let router = auth::protect(api::router(state), token);
        let api_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                warn!("HTTP API stopped: {e}");
            }
        });
        let hooks_task = cfg
            .hooks
            .on_complete
            .clone()
            .map(|cmd| tokio::spawn(hooks::run(cmd, events, hooks, Some(client.clone()))));
        info!(%api, "HTTP API listening");
        Ok(Self { client, api, node: task, api_task, hooks_task })
    }

    /// Runs until `signal` (then stops cleanly) or until the node task ends by itself, which is an error:
    /// the daemon then exits non-zero instead of serving an API with no node behind it, so that the
    /// service manager (systemd `Restart=on-failure`) restarts it.
    pub async fn serve_until(mut self, signal: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => {
                info!("shutting down");
                self.stop().await
            }
            ended = &mut self.node => {
                self.api_task.abort();
                if let Some(h) = self.hooks_task {
                    h.abort();
                }
                let why = match ended {
                    Ok(Ok(())) => "it stopped without being asked to".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("it panicked: {e}"),
                };
                anyhow::bail!("the node task ended ({why}); exiting so that the service manager restarts the daemon")
            }
        }
    }

    /// Stops the node (verified chunks stay marked), then the API and hooks.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.client.shutdown().await;
        let result = self.node.await;
        self.api_task.abort();
        if let Some(h) = self.hooks_task {
            h.abort();
        }
        result.context("node task panicked")??;
        Ok(())
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let keypair = load_or_create_identity(&cfg.node.data_dir)?;
    let netcfg = net_config(&cfg, keypair)?;
    let daemon = Daemon::start(&cfg, netcfg).await?;
    info!(peer_id = %daemon.client.peer_id(), data_dir = %cfg.node.data_dir.display(), "cinemesh running");
    daemon.serve_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
