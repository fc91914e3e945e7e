#!/usr/bin/env bash
# Resident memory of real daemons on loopback (a distributor and one cinema), from /proc/PID/status:
#   1. just started and connected, empty catalogue;
#   2. idle with a 300-entry catalogue (300 published files of 1 KiB, all fetched by the cinema);
#   3. while moving a 1 GiB content (VmRSS sampled every 0.5 s, and VmHWM = peak since start).
#
#   bash bench/memory.sh
#
# Needs the release binary (CINEMESH overrides its path), curl and jq. ENTRIES (default 300) and
# SIZE_MIB (default 1024) can be set. Temp dirs; every process started here is killed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${CINEMESH:-${CARGO_TARGET_DIR:-target}/release/cinemesh}
ENTRIES=${ENTRIES:-300}
SIZE_MIB=${SIZE_MIB:-1024}
for t in "$BIN" curl jq; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done

. "$(dirname "$0")/lib.sh"
all_complete() {
    api_get "$1" /films | jq -e --argjson n "$2" '(map(select(.complete)) | length) >= $n'
}

start_pair
sleep 3
echo "| state | cinema VmRSS | cinema VmHWM | distributor VmRSS | distributor VmHWM |"
echo "| --- | ---: | ---: | ---: | ---: |"
row() {
    echo "| $1 | $(mem "$c_pid" VmRSS) MiB | $(mem "$c_pid" VmHWM) MiB | $(mem "$d_pid" VmRSS) MiB |" \
        "$(mem "$d_pid" VmHWM) MiB |"
}
row "started, connected, empty catalogue"

mkdir -p "$tmp/small"
t0=$SECONDS
for i in $(seq -w 1 "$ENTRIES"); do
    mkdir -p "$tmp/small/$i"
    head -c 1024 /dev/urandom > "$tmp/small/$i/trailer-$i.bin"
    "$BIN" publish --key "$tmp/key" --api "$d_api" "$tmp/small/$i/trailer-$i.bin" --title "trailer $i" \
        >/dev/null 2>"$tmp/publish.err" || { echo "publish $i failed:" >&2; cat "$tmp/publish.err" >&2; exit 1; }
done
t_pub=$((SECONDS - t0))
wait_until 600 all_complete "$c_api" "$ENTRIES"
t_all=$((SECONDS - t0))
sleep 10
n=$(api_get "$c_api" /status | jq .films)
row "idle, ${n}-entry catalogue, all fetched (10 s after the last)"

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$tmp/big.bin"
id=$("$BIN" publish --key "$tmp/key" --api "$d_api" "$tmp/big.bin" 2>/dev/null)
c_max=0; d_max=0; samples=0
end=$((SECONDS + 900))
until complete "$c_api" "$id" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { echo "the ${SIZE_MIB} MiB transfer did not finish in 900 s" >&2; exit 1; }
    c=$(mem "$c_pid" VmRSS); d=$(mem "$d_pid" VmRSS)
    c_max=$(echo "if ($c > $c_max) $c else $c_max" | bc -l); d_max=$(echo "if ($d > $d_max) $d else $d_max" | bc -l)
    samples=$((samples + 1))
    sleep 0.5
done
echo "| moving ${SIZE_MIB} MiB: highest VmRSS of $samples samples | ${c_max} MiB | | ${d_max} MiB | |"
row "just after the ${SIZE_MIB} MiB transfer"
sleep 10
row "10 s later, idle"
echo
echo "${ENTRIES} publishes took ${t_pub} s; the cinema held all ${ENTRIES} after ${t_all} s." \
    "Load average: $(cut -d' ' -f1-3 /proc/loadavg)."
