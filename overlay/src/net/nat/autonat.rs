//! The AutoNAT v2 client the node runs: it tests an address again instead of giving up on it.
//!
//! libp2p-autonat 0.16's client tests each candidate address once. A test whose request rode a
//! connection that closed before the server answered stayed "in test" for the rest of the run; so did
//! one whose request the handler dropped; and an address a server could not dial back once, for
//! whatever passing reason, was never tested again. In the NAT tests a public superseeder sent its
//! request over the relayed connection to a cinema, which the node closes as soon as the hole-punched
//! one is up: the cinema dialled the superseeder back, its answer had nowhere to go, and the superseeder
//! never learnt it was public (and so never relayed). The workspace patches the crate
//! (`overlay/vendor/libp2p-autonat`, README.md there; upstream libp2p/rust-libp2p#6203): a test lost
//! with its connection is asked again at once, one unanswered for [`TEST_TIMEOUT`] is asked again, one
//! that ends without an answer (the handler's 10 s timeout: a dial-back a NAT drops) is asked again at
//! once the first time in a row and then waits as a failed one does, a failed address is tested again
//! after [`RETRY`], doubled with each failure in a row up to
//! [`MAX_RETRY`], an address the swarm expires is tested again, a confirmed one is tested again
//! [`RECHECK`] after its confirmation (and expired if that fails), and at most [`MAX_TRACKED`]
//! candidates are remembered.

use std::time::Duration;

use libp2p::autonat::v2::client;

/// How long a test may go unanswered before its address is tested again: the client's handler gives
/// up on a request after 10 s, a server's dial-back takes at most its own 10 s.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after a failed test its address is tested again (doubled with each failure in a row).
pub const RETRY: Duration = Duration::from_secs(60);

/// The longest wait before a failed address is tested again: a cinema behind NAT costs a server one
/// dial an hour per address.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// How many candidate addresses the client remembers.
pub const MAX_TRACKED: usize = 64;

/// How long after its confirmation an address is tested again (a new public IP after a line's
/// reconnection, a router's lost port forward): if a server cannot dial it back then, it is no longer
/// published. One test per address every 30 min costs a server nothing to speak of.
pub const RECHECK: Duration = Duration::from_secs(30 * 60);

/// The client with the node's settings (probing every 5 s, as the crate does).
pub fn client() -> client::Behaviour {
    client::Behaviour::with_config(
        client::Config::default()
            .with_test_timeout(TEST_TIMEOUT)
            .with_retry_interval(RETRY, MAX_RETRY)
            .with_max_tracked(MAX_TRACKED)
            .with_recheck_interval(RECHECK),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::net::TcpListener;
    use std::task::{Context, Poll, Waker};

    use futures::StreamExt;
    use libp2p::autonat::v2::server;
    use libp2p::swarm::{
        dummy, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
    };
    use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm};

    use super::*;
    use crate::net::behaviour::tests::listening;

    /// Hands the swarm the candidate addresses a test gives it, as identify would.
    #[derive(Default)]
    struct Candidates {
        queue: VecDeque<Multiaddr>,
        waker: Option<Waker>,
    }

    impl Candidates {
        fn push(&mut self, addr: Multiaddr) {
            self.queue.push_back(addr);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    impl NetworkBehaviour for Candidates {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = Infallible;

        no_connection_handler!();

        fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

        fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
            match event {}
        }

        fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
            match self.queue.pop_front() {
                Some(addr) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)),
                None => {
                    self.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    struct Probe {
        identify: identify::Behaviour,
        client: client::Behaviour,
        server: server::Behaviour,
        candidates: Candidates,
    }

    fn probe(config: client::Config) -> Swarm<Probe> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .expect("tcp")
            .with_behaviour(|key| Probe {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/probe-test/1".into(),
                    key.public(),
                )),
                client: client::Behaviour::with_config(config),
                server: server::Behaviour::default(),
                candidates: Candidates::default(),
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// A client config probing every 200 ms whose failed tests are not retried within a test's run.
    fn probing() -> client::Config {
        client::Config::default()
            .with_probe_interval(Duration::from_millis(200))
            .with_retry_interval(Duration::from_secs(600), Duration::from_secs(600))
    }

    /// A client probing every 200 ms whose tests neither expire nor retry within a test's run.
    fn patient_client() -> Swarm<Probe> {
        probe(probing().with_test_timeout(Duration::from_secs(600)))
    }

    /// A loopback listener that accepts (when asked) and never speaks: a dial-back into it hangs.
    fn silent_listener() -> (TcpListener, Multiaddr) {
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        silent.set_nonblocking(true).expect("nonblocking");
        let port = silent.local_addr().expect("addr").port();
        (silent, format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("multiaddr"))
    }

    /// A loopback TCP address nothing listens on (refused), for a moment free to listen on.
    fn free_addr() -> Multiaddr {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("multiaddr")
    }

    /// An address a server could not dial back is tested again once the wait is over, and confirmed
    /// once it answers; an address the swarm expires is tested again. Upstream marks it failed for the
    /// run, and keeps an expired one as tested.
    #[tokio::test]
    async fn a_failed_address_is_tested_again_and_an_expired_one_too() {
        let mut server = probe(client::Config::default());
        let server_addr = listening(&mut server).await;
        let mut c = probe(
            client::Config::default()
                .with_probe_interval(Duration::from_millis(200))
                .with_retry_interval(Duration::from_millis(500), Duration::from_millis(500)),
        );
        let addr = free_addr();
        c.behaviour_mut().candidates.push(addr.clone());
        c.dial(server_addr).expect("dial the server");

        let (mut failed, mut confirmed) = (0, 0);
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        while confirmed < 2 {
            tokio::select! {
                e = c.select_next_some() => match e {
                    SwarmEvent::Behaviour(ProbeEvent::Client(client::Event { tested_addr, result: Err(_), .. }))
                        if tested_addr == addr =>
                    {
                        failed += 1;
                        if failed == 1 {
                            // Reachable from now on.
                            c.listen_on(addr.clone()).expect("listen on the tested address");
                        }
                    }
                    SwarmEvent::ExternalAddrConfirmed { address } if address == addr => {
                        assert!(failed >= 1, "the address was confirmed before it was ever refused");
                        confirmed += 1;
                        if confirmed == 1 {
                            c.remove_external_address(&addr);
                        }
                    }
                    _ => {}
                },
                _ = server.select_next_some() => {}
                _ = &mut deadline => panic!(
                    "{addr}: refused {failed} times, confirmed {confirmed} times in 30 s (want: refused, then \
                     confirmed, then confirmed again after it expired)"
                ),
            }
        }
    }

    /// A confirmed address is tested again after the recheck interval, and expired from the swarm when
    /// a server can no longer dial it back (here: the client stopped listening on it). Upstream keeps it
    /// confirmed, and published, for the rest of the run.
    #[tokio::test]
    async fn a_confirmed_address_that_fails_its_recheck_is_expired() {
        let mut server = probe(client::Config::default());
        let server_addr = listening(&mut server).await;
        let mut c = probe(probing().with_recheck_interval(Duration::from_secs(1)));
        let addr = free_addr();
        let listener = c.listen_on(addr.clone()).expect("listen on the tested address");
        c.behaviour_mut().candidates.push(addr.clone());
        c.dial(server_addr).expect("dial the server");

        let mut confirmed = false;
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                e = c.select_next_some() => match e {
                    SwarmEvent::ExternalAddrConfirmed { address } if address == addr => {
                        assert!(!confirmed, "{addr} confirmed twice: its recheck should have failed");
                        confirmed = true;
                        // Unreachable from now on.
                        assert!(c.remove_listener(listener), "the listener was open");
                    }
                    SwarmEvent::ExternalAddrExpired { address } if address == addr => {
                        assert!(confirmed, "{addr} expired before it was confirmed");
                        assert!(
                            !c.external_addresses().any(|a| *a == addr),
                            "{addr} still published after it expired"
                        );
                        break;
                    }
                    _ => {}
                },
                _ = server.select_next_some() => {}
                _ = &mut deadline => panic!("{addr}: confirmed {confirmed}, and not expired in 30 s"),
            }
        }
    }

    /// A test that ends without an answer (the client's handler gives up after 10 s: here the server's
    /// dial-back hangs on a listener that never speaks, as on a NAT that drops it) is asked again at once
    /// the first time, then waits as a failed test does. Upstream asks again at every probe, so the
    /// listener would be dialled a third time about 10 s after the second.
    #[tokio::test]
    async fn an_unanswered_test_is_asked_again_once_then_waits() {
        let mut server = probe(client::Config::default());
        let server_addr = listening(&mut server).await;
        let mut c = patient_client();
        let (silent, addr) = silent_listener();
        c.behaviour_mut().candidates.push(addr.clone());
        c.dial(server_addr).expect("dial the server");

        // The dial-backs into the silent listener, held open until the end.
        let mut held = Vec::new();
        let mut dialled = Vec::new();
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // The second test's handler gives up 10 s after it asked; a third test would follow within a
        // probe. Watch until 14 s after the second dial-back (at most 40 s in all).
        let deadline = tokio::time::sleep(Duration::from_secs(40));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                e = c.select_next_some() => {
                    if let SwarmEvent::ExternalAddrConfirmed { address } = e {
                        panic!("{address} confirmed: nothing could have answered its dial-back");
                    }
                }
                _ = server.select_next_some() => {}
                _ = tick.tick() => {
                    while let Ok((stream, _)) = silent.accept() {
                        held.push(stream);
                        dialled.push(start.elapsed());
                    }
                    if dialled.len() > 2 {
                        break;
                    }
                    if dialled.get(1).is_some_and(|&t| start.elapsed() > t + Duration::from_secs(14)) {
                        break;
                    }
                }
                _ = &mut deadline => panic!("{addr}: dialled back at {dialled:?} in 40 s (want twice)"),
            }
        }
        assert_eq!(
            dialled.len(),
            2,
            "{addr} dialled back at {dialled:?}: asked again at once once, then it should wait 600 s"
        );
    }

    /// A test whose request rode a connection that closed before the answer is asked again on another
    /// connection. The server's dial-back is held up by a listener that never speaks while the
    /// connection closes; upstream leaves the address in test for the rest of the run.
    #[tokio::test]
    async fn a_test_lost_with_its_connection_is_asked_again() {
        let mut server = probe(client::Config::default());
        let server_addr = listening(&mut server).await;
        let server_id = *server.local_peer_id();
        // Long enough that only the closed connection can explain a second test.
        let mut c = patient_client();
        let (silent, addr) = silent_listener();
        let mut silent = Some(silent);
        let mut held = Vec::new();
        c.behaviour_mut().candidates.push(addr.clone());
        c.dial(server_addr.clone()).expect("dial the server");

        let mut closed = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                e = c.select_next_some() => match e {
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } if peer_id == server_id => {
                        // The test's request went down with it; the address now answers.
                        closed = true;
                        held.clear();
                        silent = None;
                        c.listen_on(addr.clone()).expect("listen on the tested address");
                        c.dial(server_addr.clone()).expect("dial the server again");
                    }
                    SwarmEvent::ExternalAddrConfirmed { address } if address == addr => break,
                    _ => {}
                },
                _ = server.select_next_some() => {}
                _ = tick.tick() => {
                    // The server is dialling back into the silent listener: the test is under way.
                    if let Some(l) = &silent {
                        if let Ok((stream, _)) = l.accept() {
                            held.push(stream);
                            c.disconnect_peer_id(server_id).expect("connected to the server");
                        }
                    }
                }
                _ = &mut deadline => panic!(
                    "{addr} not confirmed in 30 s; the connection carrying its first test closed: {closed}"
                ),
            }
        }
        assert!(closed, "confirmed before the connection carrying the first test closed");
    }

    /// Beyond `max_tracked` candidates the client forgets the least reported one: with room for two, an
    /// address reported once after two reported more often is never tested. Upstream remembers (and
    /// tests) every candidate ever reported.
    #[tokio::test]
    async fn beyond_max_tracked_the_least_reported_candidate_is_forgotten() {
        let mut server = probe(client::Config::default());
        let server_addr = listening(&mut server).await;
        let mut c = probe(probing().with_max_tracked(2));
        let (often, twice, once) = (free_addr(), free_addr(), free_addr());
        for addr in [&often, &often, &often, &twice, &twice, &once] {
            c.behaviour_mut().candidates.push(addr.clone());
        }
        c.dial(server_addr).expect("dial the server");

        let mut tested: Vec<Multiaddr> = Vec::new();
        let mut both_at = None;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                e = c.select_next_some() => {
                    if let SwarmEvent::Behaviour(ProbeEvent::Client(client::Event { tested_addr, .. })) = e {
                        assert!(tested_addr != once, "{once} was tested: it should have been forgotten");
                        tested.push(tested_addr);
                    }
                }
                _ = server.select_next_some() => {}
                _ = tick.tick() => {
                    if both_at.is_none() && tested.contains(&often) && tested.contains(&twice) {
                        both_at = Some(tokio::time::Instant::now());
                    }
                    // Ten probes after the two were tested, the third would have been too.
                    if both_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
                        break;
                    }
                }
                _ = &mut deadline => panic!("tested {tested:?} in 30 s (want {often} and {twice})"),
            }
        }
    }
}
