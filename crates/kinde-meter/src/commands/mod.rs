//! One module per subcommand.

mod agreements;
mod bench;
mod clients;
mod remote;
mod serve;
mod token;
mod usage;

use std::path::Path;

use anyhow::Context;
use kinde_meter_store::{StoreConfig, sqlite::SqliteStore};

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Agreements(command) => agreements::run(command).await,
        Command::Usage(args) => usage::run(args).await,
        Command::Clients(command) => clients::run(command).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// Opens the store of a data directory for an offline command. It works whether
/// or not a server runs on the directory: SQLite's locking orders the writers.
async fn open_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    if !data_dir.join("kinde-meter.db").exists() {
        anyhow::bail!(
            "{} holds no kinde-meter database; start `kinde-meter serve --data-dir {}` once, or pass --server",
            data_dir.display(),
            data_dir.display()
        );
    }
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || SqliteStore::open(&dir, StoreConfig::default()))
        .await?
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))
}
