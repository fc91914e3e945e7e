# Shared by the bench scripts (source it): a temp dir removed on exit, the processes started (append their
# pids to `pids`) killed on exit, a free loopback port, and a bounded wait on a condition.

tmp=$(mktemp -d "${DATA_ROOT:-/tmp}/cinemesh-bench-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

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
