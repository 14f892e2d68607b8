"""Create-call throughput of Kinde's official Python SDK from one process.

The counterpart of `cargo run --release -p kinde-sdk --example create_throughput`
(crates/kinde-sdk/examples/create_throughput.rs), with the same arguments:
`--calls` calls of `BillingMeterUsageApi.create_meter_usage_record`, each with
the value "1", spread round-robin over `--agreements`, `--concurrency` at a time.
`bench/sdk-vs-python/run.sh` runs both against one server; it is a benchmark,
not a test, and not part of tests/python/run.sh.

    target/python-venv/bin/python tests/python/sdk_create_throughput.py \
        --server http://127.0.0.1:8080 --token "$TOKEN" \
        --agreements agreement_…,agreement_… --calls 2000 --concurrency 16

Concurrency is threads: one shared `ApiClient` and `BillingMeterUsageApi`, C
threads calling it. That is safe here: the SDK's generated `ApiClient` keeps no
per-call state (each call serializes into locals and deserializes the response
it got back), and its `RESTClientObject` sends through one `urllib3.PoolManager`,
which urllib3 documents as thread-safe. The only change from the SDK's defaults
is `Configuration.connection_pool_maxsize = C` (the SDK's own knob, default
`cpu_count() * 5`, 10 on a 2-core machine): with fewer pooled connections than
threads, urllib3 would open and discard a connection per call beyond the pool,
which would measure connection set-up rather than the SDK. The GIL still lets
one thread run Python at a time, so threads overlap only the waiting on the
server: the way a Python application gets concurrency from this SDK without
multiprocessing.

Prints calls/s, latency percentiles and the process's CPU time during the calls
(`time.process_time()`, user + system), then one line `RESULT {json}`. Exits 1
if any call failed.
"""

import argparse
import itertools
import json
import math
import sys
import threading
import time

from kinde_sdk.management import ApiClient, BillingMeterUsageApi, Configuration
from kinde_sdk.management.models import CreateMeterUsageRecordRequest


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--agreements", required=True, help="comma-separated agreement ids")
    parser.add_argument("--feature", default="api_calls")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    args.agreements = [a for a in args.agreements.split(",") if a]
    if not args.agreements:
        parser.error("--agreements is empty")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def percentile(sorted_values, fraction):
    if not sorted_values:
        return 0.0
    rank = math.ceil(len(sorted_values) * fraction)
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def main():
    args = parse_args()
    configuration = Configuration(host=args.server.rstrip("/"), access_token=args.token)
    configuration.connection_pool_maxsize = max(args.concurrency, 1)
    api = BillingMeterUsageApi(ApiClient(configuration))

    counter = itertools.count()  # next() on it is atomic under the GIL
    lock = threading.Lock()
    latencies = []
    failures = []

    def worker():
        mine = []
        failed = []
        while True:
            call = next(counter)
            if call >= args.calls:
                break
            request = CreateMeterUsageRecordRequest(
                customer_agreement_id=args.agreements[call % len(args.agreements)],
                billing_feature_code=args.feature,
                meter_value="1",
                meter_type_code="delta",
            )
            started = time.perf_counter()
            try:
                api.create_meter_usage_record(request)
                mine.append(time.perf_counter() - started)
            except Exception as error:  # every failure is counted, the first one shown
                failed.append(repr(error))
        with lock:
            latencies.extend(mine)
            failures.extend(failed)

    cpu_before = time.process_time()
    started = time.perf_counter()
    if args.concurrency == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before

    latencies.sort()
    ok = len(latencies)
    failed = len(failures)
    calls_per_s = ok / seconds
    p50 = percentile(latencies, 0.50) * 1e3
    p99 = percentile(latencies, 0.99) * 1e3
    cpu_us_per_call = cpu * 1e6 / max(ok + failed, 1)
    print(
        f"kinde-python-sdk: {ok} ok, {failed} failed in {seconds:.2f} s at concurrency "
        f"{args.concurrency}: {calls_per_s:.0f} calls/s, p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
        f"client CPU {cpu:.2f} s ({cpu_us_per_call:.0f} µs per call)"
    )
    if failures:
        print(f"first error: {failures[0]}", file=sys.stderr)
    result = {
        "client": "kinde-python-sdk",
        "concurrency": args.concurrency,
        "calls": args.calls,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        "calls_per_s": calls_per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_s": cpu,
        "cpu_us_per_call": cpu_us_per_call,
    }
    print("RESULT " + json.dumps(result))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
