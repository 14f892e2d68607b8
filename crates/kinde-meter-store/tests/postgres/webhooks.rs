//! The webhook outbox shared by several servers on one database: their
//! workers never take the same delivery attempt, and their writers coalesce
//! usage of one agreement into one due usage event.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use jiff::SignedDuration;
use kinde_meter_core::webhook::{EventType, WebhookId};
use kinde_meter_store::{
    DeliveryId, DeliveryResult, NewWebhook, Store, StoreConfig, SubmissionKind, SubmissionOutcome,
    UsageSubmission,
};

use crate::common::*;

async fn webhook(store: &TestStore, name: &str, types: &[EventType], random: u8) -> WebhookId {
    store
        .create_webhook(NewWebhook {
            name: name.to_owned(),
            endpoint: format!("https://{name}.example.com/hook"),
            description: None,
            event_types: types.to_vec(),
            now: t("2024-03-01T00:00:00Z"),
            id_random: [random; 10],
        })
        .await
        .unwrap()
        .id
}

/// Two servers, four claiming workers each, draining 3 webhooks' deliveries
/// of 240 events: every attempt is claimed by exactly one worker, and never
/// while another holds it. Each delivery fails twice (due again at once) and
/// then succeeds, so each is claimed three times, as attempts 1, 2 and 3, and
/// ends delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_claiming_at_once_take_each_attempt_once() {
    let Some(backend) = Backend::postgres() else {
        return skip("two_servers_claiming_at_once_take_each_attempt_once");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let all = EventType::ALL;
    webhook(&one, "a", &all, 1).await;
    webhook(&two, "b", &[EventType::AgreementCreated], 2).await;
    webhook(&one, "c", &[EventType::PlanAssigned], 3).await;
    // 120 agreements of new customers: agreement_created and plan_assigned each.
    for i in 0..120u8 {
        let store = if i % 2 == 0 { &one } else { &two };
        create(
            &**store,
            &format!("cust_{i}"),
            "pro",
            "2024-03-01T00:00:00Z",
            i,
        )
        .await;
    }
    // a: 240 deliveries, b: 120, c: 120.
    let expected = 480;

    let now = t("2024-03-02T00:00:00Z");
    let lease = SignedDuration::from_hours(1);
    // Who holds each delivery now, and every (delivery, attempt) claimed.
    let held: Arc<Mutex<HashSet<DeliveryId>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<(DeliveryId, u32), usize>>> = Arc::default();
    // Attempts each server took.
    let by_server: Arc<Mutex<[usize; 2]>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let store = if w % 2 == 0 { one.clone() } else { two.clone() };
            let (held, attempts, by_server) = (held.clone(), attempts.clone(), by_server.clone());
            tokio::spawn(async move {
                loop {
                    let claimed = store.claim_deliveries(now, 7, lease, &[]).await.unwrap();
                    if claimed.is_empty() {
                        // Others hold the rest, or all is done.
                        if store.delivery_stats(now).await.unwrap().pending == 0 {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        continue;
                    }
                    by_server.lock().unwrap()[w % 2] += claimed.len();
                    for d in &claimed {
                        assert!(
                            held.lock().unwrap().insert(d.id),
                            "{:?} claimed twice",
                            d.id
                        );
                        *attempts
                            .lock()
                            .unwrap()
                            .entry((d.id, d.attempt))
                            .or_default() += 1;
                    }
                    for d in claimed {
                        // Released before it is finished: a claim after the
                        // finish may take it again, one before may not.
                        held.lock().unwrap().remove(&d.id);
                        let result = if d.attempt < 3 {
                            DeliveryResult::Failed {
                                error: format!("HTTP 500 on attempt {}", d.attempt),
                                next_attempt_at: Some(now),
                            }
                        } else {
                            DeliveryResult::Delivered
                        };
                        store.finish_delivery(d.id, result, now).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let by_server = *by_server.lock().unwrap();
    assert!(by_server.iter().all(|&n| n > 0), "{by_server:?}");
    let attempts = std::mem::take(&mut *attempts.lock().unwrap());
    assert!(
        attempts.values().all(|&n| n == 1),
        "an attempt claimed more than once"
    );
    let deliveries: HashSet<DeliveryId> = attempts.keys().map(|(id, _)| *id).collect();
    assert_eq!(deliveries.len(), expected);
    assert_eq!(attempts.len(), expected * 3);
    assert_eq!(
        one.count(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND attempt = 3"
        )
        .await,
        expected as i64
    );
    let stats = two.delivery_stats(now).await.unwrap();
    assert_eq!(stats.pending, 0, "{stats:?}");
    let listed = one.list_webhooks().await.unwrap();
    assert_eq!(listed.len(), 3);
    for w in &listed {
        assert_eq!(w.pending, 0);
        assert_eq!(w.consecutive_failures, 0, "{w:?}");
        assert_eq!(w.last_success_at, Some(now));
        assert_eq!(w.last_error, None);
    }
}

/// A delivery leased by one server is not taken by the other until its lease
/// expires; then the other takes the same attempt (the first worker is
/// presumed dead), and the first one's late finish is still recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_keeps_an_attempt_from_the_other_server_until_it_expires() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_lease_keeps_an_attempt_from_the_other_server_until_it_expires");
    };
    let one = open(&backend).await;
    let two = one.reopen().await;
    webhook(&one, "a", &[EventType::AgreementCreated], 1).await;
    create(&one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let now = t("2024-03-02T00:00:00Z");
    let lease = SignedDuration::from_secs(30);
    let first = one.claim_deliveries(now, 10, lease, &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    for at in [now, now + SignedDuration::from_secs(29)] {
        assert!(
            two.claim_deliveries(at, 10, lease, &[])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            one.claim_deliveries(at, 10, lease, &[])
                .await
                .unwrap()
                .is_empty()
        );
    }
    let later = now + SignedDuration::from_secs(30);
    let again = two.claim_deliveries(later, 10, lease, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (first[0].id, 1));
    assert_eq!(again[0].event, first[0].event);
    two.finish_delivery(again[0].id, DeliveryResult::Delivered, later)
        .await
        .unwrap();
    // The presumed-dead worker's late answer changes nothing.
    one.finish_delivery(
        first[0].id,
        DeliveryResult::Failed {
            error: "timed out".to_owned(),
            next_attempt_at: Some(later),
        },
        later,
    )
    .await
    .unwrap();
    let listed = one.list_webhooks().await.unwrap();
    assert_eq!(
        (
            listed[0].consecutive_failures,
            listed[0].last_error.as_deref()
        ),
        (0, None)
    );
    assert!(
        one.claim_deliveries(later + lease * 2, 10, lease, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

fn batch(records: Vec<kinde_meter_core::request::UsageRecord>, received: &str) -> UsageSubmission {
    UsageSubmission {
        client_id: "client_a".to_owned(),
        idempotency: None,
        kind: if records.len() == 1 {
            SubmissionKind::Single
        } else {
            SubmissionKind::Batch
        },
        records: records.into_iter().map(Ok).collect(),
        received_at: t(received),
    }
}

/// Usage of one agreement and feature written through two servers at once is
/// one due row, hence one `customer.meter_usage_updated` however many records
/// and whichever servers build events concurrently; it carries the usage at
/// build time, and the next one is due an interval after it. Builds running
/// while the writers commit neither block them nor fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_usage_of_one_agreement_is_one_due_usage_event() {
    let Some(backend) = Backend::postgres() else {
        return skip("two_servers_usage_of_one_agreement_is_one_due_usage_event");
    };
    let config = StoreConfig {
        webhook_usage_interval: SignedDuration::from_secs(10),
        ..StoreConfig::default()
    };
    let one = Arc::new(TestStore::fresh(&backend, config.clone()).await);
    let two = Arc::new(TestStore::on(&one.place, config).await);
    webhook(&one, "a", &[EventType::MeterUsageUpdated], 1).await;
    let a = Arc::new(create(&*one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await);

    // 8 writers (4 per server), 50 submissions of 1 to 4 records each, all
    // received at 12:00:00, while both servers build events due before then.
    let building = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let builders: Vec<_> = [one.clone(), two.clone()]
        .into_iter()
        .map(|store| {
            let building = building.clone();
            tokio::spawn(async move {
                let mut built = 0;
                while building.load(std::sync::atomic::Ordering::Relaxed) {
                    built += store
                        .build_usage_events(t("2024-03-10T11:59:59Z"))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
                built
            })
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = if w % 2 == 0 { one.clone() } else { two.clone() };
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let n = 1 + (w + i) % 4;
                    let records = (0..n)
                        .map(|_| delta(&a, "api_calls", "1", "2024-03-10T11:00:00Z"))
                        .collect();
                    let outcome = store
                        .submit_usage(batch(records, "2024-03-10T12:00:00Z"))
                        .await
                        .unwrap();
                    assert_eq!(outcome, SubmissionOutcome::Processed(vec![Ok(()); n]));
                }
            })
        })
        .collect();
    let mut total = 0;
    for w in writers {
        w.await.unwrap();
    }
    for w in 0..8 {
        for i in 0..50 {
            total += 1 + (w + i) % 4;
        }
    }
    building.store(false, std::sync::atomic::Ordering::Relaxed);
    for b in builders {
        assert_eq!(b.await.unwrap(), 0, "nothing is due before 12:00:00");
    }
    for store in [&one, &two] {
        assert_eq!(store.writer_stats().failed_batches, 0);
    }
    let due_sql = "SELECT count(*) FROM usage_aggregates WHERE usage_event_due_ns IS NOT NULL";
    assert_eq!(one.count(due_sql).await, 1);
    // The first change makes it due at once (no event before).
    assert_eq!(
        one.count("SELECT max(usage_event_due_ns) FROM usage_aggregates")
            .await,
        t("2024-03-10T12:00:00Z").as_nanosecond() as i64
    );

    // Both servers build at once: one event.
    let at = t("2024-03-10T12:00:01Z");
    let (x, y) = tokio::join!(one.build_usage_events(at), two.build_usage_events(at));
    assert_eq!(x.unwrap() + y.unwrap(), 1);
    assert_eq!(one.count(due_sql).await, 0);
    assert_eq!(
        one.count("SELECT count(*) FROM events WHERE type = 'customer.meter_usage_updated'")
            .await,
        1
    );
    let claimed = two
        .claim_deliveries(at, 10, SignedDuration::from_secs(30), &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let data = &claimed[0].event.data;
    assert_eq!(data["value"], total.to_string());
    assert_eq!(data["quantity"], total);
    assert_eq!(data["agreement_id"], a.id.as_str());
    assert_eq!(data["feature_code"], "api_calls");

    // More usage right after: due an interval after the last event.
    submit(
        &*two,
        delta(&a, "api_calls", "1", "2024-03-10T11:00:00Z"),
        "2024-03-10T12:00:02Z",
    )
    .await
    .unwrap();
    assert_eq!(
        one.count("SELECT max(usage_event_due_ns) FROM usage_aggregates")
            .await,
        t("2024-03-10T12:00:11Z").as_nanosecond() as i64
    );
    assert_eq!(
        one.build_usage_events(t("2024-03-10T12:00:10Z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        two.build_usage_events(t("2024-03-10T12:00:11Z"))
            .await
            .unwrap(),
        1
    );
}
