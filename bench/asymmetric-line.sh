#!/usr/bin/env bash
# An asymmetric line shaped as the lab shapes it (tbf: bursts of 4 ms at the rate, at least 4 KiB, a 50 ms
# queue): does a saturated uplink slow the line's own download (its ACKs queued behind upload data)?
# Prints the download alone and beside an upload filling the uplink, in Mbit/s, RUNS times.
#
#   sudo bash bench/asymmetric-line.sh
#
# UP and DOWN (bit/s, default 1000000 and 15000000: the ADSL class), FLOWS (parallel TCP flows each way,
# default 1), CC (congestion control, default cubic: the lab's; it must be in
# /proc/sys/net/ipv4/tcp_allowed_congestion_control), SECS (default 15), RUNS (default 3). Needs root,
# iproute2, iperf3 and python3. Two network namespaces (`asym-a`, `asym-b`) joined by a veth are created and
# removed on exit, with every process in them.
set -euo pipefail

UP=${UP:-1000000}
DOWN=${DOWN:-15000000}
FLOWS=${FLOWS:-1}
CC=${CC:-cubic}
SECS=${SECS:-15}
RUNS=${RUNS:-3}
A=asym-a
B=asym-b

# shellcheck source=bench/netns-lib.sh
. "$(dirname "$0")/netns-lib.sh"
netns_preflight "$CC"

cleanup() {
    for ns in $A $B; do
        ip netns pids $ns 2> /dev/null | xargs -r kill 2> /dev/null || true
        ip netns del $ns 2> /dev/null || true
    done
}
trap cleanup EXIT
cleanup

ip netns add $A
ip netns add $B
ip link add ea netns $A type veth peer name eb netns $B
ip -n $A addr add 10.77.0.1/24 dev ea
ip -n $B addr add 10.77.0.2/24 dev eb
for ns in $A $B; do
    ip -n $ns link set lo up
    ip netns exec $ns sysctl -qw net.ipv4.tcp_congestion_control="$CC"
done
ip -n $A link set ea up
ip -n $B link set eb up
shape_tbf $A ea "$UP"
shape_tbf $B eb "$DOWN"
ip netns exec $B iperf3 -s -p 5201 -D
ip netns exec $B iperf3 -s -p 5202 -D
# iperf3 -D returns before the servers listen.
wait_listening $B 5201
wait_listening $B 5202

mbit() { python3 -c "import json,sys; print('%.2f' % (json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e6))"; }
echo "line ${UP}/${DOWN} bit/s, $FLOWS flow(s) each way, $CC"
for run in $(seq "$RUNS"); do
    alone=$(ip netns exec $A iperf3 -c 10.77.0.2 -p 5201 -R -t "$SECS" -P "$FLOWS" -J | mbit)
    ip netns exec $A iperf3 -c 10.77.0.2 -p 5202 -t $((SECS + 4)) -P "$FLOWS" -J > "/tmp/asym-up-$$.json" &
    up=$!
    sleep 2
    beside=$(ip netns exec $A iperf3 -c 10.77.0.2 -p 5201 -R -t "$SECS" -P "$FLOWS" -J | mbit)
    wait $up
    upload=$(mbit < "/tmp/asym-up-$$.json")
    rm -f "/tmp/asym-up-$$.json"
    echo "run $run: download alone $alone Mbit/s; beside the upload $beside Mbit/s (upload $upload Mbit/s)"
done
