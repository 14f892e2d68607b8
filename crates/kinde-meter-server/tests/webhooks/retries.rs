//! When an endpoint fails: retries with backoff carrying the same event and
//! `webhook-id`, the metrics of it, and a dead endpoint holding only its own
//! slots while a healthy one gets everything at once.

use std::time::{Duration, Instant};

use crate::harness::{Receiver, Reply, create_webhook, metric, settings, settled};
use crate::support::{Options, TestApp, eventually};
use kinde_meter_server::webhooks::worker::WebhookSettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_with_backoff_and_the_same_event_and_webhook_id() {
    let app = TestApp::spawn_with(Options {
        webhooks: settings(),
        ..Options::default()
    })
    .await;
    let mut answered = 0;
    let receiver = Receiver::with_policy(move |_| {
        answered += 1;
        if answered <= 3 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    })
    .await;
    create_webhook(&app, &receiver.url, &["customer.agreement_created"]).await;
    let agreement = app.create_agreement("cus_retried", "pro").await;

    // While it fails, the delivery is pending and its event ages.
    receiver
        .wait_until("a first attempt", |r| !r.is_empty())
        .await;
    eventually("the pending gauge", Duration::from_secs(10), async || {
        metric(&app, "kinde_meter_webhook_pending").await == 1.0
            && metric(&app, "kinde_meter_webhook_oldest_pending_seconds").await > 0.0
    })
    .await;

    let received = receiver
        .wait_until("an accepted attempt", |r| r.iter().any(|r| r.accepted()))
        .await;
    settled(&app).await;
    assert_eq!(received.len(), 4, "three 500s, then a 204: {received:#?}");
    let first = &received[0];
    assert_eq!(first.claims()["data"]["agreement_id"], agreement.as_str());
    for attempt in &received[1..] {
        // The same event (and JWT id), the same delivery id.
        assert_eq!(attempt.event_id(), first.event_id());
        assert_eq!(attempt.claims()["jti"], first.claims()["jti"]);
        assert_eq!(attempt.claims()["data"], first.claims()["data"]);
        assert_eq!(attempt.webhook_id(), first.webhook_id());
    }
    // 1 s, 2 s, 4 s between attempts at least (the backoff after attempts 1, 2, 3).
    for (i, pair) in received.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let backoff = Duration::from_secs(1 << i);
        assert!(
            gap >= backoff,
            "attempt {} came {gap:?} after the previous",
            i + 2
        );
    }

    let failed = r#"kinde_meter_webhook_deliveries_total{outcome="failed"}"#;
    let delivered = r#"kinde_meter_webhook_deliveries_total{outcome="delivered"}"#;
    assert_eq!(metric(&app, failed).await, 3.0);
    assert_eq!(metric(&app, delivered).await, 1.0);
    assert_eq!(
        metric(
            &app,
            r#"kinde_meter_webhook_deliveries_total{outcome="given_up"}"#
        )
        .await,
        0.0
    );
    eventually(
        "the backlog to clear",
        Duration::from_secs(10),
        async || {
            metric(&app, "kinde_meter_webhook_pending").await == 0.0
                && metric(&app, "kinde_meter_webhook_oldest_pending_seconds").await == 0.0
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_does_not_delay_a_healthy_one() {
    // Attempts to the dead endpoint hang for the whole timeout: if the healthy
    // endpoint's deliveries waited behind them, they would come 30 s late.
    let timeout = Duration::from_secs(30);
    let per_webhook = 4;
    let app = TestApp::spawn_with(Options {
        webhooks: WebhookSettings {
            attempt_timeout: timeout,
            per_webhook_concurrency: per_webhook,
            ..settings()
        },
        ..Options::default()
    })
    .await;
    let dead = Receiver::with_policy(|_| Reply::Hang).await;
    let healthy = Receiver::start().await;
    let types = ["customer.agreement_created", "customer.plan_assigned"];
    create_webhook(&app, &dead.url, &types).await;
    create_webhook(&app, &healthy.url, &types).await;

    let started = Instant::now();
    let customers = 12;
    for i in 0..customers {
        app.create_agreement(&format!("cus_isolated_{i}"), "pro")
            .await;
    }
    healthy
        .wait_until("every event at the healthy endpoint", |r| {
            r.iter().filter(|r| r.accepted()).count() == 2 * customers
        })
        .await;
    assert!(
        started.elapsed() < timeout / 2,
        "the healthy endpoint waited: {:?}",
        started.elapsed()
    );
    // The dead one holds its own slots only: as many attempts as its cap, all
    // still hanging.
    let stuck = dead
        .wait_until("the dead endpoint's slots to fill", |r| {
            r.len() >= per_webhook
        })
        .await;
    assert_eq!(stuck.len(), per_webhook);
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    assert_eq!(healthy.received().len(), 2 * customers, "each once");
    // Not stopped gracefully: that would wait for the hanging attempts.
    drop(app);
}
