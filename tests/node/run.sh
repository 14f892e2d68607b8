#!/usr/bin/env bash
# Wire compatibility of webhook deliveries with Kinde's own @kinde/webhooks (npm).
#
# Installs the pinned package (`npm ci`, package-lock.json) when node_modules is
# missing or stale, builds and starts `kinde-meter serve` on a free port with a
# fresh data directory, tests/node/catalog.toml, --webhook-allow-private-networks
# (the receiver is on 127.0.0.1) and a 1 s usage-event interval, mints a token,
# and runs decode_test.mjs, which receives the deliveries and checks each with
# decodeWebhook(body, "<public URL>"). Needs node (>= 20) and npm, and network
# access to the npm registry only for the install.
#
# The last line printed is `N passed, M failed`; the exit status is non-zero when
# anything failed, setup included.
#
#   bash tests/node/run.sh
set -euo pipefail

source "$(dirname "$0")/../lib/harness.sh"

command -v node >/dev/null 2>&1 || fail_setup "node not found"
command -v npm >/dev/null 2>&1 || fail_setup "npm not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || fail_setup "node $(node --version) is older than 20 (decodeWebhook needs the global WebCrypto)"

# npm ci whenever the lock file is newer than what it installed last.
if [[ ! -f $HERE/node_modules/.package-lock.json || $HERE/package-lock.json -nt $HERE/node_modules/.package-lock.json ]]; then
    log "npm ci (tests/node)"
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund >&2) || fail_setup "npm ci failed"
fi
log "@kinde/webhooks $(node -p 'require("./tests/node/node_modules/@kinde/webhooks/package.json").version')"

log "build (cargo build -p kinde-meter)"
cargo build -p kinde-meter --locked >&2 || fail_setup "cargo build failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')" \
    || fail_setup "cargo metadata failed"
BIN="$TARGET_DIR/debug/kinde-meter"
[[ -x $BIN ]] || fail_setup "$BIN was not built"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kinde-meter-node.XXXXXX")"
DATA="$WORK/data"

start_server --listen 127.0.0.1:0 --data-dir "$DATA" --catalog "$HERE/catalog.toml" \
    --webhook-allow-private-networks --webhook-usage-interval 1

SCOPES="create:webhooks read:webhooks update:webhooks delete:webhooks read:events read:event_types create:billing_agreements read:billing_agreements create:meter_usage"
TOKEN="$("$BIN" token --data-dir "$DATA" --scope "$SCOPES")" || fail_setup "kinde-meter token failed"

log "decode_test.mjs"
SUMMARY_PRINTED=1 # the test script prints the summary line itself
set +e
KINDE_METER_URL="$URL" KINDE_METER_TOKEN="$TOKEN" \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" \
    node "$HERE/decode_test.mjs" | tee "$WORK/test.out"
status=${PIPESTATUS[0]}
set -e
if ! tail -n 1 "$WORK/test.out" | grep -Eq '^[0-9]+ passed, [0-9]+ failed$'; then
    echo "0 passed, 1 failed" # the script died before its summary
    [[ $status != 0 ]] || status=1
fi
exit "$status"
