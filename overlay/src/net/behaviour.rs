//! The composed libp2p behaviour and how the swarm is built.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, ping, relay, request_response, tcp,
    upnp, yamux, StreamProtocol, Swarm,
};
use prometheus_client::registry::Registry;

use super::protocol::{self, Codec};
use super::provider_store::ProviderStore;
use super::{admission, ip_limit};
use super::{Config, NetError};

/// Our Kademlia protocol name: never the IPFS one, so cinemesh nodes never join a public DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cinemesh/kad/1.0.0");
/// identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/cinemesh/id/1.0.0";
/// The gossipsub topic carrying signed catalogue entries.
pub const CATALOGUE_TOPIC: &str = "cinemesh/catalogue/1";

/// Everything the swarm speaks.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    /// Connection limits (in all and per peer).
    pub limits: connection_limits::Behaviour,
    /// Inbound connections per remote IP.
    pub ip_limit: ip_limit::Behaviour,
    /// Revoked and not admitted peers denied at establishment, before the behaviours below see them.
    pub admission: admission::Behaviour,
    /// identify: learn peers' listen addresses (fed to Kademlia).
    pub identify: identify::Behaviour,
    /// ping: liveness and RTT.
    pub ping: ping::Behaviour,
    /// Kademlia: provider records keyed by content id.
    pub kad: kad::Behaviour<ProviderStore>,
    /// gossipsub: the catalogue topic, with application validation.
    pub gossipsub: gossipsub::Behaviour,
    /// mDNS on the LAN (may be off).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// The chunk-transfer protocol.
    pub xfer: request_response::Behaviour<Codec>,
    /// Circuit relay v2 client: reservations on relays, connections through them (`/p2p-circuit`);
    /// a reservation answered after the node gave it back is ignored ([`super::nat::reservation`]).
    pub relay_client: super::nat::reservation::RelayClient,
    /// Circuit relay v2 server (`network.nat.relay_server`; superseeders and the distributor by default).
    /// It hears only of direct external addresses ([`super::nat::probe`]): a node relays once it is
    /// itself reachable directly.
    pub relay: Toggle<super::nat::probe::DirectAddrs<relay::Behaviour>>,
    /// Hole punching over relayed connections (DCUtR).
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// AutoNAT v2 client: asks peers to dial our candidate addresses back; confirms the ones that work.
    /// Relayed candidates are kept from it ([`super::nat::probe`]).
    pub autonat_client: Toggle<super::nat::probe::DirectAddrs<autonat::v2::client::Behaviour>>,
    /// AutoNAT v2 server: dials others back from a fresh port.
    pub autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// UPnP IGD port mapping on the router.
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

/// The gossipsub configuration from the `[gossip]` section.
pub fn gossipsub_config(cfg: &crate::config::GossipConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        .mesh_n(cfg.mesh_n)
        .mesh_n_low(cfg.mesh_n_low)
        .mesh_n_high(cfg.mesh_n_high)
        .mesh_outbound_min(cfg.mesh_n_low.min(2).min(cfg.mesh_n / 2))
        .gossip_lazy(cfg.gossip_lazy)
        .heartbeat_interval(cfg.heartbeat)
        .max_transmit_size(cfg.max_transmit_size.0 as usize)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| NetError::Setup(format!("gossip configuration: {e}")))
}

fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    cfg: &Config,
    registry: &mut Registry,
    codec: Codec,
) -> Result<Behaviour, NetError> {
    let peer_id = key.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
        .with_max_pending_incoming(Some(cfg.max_connections.min(128)))
        .with_max_pending_outgoing(Some(cfg.max_connections.min(128)));

    let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
    kad_cfg.set_query_timeout(Duration::from_secs(30));
    let store = ProviderStore::new(peer_id);
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
    kad.set_mode(Some(kad::Mode::Server));

    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config(&cfg.gossip)?,
    )
    .map_err(|e| NetError::Setup(format!("gossipsub: {e}")))?
    .with_metrics(registry.sub_registry_with_prefix("libp2p_gossipsub"), Default::default());

    let mdns = if cfg.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| NetError::Setup(format!("mDNS: {e}")))?,
        )
    } else {
        None
    };

    // A chunk request's stream sends the request with the protocol's name instead of waiting a round trip
    // for the peer's answer (multistream-select, patched: overlay/vendor/multistream-select): every
    // request opens a stream, and a far peer's took two round trips (docs/benchmarks.md, "A chunk
    // request in one round trip"). libp2p's own protocols negotiate as before.
    multistream_select::lazy_protocol(protocol::PROTOCOL.as_ref());
    let xfer = request_response::Behaviour::with_codec(
        codec,
        [(protocol::PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(cfg.transfer.request_timeout)
            .with_max_concurrent_streams(1024),
    );

    let nat = &cfg.nat;
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        ip_limit: ip_limit::Behaviour::new(cfg.max_connections_per_ip),
        admission: admission::Behaviour::default(),
        // Listen-address changes (a relay's `/p2p-circuit` address, a mapping) are pushed to peers at once.
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("cinemesh/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        ),
        // Each ping's round trip is an engine input; the simulator pings at the same interval.
        ping: ping::Behaviour::new(ping::Config::new().with_interval(crate::core::engine::PING_INTERVAL)),
        kad,
        gossipsub,
        mdns: mdns.into(),
        xfer,
        relay_client: super::nat::reservation::RelayClient::new(relay_client),
        relay: nat
            .relay_server_on(cfg.role)
            .then(|| super::nat::probe::DirectAddrs(relay::Behaviour::new(peer_id, nat.relay_limits())))
            .into(),
        dcutr: nat.hole_punching.then(|| dcutr::Behaviour::new(peer_id)).into(),
        autonat_client: nat
            .autonat
            .then(|| super::nat::probe::DirectAddrs(super::nat::autonat::client()))
            .into(),
        autonat_server: nat.autonat.then(autonat::v2::server::Behaviour::default).into(),
        upnp: nat.upnp.then(upnp::tokio::Behaviour::default).into(),
    })
}

/// Builds the swarm: TCP + noise + yamux (optionally behind a pre-shared key), QUIC on an open mesh, DNS,
/// the relay client transport, bandwidth metrics. `codec` counts malformed chunk-protocol messages into
/// the node's metrics. Noise is `cinemesh-noise` on TCP, on the pre-shared-key mesh and in relayed
/// circuits: AES-256-GCM offered first where the CPU has AES instructions, libp2p's `/noise` for a peer
/// without it (overlay/vendor/cinemesh-noise/README.md).
pub fn build_swarm(
    cfg: &Config,
    registry: &mut Registry,
    codec: Codec,
) -> Result<Swarm<Behaviour>, NetError> {
    let tcp_cfg = tcp::Config::default().nodelay(true);
    let idle = cfg.idle_timeout;
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    // Every swarm's relay client transport, metrics, behaviour and idle timeout, after its transports.
    macro_rules! finish {
        ($builder:expr) => {
            $builder
                .with_relay_client(cinemesh_noise::Config::new, yamux::Config::default)
                .map_err(|e| setup(&e))?
                .with_bandwidth_metrics(registry)
                .with_behaviour(|key, relay| {
                    behaviour(key, relay, cfg, registry, codec.clone()).map_err(Box::from)
                })
                .map_err(|e| setup(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build()
        };
    }
    let swarm = match cfg.psk {
        None => finish!(libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
            .with_tokio()
            .with_tcp(tcp_cfg, cinemesh_noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?),
        Some(psk) => {
            use libp2p::core::upgrade::Version;
            use libp2p::Transport;
            finish!(libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
                .with_tokio()
                .with_other_transport(|key| {
                    let noise = cinemesh_noise::Config::new(key)?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                        tcp::tokio::Transport::new(tcp_cfg)
                            .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
                            .upgrade(Version::V1)
                            .authenticate(noise)
                            .multiplex(yamux::Config::default())
                            .timeout(Duration::from_secs(20)),
                    )
                })
                .map_err(|e| setup(&e))?)
        }
    };
    Ok(swarm)
}

#[cfg(test)]
pub(crate) mod tests {
    use futures::StreamExt;
    use libp2p::noise;
    use libp2p::pnet::PreSharedKey;
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    use libp2p::swarm::SwarmEvent;
    use libp2p::Multiaddr;

    use cinemesh_noise::Ciphers;

    use super::*;

    fn swarm(dir: &std::path::Path) -> Swarm<Behaviour> {
        let cfg = Config::loopback(Keypair::generate_ed25519(), dir.to_path_buf());
        build_swarm(&cfg, &mut Registry::default(), Codec::default()).expect("swarm")
    }

    /// Has `s` listen on a loopback TCP port; its address.
    pub(crate) async fn listening<B: libp2p::swarm::NetworkBehaviour>(s: &mut Swarm<B>) -> Multiaddr {
        s.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")).expect("listen");
        let first_address = async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
                    return address;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), first_address).await.expect("listening within 10 s")
    }

    /// A swarm with only the noise variants `ciphers` of `cinemesh-noise` (`None`: libp2p-noise itself, as
    /// an older node has), behind the pre-shared key `psk` if given.
    fn one_noise(ciphers: Option<Ciphers>, psk: Option<PreSharedKey>) -> Swarm<ping::Behaviour> {
        use futures::future::Either;
        use libp2p::core::muxing::StreamMuxerBox;
        use libp2p::core::upgrade::Version;
        use libp2p::Transport;
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|key| {
                let tcp = tcp::tokio::Transport::new(tcp::Config::default()).and_then(
                    move |socket, _| async move {
                        match psk {
                            Some(psk) => libp2p::pnet::PnetConfig::new(psk)
                                .handshake(socket)
                                .await
                                .map(Either::Left)
                                .map_err(std::io::Error::other),
                            None => Ok(Either::Right(socket)),
                        }
                    },
                );
                let upgraded = tcp.upgrade(Version::V1);
                let transport = match ciphers {
                    Some(c) => upgraded
                        .authenticate(cinemesh_noise::Config::new(key)?.with_ciphers(c))
                        .multiplex(yamux::Config::default())
                        .map(|(peer, m), _| (peer, StreamMuxerBox::new(m)))
                        .boxed(),
                    None => upgraded
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default())
                        .map(|(peer, m), _| (peer, StreamMuxerBox::new(m)))
                        .boxed(),
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
            })
            .expect("transport")
            .with_behaviour(|_| ping::Behaviour::default())
            .expect("behaviour")
            .build()
    }

    /// `dialer` dials `addr`, where `listener` listens: whether the connection is established (within 10 s).
    async fn connects<A, B>(dialer: &mut Swarm<A>, listener: &mut Swarm<B>, addr: &Multiaddr) -> bool
    where
        A: libp2p::swarm::NetworkBehaviour,
        B: libp2p::swarm::NetworkBehaviour,
    {
        dialer.dial(addr.clone()).expect("dial");
        let outcome = async {
            loop {
                tokio::select! {
                    e = dialer.select_next_some() => match e {
                        SwarmEvent::ConnectionEstablished { .. } => return true,
                        SwarmEvent::OutgoingConnectionError { .. } => return false,
                        _ => {}
                    },
                    _ = listener.select_next_some() => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), outcome).await.expect("an outcome within 10 s")
    }

    /// Nodes offer noise with AES-256-GCM first (on a CPU with AES instructions) and libp2p's noise second:
    /// a peer with either connects, and two peers with no variant in common do not (the choice is
    /// negotiated, not assumed).
    #[tokio::test]
    async fn a_node_speaks_aes_gcm_noise_and_libp2p_noise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = swarm(dir.path());
        let addr = listening(&mut node).await;
        let (mut aes, mut plain) = (one_noise(Some(Ciphers::AesGcmOnly), None), one_noise(None, None));
        // Offered only where the CPU has the instructions for it.
        assert_eq!(
            connects(&mut aes, &mut node, &addr).await,
            cinemesh_noise::aes_instructions(),
            "a peer with AES-GCM noise only"
        );
        assert!(connects(&mut plain, &mut node, &addr).await, "a peer with libp2p's noise only");
        let mut node_b = swarm(dir.path());
        assert!(connects(&mut node_b, &mut node, &addr).await, "two nodes");
        let aes_addr = listening(&mut aes).await;
        assert!(!connects(&mut plain, &mut aes, &aes_addr).await, "no variant in common");
    }

    /// QUIC's TLS (libp2p-tls, patched: overlay/vendor/libp2p-tls) offers AES-128-GCM first where the CPU
    /// has AES instructions, and ChaCha20-Poly1305 first elsewhere as libp2p does; all three TLS 1.3 suites
    /// either way, so patched and older nodes agree on one.
    #[test]
    fn quic_tls_offers_aes_gcm_first_where_the_cpu_has_aes_instructions() {
        let key = Keypair::generate_ed25519();
        for suites in [
            libp2p_tls::make_client_config(&key, None)
                .expect("client config")
                .crypto_provider()
                .cipher_suites
                .clone(),
            libp2p_tls::make_server_config(&key)
                .expect("server config")
                .crypto_provider()
                .cipher_suites
                .clone(),
        ] {
            let names: Vec<String> = suites.iter().map(|s| format!("{:?}", s.suite())).collect();
            let first = if cinemesh_noise::aes_instructions() { "AES_128_GCM" } else { "CHACHA20_POLY1305" };
            assert!(names[0].contains(first), "{first} first: {names:?}");
            assert_eq!(names.len(), 3, "the three TLS 1.3 suites: {names:?}");
        }
    }

    /// QUIC's sockets (libp2p-quic, patched: overlay/vendor/libp2p-quic) ask for an 8 MiB receive buffer,
    /// granted up to `net.core.rmem_max` (Linux reports twice what it grants). Read back with `ss`
    /// (iproute2), as the operator would.
    #[tokio::test]
    async fn a_quic_socket_asks_for_a_receive_buffer_beyond_linux_s_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::loopback(Keypair::generate_ed25519(), dir.path().to_path_buf());
        let mut node = build_swarm(&cfg, &mut Registry::default(), Codec::default()).expect("swarm");
        node.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")).expect("listen");
        let address = async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = node.select_next_some().await {
                    return address;
                }
            }
        };
        let address =
            tokio::time::timeout(Duration::from_secs(10), address).await.expect("listening in 10 s");
        let port = address
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Udp(port) => Some(port),
                _ => None,
            })
            .expect("a UDP port");
        let out = std::process::Command::new("ss")
            .args(["-u", "-a", "-n", "-m", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let rb: usize = text
            .split("rb")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no receive buffer for port {port} in ss's output: {text}"));
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("rmem_max")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(rb, 2 * max.min(libp2p::quic::RECV_BUFFER), "ss: {text}");
    }

    /// yamux (patched: overlay/vendor/yamux) grants a stream this side opens its starting window with the
    /// stream's first read, beyond the 256 KiB every stream starts at by the protocol: the other side
    /// writes a whole 4 MiB answer before the asker reads a byte of it. The starting window is the one
    /// the connection's streams tuned themselves to (timing-dependent, so set here by
    /// `set_outbound_stream_window`). The published crate let it write 256 KiB, then waited a round trip
    /// per window update: a chunk request over 40 ms took several round trips (docs/benchmarks.md).
    #[tokio::test]
    async fn a_yamux_stream_we_open_is_granted_its_learned_window_at_once() {
        use futures::future::poll_fn;
        use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};
        use std::pin::Pin;
        use std::task::Poll;

        const ANSWER: usize = 4 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut asking = ::yamux::Config::default();
        asking.set_outbound_stream_window(ANSWER as u32);
        let mut asker = ::yamux::Connection::new(
            libp2p::tcp::tokio::TcpStream(dialed.expect("dial")),
            asking,
            ::yamux::Mode::Client,
        );
        let mut answerer = ::yamux::Connection::new(
            libp2p::tcp::tokio::TcpStream(accepted.expect("accept").0),
            ::yamux::Config::default(),
            ::yamux::Mode::Server,
        );
        let mut ask = poll_fn(|cx| asker.poll_new_outbound(cx)).await.expect("a stream");
        let asker_io = tokio::spawn(async move {
            while let Some(Ok(_)) = poll_fn(|cx| asker.poll_next_inbound(cx)).await {}
        });
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let answerer_io = tokio::spawn(async move {
            let mut answer_tx = Some(answer_tx);
            while let Some(Ok(stream)) = poll_fn(|cx| answerer.poll_next_inbound(cx)).await {
                if let Some(tx) = answer_tx.take() {
                    let _ = tx.send(stream);
                }
            }
        });
        ask.write_all(b"chunk").await.expect("request written");
        ask.flush().await.expect("request flushed");
        // One read, which finds nothing yet: it sends the window update.
        poll_fn(|cx| {
            let _ = Pin::new(&mut ask).poll_read(cx, &mut [0u8; 0]);
            Poll::Ready(())
        })
        .await;
        let mut answer = tokio::time::timeout(Duration::from_secs(10), answer_rx)
            .await
            .expect("the stream reached the answerer in 10 s")
            .expect("a stream");
        let mut request = [0u8; 5];
        answer.read_exact(&mut request).await.expect("request read");
        assert_eq!(&request, b"chunk");
        let bytes: Vec<u8> = (0..ANSWER).map(|i| (i % 251) as u8).collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            answer.write_all(&bytes).await.expect("answer written");
            answer.flush().await.expect("answer flushed");
        })
        .await
        .expect("the whole answer fits the window granted, before the asker reads any of it");
        answer.close().await.expect("closed");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), ask.read_to_end(&mut got))
            .await
            .expect("the answer read in 10 s")
            .expect("read");
        assert!(got == bytes, "the answer arrives whole and in order ({} bytes)", got.len());
        asker_io.abort();
        answerer_io.abort();
    }

    /// multistream-select (patched: overlay/vendor/multistream-select): a node's stream for the chunk
    /// protocol settles on it at once, so the request leaves with the protocol's name; a stream for
    /// libp2p's own protocols waits for the listener's answer first, as published. Here nobody answers.
    #[tokio::test]
    async fn the_chunk_protocol_is_negotiated_without_waiting_for_the_peer_and_others_as_before() {
        use futures::FutureExt;
        use multistream_select::{dialer_select_proto, Version};

        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::loopback(Keypair::generate_ed25519(), dir.path().to_path_buf());
        let _node = build_swarm(&cfg, &mut Registry::default(), Codec::default()).expect("swarm");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut silent = Vec::new();
        for protocol in [protocol::PROTOCOL.as_ref(), "/ipfs/id/1.0.0"] {
            let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            silent.push(accepted.expect("accept"));
            let io = libp2p::tcp::tokio::TcpStream(dialed.expect("dial"));
            let mut negotiation = dialer_select_proto(io, [protocol], Version::V1);
            let settled = (&mut negotiation).now_or_never();
            if protocol == protocol::PROTOCOL.as_ref() {
                assert!(matches!(settled, Some(Ok((p, _))) if p == protocol), "{protocol}: settled at once");
            } else {
                assert!(settled.is_none(), "{protocol}: waits for the listener's answer");
            }
        }
    }

    /// On a pre-shared-key mesh too: a node behind the key takes a peer with AES-GCM noise only (where the
    /// CPU has the instructions) and a peer with libp2p's noise only (an older node), and no peer without
    /// the key.
    #[tokio::test]
    async fn a_node_behind_a_pre_shared_key_speaks_aes_gcm_noise_and_libp2p_noise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = PreSharedKey::new([7; 32]);
        let mut cfg = Config::loopback(Keypair::generate_ed25519(), dir.path().to_path_buf());
        cfg.psk = Some(psk);
        let mut node = build_swarm(&cfg, &mut Registry::default(), Codec::default()).expect("swarm");
        let addr = listening(&mut node).await;
        let mut aes = one_noise(Some(Ciphers::AesGcmOnly), Some(psk));
        assert_eq!(
            connects(&mut aes, &mut node, &addr).await,
            cinemesh_noise::aes_instructions(),
            "a peer with the key and AES-GCM noise only"
        );
        let mut plain = one_noise(None, Some(psk));
        assert!(connects(&mut plain, &mut node, &addr).await, "a peer with the key and libp2p's noise only");
        let mut keyless = one_noise(Some(Ciphers::AesGcmFirst), None);
        assert!(!connects(&mut keyless, &mut node, &addr).await, "a peer without the key");
    }

    /// A dial-back denied by the per-peer connection limit marks a reachable address failed until it is
    /// tested again a minute later (`nat::autonat::RETRY`). With the default limits a dial-back each way
    /// (two nodes testing their addresses with each other at once, as these two do five seconds after they
    /// start) fits beside three connections between them (a relayed one and the direct ones replacing it,
    /// in the field): both addresses are confirmed. With four connections per peer (the
    /// default before) one of the two dial-backs was refused in 12 runs of 12.
    #[tokio::test]
    async fn autonat_dial_backs_both_ways_fit_beside_three_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = swarm(dir.path());
        let mut b = swarm(dir.path());
        let a_addr = listening(&mut a).await;
        let b_addr = listening(&mut b).await;
        let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
        a.dial(b_addr.clone()).expect("dial b");
        let again = |addr: &Multiaddr, peer| {
            DialOpts::peer_id(peer).addresses(vec![addr.clone()]).condition(PeerCondition::Always).build()
        };
        let (mut from_a, mut from_b) = (false, false);
        let (mut a_confirmed, mut b_confirmed) = (None, None);
        let mut most = 0;
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        while a_confirmed.is_none() || b_confirmed.is_none() {
            tokio::select! {
                e = a.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if peer_id == b_id => {
                        most = most.max(num_established.get());
                        if !from_a {
                            from_a = true;
                            a.dial(again(&b_addr, b_id)).expect("second dial to b");
                        }
                    }
                    SwarmEvent::ExternalAddrConfirmed { address } => a_confirmed = Some(address),
                    _ => {}
                },
                e = b.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == a_id && !from_b => {
                        from_b = true;
                        b.dial(again(&a_addr, a_id)).expect("dial back to a");
                    }
                    SwarmEvent::ExternalAddrConfirmed { address } => b_confirmed = Some(address),
                    _ => {}
                },
                _ = &mut deadline => panic!(
                    "AutoNAT confirmed {a_confirmed:?} of {a_addr} and {b_confirmed:?} of {b_addr} within 30 s; \
                     at most {most} connections between them"
                ),
            }
        }
        assert_eq!(a_confirmed, Some(a_addr), "a's confirmed address is the one it listens on");
        assert_eq!(b_confirmed, Some(b_addr), "b's confirmed address is the one it listens on");
        assert!(most >= 4, "a dial-back came beside three connections: at most {most} at once");
    }
}
