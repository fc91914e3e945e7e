#!/usr/bin/env bash
# Manifest hashing throughput beside b3sum and sha256sum on the same 1 GiB file (page cache warm).
#
#   bash bench/hash.sh            # prints the figures
#   bash bench/hash.sh --write    # also replaces the "Manifest hashing" section of docs/benchmarks.md
#
# Needs b3sum (Debian package `b3sum`) and coreutils. SIZE_MIB (default 1024) and RUNS (default 3) can be
# set in the environment. Our figure comes from `overlay/examples/manifest.rs` (dev profile: dependencies,
# BLAKE3 and rayon included, are built with opt-level 2; set PROFILE=release for a release build).
set -euo pipefail

cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
PROFILE=${PROFILE:-dev}
command -v b3sum >/dev/null || { echo "b3sum not found: apt-get install -y b3sum" >&2; exit 1; }

profile_flag=""; bin_dir=debug
if [ "$PROFILE" = release ]; then profile_flag="--release"; bin_dir=release; fi
cargo build -q $profile_flag -p cinemesh-overlay --example manifest
target=${CARGO_TARGET_DIR:-target}
example="$target/$bin_dir/examples/manifest"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
file="$tmp/film.bin"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$file"
cat "$file" > /dev/null   # warm the page cache: we measure hashing, not the disk
bytes=$((SIZE_MIB * 1024 * 1024))

# Wall-clock seconds of one run of a command.
secs() {
    local s e
    s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# Runs are interleaved (b3sum, sha256sum, ours, b3sum, ...) so that load from other jobs on the machine
# falls on every tool alike; the best run of each counts.
t_b3=""; t_sha=""; t_ours=""
for _ in $(seq "$RUNS"); do
    t_b3=$(min "$t_b3" "$(secs b3sum "$file")")
    t_sha=$(min "$t_sha" "$(secs sha256sum "$file")")
    t_ours=$(min "$t_ours" "$(secs "$example" "$file")")
done
id=$("$example" "$file" | cut -d' ' -f1)
rate() { echo "scale=0; $bytes / $1 / 1000000" | bc -l; }
pct=$(echo "scale=1; 100 * $t_b3 / $t_ours" | bc -l)

section=$(cat <<MD
## Manifest hashing

\`bash bench/hash.sh --write\` on $(date -u +%Y-%m-%d), $(nproc) cores, a ${SIZE_MIB} MiB file of random bytes in
the page cache, best of ${RUNS} interleaved runs, 4 MiB chunks (profile: ${PROFILE}):

| tool | seconds | MB/s |
| --- | ---: | ---: |
| \`b3sum\` ($(b3sum --version | cut -d' ' -f2)) | $(printf %.3f "$t_b3") | $(rate "$t_b3") |
| \`sha256sum\` | $(printf %.3f "$t_sha") | $(rate "$t_sha") |
| cinemesh manifest (\`overlay/examples/manifest.rs\`) | $(printf %.3f "$t_ours") | $(rate "$t_ours") |

cinemesh runs at ${pct}% of b3sum's speed (goal: at least 90%). Content id of that file: \`${id:0:16}…\`.
The machine is shared with other jobs (load average $(cut -d' ' -f1 /proc/loadavg) at the end of this run), so figures vary between runs; read the ratio over several runs.
MD
)
echo "$section"

if [ "${1:-}" = --write ]; then
    doc=docs/benchmarks.md
    # Replace the section (up to the next "## " heading) or append it.
    awk -v new="$section" '
        /^## Manifest hashing/ { print new; skip = 1; done = 1; next }
        skip && /^## / { skip = 0 }
        !skip { print }
        END { if (!done) { print ""; print new } }
    ' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
    echo "wrote $doc"
fi
