#!/usr/bin/env bash
# Wire compatibility with Kinde's official Python SDK (kinde-python-sdk from PyPI).
#
# Installs the pinned SDK in a virtualenv under the cargo target directory (reused
# when present), builds and starts `kinde-meter serve` on a free port with a fresh
# data directory and catalog.toml (the demo plans plus one with an enforced
# limit), allowing webhooks to loopback addresses (the test's receiver), mints
# two tokens, and runs official_sdk_test.py against it.
# Needs python3 (>= 3.9, with the venv module) and network access to PyPI only.
#
# The last line printed is `N passed, M failed`; the exit status is non-zero when
# anything failed, setup included.
#
#   bash tests/python/run.sh                  # every test
#   bash tests/python/run.sh test_403_bad_token   # some tests, by name
#   KINDE_PYTHON_SDK_VERSION=2.4.0 PYTHON=python3.11 bash tests/python/run.sh
set -euo pipefail

# The SDK version this contract is checked against. Bump deliberately.
SDK_VERSION="${KINDE_PYTHON_SDK_VERSION:-2.4.0}"
PYTHON="${PYTHON:-python3}"

source "$(dirname "$0")/../lib/harness.sh"

command -v "$PYTHON" >/dev/null 2>&1 || fail_setup "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || fail_setup "$PYTHON is older than 3.9"

log "build (cargo build -p kinde-meter)"
cargo build -p kinde-meter --locked >&2 || fail_setup "cargo build failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" \
    || fail_setup "cargo metadata failed"
BIN="$TARGET_DIR/debug/kinde-meter"
[[ -x $BIN ]] || fail_setup "$BIN was not built"

VENV="$TARGET_DIR/python-venv"
VPY="$VENV/bin/python"
if [[ -x $VPY ]] && ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    log "the virtualenv $VENV is broken: recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x $VPY ]]; then
    log "virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" >&2 \
        || fail_setup "cannot create a virtualenv with $PYTHON (on Debian/Ubuntu: apt-get install python3-venv)"
fi
installed="$("$VPY" -c 'import importlib.metadata as m; print(m.version("kinde-python-sdk"))' 2>/dev/null || true)"
if [[ $installed != "$SDK_VERSION" ]]; then
    log "pip install kinde-python-sdk==$SDK_VERSION"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VPY" -m pip install --quiet "kinde-python-sdk==$SDK_VERSION" >&2 \
        || fail_setup "pip install kinde-python-sdk==$SDK_VERSION failed"
fi
log "kinde-python-sdk $("$VPY" -c 'import importlib.metadata as m; print(m.version("kinde-python-sdk"))')"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kinde-meter-pysdk.XXXXXX")"
DATA="$WORK/data"

# --webhook-allow-private-networks: the test's webhook receiver is on 127.0.0.1.
start_server --listen 127.0.0.1:0 --data-dir "$DATA" --catalog "$HERE/catalog.toml" --webhook-allow-private-networks

ALL_SCOPES="create:meter_usage read:meter_usage create:billing_agreements read:billing_agreements read:billing_entitlements"
ALL_SCOPES+=" create:webhooks read:webhooks update:webhooks delete:webhooks read:events read:event_types"
TOKEN="$("$BIN" token --data-dir "$DATA" --scope "$ALL_SCOPES")" || fail_setup "kinde-meter token failed"
READ_TOKEN="$("$BIN" token --data-dir "$DATA" --scope "read:meter_usage")" || fail_setup "kinde-meter token failed"

log "official_sdk_test.py"
SUMMARY_PRINTED=1 # the test script prints the summary line itself
set +e
KINDE_METER_URL="$URL" KINDE_METER_TOKEN="$TOKEN" KINDE_METER_READ_TOKEN="$READ_TOKEN" \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" \
    PYTHONDONTWRITEBYTECODE=1 "$VPY" "$HERE/official_sdk_test.py" "$@" | tee "$WORK/test.out"
status=${PIPESTATUS[0]}
set -e
if ! tail -n 1 "$WORK/test.out" | grep -Eq '^[0-9]+ passed, [0-9]+ failed$'; then
    echo "0 passed, 1 failed" # the script died before its summary
    [[ $status != 0 ]] || status=1
fi
exit "$status"
