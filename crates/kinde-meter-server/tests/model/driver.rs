//! Runs one generated case against a real server over HTTP, step by step,
//! applying each step to the reference model too and comparing every answer:
//! writes (status, error codes, batch results, `Idempotent-Replayed`) and reads
//! (usage per feature with its period bounds, value, record count and last
//! receipt; the entitlement check field by field). After the history, every
//! period that holds records is read back once more.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use jiff::Timestamp;
use serde_json::Value;

use crate::{
    generator::{GRACES, Generator, Step},
    reference::{Answer, Field, Model, Nanos, RecordReq, Target, parse_time, show, show_value},
    support::{METER_USAGE, TestApp},
};

const AGREEMENTS: &str = "/api/v1/billing/agreements";
const BATCH: &str = "/api/v1/billing/meter_usage/batch";
const CHECK: &str = "/api/v1/billing/entitlements/check";
/// An agreement id no agreement has.
const UNKNOWN_AGREEMENT: &str = "agreement_00000000000000000000000000model";

/// A case whose server disagreed with the model.
pub struct Failure {
    pub seed: u64,
    pub grace: Nanos,
    pub history: Vec<String>,
    pub mismatch: String,
}

/// One case's run: the server, the model, the history so far.
struct Run<'a> {
    app: &'a TestApp,
    requests: &'a AtomicU64,
    model: Model,
    /// The server's id of each of the model's agreements.
    ids: Vec<String>,
    seed: u64,
    history: Vec<String>,
}

type Mismatch = String;

/// Runs the case of `seed`; adds what it exercised to `seen`.
pub async fn run_case(
    app: &TestApp,
    seed: u64,
    requests: &AtomicU64,
    seen: &Mutex<BTreeMap<String, u64>>,
) -> Result<(), Failure> {
    let mut g = Generator::new(seed);
    let grace = GRACES[g.grace_class];
    let start = g.start();
    let mut run = Run {
        app,
        requests,
        model: Model::new(grace, start),
        ids: vec![],
        seed,
        history: vec![],
    };
    let outcome = run.steps(&mut g).await;
    let mut total = seen.lock().unwrap();
    for (what, n) in &run.model.seen {
        *total.entry(what.clone()).or_default() += n;
    }
    drop(total);
    outcome.map_err(|mismatch| Failure {
        seed,
        grace,
        history: run.history,
        mismatch,
    })
}

fn time(t: Nanos) -> Timestamp {
    Timestamp::from_nanosecond(t).unwrap()
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A record's JSON, its fields written in the record's order.
fn record_json(r: &RecordReq, ids: &[String]) -> String {
    let agreement = match r.agreement {
        Target::Known(a) => ids[a].as_str(),
        Target::Unknown => UNKNOWN_AGREEMENT,
    };
    let string = |s: &str| serde_json::to_string(s).unwrap();
    let optional = |f: &Field| match f {
        Field::Absent => None,
        Field::Null => Some("null".to_owned()),
        Field::Text(t) => Some(string(t)),
    };
    let fields = [
        ("customer_agreement_id", Some(string(agreement))),
        ("billing_feature_code", Some(string(&r.feature))),
        ("meter_value", Some(string(&r.value))),
        ("meter_usage_timestamp", optional(&r.timestamp)),
        ("meter_type_code", optional(&r.meter_type)),
    ];
    let order: [usize; 5] = match r.order {
        0 => [0, 1, 2, 3, 4],
        1 => [4, 3, 2, 1, 0],
        2 => [2, 0, 4, 1, 3],
        _ => [3, 1, 0, 4, 2],
    };
    let parts: Vec<String> = order
        .iter()
        .filter_map(|&i| {
            fields[i]
                .1
                .as_ref()
                .map(|v| format!("\"{}\":{v}", fields[i].0))
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["code"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn show_answer(a: &Answer) -> String {
    let mut s = format!("{}", a.status);
    if !a.codes.is_empty() {
        write!(s, " {:?}", a.codes).unwrap();
    }
    if !a.results.is_empty() {
        write!(s, " results {:?}", a.results).unwrap();
    }
    if a.replayed {
        s.push_str(" (replayed)");
    }
    s
}

/// A time field of a read, parsed (`None` for null; `Err` for anything else).
fn time_field(v: &Value) -> Result<Option<Nanos>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => parse_time(s).map(Some).ok_or(()),
        _ => Err(()),
    }
}

impl Run<'_> {
    fn customer(&self, c: usize) -> String {
        format!("model-{:016x}-c{c}", self.seed)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value, bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A transport error shows as status 0, so the case reports it with its seed.
        let response = match request.bearer_auth(&self.app.token).send().await {
            Ok(response) => response,
            Err(e) => return (0, Value::String(format!("no answer: {e}")), false),
        };
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes() == b"true");
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| format!("no body: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, replayed)
    }

    async fn steps(&mut self, g: &mut Generator) -> Result<(), Mismatch> {
        self.app.clock().set(time(self.model.now));
        self.history.push(format!(
            "clock {} (grace {} s), {} customer(s)",
            show(self.model.now),
            self.model.grace / 1_000_000_000,
            g.customers
        ));
        let plan = g.plan();
        self.step(Step::Create { customer: 0, plan }).await?;
        for _ in 0..g.length() {
            let step = g.next(&self.model);
            self.step(step).await?;
        }
        // Every period holding records, and the current one, read once more.
        for a in 0..self.model.agreements.len() {
            let mut periods = self.model.periods_with_records(a);
            periods.push(self.model.index(a, self.model.now));
            periods.sort();
            periods.dedup();
            for k in periods {
                let at = Some(show(self.model.start(a, k)));
                self.step(Step::Read {
                    agreement: Target::Known(a),
                    feature: None,
                    at,
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn step(&mut self, step: Step) -> Result<(), Mismatch> {
        match step {
            Step::Clock(at) => {
                self.model.now = at;
                self.app.clock().set(time(at));
                self.history.push(format!("clock {}", show(at)));
                Ok(())
            }
            Step::Create { customer, plan } => self.create(customer, plan).await,
            Step::Record { record, key } => self.record(record, key).await,
            Step::Batch { records, key } => self.batch(records, key).await,
            Step::Read {
                agreement,
                feature,
                at,
            } => self.read(agreement, feature, at).await,
            Step::Check {
                customer,
                feature,
                quantity,
            } => self.check(customer, feature, quantity).await,
        }
    }

    async fn create(&mut self, customer: usize, plan: usize) -> Result<(), Mismatch> {
        let plan_code = self.model.plans[plan].code;
        let c = self.customer(customer);
        let body = serde_json::json!({"customer_id": c, "plan_code": plan_code});
        let (status, answer, _) = self
            .send(self.app.http.post(self.app.url(AGREEMENTS)).json(&body))
            .await;
        self.history.push(format!(
            "create agreement #{} customer {customer} plan {plan_code}: {status}",
            self.ids.len()
        ));
        if status != 200 {
            return Err(format!("creating an agreement answered {status} {answer}"));
        }
        let (status, list, _) = self
            .send(
                self.app.http.get(
                    self.app
                        .url(&format!("{AGREEMENTS}?customer_id={c}&page_size=20")),
                ),
            )
            .await;
        let new: Vec<&str> = list["agreements"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a["id"].as_str())
                    .filter(|id| !self.ids.iter().any(|known| known == id))
                    .collect()
            })
            .unwrap_or_default();
        let [id] = new[..] else {
            return Err(format!(
                "listing the customer's agreements ({status}) shows new ids {new:?}: {list}"
            ));
        };
        self.ids.push(id.to_owned());
        self.model.create_agreement(customer, plan);
        Ok(())
    }

    fn post(&self, path: &str, body: String, key: &Option<String>) -> reqwest::RequestBuilder {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
    }

    fn compare_write(
        &mut self,
        what: String,
        expected: Answer,
        got: (u16, Value, bool),
    ) -> Result<(), Mismatch> {
        let (status, body, replayed) = got;
        let got_answer = Answer {
            status,
            codes: if status == 200 { vec![] } else { codes(&body) },
            results: body["results"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|r| r["code"].as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            replayed,
        };
        let line = format!("{what}\n      expected {}", show_answer(&expected));
        if got_answer != expected {
            self.history.push(format!(
                "{line}\n      GOT      {} {body}",
                show_answer(&got_answer)
            ));
            return Err(format!(
                "{what}: expected {}, got {} {body}",
                show_answer(&expected),
                show_answer(&got_answer)
            ));
        }
        self.history.push(line);
        Ok(())
    }

    async fn record(&mut self, record: RecordReq, key: Option<String>) -> Result<(), Mismatch> {
        let body = record_json(&record, &self.ids);
        let got = self.send(self.post(METER_USAGE, body.clone(), &key)).await;
        let expected = self.model.record(&record, key.as_deref());
        let what = format!(
            "POST meter_usage{} {body}",
            key.as_ref()
                .map(|k| format!(" key {k}"))
                .unwrap_or_default()
        );
        self.compare_write(what, expected, got)
    }

    async fn batch(
        &mut self,
        records: Vec<RecordReq>,
        key: Option<String>,
    ) -> Result<(), Mismatch> {
        let parts: Vec<String> = records.iter().map(|r| record_json(r, &self.ids)).collect();
        let body = format!("{{\"records\":[{}]}}", parts.join(","));
        let got = self.send(self.post(BATCH, body.clone(), &key)).await;
        let expected = self.model.batch(&records, key.as_deref());
        let what = format!(
            "POST batch{} {body}",
            key.as_ref()
                .map(|k| format!(" key {k}"))
                .unwrap_or_default()
        );
        self.compare_write(what, expected, got)
    }

    async fn read(
        &mut self,
        agreement: Target,
        feature: Option<String>,
        at: Option<String>,
    ) -> Result<(), Mismatch> {
        let id = match agreement {
            Target::Known(a) => self.ids[a].clone(),
            Target::Unknown => UNKNOWN_AGREEMENT.to_owned(),
        };
        let mut query = format!("customer_agreement_id={id}");
        if let Some(f) = &feature {
            write!(query, "&billing_feature_code={}", encode(f)).unwrap();
        }
        if let Some(at) = &at {
            write!(query, "&at={}", encode(at)).unwrap();
        }
        let what = format!("GET meter_usage?{query}");
        let (status, body, _) = self
            .send(
                self.app
                    .http
                    .get(self.app.url(&format!("{METER_USAGE}?{query}"))),
            )
            .await;
        let at_instant = at
            .as_deref()
            .map(|t| parse_time(t).expect("the generator writes valid times"));
        let expected = self.model.read(agreement, feature.as_deref(), at_instant);
        let kind = match (&expected, &at_instant) {
            (Err(code), _) => format!("read: {code}"),
            (Ok(_), None) => "read: now".to_owned(),
            (Ok(_), Some(_)) => "read: at".to_owned(),
        };
        self.model.saw(&kind);
        let expected_text = match &expected {
            Ok(usage) => usage
                .iter()
                .map(|u| {
                    format!(
                        "{} [{}, {}) value {} records {} last {}",
                        u.feature,
                        show(u.start),
                        show(u.end),
                        show_value(u.value),
                        u.record_count,
                        u.last_recorded_at.map_or("null".to_owned(), show)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(code) => format!("400 {code}"),
        };
        let problem = match &expected {
            Err(code) => (status != 400 || codes(&body) != [code.clone()])
                .then(|| "the error differs".to_owned()),
            Ok(_) if status != 200 => Some(format!("status {status}")),
            Ok(usage) => {
                let got = body["usage"].as_array().cloned().unwrap_or_default();
                if got.len() != usage.len() {
                    Some(format!("{} entries instead of {}", got.len(), usage.len()))
                } else {
                    usage.iter().zip(&got).find_map(|(u, g)| {
                        let mut diffs = vec![];
                        if g["billing_feature_code"] != u.feature.as_str() {
                            diffs.push("billing_feature_code");
                        }
                        if time_field(&g["period_start"]) != Ok(Some(u.start)) {
                            diffs.push("period_start");
                        }
                        if time_field(&g["period_end"]) != Ok(Some(u.end)) {
                            diffs.push("period_end");
                        }
                        if g["value"] != show_value(u.value).as_str() {
                            diffs.push("value");
                        }
                        if g["record_count"].as_u64() != Some(u.record_count as u64) {
                            diffs.push("record_count");
                        }
                        if time_field(&g["last_recorded_at"]) != Ok(u.last_recorded_at) {
                            diffs.push("last_recorded_at");
                        }
                        (!diffs.is_empty())
                            .then(|| format!("{} differs in {}", u.feature, diffs.join(", ")))
                    })
                }
            }
        };
        let line = format!("{what}\n      expected {expected_text}");
        if let Some(problem) = problem {
            self.history
                .push(format!("{line}\n      GOT      {status} {body}"));
            return Err(format!(
                "{what}: {problem}: expected {expected_text}, got {status} {body}"
            ));
        }
        self.history.push(line);
        Ok(())
    }

    async fn check(
        &mut self,
        customer: usize,
        feature: String,
        quantity: Option<String>,
    ) -> Result<(), Mismatch> {
        let mut query = format!(
            "customer_id={}&feature_code={}",
            self.customer(customer),
            encode(&feature)
        );
        if let Some(q) = &quantity {
            write!(query, "&quantity={}", encode(q)).unwrap();
        }
        let what = format!("GET entitlements/check?{query}");
        let (status, body, _) = self
            .send(self.app.http.get(self.app.url(&format!("{CHECK}?{query}"))))
            .await;
        let expected = self.model.check(customer, &feature, quantity.as_deref());
        let kind = match &expected {
            Err(code) => format!("check: {code}"),
            Ok(c) => format!("check: allowed {}", c.allowed),
        };
        self.model.saw(&kind);
        let expected_text = match &expected {
            Ok(c) => format!(
                "allowed {} limit {:?} consumed {} remaining {:?} quantity {} end {}",
                c.allowed,
                c.limit_max,
                c.consumed,
                c.remaining,
                c.quantity,
                c.current_period_end.map_or("null".to_owned(), show)
            ),
            Err(code) => format!("400 {code}"),
        };
        let problem = match &expected {
            Err(code) => (status != 400 || codes(&body) != [code.clone()])
                .then(|| "the error differs".to_owned()),
            Ok(_) if status != 200 => Some(format!("status {status}")),
            Ok(c) => {
                let mut diffs = vec![];
                if body["allowed"] != c.allowed {
                    diffs.push("allowed");
                }
                if body["feature_code"] != feature.as_str() {
                    diffs.push("feature_code");
                }
                let limit = match &body["entitlement_limit_max"] {
                    Value::Null => Ok(None),
                    v => v.as_u64().map(|l| Some(u128::from(l))).ok_or(()),
                };
                if limit != Ok(c.limit_max) {
                    diffs.push("entitlement_limit_max");
                }
                if body["consumed"] != c.consumed.as_str() {
                    diffs.push("consumed");
                }
                let remaining = match &c.remaining {
                    None => Value::Null,
                    Some(r) => Value::String(r.clone()),
                };
                if body["remaining"] != remaining {
                    diffs.push("remaining");
                }
                if body["quantity"] != c.quantity.as_str() {
                    diffs.push("quantity");
                }
                if time_field(&body["current_period_end"]) != Ok(c.current_period_end) {
                    diffs.push("current_period_end");
                }
                (!diffs.is_empty()).then(|| format!("differs in {}", diffs.join(", ")))
            }
        };
        let line = format!("{what}\n      expected {expected_text}");
        if let Some(problem) = problem {
            self.history
                .push(format!("{line}\n      GOT      {status} {body}"));
            return Err(format!(
                "{what}: {problem}: expected {expected_text}, got {status} {body}"
            ));
        }
        self.history.push(line);
        Ok(())
    }
}

impl Failure {
    /// The seed, the history up to the first difference, and how to rerun.
    pub fn report(&self) -> String {
        let mut s = format!(
            "model case with seed {} (grace {} s) disagrees with the server:\n  {}\n  history:\n",
            self.seed,
            self.grace / 1_000_000_000,
            self.mismatch
        );
        for (i, line) in self.history.iter().enumerate() {
            writeln!(s, "    {i:3}. {line}").unwrap();
        }
        write!(
            s,
            "  rerun: KINDE_METER_MODEL_SEED={} cargo test -p kinde-meter-server --test model",
            self.seed
        )
        .unwrap();
        s
    }
}
