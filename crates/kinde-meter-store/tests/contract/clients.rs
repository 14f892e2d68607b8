//! M2M clients: registration, lookup, listing, revocation and the revocation
//! feed servers poll; only hashes are stored.

use kinde_meter_store::{Client, NewClient, RevokedClient, Store};

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

async fn clients_are_created_listed_looked_up_and_revoked(b: Backend) {
    let store = open(&b).await;
    let a = store
        .create_client(new_client(
            "billing worker",
            &["create:meter_usage", "read:meter_usage"],
            0xab,
            "2024-05-01T00:00:00Z",
        ))
        .await
        .unwrap();
    let b = store
        .create_client(new_client(
            "reader",
            &["read:meter_usage"],
            1,
            "2024-05-02T00:00:00Z",
        ))
        .await
        .unwrap();

    assert_eq!(a.id, "ab".repeat(16));
    assert_eq!(a.id.len(), 32);
    assert_eq!(a.name, "billing worker");
    assert_eq!(a.scopes, ["create:meter_usage", "read:meter_usage"]);
    assert_eq!(a.created_at, t("2024-05-01T00:00:00Z"));
    assert!(!a.is_revoked());
    assert_eq!(store.list_clients().await.unwrap(), [a.clone(), b.clone()]);

    let found = store.client(&a.id).await.unwrap().unwrap();
    assert_eq!(found.client, a);
    assert_eq!(found.secret_hash, HASH);
    assert!(store.client("no-such-client").await.unwrap().is_none());
    // Debug output never shows the hash.
    assert!(!format!("{found:?}").contains(HASH));

    let revoked = store
        .revoke_client(&a.id, t("2024-05-03T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t("2024-05-03T00:00:00Z")));
    // A second revocation keeps the first time.
    let again = store
        .revoke_client(&a.id, t("2024-05-04T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(t("2024-05-03T00:00:00Z")));
    assert!(
        store
            .revoke_client("no-such-client", t("2024-05-04T00:00:00Z"))
            .await
            .unwrap()
            .is_none()
    );
    let listed = store.list_clients().await.unwrap();
    assert_eq!(listed[0].revoked_at, Some(t("2024-05-03T00:00:00Z")));
    assert_eq!(listed[1], b);
}

async fn the_revocation_feed_reports_clients_revoked_since_an_instant(b: Backend) {
    let store = open(&b).await;
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let c = store
            .create_client(new_client(
                "c",
                &["read:meter_usage"],
                i,
                "2024-05-01T00:00:00Z",
            ))
            .await
            .unwrap();
        ids.push(c.id);
    }
    assert!(
        store
            .revoked_clients_since(t("2000-01-01T00:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .revoke_client(&ids[0], t("2024-05-02T00:00:00Z"))
        .await
        .unwrap();
    store
        .revoke_client(&ids[2], t("2024-05-03T00:00:00Z"))
        .await
        .unwrap();
    let all = store
        .revoked_clients_since(jiff::Timestamp::MIN)
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            RevokedClient {
                id: ids[0].clone(),
                revoked_at: t("2024-05-02T00:00:00Z")
            },
            RevokedClient {
                id: ids[2].clone(),
                revoked_at: t("2024-05-03T00:00:00Z")
            },
        ]
    );
    // The bound is inclusive.
    let recent = store
        .revoked_clients_since(t("2024-05-03T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, ids[2]);
}

async fn only_argon2id_hashes_are_stored_and_ids_are_never_reused(b: Backend) {
    let store = open(&b).await;
    let plain = NewClient {
        secret_hash: "my-plain-secret".to_owned(),
        ..new_client("c", &["read:meter_usage"], 7, "2024-05-01T00:00:00Z")
    };
    assert!(store.create_client(plain).await.is_err());
    let first = store
        .create_client(new_client(
            "c",
            &["read:meter_usage"],
            7,
            "2024-05-01T00:00:00Z",
        ))
        .await
        .unwrap();
    // The same randomness (never in practice) is refused, and the writer goes on.
    assert!(
        store
            .create_client(new_client("d", &[], 7, "2024-05-01T00:00:00Z"))
            .await
            .is_err()
    );
    assert_eq!(
        store.list_clients().await.unwrap(),
        std::slice::from_ref(&first)
    );

    let stored = format!(
        "SELECT count(*) FROM m2m_clients WHERE id = '{}' AND secret_hash = '{HASH}'",
        first.id
    );
    assert_eq!(store.count(&stored).await, 1);
    assert_eq!(store.count("SELECT count(*) FROM m2m_clients").await, 1);
}

async fn a_second_store_sees_and_makes_revocations(b: Backend) {
    // The CLI opens the data directory (or database) while a server has it open.
    let server = open(&b).await;
    let cli = server.reopen().await;
    let client: Client = cli
        .create_client(new_client(
            "c",
            &["read:meter_usage"],
            3,
            "2024-05-01T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(
        server.client(&client.id).await.unwrap().unwrap().client,
        client
    );
    cli.revoke_client(&client.id, t("2024-05-02T00:00:00Z"))
        .await
        .unwrap();
    cli.shutdown().await;
    let feed = server
        .revoked_clients_since(t("2024-05-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].id, client.id);
}

contract_tests!(
    clients_are_created_listed_looked_up_and_revoked,
    the_revocation_feed_reports_clients_revoked_since_an_instant,
    only_argon2id_hashes_are_stored_and_ids_are_never_reused,
    a_second_store_sees_and_makes_revocations,
);
