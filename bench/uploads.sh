#!/usr/bin/env bash
# Resident memory of a superseeder serving 64 uploads at once, real daemons on loopback:
#   1. a distributor publishes a SIZE_MIB content (default 1024) and a superseeder fetches it whole;
#   2. the distributor stops, so the superseeder is the only source;
#   3. CINEMAS cinemas (default 8) start, each asking up to REQUESTS chunks (default 8) of one peer at once:
#      64 requests reach the superseeder, which has 64 upload slots (open to every asker) and an upload
#      limit (LIMIT, default 400Mbit/s), so its slots stay taken while the cinemas fetch.
# The superseeder's VmRSS and its `uploads_active` gauge are sampled every 0.2 s until every cinema holds
# the content; VmHWM is the kernel's peak since start.
#
#   bash bench/uploads.sh
#
# Needs the release binary (CINEMESH overrides its path), curl and jq. Temp dirs; every process started
# here is killed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${CINEMESH:-${CARGO_TARGET_DIR:-target}/release/cinemesh}
SIZE_MIB=${SIZE_MIB:-1024}
CINEMAS=${CINEMAS:-8}
REQUESTS=${REQUESTS:-8}
LIMIT=${LIMIT:-400Mbit/s}
for t in "$BIN" curl jq bc; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done

. "$(dirname "$0")/lib.sh"
gauge() { api_get "$1" /metrics | awk -v m="$2" '$1 ~ m && !v { v = $2 } END { print v }'; }

pub=$("$BIN" keygen --out "$tmp/key" 2>/dev/null)
cat > "$tmp/superseeder.toml" <<EOF
[transfer]
upload_slots = 64
open_slots = 1.0
upload_limit = "$LIMIT"
EOF
cat > "$tmp/cinema.toml" <<EOF
[transfer]
max_requests_per_peer = $REQUESTS
max_requests_total = $REQUESTS
min_requests_total = $REQUESTS
EOF

d_port=$(free_port); d_api=127.0.0.1:$(free_port)
"$BIN" run --data-dir "$tmp/d" --listen "/ip4/127.0.0.1/tcp/$d_port" --api "$d_api" --no-mdns --open \
    --role distributor --trust "$pub" 2> "$tmp/d.log" &
d_pid=$!; pids+=("$d_pid")
wait_until 20 api_get "$d_api" /status
d_peer=$(api_get "$d_api" /status | jq -r .peer_id)

s_port=$(free_port); s_api=127.0.0.1:$(free_port)
"$BIN" run --config "$tmp/superseeder.toml" --data-dir "$tmp/s" --listen "/ip4/127.0.0.1/tcp/$s_port" \
    --api "$s_api" --no-mdns --open --role superseeder --trust "$pub" \
    --bootstrap "/ip4/127.0.0.1/tcp/$d_port/p2p/$d_peer" 2> "$tmp/s.log" &
s_pid=$!; pids+=("$s_pid")
wait_until 20 api_get "$s_api" /status
wait_until 30 has_peer "$s_api"
s_peer=$(api_get "$s_api" /status | jq -r .peer_id)

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$tmp/film.bin"
id=$("$BIN" publish --key "$tmp/key" --api "$d_api" "$tmp/film.bin" 2>/dev/null)
wait_until 600 complete "$s_api" "$id"
kill "$d_pid"; wait "$d_pid" 2>/dev/null || true
rm -f "$tmp/film.bin"
echo "superseeder holds the ${SIZE_MIB} MiB content: VmRSS $(mem "$s_pid" VmRSS) MiB, VmHWM $(mem "$s_pid" VmHWM) MiB"

c_apis=()
for i in $(seq "$CINEMAS"); do
    api=127.0.0.1:$(free_port)
    "$BIN" run --config "$tmp/cinema.toml" --data-dir "$tmp/c$i" --listen /ip4/127.0.0.1/tcp/0 --api "$api" \
        --no-mdns --open --trust "$pub" --bootstrap "/ip4/127.0.0.1/tcp/$s_port/p2p/$s_peer" 2> "$tmp/c$i.log" &
    pids+=("$!"); c_apis+=("$api")
done

all_done() {
    local a
    for a in "${c_apis[@]}"; do complete "$a" "$id" || return 1; done
}
rss_max=0; active_max=0; samples=0; at_64=0
t0=$SECONDS; end=$((SECONDS + 900))
until all_done >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { echo "the cinemas did not finish in 900 s" >&2; exit 1; }
    r=$(mem "$s_pid" VmRSS); a=$(gauge "$s_api" uploads_active); a=${a:-0}
    rss_max=$(echo "if ($r > $rss_max) $r else $rss_max" | bc -l)
    [ "$a" -gt "$active_max" ] && active_max=$a
    [ "$a" -ge 64 ] && at_64=$((at_64 + 1))
    samples=$((samples + 1))
    sleep 0.2
done
echo "| cinemas | requests each | upload limit | samples | with 64 uploads | most uploads | highest VmRSS | VmHWM |"
echo "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
echo "| $CINEMAS | $REQUESTS | $LIMIT | $samples | $at_64 | $active_max | ${rss_max} MiB | $(mem "$s_pid" VmHWM) MiB |"
echo "${CINEMAS} cinemas held the ${SIZE_MIB} MiB content $((SECONDS - t0)) s after they started."
