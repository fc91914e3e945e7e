# Shared by the bench scripts that build network namespaces (source it): the checks they need, links shaped
# as the lab shapes them, and waiting for an iperf3 server.

# Root, iperf3, and congestion control $1 allowed inside namespaces; exits with the reason otherwise.
netns_preflight() {
    [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, tc)" >&2; exit 1; }
    command -v iperf3 > /dev/null || { echo "needs iperf3 (apt-get install -y iperf3)" >&2; exit 1; }
    grep -qw "$1" /proc/sys/net/ipv4/tcp_allowed_congestion_control || {
        echo "congestion control $1 is not allowed in namespaces: add it to /proc/sys/net/ipv4/tcp_allowed_congestion_control" >&2
        exit 1
    }
}

# Shapes device $2 of namespace $1 to $3 bit/s as the lab does (`simulator/src/lab/net.rs`): tbf, a burst of
# 4 ms at the rate (at least 4 KiB), a 50 ms queue.
shape_tbf() {
    local b=$(($3 / 8 * 4 / 1000))
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "${3}bit" burst $((b < 4096 ? 4096 : b)) latency 50ms
}

# Waits (up to 5 s) until namespace $1 listens on TCP port $2.
wait_listening() {
    for _ in $(seq 50); do
        ip netns exec "$1" ss -ltn | grep -q ":$2 " && return 0
        sleep 0.1
    done
    echo "nothing listens on port $2 in $1 after 5 s" >&2
    exit 1
}
