// Wire compatibility: kinde-meter's webhook deliveries, verified with Kinde's own
// `@kinde/webhooks` package from npm (pinned in package.json / package-lock.json).
//
// Starts a receiver on 127.0.0.1, subscribes it through the management API
// (POST /api/v1/webhooks) to every event type the server lists, causes each
// billing event (agreements created and replaced, usage recorded past a
// threshold), and passes every delivered body to `decodeWebhook(body,
// "<public URL>")` exactly as a Kinde customer's TypeScript receiver would.
//
// Environment (run.sh sets them):
//   KINDE_METER_URL    the server's public URL, e.g. http://127.0.0.1:PORT
//   KINDE_METER_TOKEN  a token with the webhooks, events, agreements and usage scopes
//
// Prints one line per test and, last, `N passed, M failed`; the exit status is
// non-zero when a test failed.

import http from "node:http";
import { randomUUID } from "node:crypto";
import { decodeWebhook } from "@kinde/webhooks";

const URL_ = process.env.KINDE_METER_URL.replace(/\/+$/, "");
const TOKEN = process.env.KINDE_METER_TOKEN;
const RUN = randomUUID().replaceAll("-", "").slice(0, 12);
const WAIT_MS = 60_000;

// --- the management API, with fetch --------------------------------------------

async function api(method, path, body) {
  const response = await fetch(`${URL_}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${method} ${path}: ${response.status} ${text}`);
  }
  return JSON.parse(text);
}

// --- the receiver -----------------------------------------------------------------

/** Every delivery received: {headers, body}. */
const deliveries = [];
let waiters = [];

const receiver = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    deliveries.push({
      method: request.method,
      headers: request.headers,
      body: Buffer.concat(chunks).toString("utf8"),
    });
    response.writeHead(200, { "content-type": "text/plain" });
    response.end("ok");
    const ready = waiters;
    waiters = [];
    ready.forEach((wake) => wake());
  });
});

await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const RECEIVER = `http://127.0.0.1:${receiver.address().port}/kinde/webhooks`;

/** Decoded deliveries, by event_id (deliveries are at least once). */
const decoded = new Map();

/** Decodes every new delivery with decodeWebhook; records failures. */
const undecodable = [];
let seen = 0;
async function decodeNew() {
  while (seen < deliveries.length) {
    const delivery = deliveries[seen++];
    const event = await decodeWebhook(delivery.body, URL_);
    if (event === null) {
      undecodable.push(delivery);
    } else {
      decoded.set(event.event_id, { event, delivery });
    }
  }
}

/** Waits until `predicate(events)` holds for the decoded events. */
async function waitFor(what, predicate) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    await decodeNew();
    const events = [...decoded.values()].map(({ event }) => event);
    if (predicate(events)) {
      return events;
    }
    if (undecodable.length > 0) {
      throw new Error(
        `decodeWebhook returned null for a delivery: ${undecodable[0].body.slice(0, 200)}`,
      );
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(
        `timed out waiting for ${what}; got ${JSON.stringify(events.map((e) => [e.type, e.data]))}`,
      );
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.min(left, 500));
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

function assert(condition, message) {
  if (!condition) {
    throw new Error(`assertion failed: ${message}`);
  }
}

/** JSON with object keys sorted, so that key order does not matter. */
function canonical(value) {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function assertEqual(actual, expected, message) {
  const a = canonical(actual);
  const e = canonical(expected);
  if (a !== e) {
    throw new Error(`${message}: expected ${e}, got ${a}`);
  }
}

// --- the scenario -----------------------------------------------------------------

const customer = `customer_node_${RUN}`;
let webhookId;
let firstAgreement;
let secondAgreement;

async function agreementsOf(customerId) {
  const listed = await api(
    "GET",
    `/api/v1/billing/agreements?customer_id=${encodeURIComponent(customerId)}&page_size=10`,
  );
  return listed.agreements;
}

const tests = [];
function test(name, body) {
  tests.push({ name, body });
}

test("subscribe the receiver to every event type", async () => {
  const types = await api("GET", "/api/v1/event_types");
  const codes = types.event_types.map((t) => t.code);
  for (const code of [
    "customer.agreement_created",
    "customer.plan_assigned",
    "customer.plan_changed",
    "customer.agreement_cancelled",
    "customer.meter_usage_updated",
    "customer.entitlement_threshold_reached",
  ]) {
    assert(codes.includes(code), `event_types lists ${code}: ${codes}`);
  }
  const created = await api("POST", "/api/v1/webhooks", {
    endpoint: RECEIVER,
    event_types: codes,
    name: `node ${RUN}`,
    description: "@kinde/webhooks compatibility",
  });
  assertEqual(created.code, "OK", "create code");
  assert(/^webhook_[0-9a-f]{32}$/.test(created.webhook.id), `webhook id ${created.webhook.id}`);
  assertEqual(created.webhook.endpoint, RECEIVER, "endpoint");
  webhookId = created.webhook.id;
});

test("a first agreement: agreement_created and plan_assigned decode", async () => {
  await api("POST", "/api/v1/billing/agreements", { customer_id: customer, plan_code: "pro" });
  [firstAgreement] = await agreementsOf(customer);
  const events = await waitFor("agreement_created and plan_assigned", (events) =>
    ["customer.agreement_created", "customer.plan_assigned"].every((type) =>
      events.some((e) => e.type === type && e.data.agreement_id === firstAgreement.id),
    ),
  );
  for (const type of ["customer.agreement_created", "customer.plan_assigned"]) {
    const event = events.find((e) => e.type === type);
    assertEqual(
      event.data,
      { customer_id: customer, agreement_id: firstAgreement.id, plan_code: "pro" },
      `${type} data`,
    );
    assertEqual(event.source, "api", "source");
    assert(/^event_[0-9a-f]{32}$/.test(event.event_id), `event_id ${event.event_id}`);
    assertEqual(event.iss, URL_, "iss is the public URL");
    assertEqual(event.jti, event.event_id, "jti is the event id");
    assert(typeof event.iat === "number", "iat is a number");
    assert(!Number.isNaN(Date.parse(event.timestamp)), `timestamp ${event.timestamp}`);
    assert(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(event.event_timestamp),
      `event_timestamp ${event.event_timestamp}`,
    );
  }
});

test("usage: meter_usage_updated and entitlement_threshold_reached decode", async () => {
  const record = (value) =>
    api("POST", "/api/v1/billing/meter_usage", {
      customer_agreement_id: firstAgreement.id,
      billing_feature_code: "api_calls",
      meter_value: value,
    });
  await record("40");
  await record("20.5");
  const events = await waitFor("usage 60.5 and the 50 % threshold", (events) =>
    events.some(
      (e) =>
        e.type === "customer.meter_usage_updated" &&
        e.data.agreement_id === firstAgreement.id &&
        e.data.value === "60.5",
    ) &&
    events.some(
      (e) =>
        e.type === "customer.entitlement_threshold_reached" &&
        e.data.agreement_id === firstAgreement.id,
    ),
  );
  const usage = events.filter(
    (e) => e.type === "customer.meter_usage_updated" && e.data.value === "60.5",
  )[0];
  assertEqual(
    {
      customer_id: usage.data.customer_id,
      feature_code: usage.data.feature_code,
      meter_id: usage.data.meter_id,
      quantity: usage.data.quantity,
      period_start: Date.parse(usage.data.period_start),
      period_end: Date.parse(usage.data.period_end),
    },
    {
      customer_id: customer,
      feature_code: "api_calls",
      meter_id: "api_calls",
      quantity: 60.5,
      period_start: Date.parse(firstAgreement.current_period_start),
      period_end: Date.parse(firstAgreement.current_period_end),
    },
    "usage data",
  );
  const thresholds = events.filter(
    (e) =>
      e.type === "customer.entitlement_threshold_reached" &&
      e.data.agreement_id === firstAgreement.id,
  );
  assertEqual(thresholds.length, 1, "one threshold event (50 %)");
  const [reached] = thresholds;
  assertEqual(
    [
      reached.data.threshold_percent,
      reached.data.entitlement_limit_max,
      reached.data.feature_code,
      reached.data.value,
    ],
    [50, 100, "api_calls", "60.5"],
    "threshold data",
  );
});

test("replacing the agreement: plan_changed and agreement_cancelled decode", async () => {
  await api("POST", "/api/v1/billing/agreements", { customer_id: customer, plan_code: "starter" });
  [secondAgreement] = await agreementsOf(customer);
  assert(secondAgreement.id !== firstAgreement.id, "a new agreement");
  const events = await waitFor("plan_changed, agreement_cancelled and agreement_created", (events) =>
    ["customer.plan_changed", "customer.agreement_cancelled"].every((type) =>
      events.some((e) => e.type === type),
    ) &&
    events.some(
      (e) => e.type === "customer.agreement_created" && e.data.agreement_id === secondAgreement.id,
    ),
  );
  const changed = events.find((e) => e.type === "customer.plan_changed");
  assertEqual(
    changed.data,
    {
      customer_id: customer,
      agreement_id: secondAgreement.id,
      plan_code: "starter",
      previous_plan_code: "pro",
      previous_agreement_id: firstAgreement.id,
    },
    "plan_changed data",
  );
  const cancelled = events.find((e) => e.type === "customer.agreement_cancelled");
  assertEqual(
    [cancelled.data.customer_id, cancelled.data.agreement_id, cancelled.data.plan_code],
    [customer, firstAgreement.id, "pro"],
    "agreement_cancelled data",
  );
  assert(!Number.isNaN(Date.parse(cancelled.data.expires_on)), `expires_on ${cancelled.data.expires_on}`);
  assert(
    !events.some((e) => e.type === "customer.plan_assigned" && e.data.agreement_id === secondAgreement.id),
    "no plan_assigned for a replacing agreement",
  );
});

test("every delivery is a POST of application/jwt with a webhook-id, and decodes", async () => {
  await decodeNew();
  assert(deliveries.length >= 7, `at least 7 deliveries, got ${deliveries.length}`);
  assertEqual(undecodable.length, 0, "deliveries decodeWebhook refused");
  for (const { delivery, event } of decoded.values()) {
    assertEqual(delivery.method, "POST", "method");
    assert(
      (delivery.headers["content-type"] || "").startsWith("application/jwt"),
      `content-type ${delivery.headers["content-type"]}`,
    );
    assert(delivery.headers["webhook-id"], `webhook-id on ${event.event_id}`);
    const header = JSON.parse(Buffer.from(delivery.body.split(".")[0], "base64url").toString());
    assertEqual(header.alg, "RS256", "alg");
    assert(typeof header.kid === "string" && header.kid.length > 0, "kid");
  }
  const jwks = await (await fetch(`${URL_}/.well-known/jwks.json`)).json();
  assert(
    jwks.keys.every((key) => key.use === "sig" && key.kty === "RSA"),
    `JWKS keys carry use=sig: ${JSON.stringify(jwks.keys)}`,
  );
});

test("decodeWebhook refuses a tampered body and a wrong domain", async () => {
  const [{ delivery }] = decoded.values();
  const [header, payload, signature] = delivery.body.split(".");
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  claims.data.plan_code = "enterprise";
  const tampered = [header, Buffer.from(JSON.stringify(claims)).toString("base64url"), signature].join(".");
  assertEqual(await decodeWebhook(tampered, URL_), null, "tampered payload");
  const unsigned = [
    Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url"),
    payload,
    "",
  ].join(".");
  assertEqual(await decodeWebhook(unsigned, URL_), null, "alg none");
  // Nothing listens on port 9 of 127.0.0.1: no JWKS, no event.
  assertEqual(await decodeWebhook(delivery.body, "http://127.0.0.1:9"), null, "wrong domain");
});

test("the event lookup answers the delivered event", async () => {
  const { event } = [...decoded.values()].find(({ event }) => event.type === "customer.plan_changed");
  const looked = await api("GET", `/api/v1/events/${event.event_id}`);
  assertEqual(
    [looked.event.type, looked.event.event_id, looked.event.source, looked.event.data],
    [event.type, event.event_id, event.source, event.data],
    "GET /api/v1/events/{id}",
  );
  assert(Number.isInteger(looked.event.timestamp), `timestamp ${looked.event.timestamp}`);
  assertEqual(looked.event.timestamp, Math.floor(Date.parse(event.timestamp) / 1000), "Unix seconds");
});

test("the webhook is listed, renamed and deleted", async () => {
  const listed = await api("GET", "/api/v1/webhooks");
  const mine = listed.webhooks.find((w) => w.id === webhookId);
  assert(mine, "listed");
  assertEqual(mine.endpoint, RECEIVER, "endpoint");
  const updated = await api("PATCH", `/api/v1/webhooks/${webhookId}`, { name: `node ${RUN} renamed` });
  assertEqual(updated.webhook.id, webhookId, "updated id");
  const deleted = await api("DELETE", `/api/v1/webhooks/${webhookId}`);
  assertEqual(deleted.code, "OK", "deleted");
  const after = await api("GET", "/api/v1/webhooks");
  assert(!after.webhooks.some((w) => w.id === webhookId), "gone");
});

// --- runner ------------------------------------------------------------------------

let passed = 0;
let failed = 0;
for (const { name, body } of tests) {
  try {
    await body();
    passed += 1;
    console.log(`ok      ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAILED  ${name}\n        ${String(error?.stack || error).replaceAll("\n", "\n        ")}`);
  }
}
receiver.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
