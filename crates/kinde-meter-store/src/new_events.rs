//! The webhook events the store raises, built once for every backend: their
//! data, and their ids derived from a key unique to each event, so that both
//! backends name the same event alike (docs/design.md#webhook-outbox). The
//! backends only write them.

use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    ids::{AgreementId, FeatureCode},
    webhook::{Event, EventId, EventType, data},
};

/// An event of `event_type` raised at `now`, named after `key` (unique to it).
pub(crate) fn event(
    event_type: EventType,
    now: Timestamp,
    key: &str,
    data: serde_json::Value,
) -> Event {
    Event {
        id: EventId::derive(now, key),
        event_type,
        created_at: now,
        data,
    }
}

/// The events of an agreement creation at `now`: `customer.agreement_created`;
/// `customer.plan_assigned` when `ended` (the customer's agreements active
/// until now, newest first) is empty, else `customer.plan_changed` naming the
/// newest of them; and `customer.agreement_cancelled` for each of `ended`.
pub(crate) fn agreement_events(
    created: &Agreement,
    ended: &[Agreement],
    now: Timestamp,
) -> Vec<Event> {
    let (customer, id, plan) = (&created.customer_id, &created.id, &created.plan_code);
    let mut events = vec![event(
        EventType::AgreementCreated,
        now,
        &format!("agreement_created:{id}"),
        data::agreement_created(customer, id, plan),
    )];
    events.push(match ended.first() {
        None => event(
            EventType::PlanAssigned,
            now,
            &format!("plan_assigned:{id}"),
            data::plan_assigned(customer, id, plan),
        ),
        Some(previous) => event(
            EventType::PlanChanged,
            now,
            &format!("plan_changed:{id}"),
            data::plan_changed(customer, id, plan, &previous.plan_code, &previous.id),
        ),
    });
    for old in ended {
        events.push(event(
            EventType::AgreementCancelled,
            now,
            &format!("agreement_cancelled:{}", old.id),
            data::agreement_cancelled(&old.customer_id, &old.id, &old.plan_code, now),
        ));
    }
    events
}

/// The key (and dedupe key) of a `customer.entitlement_threshold_reached`:
/// one per agreement, feature, period and threshold.
pub(crate) fn threshold_key(
    agreement_id: &AgreementId,
    feature_code: &FeatureCode,
    period_start_ns: i64,
    percent: u8,
) -> String {
    format!("threshold:{agreement_id}:{feature_code}:{period_start_ns}:{percent}")
}

/// The key of a coalesced `customer.meter_usage_updated` built at `now_ns`.
pub(crate) fn usage_key(
    agreement_id: &AgreementId,
    feature_code: &FeatureCode,
    period_start_ns: i64,
    now_ns: i64,
) -> String {
    format!("usage:{agreement_id}:{feature_code}:{period_start_ns}:{now_ns}")
}
