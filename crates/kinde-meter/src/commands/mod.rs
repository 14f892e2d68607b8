//! One module per subcommand.

mod agreements;
mod bench;
mod clients;
mod migrate;
mod record;
mod remote;
mod serve;
mod token;
mod usage;

use anyhow::Context;
use kinde_meter_store::{
    Store, StoreConfig,
    postgres::{PgSettings, PgStore},
    sqlite::SqliteStore,
};

use crate::cli::{Cli, Command, DataDirArg};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Agreements(command) => agreements::run(command).await,
        Command::Usage(args) => usage::run(args).await,
        Command::Record(args) => record::run(args).await,
        Command::Clients(command) => clients::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
    }
}

/// Opens the store of a data directory (or of `--database-url`) for an offline
/// command. It works whether or not servers run on it: SQLite's locking orders
/// the writers of a directory, PostgreSQL's those of a database.
async fn open_store(data: &DataDirArg) -> anyhow::Result<Box<dyn Store>> {
    if let Some(url) = &data.database_url {
        let store = PgStore::connect(url, PgSettings::default(), StoreConfig::default())
            .await
            .context("cannot open the PostgreSQL store")?;
        return Ok(Box::new(store));
    }
    let data_dir = &data.data_dir;
    if !data_dir.join("kinde-meter.db").exists() {
        anyhow::bail!(
            "{} holds no kinde-meter database; start `kinde-meter serve --data-dir {}` once, or pass --server",
            data_dir.display(),
            data_dir.display()
        );
    }
    let dir = data_dir.to_owned();
    let store =
        tokio::task::spawn_blocking(move || SqliteStore::open(&dir, StoreConfig::default()))
            .await?
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    Ok(Box::new(store))
}

/// Where an offline command's store is, for messages: the data directory, or
/// "the database" (never the URL, which may carry a password).
fn store_place(data: &DataDirArg) -> String {
    match &data.database_url {
        Some(_) => "the database".to_owned(),
        None => data.data_dir.display().to_string(),
    }
}
