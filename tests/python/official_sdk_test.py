"""Wire compatibility: Kinde's official Python SDK against a running kinde-meter.

Uses only the classes of the official `kinde-python-sdk` package (pinned in
run.sh): `Configuration`, `ApiClient`, `BillingAgreementsApi`,
`BillingMeterUsageApi`, `BillingEntitlementsApi`, `WebhooksApi`, their
request/response models and the SDK's own exception classes. The calls the SDK has no method for (our
usage read-back `GET /api/v1/billing/meter_usage` and usage check
`GET /api/v1/billing/entitlements/check`, which Kinde lacks) go through the SDK's
own `ApiClient.param_serialize` / `call_api` / `response_deserialize`.

The server runs with run.sh's catalog.toml: the demo catalog's plans plus
`capped`, whose `api_calls` has an enforced limit of 10; and with
--webhook-allow-private-networks, so that webhooks may point at the receiver
this script starts on 127.0.0.1.

Environment (run.sh sets them):
  KINDE_METER_URL         the server, e.g. http://127.0.0.1:PORT
  KINDE_METER_TOKEN       a token with every scope
  KINDE_METER_READ_TOKEN  a token with only read:meter_usage (no entitlements)

Talks to nothing but that URL (and its own webhook receiver on 127.0.0.1). Prints one line per test and, last, a line
`N passed, M failed`; the exit status is non-zero when a test failed.
"""

import base64
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kinde_sdk.management import (
    ApiClient,
    BillingAgreementsApi,
    BillingEntitlementsApi,
    BillingMeterUsageApi,
    Configuration,
    WebhooksApi,
)
from kinde_sdk.management.exceptions import (
    ApiException,
    BadRequestException,
    ForbiddenException,
)
from kinde_sdk.management.models import (
    CreateBillingAgreementRequest,
    CreateMeterUsageRecordRequest,
    CreateMeterUsageRecordResponse,
    CreateWebHookRequest,
    CreateWebhookResponse,
    CreateWebhookResponseWebhook,
    DeleteWebhookResponse,
    ErrorResponse,
    EventType,
    GetBillingAgreementsResponse,
    GetBillingEntitlementsResponse,
    GetBillingEntitlementsResponseEntitlementsInner,
    GetBillingEntitlementsResponsePlansInner,
    GetEventResponse,
    GetEventResponseEvent,
    GetEventTypesResponse,
    GetWebhooksResponse,
    SuccessResponse,
    UpdateWebHookRequest,
    UpdateWebhookResponse,
    Webhook,
)

URL = os.environ["KINDE_METER_URL"].rstrip("/")
TOKEN = os.environ["KINDE_METER_TOKEN"]
READ_TOKEN = os.environ["KINDE_METER_READ_TOKEN"]

# A run-unique prefix, so that reruns against one data directory do not collide.
RUN = uuid.uuid4().hex[:12]


# --- the SDK, configured the documented way: host and access_token ---------------


def client(token=TOKEN):
    """An ApiClient for our server, configured only through `host` and `access_token`."""
    return ApiClient(Configuration(host=URL, access_token=token))


def agreements_api(token=TOKEN):
    return BillingAgreementsApi(client(token))


def meter_usage_api(token=TOKEN):
    return BillingMeterUsageApi(client(token))


def entitlements_api(token=TOKEN):
    return BillingEntitlementsApi(client(token))


def webhooks_api(token=TOKEN):
    return WebhooksApi(client(token))


def new_customer():
    return f"customer_py_{RUN}_{uuid.uuid4().hex[:8]}"


def new_agreement(plan_code="pro", customer_id=None):
    """Creates an agreement with the SDK and finds its id by listing (Kinde's create
    answers only {message, code})."""
    customer_id = customer_id or new_customer()
    api = agreements_api()
    created = api.create_billing_agreement(
        CreateBillingAgreementRequest(customer_id=customer_id, plan_code=plan_code)
    )
    assert isinstance(created, SuccessResponse), type(created)
    listed = api.get_billing_agreements(customer_id=customer_id, page_size=1)
    assert listed.agreements, listed
    return customer_id, listed.agreements[0]


def record(agreement_id, feature, value, *, timestamp=None, meter_type=None, token=TOKEN, headers=None):
    kwargs = {}
    if timestamp is not None:
        kwargs["meter_usage_timestamp"] = timestamp
    if meter_type is not None:
        kwargs["meter_type_code"] = meter_type
    request = CreateMeterUsageRecordRequest(
        customer_agreement_id=agreement_id,
        billing_feature_code=feature,
        meter_value=value,
        **kwargs,
    )
    return meter_usage_api(token).create_meter_usage_record(request, _headers=headers)


def extension_get(path, query, token=TOKEN):
    """A GET of one of our extensions, through the SDK's own ApiClient machinery
    (so errors come back as the SDK's exceptions); the answer as a dict."""
    api_client = client(token)
    params = api_client.param_serialize(
        method="GET",
        resource_path=path,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["kindeBearerAuth"],
    )
    response = api_client.call_api(*params)
    response.read()
    return api_client.response_deserialize(
        response_data=response,
        response_types_map={"200": "object", "400": "ErrorResponse", "403": "ErrorResponse"},
    ).data


def read_usage(agreement_id, feature=None, token=TOKEN):
    """Our extension `GET /api/v1/billing/meter_usage`."""
    query = [("customer_agreement_id", agreement_id)]
    if feature is not None:
        query.append(("billing_feature_code", feature))
    return extension_get("/api/v1/billing/meter_usage", query, token)


def check_entitlement(customer_id, feature, quantity=None, token=TOKEN):
    """Our extension `GET /api/v1/billing/entitlements/check`."""
    query = [("customer_id", customer_id), ("feature_code", feature)]
    if quantity is not None:
        query.append(("quantity", quantity))
    return extension_get("/api/v1/billing/entitlements/check", query, token)


def usage_of(agreement_id, feature):
    body = read_usage(agreement_id, feature)
    assert body["code"] == "OK", body
    rows = [u for u in body["usage"] if u["billing_feature_code"] == feature]
    assert len(rows) == 1, body
    return rows[0]


def expect_error(exception_class, status, code, call):
    """Runs `call`, expects the SDK to raise `exception_class` with that status and a
    body that parses (both by us and by the SDK) to errors[0].code == code."""
    try:
        result = call()
    except ApiException as e:
        assert type(e) is exception_class, f"expected {exception_class.__name__}, got {type(e).__name__}: {e}"
        assert e.status == status, e.status
        assert e.body, "the exception carries no body"
        parsed = json.loads(e.body)
        assert isinstance(parsed, dict) and isinstance(parsed.get("errors"), list), parsed
        assert parsed["errors"][0]["code"] == code, parsed
        assert parsed["errors"][0]["message"], parsed
        # The SDK itself deserialised the body into its ErrorResponse model.
        assert isinstance(e.data, ErrorResponse), f"e.data is {e.data!r}"
        assert e.data.errors[0].code == code, e.data
        assert e.data.errors[0].message == parsed["errors"][0]["message"], e.data
        assert e.headers.get("content-type", "").startswith("application/json"), e.headers
        return e
    raise AssertionError(f"expected {exception_class.__name__} ({code}), the call returned {result!r}")


# --- a webhook receiver on 127.0.0.1 ------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and keeps what it got."""

    def __init__(self):
        self.deliveries = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                with receiver.arrived:
                    receiver.deliveries.append({"headers": dict(self.headers), "body": body})
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/kinde/webhooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout=30):
        """The first delivery whose claims satisfy `predicate` (claims read without
        verifying the signature: tests/node checks that with @kinde/webhooks)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for delivery in self.deliveries:
                    claims = jwt_claims(delivery["body"])
                    if predicate(claims):
                        return delivery, claims
                left = deadline - time.monotonic()
                assert left > 0, f"no matching delivery within {timeout} s: {self.deliveries}"
                self.arrived.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def jwt_part(token, index):
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_claims(token):
    return jwt_part(token, 1)


def parse_rfc3339(text):
    """An RFC 3339 time as an aware datetime; fractions (jiff writes up to 9 digits)
    are cut to whole seconds, which Python 3.9's fromisoformat would not take."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    offset = "+00:00" if match.group(2) == "Z" else match.group(2)
    return datetime.fromisoformat(match.group(1) + offset)


def unix_seconds(rfc3339):
    return int(parse_rfc3339(rfc3339).timestamp())


BILLING_EVENT_TYPES = [
    "customer.agreement_created",
    "customer.plan_assigned",
    "customer.plan_changed",
    "customer.agreement_cancelled",
    "customer.meter_usage_updated",
    "customer.entitlement_threshold_reached",
]


# --- the tests ----------------------------------------------------------------------


def test_create_agreement():
    api = agreements_api()
    customer = new_customer()
    response = api.create_billing_agreement_with_http_info(
        CreateBillingAgreementRequest(customer_id=customer, plan_code="pro", is_invoice_now=False, is_prorate=True)
    )
    assert response.status_code == 200, response.status_code
    assert isinstance(response.data, SuccessResponse), type(response.data)
    assert response.data.code == "OK" and response.data.message == "Success", response.data
    assert json.loads(response.raw_data) == {"message": "Success", "code": "OK"}, response.raw_data


def test_list_agreements():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    customer, _ = new_agreement("pro")
    after = datetime.now(timezone.utc)
    response = agreements_api().get_billing_agreements_with_http_info(customer_id=customer)
    assert response.status_code == 200
    listed = response.data
    assert isinstance(listed, GetBillingAgreementsResponse), type(listed)
    assert listed.code == "OK" and listed.message == "Success", listed
    assert listed.has_more is False, listed
    assert len(listed.agreements) == 1, listed
    a = listed.agreements[0]
    assert a.id.startswith("agreement_"), a.id
    assert a.plan_code == "pro", a
    assert a.expires_on is None, a
    assert a.billing_group_id == "saas", a
    # Parsed by the SDK into timezone-aware datetimes.
    assert a.current_period_start.tzinfo is not None and a.current_period_end.tzinfo is not None, a
    assert before <= a.current_period_start <= after, (before, a.current_period_start, after)
    assert a.current_period_start < a.current_period_end, a
    assert 28 <= (a.current_period_end - a.current_period_start).days <= 31, a  # a monthly plan
    codes = sorted(e.feature_code for e in a.entitlements)
    assert codes == ["api_calls", "sso", "storage_gb"], codes
    assert all(e.entitlement_id for e in a.entitlements), a.entitlements


def test_list_agreements_newest_first_paging_and_filter():
    customer, first = new_agreement("starter")
    time.sleep(0.05)
    _, second = new_agreement("pro", customer_id=customer)
    api = agreements_api()
    listed = api.get_billing_agreements(customer_id=customer)
    assert [a.id for a in listed.agreements] == [second.id, first.id], listed
    newest, ended = listed.agreements
    # Creating an agreement ends the customer's other active agreements, as Kinde does.
    assert newest.expires_on is None, newest
    assert ended.expires_on is not None and ended.expires_on.tzinfo is not None, ended
    assert ended.current_period_start is None and ended.current_period_end is None, ended
    page = api.get_billing_agreements(customer_id=customer, page_size=1)
    assert page.has_more is True and [a.id for a in page.agreements] == [second.id], page
    page = api.get_billing_agreements(customer_id=customer, page_size=1, starting_after=second.id)
    assert page.has_more is False and [a.id for a in page.agreements] == [first.id], page
    page = api.get_billing_agreements(customer_id=customer, page_size=1, ending_before=first.id)
    assert [a.id for a in page.agreements] == [second.id], page
    filtered = api.get_billing_agreements(customer_id=customer, feature_code="storage_gb")
    assert [a.id for a in filtered.agreements] == [second.id], filtered
    nobody = api.get_billing_agreements(customer_id=new_customer())
    assert nobody.agreements == [] and nobody.has_more is False, nobody


def test_record_delta_and_read_back_exact_decimal():
    _, a = new_agreement("pro")
    response = record(a.id, "api_calls", "5")
    assert isinstance(response, CreateMeterUsageRecordResponse), type(response)
    assert response.message == "Success" and response.code == "OK", response
    record(a.id, "api_calls", "0.1", meter_type="delta")
    record(a.id, "api_calls", "0.2")
    usage = usage_of(a.id, "api_calls")
    assert usage["value"] == "5.3", usage  # exact decimal, never 5.300000000000001
    assert usage["record_count"] == 3, usage
    assert usage["last_recorded_at"] is not None, usage
    # The period read back is the agreement's current period as listed.
    assert datetime.fromisoformat(usage["period_start"].replace("Z", "+00:00")) == a.current_period_start, (usage, a)
    assert datetime.fromisoformat(usage["period_end"].replace("Z", "+00:00")) == a.current_period_end, (usage, a)
    # A feature without records reads "0".
    untouched = usage_of(a.id, "storage_gb")
    assert untouched["value"] == "0" and untouched["record_count"] == 0, untouched
    assert untouched["last_recorded_at"] is None, untouched
    # The whole-agreement read lists every metered feature of the plan.
    everything = read_usage(a.id)
    assert sorted(u["billing_feature_code"] for u in everything["usage"]) == ["api_calls", "storage_gb"], everything


def test_large_values_are_exact_and_canonical():
    _, a = new_agreement("pro")
    record(a.id, "api_calls", "999999999999999999")
    record(a.id, "api_calls", "0.000000001")
    record(a.id, "api_calls", "007.500000000")
    assert usage_of(a.id, "api_calls")["value"] == "1000000000000000006.500000001"


def test_absolute_with_timezone_aware_datetimes():
    _, a = new_agreement("pro")
    time.sleep(1.1)  # timestamps below are inside the agreement's first period
    t = datetime.now(timezone.utc) - timedelta(milliseconds=500)
    record(a.id, "storage_gb", "10", timestamp=t - timedelta(milliseconds=300))
    record(a.id, "storage_gb", "100.25", timestamp=t, meter_type="absolute")
    assert usage_of(a.id, "storage_gb")["value"] == "100.25"
    # A delta timed before the absolute changes nothing; one after it adds.
    record(a.id, "storage_gb", "7", timestamp=t - timedelta(milliseconds=100))
    assert usage_of(a.id, "storage_gb")["value"] == "100.25"
    # The same instant written with a +11:00 offset, 50 ms after the absolute.
    sydney = timezone(timedelta(hours=11))
    record(a.id, "storage_gb", "0.75", timestamp=(t + timedelta(milliseconds=50)).astimezone(sydney))
    usage = usage_of(a.id, "storage_gb")
    assert usage["value"] == "101", usage
    assert usage["record_count"] == 4, usage


def test_naive_datetime_is_read_as_utc():
    # The SDK accepts a naive datetime and sends `datetime.isoformat()` without an
    # offset; the server reads it as UTC.
    _, a = new_agreement("pro")
    time.sleep(1.5)
    aware = datetime.now(timezone.utc) - timedelta(seconds=1)
    naive = aware.replace(tzinfo=None)
    assert naive.isoformat()[-6] not in "+-", naive.isoformat()
    record(a.id, "storage_gb", "10", timestamp=aware, meter_type="absolute")
    record(a.id, "storage_gb", "20", timestamp=naive - timedelta(milliseconds=200), meter_type="absolute")
    assert usage_of(a.id, "storage_gb")["value"] == "10"  # the naive one is 200 ms earlier
    record(a.id, "storage_gb", "30", timestamp=naive + timedelta(milliseconds=200), meter_type="absolute")
    assert usage_of(a.id, "storage_gb")["value"] == "30"  # and this one 200 ms later
    # A naive time 10 minutes ahead (in UTC) is in the future.
    expect_error(
        BadRequestException,
        400,
        "TIMESTAMP_IN_FUTURE",
        lambda: record(a.id, "storage_gb", "1", timestamp=naive + timedelta(minutes=10)),
    )


def test_idempotency_key_through_sdk_headers():
    _, a = new_agreement("pro")
    key = f"py-{RUN}-{uuid.uuid4().hex}"
    for _ in range(3):
        response = record(a.id, "api_calls", "4", headers={"Idempotency-Key": key})
        assert response.code == "OK", response
    usage = usage_of(a.id, "api_calls")
    assert usage["value"] == "4" and usage["record_count"] == 1, usage
    expect_error(
        BadRequestException,
        400,
        "IDEMPOTENCY_KEY_REUSED",
        lambda: record(a.id, "api_calls", "5", headers={"Idempotency-Key": key}),
    )


def test_400_invalid_meter_value():
    _, a = new_agreement("pro")
    for bad in ["-1", "1e3", ".5", "5.", "1.0000000001", " 1", "", "abc"]:
        e = expect_error(BadRequestException, 400, "INVALID_METER_VALUE", lambda: record(a.id, "api_calls", bad))
        assert "meter_value" in e.data.errors[0].message, e.data
    assert usage_of(a.id, "api_calls")["record_count"] == 0


def test_400_unknown_agreement():
    expect_error(
        BadRequestException,
        400,
        "AGREEMENT_NOT_FOUND",
        lambda: record("agreement_00000000000000000000000000000000", "api_calls", "1"),
    )


def test_400_feature_and_agreement_state():
    customer, a = new_agreement("pro")
    expect_error(BadRequestException, 400, "FEATURE_NOT_FOUND", lambda: record(a.id, "no_such_feature", "1"))
    expect_error(BadRequestException, 400, "FEATURE_NOT_METERED", lambda: record(a.id, "sso", "1"))
    new_agreement("starter", customer_id=customer)  # ends `a`
    expect_error(BadRequestException, 400, "AGREEMENT_NOT_ACTIVE", lambda: record(a.id, "api_calls", "1"))


def test_400_unknown_plan():
    expect_error(
        BadRequestException,
        400,
        "PLAN_NOT_FOUND",
        lambda: agreements_api().create_billing_agreement(
            CreateBillingAgreementRequest(customer_id=new_customer(), plan_code="no_such_plan")
        ),
    )


def test_403_bad_token():
    _, a = new_agreement("pro")
    forged = TOKEN[:-4] + ("AAAA" if not TOKEN.endswith("AAAA") else "BBBB")
    for bad in ["not-a-jwt", forged]:
        expect_error(
            ForbiddenException, 403, "INVALID_CREDENTIALS", lambda: record(a.id, "api_calls", "1", token=bad)
        )
        expect_error(
            ForbiddenException,
            403,
            "INVALID_CREDENTIALS",
            lambda: agreements_api(bad).get_billing_agreements(customer_id=new_customer()),
        )
    # No access_token at all: the SDK sends no Authorization header.
    expect_error(
        ForbiddenException,
        403,
        "INVALID_CREDENTIALS",
        lambda: BillingMeterUsageApi(ApiClient(Configuration(host=URL))).create_meter_usage_record(
            CreateMeterUsageRecordRequest(customer_agreement_id=a.id, billing_feature_code="api_calls", meter_value="1")
        ),
    )
    assert usage_of(a.id, "api_calls")["record_count"] == 0


def test_403_insufficient_scope():
    customer, a = new_agreement("pro")
    expect_error(
        ForbiddenException, 403, "INSUFFICIENT_SCOPE", lambda: record(a.id, "api_calls", "1", token=READ_TOKEN)
    )
    expect_error(
        ForbiddenException,
        403,
        "INSUFFICIENT_SCOPE",
        lambda: agreements_api(READ_TOKEN).create_billing_agreement(
            CreateBillingAgreementRequest(customer_id=customer, plan_code="pro")
        ),
    )
    expect_error(
        ForbiddenException,
        403,
        "INSUFFICIENT_SCOPE",
        lambda: agreements_api(READ_TOKEN).get_billing_agreements(customer_id=customer),
    )
    # The token's one scope does allow reading usage.
    body = read_usage(a.id, "api_calls", token=READ_TOKEN)
    assert body["usage"][0]["value"] == "0" and body["usage"][0]["record_count"] == 0, body


def test_list_entitlements_typed():
    customer, a = new_agreement("pro")
    record(a.id, "api_calls", "5.5")
    api = entitlements_api()
    response = api.get_billing_entitlements_with_http_info(customer_id=customer, expand="plans")
    assert response.status_code == 200, response.status_code
    listed = response.data
    assert isinstance(listed, GetBillingEntitlementsResponse), type(listed)
    assert listed.code == "OK" and listed.message == "Success" and listed.has_more is False, listed
    assert all(isinstance(e, GetBillingEntitlementsResponseEntitlementsInner) for e in listed.entitlements), listed
    # The same ids as the agreements listing, in the catalog's order.
    assert [e.id for e in listed.entitlements] == [e.entitlement_id for e in a.entitlements], (listed, a)
    assert [e.feature_code for e in listed.entitlements] == ["api_calls", "storage_gb", "sso"], listed
    api_calls, storage, sso = listed.entitlements
    # Integers are ints, terms the catalog leaves out are None (the SDK's models
    # are strict: a float or a string would not have parsed).
    assert (api_calls.fixed_charge, api_calls.unit_amount) == (None, 2), api_calls
    assert type(api_calls.unit_amount) is int and type(api_calls.entitlement_limit_max) is int, api_calls
    assert (api_calls.entitlement_limit_max, api_calls.entitlement_limit_min) == (1000000, None), api_calls
    assert (api_calls.price_name, api_calls.feature_name) == ("API calls", "API calls"), api_calls
    assert (storage.unit_amount, storage.entitlement_limit_max) == (10, None), storage
    assert (sso.fixed_charge, sso.unit_amount, sso.entitlement_limit_max) == (1500, None, None), sso
    assert sso.price_name == "Single sign-on" and sso.feature_name == "Single sign-on", sso
    # expand=plans: the active plan, subscribed_on its start (a tz-aware datetime).
    assert len(listed.plans) == 1 and isinstance(listed.plans[0], GetBillingEntitlementsResponsePlansInner), listed
    assert listed.plans[0].code == "pro", listed.plans
    assert listed.plans[0].subscribed_on == a.current_period_start, (listed.plans, a)
    # kinde-meter's usage fields ride along in the raw JSON, on metered features only.
    raw = {e["feature_code"]: e for e in json.loads(response.raw_data)["entitlements"]}
    assert (raw["api_calls"]["consumed"], raw["api_calls"]["remaining"]) == (5.5, 999994.5), raw
    assert (raw["storage_gb"]["consumed"], raw["storage_gb"]["remaining"]) == (0, None), raw
    assert "consumed" not in raw["sso"] and "current_period_end" not in raw["sso"], raw
    # Without expand there are no plans.
    assert api.get_billing_entitlements(customer_id=customer).plans is None


def test_list_entitlements_paging_and_max_value():
    customer, a = new_agreement("pro")
    api = entitlements_api()
    everything = [e.id for e in api.get_billing_entitlements(customer_id=customer).entitlements]
    page = api.get_billing_entitlements(customer_id=customer, page_size=2)
    assert page.has_more is True and [e.id for e in page.entitlements] == everything[:2], page
    page = api.get_billing_entitlements(customer_id=customer, page_size=2, starting_after=everything[1])
    assert page.has_more is False and [e.id for e in page.entitlements] == everything[2:], page
    page = api.get_billing_entitlements(customer_id=customer, page_size=1, ending_before=everything[2])
    assert page.has_more is True and [e.id for e in page.entitlements] == [everything[1]], page
    # max_value (a string in the SDK) stands in for unlimited only.
    limits = {
        e.feature_code: e.entitlement_limit_max
        for e in api.get_billing_entitlements(customer_id=customer, max_value="777").entitlements
    }
    assert limits == {"api_calls": 1000000, "storage_gb": 777, "sso": 777}, limits
    nobody = api.get_billing_entitlements(customer_id=new_customer(), expand="plans")
    assert nobody.entitlements == [] and nobody.has_more is False and nobody.plans == [], nobody
    expect_error(
        BadRequestException,
        400,
        "NOT_FOUND",
        lambda: api.get_billing_entitlements(customer_id=customer, starting_after="entitlement_nope"),
    )
    expect_error(
        BadRequestException, 400, "INVALID_FIELD", lambda: api.get_billing_entitlements(customer_id=customer, max_value="ten")
    )
    expect_error(
        BadRequestException,
        400,
        "AGREEMENT_NOT_FOUND",
        lambda: agreements_api().get_billing_agreements(customer_id=customer, starting_after="agreement_nope"),
    )
    expect_error(
        ForbiddenException,
        403,
        "INSUFFICIENT_SCOPE",
        lambda: entitlements_api(READ_TOKEN).get_billing_entitlements(customer_id=customer),
    )


def test_hard_limit_refusal_and_usage_check():
    customer, a = new_agreement("capped")
    record(a.id, "api_calls", "9.5")
    check = check_entitlement(customer, "api_calls", "0.5")
    assert check["allowed"] is True and check["consumed"] == "9.5" and check["remaining"] == "0.5", check
    assert check_entitlement(customer, "api_calls")["allowed"] is False
    e = expect_error(BadRequestException, 400, "ENTITLEMENT_LIMIT_EXCEEDED", lambda: record(a.id, "api_calls", "1"))
    assert e.data.errors[0].message, e.data
    usage = usage_of(a.id, "api_calls")
    assert usage["value"] == "9.5" and usage["record_count"] == 1, usage  # nothing stored
    record(a.id, "api_calls", "0.5")  # up to the limit exactly
    listed = entitlements_api().get_billing_entitlements_with_http_info(customer_id=customer)
    capped = json.loads(listed.raw_data)["entitlements"][0]
    assert listed.data.entitlements[0].entitlement_limit_max == 10, listed.data
    assert (capped["consumed"], capped["remaining"]) == (10, 0), capped
    # Not on the plan, or no agreement: allowed false, never an error.
    assert check_entitlement(customer, "storage_gb")["allowed"] is False
    assert check_entitlement(new_customer(), "api_calls")["current_period_end"] is None
    expect_error(
        BadRequestException, 400, "INVALID_METER_VALUE", lambda: check_entitlement(customer, "api_calls", "-1")
    )


def test_webhooks_event_types():
    response = webhooks_api().get_event_types()
    assert isinstance(response, GetEventTypesResponse), type(response)
    assert response.code == "OK" and response.message == "Success", response
    assert all(isinstance(t, EventType) for t in response.event_types), response
    codes = [t.code for t in response.event_types]
    assert sorted(codes) == sorted(BILLING_EVENT_TYPES), codes
    for event_type in response.event_types:
        assert event_type.id and event_type.name and event_type.origin, event_type
        # `schema` in the JSON, `var_schema` in the model: a JSON schema of `data`.
        assert isinstance(event_type.var_schema, dict), event_type
    # read:event_types is needed.
    expect_error(ForbiddenException, 403, "INSUFFICIENT_SCOPE", lambda: webhooks_api(READ_TOKEN).get_event_types())


def test_webhooks_create_list_update_delete():
    api = webhooks_api()
    name = f"py {RUN}"
    # A loopback endpoint (the server allows them here) needs no DNS; nothing
    # listens on port 9, and the webhook is deleted before anything is delivered.
    endpoint = f"http://127.0.0.1:9/kinde/{RUN}"
    created = api.create_web_hook(
        CreateWebHookRequest(
            endpoint=endpoint,
            event_types=["customer.agreement_created", "customer.plan_changed"],
            name=name,
            description="billing events",
        )
    )
    assert isinstance(created, CreateWebhookResponse), type(created)
    assert created.code == "OK" and created.message == "Success", created
    assert isinstance(created.webhook, CreateWebhookResponseWebhook), created
    webhook_id = created.webhook.id
    assert webhook_id.startswith("webhook_") and len(webhook_id) == len("webhook_") + 32, webhook_id
    assert created.webhook.endpoint == endpoint, created

    listed = api.get_web_hooks()
    assert isinstance(listed, GetWebhooksResponse), type(listed)
    assert all(isinstance(w, Webhook) for w in listed.webhooks), listed
    mine = [w for w in listed.webhooks if w.id == webhook_id]
    assert len(mine) == 1, listed
    mine = mine[0]
    assert (mine.name, mine.endpoint, mine.description) == (name, endpoint, "billing events"), mine
    assert mine.event_types == ["customer.agreement_created", "customer.plan_changed"], mine
    created_on = parse_rfc3339(mine.created_on)
    assert abs((datetime.now(timezone.utc) - created_on).total_seconds()) < 300, mine.created_on

    # Only the fields set change; description=None (set explicitly) clears it.
    updated = api.update_web_hook(
        webhook_id,
        UpdateWebHookRequest(name=f"{name} renamed", description=None, event_types=["customer.meter_usage_updated"]),
    )
    assert isinstance(updated, UpdateWebhookResponse), type(updated)
    assert updated.code == "OK" and updated.webhook.id == webhook_id, updated
    mine = [w for w in api.get_web_hooks().webhooks if w.id == webhook_id][0]
    assert (mine.name, mine.description, mine.event_types) == (
        f"{name} renamed",
        None,
        ["customer.meter_usage_updated"],
    ), mine
    assert mine.endpoint == endpoint, mine
    api.update_web_hook(webhook_id, UpdateWebHookRequest(description="back"))
    mine = [w for w in api.get_web_hooks().webhooks if w.id == webhook_id][0]
    assert (mine.name, mine.description) == (f"{name} renamed", "back"), mine

    deleted = api.delete_web_hook(webhook_id)
    assert isinstance(deleted, DeleteWebhookResponse), type(deleted)
    assert deleted.code == "OK" and deleted.message == "Success", deleted
    assert webhook_id not in [w.id for w in api.get_web_hooks().webhooks]
    # Unknown ids are 400s with a body the SDK reads (it declares no 404 here).
    expect_error(BadRequestException, 400, "WEBHOOK_NOT_FOUND", lambda: api.delete_web_hook(webhook_id))
    expect_error(
        BadRequestException,
        400,
        "WEBHOOK_NOT_FOUND",
        lambda: api.update_web_hook(webhook_id, UpdateWebHookRequest(name="x")),
    )


def test_webhooks_refused_requests():
    api = webhooks_api()

    def create(endpoint="http://127.0.0.1:9/kinde", event_types=("customer.agreement_created",), token=TOKEN):
        return webhooks_api(token).create_web_hook(
            CreateWebHookRequest(endpoint=endpoint, event_types=list(event_types), name=f"py {RUN} refused")
        )

    expect_error(BadRequestException, 400, "INVALID_FIELD", lambda: create(endpoint="ftp://hooks.example.com/x"))
    expect_error(BadRequestException, 400, "INVALID_FIELD", lambda: create(event_types=["customer.nope"]))
    expect_error(ForbiddenException, 403, "INSUFFICIENT_SCOPE", lambda: create(token=READ_TOKEN))
    expect_error(ForbiddenException, 403, "INSUFFICIENT_SCOPE", lambda: webhooks_api(READ_TOKEN).get_web_hooks())
    expect_error(
        BadRequestException,
        400,
        "EVENT_NOT_FOUND",
        lambda: api.get_event("event_00000000000000000000000000000000"),
    )
    assert f"py {RUN} refused" not in [w.name for w in api.get_web_hooks().webhooks]


def test_webhooks_delivery_and_get_event():
    api = webhooks_api()
    receiver = Receiver()
    webhook_id = None
    try:
        webhook_id = api.create_web_hook(
            CreateWebHookRequest(
                endpoint=receiver.url,
                event_types=["customer.agreement_created", "customer.plan_assigned"],
                name=f"py {RUN} receiver",
            )
        ).webhook.id
        customer, a = new_agreement("pro")
        delivery, claims = receiver.wait_for(
            lambda c: c["type"] == "customer.agreement_created" and c["data"]["agreement_id"] == a.id
        )
        # A Kinde delivery: an RS256 JWT of the event's claims, with a webhook-id.
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        assert headers["content-type"].startswith("application/jwt"), headers
        assert headers.get("webhook-id"), headers
        header = jwt_part(delivery["body"], 0)
        assert header["alg"] == "RS256" and header["kid"], header
        assert claims["iss"] == URL and claims["jti"] == claims["event_id"] and claims["source"] == "api", claims
        assert claims["data"] == {"customer_id": customer, "agreement_id": a.id, "plan_code": "pro"}, claims

        # The event, looked up by the id the delivery carried.
        response = api.get_event(claims["event_id"])
        assert isinstance(response, GetEventResponse), type(response)
        assert response.code == "OK" and response.message == "Success", response
        event = response.event
        assert isinstance(event, GetEventResponseEvent), event
        assert (event.type, event.source, event.event_id) == (
            "customer.agreement_created",
            "api",
            claims["event_id"],
        ), event
        # timestamp is the SDK's StrictInt: Unix seconds of the delivered RFC 3339 one.
        assert type(event.timestamp) is int and event.timestamp == unix_seconds(claims["timestamp"]), event
        assert event.data == claims["data"], event
        _, assigned = receiver.wait_for(
            lambda c: c["type"] == "customer.plan_assigned" and c["data"]["agreement_id"] == a.id
        )
        assert api.get_event(assigned["event_id"]).event.data["plan_code"] == "pro"
        expect_error(ForbiddenException, 403, "INSUFFICIENT_SCOPE", lambda: webhooks_api(READ_TOKEN).get_event(claims["event_id"]))
    finally:
        if webhook_id is not None:
            api.delete_web_hook(webhook_id)
        receiver.close()


TESTS = [
    test_create_agreement,
    test_list_agreements,
    test_list_agreements_newest_first_paging_and_filter,
    test_record_delta_and_read_back_exact_decimal,
    test_large_values_are_exact_and_canonical,
    test_absolute_with_timezone_aware_datetimes,
    test_naive_datetime_is_read_as_utc,
    test_idempotency_key_through_sdk_headers,
    test_400_invalid_meter_value,
    test_400_unknown_agreement,
    test_400_feature_and_agreement_state,
    test_400_unknown_plan,
    test_403_bad_token,
    test_403_insufficient_scope,
    test_list_entitlements_typed,
    test_list_entitlements_paging_and_max_value,
    test_hard_limit_refusal_and_usage_check,
    test_webhooks_event_types,
    test_webhooks_create_list_update_delete,
    test_webhooks_refused_requests,
    test_webhooks_delivery_and_get_event,
]


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for test in TESTS:
        if only and test.__name__ not in only:
            continue
        try:
            test()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {test.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {test.__name__}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
