//! What each `--mode` sends, and in which order the modes run.
//!
//! Every mode but `healthz` and `axum` works on agreements of its own, made
//! for the run (or `--customers`' agreements, shared by every run), and each
//! run's stored usage is checked on its own. `read`, `check` and `mixed` first
//! record one usage record per agreement (a delta of 1, counted as
//! acknowledged), so that what they read exists, as it does for a customer in
//! use.

use serde::Serialize;

use super::check_ceiling;
use super::load::{Method, RequestKind, Workload};
use super::target::Agreement;
use crate::cli::{BenchArgs, BenchMode};

/// The `mixed` mode's requests out of every 20, in this order: 16 single
/// records (80 %), 3 usage reads (15 %), 1 entitlement check (5 %), roughly an
/// application that records each use of a feature and now and then shows the
/// customer their usage or asks whether they may go on.
pub const MIXED_CYCLE: [MixedRequest; 20] = {
    use MixedRequest::{Check as C, Read as R, Write as W};
    [W, W, W, W, W, R, W, W, W, W, W, R, W, W, W, W, W, R, W, C]
};

/// A kind of request of the `mixed` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixedRequest {
    Write,
    Read,
    Check,
}

/// The mix of `mixed`, in percent, for the report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mix {
    pub write_percent: usize,
    pub read_percent: usize,
    pub check_percent: usize,
}

impl Mix {
    /// The shares of [`MIXED_CYCLE`].
    pub fn of_cycle() -> Mix {
        let percent =
            |kind| MIXED_CYCLE.iter().filter(|k| **k == kind).count() * 100 / MIXED_CYCLE.len();
        Mix {
            write_percent: percent(MixedRequest::Write),
            read_percent: percent(MixedRequest::Read),
            check_percent: percent(MixedRequest::Check),
        }
    }
}

impl BenchMode {
    /// The mode's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Single => "single",
            BenchMode::SingleEnforced => "single-enforced",
            BenchMode::SingleKeyed => "single-keyed",
            BenchMode::Check => "check",
            BenchMode::Healthz => "healthz",
            BenchMode::Batch => "batch",
            BenchMode::Read => "read",
            BenchMode::Mixed => "mixed",
            BenchMode::Axum => "axum",
            BenchMode::Ceiling => "ceiling",
            BenchMode::CheckCeiling => "check-ceiling",
        }
    }

    /// Whether the mode's timed requests record usage.
    pub fn records_usage(self) -> bool {
        matches!(
            self,
            BenchMode::Single
                | BenchMode::SingleEnforced
                | BenchMode::SingleKeyed
                | BenchMode::Batch
                | BenchMode::Mixed
                | BenchMode::Ceiling
        )
    }

    /// Whether the mode works on the target's agreements (all but `healthz`
    /// and the bench's own servers), whose usage is read back and compared
    /// with what was acknowledged (`ceiling` counts its own table's records).
    pub fn uses_agreements(self) -> bool {
        !matches!(self, BenchMode::Healthz) && !self.in_bench()
    }

    /// Whether the mode's server is one of the bench's own, in this process
    /// (`axum`, `ceiling`, `check-ceiling`), whatever the target.
    pub fn in_bench(self) -> bool {
        matches!(
            self,
            BenchMode::Axum | BenchMode::Ceiling | BenchMode::CheckCeiling
        )
    }

    /// Whether one record per agreement is made before the timed requests.
    pub fn seeds_usage(self) -> bool {
        matches!(self, BenchMode::Read | BenchMode::Check | BenchMode::Mixed)
    }

    /// The feature its records go to.
    pub fn feature_code(self, args: &BenchArgs) -> &str {
        match self {
            BenchMode::SingleEnforced => &args.enforced_feature_code,
            _ => &args.feature_code,
        }
    }
}

/// The modes in the order they run at each connection count: `axum` first
/// (`healthz`'s ceiling), then `healthz` (every other mode's same-run
/// baseline): both run even when not asked for; then the others in the order
/// given, each once.
pub fn run_order(modes: &[BenchMode]) -> Vec<BenchMode> {
    let mut order = vec![BenchMode::Axum, BenchMode::Healthz];
    for mode in modes {
        if !order.contains(mode) {
            order.push(*mode);
        }
    }
    order
}

/// What a mode sends, for the report's header.
pub fn describe(mode: BenchMode, args: &BenchArgs) -> String {
    let feature = mode.feature_code(args);
    match mode {
        BenchMode::Healthz => {
            "GET /healthz, no token (the HTTP path alone: the baseline)".to_owned()
        }
        BenchMode::Axum => "GET /healthz of a bare axum hello-world in this process, no layers, \
             hyper HTTP/1.1 configured as serve's (healthz's ceiling)"
            .to_owned(),
        BenchMode::Ceiling => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {feature}, to the least \
             durable write in this process: a bare axum, a map of verified tokens, serde, one \
             writer committing all queued records into one SQLite table (WAL, synchronous=FULL), \
             200 after COMMIT (single's ceiling)"
        ),
        BenchMode::CheckCeiling => format!(
            "GET /api/v1/billing/entitlements/check?customer_id=…&feature_code={feature} to the \
             least read in this process: a bare axum, a map of verified tokens, one SQLite point \
             read of the answer's row, serde (check's ceiling)"
        ),
        BenchMode::Single => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {feature} (limit not enforced)"
        ),
        BenchMode::SingleEnforced => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {feature} \
             (enforce_limit, limit_max never reached)"
        ),
        BenchMode::SingleKeyed => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {feature}, each request \
             with an Idempotency-Key of its own (as kinde-sdk sends them)"
        ),
        BenchMode::Batch => format!(
            "POST /api/v1/billing/meter_usage/batch, {} records each, a delta of \"1\" to {feature} \
             spread over the agreements ({} records per run)",
            args.batch_size,
            args.requests.saturating_mul(args.batch_size)
        ),
        BenchMode::Read => format!(
            "GET /api/v1/billing/meter_usage?customer_agreement_id=…&billing_feature_code={feature} \
             (one record per agreement first)"
        ),
        BenchMode::Check => format!(
            "GET /api/v1/billing/entitlements/check?customer_id=…&feature_code={feature} \
             (one record per agreement first)"
        ),
        BenchMode::Mixed => {
            let mix = Mix::of_cycle();
            format!(
                "{} % single records, {} % usage reads, {} % entitlement checks, interleaved \
                 (of every 20 requests: 16 writes, 3 reads, 1 check), on {feature} \
                 (one record per agreement first)",
                mix.write_percent, mix.read_percent, mix.check_percent
            )
        }
    }
}

/// The body of one usage record: a delta of 1 to `feature_code`.
pub fn record_body(agreement_id: &str, feature_code: &str) -> String {
    record(agreement_id, feature_code).to_string()
}

fn record(agreement_id: &str, feature_code: &str) -> serde_json::Value {
    serde_json::json!({
        "customer_agreement_id": agreement_id,
        "billing_feature_code": feature_code,
        "meter_value": "1",
        "meter_type_code": "delta",
    })
}

/// What `mode` sends to `base` for `agreements`.
pub fn workload(
    mode: BenchMode,
    args: &BenchArgs,
    base: &str,
    agreements: &[Agreement],
) -> anyhow::Result<Workload> {
    let feature = mode.feature_code(args);
    let records_url = format!("{base}/api/v1/billing/meter_usage");
    let single = |name| RequestKind {
        name,
        method: Method::Post {
            url: records_url.clone(),
            bodies: agreements
                .iter()
                .map(|a| record_body(&a.id, feature))
                .collect(),
        },
        authorised: true,
        batch: false,
        keys: None,
    };
    // GETs of `url`, one per agreement: `key` names the agreement (`of` it)
    // and `feature_key` the feature.
    let gets = |name, url: &str, key: &str, of: fn(&Agreement) -> &str, feature_key: &str| {
        let urls = agreements
            .iter()
            .map(|a| {
                reqwest::Url::parse_with_params(url, [(key, of(a)), (feature_key, feature)])
                    .map(String::from)
            })
            .collect::<Result<_, _>>()?;
        anyhow::Ok(RequestKind {
            name,
            method: Method::Get { urls },
            authorised: true,
            batch: false,
            keys: None,
        })
    };
    let reads = |name| {
        gets(
            name,
            &records_url,
            "customer_agreement_id",
            |a| a.id.as_str(),
            "billing_feature_code",
        )
    };
    let checks_url = format!("{base}/api/v1/billing/entitlements/check");
    let checks = |name| {
        gets(
            name,
            &checks_url,
            "customer_id",
            |a| a.customer.as_str(),
            "feature_code",
        )
    };
    Ok(match mode {
        BenchMode::Healthz | BenchMode::Axum => Workload::uniform(RequestKind {
            name: mode.name(),
            method: Method::Get {
                urls: vec![format!("{base}/healthz")],
            },
            authorised: false,
            batch: false,
            keys: None,
        }),
        BenchMode::Single | BenchMode::SingleEnforced => Workload::uniform(single(mode.name())),
        // Keys unique to the run: every request is a new one, none a retry.
        BenchMode::SingleKeyed => Workload::uniform(RequestKind {
            keys: Some(format!(
                "bench-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_nanosecond()
            )),
            ..single(mode.name())
        }),
        // As many made-up agreements as a run of `single` has real ones.
        BenchMode::Ceiling => Workload::uniform(RequestKind {
            name: mode.name(),
            method: Method::Post {
                url: records_url.clone(),
                bodies: (0..args.agreements)
                    .map(|k| record_body(&format!("agreement_ceiling_{k}"), feature))
                    .collect(),
            },
            authorised: true,
            batch: false,
            keys: None,
        }),
        // The customers the ceiling's database holds, as many as a run of
        // `check` has.
        BenchMode::CheckCeiling => {
            let urls = (0..args.agreements)
                .map(|k| {
                    reqwest::Url::parse_with_params(
                        &checks_url,
                        [
                            ("customer_id", check_ceiling::customer(k).as_str()),
                            ("feature_code", feature),
                        ],
                    )
                    .map(String::from)
                })
                .collect::<Result<_, _>>()?;
            Workload::uniform(RequestKind {
                name: mode.name(),
                method: Method::Get { urls },
                authorised: true,
                batch: false,
                keys: None,
            })
        }
        BenchMode::Batch => Workload::uniform(RequestKind {
            name: "batch",
            method: Method::Post {
                url: format!("{records_url}/batch"),
                bodies: batch_bodies(agreements, feature, args.batch_size),
            },
            authorised: true,
            batch: true,
            keys: None,
        }),
        BenchMode::Read => Workload::uniform(reads("read")?),
        BenchMode::Check => Workload::uniform(checks("check")?),
        BenchMode::Mixed => Workload {
            kinds: vec![single("write"), reads("read")?, checks("check")?],
            cycle: MIXED_CYCLE
                .iter()
                .map(|kind| match kind {
                    MixedRequest::Write => 0,
                    MixedRequest::Read => 1,
                    MixedRequest::Check => 2,
                })
                .collect(),
        },
    })
}

/// Body `k` holds `batch_size` records over the agreements in turn, starting
/// at agreement `k`.
fn batch_bodies(agreements: &[Agreement], feature: &str, batch_size: usize) -> Vec<String> {
    (0..agreements.len())
        .map(|k| {
            let records: Vec<serde_json::Value> = (0..batch_size)
                .map(|j| record(&agreements[(k + j) % agreements.len()].id, feature))
                .collect();
            serde_json::json!({ "records": records }).to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axum_and_healthz_run_first_and_every_mode_once() {
        assert_eq!(
            run_order(&[BenchMode::Single, BenchMode::Healthz, BenchMode::Single]),
            [BenchMode::Axum, BenchMode::Healthz, BenchMode::Single]
        );
        assert_eq!(
            run_order(&[BenchMode::Check, BenchMode::Axum]),
            [BenchMode::Axum, BenchMode::Healthz, BenchMode::Check]
        );
    }

    #[test]
    fn the_mix_is_80_15_5() {
        let mix = Mix::of_cycle();
        assert_eq!(
            (mix.write_percent, mix.read_percent, mix.check_percent),
            (80, 15, 5)
        );
    }

    #[test]
    fn batch_bodies_spread_their_records_over_the_agreements() {
        let agreements: Vec<Agreement> = ["a", "b", "c"]
            .iter()
            .map(|id| Agreement {
                id: (*id).to_owned(),
                customer: format!("customer_{id}"),
            })
            .collect();
        let bodies = batch_bodies(&agreements, "api_calls", 4);
        assert_eq!(bodies.len(), 3);
        let second: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
        let ids: Vec<&str> = second["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["customer_agreement_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b", "c", "a", "b"]);
    }
}
