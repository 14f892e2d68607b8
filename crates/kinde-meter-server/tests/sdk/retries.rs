//! kinde-sdk's retries against the real server over HTTP: rate limits waited
//! out, a server stopped and restarted mid-run, answers lost on the way back —
//! and every usage value counted exactly once, read back from the server.
//! Waits are for conditions, with deadlines; there are no fixed sleeps.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::proxy::{Fault, Proxy};
use crate::support::{Options, TestApp, eventually, sum};
use kinde_meter_server::rate_limit::{Limit, RateLimitConfig};
use kinde_sdk::{
    ApiClient, BillingAgreementsApi, BillingMeterUsageApi, Configuration,
    CreateBillingAgreementError, CreateMeterUsageRecordError, GetBillingAgreementsParams,
    RetryPolicy, models::CreateBillingAgreementRequest,
};

const DEADLINE: Duration = Duration::from_secs(30);
const METER_USAGE: &str = "/api/v1/billing/meter_usage";

fn api(host: &str, token: &str, policy: RetryPolicy) -> BillingMeterUsageApi {
    BillingMeterUsageApi::new(
        ApiClient::new(
            Configuration::new(host)
                .with_access_token(token)
                .with_retry_policy(policy),
        )
        .unwrap(),
    )
}

/// A policy that outlasts a restart: many quick attempts.
fn patient() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(1000)
        .with_max_elapsed(Duration::from_secs(60))
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(200))
}

/// The `i`-th test value: decimals, so that an exact sum means something.
fn value(i: u64) -> String {
    format!("{}.{:03}", i % 7 + 1, i % 1000)
}

#[tokio::test]
async fn rate_limited_calls_wait_for_the_reset_and_then_succeed() {
    let app = TestApp::spawn_limited(RateLimitConfig {
        default: Limit::OFF,
        clients: HashMap::from([("limited".to_owned(), Limit::per_second(1, 1))]),
        auth_failures: Limit::OFF,
    })
    .await;
    let agreement = app.create_agreement("customer_rl", "pro").await;
    let limited = app.token_for_client("limited");

    // Without retries the 429 is a typed error with the reset delay.
    let once = api(&app.base, &limited, RetryPolicy::none());
    let mut saw_429 = None;
    for _ in 0..3 {
        match once
            .create_meter_usage_record_builder()
            .customer_agreement_id(&agreement)
            .billing_feature_code("api_calls")
            .meter_value(1)
            .send()
            .await
        {
            Ok(_) => {}
            Err(error) => {
                saw_429 = Some(error);
                break;
            }
        }
    }
    let error = saw_429.expect("a burst of one is exceeded by the second call");
    let CreateMeterUsageRecordError::TooManyRequests { retry_after, .. } = &error else {
        panic!("expected TooManyRequests, got {error:?}");
    };
    assert!(retry_after.is_some_and(|d| d >= Duration::from_secs(1)));
    let before = app.record_count(&agreement, "api_calls").await;

    // With the default policy every call waits for the reset and gets through.
    let retrying = api(&app.base, &limited, RetryPolicy::default());
    let started = Instant::now();
    for i in 0..3 {
        retrying
            .create_meter_usage_record_builder()
            .customer_agreement_id(&agreement)
            .billing_feature_code("api_calls")
            .meter_value(value(i))
            .send()
            .await
            .unwrap_or_else(|error| panic!("call {i}: {error}"));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "three calls at one a second were waited for, not hammered"
    );
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(usage["record_count"].as_u64().unwrap(), before + 3);
    let expected = sum([
        vec!["1".to_owned(); before as usize],
        (0..3).map(value).collect(),
    ]
    .concat());
    assert_eq!(usage["value"], expected.as_str());
}

#[tokio::test]
async fn a_server_restarted_mid_run_loses_and_doubles_nothing() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_restart", "pro").await;
    let (addr, data_dir, token) = (app.addr, app.data_dir.clone(), app.token.clone());
    let api = api(&app.base, &token, patient());

    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 60;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (api, agreement, acknowledged) = (api.clone(), agreement.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..PER_WRITER {
                let v = value(writer * PER_WRITER + i);
                api.create_meter_usage_record_builder()
                    .customer_agreement_id(&agreement)
                    .billing_feature_code("api_calls")
                    .meter_value(v.as_str())
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("writer {writer}, record {i}: {error}"));
                acknowledged.fetch_add(1, Ordering::SeqCst);
                sent.push(v);
            }
            sent
        }));
    }

    eventually("a third of the records", DEADLINE, async || {
        acknowledged.load(Ordering::SeqCst) >= WRITERS * PER_WRITER / 3
    })
    .await;
    let tmp = app.stop().await;
    let stopped_at = acknowledged.load(Ordering::SeqCst);
    // The same address, so the same issuer: the writers' token stays valid.
    let app = TestApp::spawn_with(Options {
        data_dir: Some(data_dir),
        listen: Some(addr),
        ..Options::default()
    })
    .await;

    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    assert!(
        stopped_at < WRITERS * PER_WRITER,
        "the restart happened mid-run"
    );
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(
        usage["record_count"].as_u64().unwrap(),
        WRITERS * PER_WRITER
    );
    assert_eq!(usage["value"], sum(&all).as_str());
    drop(tmp);
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_key_and_counted_once() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_lossy", "pro").await;
    let proxy = Proxy::start(&app.base).await;
    proxy.fault(METER_USAGE, Fault::LoseAnswer { every: 3 });
    let api = api(&proxy.base, &app.token, RetryPolicy::default());

    let values: Vec<String> = (0..30).map(value).collect();
    for v in &values {
        api.create_meter_usage_record_builder()
            .customer_agreement_id(&agreement)
            .billing_feature_code("api_calls")
            .meter_value(v.as_str())
            .send()
            .await
            .unwrap();
    }
    assert!(proxy.answers(0) >= 10, "answers were lost");
    assert!(
        proxy.requests(METER_USAGE) >= 40,
        "and the writes were retried"
    );
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(usage["record_count"].as_u64().unwrap(), 30);
    assert_eq!(usage["value"], sum(&values).as_str());
}

#[tokio::test]
async fn creating_an_agreement_is_never_retried_when_the_outcome_is_unknown() {
    const AGREEMENTS: &str = "/api/v1/billing/agreements";
    let app = TestApp::spawn().await;
    let proxy = Proxy::start(&app.base).await;
    let client = ApiClient::new(
        Configuration::new(&proxy.base)
            .with_access_token(&app.token)
            .with_retry_policy(patient()),
    )
    .unwrap();
    let agreements = BillingAgreementsApi::new(client);
    let request = CreateBillingAgreementRequest {
        customer_id: "customer_once".into(),
        plan_code: "pro".into(),
        is_invoice_now: None,
        is_prorate: None,
    };

    proxy.fault(AGREEMENTS, Fault::LoseAnswer { every: 1 });
    let error = agreements
        .create_billing_agreement(request.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CreateBillingAgreementError::Transport(_)),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(proxy.requests(AGREEMENTS), 1, "sent once, not retried");
    let listed = app.list_agreements("customer_id=customer_once").await;
    assert_eq!(listed["agreements"].as_array().unwrap().len(), 1);

    // A 503 proves nothing happened: that one is retried.
    proxy.fault(
        AGREEMENTS,
        Fault::Answer {
            status: 503,
            body: r#"{"errors":[{"code":"SERVICE_UNAVAILABLE","message":"try later"}]}"#,
            times: 2,
        },
    );
    agreements
        .create_billing_agreement(CreateBillingAgreementRequest {
            customer_id: "customer_twice".into(),
            ..request
        })
        .await
        .unwrap();
    assert_eq!(proxy.requests(AGREEMENTS), 4);
    let page = agreements
        .get_billing_agreements("customer_twice", GetBillingAgreementsParams::default())
        .await
        .unwrap();
    assert_eq!(page.agreements.len(), 1);
}
