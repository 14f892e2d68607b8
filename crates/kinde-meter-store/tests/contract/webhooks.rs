//! Webhooks and their outbox: management, the events each change raises (in
//! its transaction), coalesced usage events, thresholds, leased claims,
//! retries and give-up, what survives a restart, and the purge of old events.

use jiff::SignedDuration;
use kinde_meter_core::{
    ids::{CustomerId, PlanCode},
    webhook::{EventType, WebhookId},
};
use kinde_meter_store::{
    CreateAgreementError, Delivery, DeliveryResult, NewAgreement, NewWebhook, Store, StoreConfig,
    Webhook, WebhookPatch,
};
use serde_json::json;

use crate::common::*;

const LEASE: SignedDuration = SignedDuration::from_secs(60);

async fn hook(store: &TestStore, types: &[EventType], random: u8, at: &str) -> Webhook {
    store
        .create_webhook(NewWebhook {
            name: format!("hook {random}"),
            endpoint: format!("https://example.com/hook/{random}"),
            description: None,
            event_types: types.to_vec(),
            now: t(at),
            id_random: [random; 10],
        })
        .await
        .unwrap()
}

/// Every delivery due at `at`, leased for a minute.
async fn claim(store: &TestStore, at: &str) -> Vec<Delivery> {
    store
        .claim_deliveries(t(at), 1000, LEASE, &[])
        .await
        .unwrap()
}

/// The deliveries' event types, sorted.
fn types(deliveries: &[Delivery]) -> Vec<EventType> {
    let mut types: Vec<EventType> = deliveries.iter().map(|d| d.event.event_type).collect();
    types.sort();
    types
}

fn of_type(deliveries: &[Delivery], event_type: EventType) -> Vec<&Delivery> {
    deliveries
        .iter()
        .filter(|d| d.event.event_type == event_type)
        .collect()
}

/// Finishes every delivery as delivered.
async fn deliver_all(store: &TestStore, deliveries: &[Delivery], at: &str) {
    for d in deliveries {
        store
            .finish_delivery(d.id, DeliveryResult::Delivered, t(at))
            .await
            .unwrap();
    }
}

contract_tests!(
    webhooks_are_created_listed_updated_and_deleted,
    agreements_raise_created_assigned_changed_and_cancelled,
    thresholds_are_raised_once_per_period_and_threshold,
    usage_events_are_coalesced_per_interval,
    usage_events_need_a_subscriber,
    a_claimed_delivery_is_leased_until_finished_or_expired,
    busy_webhooks_are_skipped_and_claims_take_turns,
    failed_attempts_are_retried_then_given_up,
    deleting_a_webhook_drops_its_pending_deliveries,
    events_survive_reopening_the_store,
    a_webhook_receives_the_events_raised_after_it,
    old_events_without_pending_deliveries_are_purged,
    events_raised_wakes_for_agreements_and_crossings_only,
);

async fn webhooks_are_created_listed_updated_and_deleted(b: Backend) {
    let store = open(&b).await;
    assert!(store.list_webhooks().await.unwrap().is_empty());
    let first = store
        .create_webhook(NewWebhook {
            name: "billing".into(),
            endpoint: "https://example.com/a".into(),
            description: Some("to the billing service".into()),
            event_types: vec![EventType::AgreementCreated, EventType::MeterUsageUpdated],
            now: t("2024-03-01T00:00:00Z"),
            id_random: [1; 10],
        })
        .await
        .unwrap();
    assert_eq!(
        first.id,
        WebhookId::generate(t("2024-03-01T00:00:00Z"), [1; 10])
    );
    assert_eq!(first.created_on, t("2024-03-01T00:00:00Z"));
    let second = hook(&store, &[EventType::PlanChanged], 2, "2024-03-02T00:00:00Z").await;

    let listed = store.list_webhooks().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| &s.webhook).collect::<Vec<_>>(),
        [&first, &second],
        "oldest first"
    );
    let status = &listed[0];
    assert_eq!(
        (
            status.last_attempt_at,
            status.last_success_at,
            &status.last_error,
            status.consecutive_failures,
            status.pending
        ),
        (None, None, &None, 0, 0)
    );

    let patched = store
        .update_webhook(
            &first.id,
            WebhookPatch {
                name: Some("renamed".into()),
                description: Some(None),
                event_types: Some(vec![EventType::EntitlementThresholdReached]),
                endpoint: Some("https://example.com/b".into()),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        patched,
        Webhook {
            name: "renamed".into(),
            description: None,
            event_types: vec![EventType::EntitlementThresholdReached],
            endpoint: "https://example.com/b".into(),
            ..first.clone()
        }
    );
    // An empty patch changes nothing.
    let same = store
        .update_webhook(&first.id, WebhookPatch::default())
        .await
        .unwrap();
    assert_eq!(same.as_ref(), Some(&patched));
    let unknown = WebhookId::generate(t("2024-03-03T00:00:00Z"), [9; 10]);
    assert!(
        store
            .update_webhook(&unknown, WebhookPatch::default())
            .await
            .unwrap()
            .is_none()
    );

    assert!(store.delete_webhook(&first.id).await.unwrap());
    assert!(!store.delete_webhook(&first.id).await.unwrap());
    let listed = store.list_webhooks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].webhook, second);
    store.shutdown().await;
}

async fn agreements_raise_created_assigned_changed_and_cancelled(b: Backend) {
    let store = open(&b).await;
    hook(&store, &EventType::ALL, 1, "2024-01-01T00:00:00Z").await;

    let first = create(&store, "cust", "basic", "2024-03-01T00:00:00Z", 1).await;
    let got = claim(&store, "2024-03-01T00:00:01Z").await;
    assert_eq!(
        types(&got),
        [EventType::AgreementCreated, EventType::PlanAssigned]
    );
    for d in &got {
        assert_eq!(d.attempt, 1);
        assert_eq!(d.endpoint, "https://example.com/hook/1");
        assert_eq!(d.event.created_at, t("2024-03-01T00:00:00Z"));
        assert_eq!(
            d.event.data,
            json!({"customer_id": "cust", "agreement_id": first.id.as_str(), "plan_code": "basic"})
        );
        assert_eq!(
            store.event(&d.event.id).await.unwrap().as_ref(),
            Some(&d.event)
        );
    }
    assert_ne!(got[0].event.id, got[1].event.id);
    deliver_all(&store, &got, "2024-03-01T00:00:02Z").await;

    // Another customer's agreement is an assignment too.
    create(&store, "other", "pro", "2024-03-01T12:00:00Z", 2).await;
    let got = claim(&store, "2024-03-01T12:00:01Z").await;
    assert_eq!(
        types(&got),
        [EventType::AgreementCreated, EventType::PlanAssigned]
    );
    deliver_all(&store, &got, "2024-03-01T12:00:02Z").await;

    // A refused creation raises nothing.
    let refused = store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse("cust").unwrap(),
            plan_code: PlanCode::parse("no_such_plan").unwrap(),
            now: t("2024-03-02T00:00:00Z"),
            id_random: [3; 10],
        })
        .await;
    assert!(matches!(refused, Err(CreateAgreementError::PlanNotFound)));
    assert!(claim(&store, "2024-03-02T00:00:01Z").await.is_empty());

    // Replacing the active agreement: created, changed, and the old one cancelled.
    let second = create(&store, "cust", "pro", "2024-03-05T00:00:00Z", 4).await;
    let got = claim(&store, "2024-03-05T00:00:01Z").await;
    assert_eq!(
        types(&got),
        [
            EventType::AgreementCreated,
            EventType::PlanChanged,
            EventType::AgreementCancelled
        ]
    );
    let changed = of_type(&got, EventType::PlanChanged)[0];
    assert_eq!(
        changed.event.data,
        json!({"customer_id": "cust", "agreement_id": second.id.as_str(), "plan_code": "pro",
               "previous_plan_code": "basic", "previous_agreement_id": first.id.as_str()})
    );
    let cancelled = of_type(&got, EventType::AgreementCancelled)[0];
    assert_eq!(
        cancelled.event.data,
        json!({"customer_id": "cust", "agreement_id": first.id.as_str(), "plan_code": "basic",
               "expires_on": "2024-03-05T00:00:00Z"})
    );
    store.shutdown().await;
}

/// The threshold events of a claim as (percent, value) pairs, sorted.
fn thresholds(deliveries: &[Delivery]) -> Vec<(u64, String)> {
    let mut found: Vec<(u64, String)> = of_type(deliveries, EventType::EntitlementThresholdReached)
        .into_iter()
        .map(|d| {
            let data = &d.event.data;
            (
                data["threshold_percent"].as_u64().unwrap(),
                data["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

async fn thresholds_are_raised_once_per_period_and_threshold(b: Backend) {
    let store = open(&b).await;
    hook(
        &store,
        &[EventType::EntitlementThresholdReached],
        1,
        "2024-01-01T00:00:00Z",
    )
    .await;
    // `calls`: limit 100, thresholds 50, 90, 100, enforced.
    let a = create(&store, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    let step = |value: &'static str| delta(&a, "calls", value, at);

    assert_eq!(submit(&store, step("40"), at).await, Ok(()));
    assert!(claim(&store, at).await.is_empty(), "below every threshold");
    assert_eq!(submit(&store, step("15"), at).await, Ok(()));
    let got = claim(&store, at).await;
    assert_eq!(thresholds(&got), [(50, "55".to_owned())]);
    assert_eq!(
        got[0].event.data,
        json!({"customer_id": "cust", "agreement_id": a.id.as_str(), "feature_code": "calls",
               "threshold_percent": 50, "entitlement_limit_max": 100, "value": "55",
               "period_start": "2024-03-01T00:00:00Z", "period_end": "2024-04-01T00:00:00Z"})
    );
    deliver_all(&store, &got, at).await;

    // A refused record (beyond the enforced limit) raises nothing.
    let refused = submit(&store, step("50"), at).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(claim(&store, at).await.is_empty());

    // One jump past two thresholds raises both, with the value that reached them.
    assert_eq!(submit(&store, step("45"), at).await, Ok(()));
    let got = claim(&store, at).await;
    assert_eq!(
        thresholds(&got),
        [(90, "100".to_owned()), (100, "100".to_owned())]
    );
    deliver_all(&store, &got, at).await;

    // Falling raises nothing; reaching them again in the period neither.
    assert_eq!(
        submit(&store, absolute(&a, "calls", "10", at), at).await,
        Ok(())
    );
    assert_eq!(submit(&store, step("90"), at).await, Ok(()));
    assert!(claim(&store, at).await.is_empty(), "once per period");

    // The next period starts over.
    let next = "2024-04-02T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&a, "calls", "60", next), next).await,
        Ok(())
    );
    let got = claim(&store, next).await;
    assert_eq!(thresholds(&got), [(50, "60".to_owned())]);
    assert_eq!(got[0].event.data["period_start"], "2024-04-01T00:00:00Z");

    // A feature without a limit raises none; one with a limit not enforced
    // does, past its limit too (default thresholds 80 and 100).
    assert_eq!(
        submit(&store, delta(&a, "soft", "250", next), next).await,
        Ok(())
    );
    let got = claim(&store, next).await;
    assert_eq!(
        thresholds(&got),
        [(80, "250".to_owned()), (100, "250".to_owned())]
    );
    let pro = create(&store, "pro_cust", "pro", "2024-03-01T00:00:00Z", 2).await;
    assert_eq!(
        submit(&store, delta(&pro, "storage_gb", "1000000", at), at).await,
        Ok(())
    );
    assert!(claim(&store, at).await.is_empty());
    store.shutdown().await;
}

async fn usage_events_are_coalesced_per_interval(b: Backend) {
    let config = StoreConfig {
        webhook_usage_interval: SignedDuration::from_secs(10),
        ..StoreConfig::default()
    };
    let store = TestStore::fresh(&b, config).await;
    hook(
        &store,
        &[EventType::MeterUsageUpdated],
        1,
        "2024-01-01T00:00:00Z",
    )
    .await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    // Nothing is due before usage changes.
    assert_eq!(store.build_usage_events(t(at)).await.unwrap(), 0);

    // Many records, in several commits: one due aggregate, one event.
    for _ in 0..50 {
        assert_eq!(
            submit(&store, delta(&a, "api_calls", "2", at), at).await,
            Ok(())
        );
    }
    let batch = kinde_meter_store::UsageSubmission {
        records: (0..50)
            .map(|_| Ok(delta(&a, "api_calls", "1", at)))
            .collect(),
        kind: kinde_meter_store::SubmissionKind::Batch,
        ..single(delta(&a, "api_calls", "1", at), at)
    };
    store.submit_usage(batch).await.unwrap();
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:01Z"))
            .await
            .unwrap(),
        1
    );
    let got = claim(&store, "2024-03-02T00:00:01Z").await;
    assert_eq!(types(&got), [EventType::MeterUsageUpdated]);
    assert_eq!(
        got[0].event.data,
        json!({"customer_id": "cust", "agreement_id": a.id.as_str(),
               "feature_code": "api_calls", "meter_id": "api_calls", "value": "150",
               "quantity": 150, "period_start": "2024-03-01T00:00:00Z",
               "period_end": "2024-04-01T00:00:00Z"})
    );
    assert_eq!(got[0].event.created_at, t("2024-03-02T00:00:01Z"));
    deliver_all(&store, &got, "2024-03-02T00:00:01Z").await;
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:02Z"))
            .await
            .unwrap(),
        0,
        "built already"
    );

    // A change soon after: its event waits for the interval, then carries the
    // latest value.
    let soon = "2024-03-02T00:00:03Z";
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "1.5", soon), soon).await,
        Ok(())
    );
    assert_eq!(
        submit(&store, delta(&a, "storage_gb", "7", soon), soon).await,
        Ok(())
    );
    // The other feature had no event yet: due at once.
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:05Z"))
            .await
            .unwrap(),
        1
    );
    let got = claim(&store, "2024-03-02T00:00:05Z").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.data["feature_code"], "storage_gb");
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:10.999Z"))
            .await
            .unwrap(),
        0,
        "not before the interval"
    );
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "0.25", soon), soon).await,
        Ok(())
    );
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:11Z"))
            .await
            .unwrap(),
        1
    );
    let got = claim(&store, "2024-03-02T00:00:11Z").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.data["value"], "151.75");
    assert_eq!(got[0].event.data["quantity"], json!(151.75));
    store.shutdown().await;
}

async fn usage_events_need_a_subscriber(b: Backend) {
    let store = open(&b).await;
    hook(&store, &[EventType::PlanChanged], 1, "2024-01-01T00:00:00Z").await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "2", at), at).await,
        Ok(())
    );
    // Nobody subscribes: nothing is written, and nothing stays due.
    assert_eq!(store.build_usage_events(t(at)).await.unwrap(), 0);
    hook(
        &store,
        &[EventType::MeterUsageUpdated],
        2,
        "2024-03-02T00:00:01Z",
    )
    .await;
    assert_eq!(
        store
            .build_usage_events(t("2024-03-02T00:00:01Z"))
            .await
            .unwrap(),
        0
    );
    // Agreement events nobody subscribed to were not delivered to anyone.
    assert!(claim(&store, "2024-03-02T00:00:01Z").await.is_empty());
    store.shutdown().await;
}

async fn a_claimed_delivery_is_leased_until_finished_or_expired(b: Backend) {
    let store = open(&b).await;
    hook(&store, &EventType::ALL, 1, "2024-01-01T00:00:00Z").await;
    create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let now = t("2024-03-01T00:00:00Z");
    let first = store.claim_deliveries(now, 1, LEASE, &[]).await.unwrap();
    assert_eq!(first.len(), 1, "at most `limit`");
    let second = store.claim_deliveries(now, 10, LEASE, &[]).await.unwrap();
    assert_eq!(second.len(), 1, "the leased one is not claimed again");
    assert_ne!(first[0].id, second[0].id);
    assert!(
        store
            .claim_deliveries(now + SignedDuration::from_secs(59), 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .finish_delivery(first[0].id, DeliveryResult::Delivered, now)
        .await
        .unwrap();
    // The lease of the unfinished one expires: the same attempt again.
    let again = store
        .claim_deliveries(now + LEASE, 10, LEASE, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, second[0].id);
    assert_eq!(again[0].attempt, 1);
    assert_eq!(again[0].event, second[0].event);
    store
        .finish_delivery(again[0].id, DeliveryResult::Delivered, now + LEASE)
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(now + LEASE * 10, 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty(),
        "delivered ones are done"
    );
    let status = &store.list_webhooks().await.unwrap()[0];
    assert_eq!(status.last_success_at, Some(now + LEASE));
    assert_eq!(status.pending, 0);
    assert_eq!(store.delivery_stats(now + LEASE).await.unwrap().pending, 0);
    store.shutdown().await;
}

async fn busy_webhooks_are_skipped_and_claims_take_turns(b: Backend) {
    let store = open(&b).await;
    let busy = hook(&store, &EventType::ALL, 1, "2024-01-01T00:00:00Z").await;
    let other = hook(
        &store,
        &[EventType::PlanAssigned],
        2,
        "2024-01-01T00:00:01Z",
    )
    .await;
    for (i, customer) in ["a", "b", "c"].into_iter().enumerate() {
        create(&store, customer, "pro", "2024-03-01T00:00:00Z", i as u8 + 1).await;
    }
    let now = t("2024-03-01T00:00:01Z");
    // 6 deliveries for `busy`, 3 for `other`: a claim of 2 takes one of each.
    let two = store.claim_deliveries(now, 2, LEASE, &[]).await.unwrap();
    let mut hooks: Vec<&WebhookId> = two.iter().map(|d| &d.webhook_id).collect();
    hooks.sort();
    let mut expected = vec![&busy.id, &other.id];
    expected.sort();
    assert_eq!(hooks, expected);
    // With `busy` in flight, only the other's.
    let rest = store
        .claim_deliveries(now, 100, LEASE, std::slice::from_ref(&busy.id))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|d| d.webhook_id == other.id));
    let stats = store.delivery_stats(now).await.unwrap();
    assert_eq!(stats.pending, 9);
    assert_eq!(
        stats.oldest_pending_created_at,
        Some(t("2024-03-01T00:00:00Z"))
    );
    store.shutdown().await;
}

async fn failed_attempts_are_retried_then_given_up(b: Backend) {
    let store = open(&b).await;
    hook(
        &store,
        &[EventType::PlanAssigned],
        1,
        "2024-01-01T00:00:00Z",
    )
    .await;
    create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let now = t("2024-03-01T00:00:00Z");
    let got = store.claim_deliveries(now, 10, LEASE, &[]).await.unwrap();
    assert_eq!(got.len(), 1);
    let first = got[0].clone();
    assert_eq!(first.first_attempt_due, now);
    let retry_at = now + SignedDuration::from_secs(1);
    store
        .finish_delivery(
            first.id,
            DeliveryResult::Failed {
                error: "HTTP 500".into(),
                next_attempt_at: Some(retry_at),
            },
            now,
        )
        .await
        .unwrap();
    let status = &store.list_webhooks().await.unwrap()[0];
    assert_eq!(
        (
            status.last_attempt_at,
            status.last_error.as_deref(),
            status.consecutive_failures,
            status.pending
        ),
        (Some(now), Some("HTTP 500"), 1, 1)
    );
    assert!(
        store
            .claim_deliveries(retry_at - SignedDuration::from_millis(1), 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty(),
        "not before its time"
    );
    let second = store
        .claim_deliveries(retry_at, 10, LEASE, &[])
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first.id);
    assert_eq!(second[0].attempt, 2);
    assert_eq!(second[0].event, first.event, "the same event id on a retry");
    assert_eq!(second[0].first_attempt_due, now);

    // Given up: never claimed again, no longer pending.
    store
        .finish_delivery(
            first.id,
            DeliveryResult::Failed {
                error: "connection refused".into(),
                next_attempt_at: None,
            },
            retry_at,
        )
        .await
        .unwrap();
    let later = now + SignedDuration::from_hours(100);
    assert!(
        store
            .claim_deliveries(later, 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let status = &store.list_webhooks().await.unwrap()[0];
    assert_eq!(
        (
            status.last_error.as_deref(),
            status.consecutive_failures,
            status.pending
        ),
        (Some("connection refused"), 2, 0)
    );
    assert_eq!(store.delivery_stats(later).await.unwrap().pending, 0);

    // A success resets the failures.
    create(&store, "cust2", "pro", "2024-03-02T00:00:00Z", 2).await;
    let got = claim(&store, "2024-03-02T00:00:00Z").await;
    deliver_all(&store, &got, "2024-03-02T00:00:01Z").await;
    let status = &store.list_webhooks().await.unwrap()[0];
    assert_eq!(
        (
            status.last_success_at,
            status.last_error.as_deref(),
            status.consecutive_failures
        ),
        (Some(t("2024-03-02T00:00:01Z")), None, 0)
    );
    store.shutdown().await;
}

async fn deleting_a_webhook_drops_its_pending_deliveries(b: Backend) {
    let store = open(&b).await;
    let gone = hook(&store, &EventType::ALL, 1, "2024-01-01T00:00:00Z").await;
    let kept = hook(
        &store,
        &[EventType::AgreementCreated],
        2,
        "2024-01-01T00:00:00Z",
    )
    .await;
    create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let now = t("2024-03-01T00:00:01Z");
    // One of `gone`'s is in flight when it is deleted.
    let in_flight = store
        .claim_deliveries(now, 1, LEASE, std::slice::from_ref(&kept.id))
        .await
        .unwrap();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(store.delivery_stats(now).await.unwrap().pending, 3);
    assert!(store.delete_webhook(&gone.id).await.unwrap());
    assert_eq!(store.delivery_stats(now).await.unwrap().pending, 1);
    // Finishing the in-flight attempt afterwards is harmless.
    store
        .finish_delivery(in_flight[0].id, DeliveryResult::Delivered, now)
        .await
        .unwrap();
    let got = store
        .claim_deliveries(now + LEASE, 10, LEASE, &[])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].webhook_id, kept.id);
    store.shutdown().await;
}

async fn events_survive_reopening_the_store(b: Backend) {
    let store = open(&b).await;
    hook(&store, &EventType::ALL, 1, "2024-01-01T00:00:00Z").await;
    let a = create(&store, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&a, "calls", "95", at), at).await,
        Ok(())
    );
    // Answered means committed, events with it; nothing was claimed before the
    // store went away.
    let place = store.place.clone();
    drop(store);
    let store = TestStore::on(&place, StoreConfig::default()).await;
    assert_eq!(store.build_usage_events(t(at)).await.unwrap(), 1);
    let got = claim(&store, at).await;
    assert_eq!(
        types(&got),
        [
            EventType::AgreementCreated,
            EventType::PlanAssigned,
            EventType::MeterUsageUpdated,
            EventType::EntitlementThresholdReached,
            EventType::EntitlementThresholdReached,
        ]
    );
    // A claimed, unfinished attempt survives too: claimed again once its
    // lease expires.
    store.shutdown().await;
    drop(store);
    let store = TestStore::on(&place, StoreConfig::default()).await;
    assert!(claim(&store, at).await.is_empty(), "still leased");
    let again = store
        .claim_deliveries(t(at) + LEASE, 100, LEASE, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 5);
    for d in &again {
        assert_eq!(
            store.event(&d.event.id).await.unwrap().as_ref(),
            Some(&d.event)
        );
    }
    store.shutdown().await;
}

async fn a_webhook_receives_the_events_raised_after_it(b: Backend) {
    let store = open(&b).await;
    // Raised while no webhook exists: delivered to nobody, pending for nobody.
    create(&store, "early", "pro", "2024-03-01T00:00:00Z", 1).await;
    let first = hook(&store, &EventType::ALL, 1, "2024-03-01T00:00:01Z").await;
    assert_eq!(
        store
            .delivery_stats(t("2024-03-01T00:00:01Z"))
            .await
            .unwrap()
            .pending,
        0
    );
    create(&store, "cust", "pro", "2024-03-01T00:00:02Z", 2).await;
    // Raised before the second webhook: the first's only.
    let second = hook(&store, &EventType::ALL, 2, "2024-03-01T00:00:03Z").await;
    create(&store, "late", "pro", "2024-03-01T00:00:04Z", 3).await;
    let got = claim(&store, "2024-03-01T00:00:05Z").await;
    let count = |id: &WebhookId| got.iter().filter(|d| &d.webhook_id == id).count();
    assert_eq!((count(&first.id), count(&second.id)), (4, 2));
    let customers = |id: &WebhookId| {
        let mut c: Vec<String> = got
            .iter()
            .filter(|d| &d.webhook_id == id)
            .map(|d| d.event.data["customer_id"].as_str().unwrap().to_owned())
            .collect();
        c.sort();
        c.dedup();
        c
    };
    assert_eq!(customers(&first.id), ["cust", "late"]);
    assert_eq!(customers(&second.id), ["late"]);
    store.shutdown().await;
}

/// Old events are purged once nothing is pending for them.
async fn old_events_without_pending_deliveries_are_purged(b: Backend) {
    let store = open(&b).await;
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

/// Whether `events_raised` holds a wake-up now (taking it). `notify_one`
/// keeps one until it is awaited, and is called before the write is answered,
/// so the first poll of `notified` finds it.
async fn woken(store: &TestStore) -> bool {
    let raised = store.events_raised();
    tokio::time::timeout(std::time::Duration::ZERO, raised.notified())
        .await
        .is_ok()
}

async fn events_raised_wakes_for_agreements_and_crossings_only(b: Backend) {
    let store = open(&b).await;
    let at = "2024-03-02T00:00:00Z";
    assert!(!woken(&store).await, "nothing written yet");
    let a = create(&store, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    assert!(woken(&store).await, "an agreement raises events");
    assert!(!woken(&store).await, "one wake-up per commit, taken");
    // `calls`: limit 100, thresholds 50, 90, 100.
    assert_eq!(
        submit(&store, delta(&a, "calls", "40", at), at).await,
        Ok(())
    );
    assert!(
        !woken(&store).await,
        "below every threshold: the hot path stays quiet"
    );
    assert_eq!(
        submit(&store, delta(&a, "calls", "15", at), at).await,
        Ok(())
    );
    assert!(woken(&store).await, "50 % crossed");
    assert_eq!(
        submit(&store, delta(&a, "calls", "1", at), at).await,
        Ok(())
    );
    assert!(!woken(&store).await);
    store.shutdown().await;
}
