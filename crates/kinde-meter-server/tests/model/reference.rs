//! The reference model: what the server must answer, computed the slow and
//! obvious way from docs/billing.md, docs/api.md and docs/entitlements.md,
//! written without kinde-meter-core (its own calendar, its own decimals, a
//! period's usage recomputed from every stored record on every read).
//!
//! Instants are nanoseconds since the Unix epoch (UTC); meter values are
//! nano-units (`1` = 10^9).

use std::collections::{BTreeMap, HashMap};

pub type Nanos = i128;

pub const SECOND: Nanos = 1_000_000_000;
pub const MINUTE: Nanos = 60 * SECOND;
pub const HOUR: Nanos = 60 * MINUTE;
pub const DAY: Nanos = 24 * HOUR;

/// How long the test's servers remember an `Idempotency-Key` (the default is
/// 24 h, docs/api.md#idempotency). Far longer here: the servers purge keys
/// older than the retention before their latest time of receipt, and cases
/// sharing a server move its clock back and forth across the years, so with
/// 24 h one case's clock would expire another's keys.
pub const RETENTION: Nanos = 300 * 366 * DAY;
/// How far in the future a timestamp may lie.
pub const FUTURE_ALLOWANCE: Nanos = 5 * MINUTE;
/// Running totals are exact up to 10^27 (in nano-units: 10^36).
const MAX_TOTAL: u128 = 10u128.pow(36);

// ---------------------------------------------------------------- calendar

pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => panic!("month {month}"),
    }
}

fn days_in_year(year: i64) -> i64 {
    if is_leap(year) { 366 } else { 365 }
}

/// Days since 1970-01-01 of a civil date (years 1970 to 2300), by counting.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    assert!((1970..=2300).contains(&year), "year {year}");
    let mut days: i64 = (1970..year).map(days_in_year).sum();
    days += (1..month)
        .map(|m| i64::from(days_in_month(year, m)))
        .sum::<i64>();
    days + i64::from(day) - 1
}

/// The civil date of a day count since 1970-01-01, by counting.
pub fn civil_from_days(mut days: i64) -> (i64, u32, u32) {
    assert!(days >= 0, "before 1970");
    let mut year = 1970;
    while days >= days_in_year(year) {
        days -= days_in_year(year);
        year += 1;
    }
    let mut month = 1;
    while days >= i64::from(days_in_month(year, month)) {
        days -= i64::from(days_in_month(year, month));
        month += 1;
    }
    (year, month, days as u32 + 1)
}

/// A UTC instant from its civil parts.
pub fn instant(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32, nanos: u32) -> Nanos {
    Nanos::from(days_from_civil(year, month, day)) * DAY
        + Nanos::from(h) * HOUR
        + Nanos::from(m) * MINUTE
        + Nanos::from(s) * SECOND
        + Nanos::from(nanos)
}

/// Civil parts of an instant: (year, month, day, hour, minute, second, nanos).
pub fn civil(t: Nanos) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(DAY);
    let in_day = t.rem_euclid(DAY);
    let (y, mo, d) = civil_from_days(days as i64);
    let secs = in_day / SECOND;
    (
        y,
        mo,
        d,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
        (in_day % SECOND) as u32,
    )
}

/// RFC 3339 in UTC with `Z` and all nine fractional digits (for messages).
pub fn show(t: Nanos) -> String {
    let (y, mo, d, h, mi, s, n) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{n:09}Z")
}

/// Parses what the server writes and what the generator sends:
/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then `Z`, `±HH:MM`, `±HHMM`, `±HH` or nothing (UTC).
pub fn parse_time(text: &str) -> Option<Nanos> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(i64::from(y), mo)
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let frac = &text[i + 1..i + 1 + digits];
        nanos = format!("{frac:0<9}").parse().ok()?;
        i += 1 + digits;
    }
    let offset: Nanos = match &text[i..] {
        "" | "Z" => 0,
        rest => {
            let sign: Nanos = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = match rest.len() {
                3 => (num(i + 1, 2)?, 0),
                5 => (num(i + 1, 2)?, num(i + 3, 2)?),
                6 if rest.as_bytes()[3] == b':' => (num(i + 1, 2)?, num(i + 4, 2)?),
                _ => return None,
            };
            sign * (Nanos::from(oh) * HOUR + Nanos::from(om) * MINUTE)
        }
    };
    Some(instant(i64::from(y), mo, d, h, mi, s, nanos) - offset)
}

// ---------------------------------------------------------------- periods

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

/// Start of period `k` of an agreement anchored at `anchor`: `anchor + k·interval`,
/// month and year steps keeping the anchor's day (clamped to the month's last
/// day) and time of day, always counted from the anchor.
pub fn period_start(anchor: Nanos, interval: Interval, k: i64) -> Nanos {
    let months = match interval {
        Interval::Day => return anchor + Nanos::from(k) * DAY,
        Interval::Week => return anchor + Nanos::from(k) * 7 * DAY,
        Interval::Month => k,
        Interval::Year => 12 * k,
    };
    let (y, mo, d, ..) = civil(anchor);
    let time_of_day = anchor.rem_euclid(DAY);
    let index = y * 12 + i64::from(mo) - 1 + months;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    let day = d.min(days_in_month(year, month));
    Nanos::from(days_from_civil(year, month, day)) * DAY + time_of_day
}

/// The index of the period containing `t`; instants before the anchor are in
/// the first period (0).
pub fn period_index(anchor: Nanos, interval: Interval, t: Nanos) -> i64 {
    if t < anchor {
        return 0;
    }
    // Any guess will do: walk to the period whose bounds hold `t`.
    let mut k = match interval {
        Interval::Day => ((t - anchor) / DAY) as i64,
        Interval::Week => ((t - anchor) / (7 * DAY)) as i64,
        Interval::Month | Interval::Year => {
            let (ay, am, ..) = civil(anchor);
            let (ty, tm, ..) = civil(t);
            let months = (ty - ay) * 12 + i64::from(tm) - i64::from(am);
            if interval == Interval::Month {
                months
            } else {
                months / 12
            }
        }
    };
    while k > 0 && period_start(anchor, interval, k) > t {
        k -= 1;
    }
    while period_start(anchor, interval, k + 1) <= t {
        k += 1;
    }
    assert!(period_start(anchor, interval, k) <= t && t < period_start(anchor, interval, k + 1));
    k
}

// ---------------------------------------------------------------- decimals

/// A meter value: 1–18 digits, optionally `.` and 1–9 digits; in nano-units.
pub fn parse_value(text: &str) -> Option<u128> {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|c| c.is_ascii_digit())
    };
    if !digits(int, 18) || !frac.is_none_or(|f| digits(f, 9)) {
        return None;
    }
    let frac = frac.unwrap_or("");
    Some(
        int.parse::<u128>().unwrap() * 1_000_000_000
            + format!("{frac:0<9}").parse::<u128>().unwrap(),
    )
}

/// Canonical form: no superfluous leading zeros, no trailing fractional zeros.
pub fn show_value(v: u128) -> String {
    let (int, frac) = (v / 1_000_000_000, v % 1_000_000_000);
    if frac == 0 {
        int.to_string()
    } else {
        format!("{int}.{}", format!("{frac:09}").trim_end_matches('0'))
    }
}

// ---------------------------------------------------------------- catalog

pub struct Feature {
    pub code: &'static str,
    pub metered: bool,
    pub limit_max: Option<u128>,
    pub enforce: bool,
}

pub struct Plan {
    pub code: &'static str,
    pub interval: Interval,
    pub features: Vec<Feature>,
}

/// The test's catalog as the model sees it; `CATALOG_TOML` is the same for the server.
pub fn plans() -> Vec<Plan> {
    let f = |code, metered, limit: Option<u128>, enforce| Feature {
        code,
        metered,
        limit_max: limit,
        enforce,
    };
    let all = || {
        vec![
            f("calls", true, None, false),
            f("capped", true, Some(100), true),
            f("huge", true, Some(5_000_000_000_000_000_000), true),
            f("soft", true, Some(50), false),
            f("flag", false, None, false),
        ]
    };
    let small = || {
        vec![
            f("calls", true, None, false),
            f("capped", true, Some(100), true),
            f("soft", true, Some(50), false),
            f("flag", false, None, false),
        ]
    };
    vec![
        Plan {
            code: "m",
            interval: Interval::Month,
            features: all(),
        },
        Plan {
            code: "y",
            interval: Interval::Year,
            features: all(),
        },
        Plan {
            code: "d",
            interval: Interval::Day,
            features: small(),
        },
        Plan {
            code: "w",
            interval: Interval::Week,
            features: small(),
        },
    ]
}

pub const CATALOG_TOML: &str = r#"
[[plans]]
code = "m"
name = "Monthly"
interval = "month"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true

[[plans.features]]
code = "capped"
name = "Capped"
metered = true
limit_max = 100
enforce_limit = true

[[plans.features]]
code = "huge"
name = "Huge"
metered = true
limit_max = 5000000000000000000
enforce_limit = true

[[plans.features]]
code = "soft"
name = "Soft"
metered = true
limit_max = 50

[[plans.features]]
code = "flag"
name = "Flag"
metered = false

[[plans]]
code = "y"
name = "Yearly"
interval = "year"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true

[[plans.features]]
code = "capped"
name = "Capped"
metered = true
limit_max = 100
enforce_limit = true

[[plans.features]]
code = "huge"
name = "Huge"
metered = true
limit_max = 5000000000000000000
enforce_limit = true

[[plans.features]]
code = "soft"
name = "Soft"
metered = true
limit_max = 50

[[plans.features]]
code = "flag"
name = "Flag"
metered = false

[[plans]]
code = "d"
name = "Daily"
interval = "day"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true

[[plans.features]]
code = "capped"
name = "Capped"
metered = true
limit_max = 100
enforce_limit = true

[[plans.features]]
code = "soft"
name = "Soft"
metered = true
limit_max = 50

[[plans.features]]
code = "flag"
name = "Flag"
metered = false

[[plans]]
code = "w"
name = "Weekly"
interval = "week"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true

[[plans.features]]
code = "capped"
name = "Capped"
metered = true
limit_max = 100
enforce_limit = true

[[plans.features]]
code = "soft"
name = "Soft"
metered = true
limit_max = 50

[[plans.features]]
code = "flag"
name = "Flag"
metered = false
"#;

// ---------------------------------------------------------------- requests

/// An optional JSON field as sent: left out, `null`, or a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Absent,
    Null,
    Text(String),
}

impl Field {
    /// `null` means absent.
    pub fn text(&self) -> Option<&str> {
        match self {
            Field::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// Which agreement a record names: one of the case's (by index) or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Known(usize),
    Unknown,
}

/// One usage record as the generator sends it (the JSON is built from this).
#[derive(Debug, Clone)]
pub struct RecordReq {
    pub agreement: Target,
    pub feature: String,
    pub value: String,
    pub timestamp: Field,
    pub meter_type: Field,
    /// Which order the JSON fields are written in (does not change the request).
    pub order: u8,
}

/// The parsed request ("the same body" compares these): `"007"` equals `"7"`,
/// `null` equals absent, field order does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    agreement: Target,
    feature: String,
    value: u128,
    timestamp: Option<String>,
    meter_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delta,
    Absolute,
}

/// A single record's answer: 200, or 400 with these codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The error codes (empty for 200).
    pub codes: Vec<String>,
    /// For a batch answered 200: each record's code (`OK` or its error).
    pub results: Vec<String>,
    pub replayed: bool,
}

impl Answer {
    fn ok() -> Answer {
        Answer {
            status: 200,
            codes: vec![],
            results: vec![],
            replayed: false,
        }
    }
    fn error(code: &str) -> Answer {
        Answer {
            status: 400,
            codes: vec![code.to_owned()],
            results: vec![],
            replayed: false,
        }
    }
    fn batch(results: Vec<String>) -> Answer {
        Answer {
            status: 200,
            codes: vec![],
            results,
            replayed: false,
        }
    }
}

// ---------------------------------------------------------------- state

pub struct Agreement {
    pub customer: usize,
    pub plan: usize,
    pub anchor: Nanos,
    pub ended_at: Option<Nanos>,
}

#[derive(Debug, Clone)]
struct Stored {
    agreement: usize,
    feature: String,
    period: i64,
    effective: Nanos,
    seq: u64,
    kind: Kind,
    value: u128,
    received: Nanos,
}

/// A record as sent, but for the order of its fields: the same JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    agreement: Target,
    feature: String,
    value: String,
    timestamp: Field,
    meter_type: Field,
}

impl Raw {
    fn of(r: &RecordReq) -> Raw {
        Raw {
            agreement: r.agreement,
            feature: r.feature.clone(),
            value: r.value.clone(),
            timestamp: r.timestamp.clone(),
            meter_type: r.meter_type.clone(),
        }
    }
}

enum Remembered {
    Single(Parsed),
    /// Each record as sent, and as parsed if its fields were valid.
    Batch(Vec<(Raw, Option<Parsed>)>),
}

impl Remembered {
    /// "The same body": the same parsed request. A batch record is the same
    /// when it is the same JSON, or when both parse to the same record (a
    /// timestamp in the future does not stop a record from parsing: the same
    /// body stays the same body when the record comes due).
    fn same(&self, other: &Remembered) -> bool {
        match (self, other) {
            (Remembered::Single(a), Remembered::Single(b)) => a == b,
            (Remembered::Batch(a), Remembered::Batch(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((raw_a, parsed_a), (raw_b, parsed_b))| {
                            raw_a == raw_b || (parsed_a.is_some() && parsed_a == parsed_b)
                        })
            }
            _ => false,
        }
    }
}

struct Key {
    request: Remembered,
    answer: Answer,
    at: Nanos,
}

/// The model of one case: its agreements, every stored record, its keys.
pub struct Model {
    pub plans: Vec<Plan>,
    pub grace: Nanos,
    pub now: Nanos,
    pub agreements: Vec<Agreement>,
    stored: Vec<Stored>,
    next_seq: u64,
    keys: HashMap<String, Key>,
    /// How often each rule was exercised (printed after a run).
    pub seen: BTreeMap<String, u64>,
}

/// One metered feature's usage in a period, as the read-back reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub feature: String,
    pub start: Nanos,
    pub end: Nanos,
    pub value: u128,
    pub record_count: usize,
    pub last_recorded_at: Option<Nanos>,
}

/// The entitlement check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub allowed: bool,
    pub limit_max: Option<u128>,
    pub consumed: String,
    pub remaining: Option<String>,
    pub quantity: String,
    pub current_period_end: Option<Nanos>,
}

/// What a record is, once its fields are read.
struct Valid {
    parsed: Parsed,
    kind: Kind,
    /// The timestamp (time of receipt when absent).
    at: Nanos,
}

impl Model {
    pub fn new(grace: Nanos, now: Nanos) -> Model {
        Model {
            plans: plans(),
            grace,
            now,
            agreements: vec![],
            stored: vec![],
            next_seq: 0,
            keys: HashMap::new(),
            seen: BTreeMap::new(),
        }
    }

    pub fn saw(&mut self, what: &str) {
        *self.seen.entry(what.to_owned()).or_default() += 1;
    }

    pub fn interval(&self, a: usize) -> Interval {
        self.plans[self.agreements[a].plan].interval
    }

    /// Start of period `k` of agreement `a`.
    pub fn start(&self, a: usize, k: i64) -> Nanos {
        period_start(self.agreements[a].anchor, self.interval(a), k)
    }

    /// The index of agreement `a`'s period containing `t`.
    pub fn index(&self, a: usize, t: Nanos) -> i64 {
        period_index(self.agreements[a].anchor, self.interval(a), t)
    }

    pub fn is_active(&self, a: usize) -> bool {
        self.agreements[a].ended_at.is_none_or(|end| end > self.now)
    }

    /// The customer's active agreement.
    pub fn active_of(&self, customer: usize) -> Option<usize> {
        (0..self.agreements.len())
            .find(|&a| self.agreements[a].customer == customer && self.is_active(a))
    }

    fn feature(&self, a: usize, code: &str) -> Option<&Feature> {
        self.plans[self.agreements[a].plan]
            .features
            .iter()
            .find(|f| f.code == code)
    }

    /// Creating an agreement ends the customer's other active ones, now. Its
    /// anchor is its creation time truncated to the whole second (periods read
    /// like Kinde's, `2024-11-18T02:32:03Z`).
    pub fn create_agreement(&mut self, customer: usize, plan: usize) -> usize {
        for a in 0..self.agreements.len() {
            if self.agreements[a].customer == customer && self.is_active(a) {
                self.agreements[a].ended_at = Some(self.now);
            }
        }
        self.agreements.push(Agreement {
            customer,
            plan,
            anchor: self.now - self.now.rem_euclid(SECOND),
            ended_at: None,
        });
        self.agreements.len() - 1
    }

    /// The usage of (agreement, feature, period) from the given records, in
    /// (effective time, arrival) order; `None` if a running total passes 10^27.
    fn usage_of<'a>(records: impl Iterator<Item = &'a Stored>) -> Option<u128> {
        let mut records: Vec<&Stored> = records.collect();
        records.sort_by_key(|r| (r.effective, r.seq));
        let mut total: u128 = 0;
        for r in records {
            total = match r.kind {
                Kind::Delta => total + r.value,
                Kind::Absolute => r.value,
            };
            if total > MAX_TOTAL {
                return None;
            }
        }
        Some(total)
    }

    fn in_period(&self, a: usize, feature: &str, period: i64) -> impl Iterator<Item = &Stored> {
        let feature = feature.to_owned();
        self.stored
            .iter()
            .filter(move |r| r.agreement == a && r.feature == feature && r.period == period)
    }

    /// The code of a record's field problem if it were received at `now`.
    pub fn field_error_at(&self, r: &RecordReq, now: Nanos) -> Option<String> {
        validate(r, now).err()
    }

    /// Field validation at receipt (now).
    fn validate(&self, r: &RecordReq) -> Result<Valid, String> {
        validate(r, self.now)
    }

    /// The business checks, assignment and hard limit; stores the record if it passes.
    fn apply(&mut self, v: &Valid) -> Result<(), String> {
        let a = match v.parsed.agreement {
            Target::Unknown => return Err("AGREEMENT_NOT_FOUND".into()),
            Target::Known(a) => a,
        };
        if !self.is_active(a) {
            return Err("AGREEMENT_NOT_ACTIVE".into());
        }
        let feature = &v.parsed.feature;
        let (limit, enforce) = match self.feature(a, feature) {
            None => return Err("FEATURE_NOT_FOUND".into()),
            Some(f) if !f.metered => return Err("FEATURE_NOT_METERED".into()),
            Some(f) => (f.limit_max, f.enforce),
        };
        // Assignment: before the start counts at the start; a closed period's
        // record moves to the current period, at its start.
        let anchor = self.agreements[a].anchor;
        let mut effective = v.at.max(anchor);
        let mut period = self.index(a, effective);
        if v.at < anchor {
            self.saw("assigned: before the start");
        }
        if self.start(a, period + 1) + self.grace < self.now {
            period = self.index(a, self.now);
            effective = self.start(a, period);
            self.saw("assigned: late, moved to the current period");
        } else if self.start(a, period + 1) + self.grace == self.now {
            self.saw("assigned: received exactly at end + grace");
        } else if self.start(a, period + 1) < self.now {
            self.saw("assigned: late within grace");
        }
        if v.at == self.start(a, period) || v.at == self.start(a, period + 1) {
            self.saw("assigned: timestamp exactly at a period boundary");
        }
        if v.at > self.now {
            self.saw("assigned: timestamp ahead of the clock (within 5 min)");
        }
        let record = Stored {
            agreement: a,
            feature: feature.clone(),
            period,
            effective,
            seq: self.next_seq,
            kind: v.kind,
            value: v.parsed.value,
            received: self.now,
        };
        let before =
            Self::usage_of(self.in_period(a, feature, period)).expect("stored totals are in range");
        let Some(after) = Self::usage_of(self.in_period(a, feature, period).chain([&record]))
        else {
            return Err("VALUE_OUT_OF_RANGE".into());
        };
        if let (Some(limit), true) = (limit, enforce)
            && after > limit * 1_000_000_000
            && after > before
        {
            return Err("ENTITLEMENT_LIMIT_EXCEEDED".into());
        }
        if limit.is_some_and(|l| enforce && after == l * 1_000_000_000) {
            self.saw("limit: reached exactly");
        }
        if self
            .in_period(a, feature, period)
            .any(|r| r.effective == effective)
        {
            self.saw("order: exact tie with an earlier record");
        }
        if self
            .in_period(a, feature, period)
            .any(|r| r.effective > effective)
        {
            self.saw("order: arrives before a later record");
        }
        self.next_seq += 1;
        self.stored.push(record);
        Ok(())
    }

    /// A remembered key's answer to a request, if the key is remembered.
    fn replay(&self, key: Option<&str>, request: &Remembered) -> Option<Answer> {
        let known = self.keys.get(key?)?;
        if known.at < self.now - RETENTION {
            return None;
        }
        Some(if known.request.same(request) {
            Answer {
                replayed: true,
                ..known.answer.clone()
            }
        } else {
            Answer::error("IDEMPOTENCY_KEY_REUSED")
        })
    }

    /// `POST /api/v1/billing/meter_usage` at `now`.
    pub fn record(&mut self, r: &RecordReq, key: Option<&str>) -> Answer {
        let answer = self.record_answer(r, key);
        let what = match (answer.replayed, answer.codes.first()) {
            (true, _) => "single: replayed".to_owned(),
            (false, None) => "single: OK".to_owned(),
            (false, Some(code)) => format!("single: {code}"),
        };
        self.saw(&what);
        answer
    }

    fn record_answer(&mut self, r: &RecordReq, key: Option<&str>) -> Answer {
        let v = match self.validate(r) {
            Ok(v) => v,
            Err(code) => return Answer::error(&code),
        };
        let request = Remembered::Single(v.parsed.clone());
        if let Some(answer) = self.replay(key, &request) {
            return answer;
        }
        let (answer, remember) = match self.apply(&v) {
            Ok(()) => (Answer::ok(), true),
            Err(code) => {
                let remember = code == "ENTITLEMENT_LIMIT_EXCEEDED";
                (Answer::error(&code), remember)
            }
        };
        if let (Some(key), true) = (key, remember) {
            self.keys.insert(
                key.to_owned(),
                Key {
                    request,
                    answer: answer.clone(),
                    at: self.now,
                },
            );
        }
        answer
    }

    /// `POST /api/v1/billing/meter_usage/batch` at `now` (1 to 100 records).
    pub fn batch(&mut self, records: &[RecordReq], key: Option<&str>) -> Answer {
        let answer = self.batch_answer(records, key);
        if answer.replayed {
            self.saw("batch: replayed");
        }
        for code in answer.codes.iter().chain(&answer.results) {
            self.saw(&format!("batch: {code}"));
        }
        answer
    }

    fn batch_answer(&mut self, records: &[RecordReq], key: Option<&str>) -> Answer {
        let checked: Vec<Result<Valid, String>> =
            records.iter().map(|r| self.validate(r)).collect();
        let request = Remembered::Batch(
            records
                .iter()
                .map(|r| (Raw::of(r), parse(r).ok().map(|(parsed, ..)| parsed)))
                .collect(),
        );
        if let Some(answer) = self.replay(key, &request) {
            return answer;
        }
        let results = checked
            .iter()
            .map(
                |c| match c.as_ref().map_err(Clone::clone).and_then(|v| self.apply(v)) {
                    Ok(()) => "OK".to_owned(),
                    Err(code) => code,
                },
            )
            .collect();
        let answer = Answer::batch(results);
        if let Some(key) = key {
            self.keys.insert(
                key.to_owned(),
                Key {
                    request,
                    answer: answer.clone(),
                    at: self.now,
                },
            );
        }
        answer
    }

    /// `GET /api/v1/billing/meter_usage`: each metered feature's usage (or the
    /// one asked for) in agreement `a`'s period containing `at` (default now).
    pub fn read(
        &self,
        a: Target,
        feature: Option<&str>,
        at: Option<Nanos>,
    ) -> Result<Vec<Usage>, String> {
        let Target::Known(a) = a else {
            return Err("AGREEMENT_NOT_FOUND".into());
        };
        let features: Vec<&Feature> = match feature {
            None => self.plans[self.agreements[a].plan]
                .features
                .iter()
                .filter(|f| f.metered)
                .collect(),
            Some(code) => match self.feature(a, code) {
                None => return Err("FEATURE_NOT_FOUND".into()),
                Some(f) if !f.metered => return Err("FEATURE_NOT_METERED".into()),
                Some(f) => vec![f],
            },
        };
        let k = self.index(a, at.unwrap_or(self.now));
        Ok(features
            .into_iter()
            .map(|f| {
                let records: Vec<&Stored> = self.in_period(a, f.code, k).collect();
                Usage {
                    feature: f.code.to_owned(),
                    start: self.start(a, k),
                    end: self.start(a, k + 1),
                    value: Self::usage_of(records.iter().copied()).unwrap(),
                    record_count: records.len(),
                    last_recorded_at: records.iter().map(|r| r.received).max(),
                }
            })
            .collect())
    }

    /// The current period usage of a feature of agreement `a`.
    pub fn current_usage(&self, a: usize, feature: &str) -> u128 {
        Self::usage_of(self.in_period(a, feature, self.index(a, self.now))).unwrap()
    }

    /// `GET /api/v1/billing/entitlements/check` (`Err`: a quantity that is no meter value).
    pub fn check(
        &self,
        customer: usize,
        feature: &str,
        quantity: Option<&str>,
    ) -> Result<Check, String> {
        let q = match quantity {
            None => 1_000_000_000,
            Some(text) => parse_value(text).ok_or_else(|| "INVALID_METER_VALUE".to_owned())?,
        };
        let quantity = show_value(q);
        let Some(a) = self.active_of(customer) else {
            return Ok(Check {
                allowed: false,
                limit_max: None,
                consumed: "0".into(),
                remaining: Some("0".into()),
                quantity,
                current_period_end: None,
            });
        };
        let end = Some(self.start(a, self.index(a, self.now) + 1));
        Ok(match self.feature(a, feature) {
            None => Check {
                allowed: false,
                limit_max: None,
                consumed: "0".into(),
                remaining: Some("0".into()),
                quantity,
                current_period_end: end,
            },
            Some(f) if !f.metered => Check {
                allowed: true,
                limit_max: None,
                consumed: "0".into(),
                remaining: None,
                quantity,
                current_period_end: end,
            },
            Some(f) => {
                let consumed = self.current_usage(a, feature);
                let limit = f.limit_max.map(|l| l * 1_000_000_000);
                Check {
                    allowed: limit.is_none_or(|l| consumed + q <= l),
                    limit_max: f.limit_max,
                    consumed: show_value(consumed),
                    remaining: limit.map(|l| show_value(l.saturating_sub(consumed))),
                    quantity,
                    current_period_end: end,
                }
            }
        })
    }

    /// The periods of agreement `a` that hold records (for the final reads).
    pub fn periods_with_records(&self, a: usize) -> Vec<i64> {
        let mut periods: Vec<i64> = self
            .stored
            .iter()
            .filter(|r| r.agreement == a)
            .map(|r| r.period)
            .collect();
        periods.sort();
        periods.dedup();
        periods
    }
}

/// Field validation of a record received at `now`: the first problem's code,
/// or the record read.
fn validate(r: &RecordReq, now: Nanos) -> Result<Valid, String> {
    let (parsed, kind, timestamp) = parse(r)?;
    let at = timestamp.unwrap_or(now);
    if at > now + FUTURE_ALLOWANCE {
        return Err("TIMESTAMP_IN_FUTURE".into());
    }
    Ok(Valid { parsed, kind, at })
}

/// A record's fields read, whatever the time of receipt (the 5-minute bound
/// is `validate`'s): the parsed record, its type and its timestamp.
fn parse(r: &RecordReq) -> Result<(Parsed, Kind, Option<Nanos>), String> {
    let Some(value) = parse_value(&r.value) else {
        return Err("INVALID_METER_VALUE".into());
    };
    let timestamp = match r.timestamp.text() {
        None => None,
        Some(t) => Some(parse_time(t).ok_or_else(|| "INVALID_TIMESTAMP".to_owned())?),
    };
    let kind = match r.meter_type.text() {
        None | Some("delta") => Kind::Delta,
        Some("absolute") => Kind::Absolute,
        Some(_) => return Err("INVALID_METER_TYPE".into()),
    };
    let parsed = Parsed {
        agreement: r.agreement,
        feature: r.feature.clone(),
        value,
        timestamp: r.timestamp.text().map(str::to_owned),
        meter_type: r.meter_type.text().map(str::to_owned),
    };
    Ok((parsed, kind, timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_counts_right() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2024, 2, 29), 19782);
        for days in (0..120_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            parse_time("2024-11-18T13:32:03+11:00"),
            parse_time("2024-11-18T02:32:03Z")
        );
        assert_eq!(
            parse_time("2024-11-18T13:32:03+1100"),
            parse_time("2024-11-18T02:32:03.000Z")
        );
        assert_eq!(
            show(parse_time("2024-02-29T23:59:59.5-01").unwrap()),
            "2024-03-01T00:59:59.500000000Z"
        );
    }

    #[test]
    fn periods_follow_the_documented_table() {
        let t = |s| parse_time(s).unwrap();
        let starts = |anchor, interval, n| {
            (0..n)
                .map(|k| show(period_start(t(anchor), interval, k)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            starts("2024-01-31T10:00:00Z", Interval::Month, 4),
            [
                "2024-01-31T10:00:00.000000000Z",
                "2024-02-29T10:00:00.000000000Z",
                "2024-03-31T10:00:00.000000000Z",
                "2024-04-30T10:00:00.000000000Z"
            ]
        );
        assert_eq!(
            starts("2024-02-29T00:00:00Z", Interval::Year, 5)[1..],
            [
                "2025-02-28T00:00:00.000000000Z",
                "2026-02-28T00:00:00.000000000Z",
                "2027-02-28T00:00:00.000000000Z",
                "2028-02-29T00:00:00.000000000Z"
            ]
        );
        let anchor = t("2025-01-31T10:00:00Z");
        assert_eq!(
            period_index(anchor, Interval::Month, t("2025-02-28T09:59:59.999999999Z")),
            0
        );
        assert_eq!(
            period_index(anchor, Interval::Month, t("2025-02-28T10:00:00Z")),
            1
        );
        assert_eq!(
            period_index(anchor, Interval::Month, t("2025-03-31T09:00:00Z")),
            1
        );
    }

    #[test]
    fn values_are_exact_and_canonical() {
        assert_eq!(parse_value("007").map(show_value).as_deref(), Some("7"));
        assert_eq!(
            parse_value("100.250").map(show_value).as_deref(),
            Some("100.25")
        );
        assert_eq!(
            parse_value("0.000001").map(show_value).as_deref(),
            Some("0.000001")
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            ".5",
            "5.",
            "1.0000000001",
            "1234567890123456789",
            " 1",
        ] {
            assert_eq!(parse_value(bad), None, "{bad}");
        }
        assert_eq!(
            parse_value("999999999999999999.999999999")
                .map(show_value)
                .as_deref(),
            Some("999999999999999999.999999999")
        );
    }
}
