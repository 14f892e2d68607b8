//! `kinde-meter token`: prints a token signed with the data directory's key, for
//! the identity the server in that directory last started with; with
//! `--database-url`, with the key and identity the servers on that database share.

use jiff::{SignedDuration, Timestamp};
use kinde_meter_server::{auth::mint_for_data_dir, storage::mint_for_database};
use kinde_meter_store::PgSettings;
use kinde_meter_wire::Scope;

use crate::cli::TokenArgs;

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    // Each one a scope of the API: a typo would make a token no route accepts.
    let scopes: Vec<String> = args
        .scope
        .split_whitespace()
        .map(|s| s.parse::<Scope>().map(|s| s.to_string()))
        .collect::<Result<_, _>>()?;
    let lifetime = SignedDuration::from_secs(i64::try_from(args.lifetime)?);
    let token = match &args.data.database_url {
        Some(url) => {
            mint_for_database(
                url,
                &PgSettings::default(),
                &scopes,
                Some(&args.client_id),
                args.public_url.as_deref(),
                lifetime,
                Timestamp::now(),
            )
            .await?
        }
        None => {
            // Key creation and file access: off the async threads.
            tokio::task::spawn_blocking(move || {
                mint_for_data_dir(
                    &args.data.data_dir,
                    &scopes,
                    Some(&args.client_id),
                    args.public_url.as_deref(),
                    lifetime,
                    Timestamp::now(),
                )
            })
            .await??
        }
    };
    println!("{token}");
    Ok(())
}
