#!/usr/bin/env bash
# Two real daemons on loopback (a distributor and one cinema): time to move a 1 GiB file, in MB/s, beside
# iperf3's raw TCP figure on the same machine, plus the CPU seconds each daemon spent and the disk's
# write-with-fsync rate, and how many commits the cinema's store made (chunks written at the same time share
# one fsync per file and one metadata flush).
#
#   bash bench/transfer.sh
#
# Needs the release binary (`cargo build --release -p cinemesh`; CINEMESH overrides its path, DISTRIBUTOR_BIN
# the distributor's alone, to time two releases against each other), iperf3
# (`apt-get install -y iperf3`), curl and jq. SIZE_MIB (default 1024) and CHUNK (default 4MiB) can be set;
# DATA_ROOT (default /tmp) is where the temp dir goes: DATA_ROOT=/dev/shm puts it on tmpfs (fsync free).
# PERF_DATA=FILE records both daemons with `perf record --call-graph dwarf` during the timed transfer only
# (`perf report -i FILE --sort comm,dso,sym`). TRANSPORT=quic bootstraps the cinema to the distributor's
# QUIC address instead of its TCP one. PIN=1 pins the distributor to core 0 and the cinema to core 1
# (`taskset`; each daemon's runtime then starts one worker), as if each had a machine of its own.
# DELAY_MS=N (TCP only) puts a relay between the cinema and the distributor that holds every byte N ms each
# way (bench/delay_proxy.py: a round trip of 2N ms on a kernel without netem), times iperf3 through it too,
# and turns the cinema's AutoNAT off unless CINEMESH_CONFIG is set (a dial-back would go around the relay).
# Everything lives in a temp dir; every process started here is killed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${CINEMESH:-${CARGO_TARGET_DIR:-target}/release/cinemesh}
SIZE_MIB=${SIZE_MIB:-1024}
CHUNK=${CHUNK:-4MiB}
TIMEOUT=${TIMEOUT:-600}
for t in "$BIN" iperf3 curl jq; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
if [ -n "${PIN:-}" ]; then
    command -v taskset >/dev/null || { echo "PIN needs taskset (util-linux)" >&2; exit 1; }
    [ "$(nproc)" -ge 2 ] || { echo "PIN needs two cores, this machine has $(nproc)" >&2; exit 1; }
fi

. "$(dirname "$0")/lib.sh"
# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

echo "== iperf3 (raw TCP on loopback, 10 s)"
ip_port=$(free_port)
iperf3 -s -1 -B 127.0.0.1 -p "$ip_port" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
iperf3 -c 127.0.0.1 -p "$ip_port" -t 10 -J > "$tmp/iperf.json"
iperf_mbs=$(jq '.end.sum_received.bits_per_second / 8 / 1000000 | floor' "$tmp/iperf.json")
echo "iperf3: ${iperf_mbs} MB/s"

echo "== disk: ${SIZE_MIB} MiB written in 4 MiB blocks, fsync at the end"
dd_out=$(dd if=/dev/zero of="$tmp/dd.bin" bs=4M count=$((SIZE_MIB / 4)) conv=fsync 2>&1 | tail -1)
rm -f "$tmp/dd.bin"
echo "dd: $dd_out"

echo "== generating ${SIZE_MIB} MiB of random bytes"
mkdir -p "$tmp/src"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$tmp/src/film.bin"
bytes=$((SIZE_MIB * 1024 * 1024))

if [ -n "${DELAY_MS:-}" ]; then
    echo "== iperf3 through a relay holding every byte ${DELAY_MS} ms each way (10 s)"
    ip_port=$(free_port)
    iperf3 -s -1 -B 127.0.0.1 -p "$ip_port" >/dev/null 2>&1 &
    pids+=($!)
    wait_until 10 listening "$ip_port"
    start_relay "$ip_port"
    iperf3 -c 127.0.0.1 -p "$boot_port" -t 10 -J > "$tmp/iperf-relay.json"
    echo "iperf3 through the relay: $(jq '.end.sum_received.bits_per_second / 8 / 1000000 | floor' "$tmp/iperf-relay.json") MB/s"
fi

if [ -n "${DELAY_MS:-}" ] && [ -z "${CINEMESH_CONFIG:-}" ]; then
    # An AutoNAT dial-back from the distributor would be a second, direct connection around the relay
    # (its pings would tell the cinema a round trip of loopback's): the cinema asks for none.
    printf '[network.nat]\nautonat = false\n' > "$tmp/cinema.toml"
    CINEMESH_CONFIG=$tmp/cinema.toml
fi
start_pair

if [ "${WARM:-1}" = 1 ]; then
    # Memory the guest has not touched for a while may have gone back to the host (a VM's balloon or free
    # page reporting): the first write into it runs 5-10x slower, which would time the host, not cinemesh.
    # Reporting held off (as root), writing and deleting twice the film's size first hands the cinema's
    # page cache memory already backed. WARM=0 skips both.
    hold_page_reporting
    dd if=/dev/zero of="$tmp/warm.bin" bs=4M count=$((SIZE_MIB / 2)) 2>/dev/null
    rm -f "$tmp/warm.bin"
fi

echo "== publish (hashing in the CLI is not timed)"
id=$("$BIN" publish --key "$tmp/key" --api "$d_api" "$tmp/src/film.bin" --chunk-size "$CHUNK" 2>/dev/null)
echo "content $id"
d_cpu0=$(cpu_secs "$d_pid"); c_cpu0=$(cpu_secs "$c_pid")
start=$(date +%s.%N)
if [ -n "${PERF_DATA:-}" ]; then
    # Both daemons' samples during the timed transfer only (not the publish's import, not the check).
    perf record -F 999 --call-graph dwarf,32768 -o "$PERF_DATA" -p "$d_pid,$c_pid" >/dev/null 2>&1 &
    perf_pid=$!
fi
wait_until "$TIMEOUT" complete "$c_api" "$id"
end=$(date +%s.%N)
if [ -n "${PERF_DATA:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
d_cpu=$(echo "$(cpu_secs "$d_pid") - $d_cpu0" | bc -l); c_cpu=$(echo "$(cpu_secs "$c_pid") - $c_cpu0" | bc -l)
secs=$(echo "$end - $start" | bc -l)
mbs=$(echo "scale=0; $bytes / $secs / 1000000" | bc -l)

path=$(api_get "$c_api" /films | jq -r --arg id "$id" '.[] | select(.content_id == $id) | .path')
[ -d "$path" ] && path="$path/film.bin"   # a content is stored as a directory holding its files
if cmp -s "$path" "$tmp/src/film.bin"; then same="identical"; else same="DIFFERENT"; fi

# The cinema's store commits (one fsync per file and one metadata flush each; refreshed every second).
chunks=$(api_get "$c_api" /films | jq --arg id "$id" '.[] | select(.content_id == $id) | .chunks')
store_counts() {
    api_get "$c_api" /metrics | awk '$1 == "cinemesh_store_commits_total" { c = $2 }
        $1 == "cinemesh_store_committed_chunks_total" { k = $2 } END { print c + 0, k + 0 }'
}
all_committed() { [ "$(store_counts | cut -d' ' -f2)" -ge "$chunks" ]; }
wait_until 5 all_committed || true
read -r commits carried < <(store_counts)

echo
echo "cinemesh: ${SIZE_MIB} MiB in $(printf %.2f "$secs") s = ${mbs} MB/s (copy ${same}; chunks ${CHUNK})"
echo "iperf3 raw TCP: ${iperf_mbs} MB/s (cinemesh at $(echo "scale=1; 100 * $mbs / $iperf_mbs" | bc -l)%)"
echo "CPU during the transfer: distributor $(printf %.2f "$d_cpu") s, cinema $(printf %.2f "$c_cpu") s," \
    "together $(echo "scale=0; 100 * ($d_cpu + $c_cpu) / $secs" | bc -l)% of one core ($(nproc) cores)"
echo "disk: $dd_out"
echo "store: $carried chunks written in $commits commits"
echo "chunk bytes by link: $(api_get "$c_api" /metrics | awk '$1 ~ /^cinemesh_chunk_bytes_by_link_total/ && $2 > 0 { printf "%s %s ", $1, $2 }')"
# What the cinema's requests met: failures by reason (busy answers among them), timeouts (stalls
# included), cancels, chunks received twice.
echo "cinema's requests: $(api_get "$c_api" /metrics | awk '$1 ~ /^cinemesh_(chunk_requests_timed_out|chunk_cancels|chunks_duplicate|chunk_requests|chunk_requests_pipelined|chunks_failed)_total/ { printf "%s %s ", $1, $2 }')"
# Answers the distributor began (a chunk answer cut off by a closed connection counts too) and the
# redundant connections it closed.
echo "distributor: $(api_get "$d_api" /metrics | awk '$1 ~ /(chunks_served|duplicate_connections_closed)_total/ { printf "%s %s ", $1, $2 }')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$same" = identical ]
