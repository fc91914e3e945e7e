# Shared by the bench scripts (source it): a temp dir removed on exit, the processes started (append their
# pids to `pids`) killed on exit, a free loopback port, and a bounded wait on a condition. LOGS=DIR keeps
# the daemons' logs (the temp dir's *.log) in DIR.

tmp=$(mktemp -d "${DATA_ROOT:-/tmp}/cinemesh-bench-XXXXXX")
pids=()
reporting_param=/sys/module/page_reporting/parameters/page_reporting_order
reporting_was=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$tmp"/*.log "$LOGS"/ 2>/dev/null || true; fi
    rm -rf "$tmp"
    if [ -n "$reporting_was" ]; then echo "$reporting_was" > "$reporting_param" || true; fi
}
trap cleanup EXIT INT TERM

# A VM with free page reporting hands free memory back to its host, and the first write into it faults on
# the host, several times slower (docs/benchmarks.md, "The lab measured its VM's page faults"). As root,
# holds reporting off until exit: the largest order the kernel accepts, above any free block. Says what it
# did; does nothing without page reporting or root.
hold_page_reporting() {
    [ -w "$reporting_param" ] || return 0
    local was o
    was=$(cat "$reporting_param")
    for o in $(seq 20 -1 $((was + 1))); do
        if echo "$o" > "$reporting_param" 2>/dev/null; then
            reporting_was=$was
            echo "free page reporting held off (page_reporting_order $was -> $o, restored on exit)"
            return 0
        fi
    done
}

# A TCP port nobody listens on (random, checked with ss; at most 100 tries).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 30000))
        ss -ltn | awk '{print $4}' | grep -q ":$p\$" || { echo "$p"; return 0; }
    done
    echo "no free port found" >&2
    return 1
}

# A field of /proc/PID/status in MiB (VmRSS, VmHWM).
mem() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Waits until `$2...` succeeds, at most $1 seconds.
wait_until() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || { echo "timed out after ${limit}s waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}

# The daemon's HTTP API: GET a path; is content $2 complete on the node at $1; has the node at $1 a peer.
api_get() { curl -sf "http://$1$2"; }
complete() { api_get "$1" /films | jq -e --arg id "$2" 'any(.[]; .content_id == $id and .complete)'; }
has_peer() { [ "$(api_get "$1" /status | jq .peers)" -ge 1 ]; }

# Starts a distributor and a cinema daemon ($BIN; DISTRIBUTOR_BIN, if set, for the distributor: two
# releases side by side) on loopback, the cinema bootstrapped to the distributor, and waits until they are
# connected. Sets: pub (the distributor key, file $tmp/key), d_api, c_api, d_pid,
# c_pid; logs in $tmp/d.log and $tmp/c.log.
start_pair() {
    pub=$("$BIN" keygen --out "$tmp/key" 2>/dev/null)
    local d_port d_peer
    d_port=$(free_port); d_api=127.0.0.1:$(free_port); c_api=127.0.0.1:$(free_port)
    ${PIN:+taskset -c 0} "${DISTRIBUTOR_BIN:-$BIN}" run --data-dir "$tmp/d" --listen "/ip4/127.0.0.1/tcp/$d_port" --api "$d_api" --no-mdns --open \
        --role distributor --trust "$pub" 2> "$tmp/d.log" &
    d_pid=$!; pids+=("$d_pid")
    wait_until 20 api_get "$d_api" /status
    d_peer=$(api_get "$d_api" /status | jq -r .peer_id)
    start_relay "$d_port"
    # CINEMESH_CONFIG: a configuration file for the cinema (e.g. to compare transfer settings).
    ${PIN:+taskset -c 1} "$BIN" run ${CINEMESH_CONFIG:+--config "$CINEMESH_CONFIG"} --data-dir "$tmp/c" --listen /ip4/127.0.0.1/tcp/0 \
        --api "$c_api" --no-mdns --open --trust "$pub" --bootstrap "$(boot_addr "$boot_port")/p2p/$d_peer" 2> "$tmp/c.log" &
    c_pid=$!; pids+=("$c_pid")
    wait_until 20 api_get "$c_api" /status
    wait_until 30 has_peer "$c_api"
}

# Sets boot_port, the port the cinema dials for the distributor's port $1: that port, or with DELAY_MS set
# (TCP only) a relay's (bench/delay_proxy.py, started here) that holds every byte DELAY_MS each way.
start_relay() {
    boot_port=$1
    [ -n "${DELAY_MS:-}" ] || return 0
    [ "${TRANSPORT:-tcp}" = tcp ] || { echo "DELAY_MS needs TRANSPORT=tcp" >&2; return 1; }
    boot_port=$(free_port)
    python3 "$(dirname "${BASH_SOURCE[0]}")/delay_proxy.py" "$boot_port" "$1" "$DELAY_MS" &
    pids+=($!)
    wait_until 10 listening "$boot_port"
}

# Is anything listening on loopback TCP port $1?
listening() { ss -ltnH "sport = :$1" | grep -q .; }

# The distributor's address the cinema bootstraps to: TCP, or its QUIC twin on the same port with
# TRANSPORT=quic.
boot_addr() {
    if [ "${TRANSPORT:-tcp}" = quic ]; then echo "/ip4/127.0.0.1/udp/$1/quic-v1"; else echo "/ip4/127.0.0.1/tcp/$1"; fi
}
