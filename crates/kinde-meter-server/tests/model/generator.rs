//! Histories from a seed: each case starts at an interesting instant (Jan 31,
//! Feb 29 of a leap year, month ends, midnight, a nanosecond before it), makes
//! agreements on day/week/month/year plans, and then takes steps chosen by a
//! seeded `StdRng` looking at the model's state: clock moves (to period
//! boundaries, the grace edge, a nanosecond either side), single records and
//! batches (timestamps before the start, inside periods, exactly at boundaries,
//! in closed periods, in the future within and beyond 5 minutes, ties; delta,
//! absolute, values near 18 digits, hard limits reached exactly or passed by a
//! nano-unit), replays under a key (same, equivalent or different body), usage
//! reads with and without `at`, entitlement checks and plan switches.

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

use crate::reference::{
    DAY, Field, HOUR, MINUTE, Model, Nanos, RETENTION, RecordReq, SECOND, Target, civil,
    days_in_month, instant, is_leap, parse_value, show_value,
};

/// Generator features switched off while a server bug they find is open
/// (see /work/notes/model-findings.md). All on: no open finding.
pub struct Switches {
    /// Usage reads with `at` before the agreement's start (reported in the
    /// first period, as records stamped before the start count there; an
    /// undocumented corner, kept because the server answers it consistently).
    pub read_before_start: bool,
    /// Replaying a batch, byte for byte, once one of its records that was
    /// refused for a timestamp in the future is no longer in the future.
    pub replay_batch_after_future_record_comes_due: bool,
    /// Cases whose clock lies before the real date. The writers purge expired
    /// idempotency keys by the system clock, not the server's clock, so such a
    /// case's keys may vanish within minutes of the billing clock. Off: cases
    /// start in 2030 or later.
    pub clocks_before_the_real_date: bool,
}

pub const SWITCHES: Switches = Switches {
    read_before_start: true,
    replay_batch_after_future_record_comes_due: true,
    clocks_before_the_real_date: true,
};

/// The grace period of the servers of each class (`--grace-seconds`).
pub const GRACES: [Nanos; 2] = [0, 2 * HOUR];

/// One step of a history.
#[derive(Debug, Clone)]
pub enum Step {
    /// Move the clock to this instant (never backwards).
    Clock(Nanos),
    /// Create an agreement for a customer (ending its active one).
    Create { customer: usize, plan: usize },
    Record {
        record: RecordReq,
        key: Option<String>,
    },
    Batch {
        records: Vec<RecordReq>,
        key: Option<String>,
    },
    Read {
        agreement: Target,
        feature: Option<String>,
        at: Option<String>,
    },
    Check {
        customer: usize,
        feature: String,
        quantity: Option<String>,
    },
}

/// A request sent under a key, for replays.
#[derive(Clone)]
enum Keyed {
    Single(RecordReq),
    Batch(Vec<RecordReq>),
}

pub struct Generator {
    rng: StdRng,
    seed: u64,
    pub grace_class: usize,
    pub customers: usize,
    keys: Vec<(String, Keyed, Nanos)>,
    timestamps: Vec<String>,
    next_key: u32,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut rng = StdRng::seed_from_u64(seed);
        let grace_class = rng.random_range(0..GRACES.len());
        let customers = rng.random_range(1..=2);
        Generator {
            rng,
            seed,
            grace_class,
            customers,
            keys: vec![],
            timestamps: vec![],
            next_key: 0,
        }
    }

    /// The grace class a seed's case runs with.
    pub fn grace_class_of(seed: u64) -> usize {
        Generator::new(seed).grace_class
    }

    /// How many steps after the first agreements.
    pub fn length(&mut self) -> usize {
        self.rng.random_range(6..=22)
    }

    pub fn plan(&mut self) -> usize {
        self.rng.random_range(0..4)
    }

    /// The case's first instant: an interesting anchor.
    pub fn start(&mut self) -> Nanos {
        let r = &mut self.rng;
        let first_year = if SWITCHES.clocks_before_the_real_date {
            2001
        } else {
            2030
        };
        // Up to 2120 (2100 is a common year): 22 steps of at most 3 years
        // leave the clock before 2200, the end of the server's range.
        let mut year = r.random_range(first_year..=2120);
        let (month, day) = match r.random_range(0..8) {
            0 => (1, 31),
            1 => {
                while !is_leap(year) {
                    year += 1;
                }
                (2, 29)
            }
            2 => (2, 28),
            3 => {
                let m = r.random_range(1..=12);
                (m, days_in_month(year, m))
            }
            4 => (r.random_range(1..=12), 30.min(28 + r.random_range(0..3))),
            5 => (12, 31),
            _ => (r.random_range(1..=12), r.random_range(1..=28)),
        };
        let day = day.min(days_in_month(year, month));
        let (h, m, s, n) = match r.random_range(0..5) {
            0 => (0, 0, 0, 0),
            1 => (23, 59, 59, 999_999_999),
            2 => (23, 59, 59, 0),
            3 => (
                r.random_range(0..24),
                r.random_range(0..60),
                r.random_range(0..60),
                0,
            ),
            _ => (
                r.random_range(0..24),
                r.random_range(0..60),
                r.random_range(0..60),
                r.random_range(0..1_000_000_000),
            ),
        };
        instant(year, month, day, h, m, s, n)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn nanos(&mut self, below: Nanos) -> Nanos {
        self.rng.random_range(0..below.max(1))
    }

    fn key(&mut self) -> String {
        self.next_key += 1;
        format!("model-{:016x}-{}", self.seed, self.next_key)
    }

    /// The next step, seeing the model.
    pub fn next(&mut self, m: &Model) -> Step {
        let has_second = m.agreements.iter().any(|a| a.customer == 1);
        if self.customers == 2 && !has_second && self.chance(0.15) {
            let plan = self.plan();
            return Step::Create { customer: 1, plan };
        }
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=21 => Step::Clock(self.clock(m)),
            22..=46 => {
                let keyed = self.chance(0.35);
                let record = self.record(m, !keyed);
                let key = keyed.then(|| self.key());
                if let Some(k) = &key {
                    self.keys
                        .push((k.clone(), Keyed::Single(record.clone()), m.now));
                }
                Step::Record { record, key }
            }
            47..=59 => {
                let keyed = self.chance(0.35);
                let n = if self.chance(0.1) {
                    self.rng.random_range(20..=100)
                } else {
                    self.rng.random_range(1..=12)
                };
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut r = self.record(m, !keyed);
                    if let (Some(prev), true) = (records.last(), self.chance(0.2))
                        && m.field_error_at(&r, m.now).is_none()
                    {
                        // An exact tie with the record before it (never on a
                        // record with a field error: one problem per record).
                        let prev: &RecordReq = prev;
                        r.timestamp = prev.timestamp.clone();
                    }
                    records.push(r);
                }
                let key = keyed.then(|| self.key());
                if let Some(k) = &key {
                    self.keys
                        .push((k.clone(), Keyed::Batch(records.clone()), m.now));
                }
                Step::Batch { records, key }
            }
            60..=67 if !self.keys.is_empty() => self.replay(m),
            60..=85 => self.read(m),
            86..=96 => self.check(m),
            _ => {
                let customer = self.rng.random_range(0..self.customers);
                if customer == 1 && !has_second {
                    return Step::Clock(self.clock(m));
                }
                let plan = self.plan();
                Step::Create { customer, plan }
            }
        }
    }

    fn any_agreement(&mut self, m: &Model) -> usize {
        self.rng.random_range(0..m.agreements.len())
    }

    /// An agreement, active ones preferred.
    fn agreement(&mut self, m: &Model) -> usize {
        let active: Vec<usize> = (0..m.agreements.len())
            .filter(|&a| m.is_active(a))
            .collect();
        if !active.is_empty() && self.chance(0.85) {
            *active.choose(&mut self.rng).unwrap()
        } else {
            self.any_agreement(m)
        }
    }

    /// Where the clock goes next (never backwards).
    fn clock(&mut self, m: &Model) -> Nanos {
        let a = self.agreement(m);
        let k = m.index(a, m.now);
        let next = m.start(a, k + 1);
        let at = match self.rng.random_range(0..12) {
            0 => m.now,
            1 | 2 => m.now + self.rng.random_range(1..=600) * SECOND,
            3 => m.now + self.nanos(10 * MINUTE),
            4 => m.now + self.nanos(3 * DAY),
            5 => next,
            6 => next - 1,
            7 => next + m.grace,
            8 => next + m.grace + 1,
            9 => next + m.grace - 1,
            10 => {
                let j = self.rng.random_range(1..=3);
                let (s, e) = (m.start(a, k + j), m.start(a, k + j + 1));
                s + self.nanos(e - s)
            }
            _ => next + self.rng.random_range(-300..=300) * SECOND,
        };
        at.max(m.now)
    }

    /// An instant written as RFC 3339 in one of the accepted forms.
    pub fn write_time(&mut self, t: Nanos) -> String {
        let style = self.rng.random_range(0..10);
        let offset_minutes: i64 = match style {
            5 | 6 => *[-720, -300, -210, 0, 330, 345, 600, 660, 840]
                .choose(&mut self.rng)
                .unwrap(),
            7 => 60 * self.rng.random_range(-12..=14),
            _ => 0,
        };
        let local = t + Nanos::from(offset_minutes) * MINUTE;
        let (y, mo, d, h, mi, s, n) = civil(local);
        let fraction = match style {
            // all nine digits
            1 | 5 => format!(".{n:09}"),
            _ if n == 0 && self.chance(0.7) => String::new(),
            // the shortest exact fraction
            _ => format!(".{n:09}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned(),
        };
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let (oh, om) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
        let zone = match style {
            5 => format!("{sign}{oh:02}:{om:02}"),
            6 => format!("{sign}{oh:02}{om:02}"),
            7 => format!("{sign}{oh:02}"),
            8 => String::new(),
            _ => "Z".to_owned(),
        };
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}{zone}")
    }

    /// The timestamp of a record for agreement `a`.
    fn timestamp(&mut self, m: &Model, a: Option<usize>) -> Field {
        if self.chance(0.12) {
            return Field::Absent;
        }
        if self.chance(0.03) {
            return Field::Null;
        }
        if !self.timestamps.is_empty() && self.chance(0.1) {
            // A tie with an earlier record of the case.
            return Field::Text(self.timestamps.choose(&mut self.rng).unwrap().clone());
        }
        let a = a.unwrap_or_else(|| self.any_agreement(m));
        let anchor = m.agreements[a].anchor;
        let k = m.index(a, m.now);
        let (start, end) = (m.start(a, k), m.start(a, k + 1));
        let previous = m.start(a, (k - 1).max(0));
        let t = match self.rng.random_range(0..20) {
            0 => m.now,
            1 => m.now - self.nanos(m.now - start + 1),
            2 => start,
            3 => start - 1,
            4 => start + 1,
            5 => previous + self.nanos(start - previous),
            6 => previous,
            7 => anchor - 1 - self.nanos(40 * DAY),
            8 => anchor - 1,
            9 => anchor,
            10 => m.now + 5 * MINUTE,
            11 => m.now + 5 * MINUTE + 1,
            12 => m.now + self.nanos(5 * MINUTE),
            13 => m.now + 5 * MINUTE + 1 + self.nanos(HOUR),
            14 => anchor + self.nanos(m.now - anchor + 1),
            15 => end - 1,
            16 => end,
            17 => start + m.grace,
            _ => m.now - self.nanos(2 * HOUR),
        };
        let text = self.write_time(t);
        self.timestamps.push(text.clone());
        Field::Text(text)
    }

    /// A meter value for a feature, given the period's current usage.
    fn value(&mut self, m: &Model, a: usize, feature: &str) -> String {
        let limit: Option<u128> = match feature {
            "capped" => Some(100),
            "huge" => Some(5_000_000_000_000_000_000),
            _ => None,
        };
        if let Some(limit) = limit
            && self.chance(0.3)
        {
            let remaining = (limit * 1_000_000_000).saturating_sub(m.current_usage(a, feature));
            let v = match self.rng.random_range(0..3) {
                0 => remaining,
                1 => remaining + 1,
                _ => remaining.saturating_sub(1),
            };
            if v < 1_000_000_000_000_000_000_000_000 {
                return show_value(v);
            }
        }
        let r = &mut self.rng;
        match r.random_range(0..12) {
            0 => "0".to_owned(),
            1..=4 => r.random_range(1..=30).to_string(),
            5 => format!("{}.{}", r.random_range(0..50), r.random_range(1..1000)),
            6 => format!("0.{:09}", r.random_range(1..1_000_000_000)),
            7 => format!("{:03}", r.random_range(0..100)),
            8 => format!("{}.{}0", r.random_range(0..50), r.random_range(1..10)),
            9 => "999999999999999999.999999999".to_owned(),
            10 => format!(
                "{}",
                r.random_range(100_000_000_000_000_000u64..=999_999_999_999_999_999)
            ),
            _ => format!(
                "{}.{:09}",
                r.random_range(100_000_000_000_000_000u64..=999_999_999_999_999_999),
                r.random_range(0..1_000_000_000)
            ),
        }
    }

    /// A record; `unkeyed` ones may carry one field error (never two: which
    /// of several problems comes first is not part of the contract).
    fn record(&mut self, m: &Model, unkeyed: bool) -> RecordReq {
        let target = if self.chance(0.02) {
            Target::Unknown
        } else {
            Target::Known(self.agreement(m))
        };
        let a = match target {
            Target::Known(a) => Some(a),
            Target::Unknown => None,
        };
        let plan_features: Vec<&str> = match a {
            Some(a) => m.plans[m.agreements[a].plan]
                .features
                .iter()
                .filter(|f| f.metered)
                .map(|f| f.code)
                .collect(),
            None => vec!["calls"],
        };
        let feature = match self.rng.random_range(0..100) {
            0..=2 => "flag",
            3 | 4 => "nope",
            5..=7 => "huge",
            8..=40 => "capped",
            _ => plan_features.choose(&mut self.rng).unwrap(),
        }
        .to_owned();
        let defect = if unkeyed {
            self.rng.random_range(0..100)
        } else {
            99
        };
        let value = match (defect, a) {
            (0 | 1, _) => (*[
                "-1",
                "+1",
                "1e3",
                ".5",
                "5.",
                "1.0000000001",
                "1234567890123456789",
                " 1",
                "",
            ]
            .choose(&mut self.rng)
            .unwrap())
            .to_owned(),
            (_, Some(a)) => self.value(m, a, &feature),
            (_, None) => "1".to_owned(),
        };
        let timestamp = match defect {
            0 | 1 | 3 => Field::Absent,
            2 => Field::Text(
                (*["2024-13-01T00:00:00Z", "yesterday", "2024-02-30T00:00:00Z"]
                    .choose(&mut self.rng)
                    .unwrap())
                .to_owned(),
            ),
            _ => self.timestamp(m, a),
        };
        let meter_type = match (defect, self.rng.random_range(0..100)) {
            (3, _) => Field::Text("bogus".into()),
            (_, 0..=39) => Field::Absent,
            (_, 40..=64) => Field::Text("delta".into()),
            (_, 65..=92) => Field::Text("absolute".into()),
            _ => Field::Null,
        };
        RecordReq {
            agreement: target,
            feature,
            value,
            timestamp,
            meter_type,
            order: self.rng.random_range(0..4),
        }
    }

    /// The same record written differently: leading or trailing zeros, another
    /// field order, `null` for an absent field.
    fn equivalent(&mut self, r: &RecordReq) -> RecordReq {
        let mut r = r.clone();
        r.order = (r.order + 1 + self.rng.random_range(0..3)) % 4;
        let (int, frac) = r.value.split_once('.').unwrap_or((&r.value, ""));
        if int.len() <= 16 && self.chance(0.5) {
            r.value = format!("00{}", r.value);
        } else if frac.len() <= 7 {
            r.value = if frac.is_empty() {
                format!("{}.00", r.value)
            } else {
                format!("{}00", r.value)
            };
        }
        let swap = |f: &mut Field| match f {
            Field::Absent => *f = Field::Null,
            Field::Null => *f = Field::Absent,
            Field::Text(_) => {}
        };
        if self.chance(0.5) {
            swap(&mut r.timestamp);
        }
        if self.chance(0.5) {
            swap(&mut r.meter_type);
        }
        r
    }

    /// The record with another value.
    fn different(&mut self, r: &RecordReq) -> RecordReq {
        let mut r = r.clone();
        let old = parse_value(&r.value).unwrap_or(0);
        let new = old + self.rng.random_range(1..=5_000_000_000);
        r.value = if new < 1_000_000_000_000_000_000_000_000 {
            show_value(new)
        } else {
            "1".to_owned()
        };
        r
    }

    /// A request sent again under a key used before: the same body, an
    /// equivalent one, or another one. Keys close to the end of the retention
    /// window are left alone (the edge is not part of the contract).
    fn replay(&mut self, m: &Model) -> Step {
        let usable: Vec<usize> = (0..self.keys.len())
            .filter(|&i| {
                let age = m.now - self.keys[i].2;
                (age - RETENTION).abs() > HOUR
            })
            .collect();
        let Some(&i) = usable.choose(&mut self.rng) else {
            return self.read(m);
        };
        let (key, sent, sent_at) = self.keys[i].clone();
        if let Keyed::Batch(rs) = &sent
            && !SWITCHES.replay_batch_after_future_record_comes_due
            && rs.iter().any(|r| {
                m.field_error_at(r, sent_at).is_some() != m.field_error_at(r, m.now).is_some()
            })
        {
            return self.read(m);
        }
        let how = self.rng.random_range(0..10);
        match sent {
            Keyed::Single(r) => {
                let record = match how {
                    0..=4 => r,
                    5..=7 => self.equivalent(&r),
                    _ => self.different(&r),
                };
                Step::Record {
                    record,
                    key: Some(key),
                }
            }
            Keyed::Batch(rs) => {
                let records = match how {
                    0..=4 => rs,
                    5..=7 => rs.iter().map(|r| self.equivalent(r)).collect(),
                    8 if rs.len() > 1 => rs[..rs.len() - 1].to_vec(),
                    _ => {
                        let mut rs = rs;
                        let j = self.rng.random_range(0..rs.len());
                        rs[j] = self.different(&rs[j]);
                        rs
                    }
                };
                Step::Batch {
                    records,
                    key: Some(key),
                }
            }
        }
    }

    fn read(&mut self, m: &Model) -> Step {
        if self.chance(0.02) {
            return Step::Read {
                agreement: Target::Unknown,
                feature: None,
                at: None,
            };
        }
        let a = self.any_agreement(m);
        let feature = match self.rng.random_range(0..40) {
            0 => Some("flag".to_owned()),
            1 => Some("nope".to_owned()),
            2..=9 => {
                let metered: Vec<&str> = m.plans[m.agreements[a].plan]
                    .features
                    .iter()
                    .filter(|f| f.metered)
                    .map(|f| f.code)
                    .collect();
                Some((*metered.choose(&mut self.rng).unwrap()).to_owned())
            }
            _ => None,
        };
        let k = m.index(a, m.now);
        let anchor = m.agreements[a].anchor;
        let at = match self.rng.random_range(0..14) {
            0..=5 => None,
            6 => Some(m.now),
            7 => Some(m.start(a, k)),
            8 => Some(m.start(a, k) - 1),
            9 => Some(m.start(a, k + 1)),
            10 => Some(anchor + self.nanos(m.now - anchor + 1)),
            11 => Some(m.start(a, (k - 1).max(0))),
            12 if SWITCHES.read_before_start => Some(anchor - 1 - self.nanos(10 * DAY)),
            _ => Some(m.start(a, k + 1) - 1),
        };
        let at = at.map(|t| self.write_time(t));
        Step::Read {
            agreement: Target::Known(a),
            feature,
            at,
        }
    }

    fn check(&mut self, m: &Model) -> Step {
        // One customer past the case's own never had an agreement.
        let customer = self.rng.random_range(0..=self.customers);
        let feature = (*[
            "calls", "capped", "capped", "huge", "soft", "soft", "flag", "nope",
        ]
        .choose(&mut self.rng)
        .unwrap())
        .to_owned();
        let consumed = m
            .active_of(customer)
            .map_or(0, |a| m.current_usage(a, &feature));
        let limit: u128 = match feature.as_str() {
            "capped" => 100_000_000_000,
            "soft" => 50_000_000_000,
            _ => 0,
        };
        let remaining = limit.saturating_sub(consumed);
        let quantity = match self.rng.random_range(0..10) {
            0 | 1 => None,
            2 => Some("0".to_owned()),
            3 => Some(show_value(remaining)),
            4 => Some(show_value(remaining + 1)),
            5 => Some(format!("{}.50", self.rng.random_range(0..120))),
            6 if self.chance(0.3) => {
                Some((*["abc", "-1", "1e3", ""].choose(&mut self.rng).unwrap()).to_owned())
            }
            _ => Some(self.rng.random_range(1..=120).to_string()),
        };
        Step::Check {
            customer,
            feature,
            quantity,
        }
    }
}
