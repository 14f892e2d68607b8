//! One module per subcommand.

mod agreements;
mod bench;
mod clients;
mod entitlements;
pub(crate) mod export;
pub(crate) mod import;
mod migrate;
mod record;
mod remote;
mod serve;
mod token;
mod usage;
mod webhooks;

use std::sync::Arc;

use kinde_meter_store::{OpenError, PgSettings, Store, StoreConfig, StoreLocation};

use crate::cli::{Cli, Command, DataDirArg, EntitlementsCommand};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Agreements(command) => agreements::run(command).await,
        Command::Usage(args) => usage::run(args).await,
        Command::Record(args) => record::run(args).await,
        Command::Entitlements(args) => entitlements::run(args).await,
        Command::Clients(command) => clients::run(command).await,
        Command::Webhooks(command) => webhooks::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Export(args) => export::run(args).await,
    }
}

/// An outcome that is neither success nor an error: the command has printed its
/// answer and exits with this status, without a message (`entitlements check`
/// that is not allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

/// The exit status of `cli` failing with an error: 1, but 2 for
/// `entitlements check`, whose 1 means "not allowed".
pub fn error_status(cli: &Cli) -> u8 {
    match &cli.command {
        Command::Entitlements(args)
            if matches!(args.command, Some(EntitlementsCommand::Check(_))) =>
        {
            entitlements::CHECK_ERROR
        }
        _ => 1,
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
