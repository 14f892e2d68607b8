//! `kinde-meter migrate --database-url URL`: brings a PostgreSQL database to the
//! schema this build writes. Servers do the same at start; both take the
//! migration lock, so running it beside starting servers is safe.

use crate::cli::MigrateArgs;

#[cfg(feature = "postgres")]
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use kinde_meter_store::postgres::{CURRENT_VERSION, PgStore};

    let applied = PgStore::migrate(&args.database_url, &Default::default())
        .await
        .context("cannot migrate the database")?;
    if applied.is_empty() {
        println!("the database is at schema version {CURRENT_VERSION}: nothing to apply");
    } else {
        let versions: Vec<String> = applied.iter().map(i32::to_string).collect();
        println!(
            "applied migrations {}; the database is at schema version {CURRENT_VERSION}",
            versions.join(", ")
        );
    }
    Ok(())
}

#[cfg(not(feature = "postgres"))]
pub async fn run(_args: MigrateArgs) -> anyhow::Result<()> {
    Err(kinde_meter_store::OpenError::NotCompiled {
        backend: "PostgreSQL",
        feature: "postgres",
    }
    .into())
}
