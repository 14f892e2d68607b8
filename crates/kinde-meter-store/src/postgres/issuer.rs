//! The built-in issuer's shared state: its signing keys and its identity (the
//! public URL), so that every server on the database signs and accepts the
//! same tokens (`docs/tokens.md`).

use deadpool_postgres::{GenericClient, Object};
use jiff::Timestamp;

use super::{
    codec,
    failure::{Failure, PgResult},
};
use crate::NewKeyPem;

/// First key of the advisory lock taken while a signing key is created ("kmik").
const KEY_LOCK_CLASS: i32 = 0x6b6d_696b;

/// The PEMs of the keys not retired, newest first.
async fn active_keys(conn: &impl GenericClient) -> PgResult<Vec<String>> {
    let rows = conn
        .query(
            "SELECT private_key_pem FROM issuer_signing_keys
             WHERE retired_at_ns IS NULL ORDER BY seq DESC",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The keys not retired, newest first; when there is none, one from `generate`
/// is stored first. Servers starting at once on an empty database serialise on
/// an advisory lock, so exactly one key is created and all use it.
pub(super) async fn load_or_create_keys(
    conn: &mut Object,
    generate: NewKeyPem,
) -> PgResult<Vec<String>> {
    let existing = active_keys(&*conn).await?;
    if !existing.is_empty() {
        return Ok(existing);
    }
    let tx = conn.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&KEY_LOCK_CLASS],
    )
    .await?;
    // Another server may have created it while this one waited for the lock.
    let existing = active_keys(&tx).await?;
    if !existing.is_empty() {
        return Ok(existing);
    }
    // RSA key generation takes a while: off the async threads.
    let pem = tokio::task::spawn_blocking(generate)
        .await
        .map_err(|e| Failure::Data(format!("key generation failed: {e}")))?
        .map_err(|e| Failure::Data(format!("key generation failed: {e}")))?;
    tx.execute(
        "INSERT INTO issuer_signing_keys (private_key_pem, created_at_ns) VALUES ($1, $2)",
        &[&pem, &codec::ns(Timestamp::now())?],
    )
    .await?;
    tx.commit().await?;
    Ok(vec![pem])
}

/// The public URL the servers last started with, if any did.
pub(super) async fn public_url(conn: &impl GenericClient) -> PgResult<Option<String>> {
    let row = conn
        .query_opt("SELECT public_url FROM issuer_identity", &[])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Records `url` as the issuer identity; returns the one it replaced, if it
/// differed.
pub(super) async fn set_public_url(
    conn: &impl GenericClient,
    url: &str,
) -> PgResult<Option<String>> {
    // The old value comes from a self-join on the row before the update.
    let row = conn
        .query_opt(
            "WITH old AS (SELECT public_url FROM issuer_identity)
             INSERT INTO issuer_identity (public_url, updated_at_ns) VALUES ($1, $2)
             ON CONFLICT (singleton) DO UPDATE
                 SET public_url = excluded.public_url, updated_at_ns = excluded.updated_at_ns
             RETURNING (SELECT public_url FROM old)",
            &[&url, &codec::ns(Timestamp::now())?],
        )
        .await?;
    let previous: Option<String> = row.and_then(|r| r.get(0));
    Ok(previous.filter(|p| p != url))
}
