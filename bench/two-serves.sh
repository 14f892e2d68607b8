#!/usr/bin/env bash
# Two `serve`s on one PostgreSQL database, loaded at once, beside one `serve`
# loaded with as many connections, ROUNDS times interleaved (the VM drifts):
#
#   bash bench/two-serves.sh BIN [MODE] [CONNECTIONS] [REQUESTS] [ROUNDS]
#   bash bench/two-serves.sh target/release/kinde-meter single-keyed 32 50000 3
#   AGREEMENTS=2000 bash bench/two-serves.sh target/release/kinde-meter single
#
# Each round, on a fresh database each:
#   one     one `serve`, one bench at 2 × CONNECTIONS, 2 × REQUESTS
#   apart   two `serve`s, a bench at CONNECTIONS against each, each on agreements
#           of its own (`--customers a` and `--customers b`)
#   shared  the same, both benches on the SAME agreements (`--customers shared`,
#           made before the benches start): as behind a load balancer that
#           sends a customer's records to either server
# Prints, per configuration and round: records/s over both servers (the sum of
# the benches' rates; they start together and move the same number of
# requests), the p99 of each bench, and from each server's /metrics its
# commits, those sent in one flight, and its stale flights. In `shared` each
# bench also sees the other's records in the usage it checks, so its "stored
# = acknowledged" is NO by design; the script checks instead that the usage
# stored on the shared agreements is what both benches acknowledged.
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Not part of CI.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/serve.sh
BIN=$1 MODE=${2:-single} CONNS=${3:-32} REQ=${4:-50000} ROUNDS=${5:-3}
# Agreements each bench spreads its records over (the bench's default, 50).
AGREEMENTS=${AGREEMENTS:-50}
DB_NAME=km_two_serves_scratch
DB="postgres://postgres@127.0.0.1:5432/$DB_NAME"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# bench URL PID TOKEN CUSTOMERS CONNECTIONS REQUESTS OUT
bench() {
  "$BIN" bench --server "$1" --server-pid "$2" --token "$3" --customers "$4" \
    --agreements "$AGREEMENTS" --connections "$5" --mode "$MODE" --requests "$6" --json \
    >"$7" 2>"$7.err"
}

# The bench's rate and p99 for MODE, from its JSON.
rate_p99() {
  python3 - "$1" "$MODE" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
run = next(r for r in report["runs"] if r["mode"] == sys.argv[2])
print(run["records_per_second"], run["latency_ms"]["p99"])
EOF
}

# "commits C, one flight F, stale S" from a server's /metrics.
commits() {
  curl -s "$1/metrics" | awk '
    /^kinde_meter_commits_total/ {c = $2}
    /^kinde_meter_commits_one_flight_total/ {f = $2}
    /^kinde_meter_one_flights_stale_total/ {s = $2}
    END {printf "commits %d, one flight %d, stale %d", c, f, s}'
}

# The usage stored over the shared agreements' current periods (api_calls).
stored_usage() {
  psql -At -h 127.0.0.1 -U postgres -c \
    "select coalesce(sum(value), 0) from usage_aggregates" "$DB_NAME"
}

for round in $(seq "$ROUNDS"); do
  fresh_db "$DB_NAME"
  start_serve "$BIN" "$WORK/one.log" --database-url "$DB"
  bench "$URL" "$PID" "$TOKEN" one $((2 * CONNS)) $((2 * REQ)) "$WORK/one.json"
  read -r rate p99 <<<"$(rate_p99 "$WORK/one.json")"
  printf 'round %d  one     %8.0f rec/s  p99 %s ms  | %s\n' "$round" "$rate" "$p99" "$(commits "$URL")"
  stop_serve

  for config in apart shared; do
    fresh_db "$DB_NAME"
    start_serve "$BIN" "$WORK/a.log" --database-url "$DB"
    PA=$PID UA=$URL TA=$TOKEN
    start_serve "$BIN" "$WORK/b.log" --database-url "$DB"
    PB=$PID UB=$URL TB=$TOKEN
    if [ "$config" = shared ]; then
      ca=shared cb=shared
      # The shared agreements, made once before both benches look for them.
      "$BIN" bench --server "$UA" --token "$TA" --customers shared --agreements "$AGREEMENTS" \
        --connections 8 --mode single --requests 1000 >/dev/null 2>&1
      before=$(stored_usage)
    else
      ca=a cb=b
    fi
    bench "$UA" "$PA" "$TA" "$ca" "$CONNS" "$REQ" "$WORK/a.json" &
    JA=$!
    bench "$UB" "$PB" "$TB" "$cb" "$CONNS" "$REQ" "$WORK/b.json" &
    JB=$!
    wait $JA $JB
    read -r ra pa <<<"$(rate_p99 "$WORK/a.json")"
    read -r rb pb <<<"$(rate_p99 "$WORK/b.json")"
    check=""
    if [ "$config" = shared ]; then
      added=$(python3 -c "print(round($(stored_usage) - $before))")
      acked=$(python3 -c "
import json
print(sum(r['stored']['acknowledged'] for f in ('$WORK/a.json', '$WORK/b.json')
          for r in json.load(open(f))['runs'] if r['mode'] == '$MODE'))")
      check=" | usage added $added, acknowledged $acked"
    fi
    printf 'round %d  %-6s  %8.0f rec/s  p99 %s / %s ms  | A: %s | B: %s%s\n' \
      "$round" "$config" "$(python3 -c "print($ra + $rb)")" "$pa" "$pb" \
      "$(commits "$UA")" "$(commits "$UB")" "$check"
    PID=$PA stop_serve
    PID=$PB stop_serve
  done
done
drop_db "$DB_NAME"
