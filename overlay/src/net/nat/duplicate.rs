//! One direct connection per peer.
//!
//! Two nodes can end up with more than one direct connection between them: an AutoNAT v2 server dials
//! its client back from a fresh port, and that connection stays (every protocol adopts it), or both
//! sides dial each other at once. libp2p's request-response then spreads requests over all of them by
//! request number, so a downloader's chunks from one uploader alternate between TCP connections: each
//! restarts from TCP's initial window after the seconds it sat idle, and loses its share of a busy
//! uplink to the steady connections of other downloaders. In the real lab-16 the cinemas that kept two
//! or three connections to the distributor received about half the bytes from it that the others did,
//! and finished last (docs/benchmarks.md, "One direct connection per peer").
//!
//! [`redundant`] says which of a peer's direct connections this node closes. Each side closes only
//! connections it dialed itself. Where one side dialed them all, it alone decides: it keeps one, TCP
//! before QUIC (QUIC costs more CPU per byte here), then the oldest. Where both sides dialed, both choose
//! the same connection to keep from what they both see:
//!
//! - the oldest, when it was open [`APART`] or more before every other: an AutoNAT dial-back comes
//!   seconds after the connection that asked for it, and the requests on the newer connection are the
//!   younger ones, so closing it wastes the least of a transfer under way;
//! - of connections opened within [`NEAR`] of each other (both sides dialed at once), one dialed by the
//!   side with the smaller peer id; its dialer picks which, as above;
//! - nothing, while two connections' ages differ by between `NEAR` and `APART`: the two sides, whose
//!   clocks see the same opening a round trip apart, might then choose differently, and both could close
//!   their own. The two connections then stay, as before this rule.
//!
//! Nothing is closed until every direct connection to the peer has been open for [`SETTLE`]: an AutoNAT
//! dial-back finishes its exchange in a round trip or two, and closing the connection that carried the
//! request would lose the answer. A redundant connection then closes between two of this node's chunk
//! answers on it, at most [`DRAIN`] later ([`close_now`]): an answer cut off is a chunk of the uploader's
//! link spent for nothing. Relayed connections are left to the rule that closes them once a
//! direct one is up (`node/nat.rs`); a hole-punched connection counts as dialed by the side DCUtR made
//! the dialer (libp2p's `role_override`), as both sides agree.

use std::time::Duration;

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

/// How long every direct connection to a peer must have been open before any of them is closed.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Connections opened within this of each other were opened at once.
pub const NEAR: Duration = Duration::from_millis(500);

/// A connection opened this much or more before another is the older on both sides.
pub const APART: Duration = Duration::from_millis(1500);

/// How long past [`SETTLE`] a redundant connection may stay open while this node still answers a chunk
/// request that came over it (see [`close_now`]).
pub const DRAIN: Duration = Duration::from_secs(10);

/// Whether a redundant connection closes now, `age` after the youngest connection to its peer opened.
/// Closing it loses the requests under way on it, and a chunk answer lost is a chunk's worth of the
/// uploader's link spent for nothing: the asker must ask again. So it waits for a moment when no answer of
/// ours is open on it (`answering`; an asker's requests alternate between its connections, so such a
/// moment comes within a few answers), at most [`DRAIN`] past [`SETTLE`]. A request still on its way, or
/// an answer the asker has not read yet, is lost all the same: the asker asks again and does not blame
/// us (`Reply::Moved`).
pub fn close_now(answering: bool, age: Duration) -> bool {
    !answering || age >= SETTLE + DRAIN
}

/// One direct connection to a peer, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direct {
    /// The connection.
    pub id: ConnectionId,
    /// This node dialed it (for a hole-punched connection: DCUtR's dialer role).
    pub ours: bool,
    /// Over QUIC (else TCP).
    pub quic: bool,
    /// How long it has been open.
    pub age: Duration,
}

/// Which of the direct connections `conns` between this node (`me`) and `peer` this node closes.
pub fn redundant(me: &PeerId, peer: &PeerId, conns: &[Direct]) -> Vec<ConnectionId> {
    let Some(oldest) = conns.iter().map(|c| c.age).max() else { return Vec::new() };
    if conns.len() < 2 || conns.iter().any(|c| c.age < SETTLE) {
        return Vec::new();
    }
    // A side's pick among its own connections: TCP first, then the oldest.
    let best = |a: &&Direct, b: &&Direct| a.quic.cmp(&b.quic).then(b.age.cmp(&a.age)).then(a.id.cmp(&b.id));
    let close_all_but = |keep: Option<ConnectionId>| {
        conns.iter().filter(|c| c.ours && Some(c.id) != keep).map(|c| c.id).collect::<Vec<_>>()
    };
    if conns.iter().all(|c| c.ours) {
        return close_all_but(conns.iter().min_by(best).map(|c| c.id));
    }
    if conns.iter().all(|c| !c.ours) {
        return Vec::new();
    }
    let behind = |c: &Direct| oldest - c.age;
    if conns.iter().any(|c| (NEAR..APART).contains(&behind(c))) {
        return Vec::new();
    }
    let first: Vec<&Direct> = conns.iter().filter(|c| behind(c) < NEAR).collect();
    // Which side dialed the connection kept: the smaller peer id's, if it dialed one of the first.
    let ours_kept =
        if first.iter().any(|c| c.ours) && first.iter().any(|c| !c.ours) { me < peer } else { first[0].ours };
    let keep = first.iter().copied().filter(|c| c.ours && ours_kept).min_by(best).map(|c| c.id);
    close_all_but(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redundant_connection_closes_between_answers_or_once_drained() {
        let settled = SETTLE + Duration::from_millis(1);
        assert!(close_now(false, settled), "nothing open on it: at once");
        assert!(!close_now(true, settled), "an answer under way: it waits");
        assert!(!close_now(true, SETTLE + DRAIN - Duration::from_millis(1)));
        assert!(close_now(true, SETTLE + DRAIN), "never past the drain");
    }

    fn conn(id: usize, ours: bool, quic: bool, age_ms: u64) -> Direct {
        Direct { id: ConnectionId::new_unchecked(id), ours, quic, age: Duration::from_millis(age_ms) }
    }

    fn ids(v: &[usize]) -> Vec<ConnectionId> {
        v.iter().map(|&i| ConnectionId::new_unchecked(i)).collect()
    }

    /// Two peer ids, the smaller first.
    fn pair() -> (PeerId, PeerId) {
        let (a, b) = (PeerId::random(), PeerId::random());
        if a < b {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// The other side's view of the same connections: who dialed each is swapped, and each opening is
    /// seen `skew_ms[i]` later (its clock saw it a round trip apart).
    fn mirror(conns: &[Direct], skew_ms: &[i64]) -> Vec<Direct> {
        conns
            .iter()
            .zip(skew_ms.iter().chain(std::iter::repeat(&0)))
            .map(|(c, &s)| Direct {
                ours: !c.ours,
                age: Duration::from_millis((c.age.as_millis() as i64 - s) as u64),
                ..*c
            })
            .collect()
    }

    #[test]
    fn a_single_connection_is_never_closed() {
        let (small, big) = pair();
        assert!(redundant(&big, &small, &[conn(1, true, false, 60_000)]).is_empty());
        assert!(redundant(&small, &big, &[conn(1, false, true, 60_000)]).is_empty());
        assert!(redundant(&small, &big, &[]).is_empty());
    }

    #[test]
    fn a_dial_back_seconds_after_the_first_connection_is_closed_by_its_dialer() {
        let (small, big) = pair();
        for (first, back) in [(small, big), (big, small)] {
            // `first` dialed 40 s ago; `back` dialed it back (AutoNAT) 10 s later.
            let at_first = [conn(1, true, false, 40_000), conn(2, false, false, 30_000)];
            let at_back = mirror(&at_first, &[]);
            assert!(redundant(&first, &back, &at_first).is_empty(), "the first connection stays");
            assert_eq!(redundant(&back, &first, &at_back), ids(&[2]), "the dial-back goes");
        }
    }

    #[test]
    fn of_two_dialed_at_once_the_smaller_peer_id_s_stays() {
        let (small, big) = pair();
        let at_small = [conn(1, true, false, 30_000), conn(2, false, false, 30_200)];
        assert!(redundant(&small, &big, &at_small).is_empty());
        assert_eq!(redundant(&big, &small, &mirror(&at_small, &[])), ids(&[2]));
    }

    #[test]
    fn of_its_own_connections_opened_at_once_a_node_keeps_tcp() {
        let (small, big) = pair();
        for (me, peer) in [(small, big), (big, small)] {
            let conns =
                [conn(1, true, true, 30_100), conn(2, true, false, 30_000), conn(3, true, false, 10_000)];
            assert_eq!(redundant(&me, &peer, &conns), ids(&[1, 3]), "TCP first among the first opened");
            assert!(redundant(&peer, &me, &mirror(&conns, &[])).is_empty(), "the other side closes nothing");
        }
    }

    #[test]
    fn a_side_that_dialed_them_all_keeps_one_whenever_they_opened() {
        let (small, big) = pair();
        for (me, peer) in [(small, big), (big, small)] {
            // 1 s apart: unclear for two dialers, but only this side decides here.
            let conns = [conn(1, true, false, 31_000), conn(2, true, false, 30_000)];
            assert_eq!(redundant(&me, &peer, &conns), ids(&[2]), "the oldest");
            let conns = [conn(1, true, true, 90_000), conn(2, true, false, 30_000)];
            assert_eq!(redundant(&me, &peer, &conns), ids(&[1]), "TCP before an older QUIC");
            assert!(redundant(&peer, &me, &mirror(&conns, &[])).is_empty());
        }
    }

    #[test]
    fn nothing_is_closed_before_every_connection_settled_or_while_their_order_is_unclear() {
        let (small, big) = pair();
        let young = [conn(1, false, false, 60_000), conn(2, true, false, SETTLE.as_millis() as u64 - 1)];
        assert!(redundant(&big, &small, &young).is_empty(), "an AutoNAT dial-back may still be answering");
        let settled = [conn(1, false, false, 60_000), conn(2, true, false, SETTLE.as_millis() as u64)];
        assert_eq!(redundant(&big, &small, &settled), ids(&[2]));
        let unclear = [conn(1, false, false, 31_000), conn(2, true, false, 30_000)];
        assert!(redundant(&big, &small, &unclear).is_empty());
        assert!(redundant(&small, &big, &mirror(&unclear, &[])).is_empty());
    }

    #[test]
    fn both_sides_together_always_leave_exactly_one_connection() {
        let (small, big) = pair();
        let ages = [10_000, 10_200, 20_000, 30_000];
        // Every mix of up to four connections, each dialed by either side, over TCP or QUIC, opened at one
        // of `ages`; the other side sees each opening up to 100 ms apart from this side.
        for n in 1..=4usize {
            for mask in 0..(1u32 << (2 * n)) {
                for age_pick in 0..4usize.pow(n as u32) {
                    let conns: Vec<Direct> = (0..n)
                        .map(|i| {
                            let age = ages[age_pick / 4usize.pow(i as u32) % 4];
                            conn(i, mask >> (2 * i) & 1 == 1, mask >> (2 * i + 1) & 1 == 1, age)
                        })
                        .collect();
                    for skew in [[0, 0, 0, 0], [100, -100, 50, -50], [-100, 100, -50, 50]] {
                        let mut closed = redundant(&small, &big, &conns);
                        closed.extend(redundant(&big, &small, &mirror(&conns, &skew)));
                        closed.sort();
                        let before = closed.len();
                        closed.dedup();
                        assert_eq!(closed.len(), before, "a connection closed from both ends: {conns:?}");
                        assert_eq!(
                            n - closed.len(),
                            1,
                            "{} left of {conns:?}, skew {skew:?}",
                            n - closed.len()
                        );
                    }
                    // Clocks further apart than the rule allows for may leave two, never none.
                    let skew = [250, -250, 200, -200];
                    let mut closed = redundant(&small, &big, &conns);
                    closed.extend(redundant(&big, &small, &mirror(&conns, &skew)));
                    assert!(closed.len() < n, "none left of {conns:?}");
                }
            }
        }
    }
}
