//! `kinde-meter serve`: the server, with a ready token and curl lines printed so the
//! demo works from the first command.

use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    catalog::Catalog,
    ids::{CustomerId, PlanCode},
};
use kinde_meter_server::{
    Application, ExternalIssuer, ServerConfig,
    auth::MintRequest,
    rate_limit::{Limit, RateLimitConfig, redis::RedisLimitConfig},
    transport::{TlsFiles, TransportConfig},
};
use kinde_meter_store::{AgreementQuery, Cursor, NewAgreement, PgSettings, Store, StoreConfig};

use kinde_meter_wire::Scope;

use crate::cli::ServeArgs;
use crate::commands::ExitStatus;
use crate::logging::{self, LogFormat};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let format = LogFormat::resolve(args.log_format);
    // Held to the end of the command: dropped, it writes the queued lines.
    let _log_lines = logging::init(format).context("cannot start the log thread")?;
    match serve(args).await {
        // In JSON every line of the stream is an object, the last one too
        // (docs/operations.md#logs); the exit status says the rest.
        Err(e) if format == LogFormat::Json => {
            tracing::error!(error = format!("{e:#}"), "kinde-meter serve failed");
            Err(ExitStatus(1).into())
        }
        result => result,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (catalog, demo) = match &args.catalog {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the catalog {}", path.display()))?;
            (Catalog::parse(&text, &path.display().to_string())?, false)
        }
        None => (Catalog::demo(), true),
    };
    let mut config = ServerConfig::new(args.listen, &args.data.data_dir);
    config.public_url = args.public_url.clone();
    if args.data.database_url.is_some() && args.public_url.is_none() {
        tracing::warn!(
            "--database-url without --public-url: this server's issuer is its own address; servers sharing a database accept each other's tokens only with one --public-url (the load balancer's)"
        );
    }
    config.database_url = args.data.database_url.clone();
    config.database = PgSettings {
        pool_size: usize::try_from(args.pool.database_pool_size)?,
        operation_timeout: Duration::from_secs(args.pool.database_timeout),
        connect_timeout: Duration::from_secs(args.pool.database_connect_timeout),
        ..PgSettings::default()
    };
    config.catalog = catalog;
    config.token_lifetime = SignedDuration::from_secs(i64::try_from(args.token_lifetime)?);
    match &args.issuer {
        None => config.extra_audiences = args.audiences.clone(),
        Some(issuer) => {
            let mut external = ExternalIssuer::new(issuer);
            if !args.audiences.is_empty() {
                external.audiences = args.audiences.clone();
            }
            config.external_issuer = Some(external);
        }
    }
    config.store = StoreConfig {
        grace: SignedDuration::from_secs(i64::try_from(args.grace_seconds)?),
        queue_capacity: args.queue_capacity,
        webhook_usage_interval: SignedDuration::from_secs(i64::try_from(
            args.webhook_usage_interval,
        )?),
        ..StoreConfig::default()
    };
    config.webhooks.allow_private_networks = args.webhook_allow_private_networks;
    config.rate_limits = RateLimitConfig {
        default: Limit::per_second(args.rate_limit, args.burst),
        clients: args.client_rate_limits.iter().cloned().collect(),
        auth_failures: args.auth_failure_limit,
    };
    config.redis = args.redis_url.as_ref().map(|url| RedisLimitConfig {
        key_prefix: args.redis_key_prefix.clone(),
        ..RedisLimitConfig::new(url)
    });
    config.transport = TransportConfig {
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        request_timeout: Duration::from_secs(args.request_timeout),
        max_connections: usize::try_from(args.max_connections)?,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        ..TransportConfig::default()
    };
    // Handlers first: a SIGTERM sent as soon as the ready line is read must drain,
    // not kill the process with the signal's default action.
    let shutdown = shutdown_signal()?;
    let app = Application::build(config).await?;
    let url = app.identity().issuer();
    let data = match &args.data.database_url {
        Some(_) => "data in PostgreSQL".to_owned(),
        None => format!("data in {}", args.data.data_dir.display()),
    };
    // The banner below, for the log stream (no token).
    tracing::info!(url, listening = %app.local_addr(), data, "serving");
    println!(
        "kinde-meter serving {url} (listening on {}, {data})",
        app.local_addr()
    );
    println!();
    match &args.issuer {
        Some(issuer) => {
            println!("Accepting tokens issued by {issuer} (export TOKEN=<a token from it>)")
        }
        None => {
            let token = kinde_meter_server::auth::mint_token(
                app.signing_key(),
                &MintRequest {
                    issuer: app.identity().issuer(),
                    audience: vec![app.identity().audience()],
                    client_id: "kinde-meter-demo".to_owned(),
                    // Everything the API has.
                    scopes: Scope::ALL.iter().map(Scope::to_string).collect(),
                    lifetime: SignedDuration::from_hours(24),
                    now: Timestamp::now(),
                },
            )?;
            println!("A token with every scope, valid 24 h:");
            println!("  export TOKEN={token}");
        }
    }
    if demo {
        let agreement = demo_agreement(app.store().as_ref()).await?;
        println!();
        println!("Record usage against the demo agreement:");
        println!(
            "  curl -sS -X POST {url}/api/v1/billing/meter_usage -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"customer_agreement_id\":\"{agreement}\",\"billing_feature_code\":\"api_calls\",\"meter_value\":\"5\"}}'"
        );
        println!("Read it back:");
        println!(
            "  curl -sS -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/billing/meter_usage?customer_agreement_id={agreement}'"
        );
    }
    println!();
    app.run_until(shutdown).await?;
    tracing::info!("stopped: every accepted request answered, the write queue committed");
    Ok(())
}

/// The demo customer's active agreement on the `pro` plan, created on first start.
async fn demo_agreement(store: &dyn Store) -> anyhow::Result<String> {
    let customer_id = CustomerId::parse("customer_demo")?;
    let now = Timestamp::now();
    let page = store
        .list_agreements(AgreementQuery {
            customer_id: customer_id.clone(),
            feature_code: None,
            page_size: 1,
            cursor: Cursor::First,
            now,
        })
        .await?;
    if let Some(view) = page
        .agreements
        .first()
        .filter(|v| v.agreement.is_active(now))
    {
        return Ok(view.agreement.id.to_string());
    }
    let created = store
        .create_agreement(NewAgreement {
            customer_id,
            plan_code: PlanCode::parse("pro")?,
            now,
            id_random: rand_bytes(),
        })
        .await?;
    Ok(created.id.to_string())
}

fn rand_bytes() -> [u8; 10] {
    rand::random()
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that
/// resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::info!("shutdown signal received: draining");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received: draining");
        })
    }
}
