// The usage dashboard (/dashboard) end to end in headless Chromium: Debian's
// /usr/bin/chromium driven by playwright-core (pinned in package.json /
// package-lock.json; it downloads no browser).
//
// Sets up data over HTTP as an application would (two webhooks on a local
// receiver, one answering 204 and one 500; agreements; usage records), then
// opens the dashboard with a read-only token, once through the URL fragment
// and once through the sign-in field, and checks what a person would see: the
// customer found by its id, the recorded value exactly as the API writes it
// (a value no float can hold), the new value after another record and a
// reload, the latest records, the webhooks' delivery state. Throughout, the
// page must log no console error or warning, no request may fail or answer
// 4xx/5xx, every request must go to the server's own origin, and the token
// must never appear in a URL. A screenshot is kept in KINDE_METER_SCREENSHOT_DIR.
//
// Environment (run.sh sets them):
//   KINDE_METER_URL             the server, e.g. http://127.0.0.1:PORT
//   KINDE_METER_WRITE_TOKEN     create:billing_agreements create:meter_usage create:webhooks
//   KINDE_METER_READ_TOKEN      the dashboard's read scopes only
//   KINDE_METER_CHROMIUM        the browser (default /usr/bin/chromium)
//   KINDE_METER_SCREENSHOT_DIR  where dashboard.png goes
//
// Prints one line per test and, last, `N passed, M failed`; the exit status is
// non-zero when a test failed.

import http from "node:http";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";

const SERVER = process.env.KINDE_METER_URL.replace(/\/+$/, "");
const ORIGIN = new URL(SERVER).origin;
const WRITE_TOKEN = process.env.KINDE_METER_WRITE_TOKEN;
const READ_TOKEN = process.env.KINDE_METER_READ_TOKEN;
const CHROMIUM = process.env.KINDE_METER_CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.KINDE_METER_SCREENSHOT_DIR;
const RUN = randomUUID().replaceAll("-", "").slice(0, 8);
const CUSTOMER = `cus_browser_${RUN}`;
const OTHER = `cus_other_${RUN}`;
const TOKEN_KEY = "kinde-meter.dashboard.token";
const WAIT_MS = 30_000;

// Values no JavaScript number holds: a float would show 9007199254740994.
const FIRST = "9007199254740993.5";
const SECOND = "0.25";
const TOTAL = "9007199254740993.75";

// The flags this machine's Chromium needs (docs/testing.md): nothing may reach
// out to Google's hosts, and there is no GPU. playwright-core adds --headless,
// --no-sandbox and a fresh --user-data-dir of its own.
const FLAGS = [
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// --- the API, as an application calls it -------------------------------------------

async function api(method, path, token, body) {
  const response = await fetch(`${SERVER}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function record(agreement, feature, value, type = "delta") {
  await api("POST", "/api/v1/billing/meter_usage", WRITE_TOKEN, {
    customer_agreement_id: agreement,
    billing_feature_code: feature,
    meter_value: value,
    meter_type_code: type,
  });
}

/** Polls `condition` until it holds, for at most WAIT_MS. */
async function until(what, condition) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// --- a webhook receiver on 127.0.0.1 --------------------------------------------------

const receiver = http.createServer((request, response) => {
  request.resume();
  request.on("end", () => {
    response.writeHead(request.url === "/ok" ? 204 : 500);
    response.end();
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const RECEIVER = `http://127.0.0.1:${receiver.address().port}`;

// --- what the page does, watched -----------------------------------------------------

/** Everything that must not happen on a page, as messages. */
function watch(page) {
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      problems.push(`console ${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) =>
    problems.push(`failed request: ${request.url()} (${request.failure()?.errorText})`),
  );
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`${response.status()} for ${response.url()}`);
  });
  page.on("request", (request) => {
    const url = request.url();
    if (url.startsWith("data:")) return;
    if (new URL(url).origin !== ORIGIN) problems.push(`request to another origin: ${url}`);
    if (url.includes(READ_TOKEN) || url.includes(encodeURIComponent(READ_TOKEN))) {
      problems.push(`the token in a request URL: ${url.slice(0, 80)}…`);
    }
    if (url.includes("/api/")) {
      const authorization = request.headers().authorization;
      if (authorization !== `Bearer ${READ_TOKEN}`) {
        problems.push(`API request without the bearer token: ${url}`);
      }
    }
  });
  return problems;
}

function assertEqual(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** Waits until the element `selector` shows exactly `text`. */
async function waitForText(page, selector, text) {
  try {
    await page.waitForFunction(
      ([s, t]) => document.querySelector(s)?.textContent === t,
      [selector, text],
      { timeout: WAIT_MS },
    );
  } catch {
    const got = await page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector);
    throw new Error(`${selector}: expected ${JSON.stringify(text)}, got ${JSON.stringify(got)}`);
  }
}

const usageValue = '.usage[data-feature="api_calls"] .value';
const firstRecordValue = "#records tbody tr:first-child td.num";

/** The agreement view shows `total` for api_calls and `latest` as the newest record. */
async function seesUsage(page, total, latest) {
  await waitForText(page, usageValue, total);
  await waitForText(page, firstRecordValue, latest);
  await page.waitForFunction(
    (t) => document.querySelector('.chart[data-feature="api_calls"] rect.bar.current title')?.textContent.endsWith(`: ${t}`),
    total,
    { timeout: WAIT_MS },
  );
  assertEqual(
    await page.textContent('.usage[data-feature="api_calls"] .limit'),
    "of 1000000",
    "the api_calls limit (the demo catalog's)",
  );
  assertEqual(
    await page.getAttribute('#agreements tr[aria-selected="true"]', "data-agreement-id"),
    agreement,
    "the selected agreement",
  );
}

// --- setup -----------------------------------------------------------------------------

const webhookIds = {};
for (const [name, path] of [["ledger", "ok"], ["broken", "fail"]]) {
  const created = await api("POST", "/api/v1/webhooks", WRITE_TOKEN, {
    endpoint: `${RECEIVER}/${path}`,
    event_types: ["customer.agreement_created"],
    name: `${name}-${RUN}`,
  });
  webhookIds[name] = created.webhook.id;
}
for (const customer of [OTHER, CUSTOMER]) {
  await api("POST", "/api/v1/billing/agreements", WRITE_TOKEN, { customer_id: customer, plan_code: "pro" });
}
const listed = await api(
  "GET",
  `/api/v1/billing/agreements?customer_id=${CUSTOMER}`,
  process.env.KINDE_METER_READ_TOKEN,
);
const agreement = listed.agreements[0].id;
await record(agreement, "api_calls", FIRST);
await record(agreement, "storage_gb", "12.5", "absolute");
// The deliveries of the agreements' events: one webhook delivered, one failing.
await until("both webhooks to have been attempted", async () => {
  const status = await api("GET", "/api/v1/webhook_status", READ_TOKEN);
  const by = Object.fromEntries(status.webhooks.map((w) => [w.id, w]));
  return by[webhookIds.ledger]?.last_success_at && by[webhookIds.broken]?.consecutive_failures > 0;
});

// --- the tests ---------------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
const tests = [];
function test(name, body) {
  tests.push({ name, body });
}

test("a token in the URL fragment signs in and leaves the address bar", async () => {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const problems = watch(page);
  await page.goto(`${SERVER}/dashboard#token=${encodeURIComponent(READ_TOKEN)}`);
  await page.waitForSelector("#app:not([hidden])", { timeout: WAIT_MS });
  assertEqual(page.url(), `${SERVER}/dashboard`, "the address after sign-in");
  assertEqual(
    await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY),
    READ_TOKEN,
    "the token in sessionStorage",
  );

  // Find the agreement by the customer's id.
  await page.fill("#search", CUSTOMER);
  const button = `#customer-list button[data-customer-id="${CUSTOMER}"]`;
  await page.waitForSelector(button, { timeout: WAIT_MS });
  await page.waitForFunction(
    () => document.querySelectorAll("#customer-list button").length === 1,
    null,
    { timeout: WAIT_MS },
  );
  await page.click(button);
  // The storage record came last: it is the newest.
  await seesUsage(page, FIRST, "12.5");
  await waitForText(page, '.usage[data-feature="storage_gb"] .value', "12.5");
  assertEqual(
    page.url(),
    `${SERVER}/dashboard#customer=${CUSTOMER}&agreement=${agreement}`,
    "the address names the view, not the token",
  );

  // Another record, then a reload: the same view, the new value.
  await record(agreement, "api_calls", SECOND);
  await page.reload();
  await seesUsage(page, TOTAL, SECOND);
  const rows = await page.$$eval("#records tbody tr", (trs) => trs.map((tr) => tr.cells[3].textContent));
  assertEqual(rows.join(" "), `${SECOND} 12.5 ${FIRST}`, "the latest records, newest first");

  // Webhook delivery state.
  for (const [name, badge] of [["ledger", "delivered"], ["broken", "failing"]]) {
    await waitForText(page, `#webhooks tr[data-webhook-id="${webhookIds[name]}"] .badge`, badge);
  }
  const brokenError = await page.textContent(`#webhooks tr[data-webhook-id="${webhookIds.broken}"] td:last-child`);
  if (!brokenError.includes("500")) throw new Error(`the failing webhook's last error: ${brokenError}`);

  if (SHOTS) {
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });
  }

  // Sign out: the token is gone from the tab, and a reload asks for one.
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])", { timeout: WAIT_MS });
  assertEqual(await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY), null, "token after sign-out");
  assertEqual(page.url(), `${SERVER}/dashboard`, "the address after sign-out");
  await page.reload();
  await page.waitForSelector("#sign-in:not([hidden])", { timeout: WAIT_MS });
  assertEqual(await page.isHidden("#app"), true, "the data hidden without a token");
  await context.close();
  if (problems.length) throw new Error(problems.join("; "));
});

test("the sign-in field signs in; Enter in the search opens a customer by id", async () => {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const problems = watch(page);
  await page.goto(`${SERVER}/dashboard`);
  await page.waitForSelector("#sign-in:not([hidden])", { timeout: WAIT_MS });
  assertEqual(await page.isHidden("#app"), true, "the data hidden before sign-in");
  await page.fill("#token-input", READ_TOKEN);
  await page.click("#sign-in-button");
  await page.waitForSelector("#app:not([hidden])", { timeout: WAIT_MS });
  await page.waitForSelector(`#customer-list button[data-customer-id="${OTHER}"]`, { timeout: WAIT_MS });
  // What the API says now (the test above may have stopped before its second record).
  const usage = await api("GET", `/api/v1/billing/meter_usage?customer_agreement_id=${agreement}`, READ_TOKEN);
  const records = await api("GET", `/api/v1/billing/meter_usage/records?customer_agreement_id=${agreement}`, READ_TOKEN);
  const total = usage.usage.find((u) => u.billing_feature_code === "api_calls").value;
  await page.fill("#search", CUSTOMER);
  await page.press("#search", "Enter");
  await seesUsage(page, total, records.records[0].meter_value);
  assertEqual(await page.inputValue("#token-input"), "", "the sign-in field emptied");
  assertEqual(
    await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY),
    READ_TOKEN,
    "the token in sessionStorage",
  );
  await context.close();
  if (problems.length) throw new Error(problems.join("; "));
});

let passed = 0;
let failed = 0;
for (const { name, body } of tests) {
  try {
    await body();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`not ok - ${name}\n  ${String(error.stack || error).replaceAll("\n", "\n  ")}`);
  }
}
await browser.close();
receiver.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
