#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, three runs each, as JSON in OUT, then the
# median tables (bench/median.py). About 25 minutes on the 2-core VM; run it on
# a quiet machine (the load average is recorded in every JSON document).
#
#   bash bench/run-all.sh [OUT]        # OUT defaults to bench/results/$(date +%F)
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) for the PostgreSQL
# runs; RUNS=1 for a quicker look. Nothing here is part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/$(date +%F)}"
RUNS="${RUNS:-3}"
mkdir -p "$OUT"
cargo build --release -p kinde-meter --locked
BIN="$(pwd)/target/release/kinde-meter"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# A `serve` of its own for --server runs (bench/serve.sh): sets PID, URL and TOKEN.
source bench/serve.sh

for i in $(seq "$RUNS"); do
  echo "== run $i: SQLite in process (no log lines: the bench installs no log subscriber)"
  "$BIN" bench --connections 8,64,256 --mode healthz,single,read,check,mixed --requests 200000 \
    --work-dir "$WORK" --json >"$OUT/sqlite-a-$i.json"
  "$BIN" bench --connections 8,64,256 --mode healthz,batch --requests 20000 \
    --work-dir "$WORK" --json >"$OUT/sqlite-b-$i.json"
  echo "== run $i: single records and checks, and their ceilings (the least durable write, the least read; in process)"
  "$BIN" bench --connections 64,256 --mode single,ceiling,check,check-ceiling --requests 200000 \
    --work-dir "$WORK" --json >"$OUT/ceiling-$i.json"
  echo "== run $i: single records open loop at half the closed loop's rate"
  "$BIN" bench --connections 64 --mode single --rate half --requests 100000 \
    --work-dir "$WORK" --json >"$OUT/half-$i.json"
  echo "== run $i: SQLite serve (log lines on, JSON to a file)"
  start_serve "$BIN" "$WORK/serve.log" --data-dir "$WORK/serve-$i"
  "$BIN" bench --server "$URL" --server-pid "$PID" --token "$TOKEN" --connections 64 \
    --mode healthz,single,read,check --requests 200000 --json >"$OUT/ext-$i.json"
  stop_serve
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== run $i: PostgreSQL serve"
    db=km_bench_scratch_$i
    fresh_db $db
    start_serve "$BIN" "$WORK/serve.log" --database-url "postgres://postgres@127.0.0.1:5432/$db"
    "$BIN" bench --server "$URL" --server-pid "$PID" --token "$TOKEN" --connections 8,64,256 \
      --mode healthz,single,read,check,mixed --requests 100000 --json >"$OUT/pg-a-$i.json"
    "$BIN" bench --server "$URL" --server-pid "$PID" --token "$TOKEN" --connections 8,64,256 \
      --mode healthz,batch --requests 20000 --json >"$OUT/pg-b-$i.json"
    stop_serve
    drop_db $db
  fi
done

echo "== 1 M then 10 M records stored (SQLite serve, ~2.1 GB), reads and checks at 1 000/s after each"
start_serve "$BIN" "$WORK/serve.log" --data-dir "$WORK/10m"
S=(--server "$URL" --server-pid "$PID" --token "$TOKEN" --customers big --connections 64)
# `sync` after each load: the reads are timed, not the kernel's write-back of the load.
"$BIN" bench "${S[@]}" --mode batch --requests 10000 --batch-size 100 --json >"$OUT/10m-load1.json"
sync
"$BIN" bench "${S[@]}" --mode read,check --rate 1000 --json >"$OUT/10m-read1.json"
"$BIN" bench "${S[@]}" --mode batch --requests 90000 --batch-size 100 --json >"$OUT/10m-load2.json"
sync
"$BIN" bench "${S[@]}" --mode read,check --rate 1000 --json >"$OUT/10m-read10.json"
stop_serve

for set in sqlite-a sqlite-b ceiling half ext pg-a pg-b; do
  files=("$OUT"/$set-*.json)
  [ -e "${files[0]}" ] && python3 bench/median.py "${files[@]}" && echo
done
python3 bench/median.py "$OUT/10m-read1.json"
python3 bench/median.py "$OUT/10m-read10.json"
