//! The command line (SPEC §6). Every flag can also be given as an environment
//! variable `KINDE_METER_<FLAG>`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// Kinde's billing meter usage API, self-hosted.
#[derive(Debug, Parser)]
#[command(name = "kinde-meter", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (default: 127.0.0.1:8080, SQLite in ./kinde-meter-data, demo catalog).
    Serve(ServeArgs),
    /// Print a token signed with the data directory's key (and nothing else).
    Token(TokenArgs),
    /// Create or list billing agreements.
    #[command(subcommand)]
    Agreements(AgreementsCommand),
    /// Read the usage of an agreement's metered features for one period.
    Usage(UsageArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KINDE_METER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The server's public URL: the issuer of its tokens (default: http://LISTEN_ADDRESS).
    #[arg(long, env = "KINDE_METER_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Plan catalog (TOML); default: the demo catalog.
    #[arg(long, env = "KINDE_METER_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Another audience to accept besides PUBLIC_URL/api (repeatable).
    #[arg(long = "audience", env = "KINDE_METER_AUDIENCE", value_delimiter = ',')]
    pub audiences: Vec<String>,
    /// Seconds after a period's end during which it still takes usage.
    #[arg(long, env = "KINDE_METER_GRACE_SECONDS", default_value_t = 0)]
    pub grace_seconds: u64,
    /// Submissions that may wait for the writer before answering 503.
    #[arg(long, env = "KINDE_METER_QUEUE_CAPACITY", default_value_t = 4096)]
    pub queue_capacity: usize,
    /// PostgreSQL URL (not yet supported: see issue 5).
    #[arg(long, env = "KINDE_METER_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory (SQLite database, signing key, issuer identity).
    #[arg(long, env = "KINDE_METER_DATA_DIR", default_value = "kinde-meter-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Space-separated scopes.
    #[arg(
        long,
        env = "KINDE_METER_SCOPE",
        default_value = "create:meter_usage read:meter_usage create:billing_agreements read:billing_agreements"
    )]
    pub scope: String,
    /// The token's client id (`azp`).
    #[arg(long, env = "KINDE_METER_CLIENT_ID", default_value = "kinde-meter-cli")]
    pub client_id: String,
    /// Issuer identity to sign for (default: the one the server in the data dir last started with).
    #[arg(long, env = "KINDE_METER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, env = "KINDE_METER_LIFETIME", default_value_t = 3600)]
    pub lifetime: u64,
}

/// Where a client command acts: a running server, or the data directory directly.
#[derive(Debug, Args)]
pub struct Target {
    /// URL of a running server (with --token); without it the data directory is used directly.
    #[arg(long, env = "KINDE_METER_SERVER", requires = "token")]
    pub server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, env = "KINDE_METER_TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum AgreementsCommand {
    /// Create an agreement (ending the customer's other active ones); prints its id.
    Create {
        #[arg(long)]
        customer_id: String,
        #[arg(long)]
        plan_code: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a customer's agreements, newest first, as JSON.
    List {
        #[arg(long)]
        customer_id: String,
        #[arg(long)]
        feature_code: Option<String>,
        #[arg(long, default_value_t = 10)]
        page_size: usize,
        #[arg(long)]
        starting_after: Option<String>,
        #[arg(long)]
        ending_before: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The agreement.
    #[arg(long)]
    pub agreement_id: String,
    /// One feature (default: every metered feature).
    #[arg(long)]
    pub feature_code: Option<String>,
    /// An RFC 3339 instant in the period to read (default: now).
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub target: Target,
}
