//! Two servers on one PostgreSQL database share the deliveries: every attempt
//! is made by one of them, never both (run with `KINDE_METER_TEST_DATABASE_URL`;
//! on SQLite a data directory has one server, and these tests return at once).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::harness::{Receiver, Reply, create_webhook, metric, settings, settled};
use crate::support::{Options, TestApp, on_postgres};

/// Two servers on the same schema, the same public URL (one issuer).
async fn two_servers() -> (TestApp, TestApp) {
    let public_url = Some("http://webhooks-pg.test".to_owned());
    let first = TestApp::spawn_with(Options {
        webhooks: settings(),
        public_url: public_url.clone(),
        ..Options::default()
    })
    .await;
    let second = TestApp::spawn_with(Options {
        webhooks: settings(),
        public_url,
        data_dir: Some(first.data_dir.clone()),
        ..Options::default()
    })
    .await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_deliver_each_attempt_once() {
    if !on_postgres() {
        return;
    }
    let (first, second) = two_servers().await;
    // Each event's first attempt fails, its second succeeds; slow answers so
    // both servers' workers have attempts in flight at once.
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen = attempts.clone();
    let receiver = Receiver::with_policy(move |r| {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(r.event_id()).or_default();
        *n += 1;
        if *n == 1 {
            Reply::Slow(500, Duration::from_millis(50))
        } else {
            Reply::Slow(200, Duration::from_millis(50))
        }
    })
    .await;
    create_webhook(
        &first,
        &receiver.url,
        &["customer.agreement_created", "customer.plan_assigned"],
    )
    .await;
    let customers = 20;
    for i in 0..customers {
        let app = if i % 2 == 0 { &first } else { &second };
        app.create_agreement(&format!("cus_shared_{i}"), "pro")
            .await;
    }
    receiver
        .wait_until("every event delivered", |r| {
            r.iter().filter(|r| r.accepted()).count() >= 2 * customers
        })
        .await;
    settled(&first).await;
    let received = receiver.received();
    let mut per_event: HashMap<String, Vec<bool>> = HashMap::new();
    for r in &received {
        per_event
            .entry(r.event_id())
            .or_default()
            .push(r.accepted());
    }
    assert_eq!(per_event.len(), 2 * customers);
    for (event, outcomes) in &per_event {
        assert_eq!(
            outcomes,
            &[false, true],
            "event {event}: one failed attempt, one delivered, nothing twice"
        );
    }
    let delivered = r#"kinde_meter_webhook_deliveries_total{outcome="delivered"}"#;
    let (a, b) = (
        metric(&first, delivered).await,
        metric(&second, delivered).await,
    );
    assert_eq!(a + b, (2 * customers) as f64);
    eprintln!("deliveries: {a} by the first server, {b} by the second");
    second.stop().await;
    first.stop().await;
}
