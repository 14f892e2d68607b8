// kinde-meter usage dashboard (docs/dashboard.md).
//
// A build-free ES module served by the server itself. It reads this server's
// API with a bearer token that the user gives in the URL fragment
// (`/dashboard#token=…`, taken out of the address bar at once, never sent to
// the server in a URL) or in the sign-in field, and keeps it in sessionStorage
// (this tab only). The page's Content-Security-Policy allows requests to this
// origin only; nothing here loads anything from anywhere else.
//
// Numbers are shown as the API writes them: every JSON number is parsed as its
// source text and decimals are the API's exact strings, never floats. Floats
// are used only to size bars.

const TOKEN_KEY = "kinde-meter.dashboard.token";
const CUSTOMERS_PAGE = 50;
const AGREEMENTS_PAGE = 100;
const ENTITLEMENTS_PAGE = 500;
const RECORDS = 20;
const PAST_PERIODS = 5; // and the current one: six bars
const SEARCH_DELAY_MS = 200;
const SVG_NS = "http://www.w3.org/2000/svg";

/** The server's root path, for a dashboard served under a prefix. */
const BASE = location.pathname.replace(/\/dashboard\/?$/, "");

const $ = (id) => document.getElementById(id);

// --- the token and the view, in the fragment --------------------------------

/** The fragment's `token`, `customer` and `agreement`. */
function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  return {
    token: params.get("token"),
    customer: params.get("customer"),
    agreement: params.get("agreement"),
  };
}

/** Puts the selection (never the token) in the address bar, replacing it. */
function writeFragment(customer, agreement) {
  const params = new URLSearchParams();
  if (customer) params.set("customer", customer);
  if (agreement) params.set("agreement", agreement);
  const hash = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
}

const initial = readFragment();
// First of all: the token leaves the address bar (and so the history).
writeFragment(initial.customer, initial.agreement);
if (initial.token !== null && initial.token.trim() !== "") {
  sessionStorage.setItem(TOKEN_KEY, initial.token.trim());
}

let token = sessionStorage.getItem(TOKEN_KEY);

// --- the API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** JSON with every number kept as its source text (exact, as written). */
function parseExact(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number"
      ? context && typeof context.source === "string"
        ? context.source
        : String(value)
      : value,
  );
}

/** GET `path` of this server's API with the token; the parsed body, or an ApiError. */
async function api(path, params = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    referrerPolicy: "no-referrer",
  });
  const text = await response.text();
  let body = null;
  try {
    body = parseExact(text);
  } catch {
    body = null;
  }
  if (!response.ok) {
    const first = body && Array.isArray(body.errors) ? body.errors[0] : null;
    throw new ApiError(
      response.status,
      first ? first.code : `HTTP_${response.status}`,
      first ? first.message : response.statusText,
    );
  }
  return body;
}

/** Whether `error` means the token is no good: then the user signs in again. */
function refusedToken(error) {
  return error instanceof ApiError && error.code === "INVALID_CREDENTIALS";
}

/** Shows `error` in the element with id `id`, or signs out for a refused token. */
function showError(id, error) {
  if (refusedToken(error)) {
    signOut(`The server refused the token (${error.message}). Sign in again.`);
    return;
  }
  const box = $(id);
  box.textContent =
    error instanceof ApiError && error.code === "INSUFFICIENT_SCOPE"
      ? `The token lacks the scope for this (${error.message}).`
      : `Could not load: ${error.message}`;
  box.hidden = false;
}

function clearError(id) {
  $(id).hidden = true;
  $(id).textContent = "";
}

// --- DOM helpers --------------------------------------------------------------

/** An element with attributes and children (text or nodes); never parses HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** An SVG element, as `el`. */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

/** An instant as the API writes it, shorter: `2026-12-06 07:12:44Z`. */
function instant(text) {
  if (!text) return "—";
  return text.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function day(text) {
  return text ? text.slice(0, 10) : "—";
}

function setStatus(text) {
  $("status").textContent = text;
}

function emptyRow(columns, text) {
  return el("tr", { class: "empty" }, el("td", { colspan: columns }, text));
}

// --- state ----------------------------------------------------------------------

const view = {
  customer: null,
  agreement: null, // the agreement object of the listing
  customerRun: 0, // bumped by every customer selection: older answers are dropped
  agreementRun: 0,
  searchRun: 0,
  cursor: null, // the customers listing's next page
};

// --- sign-in and sign-out -------------------------------------------------------

function showSignIn(message) {
  $("app").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").hidden = !message;
  $("sign-in-error").textContent = message || "";
  $("token-input").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  view.customer = null;
  view.agreement = null;
  view.customerRun += 1;
  view.agreementRun += 1;
  view.searchRun += 1;
  writeFragment(null, null);
  $("customer-list").replaceChildren();
  $("agreements").tBodies[0].replaceChildren();
  $("records").tBodies[0].replaceChildren();
  $("webhooks").tBodies[0].replaceChildren();
  $("usage").replaceChildren();
  $("charts").replaceChildren();
  $("search").value = "";
  $("customer-view").hidden = true;
  $("placeholder").hidden = false;
  setStatus("");
  showSignIn(message);
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  $("token-input").value = "";
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  start({ customer: null, agreement: null });
});

$("sign-out").addEventListener("click", () => signOut());

$("refresh").addEventListener("click", () => {
  start({ customer: view.customer, agreement: view.agreement && view.agreement.id });
});

// --- customers --------------------------------------------------------------------

/** Lists the customers whose id starts with `prefix`; more=true adds the next page. */
async function loadCustomers(prefix, more = false) {
  const run = ++view.searchRun;
  clearError("customers-error");
  let page;
  try {
    page = await api("/api/v1/billing/customers", {
      customer_id_prefix: prefix,
      page_size: CUSTOMERS_PAGE,
      starting_after: more ? view.cursor : null,
    });
  } catch (error) {
    if (run === view.searchRun) showError("customers-error", error);
    return !refusedToken(error);
  }
  if (run !== view.searchRun) return true;
  const list = $("customer-list");
  if (!more) list.replaceChildren();
  for (const customer of page.customers) {
    const count = customer.agreement_count;
    const button = el(
      "button",
      { type: "button", "data-customer-id": customer.customer_id },
      el("span", { class: "id" }, customer.customer_id),
      el("span", { class: "count" }, `${count} ${count === "1" ? "agreement" : "agreements"}`),
    );
    button.addEventListener("click", () => selectCustomer(customer.customer_id, null));
    list.append(el("li", {}, button));
  }
  if (!more && page.customers.length === 0) {
    list.append(el("li", { class: "muted" }, prefix ? "No customer id starts with that." : "No customers yet."));
  }
  const last = page.customers[page.customers.length - 1];
  view.cursor = last ? last.customer_id : null;
  $("more-customers").hidden = !page.has_more;
  markCustomer();
  return true;
}

function markCustomer() {
  for (const button of $("customer-list").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.customerId === view.customer));
  }
}

let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => loadCustomers($("search").value.trim()), SEARCH_DELAY_MS);
});

// Enter opens the customer with exactly that id, listed or not.
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("search").value.trim();
  if (id) selectCustomer(id, null);
});

$("more-customers").addEventListener("click", () => loadCustomers($("search").value.trim(), true));

// --- a customer's agreements ------------------------------------------------------

/** Limits of the customer's active agreement, by entitlement id. */
let limits = new Map();
let limitsError = null;

async function selectCustomer(customerId, wantedAgreement) {
  const run = ++view.customerRun;
  view.agreementRun += 1;
  view.customer = customerId;
  view.agreement = null;
  markCustomer();
  writeFragment(customerId, wantedAgreement);
  $("placeholder").hidden = true;
  $("customer-view").hidden = false;
  $("agreement-view").hidden = true;
  $("customer-name").textContent = customerId;
  clearError("agreements-error");
  const body = $("agreements").tBodies[0];
  body.replaceChildren(emptyRow(4, "Loading…"));
  setStatus(`Loading ${customerId}…`);

  const [agreements, entitlements] = await Promise.allSettled([
    api("/api/v1/billing/agreements", { customer_id: customerId, page_size: AGREEMENTS_PAGE }),
    api("/api/v1/billing/entitlements", { customer_id: customerId, page_size: ENTITLEMENTS_PAGE }),
  ]);
  if (run !== view.customerRun) return;
  if (agreements.status === "rejected") {
    body.replaceChildren();
    showError("agreements-error", agreements.reason);
    setStatus("");
    return;
  }
  limits = new Map();
  limitsError = null;
  if (entitlements.status === "fulfilled") {
    for (const entitlement of entitlements.value.entitlements) limits.set(entitlement.id, entitlement);
  } else if (refusedToken(entitlements.reason)) {
    showError("agreements-error", entitlements.reason);
    return;
  } else {
    limitsError = entitlements.reason;
  }

  const list = agreements.value.agreements;
  body.replaceChildren();
  if (list.length === 0) {
    body.append(emptyRow(4, "This customer has no agreements."));
    setStatus("");
    return;
  }
  for (const agreement of list) {
    const row = el(
      "tr",
      { class: "selectable", tabindex: 0, "data-agreement-id": agreement.id },
      el("td", { class: "mono" }, agreement.id),
      el("td", {}, agreement.plan_code),
      el(
        "td",
        {},
        agreement.expires_on === null
          ? el("span", { class: "badge ok" }, "active")
          : el("span", { class: "badge idle" }, `ended ${instant(agreement.expires_on)}`),
      ),
      el(
        "td",
        {},
        agreement.current_period_start
          ? `${day(agreement.current_period_start)} → ${day(agreement.current_period_end)}`
          : "—",
      ),
    );
    const open = () => selectAgreement(agreement);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open();
      }
    });
    body.append(row);
  }
  if (agreements.value.has_more) {
    body.append(emptyRow(4, `The newest ${AGREEMENTS_PAGE} agreements are shown.`));
  }
  const chosen =
    list.find((a) => a.id === wantedAgreement) ||
    list.find((a) => a.expires_on === null) ||
    list[0];
  await selectAgreement(chosen);
}

// --- an agreement: usage, history, records ------------------------------------------

/** The instant whose period a usage read reports: now, or an ended agreement's last moment. */
function readingInstant(agreement) {
  return agreement.expires_on === null
    ? null
    : new Date(Date.parse(agreement.expires_on) - 1000).toISOString();
}

async function selectAgreement(agreement) {
  const run = ++view.agreementRun;
  view.agreement = agreement;
  writeFragment(view.customer, agreement.id);
  for (const row of $("agreements").tBodies[0].rows) {
    if (row.dataset.agreementId) {
      row.setAttribute("aria-selected", String(row.dataset.agreementId === agreement.id));
    }
  }
  $("agreement-view").hidden = false;
  for (const id of ["usage-error", "records-error"]) clearError(id);
  $("usage").replaceChildren(el("p", { class: "muted" }, "Loading…"));
  $("charts").replaceChildren();
  $("records").tBodies[0].replaceChildren(emptyRow(6, "Loading…"));
  setStatus(`Loading ${agreement.id}…`);

  const at = readingInstant(agreement);
  const [usage, records] = await Promise.allSettled([
    api("/api/v1/billing/meter_usage", { customer_agreement_id: agreement.id, at }),
    api("/api/v1/billing/meter_usage/records", { customer_agreement_id: agreement.id, limit: RECORDS }),
  ]);
  if (run !== view.agreementRun) return;

  if (records.status === "fulfilled") {
    renderRecords(records.value.records);
  } else {
    $("records").tBodies[0].replaceChildren();
    showError("records-error", records.reason);
  }
  if (usage.status === "rejected") {
    $("usage").replaceChildren();
    showError("usage-error", usage.reason);
    setStatus("");
    return;
  }
  renderUsage(agreement, usage.value.usage);
  await loadHistory(agreement, usage.value.usage, run);
  if (run === view.agreementRun) setStatus(`Loaded at ${instant(new Date().toISOString())}.`);
}

/** The entitlement of `feature` on `agreement`, if the listing of limits has it. */
function entitlementOf(agreement, featureCode) {
  const entry = agreement.entitlements.find((e) => e.feature_code === featureCode);
  return entry ? limits.get(entry.entitlement_id) : undefined;
}

/** A usage value against its limit, as a fraction for the bar (never shown as a number). */
function share(value, limit) {
  const max = Number(limit);
  if (!(max > 0)) return Number(value) > 0 ? Infinity : 0;
  return Number(value) / max;
}

function renderUsage(agreement, usage) {
  const period = usage[0];
  $("period").textContent = period
    ? `${agreement.expires_on === null ? "Current period" : "Last period of this ended agreement"}: ` +
      `${instant(period.period_start)} → ${instant(period.period_end)}`
    : "";
  const cards = usage.map((u) => {
    const entitlement = entitlementOf(agreement, u.billing_feature_code);
    const limit = entitlement ? entitlement.entitlement_limit_max : undefined;
    let limitText;
    let bar = null;
    if (agreement.expires_on !== null) {
      limitText = "agreement ended: no current limit";
    } else if (limitsError) {
      limitText = `limit unavailable (${limitsError.code})`;
    } else if (limit === undefined) {
      limitText = "limit unknown";
    } else if (limit === null) {
      limitText = "no limit";
    } else {
      limitText = `of ${limit}`;
      const fraction = share(u.value, limit);
      const width = Math.max(0, Math.min(1, fraction)) * 100;
      const level = fraction > 1 ? "over" : fraction >= 0.8 ? "high" : "";
      bar = svg(
        "svg",
        { viewBox: "0 0 100 8", preserveAspectRatio: "none", role: "img", "aria-label": `${u.value} of ${limit}` },
        svg("rect", { class: "track", x: 0, y: 0, width: 100, height: 8, rx: 4 }),
        svg("rect", { class: `fill ${level}`.trim(), x: 0, y: 0, width: width.toFixed(3), height: 8, rx: 4 }),
      );
    }
    const name = entitlement ? entitlement.feature_name : u.billing_feature_code;
    return el(
      "div",
      { class: "usage", "data-feature": u.billing_feature_code },
      el("div", { class: "feature" }, name, " ", el("span", { class: "code" }, u.billing_feature_code)),
      el("div", { class: "value" }, u.value),
      el("div", { class: "limit" }, limitText),
      bar,
      el(
        "div",
        { class: "meta" },
        `${u.record_count} ${u.record_count === "1" ? "record" : "records"}` +
          (u.last_recorded_at ? ` · last received ${instant(u.last_recorded_at)}` : ""),
      ),
    );
  });
  $("usage").replaceChildren(
    ...(cards.length ? cards : [el("p", { class: "muted" }, "The plan has no metered features.")]),
  );
}

/** Reads the periods before the shown one (as many as there are, up to PAST_PERIODS) and charts them. */
async function loadHistory(agreement, current, run) {
  if (current.length === 0) return;
  const periods = [current];
  let start = current[0].period_start;
  for (let i = 0; i < PAST_PERIODS; i += 1) {
    const at = new Date(Date.parse(start) - 1000).toISOString();
    let past;
    try {
      past = await api("/api/v1/billing/meter_usage", { customer_agreement_id: agreement.id, at });
    } catch (error) {
      if (run === view.agreementRun) showError("usage-error", error);
      break;
    }
    if (run !== view.agreementRun) return;
    const pastStart = past.usage[0].period_start;
    // Before the agreement's start the read answers its first period again.
    if (!(Date.parse(pastStart) < Date.parse(start))) break;
    periods.unshift(past.usage);
    start = pastStart;
  }
  const charts = current.map((u, index) => {
    const entitlement = entitlementOf(agreement, u.billing_feature_code);
    const limit = agreement.expires_on === null && entitlement ? entitlement.entitlement_limit_max : null;
    return chart(u.billing_feature_code, periods.map((p) => p[index]), limit);
  });
  $("charts").replaceChildren(...charts);
}

/** A label for a bar: the exact value when it fits, else marked as rounded. */
function barLabel(value) {
  if (value.length <= 10) return value;
  return `≈${new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format(Number(value))}`;
}

/** A bar chart of one feature's usage per period, oldest first, drawn in SVG. */
function chart(featureCode, entries, limit) {
  const width = 420;
  const height = 180;
  const top = 20;
  const bottom = 28;
  const side = 6;
  const plot = height - top - bottom;
  const numbers = entries.map((e) => Number(e.value));
  const max = Math.max(...numbers, limit === null ? 0 : Number(limit), 0);
  const slot = (width - 2 * side) / entries.length;
  const barWidth = Math.min(48, slot * 0.62);
  const drawing = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${featureCode} usage over ${entries.length} periods`,
  });
  drawing.append(svg("line", { class: "axis", x1: side, x2: width - side, y1: top + plot, y2: top + plot }));
  entries.forEach((entry, i) => {
    const x = side + i * slot + (slot - barWidth) / 2;
    const h = max > 0 ? (Number(entry.value) / max) * plot : 0;
    const y = top + plot - h;
    const current = i === entries.length - 1;
    drawing.append(
      svg(
        "rect",
        { class: current ? "bar current" : "bar", x: x.toFixed(2), y: y.toFixed(2), width: barWidth.toFixed(2), height: Math.max(h, 0).toFixed(2), rx: 2 },
        svg("title", {}, `${day(entry.period_start)} → ${day(entry.period_end)}: ${entry.value}`),
      ),
      svg("text", { class: "value", x: (x + barWidth / 2).toFixed(2), y: (y - 5).toFixed(2), "text-anchor": "middle" }, barLabel(entry.value)),
      svg("text", { x: (x + barWidth / 2).toFixed(2), y: height - 10, "text-anchor": "middle" }, day(entry.period_start)),
    );
  });
  if (limit !== null && Number(limit) > 0 && max > 0) {
    const y = top + plot - (Number(limit) / max) * plot;
    drawing.append(
      svg("line", { class: "limit-line", x1: side, x2: width - side, y1: y.toFixed(2), y2: y.toFixed(2) }, svg("title", {}, `limit ${limit}`)),
    );
  }
  const last = entries[entries.length - 1];
  return el(
    "figure",
    { class: "chart", "data-feature": featureCode },
    el("h3", {}, featureCode, " ", el("span", { class: "muted" }, `· now ${last.value}`)),
    drawing,
  );
}

function renderRecords(records) {
  const body = $("records").tBodies[0];
  body.replaceChildren();
  if (records.length === 0) {
    body.append(emptyRow(6, "No records yet."));
    return;
  }
  for (const r of records) {
    body.append(
      el(
        "tr",
        {},
        el("td", { class: "mono" }, instant(r.received_at)),
        el("td", {}, r.billing_feature_code),
        el("td", {}, r.meter_type_code),
        el("td", { class: "num" }, r.meter_value),
        el("td", { class: "mono" }, instant(r.meter_usage_timestamp)),
        el("td", {}, `${day(r.period_start)} → ${day(r.period_end)}`),
      ),
    );
  }
}

// --- webhooks --------------------------------------------------------------------------

function webhookState(w) {
  if (w.last_attempt_at === null) return ["idle", "no attempt yet"];
  if (w.consecutive_failures !== "0") return ["bad", "failing"];
  if (w.pending !== "0") return ["warn", "delivering"];
  return ["ok", "delivered"];
}

async function loadWebhooks() {
  clearError("webhooks-error");
  const body = $("webhooks").tBodies[0];
  let answer;
  try {
    answer = await api("/api/v1/webhook_status");
  } catch (error) {
    body.replaceChildren();
    showError("webhooks-error", error);
    return;
  }
  body.replaceChildren();
  if (answer.webhooks.length === 0) {
    body.append(emptyRow(8, "No webhooks."));
    return;
  }
  for (const w of answer.webhooks) {
    const [level, text] = webhookState(w);
    body.append(
      el(
        "tr",
        { "data-webhook-id": w.id },
        el("td", {}, w.name, el("div", { class: "muted mono" }, w.id)),
        el("td", { class: "mono" }, w.endpoint),
        el("td", {}, el("span", { class: `badge ${level}` }, text)),
        el("td", { class: "mono" }, instant(w.last_attempt_at)),
        el("td", { class: "mono" }, instant(w.last_success_at)),
        el("td", { class: "num" }, w.consecutive_failures),
        el("td", { class: "num" }, w.pending),
        el("td", {}, w.last_error || "—"),
      ),
    );
  }
}

// --- start ------------------------------------------------------------------------------

async function start(selection) {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  const prefix = $("search").value.trim();
  if (!(await loadCustomers(prefix))) return;
  if (!token) return;
  const webhooks = loadWebhooks();
  if (selection.customer) {
    await selectCustomer(selection.customer, selection.agreement);
  } else {
    setStatus("");
  }
  await webhooks;
}

if (token) {
  start(initial);
} else {
  showSignIn();
}
