#!/usr/bin/env bash
# TCP flows to an ADSL line and to a fibre line through one shared ISP border, shaped as the lab shapes
# links (tbf: bursts of 4 ms at the rate, at least 4 KiB, a 50 ms queue): what each line gets, against the
# simulator's per-flow max-min share (`simulator/src/bandwidth.rs`).
#
#   sudo bash bench/shared-border.sh
#
# BORDER, ADSL, FIBRE (bit/s; defaults 40, 15 and 300 Mbit/s, lab-hetero's), ADSL_UP and FIBRE_UP (the
# lines' uploads, which carry their ACKs; defaults 1 and 100 Mbit/s), FLOWS_ADSL and FLOWS_FIBRE
# (parallel flows from the sender to each line; default 4 and 4), CC (default cubic; it must be in
# /proc/sys/net/ipv4/tcp_allowed_congestion_control), SECS (default 15), BORDER_AT (`router`, the default:
# the border is shaped in a namespace that only forwards, as the lab shapes it; `sender`: on the sender's
# own interface, where its TCP stack sees the queue and holds back instead of losing packets, as this
# script did before 2026-12-05). Needs root, iproute2, iperf3 and python3. Five namespaces (`bx-s` the
# sender, `bx-b` the border router, `bx-r` the ISP's bridge, `bx-a`, `bx-f` the lines) are created and
# removed on exit, with every process in them.
set -euo pipefail

BORDER=${BORDER:-40000000}
ADSL=${ADSL:-15000000}
FIBRE=${FIBRE:-300000000}
ADSL_UP=${ADSL_UP:-1000000}
FIBRE_UP=${FIBRE_UP:-100000000}
FLOWS_ADSL=${FLOWS_ADSL:-4}
FLOWS_FIBRE=${FLOWS_FIBRE:-4}
CC=${CC:-cubic}
SECS=${SECS:-15}
BORDER_AT=${BORDER_AT:-router}
NS="bx-s bx-b bx-r bx-a bx-f"

# shellcheck source=bench/netns-lib.sh
. "$(dirname "$0")/netns-lib.sh"
netns_preflight "$CC"

cleanup() {
    for ns in $NS; do
        ip netns pids "$ns" 2> /dev/null | xargs -r kill 2> /dev/null || true
        ip netns del "$ns" 2> /dev/null || true
    done
    rm -f "/tmp/bx-a-$$.json" "/tmp/bx-f-$$.json"
}
trap cleanup EXIT
cleanup

for ns in $NS; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$CC"
done
for ns in bx-b bx-r; do
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" link set br0 up
done
# The sender reaches the ISP through the border router bx-b, as the lab's nodes reach another ISP through
# the core namespace.
ip link add e0 netns bx-s type veth peer name q1 netns bx-b
ip link add q2 netns bx-b type veth peer name p1 netns bx-r
ip -n bx-b link set q1 master br0 up
ip -n bx-b link set q2 master br0 up
ip -n bx-r link set p1 master br0 up
ip -n bx-s link set e0 up
ip -n bx-s addr add 10.78.0.1/24 dev e0
i=2
for ns in bx-a bx-f; do
    ip link add e0 netns "$ns" type veth peer name "p$i" netns bx-r
    ip -n bx-r link set "p$i" master br0 up
    ip -n "$ns" link set e0 up
    ip -n "$ns" addr add "10.78.0.$i/24" dev e0
    i=$((i + 1))
done
if [ "$BORDER_AT" = sender ]; then
    shape_tbf bx-s e0 "$BORDER"  # the border on the sender's own interface (its TCP stack feels the queue)
else
    shape_tbf bx-b q2 "$BORDER"  # the border, into the ISP, in a router that only forwards
fi
shape_tbf bx-r p2 "$ADSL"        # the ADSL line's download
shape_tbf bx-r p3 "$FIBRE"       # the fibre line's download
shape_tbf bx-a e0 "$ADSL_UP"     # their uploads (the ACKs)
shape_tbf bx-f e0 "$FIBRE_UP"
for ns in bx-a bx-f; do
    ip netns exec "$ns" iperf3 -s -D
    wait_listening "$ns" 5201
done

ip netns exec bx-s iperf3 -c 10.78.0.2 -P "$FLOWS_ADSL" -t "$SECS" -J > "/tmp/bx-a-$$.json" &
ip netns exec bx-s iperf3 -c 10.78.0.3 -P "$FLOWS_FIBRE" -t "$SECS" -J > "/tmp/bx-f-$$.json" &
wait
mbit() { python3 -c "import json,sys; print('%.2f' % (json.load(open(sys.argv[1]))['end']['sum_received']['bits_per_second']/1e6))" "$1"; }
python3 - "$BORDER" "$ADSL" "$FIBRE" "$FLOWS_ADSL" "$FLOWS_FIBRE" "$(mbit "/tmp/bx-a-$$.json")" "$(mbit "/tmp/bx-f-$$.json")" << 'EOF'
import sys
border, adsl, fibre = (float(x) / 1e6 for x in sys.argv[1:4])
na, nf = int(sys.argv[4]), int(sys.argv[5])
got_a, got_f = float(sys.argv[6]), float(sys.argv[7])
# Per-flow max-min by progressive filling: every flow grows alike until a link fills.
share = border / (na + nf)
if na * share > adsl:
    mm_a, mm_f = adsl, min(fibre, border - adsl)
else:
    mm_a, mm_f = na * share, min(fibre, border - na * share)
print(f"border {border:.0f}, ADSL {adsl:.0f} ({na} flows), fibre {fibre:.0f} ({nf} flows), Mbit/s")
print(f"ADSL  got {got_a:6.2f}  per-flow max-min {mm_a:6.2f}")
print(f"fibre got {got_f:6.2f}  per-flow max-min {mm_f:6.2f}")
EOF
