#!/usr/bin/env bash
# Where the SQLite writer thread's wall time goes during a run against
# `serve`: on a CPU, waiting for one (runnable but not running), or asleep
# (in fsync, or with no job), from /proc/PID/task/TID/schedstat read before
# and after the bench's MODE phase. A warm-up run first; then the bench runs
# `axum` and `healthz` before MODE, during which the writer is idle, so the
# script reads schedstat around the whole invocation and subtracts nothing:
# read the percentages as shares of the MODE phase's wall time printed by the
# bench (`throughput ... in N s`).
#
#   bash bench/writer-sched.sh [BIN] [MODE] [CONNECTIONS] [REQUESTS]
#   NICE=-10 bash bench/writer-sched.sh        # the writer thread reniced first (root)
#   TOKIO_WORKER_THREADS=1 bash bench/writer-sched.sh   # serve with one HTTP worker
#
# Nothing here is part of CI.
set -uo pipefail
source "$(dirname "$0")/serve.sh"
BIN=${1:-target/release/kinde-meter} MODE=${2:-single} CONNS=${3:-64} REQ=${4:-200000}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
SERVE_FLAGS=() # no log lines' cost on the writer's cores
start_serve "$BIN" /dev/null --data-dir "$D/data"
B=(--server "$URL" --token "$TOKEN" --connections "$CONNS" --mode "$MODE")
"$BIN" bench "${B[@]}" --requests 20000 >/dev/null 2>&1
TASK=$(dirname "$(grep -l '^kinde-meter-sql' /proc/$PID/task/*/comm | head -1)")
[ -n "${NICE:-}" ] && renice -n "$NICE" -p "$(basename "$TASK")" >/dev/null
read -r run0 wait0 slices0 <"$TASK/schedstat"
start=$(date +%s.%N)
"$BIN" bench "${B[@]}" --server-pid $PID --requests "$REQ" 2>&1 | grep -E "throughput|vs healthz|CPU/request"
end=$(date +%s.%N)
read -r run1 wait1 slices1 <"$TASK/schedstat"
python3 - "$start" "$end" "$run0" "$run1" "$wait0" "$wait1" "$slices0" "$slices1" <<'EOF'
import sys
start, end, run0, run1, wait0, wait1, s0, s1 = map(float, sys.argv[1:])
run, wait = (run1 - run0) / 1e9, (wait1 - wait0) / 1e9
print(f"writer thread over the invocation ({end - start:.2f} s): on a CPU {run:.2f} s, "
      f"waiting for a CPU {wait:.2f} s, asleep the rest; {int(s1 - s0)} times scheduled")
EOF
stop_serve
