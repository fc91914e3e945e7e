//! Command-line interface: `cinemesh <command>`. Arguments are parsed here (clap), merged over the config
//! file, validated, then handed to the library: the daemon, the HTTP client or the demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use cinemesh_overlay::catalogue::{
    Body, Entry, Keypair, Member, Policy, Publish, RateWindow, SignedEntry, Targets,
};
use cinemesh_overlay::config::{ByteSize, ChunkSize};
use cinemesh_overlay::content::{self, Manifest};
use cinemesh_overlay::net::client::{FilmStatus, PeerStatus, Status};
use cinemesh_overlay::ContentId;
use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::config::{Config, LogFormat, Role, DEFAULT_TOML};

/// `println!` that ends the process quietly when stdout is a closed pipe (`cinemesh status | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// Tracker-less peer-to-peer distribution of digital cinema packages.
#[derive(Debug, Parser)]
#[command(name = "cinemesh", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon.
    Run(RunArgs),
    /// Create a distributor keypair file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the manifest of a file or directory and print its content id and sizes.
    Manifest {
        /// File or directory.
        path: PathBuf,
        /// Chunk size: `auto` (from the content's size) or a power of two, 64KiB..64MiB.
        #[arg(long, default_value = "auto")]
        chunk_size: ChunkSize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Configuration: print the default or the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Publish a file or directory: the local daemon seeds it from where it lies and gossips it.
    Publish(PublishArgs),
    /// Withdraw a content: every node stops serving it and removes it.
    Withdraw {
        #[command(flatten)]
        sign: SignArgs,
        /// Content id (hex).
        content_id: ContentId,
    },
    /// Admit a node to the mesh with its signed name, ISP, site and groups.
    Admit {
        #[command(flatten)]
        sign: SignArgs,
        /// The node's peer id (see `cinemesh status` on that node).
        peer_id: libp2p::PeerId,
        /// Human name (e.g. the cinema).
        #[arg(long)]
        name: String,
        /// ISP.
        #[arg(long)]
        isp: String,
        /// Site (LAN).
        #[arg(long)]
        site: String,
        /// Group (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Set the weekly bandwidth schedule of a group of nodes (or of every node without a group policy).
    /// Without any --window, removes the limits.
    Policy {
        #[command(flatten)]
        sign: SignArgs,
        /// The group it applies to; the default policy when absent.
        #[arg(long)]
        group: Option<String>,
        /// A window, UTC: `DAYS HH:MM-HH:MM [up=RATE] [down=RATE]`, DAYS like `mon-fri`, `sat,sun` or
        /// `all`; e.g. `--window "all 18:00-23:30 up=1MB/s"` (repeat for several).
        #[arg(long = "window", value_parser = parse_window)]
        windows: Vec<RateWindow>,
    },
    /// Revoke a node: it gets no more catalogue or content.
    Revoke {
        #[command(flatten)]
        sign: SignArgs,
        /// The node's peer id.
        peer_id: libp2p::PeerId,
    },
    /// The local node's status and the progress of every content.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON (`peer_id`, `listen`, `films`, ...).
        #[arg(long)]
        json: bool,
        /// Live progress bars until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// The catalogue with local progress.
    Films {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connected peers.
    Peers {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The fleet view (run it against the distributor's node): per content, which cinemas have it, which
    /// are behind, and which will miss the deadline at their current rate.
    Fleet {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recheck stored chunks (all contents or one); bad chunks are fetched again.
    Verify {
        #[command(flatten)]
        api: ApiArgs,
        /// Content id (hex); all contents when absent.
        content_id: Option<ContentId>,
    },
    /// A local mesh on loopback: a distributor and N cinemas; publishes generated content and shows it
    /// arrive everywhere, verified.
    Demo(crate::demo::DemoArgs),
}

/// `cinemesh config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration as commented TOML.
    Default,
    /// Print the effective configuration (file + defaults), after validation.
    Show {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Where the local daemon's API is.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address of the daemon's HTTP API.
    #[arg(long, default_value = "127.0.0.1:4711", env = "CINEMESH_API")]
    pub api: SocketAddr,
    /// The daemon's API token file (`<data_dir>/api.token`), needed by commands that change the node;
    /// by default the path the daemon names in `GET /status`.
    #[arg(long, env = "CINEMESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// A distributor key and the daemon to hand the signed entry to.
#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// Distributor key file (from `cinemesh keygen`).
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `cinemesh publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// File or directory to publish.
    path: PathBuf,
    /// Title (default: the file or directory name).
    #[arg(long)]
    title: Option<String>,
    /// Targets: `all`, `group:NAME` or `node:PEER_ID` (repeat; groups and nodes cannot be mixed).
    #[arg(long = "targets", default_value = "all")]
    targets: Vec<String>,
    /// Deadline, RFC 3339 (e.g. 2026-12-01T18:00:00Z).
    #[arg(long)]
    deadline: Option<String>,
    /// Chunk size: `auto` (from the content's size: 4MiB from 2GiB up, smaller below, at least 256KiB)
    /// or a power of two, 64KiB..64MiB.
    #[arg(long, default_value = "auto")]
    chunk_size: ChunkSize,
}

/// `cinemesh run` flags; each overrides the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML). Without it, defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen multiaddr (repeat).
    #[arg(long)]
    listen: Vec<String>,
    /// Bootstrap peer multiaddr with /p2p/ (repeat).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// HTTP API address.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// Self-declared ISP.
    #[arg(long)]
    isp: Option<String>,
    /// Self-declared site.
    #[arg(long)]
    site: Option<String>,
    /// Node name.
    #[arg(long)]
    name: Option<String>,
    /// Role: cinema, superseeder or distributor.
    #[arg(long)]
    role: Option<Role>,
    /// Trusted distributor public key, cmpk1... (repeat).
    #[arg(long)]
    trust: Vec<String>,
    /// Disable mDNS discovery.
    #[arg(long)]
    no_mdns: bool,
    /// Run an open mesh: serve catalogue and content to any peer, admitted or not
    /// (`network.private = false`). Private is the default.
    #[arg(long)]
    open: bool,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable.
    Human,
    /// JSON lines.
    Json,
}

impl RunArgs {
    /// The config file (or defaults) with these flags applied, validated.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            cfg.node.data_dir = d.clone();
        }
        if !self.listen.is_empty() {
            cfg.network.listen = self.listen.clone();
        }
        cfg.network.bootstrap.extend(self.bootstrap.iter().cloned());
        if let Some(a) = self.api {
            cfg.api.listen = a;
        }
        if self.isp.is_some() {
            cfg.node.isp = self.isp.clone();
        }
        if self.site.is_some() {
            cfg.node.site = self.site.clone();
        }
        if self.name.is_some() {
            cfg.node.name = self.name.clone();
        }
        if let Some(r) = self.role {
            cfg.node.role = r;
        }
        cfg.node.trust.extend(self.trust.iter().cloned());
        if self.no_mdns {
            cfg.network.mdns = false;
        }
        if self.open {
            cfg.network.private = false;
        }
        if let Some(f) = self.log_format {
            cfg.node.log_format = match f {
                LogFormatArg::Human => LogFormat::Human,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        let origin =
            self.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into());
        cfg.validate().with_context(|| format!("configuration ({origin} and flags)"))?;
        Ok(cfg)
    }
}

/// The daemon's log filter unless `RUST_LOG` is set. An AutoNAT server's dial-back to a cinema behind
/// NAT times out by design (libp2p warns each time: every 15 s per such cinema), so that module logs
/// errors only.
pub const DEFAULT_LOG_FILTER: &str =
    "info,libp2p_gossipsub=warn,libp2p_kad=warn,libp2p_autonat::v2::server::handler::dial_request=error";

/// Sets up logging (`RUST_LOG` overrides [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// The `cinemesh` program: runs the command and turns an error into a message and a failure status.
/// Both `cinemesh` and the test crate's `cinemesh-node` are this one function.
pub fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cinemesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the process arguments and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = args.config()?;
            init_logging(cfg.node.log_format);
            runtime()?.block_on(crate::daemon::run(cfg))?;
        }
        Command::Keygen { out } => {
            let key = Keypair::generate(&mut rand::rngs::OsRng);
            key.write_new(&out)?;
            out!("{}", key.public());
            eprintln!(
                "wrote {} (keep it secret; add the public key above to every node's node.trust)",
                out.display()
            );
        }
        Command::Manifest { path, chunk_size, json } => {
            let m = Manifest::scan(&path, chunk_size)?;
            let files = m.files().filter(|(_, e)| !e.is_dir()).count();
            if json {
                let v = serde_json::json!({
                    "content_id": m.id().to_hex(), "files": files, "size": m.total_size(),
                    "chunks": m.chunk_count(), "chunk_size": m.chunk_size(),
                });
                out!("{v}");
            } else {
                out!("content id  {}", m.id());
                out!("files       {files}");
                out!("size        {} ({})", m.total_size(), ByteSize(m.total_size()));
                out!("chunks      {} of {}", m.chunk_count(), ByteSize(m.chunk_size() as u64));
            }
        }
        Command::Config(ConfigCommand::Default) => out!("{}", DEFAULT_TOML.trim_end()),
        Command::Config(ConfigCommand::Show { config }) => {
            let cfg = load_config(config.as_deref())?;
            out!("{}", cfg.to_toml().trim_end());
        }
        Command::Publish(args) => runtime()?.block_on(publish(args))?,
        Command::Withdraw { sign, content_id } => {
            runtime()?.block_on(sign_and_submit(&sign, Body::Withdraw { content: content_id }))?;
            out!("withdrawn {content_id}");
        }
        Command::Admit { sign, peer_id, name, isp, site, groups } => {
            let member = Member { peer: peer_id.to_string(), name, isp, site, groups };
            runtime()?.block_on(sign_and_submit(&sign, Body::Admit(member)))?;
            out!("admitted {peer_id}");
        }
        Command::Policy { sign, group, windows } => {
            let n = windows.len();
            runtime()?.block_on(sign_and_submit(
                &sign,
                Body::Policy(Policy { group: group.clone(), schedule: windows }),
            ))?;
            out!("policy for {} set ({n} window(s))", group.as_deref().unwrap_or("every node"));
        }
        Command::Revoke { sign, peer_id } => {
            runtime()?.block_on(sign_and_submit(&sign, Body::Revoke { peer: peer_id.to_string() }))?;
            out!("revoked {peer_id}");
        }
        Command::Status { api, json, watch } => runtime()?.block_on(status(&api, json, watch))?,
        Command::Films { api, json } => runtime()?.block_on(async {
            let films: Vec<FilmStatus> = get(&api, "/films").await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&films)?);
            } else {
                print_films(&films);
            }
            anyhow::Ok(())
        })?,
        Command::Peers { api, json } => runtime()?.block_on(async {
            let peers: Vec<PeerStatus> = get(&api, "/peers").await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                out!(
                    "{:<54} {:<12} {:<12} {:<12} {:<12} {:>5} {:>10} {:>10}",
                    "PEER",
                    "ROLE",
                    "NAME",
                    "ISP",
                    "LINK",
                    "LOAD",
                    "UP",
                    "DOWN"
                );
                for p in peers {
                    let o = |s: Option<String>| s.unwrap_or_else(|| "-".into());
                    out!(
                        "{:<54} {:<12} {:<12} {:<12} {:<12} {:>4.0}% {:>10} {:>10}",
                        p.peer_id,
                        o(p.role),
                        o(p.name),
                        o(p.isp),
                        o(p.link),
                        p.load * 100.0,
                        ByteSize(p.bytes_up).to_string(),
                        ByteSize(p.bytes_down).to_string()
                    );
                }
            }
            anyhow::Ok(())
        })?,
        Command::Fleet { api, json } => runtime()?.block_on(async {
            let fleet: Vec<cinemesh_overlay::net::fleet::FilmFleet> = get(&api, "/fleet").await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&fleet)?);
                return anyhow::Ok(());
            }
            for f in fleet {
                out!(
                    "{} {:<28} complete {}  behind {}  will miss deadline {}  refused {}",
                    &f.content_id[..12.min(f.content_id.len())],
                    f.title.chars().take(28).collect::<String>(),
                    f.complete,
                    f.behind,
                    f.will_miss_deadline,
                    f.refused
                );
                let mut reach = std::collections::BTreeMap::<&str, usize>::new();
                for n in &f.nodes {
                    *reach.entry(n.reachability.as_deref().unwrap_or("unknown")).or_default() += 1;
                }
                let reach: Vec<String> = reach.iter().map(|(r, n)| format!("{r} {n}")).collect();
                out!("    reachability: {}", reach.join(", "));
                for n in f.nodes.iter().filter(|n| n.state != "complete") {
                    let eta = n.eta_secs.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "-".into());
                    out!(
                        "    {:<20} {:<12} {:<12} {:>5.1}%  {:>10}/s  eta {:>7}  {}",
                        n.name.clone().unwrap_or_else(|| n.peer_id.chars().take(20).collect()),
                        n.isp.clone().unwrap_or_else(|| "-".into()),
                        n.reachability.clone().unwrap_or_else(|| "-".into()),
                        n.have as f64 * 100.0 / n.total.max(1) as f64,
                        ByteSize(n.rate as u64).to_string(),
                        eta,
                        n.state
                    );
                }
            }
            anyhow::Ok(())
        })?,
        Command::Verify { api, content_id } => runtime()?.block_on(async {
            let body = serde_json::json!({ "content_id": content_id.map(|c| c.to_hex()) });
            let out: serde_json::Value = post(&api, "/verify", &body).await?;
            out!("{}", serde_json::to_string_pretty(&out)?);
            anyhow::Ok(())
        })?,
        Command::Demo(args) => {
            init_logging_quiet();
            return runtime()?.block_on(crate::demo::run(args));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Loads the file if given (else defaults) and validates it.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.validate().with_context(|| match path {
        Some(p) => format!("config file {}", p.display()),
        None => "default configuration".to_owned(),
    })?;
    Ok(cfg)
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .default_headers(crate::auth::client_headers()?)
        .build()
        .context("HTTP client")
}

fn no_daemon(api: &ApiArgs, e: reqwest::Error) -> anyhow::Error {
    if e.is_connect() {
        anyhow::anyhow!(
            "no cinemesh daemon answers at http://{} (start one with `cinemesh run`, or point --api at it)",
            api.api
        )
    } else {
        anyhow::anyhow!("request to the daemon at http://{} failed: {e}", api.api)
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text);
        bail!("the daemon refused: {msg} ({status})");
    }
    serde_json::from_str(&text).with_context(|| "unexpected answer from the daemon")
}

/// GET a JSON document from the daemon.
pub async fn get<T: DeserializeOwned>(api: &ApiArgs, path: &str) -> anyhow::Result<T> {
    let resp =
        http()?.get(format!("http://{}{path}", api.api)).send().await.map_err(|e| no_daemon(api, e))?;
    decode(resp).await
}

/// The daemon's API token: from `--token-file`, else from the file the daemon names in `GET /status`.
async fn api_token(api: &ApiArgs) -> anyhow::Result<crate::api_auth::Token> {
    let path = match &api.token_file {
        Some(p) => p.clone(),
        None => {
            let status: serde_json::Value = get(api, "/status").await?;
            let named = status.get("api_token_file").and_then(|p| p.as_str());
            PathBuf::from(named.context("the daemon does not name its API token file; pass --token-file")?)
        }
    };
    crate::api_auth::Token::read(&path).with_context(|| {
        format!(
            "this command changes the node and needs its API token: run it as the daemon's user (or root), or \
            pass --token-file {}",
            path.display()
        )
    })
}

/// POST JSON to the daemon, with its API token.
pub async fn post<T: DeserializeOwned>(
    api: &ApiArgs,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<T> {
    let token = api_token(api).await?;
    let resp = http()?
        .post(format!("http://{}{path}", api.api))
        .header(reqwest::header::AUTHORIZATION, token.bearer())
        .json(body)
        .send()
        .await
        .map_err(|e| no_daemon(api, e))?;
    decode(resp).await
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs `body` with the next seq of the key (asked of the daemon). Refuses when the daemon has seen a
/// signed entry of this key beyond its head: the mesh is ahead (this node's `meta/` was restored from a
/// backup, or another host signs with the key), and `head + 1` would equivocate.
async fn sign_next(sign: &SignArgs, body: Body) -> anyhow::Result<SignedEntry> {
    let key = Keypair::read(&sign.key)?;
    let status: Status = get(&sign.api, "/status").await?;
    let public = key.public().to_string();
    let (head, seen, previous) = status
        .catalogue_heads
        .iter()
        .find(|h| h.key == public)
        .map(|h| (h.seq, h.seen, h.issued_at))
        .unwrap_or((0, 0, 0));
    if seen > head {
        bail!(
            "CONFLICT: the mesh already holds seq {seen} of key {}, but the daemon at {} has applied only up \
            to seq {head}; signing seq {} now would equivocate (two different entries at one seq: the mesh \
            keeps the first and ignores this one). Nothing was signed. Either this node's meta/ was restored \
            from a backup or another host signs with this key: wait until `cinemesh status` shows this node \
            at seq {seen} (anti-entropy catches up every gossip.anti_entropy_interval), then run the command \
            again",
            key.public().short(),
            sign.api.api,
            head + 1
        );
    }
    if status.peers == 0 {
        eprintln!(
            "cinemesh: warning: the daemon at {} is connected to no peer, so it cannot know whether the mesh \
            is ahead of its catalogue head {head}; signing seq {}",
            sign.api.api,
            head + 1
        );
    }
    // Never before the previous entry: a clock set back (or a previous signer's clock ahead, within the
    // skew the mesh accepts) must not wedge the key with "time went backwards".
    let entry = Entry { key: key.public(), seq: head + 1, issued_at: unix_now().max(previous), body };
    Ok(entry.sign(&key)?)
}

async fn sign_and_submit(sign: &SignArgs, body: Body) -> anyhow::Result<()> {
    let entry = sign_next(sign, body).await?;
    let _: serde_json::Value =
        post(&sign.api, "/catalogue", &serde_json::json!({ "entry": hex::encode(entry.encode()) })).await?;
    Ok(())
}

/// Parses `--targets` values.
pub fn parse_targets(values: &[String]) -> anyhow::Result<Targets> {
    let mut groups = Vec::new();
    let mut nodes = Vec::new();
    for v in values {
        if v == "all" {
            continue;
        } else if let Some(g) = v.strip_prefix("group:") {
            groups.push(g.to_owned());
        } else if let Some(n) = v.strip_prefix("node:") {
            n.parse::<libp2p::PeerId>().with_context(|| format!("--targets {v}: not a peer id"))?;
            nodes.push(n.to_owned());
        } else {
            bail!("--targets {v:?}: expected all, group:NAME or node:PEER_ID");
        }
    }
    match (groups.is_empty(), nodes.is_empty()) {
        (true, true) => Ok(Targets::All),
        (false, true) => Ok(Targets::Groups(groups)),
        (true, false) => Ok(Targets::Nodes(nodes)),
        _ => bail!("--targets: use either groups or nodes, not both"),
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_days(text: &str) -> Result<Vec<u8>, String> {
    let day = |d: &str| {
        DAYS.iter().position(|x| *x == d).map(|i| i as u8).ok_or_else(|| format!("unknown day {d:?}"))
    };
    let mut days = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            _ if part == "all" => days.extend(0..7),
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!("day range {part:?} runs backwards"));
                }
                days.extend(a..=b);
            }
            None => days.push(day(part)?),
        }
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

fn parse_minute(text: &str) -> Result<u16, String> {
    let (h, m) = text.split_once(':').ok_or_else(|| format!("{text:?}: expected HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| format!("{text:?}: bad hour"))?,
        m.parse().map_err(|_| format!("{text:?}: bad minute"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{text:?}: not a time of day"));
    }
    Ok(h * 60 + m)
}

/// Parses `DAYS HH:MM-HH:MM [up=RATE] [down=RATE]` into a window.
pub fn parse_window(text: &str) -> Result<RateWindow, String> {
    let mut parts = text.split_whitespace();
    let days = parse_days(parts.next().ok_or("empty window")?)?;
    let span = parts.next().ok_or("missing HH:MM-HH:MM")?;
    let (start, end) = span.split_once('-').ok_or_else(|| format!("{span:?}: expected HH:MM-HH:MM"))?;
    let (start_minute, end_minute) = (parse_minute(start)?, parse_minute(end)?);
    if start_minute >= end_minute {
        return Err(format!("{span:?}: the end must come after the start (split windows across midnight)"));
    }
    let mut w = RateWindow { days, start_minute, end_minute, upload: None, download: None };
    for p in parts {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("{p:?}: expected up=RATE or down=RATE"))?;
        let rate = v.parse::<cinemesh_overlay::config::Rate>().map_err(|e| e.to_string())?.0 as u64;
        match k {
            "up" => w.upload = Some(rate),
            "down" => w.download = Some(rate),
            _ => return Err(format!("{k:?}: expected up or down")),
        }
    }
    Ok(w)
}

/// Parses an RFC 3339 deadline into unix seconds.
pub fn parse_deadline(text: &str) -> anyhow::Result<u64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--deadline {text:?}: expected RFC 3339, e.g. 2026-12-01T18:00:00Z"))?;
    u64::try_from(t.unix_timestamp()).context("--deadline before 1970")
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let path = args.path.canonicalize().with_context(|| format!("cannot read {}", args.path.display()))?;
    let targets = parse_targets(&args.targets)?;
    let deadline = args.deadline.as_deref().map(parse_deadline).transpose()?;
    eprintln!("hashing {} ...", path.display());
    let manifest = tokio::task::spawn_blocking({
        let (path, chunk) = (path.clone(), args.chunk_size);
        move || Manifest::scan(&path, chunk)
    })
    .await??;
    let base = content::base_dir(&path)?;
    let title = args.title.unwrap_or_else(|| {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "untitled".into())
    });
    let id = manifest.id();
    let body = Body::Publish(Publish {
        content: id,
        title,
        size: manifest.total_size(),
        chunk_size: manifest.chunk_size(),
        chunks: manifest.chunk_count(),
        targets,
        deadline,
    });
    let entry = sign_next(&args.sign, body).await?;
    let req = serde_json::json!({
        "path": base, "manifest": hex::encode(manifest.encode()), "entry": hex::encode(entry.encode()),
    });
    let _: serde_json::Value = post(&args.sign.api, "/publish", &req).await?;
    out!("{id}");
    Ok(())
}

fn print_films(films: &[FilmStatus]) {
    out!("{:<14} {:<28} {:>10} {:>7}  STATE", "CONTENT", "TITLE", "SIZE", "HAVE");
    for f in films {
        let pct = if f.size == 0 { 100.0 } else { f.have_bytes as f64 * 100.0 / f.size as f64 };
        out!(
            "{:<14} {:<28} {:>10} {:>6.1}%  {}",
            &f.content_id[..12.min(f.content_id.len())],
            f.title.chars().take(28).collect::<String>(),
            ByteSize(f.size).to_string(),
            pct,
            f.state
        );
    }
}

async fn status(api: &ApiArgs, json: bool, watch: bool) -> anyhow::Result<()> {
    let raw: serde_json::Value = get(api, "/status").await?;
    let status: Status = serde_json::from_value(raw.clone()).context("unexpected /status from the daemon")?;
    let films: Vec<FilmStatus> = get(api, "/films").await?;
    if json {
        let mut v = raw;
        v["films"] = serde_json::to_value(&films)?;
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    out!("peer id     {}", status.peer_id);
    out!("role        {}", status.role);
    out!("isp / site  {} / {}", status.isp.as_deref().unwrap_or("-"), status.site.as_deref().unwrap_or("-"));
    out!("peers       {}", status.peers);
    out!("reachable   {}", if status.reachability.is_empty() { "unknown" } else { &status.reachability });
    for a in &status.external_addresses {
        out!("external    {a}");
    }
    out!("disk free   {}", ByteSize(status.disk_free));
    for a in &status.listen {
        out!("listen      {a}");
    }
    for h in &status.catalogue_heads {
        out!("catalogue   {} at seq {}", h.key, h.seq);
    }
    for h in raw["hooks"].as_array().into_iter().flatten() {
        out!(
            "hook        {} {} after {} attempt(s), status {}: {}",
            h["content_id"].as_str().map(|c| &c[..12.min(c.len())]).unwrap_or("?"),
            h["state"].as_str().unwrap_or("?"),
            h["attempts"],
            h["status"].as_str().unwrap_or("-"),
            h["output"].as_str().unwrap_or("").trim()
        );
    }
    out!();
    if !watch {
        print_films(&films);
        return Ok(());
    }
    crate::watch::run(api, films).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_log_filter_is_valid() {
        // `EnvFilter::new` would skip a malformed directive with only a note on stderr.
        for directive in DEFAULT_LOG_FILTER.split(',') {
            assert!(tracing_subscriber::EnvFilter::try_new(directive).is_ok(), "{directive}");
        }
        assert!(tracing_subscriber::EnvFilter::try_new(DEFAULT_LOG_FILTER).is_ok());
    }

    #[test]
    fn windows_parse() {
        let w = parse_window("all 18:00-23:30 up=1MB/s").unwrap();
        assert_eq!(
            (w.days.len(), w.start_minute, w.end_minute, w.upload, w.download),
            (7, 1080, 1410, Some(1_000_000), None)
        );
        let w = parse_window("mon-fri,sun 00:00-24:00 down=8Mbit/s").unwrap();
        assert_eq!(w.days, vec![0, 1, 2, 3, 4, 6]);
        assert_eq!(w.download, Some(1_000_000));
        assert!(parse_window("fri-mon 10:00-11:00").unwrap_err().contains("backwards"));
        assert!(parse_window("all 23:00-01:00").unwrap_err().contains("after the start"));
        assert!(parse_window("all 10:00-11:00 sideways=1").is_err());
        assert!(parse_window("funday 10:00-11:00").unwrap_err().contains("unknown day"));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_targets(&["all".into()]).unwrap(), Targets::All);
        assert_eq!(parse_targets(&["group:paris".into()]).unwrap(), Targets::Groups(vec!["paris".into()]));
        assert!(parse_targets(&["node:nonsense".into()]).is_err());
        let peer = libp2p::PeerId::random().to_string();
        assert!(parse_targets(&["group:a".into(), format!("node:{peer}")]).is_err());
        assert!(parse_deadline("2026-12-01T18:00:00Z").is_ok());
        assert!(parse_deadline("tomorrow").is_err());
    }
}
