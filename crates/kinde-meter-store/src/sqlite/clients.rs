//! M2M clients of the built-in issuer: registration, lookup, listing, revocation.
//!
//! Writes run on the writer thread as closure jobs (`exec`); reads on the read
//! pool. Only the secret's hash is ever written (the schema's CHECK insists on an
//! argon2id PHC string).

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row};

use super::{codec, error::OpError};
use crate::{Client, ClientWithSecret, NewClient, RevokedClient, StoreError};

/// Columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, name, scopes, created_at_ns, revoked_at_ns";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Client> {
    Ok(Client {
        id: r.get(0)?,
        name: r.get(1)?,
        scopes: serde_json::from_str(&r.get::<_, String>(2)?)
            .map_err(|e| codec::corrupt(format!("m2m_clients.scopes: {e}")))?,
        created_at: codec::timestamp(r.get(3)?)?,
        revoked_at: codec::opt_timestamp(r.get(4)?)?,
    })
}

/// Inserts the client; an id already taken (two equal `id_random`s) is refused
/// without failing the writer's batch.
pub(super) fn create(conn: &Connection, new: &NewClient) -> Result<Client, OpError<StoreError>> {
    let client = Client {
        id: Client::id_from_random(&new.id_random),
        name: new.name.clone(),
        scopes: new.scopes.clone(),
        created_at: new.now,
        revoked_at: None,
    };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO m2m_clients (id, name, scopes, secret_hash, created_at_ns)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute((
            &client.id,
            &client.name,
            serde_json::Value::from(client.scopes.clone()).to_string(),
            &new.secret_hash,
            codec::ns(new.now)?,
        ))?;
    if inserted == 0 {
        return Err(StoreError::Unavailable(format!(
            "a client with id {} already exists",
            client.id
        ))
        .into());
    }
    Ok(client)
}

/// Every client, oldest first.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<Client>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM m2m_clients ORDER BY seq"))?
        .query_map([], from_row)?
        .collect()
}

/// The client with `id`, with its secret hash.
pub(super) fn load(conn: &Connection, id: &str) -> rusqlite::Result<Option<ClientWithSecret>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, secret_hash FROM m2m_clients WHERE id = ?1"
    ))?
    .query_row([id], |r| {
        Ok(ClientWithSecret {
            client: from_row(r)?,
            secret_hash: r.get(5)?,
        })
    })
    .optional()
}

/// Revokes the client with `id` at `now` unless it already is revoked; the
/// client as it is afterwards.
pub(super) fn revoke(
    conn: &Connection,
    id: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<Client>> {
    conn.prepare_cached(
        "UPDATE m2m_clients SET revoked_at_ns = coalesce(revoked_at_ns, ?2) WHERE id = ?1",
    )?
    .execute((id, codec::ns(now)?))?;
    Ok(load(conn, id)?.map(|c| c.client))
}

/// Clients revoked at or after `since`.
pub(super) fn revoked_since(
    conn: &Connection,
    since: Timestamp,
) -> rusqlite::Result<Vec<RevokedClient>> {
    conn.prepare_cached(
        "SELECT id, revoked_at_ns FROM m2m_clients
         WHERE revoked_at_ns IS NOT NULL AND revoked_at_ns >= ?1
         ORDER BY revoked_at_ns",
    )?
    .query_map([codec::ns_clamped(since)], |r| {
        Ok(RevokedClient {
            id: r.get(0)?,
            revoked_at: codec::timestamp(r.get(1)?)?,
        })
    })?
    .collect()
}
