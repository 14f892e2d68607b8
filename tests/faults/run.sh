#!/usr/bin/env bash
# The fault and overload harnesses (crates/kinde-meter/tests/faults, docs/testing.md):
# overload far beyond the sustainable rate, a full disk under SQLite (needs root:
# it mounts a tmpfs), PostgreSQL refusing writes, and servers on PostgreSQL killed
# with SIGKILL under load; each ends with the exactly-once check per idempotency key.
#
#   bash tests/faults/run.sh                      # CI's short versions (10 s overload, 3 kills)
#   bash tests/faults/run.sh --release --duration 60 --connections 2000 --kills 5
#   bash tests/faults/run.sh overload             # one harness (a test name filter)
#
# PostgreSQL: KINDE_METER_TEST_DATABASE_URL, else the local server if it answers
# (postgres://postgres@127.0.0.1:5432/test); without one those harnesses are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=10
connections=1000
kills=3
profile=()
filter=()
while (($#)); do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --kills) kills=$2; shift 2 ;;
        --release) profile=(--release); shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) filter+=("$1"); shift ;;
    esac
done

export KINDE_METER_FAULTS=1
export KINDE_METER_FAULTS_DURATION=$duration
export KINDE_METER_FAULTS_CONNECTIONS=$connections
export KINDE_METER_FAULTS_KILLS=$kills
if [[ -z ${KINDE_METER_TEST_DATABASE_URL:-} ]] && pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    export KINDE_METER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
fi
# Each overload connection is a descriptor in the test and one in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ $(ulimit -n) != unlimited ]] && ((connections * 2 + 256 > $(ulimit -n))); then
    echo "open-files limit $(ulimit -n) is too low for $connections connections" >&2
    exit 2
fi

exec cargo test "${profile[@]}" -p kinde-meter --test faults --locked -- \
    --test-threads=1 --nocapture "${filter[@]}"
