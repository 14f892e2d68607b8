//! The command line (docs/operations.md#starting; every flag in docs/cli.md,
//! generated from these types by `cli_reference.rs`). Every flag of `serve`
//! can also be given as an environment variable `KINDE_METER_<FLAG>`, and so
//! can the flags that say where and as whom the other commands act
//! (`--data-dir`, `--database-url`, `--server`, the credentials); the tests in
//! `cli_reference.rs` hold both.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Record one usage value on a running server (ours or Kinde) and print its answer.
    Record(RecordArgs),
    /// List a customer's entitlements, or (`check`) whether they may use more of
    /// a feature now; prints the JSON answer.
    Entitlements(EntitlementsArgs),
    /// Register, list or revoke M2M clients (for POST /oauth2/token).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Subscribe endpoints to billing events, list the webhooks (with their
    /// deliveries' state on a data directory) or delete one.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Run the load benchmark: every hot path (--mode: a bare axum's /healthz and
    /// ours first, single and batch records, usage reads, entitlement checks, a mix)
    /// at each --connections, closed loop and optionally at a fixed --rate, with
    /// throughput, latency percentiles, answers by status, CPU per request, the
    /// server's peak RSS, each figure's ratio to /healthz from the same run, and a
    /// check that the stored usage equals what was acknowledged.
    Bench(BenchArgs),
    /// Apply the database migrations a PostgreSQL database lacks (servers also do
    /// this at start; safe while they run or start).
    Migrate(MigrateArgs),
    /// Import usage records from a CSV or NDJSON file through the batch endpoint,
    /// with progress, a reject file, and keys that make a re-run count nothing twice.
    Import(crate::commands::import::ImportArgs),
    /// Export every agreement's usage of each metered feature for one billing
    /// period, with its amount where the catalog has a unit price (CSV or NDJSON).
    Export(crate::commands::export::ExportArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KINDE_METER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The server's public URL: the issuer of its tokens (default: http://LISTEN_ADDRESS,
    /// https:// with --tls-cert).
    #[arg(long, env = "KINDE_METER_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Plan catalog (TOML); default: the demo catalog.
    #[arg(long, env = "KINDE_METER_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Another audience to accept besides PUBLIC_URL/api (repeatable); with
    /// --issuer, the audiences to accept (default ISSUER/api).
    #[arg(long = "audience", env = "KINDE_METER_AUDIENCE", value_delimiter = ',')]
    pub audiences: Vec<String>,
    /// Accept the tokens of this external issuer (`https://SUBDOMAIN.kinde.com`)
    /// instead of our own, verified with its JWKS.
    #[arg(long, env = "KINDE_METER_ISSUER")]
    pub issuer: Option<String>,
    /// Lifetime in seconds of the tokens POST /oauth2/token issues.
    #[arg(long, env = "KINDE_METER_TOKEN_LIFETIME", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub token_lifetime: u64,
    /// Seconds after a period's end during which it still takes usage.
    #[arg(long, env = "KINDE_METER_GRACE_SECONDS", default_value_t = 0)]
    pub grace_seconds: u64,
    /// Submissions that may wait for the writer before answering 503.
    #[arg(long, env = "KINDE_METER_QUEUE_CAPACITY", default_value_t = 4096)]
    pub queue_capacity: usize,
    /// Requests per second per client (the token's azp), a token bucket; 0: no limit.
    #[arg(long, env = "KINDE_METER_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Bucket size of the per-client rate limit: requests a client may send at once.
    #[arg(long, env = "KINDE_METER_BURST", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// One client's own limit, CLIENT=RATE or CLIENT=RATE:BURST (burst default 2 x RATE;
    /// RATE 0: no limit); repeatable.
    #[arg(long = "client-rate-limit", env = "KINDE_METER_CLIENT_RATE_LIMIT", value_delimiter = ',', value_parser = kinde_meter_server::rate_limit::parse_client_limit)]
    pub client_rate_limits: Vec<(String, kinde_meter_server::rate_limit::Limit)>,
    /// Requests with invalid credentials per source address, RATE:BURST (RATE per second);
    /// past the burst the address gets 429 before its tokens are checked. 0: no limit.
    #[arg(long, env = "KINDE_METER_AUTH_FAILURE_LIMIT", default_value = "10:100", value_parser = kinde_meter_server::rate_limit::Limit::parse)]
    pub auth_failure_limit: kinde_meter_server::rate_limit::Limit,
    /// Share the per-client rate limit buckets with every server using this Redis
    /// (redis://HOST:PORT, or redis://USER:PASSWORD@HOST:PORT/DB). While Redis is
    /// unreachable requests are let through (fail-open) and a warning is logged.
    /// Without it each server limits on its own.
    #[arg(long, env = "KINDE_METER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys of the rate limit buckets (one key per client id).
    #[arg(long, env = "KINDE_METER_REDIS_KEY_PREFIX", default_value = kinde_meter_server::rate_limit::redis::DEFAULT_KEY_PREFIX, requires = "redis_url")]
    pub redis_key_prefix: String,
    /// Seconds a client has to send a request's headers (also the idle keep-alive
    /// timeout and the TLS handshake limit).
    #[arg(long, env = "KINDE_METER_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,
    /// Seconds a client has to send a request's body after its headers.
    #[arg(long, env = "KINDE_METER_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "KINDE_METER_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "KINDE_METER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KINDE_METER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Let webhooks point at loopback, private, link-local and other non-public
    /// addresses (refused by default: docs/webhooks.md#endpoints).
    #[arg(long, env = "KINDE_METER_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
    pub webhook_allow_private_networks: bool,
    /// At most one customer.meter_usage_updated event per agreement and feature
    /// per this many seconds.
    #[arg(long, env = "KINDE_METER_WEBHOOK_USAGE_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub webhook_usage_interval: u64,
    /// Log lines on stderr: json (one object per line) or pretty (default:
    /// pretty when stderr is a terminal, json otherwise); levels from RUST_LOG.
    #[arg(long, env = "KINDE_METER_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Where the state is: a data directory (SQLite, signing key, issuer identity)
/// or, with `--database-url`, a PostgreSQL database shared by several servers.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory (SQLite database, signing key, issuer identity); unused
    /// with --database-url.
    #[arg(long, env = "KINDE_METER_DATA_DIR", default_value = "kinde-meter-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the data directory (postgres://USER@HOST:PORT/DB):
    /// agreements, usage, M2M clients and the issuer's keys live in the database,
    /// shared by every server started with it.
    #[arg(long, env = "KINDE_METER_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// The PostgreSQL connection pool of a server.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Most PostgreSQL connections this server holds for reads and other work; the usage writer holds 2 more of its own, and checks and usage reads share one per two CPUs (1 to 8) more.
    #[arg(long, env = "KINDE_METER_DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
    /// Seconds a database operation may take (waiting for a connection included)
    /// before it fails with 503; also the sessions' statement_timeout.
    #[arg(long, env = "KINDE_METER_DATABASE_TIMEOUT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_timeout: u64,
    /// Seconds connecting to the database may take (unless the URL's
    /// connect_timeout says otherwise).
    #[arg(long, env = "KINDE_METER_DATABASE_CONNECT_TIMEOUT", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_connect_timeout: u64,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database to migrate.
    #[arg(long, env = "KINDE_METER_DATABASE_URL")]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Space-separated scopes.
    #[arg(
        long,
        env = "KINDE_METER_SCOPE",
        default_value = "create:meter_usage read:meter_usage create:billing_agreements read:billing_agreements read:billing_entitlements"
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
    /// URL of a running server, kinde-meter or https://SUBDOMAIN.kinde.com (with
    /// --token or --client-id); without it the data directory is used directly.
    #[arg(long, env = "KINDE_METER_SERVER", requires = "credentials")]
    pub server: Option<String>,
    #[command(flatten)]
    pub credentials: Credentials,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// How a client command authenticates to a server: a bearer token, or an M2M
/// application's client credentials (the command gets tokens from
/// SERVER/oauth2/token itself, as the official SDKs do).
///
/// A flag given on the command line beats the environment: `--token` with
/// `KINDE_METER_CLIENT_ID` and `KINDE_METER_CLIENT_SECRET` set uses the token,
/// and `--client-id` with `KINDE_METER_TOKEN` set uses the client credentials
/// (see [`Credentials::settle`]). Both given the same way is an error.
#[derive(Debug)]
pub struct Credentials {
    /// `--token`, if it is the one to use.
    pub token: Option<String>,
    /// `--client-id`, if client credentials are the ones to use (then with a secret).
    pub client_id: Option<String>,
    /// `--client-secret` of `client_id`.
    pub client_secret: Option<String>,
    /// `--token-audience` for `client_id`'s tokens.
    pub token_audience: Option<String>,
}

/// The flags of [`Credentials`] as clap parses them, before
/// [`Credentials::settle`] decides which to use.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("credentials").multiple(true).args(["token", "client_id"])))]
struct CredentialFlags {
    /// Bearer token for the server (as a flag, it wins over client credentials
    /// from the environment).
    #[arg(long, env = "KINDE_METER_TOKEN")]
    token: Option<String>,
    /// M2M client id (with --client-secret), instead of --token (as a flag, it
    /// wins over KINDE_METER_TOKEN).
    #[arg(long, env = "KINDE_METER_CLIENT_ID")]
    client_id: Option<String>,
    /// M2M client secret of --client-id.
    #[arg(long, env = "KINDE_METER_CLIENT_SECRET")]
    client_secret: Option<String>,
    /// The audience to ask tokens for (default: SERVER/api, right for Kinde and for
    /// a kinde-meter server whose public URL is SERVER).
    #[arg(long, env = "KINDE_METER_TOKEN_AUDIENCE")]
    token_audience: Option<String>,
}

impl Args for Credentials {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        CredentialFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        CredentialFlags::augment_args_for_update(cmd)
    }
}

impl clap::FromArgMatches for Credentials {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = CredentialFlags::from_arg_matches(matches)?;
        Credentials::settle(flags, |id| matches.value_source(id))
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Credentials {
    /// Decides which of the credentials `flags` to use, `source` telling
    /// where each came from (clap's [`ValueSource`](clap::parser::ValueSource)).
    ///
    /// - A token and a client id given the same way (both flags, or both
    ///   environment variables) conflict; given different ways, the flag wins
    ///   and the environment's is dropped, with the secret and audience that
    ///   came with it.
    /// - A client id needs a secret. A secret or an audience without a client
    ///   id is an error when given as a flag and ignored when it comes from the
    ///   environment (left over from another command's setup).
    fn settle(
        flags: CredentialFlags,
        source: impl Fn(&str) -> Option<clap::parser::ValueSource>,
    ) -> Result<Credentials, clap::Error> {
        use clap::{error::ErrorKind, parser::ValueSource};
        let CredentialFlags {
            mut token,
            mut client_id,
            mut client_secret,
            mut token_audience,
        } = flags;
        match (source("token"), source("client_id")) {
            (Some(by_token), Some(by_client)) if by_token == by_client => {
                return Err(clap::Error::raw(
                    ErrorKind::ArgumentConflict,
                    if by_token == ValueSource::EnvVariable {
                        "KINDE_METER_TOKEN and KINDE_METER_CLIENT_ID are both set: \
                         give --token or --client-id to say which to use"
                    } else {
                        "the argument '--token <TOKEN>' cannot be used with \
                         '--client-id <CLIENT_ID>'"
                    },
                ));
            }
            (Some(ValueSource::CommandLine), Some(_)) => client_id = None,
            (Some(_), Some(ValueSource::CommandLine)) => token = None,
            _ => {}
        }
        if client_id.is_none() {
            for (value, id, flag) in [
                (&mut client_secret, "client_secret", "--client-secret"),
                (&mut token_audience, "token_audience", "--token-audience"),
            ] {
                if value.is_none() {
                    continue;
                }
                if source(id) != Some(ValueSource::EnvVariable) {
                    return Err(clap::Error::raw(
                        ErrorKind::MissingRequiredArgument,
                        format!("{flag} needs --client-id (or KINDE_METER_CLIENT_ID)"),
                    ));
                }
                *value = None;
            }
        } else if client_secret.is_none() {
            return Err(clap::Error::raw(
                ErrorKind::MissingRequiredArgument,
                "--client-id needs --client-secret (or KINDE_METER_CLIENT_SECRET)",
            ));
        }
        Ok(Credentials {
            token,
            client_id,
            client_secret,
            token_audience,
        })
    }

    /// The SDK's authentication for these flags.
    pub fn auth(&self) -> kinde_sdk::Auth {
        match (&self.token, &self.client_id, &self.client_secret) {
            (Some(token), _, _) => kinde_sdk::Auth::AccessToken(token.clone()),
            (None, Some(id), Some(secret)) => kinde_sdk::Auth::ClientCredentials {
                client_id: id.clone(),
                client_secret: secret.clone(),
                audience: self.token_audience.clone(),
            },
            _ => kinde_sdk::Auth::None,
        }
    }
}

/// `kinde-meter record`: one usage record sent through kinde-sdk.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The customer agreement to record against.
    #[arg(long)]
    pub agreement_id: String,
    /// The metered feature's code, e.g. api_calls.
    #[arg(long)]
    pub feature_code: String,
    /// The value: a non-negative decimal, e.g. 150 or 1.5 (the server checks it).
    #[arg(long, allow_hyphen_values = true)]
    pub value: String,
    /// Replace the usage with the value (meter_type_code absolute) instead of adding it.
    #[arg(long)]
    pub absolute: bool,
    /// When the usage happened, RFC 3339 (default: when the server receives it).
    #[arg(long)]
    pub timestamp: Option<String>,
    /// The Idempotency-Key (default: a random one). Retries of this command's
    /// request reuse it; pass your own to make re-running the command safe too.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// URL of the server: kinde-meter, or https://SUBDOMAIN.kinde.com.
    #[arg(long, env = "KINDE_METER_SERVER", requires = "credentials")]
    pub server: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// `kinde-meter entitlements`: a customer's entitlements (`GET
/// /api/v1/billing/entitlements`), or with `check` the live usage check, on a
/// data directory / database or through kinde-sdk on a server.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Without a subcommand: list. `check` exits 0 when allowed, 1 when not \
                  allowed, 2 on an error."
)]
pub struct EntitlementsArgs {
    #[command(subcommand)]
    pub command: Option<EntitlementsCommand>,
    #[command(flatten)]
    pub list: EntitlementsListArgs,
}

#[derive(Debug, Subcommand)]
pub enum EntitlementsCommand {
    /// List the entitlements of the customer's active plan, with this period's
    /// usage of metered features (kinde-meter), as JSON (the same as without a
    /// subcommand).
    List(EntitlementsListArgs),
    /// May the customer use QUANTITY (default 1) more of a feature now? Prints
    /// the answer as JSON and exits 0 when allowed, 1 when not allowed, 2 on an
    /// error (kinde-meter only).
    Check(EntitlementsCheckArgs),
}

#[derive(Debug, Args)]
pub struct EntitlementsListArgs {
    /// The billing customer.
    #[arg(long, required = true)]
    pub customer_id: Option<String>,
    /// Entitlements per page (default 10, at most 500).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// The page after the entitlement with this id.
    #[arg(long, conflicts_with = "ending_before")]
    pub starting_after: Option<String>,
    /// The page before the entitlement with this id.
    #[arg(long)]
    pub ending_before: Option<String>,
    /// Shown as entitlement_limit_max where the limit is null (unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub max_value: Option<i64>,
    /// Add the customer's active plan (`expand=plans`).
    #[arg(long)]
    pub expand_plans: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct EntitlementsCheckArgs {
    /// The billing customer.
    #[arg(long)]
    pub customer_id: String,
    /// The feature's code, e.g. api_calls.
    #[arg(long)]
    pub feature_code: String,
    /// How much more: a meter value, a non-negative decimal (default 1).
    #[arg(long, allow_hyphen_values = true)]
    pub quantity: Option<String>,
    #[command(flatten)]
    pub target: Target,
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

/// `kinde-meter bench` (docs/design.md#benchmark, BENCHMARKS.md).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Requests to send in each run (one usage record each, except in `batch`,
    /// where each carries --batch-size records).
    #[arg(long, env = "KINDE_METER_BENCH_REQUESTS", default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent keep-alive connections, comma-separated or repeated (e.g.
    /// 8,64,256): every mode runs at each, `axum` and `healthz` first.
    #[arg(
        long,
        env = "KINDE_METER_BENCH_CONNECTIONS",
        value_delimiter = ',',
        default_value = "64"
    )]
    pub connections: Vec<usize>,
    /// Agreements (one customer each) the requests of a run are spread over;
    /// every run makes its own (or uses --customers').
    #[arg(long, env = "KINDE_METER_BENCH_AGREEMENTS", default_value_t = 16)]
    pub agreements: usize,
    /// Plan of the benchmark's agreements.
    #[arg(long, env = "KINDE_METER_BENCH_PLAN_CODE", default_value = "pro")]
    pub plan_code: String,
    /// Metered feature the records are for.
    #[arg(
        long,
        env = "KINDE_METER_BENCH_FEATURE_CODE",
        default_value = "api_calls"
    )]
    pub feature_code: String,
    /// What to measure, comma-separated or repeated: `axum` (GET /healthz of a bare
    /// axum hello-world on the same HTTP/1.1 server settings, in this process:
    /// healthz's ceiling, always run first), `healthz` (GET /healthz, the HTTP path
    /// alone: the others' same-run baseline, always run next), `single`
    /// (POST one usage record), `single-keyed` (the same, each with an
    /// Idempotency-Key of its own, as kinde-sdk sends them; not in the
    /// default), `batch` (POST /api/v1/billing/meter_usage/batch,
    /// --batch-size records each), `read` (GET /api/v1/billing/meter_usage),
    /// `check` (GET /api/v1/billing/entitlements/check), `mixed` (of every 20
    /// requests 16 single records, 3 reads, 1 check), `single-enforced` (single
    /// records to a feature whose limit is enforced but never reached:
    /// --enforced-feature-code; not in the default), `ceiling` (single records
    /// to the least durable write, in this process: a bare axum, a map of
    /// verified tokens, serde, one writer committing all queued records into
    /// one SQLite table with synchronous=FULL, 200 after COMMIT; single's
    /// ceiling, not in the default), `check-ceiling` (check's requests to the
    /// least read that answers them, in this process: a bare axum, a map of
    /// verified tokens, one SQLite point read of the answer's row, serde;
    /// check's ceiling, not in the default).
    #[arg(
        long = "mode",
        env = "KINDE_METER_BENCH_MODE",
        value_enum,
        value_delimiter = ',',
        default_value = "healthz,single,batch,read,check,mixed"
    )]
    pub modes: Vec<BenchMode>,
    /// The feature `single-enforced` records to. The in-process server adds it to
    /// the plan: a copy of --feature-code with enforce_limit and a limit_max of
    /// 10^18 (so the limit is decided on every record and refuses none); an
    /// external server must serve such a feature.
    #[arg(
        long,
        env = "KINDE_METER_BENCH_ENFORCED_FEATURE_CODE",
        default_value = "api_calls_enforced"
    )]
    pub enforced_feature_code: String,
    /// Records per request of `--mode batch` (the server takes up to 100).
    #[arg(long, env = "KINDE_METER_BENCH_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Where the in-process server's fresh data directory is made (default: the
    /// system's temporary directory). Put it on the disk you want to measure.
    #[arg(long, env = "KINDE_METER_BENCH_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Benchmark a running server (SQLite or PostgreSQL) instead of an in-process
    /// one, with --token or --client-id/--client-secret granting create:meter_usage,
    /// read:meter_usage, create:billing_agreements, read:billing_agreements and
    /// read:billing_entitlements. Start it with --rate-limit 0, or its 429s show in
    /// the answers. Plain http:// only (the load generator speaks no TLS). The
    /// `axum` runs' bare axum still runs in this process, on this machine.
    #[arg(long, env = "KINDE_METER_SERVER", requires = "credentials")]
    pub server: Option<String>,
    #[command(flatten)]
    pub credentials: Credentials,
    /// The process id of --server when it runs on this machine: its peak RSS
    /// (VmHWM) and CPU time per request are then reported too.
    #[arg(long, env = "KINDE_METER_BENCH_SERVER_PID", requires = "server")]
    pub server_pid: Option<u32>,
    /// Open-loop runs too: after the closed-loop run of each mode given with
    /// --mode, the same mode at a fixed rate, N requests per second over all
    /// connections, or `half` (half the requests per second its closed-loop run
    /// just measured). Requests are sent at fixed intervals and each latency
    /// runs from the request's intended send time (no coordinated omission).
    #[arg(long, env = "KINDE_METER_BENCH_RATE", value_parser = BenchRate::parse)]
    pub rate: Option<BenchRate>,
    /// Use the agreements of customers PREFIX_0, PREFIX_1, … (--agreements of
    /// them, made where missing) in every run instead of new ones per run: to
    /// read usage that an earlier invocation stored (e.g. 10 M records written by
    /// `--mode batch --customers PREFIX`). Each run then checks the usage it
    /// added.
    #[arg(long, env = "KINDE_METER_BENCH_CUSTOMERS")]
    pub customers: Option<String>,
    /// Print one JSON document instead of text (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// `--rate`: the pace of the open-loop runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BenchRate {
    /// Requests per second over all connections.
    PerSecond(f64),
    /// Half the requests per second of the same mode's closed-loop run.
    Half,
}

impl BenchRate {
    fn parse(text: &str) -> Result<BenchRate, String> {
        if text == "half" {
            return Ok(BenchRate::Half);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(BenchRate::PerSecond(rate)),
            _ => Err("expected requests per second (a number above 0) or `half`".to_owned()),
        }
    }
}

/// What `kinde-meter bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// POST /api/v1/billing/meter_usage, one record per request.
    Single,
    /// The same, to a feature with an enforced limit that no record reaches.
    SingleEnforced,
    /// The same as `single`, each request with an `Idempotency-Key` of its
    /// own (as kinde-sdk sends them).
    SingleKeyed,
    /// GET /api/v1/billing/entitlements/check.
    Check,
    /// GET /healthz.
    Healthz,
    /// POST /api/v1/billing/meter_usage/batch, --batch-size records per request.
    Batch,
    /// GET /api/v1/billing/meter_usage.
    Read,
    /// Single records, usage reads and entitlement checks, interleaved.
    Mixed,
    /// GET /healthz of a bare axum hello-world in this process: healthz's ceiling.
    Axum,
    /// POST one usage record to the least durable write in this process
    /// (token map, serde, group commit into one SQLite table): single's ceiling.
    Ceiling,
    /// GET one entitlement check from the least read in this process (token
    /// map, one SQLite point read, serde): check's ceiling.
    CheckCeiling,
}

/// `kinde-meter clients …`: M2M clients of the built-in issuer, managed on the
/// data directory directly (whether or not a server runs on it).
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client; prints `client_id: …` and `client_secret: …` (the secret
    /// is shown this once and stored only as a hash).
    Create {
        /// A name for listings.
        #[arg(long)]
        name: String,
        /// Space-separated scopes the client may be granted.
        #[arg(long)]
        scopes: String,
        /// Print a JSON object instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List the clients (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Revoke a client: no new tokens, and servers refuse its tokens within a minute.
    Revoke {
        /// The client id.
        client_id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// `kinde-meter webhooks`: on a data directory / database, or through the API
/// of a server (`--server` with credentials).
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe an endpoint to event types; prints the webhook's id.
    Create {
        /// The URL events are POSTed to (http or https; not a private address
        /// unless allowed).
        #[arg(long)]
        endpoint: String,
        /// The event types, comma-separated or repeated, e.g.
        /// customer.agreement_created,customer.meter_usage_updated.
        #[arg(long, value_delimiter = ',', required = true)]
        event_types: Vec<String>,
        /// A name for listings.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// On a data directory / database: accept an endpoint at a loopback,
        /// private or link-local address, as `serve --webhook-allow-private-networks`
        /// does (a server applies its own setting).
        #[arg(long, env = "KINDE_METER_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
        webhook_allow_private_networks: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the webhooks, oldest first: on a data directory / database with
    /// each one's last delivery, failures since its last success and pending
    /// deliveries; through a server, what its API answers.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a webhook; its pending deliveries are dropped.
    Delete {
        /// The webhook id (webhook_…).
        webhook_id: String,
        #[command(flatten)]
        target: Target,
    },
}
