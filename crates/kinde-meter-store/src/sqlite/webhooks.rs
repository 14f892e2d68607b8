//! Webhooks and their deliveries: registration, fan-out of outbox events to
//! the webhooks subscribed to their type, leased claims of due attempts, and
//! their outcome (docs/design.md#webhook-outbox).

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::webhook::{EventType, GIVE_UP_AFTER, WebhookId};
use rusqlite::{Connection, OptionalExtension, Row};

use super::{
    codec::{self, stored},
    outbox,
};
use crate::{
    Delivery, DeliveryId, DeliveryResult, DeliveryStats, NewWebhook, Webhook, WebhookPatch,
    WebhookStatus,
};

/// Columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, name, endpoint, description, event_types, created_at_ns";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: stored(WebhookId::parse(r.get::<_, String>(0)?))?,
        name: r.get(1)?,
        endpoint: r.get(2)?,
        description: r.get(3)?,
        event_types: decode_types(&r.get::<_, String>(4)?)?,
        created_on: codec::timestamp(r.get(5)?)?,
    })
}

fn encode_types(types: &[EventType]) -> String {
    let codes: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    serde_json::Value::from(codes).to_string()
}

fn decode_types(json: &str) -> rusqlite::Result<Vec<EventType>> {
    let codes: Vec<String> = stored(serde_json::from_str(json))?;
    codes
        .iter()
        .map(|c| {
            EventType::parse(c)
                .ok_or_else(|| codec::corrupt(format!("unknown event type {c:?} in webhooks")))
        })
        .collect()
}

/// Registers a webhook. It receives the events raised after it: those raised
/// before are fanned out to the other webhooks first.
pub(super) fn create(conn: &Connection, new: &NewWebhook) -> rusqlite::Result<Webhook> {
    fan_out(conn, codec::ns(new.now)?, None)?;
    let webhook = Webhook {
        id: WebhookId::generate(new.now, new.id_random),
        name: new.name.clone(),
        endpoint: new.endpoint.clone(),
        description: new.description.clone(),
        event_types: new.event_types.clone(),
        created_on: new.now,
    };
    conn.prepare_cached(
        "INSERT INTO webhooks (id, name, endpoint, description, event_types, created_at_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        webhook.id.as_str(),
        &webhook.name,
        &webhook.endpoint,
        &webhook.description,
        encode_types(&webhook.event_types),
        codec::ns(webhook.created_on)?,
    ))?;
    Ok(webhook)
}

/// One webhook.
pub(super) fn load(conn: &Connection, id: &WebhookId) -> rusqlite::Result<Option<Webhook>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?1"))?
        .query_row([id.as_str()], from_row)
        .optional()
}

/// Applies `patch`; the webhook as it is afterwards, `None` if there is none.
pub(super) fn update(
    conn: &Connection,
    id: &WebhookId,
    patch: &WebhookPatch,
) -> rusqlite::Result<Option<Webhook>> {
    let Some(mut webhook) = load(conn, id)? else {
        return Ok(None);
    };
    if let Some(name) = &patch.name {
        webhook.name = name.clone();
    }
    if let Some(description) = &patch.description {
        webhook.description = description.clone();
    }
    if let Some(types) = &patch.event_types {
        webhook.event_types = types.clone();
    }
    if let Some(endpoint) = &patch.endpoint {
        webhook.endpoint = endpoint.clone();
    }
    conn.prepare_cached(
        "UPDATE webhooks SET name = ?2, endpoint = ?3, description = ?4, event_types = ?5
         WHERE id = ?1",
    )?
    .execute((
        id.as_str(),
        &webhook.name,
        &webhook.endpoint,
        &webhook.description,
        encode_types(&webhook.event_types),
    ))?;
    Ok(Some(webhook))
}

/// Deletes a webhook and its deliveries; `false` if there is none.
pub(super) fn delete(conn: &Connection, id: &WebhookId) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")?
        .execute([id.as_str()])?;
    let deleted = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
        .execute([id.as_str()])?;
    Ok(deleted > 0)
}

/// Every webhook, oldest first, with its delivery state.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<WebhookStatus>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, last_attempt_at_ns, last_success_at_ns, last_error,
                consecutive_failures,
                (SELECT count(*) FROM webhook_deliveries d
                 WHERE d.webhook_id = w.id AND d.status = 'pending')
         FROM webhooks w ORDER BY seq"
    ))?;
    stmt.query_map([], |r| {
        Ok(WebhookStatus {
            webhook: from_row(r)?,
            last_attempt_at: codec::opt_timestamp(r.get(6)?)?,
            last_success_at: codec::opt_timestamp(r.get(7)?)?,
            last_error: r.get(8)?,
            consecutive_failures: stored(u32::try_from(r.get::<_, i64>(9)?))?,
            pending: stored(u64::try_from(r.get::<_, i64>(10)?))?,
        })
    })?
    .collect()
}

/// Most events one fan-out handles (the rest wait for the next claim).
const FAN_OUT_LIMIT: i64 = 1000;

/// Gives each event not yet fanned out (at most `limit` of them, the oldest)
/// one pending delivery per webhook subscribed to its type, due at `now`.
fn fan_out(conn: &Connection, now_ns: i64, limit: Option<i64>) -> rusqlite::Result<()> {
    let webhooks: Vec<(String, Vec<EventType>)> = conn
        .prepare_cached("SELECT id, event_types FROM webhooks ORDER BY seq")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                decode_types(&r.get::<_, String>(1)?)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if webhooks.is_empty() {
        // Nobody to deliver to: nothing is pending.
        conn.prepare_cached("UPDATE events SET fanned_out = 1 WHERE fanned_out = 0")?
            .execute([])?;
        return Ok(());
    }
    let events: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, type FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT ?1")?
        .query_map([limit.unwrap_or(-1)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (seq, code) in events {
        for (webhook, types) in &webhooks {
            if !types.iter().any(|t| t.as_str() == code) {
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO webhook_deliveries (event_seq, webhook_id, attempt, status,
                     next_attempt_at_ns, first_attempt_due_ns, created_at_ns)
                 VALUES (?1, ?2, 1, 'pending', ?3, ?3, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute((seq, webhook, now_ns))?;
        }
        conn.prepare_cached("UPDATE events SET fanned_out = 1 WHERE seq = ?1")?
            .execute([seq])?;
    }
    Ok(())
}

/// How long events are kept: deliveries are retried for [`GIVE_UP_AFTER`],
/// and the event stays readable (GET /events) a day longer.
pub(crate) const EVENT_RETENTION: SignedDuration =
    SignedDuration::from_secs(GIVE_UP_AFTER.as_secs() + 24 * 3600);

/// Most events one purge deletes, so that it holds the write lock briefly.
const PURGE_LIMIT: i64 = 1000;

/// Deletes the oldest events (and their finished deliveries) raised more than
/// [`EVENT_RETENTION`] before `now` that have no pending delivery; at most
/// [`PURGE_LIMIT`] of them, by the age index (nothing to scan when none is old).
fn purge(conn: &Connection, now: Timestamp) -> rusqlite::Result<()> {
    let cutoff = codec::ns_clamped(now.checked_sub(EVENT_RETENTION).unwrap_or(Timestamp::MIN));
    let old: Vec<i64> = conn
        .prepare_cached(
            "SELECT seq FROM events e
             WHERE created_at_ns < ?1 AND fanned_out = 1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_seq = e.seq AND d.status = 'pending')
             ORDER BY created_at_ns LIMIT ?2",
        )?
        .query_map((cutoff, PURGE_LIMIT), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for seq in old {
        conn.prepare_cached("DELETE FROM webhook_deliveries WHERE event_seq = ?1")?
            .execute([seq])?;
        conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?
            .execute([seq])?;
    }
    Ok(())
}

/// Whether a claim at `now` may find anything to do: events to fan out, or a
/// due delivery not leased. Answered on a read connection, so that an idle
/// delivery worker's polling costs the writer nothing.
pub(super) fn claimable(conn: &Connection, now: Timestamp) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM events WHERE fanned_out = 0)
             OR EXISTS (SELECT 1 FROM webhook_deliveries
                        WHERE status = 'pending' AND next_attempt_at_ns <= ?1
                          AND (leased_until_ns IS NULL OR leased_until_ns <= ?1))",
    )?
    .query_row([codec::ns_clamped(now)], |r| r.get(0))
}

/// Fans out new events, then leases up to `limit` due deliveries of webhooks
/// not in `busy` for `lease`. Due deliveries are taken in turns across
/// webhooks (each webhook's oldest first), so that one webhook's backlog does
/// not fill a claim: each webhook's first `limit` due ones are read by index
/// (however large its backlog), then interleaved.
pub(super) fn claim(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
    lease: SignedDuration,
    busy: &[WebhookId],
) -> rusqlite::Result<Vec<Delivery>> {
    let now_ns = codec::ns_clamped(now);
    fan_out(conn, now_ns, Some(FAN_OUT_LIMIT))?;
    purge(conn, now)?;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let leased_until = codec::ns_clamped(now.checked_add(lease).unwrap_or(Timestamp::MAX));
    let busy: HashSet<&str> = busy.iter().map(|w| w.as_str()).collect();
    let webhooks: Vec<(String, String)> = conn
        .prepare_cached("SELECT id, endpoint FROM webhooks ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT d.id, d.attempt, d.first_attempt_due_ns, {}
         FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_at_ns <= ?2
           AND (d.leased_until_ns IS NULL OR d.leased_until_ns <= ?2)
         ORDER BY d.next_attempt_at_ns, d.id
         LIMIT ?3",
        outbox::EVENT_COLUMNS
    ))?;
    let per_webhook = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut queues = Vec::new();
    for (id, endpoint) in &webhooks {
        if busy.contains(id.as_str()) {
            continue;
        }
        let webhook_id = stored(WebhookId::parse(id.clone()))?;
        let due = stmt
            .query_map((id, now_ns, per_webhook), |r| {
                Ok(Delivery {
                    id: DeliveryId(r.get(0)?),
                    webhook_id: webhook_id.clone(),
                    endpoint: endpoint.clone(),
                    attempt: stored(u32::try_from(r.get::<_, i64>(1)?))?,
                    first_attempt_due: codec::timestamp(r.get(2)?)?,
                    event: outbox::from_row(r, 3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !due.is_empty() {
            queues.push(due.into_iter());
        }
    }
    // In turns: each webhook's oldest, then each one's second, …
    let mut deliveries = Vec::with_capacity(limit.min(1024));
    while deliveries.len() < limit && !queues.is_empty() {
        queues.retain_mut(|queue| match queue.next() {
            Some(d) if deliveries.len() < limit => {
                deliveries.push(d);
                true
            }
            _ => false,
        });
    }
    for d in &deliveries {
        conn.prepare_cached("UPDATE webhook_deliveries SET leased_until_ns = ?2 WHERE id = ?1")?
            .execute((d.id.0, leased_until))?;
    }
    Ok(deliveries)
}

/// Records how an attempt ended, on the delivery and on its webhook's state.
/// A delivery that no longer exists (its webhook was deleted) is no error.
pub(super) fn finish(
    conn: &Connection,
    id: DeliveryId,
    result: &DeliveryResult,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let now_ns = codec::ns_clamped(now);
    let webhook: Option<String> = conn
        .prepare_cached("SELECT webhook_id FROM webhook_deliveries WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))
        .optional()?;
    let Some(webhook) = webhook else {
        return Ok(());
    };
    match result {
        DeliveryResult::Delivered => {
            conn.prepare_cached(
                "UPDATE webhook_deliveries
                 SET status = 'delivered', leased_until_ns = NULL, last_error = NULL
                 WHERE id = ?1",
            )?
            .execute([id.0])?;
            conn.prepare_cached(
                "UPDATE webhooks SET last_attempt_at_ns = ?2, last_success_at_ns = ?2,
                     last_error = NULL, consecutive_failures = 0
                 WHERE id = ?1",
            )?
            .execute((&webhook, now_ns))?;
        }
        DeliveryResult::Failed {
            error,
            next_attempt_at,
        } => {
            match next_attempt_at {
                Some(next) => conn
                    .prepare_cached(
                        "UPDATE webhook_deliveries
                         SET attempt = attempt + 1, next_attempt_at_ns = ?2,
                             leased_until_ns = NULL, last_error = ?3
                         WHERE id = ?1",
                    )?
                    .execute((id.0, codec::ns_clamped(*next), error))?,
                None => conn
                    .prepare_cached(
                        "UPDATE webhook_deliveries
                         SET status = 'failed', leased_until_ns = NULL, last_error = ?2
                         WHERE id = ?1",
                    )?
                    .execute((id.0, error))?,
            };
            conn.prepare_cached(
                "UPDATE webhooks SET last_attempt_at_ns = ?2, last_error = ?3,
                     consecutive_failures = consecutive_failures + 1
                 WHERE id = ?1",
            )?
            .execute((&webhook, now_ns, error))?;
        }
    }
    Ok(())
}

/// Pending deliveries, plus events not yet fanned out while any webhook
/// exists, and when the oldest of their events was raised.
pub(super) fn stats(conn: &Connection) -> rusqlite::Result<DeliveryStats> {
    let (pending, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), min(created_at_ns) FROM (
                 SELECT e.created_at_ns FROM webhook_deliveries d
                 JOIN events e ON e.seq = d.event_seq
                 WHERE d.status = 'pending'
                 UNION ALL
                 SELECT created_at_ns FROM events
                 WHERE fanned_out = 0 AND EXISTS (SELECT 1 FROM webhooks))",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(DeliveryStats {
        pending: stored(u64::try_from(pending))?,
        oldest_pending_created_at: codec::opt_timestamp(oldest)?,
    })
}
