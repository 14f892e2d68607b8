#!/usr/bin/env bash
# Usage reads and entitlement checks at 1 000 requests/s with 1 M and then
# 10 M records stored, three runs after each load (run-all.sh runs one):
# a fresh `serve` (SQLite), 1 M records through the batch endpoint, `sync`,
# three `--mode read,check --rate 1000` runs, 9 M more records, `sync`, three
# more. About 10 minutes and 2.1 GB of scratch space.
#
#   bash bench/reads-at-1000.sh OUT        # then: python3 bench/median.py OUT/read1-*.json
#
# Nothing here is part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/serve.sh
OUT=$1
mkdir -p "$OUT"
BIN="$(pwd)/target/release/kinde-meter"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
start_serve "$BIN" "$D/serve.log" --data-dir "$D/data"
S=(--server "$URL" --server-pid $PID --token "$TOKEN" --customers big --connections 64)
"$BIN" bench "${S[@]}" --mode batch --requests 10000 --batch-size 100 --json >"$OUT/load1.json"
sync
for i in 1 2 3; do "$BIN" bench "${S[@]}" --mode read,check --rate 1000 --json >"$OUT/read1-$i.json"; done
"$BIN" bench "${S[@]}" --mode batch --requests 90000 --batch-size 100 --json >"$OUT/load2.json"
sync
for i in 1 2 3; do "$BIN" bench "${S[@]}" --mode read,check --rate 1000 --json >"$OUT/read10-$i.json"; done
stop_serve
