//! `kinde-meter token`: prints a token signed with the data directory's key, for
//! the identity the server in that directory last started with.

use jiff::{SignedDuration, Timestamp};
use kinde_meter_server::auth::mint_for_data_dir;

use crate::cli::TokenArgs;

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let scopes: Vec<String> = args.scope.split_whitespace().map(str::to_owned).collect();
    let lifetime = SignedDuration::from_secs(i64::try_from(args.lifetime)?);
    let token = mint_for_data_dir(
        &args.data.data_dir,
        &scopes,
        Some(&args.client_id),
        args.public_url.as_deref(),
        lifetime,
        Timestamp::now(),
    )?;
    println!("{token}");
    Ok(())
}
