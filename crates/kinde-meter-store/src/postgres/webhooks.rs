//! Webhooks and their deliveries: registration, fan-out of outbox events to
//! the webhooks subscribed to their type, leased claims of due attempts, and
//! their outcome (docs/design.md#webhook-outbox).
//!
//! Several servers share the work: fan-out takes the events it handles with
//! `FOR UPDATE SKIP LOCKED` (and a delivery is unique per event and webhook),
//! and a claim leases its deliveries with `UPDATE … WHERE id IN (SELECT … FOR
//! UPDATE SKIP LOCKED)`, re-checking the lease on the locked row, so two
//! servers never take the same attempt. Row locks are taken webhook first, then
//! its deliveries (finishing an attempt, deleting a webhook), so these never
//! deadlock with each other.

use deadpool_postgres::{GenericClient, Object};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::webhook::{EventType, GIVE_UP_AFTER, WebhookId};
use tokio_postgres::Row;

use super::{
    codec::{self, stored},
    failure::PgResult,
    outbox,
};
use crate::{
    Delivery, DeliveryId, DeliveryResult, DeliveryStats, NewWebhook, Webhook, WebhookPatch,
    WebhookStatus,
};

/// Columns [`from_row`] reads, in its order (of `webhooks`, aliased `w`).
const COLUMNS: &str = "w.id, w.name, w.endpoint, w.description, w.event_types, w.created_at_ns";

fn from_row(r: &Row) -> PgResult<Webhook> {
    Ok(Webhook {
        id: stored(WebhookId::parse(r.get::<_, String>(0)), "webhooks.id")?,
        name: r.get(1),
        endpoint: r.get(2),
        description: r.get(3),
        event_types: decode_types(r.get(4))?,
        created_on: codec::timestamp(r.get(5))?,
    })
}

fn encode_types(types: &[EventType]) -> Vec<&'static str> {
    types.iter().map(|t| t.as_str()).collect()
}

fn decode_types(codes: Vec<String>) -> PgResult<Vec<EventType>> {
    codes
        .iter()
        .map(|c| {
            stored(
                EventType::parse(c).ok_or("unknown event type"),
                "webhooks.event_types",
            )
        })
        .collect()
}

/// Registers a webhook, in one transaction. It receives the events raised
/// after it: those raised before are fanned out to the other webhooks first.
pub(super) async fn create(conn: &mut Object, new: &NewWebhook) -> PgResult<Webhook> {
    let tx = conn.transaction().await?;
    fan_out(&tx, codec::ns(new.now)?, i64::MAX).await?;
    let webhook = Webhook {
        id: WebhookId::generate(new.now, new.id_random),
        name: new.name.clone(),
        endpoint: new.endpoint.clone(),
        description: new.description.clone(),
        event_types: new.event_types.clone(),
        created_on: new.now,
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhooks (id, name, endpoint, description, event_types, created_at_ns)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &webhook.id.as_str(),
            &webhook.name,
            &webhook.endpoint,
            &webhook.description,
            &encode_types(&webhook.event_types),
            &codec::ns(webhook.created_on)?,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(webhook)
}

/// Applies `patch` in one statement; the webhook as it is afterwards, `None`
/// if there is none.
pub(super) async fn update(
    conn: &impl GenericClient,
    id: &WebhookId,
    patch: &WebhookPatch,
) -> PgResult<Option<Webhook>> {
    let stmt = conn
        .prepare_cached(&format!(
            "UPDATE webhooks w SET
                 name = coalesce($2, w.name),
                 endpoint = coalesce($3, w.endpoint),
                 description = CASE WHEN $4 THEN $5 ELSE w.description END,
                 event_types = coalesce($6, w.event_types)
             WHERE w.id = $1
             RETURNING {COLUMNS}"
        ))
        .await?;
    let types = patch.event_types.as_deref().map(encode_types);
    conn.query_opt(
        &stmt,
        &[
            &id.as_str(),
            &patch.name,
            &patch.endpoint,
            &patch.description.is_some(),
            &patch.description.clone().flatten(),
            &types,
        ],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// Deletes a webhook and (by cascade) its deliveries; `false` if there is none.
pub(super) async fn delete(conn: &impl GenericClient, id: &WebhookId) -> PgResult<bool> {
    let stmt = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = $1")
        .await?;
    Ok(conn.execute(&stmt, &[&id.as_str()]).await? > 0)
}

/// Every webhook, oldest first, with its delivery state.
pub(super) async fn list(conn: &impl GenericClient) -> PgResult<Vec<WebhookStatus>> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, w.last_attempt_at_ns, w.last_success_at_ns, w.last_error,
                    w.consecutive_failures,
                    (SELECT count(*) FROM webhook_deliveries d
                     WHERE d.webhook_id = w.id AND d.status = 'pending')
             FROM webhooks w ORDER BY w.seq"
        ))
        .await?;
    conn.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(WebhookStatus {
                webhook: from_row(r)?,
                last_attempt_at: codec::opt_timestamp(r.get(6))?,
                last_success_at: codec::opt_timestamp(r.get(7))?,
                last_error: r.get(8),
                consecutive_failures: stored(
                    u32::try_from(r.get::<_, i32>(9)),
                    "webhooks.consecutive_failures",
                )?,
                pending: stored(u64::try_from(r.get::<_, i64>(10)), "pending deliveries")?,
            })
        })
        .collect()
}

/// Most events one fan-out handles (the rest wait for the next claim).
const FAN_OUT_LIMIT: i64 = 1000;

/// Gives each event not yet fanned out (at most `limit` of them, the oldest)
/// one pending delivery per webhook subscribed to its type, due at `now`, in
/// one statement. Events another server is fanning out are skipped, not
/// waited for.
async fn fan_out(conn: &impl GenericClient, now_ns: i64, limit: i64) -> PgResult<()> {
    let stmt = conn
        .prepare_cached(
            "WITH picked AS (
                 SELECT seq, type, created_at_ns FROM events WHERE NOT fanned_out
                 ORDER BY seq LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), delivered AS (
                 INSERT INTO webhook_deliveries (event_seq, webhook_id, attempt, status,
                     next_attempt_at_ns, first_attempt_due_ns, created_at_ns,
                     event_created_at_ns)
                 SELECT p.seq, w.id, 1, 'pending', $1, $1, $1, p.created_at_ns
                 FROM picked p JOIN webhooks w ON p.type = ANY (w.event_types)
                 ORDER BY p.seq, w.seq
                 ON CONFLICT DO NOTHING
             )
             UPDATE events e SET fanned_out = true FROM picked p WHERE e.seq = p.seq",
        )
        .await?;
    conn.execute(&stmt, &[&now_ns, &limit]).await?;
    Ok(())
}

/// How long events are kept: deliveries are retried for [`GIVE_UP_AFTER`],
/// and the event stays readable (GET /events) a day longer.
const EVENT_RETENTION: SignedDuration =
    SignedDuration::from_secs(GIVE_UP_AFTER.as_secs() + 24 * 3600);

/// Most events one purge deletes, so that its transaction stays short.
const PURGE_LIMIT: i64 = 1000;

/// Deletes the oldest events (and their finished deliveries) raised more than
/// [`EVENT_RETENTION`] before `now` that have no pending delivery; at most
/// [`PURGE_LIMIT`] of them, by the age index (nothing to scan when none is
/// old). Events another server is purging are skipped. Only fanned-out events
/// qualify, and their deliveries never become pending again, so nothing still
/// to deliver is lost.
async fn purge(conn: &impl GenericClient, now: Timestamp) -> PgResult<()> {
    let cutoff = codec::ns_clamped(now.checked_sub(EVENT_RETENTION).unwrap_or(Timestamp::MIN));
    let stmt = conn
        .prepare_cached(
            "SELECT seq FROM events e
             WHERE created_at_ns < $1 AND fanned_out
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_seq = e.seq AND d.status = 'pending')
             ORDER BY created_at_ns LIMIT $2
             FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let old: Vec<i64> = conn
        .query(&stmt, &[&cutoff, &PURGE_LIMIT])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let stmt = conn
        .prepare_cached("DELETE FROM webhook_deliveries WHERE event_seq = ANY ($1)")
        .await?;
    conn.execute(&stmt, &[&old]).await?;
    let stmt = conn
        .prepare_cached("DELETE FROM events WHERE seq = ANY ($1)")
        .await?;
    conn.execute(&stmt, &[&old]).await?;
    Ok(())
}

/// Fans out new events, then leases up to `limit` due deliveries of webhooks
/// not in `busy` for `lease`, in one transaction. Due deliveries are taken
/// round-robin across webhooks (each webhook's oldest first, read from its
/// part of the pending index), so that one webhook's backlog does not fill a
/// claim.
///
/// The candidates are read without locks; the rows are then locked with
/// `FOR UPDATE SKIP LOCKED`, which re-checks the lease on the latest version
/// of each row: a row another server is leasing is skipped, one it has leased
/// since no longer qualifies. So a claim may return fewer than it could (the
/// next one gets them), never an attempt another worker holds.
pub(super) async fn claim(
    conn: &mut Object,
    now: Timestamp,
    limit: usize,
    lease: SignedDuration,
    busy: &[WebhookId],
) -> PgResult<Vec<Delivery>> {
    let now_ns = codec::ns_clamped(now);
    let tx = conn.transaction().await?;
    fan_out(&tx, now_ns, FAN_OUT_LIMIT).await?;
    purge(&tx, now).await?;
    if limit == 0 {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let leased_until = codec::ns_clamped(now.checked_add(lease).unwrap_or(Timestamp::MAX));
    let busy: Vec<&str> = busy.iter().map(|w| w.as_str()).collect();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE webhook_deliveries d SET leased_until_ns = $2
             FROM webhooks w, events e
             WHERE d.id IN (
                     SELECT c.id FROM webhook_deliveries c
                     WHERE c.id IN (
                             SELECT x.id FROM webhooks h
                             CROSS JOIN LATERAL (
                                 SELECT p.id, p.next_attempt_at_ns,
                                        row_number() OVER (ORDER BY p.next_attempt_at_ns, p.id)
                                            AS rank
                                 FROM webhook_deliveries p
                                 WHERE p.webhook_id = h.id AND p.status = 'pending'
                                   AND p.next_attempt_at_ns <= $1
                                   AND (p.leased_until_ns IS NULL OR p.leased_until_ns <= $1)
                                 ORDER BY p.next_attempt_at_ns, p.id
                                 LIMIT $4) x
                             WHERE h.id <> ALL ($3)
                             ORDER BY x.rank, x.next_attempt_at_ns, x.id
                             LIMIT $4)
                       AND c.status = 'pending' AND c.next_attempt_at_ns <= $1
                       AND (c.leased_until_ns IS NULL OR c.leased_until_ns <= $1)
                     FOR UPDATE SKIP LOCKED)
               AND w.id = d.webhook_id AND e.seq = d.event_seq
             RETURNING d.id, d.webhook_id, w.endpoint, d.attempt, d.first_attempt_due_ns,
                       d.next_attempt_at_ns, {}",
            outbox::EVENT_COLUMNS
        ))
        .await?;
    let rows = tx
        .query(&stmt, &[&now_ns, &leased_until, &busy, &limit])
        .await?;
    tx.commit().await?;
    let mut claimed: Vec<(i64, Delivery)> = rows
        .iter()
        .map(|r| {
            Ok((
                r.get::<_, i64>(5),
                Delivery {
                    id: DeliveryId(r.get(0)),
                    webhook_id: stored(
                        WebhookId::parse(r.get::<_, String>(1)),
                        "webhook_deliveries.webhook_id",
                    )?,
                    endpoint: r.get(2),
                    attempt: stored(
                        u32::try_from(r.get::<_, i32>(3)),
                        "webhook_deliveries.attempt",
                    )?,
                    first_attempt_due: codec::timestamp(r.get(4))?,
                    event: outbox::from_row(r, 6)?,
                },
            ))
        })
        .collect::<PgResult<_>>()?;
    // Oldest first (RETURNING has no order).
    claimed.sort_by_key(|(due, d)| (*due, d.id));
    Ok(claimed.into_iter().map(|(_, d)| d).collect())
}

/// Records how an attempt ended, on its webhook's state and on the delivery,
/// in one transaction (webhook row first, then the delivery: the order a
/// webhook's deletion locks them in). A delivery that is no longer pending
/// (its webhook was deleted, or it was finished already) is left alone.
pub(super) async fn finish(
    conn: &mut Object,
    id: DeliveryId,
    result: &DeliveryResult,
    now: Timestamp,
) -> PgResult<()> {
    let now_ns = codec::ns_clamped(now);
    let tx = conn.transaction().await?;
    let webhook = tx
        .prepare_cached(
            "SELECT webhook_id FROM webhook_deliveries WHERE id = $1 AND status = 'pending'",
        )
        .await?;
    let Some(webhook) = tx.query_opt(&webhook, &[&id.0]).await? else {
        return Ok(());
    };
    let webhook: String = webhook.get(0);
    let changed = match result {
        DeliveryResult::Delivered => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE webhooks SET last_attempt_at_ns = $2, last_success_at_ns = $2,
                         last_error = NULL, consecutive_failures = 0
                     WHERE id = $1",
                )
                .await?;
            tx.execute(&stmt, &[&webhook, &now_ns]).await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE webhook_deliveries
                     SET status = 'delivered', leased_until_ns = NULL, last_error = NULL
                     WHERE id = $1 AND status = 'pending'",
                )
                .await?;
            tx.execute(&stmt, &[&id.0]).await?
        }
        DeliveryResult::Failed {
            error,
            next_attempt_at,
        } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE webhooks SET last_attempt_at_ns = $2, last_error = $3,
                         consecutive_failures = consecutive_failures + 1
                     WHERE id = $1",
                )
                .await?;
            tx.execute(&stmt, &[&webhook, &now_ns, error]).await?;
            // No next attempt: given up.
            let stmt = tx
                .prepare_cached(
                    "UPDATE webhook_deliveries
                     SET status = CASE WHEN $3::int8 IS NULL THEN 'failed' ELSE 'pending' END,
                         attempt = attempt + 1,
                         next_attempt_at_ns = coalesce($3, next_attempt_at_ns),
                         leased_until_ns = NULL, last_error = $2
                     WHERE id = $1 AND status = 'pending'",
                )
                .await?;
            let next = next_attempt_at.map(codec::ns_clamped);
            tx.execute(&stmt, &[&id.0, error, &next]).await?
        }
    };
    if changed == 0 {
        // Finished (or dropped) meanwhile: leave the webhook's state as it was.
        return Ok(());
    }
    tx.commit().await?;
    Ok(())
}

/// Pending deliveries, plus events not yet fanned out while any webhook
/// exists, and when the oldest of their events was raised: from the partial
/// indexes of pending deliveries and of events to fan out alone.
pub(super) async fn stats(conn: &impl GenericClient) -> PgResult<DeliveryStats> {
    let stmt = conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') + f.n,
                    least((SELECT min(event_created_at_ns) FROM webhook_deliveries
                           WHERE status = 'pending'),
                          f.oldest)
             FROM (SELECT count(*) AS n, min(created_at_ns) AS oldest FROM events
                   WHERE NOT fanned_out AND EXISTS (SELECT 1 FROM webhooks)) f",
        )
        .await?;
    let row = conn.query_one(&stmt, &[]).await?;
    Ok(DeliveryStats {
        pending: stored(u64::try_from(row.get::<_, i64>(0)), "pending count")?,
        oldest_pending_created_at: codec::opt_timestamp(row.get(1))?,
    })
}
