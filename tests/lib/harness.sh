# Shared by the compatibility harnesses (tests/python, tests/node, tests/schemathesis):
# the repository root as the working directory, logging, a setup failure counted as
# one failed test, and a cleanup that stops the server, shows its log on failure and
# always ends with an `N passed, M failed` line. Sourced, not run: the caller sets
# `set -euo pipefail` first and uses $SERVER_PID, $WORK and $SUMMARY_PRINTED.
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

SUMMARY_PRINTED=0
SERVER_PID=""
WORK=""

log() { echo "== $*" >&2; }

# A setup step failed: say why, and count it as one failed test.
fail_setup() {
    echo "setup failed: $*" >&2
    if [[ $SUMMARY_PRINTED == 0 ]]; then
        SUMMARY_PRINTED=1
        echo "0 passed, 1 failed"
    fi
    exit 1
}

cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc != 0 && -n $WORK && -s $WORK/server.err ]]; then
        echo "-- last lines of the server's log:" >&2
        tail -n 40 "$WORK/server.err" >&2 || true
    fi
    if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
    if [[ $rc != 0 && $SUMMARY_PRINTED == 0 ]]; then
        echo "0 passed, 1 failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Settings of the developer's shell must not leak into the server or the CLI.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^KINDE_METER_' || true)
