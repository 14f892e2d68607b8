//! Idempotency keys in a group commit shared with other servers (`docs/api.md`).
//!
//! A batch claims the keys of its submissions first, all in one statement in
//! sorted order: a key nobody holds (or whose row has expired) is inserted or
//! taken over, and so locked by this batch until it commits; a key held by
//! another server's uncommitted batch makes this one wait (the primary key's
//! conflict check), then see that batch's outcome. Two servers racing one key
//! therefore store one record, and the later request gets the earlier's answer.
//!
//! Inside the batch, the key's state evolves as its submissions are applied in
//! order; at the end the claimed rows are written (an outcome to remember) or
//! deleted (a single record that failed leaves no trace, as with SQLite, unless
//! an entitlement limit refused it: see `outcome::remembered`).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use super::{
    codec,
    failure::{Failure, PgResult},
};
use crate::{
    RecordResult, StoreConfig, UsageSubmission,
    outcome::{self, UnreadableOutcome, kind_str},
};

/// Claims a batch's keys ([`claim`]): `DO UPDATE … WHERE` takes over only an
/// expired row; a live one is left alone (but locked until this transaction
/// ends) and not returned.
pub(super) const CLAIM: &str =
    "INSERT INTO idempotency_keys (client_id, key, fingerprint, kind, created_at_ns)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
     ON CONFLICT (client_id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, kind = excluded.kind,
         outcome_json = NULL, created_at_ns = excluded.created_at_ns
     WHERE idempotency_keys.created_at_ns < excluded.created_at_ns - $6
     RETURNING client_id, key";

/// Stores remembered outcomes ([`finish`]).
pub(super) const REMEMBER: &str = "UPDATE idempotency_keys i SET
                     fingerprint = u.f, kind = u.kd, outcome_json = u.o, created_at_ns = u.t
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                      AS u (c, k, f, kd, o, t)
                 WHERE i.client_id = u.c AND i.key = u.k";

/// Deletes claims that remembered nothing ([`finish`]).
pub(super) const RELEASE: &str =
    "DELETE FROM idempotency_keys i USING unnest($1::text[], $2::text[]) AS u (c, k)
                 WHERE i.client_id = u.c AND i.key = u.k";

/// Stores the keys of a batch sent in one flight (`one_flight`), which took
/// each to be new: a key already stored (a retry, or a key expired and not yet
/// purged) makes it fail with a unique violation, and so does one claimed by
/// another server's open batch once that batch commits (the insert waits for
/// it first); the batch is then run again the usual way, which claims it.
pub(super) const INSERT_NEW: &str =
    "INSERT INTO idempotency_keys (client_id, key, fingerprint, kind, outcome_json, created_at_ns)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])";

/// A key, in a client's namespace. Ordered bytewise: the order keys are claimed in.
pub(super) type KeyId = (String, String);

/// What is known about a key while the batch runs.
#[derive(Debug, Clone)]
pub(super) enum KeyState {
    /// Claimed by this batch and not (yet) remembered: the next submission
    /// with the key is processed.
    Free,
    /// An outcome is remembered for it: by an earlier transaction (found), or
    /// by an earlier submission of this batch.
    Remembered {
        fingerprint: String,
        kind: String,
        outcome: Result<Vec<RecordResult>, UnreadableOutcome>,
        /// Received time of the submission that remembered it, in this batch.
        created_at: Option<Timestamp>,
    },
}

/// The keys of a batch and their states.
#[derive(Default)]
pub(super) struct Keys {
    pub states: HashMap<KeyId, KeyState>,
    /// Keys this batch claimed (their rows are its to write or delete).
    pub claimed: Vec<KeyId>,
}

/// Each key of `submissions` with the first submission carrying it (the one
/// that claims it), in key order (the order keys are claimed in).
fn first_of_each_key<'a>(submissions: &[&'a UsageSubmission]) -> Vec<(KeyId, &'a UsageSubmission)> {
    let mut first: HashMap<KeyId, &'a UsageSubmission> = HashMap::new();
    for s in submissions {
        if let Some(claim) = &s.idempotency {
            first
                .entry((s.client_id.clone(), claim.key.as_str().to_owned()))
                .or_insert(s);
        }
    }
    let mut sorted: Vec<_> = first.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}

/// Claims the keys of `submissions` and reads the outcomes of those held by
/// committed transactions.
pub(super) async fn claim(
    conn: &impl GenericClient,
    config: &StoreConfig,
    submissions: &[&UsageSubmission],
) -> PgResult<Keys> {
    let sorted = first_of_each_key(submissions);
    let mut keys = Keys {
        states: HashMap::with_capacity(sorted.len()),
        claimed: Vec::new(),
    };
    if sorted.is_empty() {
        return Ok(keys);
    }
    let n = sorted.len();
    let (mut c, mut k, mut f, mut kd, mut t) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((client, key), s) in &sorted {
        let claim = s.idempotency.as_ref().expect("keyed submissions only");
        c.push(client.as_str());
        k.push(key.as_str());
        f.push(claim.fingerprint.as_str());
        kd.push(kind_str(s.kind));
        t.push(codec::ns(s.received_at)?);
    }
    let retention_ns = i64::try_from(config.idempotency_retention.as_nanos()).unwrap_or(i64::MAX);
    let stmt = conn.prepare_cached(CLAIM).await?;
    let rows = conn
        .query(&stmt, &[&c, &k, &f, &kd, &t, &retention_ns])
        .await?;
    for r in rows {
        let id: KeyId = (r.get(0), r.get(1));
        keys.states.insert(id.clone(), KeyState::Free);
        keys.claimed.push(id);
    }
    if keys.claimed.len() < n {
        // Held by committed transactions (this one waited for any in flight).
        let stmt = conn
            .prepare_cached(
                "SELECT i.client_id, i.key, i.fingerprint, i.kind, i.outcome_json
                 FROM idempotency_keys i
                 JOIN unnest($1::text[], $2::text[]) AS u (c, k)
                   ON i.client_id = u.c AND i.key = u.k",
            )
            .await?;
        for r in conn.query(&stmt, &[&c, &k]).await? {
            let id: KeyId = (r.get(0), r.get(1));
            if keys.states.contains_key(&id) {
                continue;
            }
            let outcome = match r.get::<_, Option<&str>>(4) {
                Some(json) => outcome::decode(json),
                None => Err(UnreadableOutcome::NeverWritten),
            };
            keys.states.insert(
                id,
                KeyState::Remembered {
                    fingerprint: r.get(2),
                    kind: r.get(3),
                    outcome,
                    created_at: None,
                },
            );
        }
    }
    Ok(keys)
}

/// Writes the claimed keys' final states: remembered outcomes are stored,
/// claims that remembered nothing are deleted.
pub(super) async fn finish(conn: &impl GenericClient, keys: &Keys) -> PgResult<()> {
    // Columns of the two statements: client, key, fingerprint, kind, outcome, time.
    let mut remembered = (Vec::<&str>::new(), Vec::<&str>::new(), Vec::<&str>::new());
    let mut remembered_rest = (Vec::<&str>::new(), Vec::<String>::new(), Vec::<i64>::new());
    let mut released: (Vec<&str>, Vec<&str>) = Default::default();
    for id in &keys.claimed {
        match keys.states.get(id) {
            Some(KeyState::Remembered {
                fingerprint,
                kind,
                outcome: Ok(results),
                created_at: Some(at),
            }) => {
                remembered.0.push(id.0.as_str());
                remembered.1.push(id.1.as_str());
                remembered.2.push(fingerprint.as_str());
                remembered_rest.0.push(kind.as_str());
                remembered_rest.1.push(outcome::encode(results));
                remembered_rest.2.push(codec::ns(*at)?);
            }
            _ => {
                released.0.push(id.0.as_str());
                released.1.push(id.1.as_str());
            }
        }
    }
    // Both statements are sent together (one round trip).
    let remember = async {
        if remembered.0.is_empty() {
            return PgResult::Ok(());
        }
        let stmt = conn.prepare_cached(REMEMBER).await?;
        let (c, k, f) = &remembered;
        let (kd, o, t) = &remembered_rest;
        conn.execute(&stmt, &[c, k, f, kd, o, t]).await?;
        Ok(())
    };
    let release = async {
        if released.0.is_empty() {
            return PgResult::Ok(());
        }
        let stmt = conn.prepare_cached(RELEASE).await?;
        conn.execute(&stmt, &[&released.0, &released.1]).await?;
        Ok(())
    };
    futures::try_join!(remember, release)?;
    Ok(())
}

/// The keys of a batch sent in one flight, each stored as new
/// ([`INSERT_NEW`], in sorted order, as claims are taken) with what the batch
/// remembers for it; a key that remembers nothing (a single record that
/// failed) is stored too, to prove it new, and deleted in the same flight
/// ([`RELEASE`]), so it leaves no trace, as the usual way's claim.
#[derive(Default)]
pub(super) struct NewKeys<'a> {
    client: Vec<&'a str>,
    key: Vec<&'a str>,
    fingerprint: Vec<String>,
    kind: Vec<String>,
    outcome: Vec<Option<String>>,
    created_at_ns: Vec<i64>,
    released: (Vec<&'a str>, Vec<&'a str>),
}

impl<'a> NewKeys<'a> {
    /// The keys of `submissions` with their states after the batch (`keys`,
    /// as `batch::apply_all` left them from none claimed): a key that
    /// remembered an outcome is stored as the usual way's [`finish`] stores
    /// it, else as the first submission carrying it claims it.
    pub(super) fn of(submissions: &[&'a UsageSubmission], mut keys: Keys) -> PgResult<NewKeys<'a>> {
        let mut new = NewKeys::default();
        for (id, s) in first_of_each_key(submissions) {
            let claim = s.idempotency.as_ref().expect("keyed submissions only");
            new.client.push(s.client_id.as_str());
            new.key.push(claim.key.as_str());
            match keys.states.remove(&id) {
                Some(KeyState::Remembered {
                    fingerprint,
                    kind,
                    outcome: Ok(results),
                    created_at: Some(at),
                }) => {
                    new.fingerprint.push(fingerprint);
                    new.kind.push(kind);
                    new.outcome.push(Some(outcome::encode(&results)));
                    new.created_at_ns.push(codec::ns(at)?);
                }
                _ => {
                    new.fingerprint.push(claim.fingerprint.as_str().to_owned());
                    new.kind.push(kind_str(s.kind).to_owned());
                    new.outcome.push(None);
                    new.created_at_ns.push(codec::ns(s.received_at)?);
                    new.released.0.push(s.client_id.as_str());
                    new.released.1.push(claim.key.as_str());
                }
            }
        }
        Ok(new)
    }

    /// Stores the keys (no statement if there are none). A unique violation
    /// means a key was not new.
    pub(super) async fn insert(&self, conn: &impl GenericClient) -> PgResult<()> {
        if self.client.is_empty() {
            return Ok(());
        }
        let stmt = conn.prepare_cached(INSERT_NEW).await?;
        conn.execute(
            &stmt,
            &[
                &self.client,
                &self.key,
                &self.fingerprint,
                &self.kind,
                &self.outcome,
                &self.created_at_ns,
            ],
        )
        .await?;
        Ok(())
    }

    /// Deletes the keys that remember nothing (no statement if there are none).
    pub(super) async fn release(&self, conn: &impl GenericClient) -> PgResult<()> {
        if self.released.0.is_empty() {
            return Ok(());
        }
        let stmt = conn.prepare_cached(RELEASE).await?;
        conn.execute(&stmt, &[&self.released.0, &self.released.1])
            .await?;
        Ok(())
    }
}

/// Whether `failure` is [`INSERT_NEW`]'s refusal of a key that was not new.
pub(super) fn not_new(failure: &Failure) -> bool {
    failure.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Deletes up to `limit` keys created before `before`, skipping rows a batch
/// holds (so a purge never waits for a batch nor deadlocks with one).
pub(super) async fn purge(
    conn: &impl GenericClient,
    before: Timestamp,
    limit: i64,
) -> PgResult<u64> {
    Ok(conn
        .execute(
            "DELETE FROM idempotency_keys WHERE (client_id, key) IN (
                 SELECT client_id, key FROM idempotency_keys WHERE created_at_ns < $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&codec::ns_clamped(before), &limit],
        )
        .await?)
}
