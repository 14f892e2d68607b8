#!/usr/bin/env bash
# PostgreSQL reads and checks only (the read/check rows of run-all.sh's
# PostgreSQL set, without its slow single-record runs), RUNS times (default
# 3), each against a `serve` on a fresh database, JSON into OUT:
#
#   bash bench/pg-reads.sh target/release/kinde-meter bench/results/NAME
#   python3 bench/median.py bench/results/NAME/pg-reads-*.json
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 OUT=$2 RUNS=${RUNS:-3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
source bench/serve.sh
for i in $(seq "$RUNS"); do
  db=km_bench_scratch_$i
  PGOPTIONS="-c client_min_messages=warning" psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db" test
  psql -q -h 127.0.0.1 -U postgres -c "create database $db" test
  start_serve "$BIN" "$WORK/serve.log" --database-url "postgres://postgres@127.0.0.1:5432/$db"
  "$BIN" bench --server "$URL" --server-pid "$PID" --token "$TOKEN" --connections 8,64,256 \
    --mode healthz,read,check --requests 100000 --json >"$OUT/pg-reads-$i.json"
  stop_serve
  psql -q -h 127.0.0.1 -U postgres -c "drop database $db" test
done
