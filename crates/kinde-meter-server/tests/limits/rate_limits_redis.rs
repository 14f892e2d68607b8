//! Per-client rate limits shared through Redis (`--redis-url`, issue 5): two
//! servers on one Redis hold one bucket per client between them; overrides
//! apply; a Redis that cannot be reached lets requests through (fail-open).
//!
//! Needs the Redis at `KINDE_METER_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`; `.ci/run` starts it). Each test uses a key prefix
//! of its own, so tests run in parallel without sharing buckets.
//!
//! Buckets that must stay empty during a test refill once an hour, so a slow
//! machine cannot refill them between two requests.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::support::limits::{assert_too_many_requests, await_status, list, until_refused};
use crate::support::{HOUR, Options, TestApp, closed_addr};
use kinde_meter_server::rate_limit::{Limit, RateLimitConfig, redis::RedisLimitConfig};
use reqwest::StatusCode;

fn redis_url() -> String {
    std::env::var("KINDE_METER_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection to the test Redis, or a clear failure if it is not running.
async fn redis() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
    let mut connection = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| {
        panic!(
            "these tests need Redis at {url} (set KINDE_METER_TEST_REDIS_URL, or start it: \
             redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no)"
        )
    });
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    connection
}

/// A key prefix no other test (or run) uses.
fn unique_prefix(test: &str) -> String {
    format!(
        "kinde-meter-test:{test}:{}:{:016x}:",
        std::process::id(),
        rand::random::<u64>()
    )
}

async fn spawn(rate_limits: RateLimitConfig, redis: RedisLimitConfig) -> TestApp {
    TestApp::spawn_with(Options {
        rate_limits,
        redis: Some(redis),
        ..Options::default()
    })
    .await
}

fn limits(default: Limit, clients: &[(&str, Limit)]) -> RateLimitConfig {
    RateLimitConfig {
        default,
        clients: clients
            .iter()
            .map(|(client, limit)| (client.to_string(), *limit))
            .collect::<HashMap<_, _>>(),
        ..RateLimitConfig::default()
    }
}

/// Sends `total` requests for `client`, alternating between the servers;
/// returns how many were accepted and the waits of the refusals.
async fn alternate(apps: &[&TestApp], client: &str, total: usize) -> (usize, Vec<u64>) {
    let tokens: Vec<String> = apps.iter().map(|a| a.token_for_client(client)).collect();
    let mut accepted = 0;
    let mut waits = Vec::new();
    for i in 0..total {
        let which = i % apps.len();
        let response = list(apps[which], &tokens[which]).await;
        if response.status() == StatusCode::OK {
            accepted += 1;
        } else {
            waits.push(assert_too_many_requests(response).await);
        }
    }
    (accepted, waits)
}

#[tokio::test]
async fn two_servers_share_one_bucket_per_client() {
    let mut con = redis().await;
    let redis_config = RedisLimitConfig {
        key_prefix: unique_prefix("shared"),
        ..RedisLimitConfig::new(redis_url())
    };
    let config = limits(Limit::one_per(HOUR, 10), &[]);
    let one = spawn(config.clone(), redis_config.clone()).await;
    let two = spawn(config, redis_config.clone()).await;

    let (accepted, waits) = alternate(&[&one, &two], "shared-client", 30).await;
    assert_eq!(accepted, 10, "exactly the burst passes across both servers");
    assert_eq!(waits.len(), 20);
    for wait in waits {
        // The next token comes an hour after the bucket was full.
        assert!((3000..=3600).contains(&wait), "wait {wait}s");
    }

    // Another client has a bucket of its own, on either server.
    let (accepted, _) = alternate(&[&two, &one], "other-client", 10).await;
    assert_eq!(accepted, 10);

    // The bucket is a Redis key with an expiry, so idle clients cost nothing.
    let key = format!("{}shared-client", redis_config.key_prefix);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 10 * 3600 * 1000 + 1000,
        "{key} expires: {ttl}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(format!("{}other-client", redis_config.key_prefix))
        .query_async(&mut con)
        .await
        .unwrap();
}

#[tokio::test]
async fn overrides_apply_to_shared_buckets() {
    let mut con = redis().await;
    let redis_config = RedisLimitConfig {
        key_prefix: unique_prefix("overrides"),
        ..RedisLimitConfig::new(redis_url())
    };
    let config = limits(
        Limit::one_per(HOUR, 2),
        &[("big", Limit::one_per(HOUR, 5)), ("free", Limit::OFF)],
    );
    let one = spawn(config.clone(), redis_config.clone()).await;
    let two = spawn(config, redis_config).await;
    assert_eq!(alternate(&[&one, &two], "small", 6).await.0, 2);
    // Redis forgetting its scripts (a restart) costs nothing: EVALSHA's
    // NOSCRIPT falls back to EVAL.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(alternate(&[&one, &two], "big", 12).await.0, 5);
    assert_eq!(alternate(&[&one, &two], "free", 50).await.0, 50);
}

#[tokio::test]
async fn a_shared_bucket_refills_over_time() {
    let _ = redis().await;
    let redis_config = RedisLimitConfig {
        key_prefix: unique_prefix("refill"),
        ..RedisLimitConfig::new(redis_url())
    };
    let config = limits(Limit::per_second(1, 1), &[]);
    let one = spawn(config.clone(), redis_config.clone()).await;
    let two = spawn(config, redis_config).await;
    let (a, b) = (one.token_for_client("slow"), two.token_for_client("slow"));
    // Spend the bucket (one request, or a few if seconds passed in between).
    let (_, refused) = until_refused(100, || list(&one, &a)).await;
    assert_eq!(assert_too_many_requests(refused).await, 1);
    // The other server sees the refill within about a second.
    await_status(StatusCode::OK, || list(&two, &b)).await;
}

#[tokio::test]
async fn an_unreachable_redis_lets_requests_through() {
    // A port nothing listens on.
    let port = closed_addr().port();
    let redis_config = RedisLimitConfig {
        key_prefix: unique_prefix("down"),
        ..RedisLimitConfig::new(format!("redis://127.0.0.1:{port}"))
    };
    let app = spawn(limits(Limit::one_per(HOUR, 2), &[]), redis_config).await;
    let token = app.token_for_client("while-redis-is-down");
    let started = Instant::now();
    for _ in 0..20 {
        let response = list(&app, &token).await;
        assert_eq!(response.status(), StatusCode::OK, "fail-open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an unreachable Redis must not stall requests: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_invalid_redis_url_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        kinde_meter_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.redis = Some(RedisLimitConfig::new("not a url"));
    let error = kinde_meter_server::Application::build(config)
        .await
        .err()
        .expect("the server refuses an invalid --redis-url");
    assert!(format!("{error:#}").contains("redis-url"), "{error:#}");
}
