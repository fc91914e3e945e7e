#!/usr/bin/env bash
# Per-connection TCP figures of a lab run: while `cinemesh-sim lab` runs, samples every node namespace's
# established TCP sockets (`ss -tin`: bytes acked, send queue, cwnd, retransmissions) about once a second,
# then prints, for each uploader, the rate each downloader got from it over a time window, and for one
# uploader (default the distributor, the lab's last node) the share of the samples in which each
# downloader had data queued there.
#
#   bash bench/lab-sockets.sh OUT_DIR [FROM_S TO_S] -- cinemesh-sim lab scenarios/lab-16.toml --seed 1 ...
#
# Root (the lab's own rule), iproute2's `ss`, python3. The samples go to OUT_DIR/sockets.txt; the lab's
# own outputs to wherever its --out says. Bounded: at most 600 samples, ends with the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1; shift
FROM=10; TO=70
if [ "${1:-}" != "--" ]; then FROM=$1; TO=$2; shift 2; fi
[ "${1:-}" = "--" ] || { echo "usage: $0 OUT_DIR [FROM_S TO_S] -- LAB COMMAND..." >&2; exit 2; }
shift
command -v ss >/dev/null || { echo "missing: ss (iproute2)" >&2; exit 1; }
mkdir -p "$OUT"
S="$OUT/sockets.txt"
: > "$S"
"$@" &
LAB=$!
trap 'kill $LAB 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    kill -0 $LAB 2>/dev/null || break
    t=$(date +%s.%N)
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^cml-n[0-9]+$' || true); do
        echo "@ $t $ns" >> "$S"
        ip netns exec "$ns" ss -tinH state established >> "$S" 2>/dev/null || true
    done
    sleep 0.5
done
wait $LAB || echo "the lab exited with $?" >&2
trap - EXIT
python3 bench/lab_sockets.py "$S" "$FROM" "$TO"
