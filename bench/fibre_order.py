#!/usr/bin/env python3
"""What an order of the fleet's fibre cinemas could give, fed by the upload a run had.

    python3 bench/fibre_order.py OUT FILM_BYTES [UTILISATION ...]

OUT is a `cinemesh-sim run` output directory (`nodes.csv`, `timeline.csv`). Keeps every other cinema's
completion as the run had it, and feeds the fibre cinemas online from the start, in a fluid model, the
fleet's upload capacity times UTILISATION less what the other classes received in each 10 s bin of the
run's timeline, each fibre cinema at most its downlink times the wire's payload share (0.9564), in three
orders: fastest downlink first, slowest first, and fastest first with the 34 fastest served last. Prints
the point slowdown p50 / p90 / max of each (the same yardstick as `cdf_bound.py`), beside the run's own.
Default UTILISATION: 0.90 (the fleet's payload utilisation while its fibre cinemas fetch) and 0.9564 (every
link full of payload).
"""
import csv
import sys

SHARE = 0.9564


def main():
    out, film = sys.argv[1], float(sys.argv[2]) * 8
    utils = [float(u) for u in sys.argv[3:]] or [0.90, SHARE]
    rows = list(csv.DictReader(open(out + "/nodes.csv")))
    seeders = [r for r in rows if r["seeder"] == "true"]
    cinemas = [r for r in rows if r["seeder"] != "true"]
    us = sum(float(r["up_mbit"]) * 1e6 for r in seeders)
    total = us + sum(float(r["up_mbit"]) * 1e6 for r in cinemas)
    timeline = list(csv.DictReader(open(out + "/timeline.csv")))
    fibre = [r for r in cinemas if r["class"] == "fibre" and float(r["online_s"]) == 0]
    own = lambda r: float(r["complete_s"]) - float(r["online_s"])
    others = [own(r) for r in cinemas if r not in fibre]
    fd = sorted(film / (float(r["down_mbit"]) * 1e6) for r in cinemas)

    def slowdown(times):
        t = sorted(times)
        s = sorted(t[k] / max(film / us, fd[k], (k + 1) * film / total) for k in range(len(t)))
        n = len(s)
        return "p50 %.2f p90 %.2f max %.2f" % (s[n // 2], s[int(0.9 * n)], s[-1])

    def fluid(order, util):
        left, done = [film] * len(order), [None] * len(order)
        for row in timeline:
            t, dt = float(row["t_s"]), 10.0
            rate = util * total - sum(float(row[k + "_down_mbit_s"]) for k in ("adsl", "business", "vdsl")) * 1e6
            for j, d in enumerate(order):
                if done[j] is not None:
                    continue
                g = min(rate, d)
                if g <= 0:
                    break
                if left[j] <= g * dt:
                    done[j] = t + left[j] / g
                    rate -= left[j] / dt
                    left[j] = 0
                else:
                    left[j] -= g * dt
                    rate -= g
            if all(x is not None for x in done):
                break
        if any(x is None for x in done):
            return "not done within the run's timeline"
        return slowdown(others + done)

    print("the run itself:", slowdown(others + [own(r) for r in fibre]))
    fastest = sorted((float(r["down_mbit"]) * 1e6 * SHARE for r in fibre), reverse=True)
    for util in utils:
        for name, order in (
            ("fastest first", fastest),
            ("slowest first", fastest[::-1]),
            ("fastest first, the 34 fastest last", fastest[34:] + fastest[:34]),
        ):
            print("utilisation %.4f, %s: %s" % (util, name, fluid(order, util)))


if __name__ == "__main__":
    main()
