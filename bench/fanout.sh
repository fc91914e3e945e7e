#!/usr/bin/env bash
# One seeder to 8 cinemas on loopback with `cinemesh demo` (all nine nodes in one process): time, the
# Kumar-Ross bound with every upload limited to the given rate, the efficiency, and the CPU the process
# used (from /usr/bin/time -v) to tell when the run is CPU-bound rather than rate-bound.
#
#   bash bench/fanout.sh
#   RUNS="256MiB@20MB/s@1MiB 1GiB@10GB/s" NODES=8 bash bench/fanout.sh
#
# Each word of RUNS is SIZE@RATE[@CHUNK] (CHUNK defaults to $CHUNK, 4MiB). The rate-limited defaults use
# 1 MiB chunks: with a rate limit and 2 or 4 MiB chunks the demo fails its byte-for-byte check (see
# docs/benchmarks.md, "Node transfers"). A rate of 10GB/s is effectively unlimited: the bound is then
# meaningless and the useful figure is the aggregate rate, NODES x SIZE / time.
# Needs the release binary (CINEMESH overrides its path) and GNU time (/usr/bin/time).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${CINEMESH:-${CARGO_TARGET_DIR:-target}/release/cinemesh}
NODES=${NODES:-8}
CHUNK=${CHUNK:-4MiB}
RUNS=${RUNS:-"256MiB@10MB/s@1MiB 256MiB@20MB/s@1MiB 1GiB@10GB/s@4MiB"}
TIMEOUT=${TIMEOUT:-15m}
for t in "$BIN" /usr/bin/time pgrep bc; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/cinemesh-bench-XXXXXX)
pid=""; demo_pid=""
cleanup() {
    # The demo (child of /usr/bin/time) first: it is the one holding the nodes.
    if [ -n "$pid" ]; then
        [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null; }
to_bytes() {
    echo "$1" | awk '/GiB$/ { sub(/GiB/, ""); print $0 * 1073741824; next }
                     /MiB$/ { sub(/MiB/, ""); print $0 * 1048576; next } { print $0 }'
}
deadline_s=1500

printf '| size | chunk | rate per upload | time (s) | bound (s) | efficiency | aggregate MB/s | CPU during distribution | whole run: CPU s, %% of a core, max RSS |\n'
printf '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n'
for run in $RUNS; do
    IFS=@ read -r size rate chunk <<< "$run"
    chunk=${chunk:-$CHUNK}
    : > "$tmp/samples.txt"
    TMPDIR=$tmp /usr/bin/time -v -o "$tmp/time.txt" "$BIN" demo --nodes "$NODES" --size "$size" \
        --rate "$rate" --chunk-size "$chunk" --timeout "$TIMEOUT" > "$tmp/out.txt" 2> "$tmp/err.txt" &
    pid=$!
    # Sample the demo process's CPU every 0.5 s, noting when it has printed its "film" line (the film is
    # generated and hashed; the nodes start and the publish follows at once).
    sleep 0.2
    demo_pid=$(pgrep -P "$pid" | head -1 || true)
    end=$((SECONDS + deadline_s))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || { echo "run $run exceeded ${deadline_s}s" >&2; exit 1; }
        c=$(cpu_secs "$demo_pid" || true)
        [ -n "$c" ] && echo "$(date +%s.%N) $c $(grep -c '^film ' "$tmp/out.txt" || true)" >> "$tmp/samples.txt"
        sleep 0.5
    done
    if ! wait "$pid"; then
        pid=""
        echo "demo failed for $run:" >&2; cat "$tmp/out.txt" "$tmp/err.txt" >&2; exit 1
    fi
    pid=""
    t=$(awk '/^time /{print $2}' "$tmp/out.txt")
    bound=$(awk '/^Kumar-Ross bound/{print $3}' "$tmp/out.txt")
    eff=$(awk '/^efficiency/{print $2}' "$tmp/out.txt")
    agg=$(echo "scale=0; $NODES * $(to_bytes "$size") / $t / 1000000" | bc -l)
    # CPU used in [first sample after the film line, that + time]: an approximation of the distribution.
    dist_pct=$(awk -v T="$t" '
        $3 > 0 && !t0 { t0 = $1; c0 = $2 }
        t0 && $1 <= t0 + T { t1 = $1; c1 = $2 }
        END { if (t1 > t0) printf "%.0f%%", 100 * (c1 - c0) / (t1 - t0); else print "?" }' "$tmp/samples.txt")
    user=$(awk -F': ' '/User time/{print $2}' "$tmp/time.txt")
    sys=$(awk -F': ' '/System time/{print $2}' "$tmp/time.txt")
    pct=$(awk -F': ' '/Percent of CPU/{print $2}' "$tmp/time.txt")
    rss=$(awk -F': ' '/Maximum resident/{printf "%d", $2 / 1024}' "$tmp/time.txt")
    if [ "$rate" = 10GB/s ]; then bound="-"; eff="- (unlimited)"; fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %.1f s, %s, %s MiB |\n' "$size" "$chunk" "$rate" "$t" "$bound" "$eff" \
        "$agg" "$dist_pct" "$(echo "$user + $sys" | bc -l)" "$pct" "$rss"
done
echo
echo "$(nproc) cores (200% = both cores busy); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Whole run includes generating the film, hashing it, and re-hashing the ${NODES} copies byte for byte."
