//! M2M clients of the built-in issuer: registration, lookup, listing,
//! revocation. Shared by every server on the database, so a client registered
//! or revoked through one is seen by all. Only the secret's hash is ever
//! written (the schema's CHECK insists on an argon2id PHC string).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;

use super::{
    codec,
    failure::{Failure, OpError, PgResult},
};
use crate::{Client, ClientWithSecret, NewClient, RevokedClient, StoreError};

/// Columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, name, scopes, created_at_ns, revoked_at_ns";

fn from_row(r: &Row) -> PgResult<Client> {
    Ok(Client {
        id: r.get(0),
        name: r.get(1),
        scopes: serde_json::from_str(r.get::<_, &str>(2))
            .map_err(|e| Failure::Data(format!("m2m_clients.scopes: {e}")))?,
        created_at: codec::timestamp(r.get(3))?,
        revoked_at: codec::opt_timestamp(r.get(4))?,
    })
}

/// Inserts the client; an id already taken is refused.
pub(super) async fn create(
    conn: &impl GenericClient,
    new: &NewClient,
) -> Result<Client, OpError<StoreError>> {
    let client = Client {
        id: Client::id_from_random(&new.id_random),
        name: new.name.clone(),
        scopes: new.scopes.clone(),
        created_at: new.now,
        revoked_at: None,
    };
    let inserted = conn
        .execute(
            "INSERT INTO m2m_clients (id, name, scopes, secret_hash, created_at_ns)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[
                &client.id,
                &client.name,
                &serde_json::Value::from(client.scopes.clone()).to_string(),
                &new.secret_hash,
                &codec::ns(new.now)?,
            ],
        )
        .await?;
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
pub(super) async fn list(conn: &impl GenericClient) -> PgResult<Vec<Client>> {
    let stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM m2m_clients ORDER BY seq"))
        .await?;
    conn.query(&stmt, &[]).await?.iter().map(from_row).collect()
}

/// The client with `id`, with its secret hash.
pub(super) async fn load(
    conn: &impl GenericClient,
    id: &str,
) -> PgResult<Option<ClientWithSecret>> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, secret_hash FROM m2m_clients WHERE id = $1"
        ))
        .await?;
    conn.query_opt(&stmt, &[&id])
        .await?
        .map(|r| {
            Ok(ClientWithSecret {
                client: from_row(&r)?,
                secret_hash: r.get(5),
            })
        })
        .transpose()
}

/// Revokes the client with `id` at `now` unless it already is revoked; the
/// client as it is afterwards. One statement, so it is atomic on its own.
pub(super) async fn revoke(
    conn: &impl GenericClient,
    id: &str,
    now: Timestamp,
) -> PgResult<Option<Client>> {
    let row = conn
        .query_opt(
            &format!(
                "UPDATE m2m_clients SET revoked_at_ns = coalesce(revoked_at_ns, $2)
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &codec::ns(now)?],
        )
        .await?;
    row.map(|r| from_row(&r)).transpose()
}

/// Clients revoked at or after `since`.
pub(super) async fn revoked_since(
    conn: &impl GenericClient,
    since: Timestamp,
) -> PgResult<Vec<RevokedClient>> {
    let stmt = conn
        .prepare_cached(
            "SELECT id, revoked_at_ns FROM m2m_clients
             WHERE revoked_at_ns IS NOT NULL AND revoked_at_ns >= $1
             ORDER BY revoked_at_ns",
        )
        .await?;
    conn.query(&stmt, &[&codec::ns_clamped(since)])
        .await?
        .iter()
        .map(|r| {
            Ok(RevokedClient {
                id: r.get(0),
                revoked_at: codec::timestamp(r.get(1))?,
            })
        })
        .collect()
}
