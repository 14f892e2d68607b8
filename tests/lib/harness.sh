# Shared by the compatibility harnesses (tests/python, tests/node, tests/schemathesis,
# tests/browser): the repository root as the working directory, logging, a setup
# failure counted as one failed test, starting the server, and a cleanup that stops
# it, shows its log on failure and always ends with an `N passed, M failed` line.
# Sourced, not run: the caller sets `set -euo pipefail` first and uses $BIN, $WORK,
# $SERVER_PID, $URL and $SUMMARY_PRINTED.
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

SUMMARY_PRINTED=0
SERVER_PID=""
URL=""
WORK=""

log() { echo "== $*" >&2; }

# `$BIN serve ARGS…` in the background, its output in $WORK/server.{out,err}; sets
# $SERVER_PID, and $URL once the server prints its `kinde-meter serving URL` line.
start_server() {
    log "start $BIN serve $*"
    "$BIN" serve "$@" >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    URL=""
    local line=""
    for _ in $(seq 1 300); do
        line="$(head -n 1 "$WORK/server.out" 2>/dev/null || true)"
        if [[ $line == "kinde-meter serving "* ]]; then
            URL="$(sed -E 's/^kinde-meter serving ([^ ]+).*$/\1/' <<<"$line")"
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || fail_setup "the server exited before serving"
        sleep 0.1
    done
    [[ $URL == http://127.0.0.1:* ]] || fail_setup "no 'kinde-meter serving URL' line within 30 s (got: ${line:-nothing})"
    log "server at $URL (pid $SERVER_PID)"
}

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
