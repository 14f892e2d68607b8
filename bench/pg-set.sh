#!/usr/bin/env bash
# Some modes of run-all.sh's PostgreSQL set (MODES, default the reads and
# checks: healthz,read,check), at 8, 64 and 256 connections, RUNS times
# (default 3), each against a `serve` on a fresh database, JSON into OUT:
#
#   bash bench/pg-set.sh target/release/kinde-meter bench/results/NAME
#   MODES=healthz,single bash bench/pg-set.sh target/release/kinde-meter bench/results/NAME
#   python3 bench/median.py bench/results/NAME/pg-*.json
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 OUT=$2 RUNS=${RUNS:-3} MODES=${MODES:-healthz,read,check}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
source bench/serve.sh
for i in $(seq "$RUNS"); do
  db=km_bench_scratch_$i
  fresh_db $db
  start_serve "$BIN" "$WORK/serve.log" --database-url "postgres://postgres@127.0.0.1:5432/$db"
  "$BIN" bench --server "$URL" --server-pid "$PID" --token "$TOKEN" --connections 8,64,256 \
    --mode "$MODES" --requests 100000 --json >"$OUT/pg-${MODES//,/-}-$i.json"
  stop_serve
  drop_db $db
done
