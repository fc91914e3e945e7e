#!/usr/bin/env python3
"""What any schedule could reach on a run's topology: the completion-CDF bound taken jointly.

usage: joint_bound.py OUT_DIR FILM_BYTES [SHARE]

The point bound B(k) (issue 10; shared/tools/cdf_bound.py) bounds each point of the completion CDF on its
own: B(k) = max(F/u_s, k-th smallest F/d_i, k F/(u_s + sum of u_i)). The points are not reachable together:
the cinemas bounded by their own downlink need that downlink while the fast ones share the uplinks. This
script takes the topology of a run (OUT_DIR/nodes.csv: seeder, up_mbit, down_mbit, online_s) and a fluid
model that is generous to the schedule (every byte may go from any uplink to any downlink, a cinema's
uplink is usable in full from the second it comes online, as if it already held what the others lack),
and prints:

- `joint_max`: the smallest r such that some schedule finishes every cinema within r x its own point
  (cinema i, i-th by ascending F/d_i, against B(i)), found by bisection on a max-flow over the intervals
  between the deadlines (exact in the model, to 0.1%);
- `fastest_first`: the point slowdowns p50 / p90 / max of one such schedule, the whole upload given to the
  incomplete cinemas with the fastest downlinks first, each at most its downlink (0.5 s steps).

SHARE (default 1.0) scales every link to the payload it can carry: 0.9564 is the simulator's
`sim.payload_share` (a 1448-byte TCP segment in a 1514-byte frame). Pure Python; 350 cinemas take a few
seconds.
"""
import csv
import sys
from collections import deque


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, F = sys.argv[1], float(sys.argv[2]) * 8
    share = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    rows = list(csv.DictReader(open(out + '/nodes.csv')))
    seeders = [r for r in rows if r['seeder'] in ('true', '1', 'True')]
    cinemas = [r for r in rows if r['seeder'] not in ('true', '1', 'True')]
    n = len(cinemas)
    us = sum(float(r['up_mbit']) * 1e6 for r in seeders)
    d = [float(r['down_mbit']) * 1e6 for r in cinemas]
    u = [float(r['up_mbit']) * 1e6 for r in cinemas]
    on = [float(r.get('online_s') or 0.0) for r in cinemas]
    total_up = us + sum(u)
    own = sorted(F / x for x in d)
    bound = [max(F / us, own[k], (k + 1) * F / total_up) for k in range(n)]
    rank = sorted(range(n), key=lambda i: F / d[i])
    b_of = [0.0] * n
    for k, i in enumerate(rank):
        b_of[i] = bound[k]

    def capacity(t):
        return (us + sum(u[i] for i in range(n) if on[i] <= t)) * share

    def feasible(r):
        deadline = [on[i] + r * b_of[i] for i in range(n)]
        ts = sorted(set([0.0] + deadline + on))
        m = len(ts) - 1
        g = Flow(2 + n + m)
        for i in range(n):
            g.add(0, 2 + i, F / 1e6)
        for j in range(m):
            a, b = ts[j], ts[j + 1]
            g.add(2 + n + j, 1, capacity(a) * (b - a) / 1e6)
            for i in range(n):
                if a >= on[i] and b <= deadline[i] + 1e-9:
                    g.add(2 + i, 2 + n + j, d[i] * share * (b - a) / 1e6)
        return g.max_flow(0, 1) >= n * F / 1e6 * (1 - 1e-7)

    lo, hi = 1.0, 2.0
    while not feasible(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3 * lo:
        mid = (lo + hi) / 2
        if feasible(mid):
            hi = mid
        else:
            lo = mid

    # One schedule: fastest downlinks first.
    left, done, t, dt = [F] * n, [None] * n, 0.0, 0.5
    order = sorted(range(n), key=lambda i: -d[i])
    while any(x is None for x in done) and t < 1e7:
        spare = capacity(t)
        for i in order:
            if on[i] <= t and done[i] is None and spare > 0:
                rate = min(d[i] * share, spare)
                spare -= rate
                left[i] -= rate * dt
                if left[i] <= 0:
                    done[i] = t + dt - on[i]
        t += dt
    slow = sorted(x / b for x, b in zip(sorted(done), bound))
    print('joint_max %.3f fastest_first %.2f %.2f %.2f share %.4f cinemas %d'
          % (hi, slow[n // 2], slow[int(n * 0.9)], slow[-1], share, n))


class Flow:
    """Dinic's max-flow on float capacities."""

    def __init__(self, nodes):
        self.g = [[] for _ in range(nodes)]

    def add(self, a, b, cap):
        self.g[a].append([b, cap, len(self.g[b])])
        self.g[b].append([a, 0.0, len(self.g[a]) - 1])

    def max_flow(self, src, sink):
        total, eps = 0.0, 1e-9
        while True:
            level = [-1] * len(self.g)
            level[src] = 0
            q = deque([src])
            while q:
                v = q.popleft()
                for to, cap, _ in self.g[v]:
                    if cap > eps and level[to] < 0:
                        level[to] = level[v] + 1
                        q.append(to)
            if level[sink] < 0:
                return total
            it = [0] * len(self.g)

            def push(v, f):
                if v == sink:
                    return f
                while it[v] < len(self.g[v]):
                    e = self.g[v][it[v]]
                    if e[1] > eps and level[e[0]] == level[v] + 1:
                        got = push(e[0], min(f, e[1]))
                        if got > 0:
                            e[1] -= got
                            self.g[e[0]][e[2]][1] += got
                            return got
                    it[v] += 1
                return 0.0

            while True:
                f = push(src, float('inf'))
                if f <= 0:
                    break
                total += f


if __name__ == '__main__':
    main()
