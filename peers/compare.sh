#!/usr/bin/env bash
# Usage: peers/compare.sh                      run both sides, print the joined table
#        peers/compare.sh PULLBACK.log BURN.log   join two saved outputs instead
#
# pullback (examples/peers.rs) next to Burn 0.22.1 (peers/burn/, its own
# crate and lock file) on the same rows, inputs and timing rules. Each side
# prints `ADAPTER <name>`, `ROW <key> <median_ms> <min_ms>` and, for Burn,
# `NOTE <key> ...` saying which spelling a row used; this script joins the
# ROW lines into one table: row, Burn median, pullback median, Burn/pullback.
# The programs' full outputs stream to stderr and are kept in a temporary
# directory (its path is printed). Set PEERS_ROWS=w1,w5 to run a subset.
#
# The first Burn build took 22 min on a 2-core machine (no GPU); later runs
# reuse peers/burn/target.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${XDG_RUNTIME_DIR:-}" ]]; then
    export XDG_RUNTIME_DIR="/tmp/xdg-$(id -u)"
fi
mkdir -p "$XDG_RUNTIME_DIR" && chmod 0700 "$XDG_RUNTIME_DIR" 2> /dev/null || true

pb_status=0
burn_status=0
load() { cut -d' ' -f1 /proc/loadavg 2> /dev/null || echo '?'; }
loads="not measured (saved logs)"
if [[ $# -eq 2 ]]; then
    pb_log="$1"
    burn_log="$2"
elif [[ $# -eq 0 ]]; then
    out="$(mktemp -d "${TMPDIR:-/tmp}/peers.XXXXXX")"
    pb_log="$out/pullback.log"
    burn_log="$out/burn.log"
    echo "compare.sh: logs in $out" >&2
    echo "compare.sh: pullback: scripts/with-adapter cargo run --release --example peers" >&2
    load_pb="$(load)"
    (cd "$root" && scripts/with-adapter cargo run --release --example peers) 2>&1 |
        tee "$pb_log" >&2
    pb_status=${PIPESTATUS[0]}
    echo "compare.sh: Burn: cd peers/burn && ../../scripts/with-adapter cargo run --release" >&2
    load_burn="$(load)"
    (cd "$root/peers/burn" && ../../scripts/with-adapter cargo run --release) 2>&1 |
        tee "$burn_log" >&2
    burn_status=${PIPESTATUS[0]}
    loads="$load_pb before pullback, $load_burn before Burn, $(load) at the end"
else
    sed -n '2,3p' "$0" >&2
    exit 2
fi

echo
awk -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
    -v commit="$(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo '?')" \
    -v cpus="$(nproc 2> /dev/null || echo '?')" -v loads="$loads" \
    -v pb_status="$pb_status" -v burn_status="$burn_status" '
    # Which file: 1 = pullback, 2 = Burn.
    { side = (FILENAME == ARGV[1]) ? 1 : 2 }
    /^ADAPTER / { adapter[side] = substr($0, 9) }
    /^ROW / {
        key = $2
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        med[side, key] = $3
    }
    /^NOTE / && side == 2 && $2 != "adapter" { note[++notes] = substr($0, 6) }
    /^FAIL/ { fails[side]++ }
    END {
        printf "pullback vs Burn 0.22.1 (wgpu + autodiff + fusion + autotune), %s\n", date
        printf "pullback commit %s (plus any uncommitted changes), %s CPUs\n", commit, cpus
        printf "1-min load average: %s (other work skews the figures)\n", loads
        printf "adapter (pullback): %s\n", (1 in adapter) ? adapter[1] : "?"
        printf "adapter (Burn):     %s\n", (2 in adapter) ? adapter[2] : "?"
        printf "median wall time per rep (forward + VJP/gradient + readback)\n\n"
        printf "%-16s %12s %12s %14s\n", "row", "Burn ms", "pullback ms", "Burn/pullback"
        for (i = 1; i <= n; i++) {
            k = order[i]
            b = ((2, k) in med) ? med[2, k] : ""
            p = ((1, k) in med) ? med[1, k] : ""
            r = (b != "" && p != "" && p > 0) ? sprintf("%.2f×", b / p) : "-"
            printf "%-16s %12s %12s %14s\n", k, (b == "" ? "-" : sprintf("%.2f", b)),
                (p == "" ? "-" : sprintf("%.2f", p)), r
        }
        if (notes) print "\nBurn spellings (NOTE lines of the Burn side):"
        for (i = 1; i <= notes; i++) print "  " note[i]
        if (fails[1] || pb_status != 0)
            printf "\nWARNING: pullback side: %d FAIL line(s), exit status %s\n", fails[1], pb_status
        if (fails[2] || burn_status != 0)
            printf "\nWARNING: Burn side: %d FAIL line(s), exit status %s\n", fails[2], burn_status
    }' "$pb_log" "$burn_log"

[[ $pb_status -eq 0 && $burn_status -eq 0 ]]
