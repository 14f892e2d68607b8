#!/usr/bin/env bash
# The usage dashboard (/dashboard) end to end in headless Chromium.
#
# Needs Debian's Chromium (/usr/bin/chromium; `.ci/run` installs the packages
# chromium and chromium-driver when it is missing; KINDE_METER_CHROMIUM names
# another binary), node (>= 20) and npm. Installs the pinned playwright-core
# (`npm ci`, package-lock.json; it downloads no browser) when node_modules is
# missing or stale, builds and starts `kinde-meter serve` on a free port with a
# fresh data directory, the demo catalog and --webhook-allow-private-networks
# (the test's webhook receiver is on 127.0.0.1), mints a write token for the
# setup and a read-only token for the dashboard, and runs dashboard_test.mjs.
# The screenshot is kept in <target dir>/browser/dashboard.png.
#
# The last line printed is `N passed, M failed`; the exit status is non-zero when
# anything failed, setup included.
#
#   bash tests/browser/run.sh
set -euo pipefail

source "$(dirname "$0")/../lib/harness.sh"

CHROMIUM="${KINDE_METER_CHROMIUM:-/usr/bin/chromium}"
[[ -x $CHROMIUM ]] || fail_setup "$CHROMIUM not found (apt-get install chromium chromium-driver)"
command -v node >/dev/null 2>&1 || fail_setup "node not found"
command -v npm >/dev/null 2>&1 || fail_setup "npm not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || fail_setup "node $(node --version) is older than 20"
log "$("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"

# npm ci whenever the lock file is newer than what it installed last.
if [[ ! -f $HERE/node_modules/.package-lock.json || $HERE/package-lock.json -nt $HERE/node_modules/.package-lock.json ]]; then
    log "npm ci (tests/browser)"
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund >&2) || fail_setup "npm ci failed"
fi
log "playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"

log "build (cargo build -p kinde-meter)"
cargo build -p kinde-meter --locked >&2 || fail_setup "cargo build failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')" \
    || fail_setup "cargo metadata failed"
BIN="$TARGET_DIR/debug/kinde-meter"
[[ -x $BIN ]] || fail_setup "$BIN was not built"
SHOTS="$TARGET_DIR/browser"
rm -f "$SHOTS/dashboard.png"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kinde-meter-browser.XXXXXX")"
DATA="$WORK/data"

start_server --listen 127.0.0.1:0 --data-dir "$DATA" --webhook-allow-private-networks

WRITE_TOKEN="$("$BIN" token --data-dir "$DATA" --scope "create:billing_agreements create:meter_usage create:webhooks")" \
    || fail_setup "kinde-meter token failed"
READ_TOKEN="$("$BIN" token --data-dir "$DATA" --scope "read:billing_agreements read:billing_entitlements read:meter_usage read:webhooks")" \
    || fail_setup "kinde-meter token failed"

log "dashboard_test.mjs"
SUMMARY_PRINTED=1 # the test script prints the summary line itself
set +e
KINDE_METER_URL="$URL" KINDE_METER_WRITE_TOKEN="$WRITE_TOKEN" KINDE_METER_READ_TOKEN="$READ_TOKEN" \
    KINDE_METER_CHROMIUM="$CHROMIUM" KINDE_METER_SCREENSHOT_DIR="$SHOTS" \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" \
    node "$HERE/dashboard_test.mjs" | tee "$WORK/test.out"
status=${PIPESTATUS[0]}
set -e
if ! tail -n 1 "$WORK/test.out" | grep -Eq '^[0-9]+ passed, [0-9]+ failed$'; then
    echo "0 passed, 1 failed" # the script died before its summary
    [[ $status != 0 ]] || status=1
fi
[[ ! -f $SHOTS/dashboard.png ]] || log "screenshot: $SHOTS/dashboard.png"
exit "$status"
