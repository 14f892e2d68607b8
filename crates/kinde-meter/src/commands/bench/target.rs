//! The server under load: one started in this process on a fresh data
//! directory (SQLite, demo catalog, no rate limits), or a running one
//! (`--server`, SQLite or PostgreSQL) reached with a token or client
//! credentials. Either way the bench makes its own agreements through the API,
//! and reads their usage back through it.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    catalog::Catalog,
    ids::{FeatureCode, PlanCode},
};
use kinde_meter_server::{
    Application, ServerConfig,
    auth::{MintRequest, mint_token},
    rate_limit::RateLimitConfig,
};
use kinde_meter_store::{Cursor, Store, WriterStats};
use kinde_meter_wire::Scope;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::process_stats::{self, OwnCpu};
use crate::cli::{BenchArgs, BenchMode, Credentials};
use crate::commands::remote;

/// Scopes the in-process benchmark token carries (and a `--server` token needs).
const BENCH_SCOPES: [Scope; 5] = [
    Scope::CreateMeterUsage,
    Scope::ReadMeterUsage,
    Scope::CreateBillingAgreements,
    Scope::ReadBillingAgreements,
    Scope::ReadBillingEntitlements,
];

/// `limit_max` of the in-process server's enforced feature: never reached, so
/// every record is decided against it and none is refused.
const ENFORCED_LIMIT: i64 = 1_000_000_000_000_000_000;

/// An agreement the bench made (or found: `--customers`), with its customer.
#[derive(Debug, Clone)]
pub struct Agreement {
    pub id: String,
    pub customer: String,
}

/// Where the requests go, with the token they carry.
pub struct Target {
    pub base: String,
    token: String,
    pub server: Server,
}

/// The server under load.
pub enum Server {
    InProcess(InProcess),
    External { pid: Option<u32> },
}

/// What the server used during a run, as far as this machine can tell.
#[derive(Debug, Clone, Copy)]
pub enum ServerUsage {
    /// The server is in this process: its CPU is the process's minus the load
    /// generator's threads.
    InProcess(OwnCpu),
    /// `--server-pid`: that process's CPU time, in seconds.
    External(f64),
}

impl Target {
    /// Starts the in-process server, or checks the credentials for `--server`.
    pub async fn start(args: &BenchArgs) -> anyhow::Result<Target> {
        match &args.server {
            None => {
                let server = InProcess::start(args).await?;
                Ok(Target {
                    base: server.base.clone(),
                    token: server.token.clone(),
                    server: Server::InProcess(server),
                })
            }
            Some(server) => {
                let base = server.trim_end_matches('/').to_owned();
                let token = token_for(&base, &args.credentials).await?;
                if let Some(pid) = args.server_pid
                    && process_stats::cpu_of(pid).is_none()
                {
                    bail!("--server-pid {pid}: no such process on this machine");
                }
                Ok(Target {
                    base,
                    token,
                    server: Server::External {
                        pid: args.server_pid,
                    },
                })
            }
        }
    }

    /// The `Authorization` header of the requests that need a token.
    pub fn authorization(&self) -> anyhow::Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The server's store, for one line of the report.
    pub fn describe(&self) -> String {
        match &self.server {
            Server::InProcess(server) => format!(
                "in-process at {}, SQLite (WAL, synchronous=FULL, group commit) in {}",
                server.base,
                server.data_dir.display()
            ),
            Server::External { pid: Some(pid) } => {
                format!("{} (external, process {pid})", self.base)
            }
            Server::External { pid: None } => format!("{} (external)", self.base),
        }
    }

    /// Whose peak RSS the report gives, if anyone's.
    pub fn peak_rss_of(&self) -> Option<String> {
        match &self.server {
            Server::InProcess(_) => Some(
                "this process (VmHWM): the in-process server together with the load generator"
                    .to_owned(),
            ),
            Server::External { pid: Some(pid) } => {
                Some(format!("the server's process {pid} (VmHWM)"))
            }
            Server::External { pid: None } => None,
        }
    }

    /// The server's peak RSS so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        match &self.server {
            Server::InProcess(_) => process_stats::peak_rss_kib(None),
            Server::External { pid: Some(pid) } => process_stats::peak_rss_kib(Some(*pid)),
            Server::External { pid: None } => None,
        }
    }

    /// The CPU time the server has used so far, where it can be read.
    pub fn usage_now(&self) -> Option<ServerUsage> {
        match &self.server {
            Server::InProcess(_) => OwnCpu::now().map(ServerUsage::InProcess),
            Server::External { pid: Some(pid) } => {
                process_stats::cpu_of(*pid).map(ServerUsage::External)
            }
            Server::External { pid: None } => None,
        }
    }

    /// The in-process SQLite writer's counters so far.
    pub fn writer_stats(&self) -> Option<WriterStats> {
        match &self.server {
            Server::InProcess(server) => Some(server.store.writer_stats()),
            Server::External { .. } => None,
        }
    }

    /// The agreements of customers `{prefix}_{i}`, `i` below `count`, made on
    /// `plan_code`; with `reuse`, a customer's newest agreement is taken
    /// where it has one (`--customers`), and only the missing ones are made.
    pub async fn agreements(
        &self,
        prefix: &str,
        count: usize,
        plan_code: &str,
        reuse: bool,
    ) -> anyhow::Result<Vec<Agreement>> {
        let auth = kinde_sdk::Auth::AccessToken(self.token.clone());
        let mut agreements = Vec::with_capacity(count);
        for i in 0..count {
            let customer = format!("{prefix}_{i}");
            let found = if reuse {
                remote::list_agreements(&self.base, &auth, &customer, None, 1, &Cursor::First)
                    .await
                    .with_context(|| format!("cannot list the agreements of {customer}"))?
                    .agreements
                    .into_iter()
                    .next()
                    .map(|agreement| agreement.id)
            } else {
                None
            };
            let id = match found {
                Some(id) => id,
                None => remote::create_agreement(&self.base, &auth, &customer, plan_code)
                    .await
                    .with_context(|| format!("cannot create the agreement for {customer}"))?,
            };
            agreements.push(Agreement { id, customer });
        }
        Ok(agreements)
    }

    /// Records `body(agreement)` once per agreement, each answered 200 or an
    /// error: usage for the reads and checks to find. Returns the records
    /// acknowledged.
    pub async fn seed(
        &self,
        agreements: &[Agreement],
        body: impl Fn(&str) -> String,
    ) -> anyhow::Result<u64> {
        let client = reqwest::Client::new();
        let url = format!("{}/api/v1/billing/meter_usage", self.base);
        for agreement in agreements {
            let response = client
                .post(&url)
                .header(AUTHORIZATION, self.authorization()?)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body(&agreement.id))
                .send()
                .await
                .context("cannot record the usage the run reads")?;
            if !response.status().is_success() {
                bail!(
                    "recording the usage the run reads answered {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
        }
        Ok(agreements.len() as u64)
    }

    /// The usage of `feature_code` stored for `agreements` in this period, summed:
    /// `(value, records)`. Every record of the bench is a delta of 1.
    pub async fn stored_usage(
        &self,
        agreements: &[Agreement],
        feature_code: &str,
    ) -> anyhow::Result<(u128, u64)> {
        let auth = kinde_sdk::Auth::AccessToken(self.token.clone());
        let (mut value, mut records) = (0u128, 0u64);
        for agreement in agreements {
            let usage =
                remote::get_usage(&self.base, &auth, &agreement.id, Some(feature_code), None)
                    .await
                    .with_context(|| format!("cannot read the usage of {}", agreement.id))?;
            for feature in usage.usage {
                value += feature.value.parse::<u128>().with_context(|| {
                    format!(
                        "usage {:?} of {} is not an integer",
                        feature.value, agreement.id
                    )
                })?;
                records += feature.record_count;
            }
        }
        Ok((value, records))
    }

    /// Stops the in-process server (draining it) before its data directory is removed.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.server {
            Server::InProcess(server) => server.stop().await,
            Server::External { .. } => Ok(()),
        }
    }
}

/// The bearer token for `--server`: `--token`, or one from the server's token
/// endpoint for `--client-id`/`--client-secret` (as the official SDKs get them).
async fn token_for(base: &str, credentials: &Credentials) -> anyhow::Result<String> {
    if let Some(token) = &credentials.token {
        return Ok(token.clone());
    }
    let (Some(client_id), Some(client_secret)) =
        (&credentials.client_id, &credentials.client_secret)
    else {
        bail!("--server needs --token, or --client-id and --client-secret");
    };
    let audience = credentials
        .token_audience
        .clone()
        .unwrap_or_else(|| format!("{base}/api"));
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("audience", &audience),
        ])
        .send()
        .await
        .context("cannot reach the token endpoint")?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "the token endpoint answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let answer: TokenAnswer = response
        .json()
        .await
        .context("the token endpoint's answer has no access_token")?;
    Ok(answer.access_token)
}

/// A server started in this process on a fresh data directory, on a runtime
/// and threads of its own, laid out as `kinde-meter serve` runs (`main.rs`): a
/// thread that builds the application and serves it inside `block_on` of
/// tokio's multi-threaded runtime with its default workers (one per CPU). The
/// bench's own work (making agreements, reading usage back, the bare axum
/// server) stays on the command's runtime, and the load generator on its own.
pub struct InProcess {
    base: String,
    token: String,
    data_dir: PathBuf,
    store: Arc<dyn Store>,
    stop: oneshot::Sender<()>,
    server: std::thread::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Name of the in-process server's thread (the one in `block_on`).
const SERVER_THREAD: &str = "km-bench-server";

/// What the in-process server hands back once it listens.
struct Ready {
    base: String,
    token: String,
    store: Arc<dyn Store>,
}

impl InProcess {
    async fn start(args: &BenchArgs) -> anyhow::Result<InProcess> {
        let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("kinde-meter-bench-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot make a data directory in {}", parent.display()))?;
        let data_dir = dir.path().to_owned();
        let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), &data_dir);
        if args.modes.contains(&BenchMode::SingleEnforced) {
            add_enforced_feature(&mut config.catalog, args)?;
        }
        // The benchmark measures the server, not the per-client limit (one client
        // sends everything here).
        config.rate_limits = RateLimitConfig::off();
        let (ready, is_ready) = oneshot::channel::<anyhow::Result<Ready>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = serve(config, ready, async {
            let _ = stopped.await;
        });
        let server = std::thread::Builder::new()
            .name(SERVER_THREAD.to_owned())
            .spawn(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the in-process server's runtime")?
                    .block_on(serving)
            })
            .context("cannot start the in-process server's thread")?;
        let Ready { base, token, store } = match is_ready.await {
            Ok(ready) => ready?,
            // It ended before it listened: its own error says why.
            Err(_) => {
                joined(server).await?;
                bail!("the in-process server ended before it listened");
            }
        };
        Ok(InProcess {
            base,
            token,
            data_dir,
            store,
            stop,
            server,
            _dir: dir,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let InProcess {
            store,
            stop,
            server,
            _dir,
            ..
        } = self;
        // The server's own handle is the last: the store closes on its runtime.
        drop(store);
        let _ = stop.send(());
        joined(server).await
    }
}

/// The in-process server's result once its thread has ended.
async fn joined(server: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    match tokio::task::spawn_blocking(move || server.join())
        .await
        .context("cannot wait for the server's thread")?
    {
        Ok(result) => result,
        Err(_) => bail!("the in-process server panicked"),
    }
}

/// Builds the application of `config` on the current runtime, sends what the
/// bench needs of it to `ready` (or the error), and serves until `shutdown`.
async fn serve(
    config: ServerConfig,
    ready: oneshot::Sender<anyhow::Result<Ready>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = match built(config).await {
        Ok((app, token)) => {
            let answer = Ready {
                base: format!("http://{}", app.local_addr()),
                token,
                store: app.store(),
            };
            if ready.send(Ok(answer)).is_err() {
                return Ok(()); // the bench has gone
            }
            app
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    app.run_until(shutdown).await
}

/// The application of `config`, and a token for the bench.
async fn built(config: ServerConfig) -> anyhow::Result<(Application, String)> {
    let app = Application::build(config).await?;
    let token = mint_token(
        app.signing_key(),
        &MintRequest {
            issuer: app.identity().issuer(),
            audience: vec![app.identity().audience()],
            client_id: "kinde-meter-bench".to_owned(),
            scopes: BENCH_SCOPES.iter().map(Scope::to_string).collect(),
            lifetime: SignedDuration::from_hours(24),
            now: Timestamp::now(),
        },
    )?;
    Ok((app, token))
}

/// Adds `--enforced-feature-code` to the bench's plan: a copy of
/// `--feature-code` whose limit is enforced and never reached.
fn add_enforced_feature(catalog: &mut Catalog, args: &BenchArgs) -> anyhow::Result<()> {
    let plan_code = PlanCode::parse(args.plan_code.clone()).context("--plan-code")?;
    let feature_code = FeatureCode::parse(args.feature_code.clone()).context("--feature-code")?;
    let enforced_code = FeatureCode::parse(args.enforced_feature_code.clone())
        .context("--enforced-feature-code")?;
    let plan = catalog
        .plans
        .iter_mut()
        .find(|p| p.code == plan_code)
        .with_context(|| format!("the catalog has no plan {plan_code}"))?;
    if plan.feature(&enforced_code).is_some() {
        bail!("plan {plan_code} already has a feature {enforced_code}");
    }
    let mut enforced = plan
        .feature(&feature_code)
        .with_context(|| format!("plan {plan_code} has no feature {feature_code}"))?
        .clone();
    enforced.code = enforced_code;
    enforced.name = format!("{} (enforced)", enforced.name);
    enforced.limit_max = Some(ENFORCED_LIMIT);
    enforced.enforce_limit = true;
    plan.features.push(enforced);
    Ok(())
}
