//! The per-client limit shared by several servers through Redis
//! (`--redis-url`): one hash per client, refilled and taken atomically by a Lua
//! script ([`BUCKET_SCRIPT`]); fails open while Redis is unreachable or slow.
//!
//! Design: `docs/design.md#redis-rate-limit`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ClientLimiter, Limit, Limited, RateLimitConfig};
use crate::auth::Principal;

/// The prefix of bucket keys unless configured (`--redis-key-prefix`).
pub const DEFAULT_KEY_PREFIX: &str = "kinde-meter:rl:";
/// How long one Redis call may take before the request is let through.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// After a failed call, Redis is skipped (fail-open) for this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The atomic token bucket. `KEYS[1]`: the bucket; `ARGV[1]`: microseconds per
/// token; `ARGV[2]`: the burst. Returns `{1, 0}` when a token was taken, or
/// `{0, µs until the next token}`. Integer arithmetic only: the refill time
/// advances by whole tokens, so no fraction of a token is lost or invented.
pub const BUCKET_SCRIPT: &str = r#"
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil or ts > now then
  tokens = burst
  ts = now
end
if tokens > burst then
  tokens = burst
end
local refill = math.floor((now - ts) / period)
if refill > 0 then
  tokens = tokens + refill
  ts = ts + refill * period
end
if tokens >= burst then
  tokens = burst
  ts = now
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = ts + period - now
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%d', tokens), 'ts', string.format('%d', ts))
-- Expire once the bucket would be full again (plus a second): a missing key
-- is a full bucket, so nothing is lost.
local full_in = (burst - tokens) * period - (now - ts)
if full_in < 0 then
  full_in = 0
end
redis.call('PEXPIRE', KEYS[1], math.floor(full_in / 1000) + 1000)
return {allowed, wait}
"#;

/// Where the shared buckets are.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisLimitConfig {
    /// `redis://[user:password@]host:port[/db]` (no TLS: `rediss://` is refused at start).
    pub url: String,
    /// Prepended to the client id to name its bucket.
    pub key_prefix: String,
    /// How long one Redis call may take before the request is let through.
    pub timeout: Duration,
}

impl RedisLimitConfig {
    /// Buckets at `url` under [`DEFAULT_KEY_PREFIX`], calls bounded by
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(url: impl Into<String>) -> Self {
        RedisLimitConfig {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for RedisLimitConfig {
    /// Without the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.url.rsplit_once('@') {
            Some((_, host)) => format!("<credentials>@{host}"),
            None => self.url.clone(),
        };
        f.debug_struct("RedisLimitConfig")
            .field("url", &url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Per-client token buckets in Redis, shared by every server using it.
pub struct RedisClientLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    key_prefix: String,
    timeout: Duration,
    default: Limit,
    overrides: HashMap<String, Limit>,
    /// Since when (ms after `epoch`, 0: never) Redis is skipped after a failure.
    failed_at: AtomicU64,
    /// Whether an outage has been logged and not yet its end.
    down: AtomicBool,
    epoch: Instant,
}

impl RedisClientLimiter {
    /// A limiter for `limits`' per-client limits with its buckets at
    /// `config.url`. Fails only on an invalid URL: the connection is made on
    /// first use, so a server starts (failing open) while Redis is away.
    /// Needs a Tokio runtime.
    pub fn new(config: &RedisLimitConfig, limits: &RateLimitConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .context("invalid --redis-url (expected redis://host:port)")?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .context("cannot set up the Redis connection")?;
        Ok(RedisClientLimiter {
            connection,
            script: redis::Script::new(BUCKET_SCRIPT),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            default: limits.default,
            overrides: limits.clients.clone(),
            failed_at: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Runs the bucket script for `key`: `EVALSHA`, then `EVAL` on `NOSCRIPT`.
    async fn take(&self, key: &str, period_us: u64, burst: u32) -> redis::RedisResult<(u8, u64)> {
        let mut connection = self.connection.clone();
        let result = redis::cmd("EVALSHA")
            .arg(self.script.get_hash())
            .arg(1)
            .arg(key)
            .arg(period_us)
            .arg(burst)
            .query_async(&mut connection)
            .await;
        match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::cmd("EVAL")
                    .arg(BUCKET_SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(period_us)
                    .arg(burst)
                    .query_async(&mut connection)
                    .await
            }
            other => other,
        }
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        self.failed_at.store(self.now_ms(), Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %error,
                "Redis is unreachable: per-client rate limits are not enforced (fail-open) until it answers again"
            );
        }
    }
}

#[async_trait]
impl ClientLimiter for RedisClientLimiter {
    async fn check(&self, caller: &Principal) -> Result<(), Limited> {
        let limit = self
            .overrides
            .get(caller.client_id.as_str())
            .copied()
            .unwrap_or(self.default);
        let Some(refill) = limit.refill else {
            return Ok(());
        };
        let failed_at = self.failed_at.load(Ordering::Relaxed);
        if failed_at != 0
            && self.now_ms().saturating_sub(failed_at) < RETRY_AFTER_FAILURE.as_millis() as u64
        {
            return Ok(());
        }
        // Microseconds, the script's unit: rates above a million a second
        // count as a million.
        let period_us = u64::try_from(refill.as_micros()).unwrap_or(u64::MAX).max(1);
        let key = format!("{}{}", self.key_prefix, caller.client_id);
        let answer =
            tokio::time::timeout(self.timeout, self.take(&key, period_us, limit.burst.max(1)))
                .await;
        match answer {
            Ok(Ok((allowed, wait_us))) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: per-client rate limits are shared");
                }
                self.failed_at.store(0, Ordering::Relaxed);
                if allowed == 1 {
                    Ok(())
                } else {
                    Err(Limited {
                        wait: Duration::from_micros(wait_us),
                    })
                }
            }
            Ok(Err(error)) => {
                self.failed(&error);
                Ok(())
            }
            Err(_) => {
                self.failed(&format_args!("no answer within {:?}", self.timeout));
                Ok(())
            }
        }
    }
}
