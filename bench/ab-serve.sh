#!/usr/bin/env bash
# Interleaved A/B of two (or more) kinde-meter binaries against `serve`, each
# run on a fresh data directory, for changes smaller than this VM's run-to-run
# spread (±8 %): the binaries alternate, PAIRS times, so drifts of the host hit
# both alike. Each line: the bench's row for MODE, then what the server's
# /metrics and /proc say about the run: records per commit, bytes the server
# wrote per request (`wchar` of /proc/PID/io: WAL, checkpoints and log lines)
# and its CPU ticks.
#
#   bash bench/ab-serve.sh "OLD_BIN NEW_BIN" PAIRS MODE CONNECTIONS REQUESTS [BENCH ARGS...]
#   bash bench/ab-serve.sh "/tmp/km-before target/release/kinde-meter" 3 single 64 100000
#
# With PG=1, each run's `serve` is on a fresh PostgreSQL database instead
# (127.0.0.1:5432, user postgres, trust): `serve --database-url`. With
# CLIENT=BIN, that binary's `bench` loads every server (for a mode the older
# binaries do not have, such as single-keyed).
#
# Nothing here is part of CI.
set -uo pipefail
source "$(dirname "$0")/serve.sh"
BINS=$1 PAIRS=$2 MODE=$3 CONNS=$4 REQ=$5
shift 5
for _ in $(seq "$PAIRS"); do
  for BIN in $BINS; do
    D=$(mktemp -d)
    if [ "${PG:-0}" = 1 ]; then
      db=km_ab_scratch
      fresh_db $db
      start_serve "$BIN" "$D/serve.log" --database-url "postgres://postgres@127.0.0.1:5432/$db"
    else
      start_serve "$BIN" "$D/serve.log" --data-dir "$D"
    fi
    row=$("${CLIENT:-$BIN}" bench --server "$URL" --server-pid $PID --token "$TOKEN" \
      --connections "$CONNS" --mode "$MODE" --requests "$REQ" "$@" 2>&1 |
      grep -E "^\| [0-9]+ \| $MODE \|")
    per_commit=$(curl -s "$URL/metrics" | awk '
      /^kinde_meter_usage_records_committed_total/ {r = $2}
      /^kinde_meter_commits_total/ {c = $2}
      END {if (c > 0) printf "%.1f", r / c}')
    wchar=$(awk '/^wchar/ {print $2}' /proc/$PID/io)
    ticks=$(awk '{print $14 + $15}' /proc/$PID/stat)
    echo "$BIN $row records/commit $per_commit | bytes written/request $((wchar / REQ)) | CPU ticks $ticks"
    stop_serve
    rm -rf "$D"
    if [ "${PG:-0}" = 1 ]; then
      drop_db $db
    fi
  done
done
