//! M2M clients on SQLite: the migration that added them (the rest of the
//! clients' contract is in `contract/clients.rs`, for every backend).

use kinde_meter_store::{NewClient, Store};

use crate::common::*;

/// A well-formed argon2id PHC string (the store only stores it).
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

fn new_client(name: &str, scopes: &[&str], random: u8, at: &str) -> NewClient {
    NewClient {
        name: name.to_owned(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        secret_hash: HASH.to_owned(),
        now: t(at),
        id_random: [random; 16],
    }
}

#[tokio::test]
async fn a_version_1_database_gains_the_clients_table() {
    let store = open(&Backend::Sqlite).await;
    store.shutdown().await;
    // Back to what a version-1 kinde-meter left behind.
    store.execute("DROP TABLE m2m_clients").await;
    store
        .execute("DELETE FROM schema_migrations WHERE version > 1")
        .await;
    let store = store.reopen().await;
    assert!(store.list_clients().await.unwrap().is_empty());
    store
        .create_client(new_client(
            "c",
            &["read:meter_usage"],
            1,
            "2024-05-01T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .count("SELECT max(version) FROM schema_migrations")
            .await,
        2
    );
}
