use std::{
    cmp::Reverse,
    collections::{HashMap, VecDeque},
    fmt::{Debug, Display, Formatter},
    task::{Context, Poll},
    time::Duration,
};

use either::Either;
use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm,
    ExternalAddrExpired, NetworkBehaviour, NewExternalAddrCandidate, NotifyHandler, ToSwarm,
    behaviour::ConnectionEstablished,
};
use rand::prelude::*;
use web_time::Instant;

use super::handler::{
    dial_back::{self, IncomingNonce},
    dial_request,
};
use crate::v2::{Nonce, protocol::DialRequest};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How many candidates we will test at most.
    pub(crate) max_candidates: usize,

    /// The interval at which we will attempt to confirm candidates as external addresses.
    pub(crate) probe_interval: Duration,

    /// Patched: how long a test may go unanswered (no dial-back and answer) before its address is
    /// tested again. A request dropped by a full handler, or lost with a connection that closed
    /// unnoticed, would otherwise leave the address untested for the rest of the run.
    pub(crate) test_timeout: Duration,

    /// Patched: how long after a failed test its address is tested again; doubled with each failure
    /// in a row, up to `max_retry_interval`. Upstream never tests a failed address again.
    pub(crate) retry_interval: Duration,

    /// Patched: the longest wait before a failed address is tested again.
    pub(crate) max_retry_interval: Duration,

    /// Patched: how many candidates are remembered; beyond it the least reported untested one is
    /// forgotten. Upstream remembers every candidate ever reported.
    pub(crate) max_tracked: usize,

    /// Patched: how long after it was confirmed an address is tested again; if a server then cannot
    /// dial it back, it is expired from the swarm. Upstream keeps a confirmed address for the run.
    pub(crate) recheck_interval: Duration,
}

impl Config {
    pub fn with_max_candidates(self, max_candidates: usize) -> Self {
        Self {
            max_candidates,
            ..self
        }
    }

    pub fn with_probe_interval(self, probe_interval: Duration) -> Self {
        Self {
            probe_interval,
            ..self
        }
    }

    /// Patched: how long a test may go unanswered before its address is tested again.
    pub fn with_test_timeout(self, test_timeout: Duration) -> Self {
        Self {
            test_timeout,
            ..self
        }
    }

    /// Patched: the wait before a failed address is tested again (doubled with each failure in a
    /// row) and the longest such wait.
    pub fn with_retry_interval(self, retry_interval: Duration, max_retry_interval: Duration) -> Self {
        Self {
            retry_interval,
            max_retry_interval: max_retry_interval.max(retry_interval),
            ..self
        }
    }

    /// Patched: how many candidates are remembered at most (at least one).
    pub fn with_max_tracked(self, max_tracked: usize) -> Self {
        Self {
            max_tracked: max_tracked.max(1),
            ..self
        }
    }

    /// Patched: how long after it was confirmed an address is tested again.
    pub fn with_recheck_interval(self, recheck_interval: Duration) -> Self {
        Self {
            recheck_interval,
            ..self
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_candidates: 10,
            probe_interval: Duration::from_secs(5),
            test_timeout: Duration::from_secs(30),
            retry_interval: Duration::from_secs(60),
            max_retry_interval: Duration::from_secs(3600),
            max_tracked: 64,
            recheck_interval: Duration::from_secs(3600),
        }
    }
}

pub struct Behaviour<R = rand::rngs::StdRng>
where
    R: rand::Rng + 'static,
{
    rng: R,
    config: Config,
    pending_events: VecDeque<
        ToSwarm<
            <Self as NetworkBehaviour>::ToSwarm,
            <<Self as NetworkBehaviour>::ConnectionHandler as ConnectionHandler>::FromBehaviour,
        >,
    >,
    address_candidates: HashMap<Multiaddr, AddressInfo>,
    next_tick: Delay,
    peer_info: HashMap<ConnectionId, ConnectionInfo>,
}

impl<R> NetworkBehaviour for Behaviour<R>
where
    R: rand::Rng + 'static,
{
    type ConnectionHandler = Either<dial_request::Handler, dial_back::Handler>;

    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<<Self as NetworkBehaviour>::ConnectionHandler, ConnectionDenied> {
        Ok(Either::Right(dial_back::Handler::new()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<<Self as NetworkBehaviour>::ConnectionHandler, ConnectionDenied> {
        Ok(Either::Left(dial_request::Handler::new()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr }) => {
                self.address_candidates
                    .entry(addr.clone())
                    .or_default()
                    .score += 1;
                self.forget_beyond_max_tracked();
            }
            FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr }) => {
                // Patched (libp2p/rust-libp2p#6203): an address the swarm no longer holds is tested
                // again, not left confirmed in here.
                if let Some(info) = self.address_candidates.get_mut(addr) {
                    if info.status == TestStatus::Confirmed {
                        info.status = TestStatus::Untested;
                    }
                }
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.peer_info.insert(
                    connection_id,
                    ConnectionInfo {
                        peer_id,
                        supports_autonat: false,
                    },
                );
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let info = self
                    .peer_info
                    .remove(&connection_id)
                    .expect("inconsistent state");

                if info.supports_autonat {
                    tracing::debug!(%peer_id, "Disconnected from AutoNAT server");
                }

                // Patched: a test whose request rode this connection will never be answered.
                for (addr, info) in &mut self.address_candidates {
                    if info.status.in_test_on(connection_id) {
                        tracing::debug!(%peer_id, %addr, "AutoNAT test lost with its connection; testing again");
                        info.status = TestStatus::Untested;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: <Self::ConnectionHandler as ConnectionHandler>::ToBehaviour,
    ) {
        let (nonce, outcome) = match event {
            Either::Right(IncomingNonce { nonce, sender }) => {
                let Some((_, info)) = self
                    .address_candidates
                    .iter_mut()
                    .find(|(_, info)| info.is_pending_with_nonce(nonce))
                else {
                    let _ = sender.send(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("Received unexpected nonce: {nonce} from {peer_id}"),
                    )));
                    return;
                };

                if let TestStatus::Pending { conn, since, .. } = info.status {
                    info.status = TestStatus::Received { nonce, conn, since };
                }
                tracing::debug!(%peer_id, %nonce, "Successful dial-back");

                let _ = sender.send(Ok(()));

                return;
            }
            Either::Left(dial_request::ToBehaviour::PeerHasServerSupport) => {
                self.peer_info
                    .get_mut(&connection_id)
                    .expect("inconsistent state")
                    .supports_autonat = true;
                return;
            }
            Either::Left(dial_request::ToBehaviour::TestOutcome { nonce, outcome }) => {
                (nonce, outcome)
            }
        };

        let ((tested_addr, bytes_sent), result) = match outcome {
            Ok(address) => {
                let received = self
                    .address_candidates
                    .iter_mut()
                    .find(|(_, info)| info.is_received_with_nonce(nonce));

                if let Some((_, info)) = received {
                    info.status = TestStatus::Confirmed;
                    info.failures = 0;
                    info.unanswered = 0;
                    info.confirmed_at = Some(Instant::now());
                    info.rechecking = false;
                } else {
                    tracing::warn!(
                        %peer_id,
                        %nonce,
                        "Server reported reachbility but we never received a dial-back"
                    );
                    return;
                }

                self.pending_events
                    .push_back(ToSwarm::ExternalAddrConfirmed(address.0.clone()));

                (address, Ok(()))
            }
            Err(dial_request::Error::UnsupportedProtocol) => {
                self.peer_info
                    .get_mut(&connection_id)
                    .expect("inconsistent state")
                    .supports_autonat = false;

                self.reset_status_to(nonce, TestStatus::Untested); // Reset so it will be tried again.

                return;
            }
            Err(dial_request::Error::Io(e)) => {
                tracing::debug!(
                    %peer_id,
                    %nonce,
                    "Failed to complete AutoNAT probe: {e}"
                );

                // Patched: a test that ended without an answer (most often the handler's 10 s
                // timeout: the server's dial-back hung, as on a NAT that drops it silently) is asked
                // again at once the first time in a row; after that it waits as a failed test does,
                // so a node behind such a NAT no longer asks every 10 s.
                let now = Instant::now();
                let (retry, max) = (self.config.retry_interval, self.config.max_retry_interval);
                if let Some((_, info)) = self.address_candidates.iter_mut().find(|(_, i)| {
                    i.is_pending_with_nonce(nonce) || i.is_received_with_nonce(nonce)
                }) {
                    if info.unanswered == 0 {
                        info.status = TestStatus::Untested;
                    } else {
                        info.status = TestStatus::Failed {
                            until: now + retry_wait(retry, max, info.failures),
                        };
                        info.failures = info.failures.saturating_add(1);
                    }
                    info.unanswered = info.unanswered.saturating_add(1);
                }

                return;
            }
            Err(dial_request::Error::AddressNotReachable {
                address,
                bytes_sent,
                error,
            }) => {
                let now = Instant::now();
                let (retry, max) = (self.config.retry_interval, self.config.max_retry_interval);
                if let Some((candidate, info)) = self.address_candidates.iter_mut().find(|(_, i)| {
                    i.is_pending_with_nonce(nonce) || i.is_received_with_nonce(nonce)
                }) {
                    // Patched: tested again after a wait doubled with each failure in a row.
                    let wait = retry_wait(retry, max, info.failures);
                    info.failures = info.failures.saturating_add(1);
                    info.status = TestStatus::Failed { until: now + wait };
                    // Patched: a confirmed address that failed its re-test is no longer published.
                    if std::mem::take(&mut info.rechecking) {
                        tracing::debug!(%candidate, "Confirmed address failed its re-test; expiring it");
                        self.pending_events
                            .push_back(ToSwarm::ExternalAddrExpired(candidate.clone()));
                    }
                }

                ((address, bytes_sent), Err(error))
            }
        };

        self.pending_events.push_back(ToSwarm::GenerateEvent(Event {
            tested_addr,
            bytes_sent,
            server: peer_id,
            result: result.map_err(|e| Error { inner: e }),
        }));
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, <Self::ConnectionHandler as ConnectionHandler>::FromBehaviour>>
    {
        loop {
            if let Some(event) = self.pending_events.pop_front() {
                return Poll::Ready(event);
            }

            if self.next_tick.poll_unpin(cx).is_ready() {
                self.next_tick.reset(self.config.probe_interval);

                self.expire_tests(Instant::now());
                self.issue_dial_requests_for_untested_candidates();
                continue;
            }

            return Poll::Pending;
        }
    }
}

impl<R> Behaviour<R>
where
    R: rand::Rng + 'static,
{
    pub fn new(rng: R, config: Config) -> Self {
        Self {
            rng,
            next_tick: Delay::new(config.probe_interval),
            config,
            pending_events: VecDeque::new(),
            address_candidates: HashMap::new(),
            peer_info: HashMap::new(),
        }
    }

    /// Issues dial requests to random AutoNAT servers for the most frequently reported, untested
    /// candidates.
    ///
    /// In the current implementation, we only send a single address to each AutoNAT server.
    /// This spreads our candidates out across all servers we are connected to which should give us
    /// pretty fast feedback on all of them.
    fn issue_dial_requests_for_untested_candidates(&mut self) {
        for addr in self.untested_candidates() {
            let Some((conn_id, peer_id)) = self.random_autonat_server() else {
                tracing::debug!("Not connected to any AutoNAT servers");
                return;
            };

            let nonce = self.rng.random();
            self.address_candidates
                .get_mut(&addr)
                .expect("only emit candidates")
                .status = TestStatus::Pending {
                nonce,
                conn: conn_id,
                since: Instant::now(),
            };

            self.pending_events.push_back(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(conn_id),
                event: Either::Left(DialRequest {
                    nonce,
                    addrs: vec![addr],
                }),
            });
        }
    }

    /// Returns all untested candidates, sorted by the frequency they were reported at.
    ///
    /// More frequently reported candidates are considered to more likely be external addresses and
    /// thus tested first.
    fn untested_candidates(&self) -> impl Iterator<Item = Multiaddr> + use<R> {
        let mut entries = self
            .address_candidates
            .iter()
            .filter(|(_, info)| info.status == TestStatus::Untested)
            .map(|(addr, count)| (addr.clone(), *count))
            .collect::<Vec<_>>();

        entries.sort_unstable_by_key(|(_, info)| info.score);

        if entries.is_empty() {
            tracing::debug!("No untested address candidates");
        }

        entries
            .into_iter()
            .rev() // `sort_unstable` is ascending
            .take(self.config.max_candidates)
            .map(|(addr, _)| addr)
    }

    /// Chooses an active connection to one of our peers that reported support for the
    /// [`DIAL_REQUEST_PROTOCOL`](crate::v2::DIAL_REQUEST_PROTOCOL) protocol.
    fn random_autonat_server(&mut self) -> Option<(ConnectionId, PeerId)> {
        let (conn_id, info) = self
            .peer_info
            .iter()
            .filter(|(_, info)| info.supports_autonat)
            .choose(&mut self.rng)?;

        Some((*conn_id, info.peer_id))
    }

    /// Patched: addresses whose test went unanswered for `test_timeout`, failed ones whose wait is
    /// over, and confirmed ones `recheck_interval` after their confirmation, are untested again.
    fn expire_tests(&mut self, now: Instant) {
        let timeout = self.config.test_timeout;
        let recheck = self.config.recheck_interval;
        for (addr, info) in &mut self.address_candidates {
            let again = match info.status {
                TestStatus::Pending { since, .. } | TestStatus::Received { since, .. } => {
                    now.saturating_duration_since(since) >= timeout
                }
                TestStatus::Failed { until } => now >= until,
                TestStatus::Confirmed => {
                    let due = info
                        .confirmed_at
                        .is_some_and(|at| now.saturating_duration_since(at) >= recheck);
                    // Still published while it is tested again.
                    info.rechecking |= due;
                    due
                }
                TestStatus::Untested => false,
            };
            if again {
                tracing::debug!(%addr, "Testing the address again");
                info.status = TestStatus::Untested;
            }
        }
    }

    /// Patched: beyond `max_tracked` candidates, forgets the least reported of those neither in a test
    /// nor confirmed (the newest first among equals).
    fn forget_beyond_max_tracked(&mut self) {
        while self.address_candidates.len() > self.config.max_tracked {
            let Some(addr) = self
                .address_candidates
                .iter()
                .filter(|(_, info)| {
                    matches!(info.status, TestStatus::Untested | TestStatus::Failed { .. })
                })
                .min_by_key(|(_, info)| (info.score, Reverse(info.seen)))
                .map(|(addr, _)| addr.clone())
            else {
                return;
            };
            self.address_candidates.remove(&addr);
        }
    }

    fn reset_status_to(&mut self, nonce: Nonce, new_status: TestStatus) {
        let Some((_, info)) = self
            .address_candidates
            .iter_mut()
            .find(|(_, i)| i.is_pending_with_nonce(nonce) || i.is_received_with_nonce(nonce))
        else {
            return;
        };

        info.status = new_status;
    }

    // FIXME: We don't want test-only APIs in our public API.
    #[doc(hidden)]
    pub fn validate_addr(&mut self, addr: &Multiaddr) {
        if let Some(info) = self.address_candidates.get_mut(addr) {
            info.status = TestStatus::Confirmed;
            info.confirmed_at = Some(Instant::now());
        }
    }
}

impl Behaviour<rand::rngs::StdRng> {
    /// Patched: a client with `config`, its nonces drawn as [`Default`] draws them.
    pub fn with_config(config: Config) -> Self {
        Self::new(rand::make_rng::<rand::rngs::StdRng>(), config)
    }
}

impl Default for Behaviour<rand::rngs::StdRng> {
    fn default() -> Self {
        Self::new(rand::make_rng::<rand::rngs::StdRng>(), Config::default())
    }
}

pub struct Error {
    pub(crate) inner: dial_request::DialBackError,
}

impl Display for Error {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        Display::fmt(&self.inner, f)
    }
}

impl Debug for Error {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(&self.inner, f)
    }
}

#[derive(Debug)]
pub struct Event {
    /// The address that was selected for testing.
    pub tested_addr: Multiaddr,
    /// The amount of data that was sent to the server.
    /// Is 0 if it wasn't necessary to send any data.
    /// Otherwise it's a number between 30.000 and 100.000.
    pub bytes_sent: usize,
    /// The peer id of the server that was selected for testing.
    pub server: PeerId,
    /// The result of the test. If the test was successful, this is `Ok(())`.
    /// Otherwise it's an error.
    pub result: Result<(), Error>,
}

struct ConnectionInfo {
    peer_id: PeerId,
    supports_autonat: bool,
}

#[derive(Copy, Clone)]
struct AddressInfo {
    score: usize,
    status: TestStatus,
    /// Patched: tests failed in a row.
    failures: u32,
    /// Patched: tests that ended without an answer (an I/O error) since the last success.
    unanswered: u32,
    /// Patched: when a server last confirmed it.
    confirmed_at: Option<Instant>,
    /// Patched: a confirmed address (still published) is being tested again.
    rechecking: bool,
    /// Patched: when the candidate was first reported.
    seen: Instant,
}

impl Default for AddressInfo {
    fn default() -> Self {
        Self {
            score: 0,
            status: TestStatus::Untested,
            failures: 0,
            unanswered: 0,
            confirmed_at: None,
            rechecking: false,
            seen: Instant::now(),
        }
    }
}

impl AddressInfo {
    fn is_pending_with_nonce(&self, nonce: Nonce) -> bool {
        match self.status {
            TestStatus::Pending { nonce: c, .. } => c == nonce,
            _ => false,
        }
    }

    fn is_received_with_nonce(&self, nonce: Nonce) -> bool {
        match self.status {
            TestStatus::Received { nonce: c, .. } => c == nonce,
            _ => false,
        }
    }
}

/// Patched: the wait before a failed address is tested again: `retry`, doubled with each of the
/// `failures` before it in a row, at most `max`.
fn retry_wait(retry: Duration, max: Duration, failures: u32) -> Duration {
    retry.saturating_mul(1 << failures.min(16)).min(max)
}

/// Patched: a test remembers the connection its request rode and when it was asked, a failed
/// address when it is tested again, and a confirmed address is told from one still waiting for the
/// server's answer after its dial-back.
#[derive(Clone, Copy, Default, PartialEq)]
enum TestStatus {
    #[default]
    Untested,
    Pending {
        nonce: Nonce,
        conn: ConnectionId,
        since: Instant,
    },
    Failed {
        until: Instant,
    },
    Received {
        nonce: Nonce,
        conn: ConnectionId,
        since: Instant,
    },
    Confirmed,
}

impl TestStatus {
    fn in_test_on(&self, connection: ConnectionId) -> bool {
        match *self {
            TestStatus::Pending { conn, .. } | TestStatus::Received { conn, .. } => conn == connection,
            _ => false,
        }
    }
}
