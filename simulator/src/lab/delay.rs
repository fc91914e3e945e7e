//! The scenario's latency on the lab's links, on a kernel without `netem`: every IPv4 packet a node
//! receives on `eth0` is held for the one-way latency the simulator gives that pair
//! ([`crate::topology::Topology::latency`]) and then let through.
//!
//! How: a rule in each node's namespace (`iptables -t mangle -A PREROUTING -i eth0 -j NFQUEUE`) hands every
//! packet to netfilter's queue; one thread of the lab's own, the delay line, holds each queue's socket
//! (`NETLINK_NETFILTER`, opened inside the namespace), reads each packet's IPv4 header, and gives the kernel
//! its verdict (accept) when the packet is due. Only the first 20 bytes of a packet cross into user space,
//! and large (GSO) packets are queued whole.
//!
//! Why at the receiver: a packet received has already left its sender's socket (the IP layer orphans it),
//! so holding it does not count against the sender's TCP small queues, which a delay at the sender would
//! (a socket may keep only about a millisecond of its rate below TCP); and it comes after the shaped links,
//! as a long path's propagation delay does. A pair's round trip is then twice its one-way latency, as in
//! the simulator.
//!
//! Bounds: each queue holds at most [`QUEUE_MAXLEN`] packets (the kernel drops beyond, as a full link would,
//! and [`DelayFigures::overruns`] counts what the socket missed); the line holds one small entry per packet
//! the kernel holds for it, and nothing else. Its
//! precision is the thread's wake-up: [`DelayFigures`] reports how late the latest verdict came.

use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use super::LabError;

/// Packets one node's queue holds at most (`NFQA_CFG_QUEUE_MAXLEN`).
pub const QUEUE_MAXLEN: u32 = 16_384;
/// The queue number in every namespace (queues are per namespace).
const QUEUE: u16 = 0;
/// How long the line sleeps at most between looks at its stop flag.
const IDLE: Duration = Duration::from_millis(50);
/// The line sleeps at least this long between looks: a packet is let through at most about this late, and
/// the line wakes a few thousand times a second, not once per packet.
const SLACK: Duration = Duration::from_micros(200);
/// Holding packets, the line looks at its queues at least this often (what arrives meanwhile waits in the
/// kernel, stamped).
const DRAIN: Duration = Duration::from_millis(2);
/// Bytes of each packet copied to the line: an IPv4 header without options.
const COPY: u32 = 20;

// Netlink and nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink{,_queue}.h).
const NLMSG_HDRLEN: usize = 16;
const NFGEN_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const SUBSYS_QUEUE: u16 = 3;
const MSG_PACKET: u16 = SUBSYS_QUEUE << 8;
const MSG_VERDICT: u16 = SUBSYS_QUEUE << 8 | 1;
const MSG_CONFIG: u16 = SUBSYS_QUEUE << 8 | 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_TIMESTAMP: u16 = 4;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const CFG_CMD_BIND: u8 = 1;
const COPY_PACKET: u8 = 2;
const CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What one node's queue delays: packets from each address by its latency (others pass at once).
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The node's namespace.
    pub ns: String,
    /// Source address -> one-way latency to this node.
    pub from: HashMap<Ipv4Addr, Duration>,
}

/// What the delay line did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DelayFigures {
    /// Packets held and let through.
    pub packets: u64,
    /// Packets from an address with no latency (let through at once).
    pub passed: u64,
    /// How late the latest verdict came after its packet was due, milliseconds.
    pub late_max_ms: f64,
    /// Verdicts more than a millisecond late.
    pub late_over_1ms: u64,
    /// Most packets held at once (all queues).
    pub held_max: usize,
    /// Times a queue's socket overflowed (`ENOBUFS`: the kernel dropped packets it could not hand over).
    pub overruns: u64,
    /// The line ran at a real-time priority (`SCHED_FIFO`), ahead of the daemons.
    pub realtime: bool,
    /// Packets held that carried no receive timestamp from the kernel: their delay counted from when the
    /// line read them, up to `DRAIN` later than their arrival.
    pub unstamped: u64,
    /// CPU seconds the line's thread used (`None`: the kernel does not say).
    pub cpu_s: Option<f64>,
}

/// A running delay line; [`DelayLine::stop`] (or dropping it) ends its thread.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DelayFigures, LabError>>>,
}

impl DelayLine {
    /// Binds a queue in each receiver's namespace, starts the thread, then installs each namespace's
    /// rule (so no packet is queued before the line listens). Needs root and `iptables`.
    pub fn start(receivers: Vec<Receiver>) -> Result<DelayLine, LabError> {
        let mut queues = Vec::with_capacity(receivers.len());
        for r in &receivers {
            let ns = r.ns.clone();
            let fd = super::net::in_ns(&ns, || open_queue(&ns))?;
            queues.push(Queue { fd, from: r.from.clone() });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lab-delay".into())
            .spawn(move || run(&queues, &flag))
            .map_err(LabError::io("cannot start the delay line's thread"))?;
        let line = DelayLine { stop, thread: Some(thread) };
        for r in &receivers {
            super::net::run(&[
                "ip",
                "netns",
                "exec",
                &r.ns,
                "iptables",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-i",
                "eth0",
                "-p",
                "all",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "0",
            ])
            .map_err(|e| match e {
                LabError::Command { cmd, reason } => LabError::Command {
                    cmd,
                    reason: format!("{reason} (the lab's latency needs iptables: apt-get install iptables)"),
                },
                e => e,
            })?;
        }
        Ok(line)
    }

    /// An error if the line's thread ended before it was stopped (every packet would then be dropped).
    pub fn check(&mut self) -> Result<(), LabError> {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            self.finish()?;
            return Err(LabError::Unsupported("the delay line stopped on its own".into()));
        }
        Ok(())
    }

    /// Stops the line and returns what it did. Packets still held are let through by the kernel when
    /// their namespace goes (or dropped: the run is over).
    pub fn stop(mut self) -> Result<DelayFigures, LabError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<DelayFigures, LabError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => {
                t.join().unwrap_or_else(|_| Err(LabError::Unsupported("the delay line panicked".into())))
            }
            None => Ok(DelayFigures::default()),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

struct Queue {
    fd: OwnedFd,
    from: HashMap<Ipv4Addr, Duration>,
}

/// A netlink message of nfnetlink_queue: header, `nfgenmsg` for queue [`QUEUE`], attributes.
fn message(buf: &mut Vec<u8>, ty: u16, flags: u16, attrs: &[(u16, &[u8])]) {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    buf.extend_from_slice(&[0, 0]); // AF_UNSPEC, NFNETLINK_V0
    buf.extend_from_slice(&QUEUE.to_be_bytes());
    for (kind, value) in attrs {
        buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// The verdict accepting packet `id`.
fn accept(buf: &mut Vec<u8>, id: u32) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    message(buf, MSG_VERDICT, NLM_F_REQUEST, &[(NFQA_VERDICT_HDR, &hdr)]);
}

/// One message the kernel sent.
#[derive(Debug, PartialEq)]
enum Incoming {
    /// A queued packet: its id, its IPv4 source if it is IPv4, and the kernel's receive timestamp
    /// (since the Unix epoch) if it has one.
    Packet {
        id: u32,
        source: Option<Ipv4Addr>,
        stamp: Option<Duration>,
    },
    /// An acknowledgement (errno 0) or an error.
    Ack(i32),
    Other,
}

/// The messages in one datagram from the kernel; a truncated one ends the walk.
fn parse(mut data: &[u8]) -> Vec<Incoming> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        let body = &data[NLMSG_HDRLEN..len];
        out.push(match ty {
            NLMSG_ERROR if body.len() >= 4 => {
                Incoming::Ack(i32::from_ne_bytes(body[..4].try_into().expect("4")))
            }
            MSG_PACKET if body.len() >= NFGEN_LEN => packet(&body[NFGEN_LEN..]),
            _ => Incoming::Other,
        });
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    out
}

fn packet(mut attrs: &[u8]) -> Incoming {
    let (mut id, mut source, mut stamp) = (None, None, None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => {
                id = Some(u32::from_be_bytes(value[..4].try_into().expect("4 bytes")));
            }
            NFQA_TIMESTAMP if value.len() >= 16 => {
                let secs = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
                let micros = u64::from_be_bytes(value[8..16].try_into().expect("8 bytes"));
                stamp = Some(Duration::from_secs(secs) + Duration::from_micros(micros.min(999_999)));
            }
            NFQA_PAYLOAD if value.len() >= 20 && value[0] >> 4 == 4 => {
                source = Some(Ipv4Addr::new(value[12], value[13], value[14], value[15]));
            }
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    match id {
        Some(id) => Incoming::Packet { id, source, stamp },
        None => Incoming::Other,
    }
}

fn netlink_error(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Command { cmd: format!("netfilter queue: {what}"), reason: e.to_string() }
}

/// Sends `msg` (with `NLM_F_ACK`) and waits for the kernel's acknowledgement: at most a few datagrams,
/// each within the socket's receive timeout (set by [`open_queue`]).
fn request(fd: &OwnedFd, msg: &[u8], what: &str) -> Result<(), LabError> {
    socket::send(fd.as_raw_fd(), msg, MsgFlags::empty()).map_err(|e| netlink_error(what, e))?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..16 {
        let n =
            socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| netlink_error(what, e))?;
        for m in parse(&buf[..n]) {
            match m {
                Incoming::Ack(0) => return Ok(()),
                Incoming::Ack(e) => return Err(netlink_error(what, Errno::from_raw(-e))),
                _ => {}
            }
        }
    }
    Err(netlink_error(what, "no acknowledgement from the kernel"))
}

/// Opens and configures queue [`QUEUE`] in the calling thread's namespace.
fn open_queue(ns: &str) -> Result<OwnedFd, LabError> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| netlink_error(&format!("socket in {ns}"), e))?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| netlink_error("bind", e))?;
    // Room for a burst of packet messages (about 120 bytes each) while the line is busy.
    let _ = socket::setsockopt(&fd, socket::sockopt::RcvBufForce, &(8 << 20));
    // The set-up waits for the kernel's acknowledgements at most this long each (the line reads without
    // waiting).
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(5, 0))
        .map_err(|e| netlink_error("receive timeout", e))?;
    let mut msg = Vec::new();
    message(&mut msg, MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, &[(NFQA_CFG_CMD, &[CFG_CMD_BIND, 0, 0, 0])]);
    request(&fd, &msg, &format!("bind queue {QUEUE} in {ns}"))?;
    let mut params = COPY.to_be_bytes().to_vec();
    params.push(COPY_PACKET);
    msg.clear();
    message(
        &mut msg,
        MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        &[
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes()),
            (NFQA_CFG_MASK, &CFG_F_GSO.to_be_bytes()),
            (NFQA_CFG_FLAGS, &CFG_F_GSO.to_be_bytes()),
        ],
    );
    request(&fd, &msg, &format!("configure queue {QUEUE} in {ns}"))?;
    Ok(fd)
}

/// A packet held: due time, then queue index and packet id (a min-heap by time via `Reverse`).
type Held = std::cmp::Reverse<(Instant, usize, u32)>;

/// Puts the calling thread ahead of the daemons (`SCHED_FIFO`): on 2 cores busy with 17 daemons a thread at
/// normal priority waited up to 160 ms for its turn, and every packet it held waited with it.
fn realtime() -> bool {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let Ok(level) = 50u8.try_into() else { return false };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(level),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .is_ok()
}

/// Seconds this thread has run on a CPU (`/proc/thread-self/schedstat`), if the kernel says.
fn cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(text.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

/// When a packet arrived, from the kernel's receive timestamp (`NFQA_TIMESTAMP`, wall clock) when it has
/// one within the last second; else `now`.
fn arrived(stamp: Option<Duration>, now: Instant, wall: std::time::SystemTime) -> Instant {
    let age = stamp.and_then(|t| wall.duration_since(std::time::UNIX_EPOCH + t).ok());
    match age {
        Some(age) if age < Duration::from_secs(1) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

fn run(queues: &[Queue], stop: &AtomicBool) -> Result<DelayFigures, LabError> {
    let mut figures = DelayFigures { realtime: realtime(), ..DelayFigures::default() };
    let cpu_at_start = cpu_secs();
    // Any socket asking for receive timestamps makes the kernel stamp every packet it receives, in every
    // namespace, so a packet's delay counts from its arrival, not from when the line read it.
    let stamps =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(LabError::io("cannot open a UDP socket"))?;
    let _ = socket::setsockopt(&stamps, socket::sockopt::ReceiveTimestamp, &true);
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); queues.len()];
    while !stop.load(Ordering::SeqCst) {
        // Everything queued since the last look, stamped with its arrival.
        for (k, q) in queues.iter().enumerate() {
            // A bounded number of datagrams per look, so verdicts are not starved.
            for _ in 0..4096 {
                let n = match socket::recv(q.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::ENOBUFS) => {
                        figures.overruns += 1;
                        continue;
                    }
                    Err(e) => return Err(netlink_error("receive", e)),
                };
                let (now, wall) = (Instant::now(), std::time::SystemTime::now());
                for m in parse(&buf[..n]) {
                    if let Incoming::Packet { id, source, stamp } = m {
                        match source.and_then(|s| q.from.get(&s)) {
                            Some(&d) => {
                                figures.unstamped += u64::from(stamp.is_none());
                                held.push(std::cmp::Reverse((arrived(stamp, now, wall) + d, k, id)));
                            }
                            None => {
                                figures.passed += 1;
                                accept(&mut out[k], id);
                            }
                        }
                    }
                }
            }
        }
        figures.held_max = figures.held_max.max(held.len());
        let now = Instant::now();
        while let Some(std::cmp::Reverse((due, k, id))) = held.peek().copied() {
            if due > now {
                break;
            }
            held.pop();
            let late = now - due;
            figures.late_max_ms = figures.late_max_ms.max(late.as_secs_f64() * 1e3);
            figures.late_over_1ms += u64::from(late > Duration::from_millis(1));
            figures.packets += 1;
            accept(&mut out[k], id);
        }
        for (k, msgs) in out.iter_mut().enumerate().filter(|(_, m)| !m.is_empty()) {
            // Many verdicts in one datagram (each is 32 bytes), at most 64 KiB per datagram.
            for part in msgs.chunks(32 * 2048) {
                socket::send(queues[k].fd.as_raw_fd(), part, MsgFlags::empty())
                    .map_err(|e| netlink_error("verdict", e))?;
            }
            msgs.clear();
        }
        // Wait: at least SLACK between looks, so the line wakes a few thousand times a second, not once
        // per packet (what arrives meanwhile waits in the kernel, stamped); holding packets, to the next one
        // due (at most DRAIN); holding none, until the next packet comes.
        let now = Instant::now();
        let until = held.peek().map_or(now + SLACK, |h| h.0 .0.max(now + SLACK).min(now + DRAIN));
        std::thread::sleep(until.saturating_duration_since(now));
        if held.is_empty() {
            let mut fds: Vec<PollFd<'_>> =
                queues.iter().map(|q| PollFd::new(q.fd.as_fd(), PollFlags::POLLIN)).collect();
            match nix::poll::ppoll(&mut fds, Some(IDLE.into()), None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(netlink_error("poll", e)),
            }
        }
    }
    figures.cpu_s = cpu_secs().zip(cpu_at_start).map(|(end, start)| end - start);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_one_netlink_message_accepting_its_packet() {
        let mut buf = Vec::new();
        accept(&mut buf, 0x0102_0304);
        assert_eq!(buf.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x0301);
        assert_eq!(&buf[16..20], &[0, 0, 0, 0]);
        assert_eq!(u16::from_ne_bytes([buf[20], buf[21]]), 12);
        assert_eq!(u16::from_ne_bytes([buf[22], buf[23]]), NFQA_VERDICT_HDR);
        assert_eq!(&buf[24..], &[0, 0, 0, 1, 1, 2, 3, 4]);
        // Two verdicts back to back are two messages the parser walks.
        accept(&mut buf, 7);
        assert_eq!(parse(&buf), vec![Incoming::Other, Incoming::Other]);
    }

    /// A packet message as the kernel builds it: header, nfgenmsg, the packet header, the payload.
    fn kernel_packet(id: u32, payload: &[u8], stamp: Option<(u64, u64)>) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 1]); // ETH_P_IP, hook
        let mut attrs: Vec<(u16, Vec<u8>)> = vec![(NFQA_PACKET_HDR, hdr)];
        if let Some((secs, micros)) = stamp {
            attrs.push((NFQA_TIMESTAMP, [secs.to_be_bytes(), micros.to_be_bytes()].concat()));
        }
        attrs.push((NFQA_PAYLOAD, payload.to_vec()));
        let attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let mut buf = Vec::new();
        message(&mut buf, MSG_PACKET, 0, &attrs);
        buf
    }

    #[test]
    fn a_packet_counts_from_its_kernel_stamp_when_recent() {
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let since_epoch = wall.duration_since(std::time::UNIX_EPOCH).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(arrived(Some(since_epoch - ms(3)), now, wall), now - ms(3));
        // No stamp, one from the future, or one too old to be a receive time (TCP's departure times are
        // on another clock): the time the line read it.
        assert_eq!(arrived(None, now, wall), now);
        assert_eq!(arrived(Some(since_epoch + ms(5)), now, wall), now);
        assert_eq!(arrived(Some(since_epoch - ms(5000)), now, wall), now);
    }

    #[test]
    fn a_queued_packet_gives_its_id_and_ipv4_source() {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[12..16].copy_from_slice(&[10, 201, 0, 7]);
        let mut data = kernel_packet(42, &ip, None);
        // An IPv6 packet (no IPv4 source) and an acknowledgement in the same datagram.
        let mut v6 = [0u8; 20];
        v6[0] = 0x60;
        data.extend(kernel_packet(43, &v6, Some((1_700_000_000, 250_000))));
        let mut ack = Vec::new();
        ack.extend_from_slice(&36u32.to_ne_bytes());
        ack.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&[0; 10]);
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend_from_slice(&[0; 16]);
        data.extend(&ack);
        assert_eq!(
            parse(&data),
            vec![
                Incoming::Packet { id: 42, source: Some(Ipv4Addr::new(10, 201, 0, 7)), stamp: None },
                Incoming::Packet {
                    id: 43,
                    source: None,
                    stamp: Some(Duration::from_micros(1_700_000_000_250_000))
                },
                Incoming::Ack(0),
            ]
        );
        // A truncated message ends the walk without reading past the end.
        assert_eq!(parse(&data[..data.len() - 40]).len(), 1);
        assert!(parse(&[0xff; 15]).is_empty());
    }
}
