//! The SQLite outbox's housekeeping: old events are purged once nothing is
//! pending for them.

use jiff::SignedDuration;
use kinde_meter_core::webhook::EventType;
use kinde_meter_store::{DeliveryResult, NewWebhook, Store};

use crate::common::*;

#[tokio::test]
async fn old_events_without_pending_deliveries_are_purged() {
    let store = open(&Backend::Sqlite).await;
    store
        .create_webhook(NewWebhook {
            name: "h".into(),
            endpoint: "https://example.com/h".into(),
            description: None,
            event_types: vec![EventType::AgreementCreated],
            now: t("2024-01-01T00:00:00Z"),
            id_random: [1; 10],
        })
        .await
        .unwrap();
    let lease = SignedDuration::from_secs(60);
    // Two agreements (four events, two delivered to the webhook): one
    // delivery succeeds, the other stays pending.
    create(&store, "a", "pro", "2024-03-01T00:00:00Z", 1).await;
    create(&store, "b", "pro", "2024-03-01T00:00:00Z", 2).await;
    let now = t("2024-03-01T00:00:00Z");
    let got = store.claim_deliveries(now, 10, lease, &[]).await.unwrap();
    assert_eq!(got.len(), 2);
    store
        .finish_delivery(got[0].id, DeliveryResult::Delivered, now)
        .await
        .unwrap();
    store
        .finish_delivery(
            got[1].id,
            DeliveryResult::Failed {
                error: "HTTP 503".into(),
                next_attempt_at: Some(now + SignedDuration::from_hours(200)),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(store.count("SELECT count(*) FROM events").await, 4);

    // Within the retention nothing goes; after it, all but the pending one's.
    let within = now + SignedDuration::from_hours(95);
    create(&store, "c", "pro", "2024-03-04T23:00:00Z", 3).await;
    store
        .claim_deliveries(within, 10, lease, &[])
        .await
        .unwrap();
    assert_eq!(store.count("SELECT count(*) FROM events").await, 6);
    let after = now + SignedDuration::from_hours(97);
    create(&store, "d", "pro", "2024-03-05T01:00:00Z", 4).await;
    store.claim_deliveries(after, 10, lease, &[]).await.unwrap();
    assert_eq!(store.count("SELECT count(*) FROM events").await, 5);
    assert!(store.event(&got[0].event.id).await.unwrap().is_none());
    assert!(store.event(&got[1].event.id).await.unwrap().is_some());
    assert_eq!(
        store
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
            .await,
        0
    );
    store.shutdown().await;
}
