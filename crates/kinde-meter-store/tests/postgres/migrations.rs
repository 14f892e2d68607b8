//! Migrations applied by several servers (and `kinde-meter migrate`) at once.

use kinde_meter_store::{
    StoreConfig,
    postgres::{CURRENT_VERSION, PgSettings, PgStore, scratch::ScratchSchema},
};

use crate::common::*;

/// Four servers and a `migrate` start on a fresh database at the same moment:
/// all succeed, every migration is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_raced_by_several_stores_are_applied_once() {
    let Some(url) = database_url() else {
        return skip("migrations_raced_by_several_stores_are_applied_once");
    };
    let schema = ScratchSchema::create(&url).await.unwrap();
    // A schema that does not exist yet: the migrations create it too.
    let fresh = format!("{}_new", schema.name());
    let settings = PgSettings {
        schema: Some(fresh.clone()),
        ..schema.settings()
    };
    let connect = || PgStore::connect(&url, settings.clone(), StoreConfig::default());
    let (a, b, c, d, applied) = tokio::join!(
        connect(),
        connect(),
        connect(),
        connect(),
        PgStore::migrate(&url, &settings)
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let applied = applied.unwrap();
    assert!(applied.len() <= CURRENT_VERSION as usize, "{applied:?}");

    let conn = schema.connect().await.unwrap();
    let row = conn
        .query_one(
            &format!("SELECT count(*), max(version) FROM {fresh}.schema_migrations"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), i64::from(CURRENT_VERSION));
    assert_eq!(row.get::<_, i32>(1), CURRENT_VERSION);
    // Up to date: a later migrate applies nothing.
    assert_eq!(
        PgStore::migrate(&url, &settings).await.unwrap(),
        Vec::<i32>::new()
    );
    for store in &stores {
        kinde_meter_store::Store::shutdown(store).await;
    }
    drop(stores);
    conn.batch_execute(&format!("DROP SCHEMA {fresh} CASCADE"))
        .await
        .unwrap();
}
