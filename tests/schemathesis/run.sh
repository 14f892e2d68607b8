#!/usr/bin/env bash
# The published /openapi.json against the server, with schemathesis (PyPI, pinned)
# and every check: a request valid by the document must be accepted, an invalid
# one refused, and every answer must match its documented status, headers and
# schema.
#
# Builds and starts `kinde-meter serve` on a free port with a fresh data
# directory (rate limit off, webhooks to loopback allowed), mints a token with
# every scope, creates the objects that schema-valid requests refer to (an
# agreement, a webhook, an event, an M2M client; see hooks.py), installs schemathesis in a
# virtualenv under the cargo target directory (reused when present) and runs
#   schemathesis run <server>/openapi.json --checks all
# with a bounded number of examples per operation (about 2 minutes; more with
# SCHEMATHESIS_MAX_EXAMPLES).
# Needs python3 (>= 3.10, with the venv module) and network access to PyPI only.
#
# The last line printed is `N passed, M failed`: the operations of the run plus
# one for the stateful phase (setup failing counts as one failure); the exit
# status is non-zero when anything failed.
#
#   bash tests/schemathesis/run.sh
#   SCHEMATHESIS_MAX_EXAMPLES=200 bash tests/schemathesis/run.sh
set -euo pipefail

# The schemathesis version this contract is checked with. Bump deliberately.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
PYTHON="${PYTHON:-python3}"

source "$(dirname "$0")/../lib/harness.sh"

command -v "$PYTHON" >/dev/null 2>&1 || fail_setup "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || fail_setup "$PYTHON is older than 3.10"

log "build (cargo build -p kinde-meter)"
cargo build -p kinde-meter --locked >&2 || fail_setup "cargo build failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" \
    || fail_setup "cargo metadata failed"
BIN="$TARGET_DIR/debug/kinde-meter"
[[ -x $BIN ]] || fail_setup "$BIN was not built"

VENV="$TARGET_DIR/schemathesis-venv"
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
installed="$("$VPY" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)"
if [[ $installed != "$SCHEMATHESIS_VERSION" ]]; then
    log "pip install schemathesis==$SCHEMATHESIS_VERSION"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VPY" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
        || fail_setup "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
fi
log "schemathesis $("$VPY" -c 'import importlib.metadata as m; print(m.version("schemathesis"))')"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kinde-meter-schemathesis.XXXXXX")"
DATA="$WORK/data"

start_server --listen 127.0.0.1:0 --data-dir "$DATA" --rate-limit 0 --webhook-allow-private-networks

ALL_SCOPES="create:meter_usage read:meter_usage create:billing_agreements read:billing_agreements read:billing_entitlements"
ALL_SCOPES+=" create:webhooks read:webhooks update:webhooks delete:webhooks read:events read:event_types"
TOKEN="$("$BIN" token --data-dir "$DATA" --scope "$ALL_SCOPES")" || fail_setup "kinde-meter token failed"
# An M2M client, for the token endpoint's schema-valid requests.
CLIENT="$("$BIN" clients create --data-dir "$DATA" --name schemathesis --scopes "$ALL_SCOPES" --json)" \
    || fail_setup "kinde-meter clients create failed"
CLIENT_ID="$("$VPY" -c 'import json, sys; print(json.load(sys.stdin)["client_id"])' <<<"$CLIENT")"
CLIENT_SECRET="$("$VPY" -c 'import json, sys; print(json.load(sys.stdin)["client_secret"])' <<<"$CLIENT")"

# What schema-valid requests refer to: an agreement on the demo catalog's `pro`
# plan (storage_gb is metered without a hard limit), its events, a webhook.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
SEED="$(KINDE_METER_URL="$URL" KINDE_METER_TOKEN="$TOKEN" DATA="$DATA" "$VPY" - <<'PY'
import json, os, sqlite3, urllib.request
url, token = os.environ["KINDE_METER_URL"], os.environ["KINDE_METER_TOKEN"]
def call(method, path, body=None):
    request = urllib.request.Request(url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
call("POST", "/api/v1/billing/agreements", {"customer_id": "customer_schemathesis", "plan_code": "pro"})
agreement = call("GET", "/api/v1/billing/agreements?customer_id=customer_schemathesis")["agreements"][0]["id"]
webhook = call("POST", "/api/v1/webhooks", {"endpoint": "http://127.0.0.1:9/hook",
    "event_types": ["customer.plan_assigned"], "name": "schemathesis"})["webhook"]["id"]
db = sqlite3.connect(os.path.join(os.environ["DATA"], "kinde-meter.db"))
event = db.execute("SELECT id FROM events ORDER BY seq LIMIT 1").fetchone()[0]
print(agreement, webhook, event)
PY
)" || fail_setup "creating the agreement, webhook and event failed"
read -r AGREEMENT WEBHOOK EVENT <<<"$SEED"
log "agreement $AGREEMENT, webhook $WEBHOOK, event $EVENT"

log "schemathesis run $URL/openapi.json --checks all --max-examples $MAX_EXAMPLES"
SUMMARY_PRINTED=1
set +e
(
    cd "$WORK" # schemathesis keeps a cache in the working directory
    KINDE_METER_URL="$URL" KINDE_METER_TOKEN="$TOKEN" KINDE_METER_AGREEMENT="$AGREEMENT" \
        KINDE_METER_FEATURE=storage_gb KINDE_METER_PLAN=pro KINDE_METER_EVENT="$EVENT" \
        KINDE_METER_WEBHOOK="$WEBHOOK" KINDE_METER_CLIENT_ID="$CLIENT_ID" \
        KINDE_METER_CLIENT_SECRET="$CLIENT_SECRET" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$HERE" \
        PYTHONDONTWRITEBYTECODE=1 \
        "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "$URL/openapi.json" \
        --checks all \
        --max-examples "$MAX_EXAMPLES" \
        --seed "${SCHEMATHESIS_SEED:-1}" \
        --generation-database none \
        --no-color \
        --report junit --report-dir "$WORK/report"
) 2>&1 | tee "$WORK/run.out"
status=${PIPESTATUS[0]}
set -e
# The summary from the JUnit report: an operation passes when no phase found
# a failure or an error in it.
"$VPY" - "$WORK/report" <<'PY' || { echo "0 passed, 1 failed"; exit 1; }
import glob, sys, xml.etree.ElementTree as ET
outcome = {}
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for case in ET.parse(path).getroot().iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        outcome[case.get("name")] = outcome.get(case.get("name"), False) or bad
if not outcome:
    sys.exit(1)
failed = sum(outcome.values())
print(f"{len(outcome) - failed} passed, {failed} failed")
PY
[[ $status == 0 ]] || exit 1
exit 0
