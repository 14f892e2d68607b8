//! One module per subcommand.

mod agreements;
mod bench;
mod clients;
mod entitlements;
mod migrate;
mod record;
mod remote;
mod serve;
mod token;
mod usage;

use std::sync::Arc;

use kinde_meter_store::{OpenError, PgSettings, Store, StoreConfig, StoreLocation};

use crate::cli::{Cli, Command, DataDirArg};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Agreements(command) => agreements::run(command).await,
        Command::Usage(args) => usage::run(args).await,
        Command::Record(args) => record::run(args).await,
        Command::Entitlements(command) => entitlements::run(command).await,
        Command::Clients(command) => clients::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
    }
}

/// Opens the store of a data directory (or of `--database-url`) for an offline
/// command. It works whether or not servers run on it: SQLite's locking orders
/// the writers of a directory, PostgreSQL's those of a database.
async fn open_store(data: &DataDirArg) -> anyhow::Result<Arc<dyn Store>> {
    let location = match &data.database_url {
        Some(url) => StoreLocation::Postgres {
            url: url.clone(),
            settings: PgSettings::default(),
        },
        None => StoreLocation::Sqlite {
            data_dir: data.data_dir.clone(),
            create: false,
        },
    };
    match kinde_meter_store::open(&location, StoreConfig::default()).await {
        Ok(store) => Ok(store),
        Err(OpenError::NoDatabase { data_dir }) => anyhow::bail!(
            "{} holds no kinde-meter database; start `kinde-meter serve --data-dir {}` once, or pass --server",
            data_dir.display(),
            data_dir.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Where an offline command's store is, for messages: the data directory, or
/// "the database" (never the URL, which may carry a password).
fn store_place(data: &DataDirArg) -> String {
    match &data.database_url {
        Some(_) => "the database".to_owned(),
        None => data.data_dir.display().to_string(),
    }
}
