#!/usr/bin/env bash
# Create calls from one process: kinde-sdk (Rust) against Kinde's official
# kinde-python-sdk, on the same kinde-meter server, in the same run (issue 11's
# target: the Rust SDK ≥ 10 × the Python SDK's calls/s).
#
# Builds the release server and the SDK's create_throughput example, installs the
# pinned kinde-python-sdk in the virtualenv tests/python/run.sh uses (the pin is
# read from that script), starts `kinde-meter serve --rate-limit 0` on a fresh
# data directory, mints a token, and then, for each concurrency:
#   1. a short pilot run of each client, to size the real run to about
#      DURATION seconds;
#   2. the Python run, then the Rust run, each on agreements of its own, each
#      making exactly N calls of create_meter_usage_record with the value 1;
#   3. the usage read back (GET /api/v1/billing/meter_usage) of each run's
#      agreements, which must equal the calls each client counted as acknowledged.
# Prints one table with the ratio from the same run, and the load average.
# A benchmark: slow (about a minute per concurrency), not part of CI.
#
#   bash bench/sdk-vs-python/run.sh
#   CONCURRENCY="1 16 64" DURATION=10 AGREEMENTS=8 bash bench/sdk-vs-python/run.sh
#   SERVER_BIN=… RUST_CLIENT_BIN=… bash bench/sdk-vs-python/run.sh   # no build
#
# Needs python3 (>= 3.9, with venv) and PyPI access for the first install.
# Exits non-zero when a call failed or stored usage differs from acknowledged.
set -euo pipefail

CONCURRENCY="${CONCURRENCY:-1 16 64}"
DURATION="${DURATION:-10}"
AGREEMENTS="${AGREEMENTS:-8}"
PYTHON="${PYTHON:-python3}"

# The same start/stop of the server as the compatibility harnesses; this is not
# a test, so no `N passed, M failed` line.
source "$(dirname "$0")/../../tests/lib/harness.sh"
SUMMARY_PRINTED=1

# The SDK version tests/python/run.sh pins, so both use one virtualenv and one pin.
SDK_VERSION="${KINDE_PYTHON_SDK_VERSION:-$(sed -nE 's/^SDK_VERSION="\$\{KINDE_PYTHON_SDK_VERSION:-(.+)\}"$/\1/p' tests/python/run.sh)}"
[[ -n $SDK_VERSION ]] || fail_setup "cannot read SDK_VERSION from tests/python/run.sh"

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --locked \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" \
    || fail_setup "cargo metadata failed"
if [[ -z ${SERVER_BIN:-} || -z ${RUST_CLIENT_BIN:-} ]]; then
    log "build (release): kinde-meter and the kinde-sdk example create_throughput"
    cargo build --release --locked -p kinde-meter >&2 || fail_setup "cargo build failed"
    cargo build --release --locked -p kinde-sdk --example create_throughput >&2 \
        || fail_setup "cargo build failed"
fi
BIN="${SERVER_BIN:-$TARGET_DIR/release/kinde-meter}"
RUST_CLIENT="${RUST_CLIENT_BIN:-$TARGET_DIR/release/examples/create_throughput}"
[[ -x $BIN && -x $RUST_CLIENT ]] || fail_setup "$BIN or $RUST_CLIENT missing"

VENV="$TARGET_DIR/python-venv"
VPY="$VENV/bin/python"
if [[ ! -x $VPY ]] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    log "virtualenv $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2 || fail_setup "cannot create a virtualenv with $PYTHON"
fi
installed="$("$VPY" -c 'import importlib.metadata as m; print(m.version("kinde-python-sdk"))' 2>/dev/null || true)"
if [[ $installed != "$SDK_VERSION" ]]; then
    log "pip install kinde-python-sdk==$SDK_VERSION"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VPY" -m pip install --quiet "kinde-python-sdk==$SDK_VERSION" >&2 \
        || fail_setup "pip install kinde-python-sdk==$SDK_VERSION failed"
fi
PY_CLIENT="$ROOT/tests/python/sdk_create_throughput.py"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kinde-meter-sdk-vs-python.XXXXXX")"
DATA="$WORK/data"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
start_server --listen 127.0.0.1:0 --data-dir "$DATA" --rate-limit 0
TOKEN="$("$BIN" token --data-dir "$DATA")" || fail_setup "kinde-meter token failed"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# `AGREEMENTS` new agreements on the demo plan `pro`, comma-separated.
new_agreements() {
    local ids=() i
    for i in $(seq 1 "$AGREEMENTS"); do
        ids+=("$("$BIN" agreements create --customer-id "bench_$1_$i" --plan-code pro \
            --server "$URL" --token "$TOKEN")") || fail_setup "agreements create failed"
    done
    local IFS=,
    echo "${ids[*]}"
}

# The server's user + system CPU so far, in clock ticks.
server_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SERVER_PID/stat"; }

# The api_calls usage stored for the comma-separated agreements, summed.
stored_usage() {
    "$VPY" - "$URL" "$TOKEN" "$1" <<'EOF'
import json, sys, urllib.request
from decimal import Decimal
url, token, agreements = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
total = Decimal(0)
for agreement in agreements:
    request = urllib.request.Request(
        f"{url}/api/v1/billing/meter_usage?customer_agreement_id={agreement}&billing_feature_code=api_calls",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request) as response:
        usage = json.load(response)["usage"]
    total += sum(Decimal(u["value"]) for u in usage)
print(total)
EOF
}

# run CLIENT(rust|python) C N LABEL: one run on fresh agreements; appends its RESULT,
# the server's CPU and the stored usage to $WORK/results.jsonl.
run_client() {
    local client=$1 concurrency=$2 calls=$3 label=$4 agreements out ticks_before ticks_after
    agreements="$(new_agreements "${label}_${client}_c${concurrency}")"
    out="$WORK/$label-$client-c$concurrency.out"
    ticks_before="$(server_ticks)"
    local cmd=(--server "$URL" --token "$TOKEN" --agreements "$agreements"
        --calls "$calls" --concurrency "$concurrency")
    local status=0
    if [[ $client == rust ]]; then
        "$RUST_CLIENT" "${cmd[@]}" >"$out" || status=$?
    else
        PYTHONDONTWRITEBYTECODE=1 "$VPY" "$PY_CLIENT" "${cmd[@]}" >"$out" || status=$?
    fi
    ticks_after="$(server_ticks)"
    grep -v '^RESULT ' "$out" >&2 || true
    local result stored
    result="$(sed -n 's/^RESULT //p' "$out")"
    [[ -n $result ]] || fail_setup "$client at concurrency $concurrency printed no RESULT (exit $status)"
    stored="$(stored_usage "$agreements")" || fail_setup "reading the usage back failed"
    "$VPY" -c 'import json, sys
r = json.loads(sys.argv[1]); r.update(label=sys.argv[2], stored=sys.argv[3], server_cpu_s=int(sys.argv[4]) / 100, exit=int(sys.argv[5]))
print(json.dumps(r))' "$result" "$label" "$stored" "$((ticks_after - ticks_before))" "$status" >>"$WORK/results.jsonl"
    # The calls/s of this run, for sizing the next.
    "$VPY" -c 'import json, sys; print(json.loads(sys.argv[1])["calls_per_s"])' "$result"
}

# Calls for a run of about DURATION seconds at `rate` calls/s (at least 100).
calls_for() { "$VPY" -c 'import sys; print(max(100, int(float(sys.argv[1]) * float(sys.argv[2]))))' "$1" "$DURATION"; }

for c in $CONCURRENCY; do
    log "concurrency $c: pilot runs"
    py_rate="$(run_client python "$c" $((50 * c > 200 ? 50 * c : 200)) pilot)"
    rust_rate="$(run_client rust "$c" $((500 * c > 2000 ? 500 * c : 2000)) pilot)"
    py_calls="$(calls_for "$py_rate")"
    rust_calls="$(calls_for "$rust_rate")"
    log "concurrency $c: python $py_calls calls, rust $rust_calls calls (about ${DURATION} s each)"
    run_client python "$c" "$py_calls" run >/dev/null
    run_client rust "$c" "$rust_calls" run >/dev/null
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

"$VPY" - "$WORK/results.jsonl" "$SDK_VERSION" "$LOAD_START" "$LOAD_END" <<'EOF'
import json, sys
from decimal import Decimal
path, sdk_version, load_start, load_end = sys.argv[1:]
runs = [json.loads(line) for line in open(path)]
bad = [r for r in runs if r["failed"] or r["exit"] or Decimal(r["stored"]) != r["ok"]]
for r in bad:
    print(f"FAILED: {r['client']} {r['label']} concurrency {r['concurrency']}: "
          f"{r['ok']} acknowledged, {r['failed']} failed, stored {r['stored']}", file=sys.stderr)
main = [r for r in runs if r["label"] == "run"]
print()
print(f"kinde-sdk (Rust) vs kinde-python-sdk {sdk_version}, create_meter_usage_record, one process each, "
      f"same server (--rate-limit 0, SQLite); load average {load_start} at the start, {load_end} at the end")
print()
print("| concurrency | client | calls | calls/s | p50 ms | p99 ms | client CPU µs/call | server CPU µs/call | stored = acknowledged |")
print("|---|---|---|---|---|---|---|---|---|")
for r in main:
    print(f"| {r['concurrency']} | {r['client']} | {r['ok']} | {r['calls_per_s']:.0f} | {r['p50_ms']:.3f} | "
          f"{r['p99_ms']:.3f} | {r['cpu_us_per_call']:.0f} | {r['server_cpu_s'] * 1e6 / max(r['ok'], 1):.0f} | "
          f"{'yes' if Decimal(r['stored']) == r['ok'] else 'NO'} |")
print()
print("| concurrency | Rust / Python calls/s | Python / Rust client CPU per call |")
print("|---|---|---|")
for c in sorted({r["concurrency"] for r in main}):
    py = next(r for r in main if r["concurrency"] == c and r["client"] == "kinde-python-sdk")
    rs = next(r for r in main if r["concurrency"] == c and r["client"] != "kinde-python-sdk")
    print(f"| {c} | {rs['calls_per_s'] / py['calls_per_s']:.1f} × | "
          f"{py['cpu_us_per_call'] / max(rs['cpu_us_per_call'], 1e-9):.1f} × |")
sys.exit(1 if bad else 0)
EOF
