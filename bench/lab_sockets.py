#!/usr/bin/env python3
"""Reads bench/lab-sockets.sh's samples: per uploader, the rate (Mbit/s, from bytes acked) each downloader
got from it between FROM and TO seconds after the first sample, and its TCP's retransmitted share; then, for
the uploader UPLOADER (default: the highest node number, the lab's distributor), the share of the samples
in which each downloader had bytes queued there (send queue > 0), with its mean cwnd and RTT.

    python3 bench/lab_sockets.py SOCKETS.txt FROM TO [UPLOADER]

Node i of the lab is namespace cml-n<i>, address 10.201.<i / 250>.<i % 250 + 1>."""
import collections
import re
import sys


def node(addr):
    a = addr.rsplit(":", 1)[0].split(".")
    return int(a[2]) * 250 + int(a[3]) - 1


def field(line, name):
    m = re.search(r"\b" + name + r":([\d.]+)", line)
    return float(m.group(1)) if m else 0.0


def main():
    path, lo, hi = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    socks = collections.defaultdict(list)  # (ns, local, peer) -> [(t, acked, retrans, sent, sendq, cwnd, rtt)]
    t0 = t = ns = head = None
    for line in open(path):
        if line.startswith("@"):
            _, ts, ns = line.split()
            t = float(ts)
            t0 = t0 or t
            continue
        if not line.startswith("\t"):
            p = line.split()
            head = (int(p[1]), p[2], p[3]) if len(p) >= 4 else None
            continue
        if head is None:
            continue
        sendq, local, peer = head
        socks[(ns, local, peer)].append((t - t0, field(line, "bytes_acked"), field(line, "bytes_retrans"),
                                         field(line, "bytes_sent"), sendq, field(line, "cwnd"), field(line, "rtt")))
    rate = collections.defaultdict(lambda: collections.defaultdict(float))
    resent = collections.defaultdict(lambda: [0.0, 0.0])
    queued = collections.defaultdict(lambda: collections.defaultdict(set))
    sampled = collections.defaultdict(set)
    cw = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for (ns, _, peer), v in socks.items():
        w = [x for x in v if lo <= x[0] <= hi]
        up = int(ns.rsplit("n", 1)[1])
        if len(w) >= 2 and w[-1][0] > w[0][0]:
            rate[up][node(peer)] += (w[-1][1] - w[0][1]) * 8 / (w[-1][0] - w[0][0]) / 1e6
        if v:
            resent[up][0] += v[-1][2]
            resent[up][1] += v[-1][3]
        for x in w:
            sampled[up].add(x[0])
            if x[4] > 0:
                queued[up][node(peer)].add(x[0])
            c = cw[(up, node(peer))]
            c[0] += 1
            c[1] += x[5]
            c[2] += x[6]
    print(f"rates from each uploader, Mbit/s, {lo:g}-{hi:g} s after the first sample")
    for up in sorted(rate):
        r = rate[up]
        share = resent[up][0] / resent[up][1] if resent[up][1] else 0.0
        print(f"n{up}: sum {sum(r.values()):.1f}, retransmitted {100 * share:.1f}% |",
              " ".join(f"{d}:{r[d]:.1f}" for d in sorted(r)))
    got = collections.defaultdict(float)
    for r in rate.values():
        for d, x in r.items():
            got[d] += x
    print("received:", " ".join(f"{d}:{got[d]:.1f}" for d in sorted(got)))
    up = int(sys.argv[4]) if len(sys.argv) > 4 else max(rate, default=0)
    n = max(1, len(sampled[up]))
    print(f"at n{up}: share of {n} samples with bytes queued for each downloader (mean cwnd, RTT ms)")
    for d in sorted({p for (u, p) in cw if u == up}):
        c = cw[(up, d)]
        print(f"  {d}: {len(queued[up][d]) / n:.2f} ({c[1] / c[0]:.0f}, {c[2] / c[0]:.1f})")


if __name__ == "__main__":
    main()
