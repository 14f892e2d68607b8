"""schemathesis hooks for tests/schemathesis/run.sh.

The document states every rule a request can be checked against on its own.
What no schema can state is whether an id exists, whether a timestamp lies in
the future, whether an idempotency key was used before with another body,
whether a host name resolves, or which client secrets are registered. For
schema-valid (positive) cases only, these hooks put in the objects run.sh
created (an agreement and its metered feature, a webhook, an event, an M2M
client), a past timestamp, a fresh key and a resolvable endpoint, so that
`positive_data_acceptance` checks every other rule strictly. Negative cases
are left alone.
"""

import itertools
import json
import os
import urllib.request
import re
from datetime import datetime, timezone

import schemathesis

AGREEMENT = os.environ["KINDE_METER_AGREEMENT"]
FEATURE = os.environ["KINDE_METER_FEATURE"]
PLAN = os.environ["KINDE_METER_PLAN"]
EVENT = os.environ["KINDE_METER_EVENT"]
WEBHOOK = os.environ["KINDE_METER_WEBHOOK"]
URL = os.environ["KINDE_METER_URL"]
TOKEN = os.environ["KINDE_METER_TOKEN"]
CLIENT_ID = os.environ["KINDE_METER_CLIENT_ID"]
CLIENT_SECRET = os.environ["KINDE_METER_CLIENT_SECRET"]
ENDPOINT = "http://127.0.0.1:9/hook"
_counter = itertools.count()
THIS_YEAR = datetime.now(timezone.utc).year


def _new_webhook():
    """A webhook of its own for a positive DELETE to delete."""
    request = urllib.request.Request(
        f"{URL}/api/v1/webhooks",
        data=json.dumps(
            {"endpoint": ENDPOINT, "event_types": ["customer.plan_assigned"], "name": "to delete"}
        ).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["webhook"]["id"]


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _past(ts):
    """A timestamp of the same shape, moved to a year surely in the past."""
    if isinstance(ts, str) and re.match(r"^[0-9]{4}-", ts) and int(ts[:4]) >= THIS_YEAR - 1:
        return "2000" + ts[4:]
    return ts


def _record(record):
    if not isinstance(record, dict):
        return record
    record = dict(record)
    record["customer_agreement_id"] = AGREEMENT
    record["billing_feature_code"] = FEATURE
    if "meter_usage_timestamp" in record:
        record["meter_usage_timestamp"] = _past(record["meter_usage_timestamp"])
    return record


@schemathesis.hook
def map_case(ctx, case):
    if _positive(case):
        _substitute(case)
    return case


@schemathesis.hook
def before_add_examples(ctx, examples):
    # The document's examples are valid data: they refer to objects as well.
    for case in examples:
        _substitute(case)


def _substitute(case):
    path, method = case.operation.path, case.method.upper()
    body = case.body if isinstance(case.body, dict) else None
    query = case.query if isinstance(case.query, dict) else None
    if case.headers and "Idempotency-Key" in case.headers:
        key = str(case.headers["Idempotency-Key"])[:200]
        case.headers["Idempotency-Key"] = f"{key}-{next(_counter)}"
    if path == "/api/v1/billing/meter_usage" and method == "POST" and body is not None:
        case.body = _record(body)
    elif path == "/api/v1/billing/meter_usage/batch" and body is not None:
        if isinstance(body.get("records"), list):
            body["records"] = [_record(r) for r in body["records"]]
    elif path == "/api/v1/billing/meter_usage" and method == "GET" and query is not None:
        query["customer_agreement_id"] = AGREEMENT
        if query.get("billing_feature_code"):
            query["billing_feature_code"] = FEATURE
        at = query.get("at")
        if isinstance(at, str) and at[:10] in ("1970-01-01", "2199-12-31"):
            query["at"] = "1971" + at[4:] if at.startswith("1970") else at[:8] + "30" + at[10:]
    elif path == "/api/v1/billing/meter_usage/records" and query is not None:
        query["customer_agreement_id"] = AGREEMENT
        if query.get("billing_feature_code"):
            query["billing_feature_code"] = FEATURE
    elif path == "/api/v1/billing/agreements" and method == "POST" and body is not None:
        body["plan_code"] = PLAN
    elif path in ("/api/v1/billing/agreements", "/api/v1/billing/entitlements") and query is not None:
        # A cursor must name an item of the listing.
        query.pop("starting_after", None)
        query.pop("ending_before", None)
    elif path == "/api/v1/webhooks" and method == "POST" and body is not None:
        body["endpoint"] = ENDPOINT
    elif path == "/api/v1/webhooks/{webhook_id}":
        case.path_parameters["webhook_id"] = _new_webhook() if method == "DELETE" else WEBHOOK
        if method == "PATCH" and body is not None and body.get("endpoint") is not None:
            body["endpoint"] = ENDPOINT
    elif path == "/oauth2/token" and body is not None:
        body["client_id"] = CLIENT_ID
        body["client_secret"] = CLIENT_SECRET
        body["audience"] = f"{URL}/api"
    elif path == "/api/v1/events/{event_id}":
        case.path_parameters["event_id"] = EVENT
