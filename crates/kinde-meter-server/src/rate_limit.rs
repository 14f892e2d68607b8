//! Rate limits: a token bucket per client ([`ClientLimiter`], in memory or
//! [through Redis](redis::RedisClientLimiter)), and a limit on invalid
//! credentials per source address (always in memory). A refusal ([`Limited`])
//! carries the time until a request would be accepted again.
//!
//! Design: `docs/design.md#rate-limiting`; contract: `docs/limits.md#rate-limits`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

use crate::auth::Principal;

pub mod redis;

/// Requests per second per client unless configured (`--rate-limit`).
pub const DEFAULT_RATE_LIMIT: u32 = 1000;
/// Bucket size per client unless configured (`--burst`).
pub const DEFAULT_BURST: u32 = 2000;
/// Invalid-credential requests per second a source address gets back.
pub const DEFAULT_AUTH_FAILURE_RATE: u32 = 10;
/// Invalid-credential requests a source address may send in a burst.
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 100;
/// How often refilled buckets are dropped.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);
/// Past this many tracked source addresses, refilled buckets are dropped at
/// once (at most once a second) instead of at the next maintenance.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// A token bucket: one token comes back every `refill` period, up to `burst`
/// tokens; no `refill` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    refill: Option<Duration>,
    burst: u32,
}

impl Limit {
    /// No limit.
    pub const OFF: Limit = Limit {
        refill: None,
        burst: 0,
    };

    /// `rate` requests a second, bursts of `burst` (at least 1); rate 0 is
    /// no limit.
    pub fn per_second(rate: u32, burst: u32) -> Limit {
        if rate == 0 {
            return Limit::OFF;
        }
        Limit {
            refill: Some(Duration::from_secs(1) / rate),
            burst: burst.max(1),
        }
    }

    /// One request back every `period` (a zero period is no limit), bursts
    /// of `burst` (at least 1).
    pub fn one_per(period: Duration, burst: u32) -> Limit {
        if period.is_zero() {
            return Limit::OFF;
        }
        Limit {
            refill: Some(period),
            burst: burst.max(1),
        }
    }

    /// Whether this limit lets everything through.
    pub fn is_off(&self) -> bool {
        self.refill.is_none()
    }

    /// The bucket size (0 when off).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn quota(&self) -> Option<Quota> {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Quota::with_period(self.refill?)?.allow_burst(burst))
    }

    /// Parses `RATE[:BURST]`; without a burst it is twice the rate (the ratio
    /// of the defaults). `0` is no limit.
    pub fn parse(text: &str) -> Result<Limit, String> {
        let number = |s: &str, what: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} must be a whole number, not {s:?}"))
        };
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => {
                let rate = number(rate, "the rate")?;
                let burst = number(burst, "the burst")?;
                if burst == 0 && rate != 0 {
                    return Err("the burst must be at least 1".to_owned());
                }
                (rate, burst)
            }
            None => {
                let rate = number(text, "the rate")?;
                (rate, rate.saturating_mul(2))
            }
        };
        Ok(Limit::per_second(rate, burst))
    }
}

/// Parses a per-client override `CLIENT=RATE[:BURST]` (`--client-rate-limit`).
pub fn parse_client_limit(text: &str) -> Result<(String, Limit), String> {
    let (client, limit) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("expected CLIENT=RATE[:BURST], not {text:?}"))?;
    if client.is_empty() {
        return Err("the client id before '=' is empty".to_owned());
    }
    Ok((client.to_owned(), Limit::parse(limit)?))
}

/// What the rate limiters enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Every client's limit unless [`clients`](Self::clients) names it.
    pub default: Limit,
    /// Per-client limits by client id (`azp`), overriding the default.
    pub clients: HashMap<String, Limit>,
    /// Invalid-credential requests per source address.
    pub auth_failures: Limit,
}

impl Default for RateLimitConfig {
    /// The defaults of `docs/limits.md`: 1000 requests/s with bursts of 2000 per client; 100
    /// invalid-credential requests, refilled at 10/s, per source address.
    fn default() -> Self {
        RateLimitConfig {
            default: Limit::per_second(DEFAULT_RATE_LIMIT, DEFAULT_BURST),
            clients: HashMap::new(),
            auth_failures: Limit::per_second(DEFAULT_AUTH_FAILURE_RATE, DEFAULT_AUTH_FAILURE_BURST),
        }
    }
}

impl RateLimitConfig {
    /// No limits at all (benchmarks).
    pub fn off() -> Self {
        RateLimitConfig {
            default: Limit::OFF,
            clients: HashMap::new(),
            auth_failures: Limit::OFF,
        }
    }
}

/// A refusal: how long until a request from that caller would be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The exact wait.
    pub wait: Duration,
}

impl Limited {
    /// The wait in whole seconds, rounded up, at least 1, for
    /// `Retry-After` and `RateLimit-Reset`.
    pub fn retry_after_secs(&self) -> u64 {
        let whole = self.wait.as_secs();
        let rounded = if self.wait.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole
        };
        rounded.max(1)
    }
}

/// Which rate limit refused a request (the `limit` label of
/// `kinde_meter_rate_limited_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The caller's per-client bucket.
    Client,
    /// The per-source-address bucket of invalid credentials.
    SourceAddress,
}

impl LimitKind {
    /// Both limits.
    pub const ALL: [LimitKind; 2] = [LimitKind::Client, LimitKind::SourceAddress];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Client => "client",
            LimitKind::SourceAddress => "source_address",
        }
    }
}

/// The per-client limit. Implemented in memory by [`LocalClientLimiter`]; a
/// limiter shared by several servers (Redis) implements the same check.
#[async_trait]
pub trait ClientLimiter: Send + Sync + 'static {
    /// Takes one request from `caller`'s bucket, or says how long to wait.
    async fn check(&self, caller: &Principal) -> Result<(), Limited>;

    /// [`check`](Self::check) without waiting, when this limiter answers at
    /// once (the in-memory one); `None` when the answer must be awaited
    /// (the shared one). Spares a request the boxed future of `check`.
    fn check_now(&self, _caller: &Principal) -> Option<Result<(), Limited>> {
        None
    }

    /// Drops state that no longer matters (refilled buckets); called
    /// periodically.
    fn maintain(&self) {}
}

type KeyedLimiter<K, C> =
    RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type DirectLimiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

fn limited<C: Clock>(clock: &C, refusal: &NotUntil<C::Instant>) -> Limited {
    Limited {
        wait: refusal.wait_time_from(clock.now()),
    }
}

/// Per-client token buckets in this process.
pub struct LocalClientLimiter<C: Clock = DefaultClock> {
    clock: C,
    /// `None`: the default limit is off.
    default: Option<KeyedLimiter<String, C>>,
    /// Clients with their own limit; `None`: unlimited.
    overrides: HashMap<String, Option<DirectLimiter<C>>>,
}

impl LocalClientLimiter<DefaultClock> {
    /// Buckets for `config`'s default and per-client limits.
    pub fn new(config: &RateLimitConfig) -> Self {
        LocalClientLimiter::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalClientLimiter<C> {
    /// As [`new`](LocalClientLimiter::new), on another clock (tests).
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        LocalClientLimiter {
            default: config
                .default
                .quota()
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            overrides: config
                .clients
                .iter()
                .map(|(client, limit)| {
                    let limiter = limit
                        .quota()
                        .map(|q| RateLimiter::direct_with_clock(q, clock.clone()));
                    (client.clone(), limiter)
                })
                .collect(),
            clock,
        }
    }

    /// Takes one request from `client_id`'s bucket.
    pub fn check_client(&self, client_id: &String) -> Result<(), Limited> {
        if let Some(own) = self.overrides.get(client_id.as_str()) {
            return match own {
                Some(limiter) => limiter.check().map_err(|r| limited(&self.clock, &r)),
                None => Ok(()),
            };
        }
        match &self.default {
            Some(limiter) => limiter
                .check_key(client_id)
                .map_err(|r| limited(&self.clock, &r)),
            None => Ok(()),
        }
    }

    /// Clients with a bucket in memory (not counting overrides).
    pub fn tracked_clients(&self) -> usize {
        self.default.as_ref().map_or(0, |l| l.len())
    }

    fn drop_refilled(&self) {
        if let Some(limiter) = &self.default {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[async_trait]
impl<C> ClientLimiter for LocalClientLimiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    async fn check(&self, caller: &Principal) -> Result<(), Limited> {
        self.check_client(&caller.client_id)
    }

    fn check_now(&self, caller: &Principal) -> Option<Result<(), Limited>> {
        Some(self.check_client(&caller.client_id))
    }

    fn maintain(&self) {
        self.drop_refilled();
    }
}

/// The key of a source address: IPv4 as is (also when IPv4-mapped), IPv6 by
/// its /64 prefix, the smallest block one host is usually given.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Invalid credentials per source address: every 403 `INVALID_CREDENTIALS`
/// takes a token from its address's bucket (IPv6 by /64 prefix); an address
/// whose bucket is empty gets 429 before its tokens are verified. Valid requests
/// never take from it (`docs/design.md#rate-limiting`).
pub struct AuthFailureLimiter<C: Clock = DefaultClock> {
    clock: C,
    /// One bucket per address that sent invalid credentials recently; `None`: off.
    failures: Option<KeyedLimiter<IpAddr, C>>,
    /// Addresses whose bucket is empty, until a failure would be accepted again.
    blocked: DashMap<IpAddr, C::Instant>,
    /// When the last early sweep ran, in nanoseconds of `clock` since `epoch`.
    last_sweep: AtomicU64,
    epoch: C::Instant,
}

impl AuthFailureLimiter<DefaultClock> {
    /// A limiter allowing `limit` invalid-credential requests per address.
    pub fn new(limit: Limit) -> Self {
        AuthFailureLimiter::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AuthFailureLimiter<C> {
    /// As [`new`](AuthFailureLimiter::new), on another clock (tests).
    pub fn with_clock(limit: Limit, clock: C) -> Self {
        AuthFailureLimiter {
            failures: limit
                .quota()
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            blocked: DashMap::new(),
            last_sweep: AtomicU64::new(0),
            epoch: clock.now(),
            clock,
        }
    }

    /// Whether `ip` may have its credentials checked: refused while the
    /// address's bucket of failures is empty. Takes nothing from the bucket.
    pub fn check(&self, ip: IpAddr) -> Result<(), Limited> {
        if self.failures.is_none() {
            return Ok(());
        }
        let key = address_key(ip);
        let Some(until) = self.blocked.get(&key).map(|u| *u) else {
            return Ok(());
        };
        let now = self.clock.now();
        if until > now {
            return Err(Limited {
                wait: until.duration_since(now).into(),
            });
        }
        self.blocked.remove_if(&key, |_, u| *u <= now);
        Ok(())
    }

    /// Counts one invalid-credential request from `ip`; once the bucket is
    /// empty, [`check`](Self::check) refuses the address until it refills.
    pub fn record_failure(&self, ip: IpAddr) {
        let Some(failures) = &self.failures else {
            return;
        };
        let key = address_key(ip);
        if let Err(refusal) = failures.check_key(&key) {
            // The bucket is empty: refuse until one more failure would fit.
            self.blocked.insert(key, refusal.earliest_possible());
        }
        if failures.len() > MAX_TRACKED_ADDRESSES {
            self.sweep_early();
        }
    }

    /// Source addresses with state in memory.
    pub fn tracked_addresses(&self) -> usize {
        self.failures.as_ref().map_or(0, |l| l.len()) + self.blocked.len()
    }

    /// Drops refilled buckets and ended blocks.
    pub fn maintain(&self) {
        if let Some(failures) = &self.failures {
            failures.retain_recent();
            failures.shrink_to_fit();
        }
        let now = self.clock.now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }

    /// [`maintain`](Self::maintain) now, unless an early sweep ran in the last second.
    fn sweep_early(&self) {
        let now: Duration = self.clock.now().duration_since(self.epoch).into();
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000_000_000 && last != 0 {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.maintain();
            tracing::warn!(
                tracked = self.tracked_addresses(),
                "many source addresses are sending invalid credentials"
            );
        }
    }
}

/// The rate limiters of a server, shared by every route.
pub struct RateLimits {
    /// Per-client limit, checked after authentication.
    pub clients: Arc<dyn ClientLimiter>,
    /// Invalid credentials per source address, checked before authentication.
    pub auth_failures: AuthFailureLimiter,
}

impl RateLimits {
    /// In-memory limiters for `config`.
    pub fn local(config: &RateLimitConfig) -> Self {
        RateLimits {
            clients: Arc::new(LocalClientLimiter::new(config)),
            auth_failures: AuthFailureLimiter::new(config.auth_failures),
        }
    }

    /// [`local`](Self::local) limiters, shared, with their
    /// [maintenance](Self::spawn_maintenance) running. Needs a Tokio runtime.
    pub fn start(config: &RateLimitConfig) -> Arc<Self> {
        let limits = Arc::new(RateLimits::local(config));
        limits.spawn_maintenance();
        limits
    }

    /// As [`start`](Self::start), with the per-client buckets in Redis when
    /// `redis` is given (shared by every server using it). Fails only on an
    /// invalid Redis URL; Redis itself is reached on first use.
    pub fn start_with(
        config: &RateLimitConfig,
        redis: Option<&redis::RedisLimitConfig>,
    ) -> anyhow::Result<Arc<Self>> {
        let Some(redis) = redis else {
            return Ok(RateLimits::start(config));
        };
        let limits = Arc::new(RateLimits {
            clients: Arc::new(redis::RedisClientLimiter::new(redis, config)?),
            auth_failures: AuthFailureLimiter::new(config.auth_failures),
        });
        limits.spawn_maintenance();
        Ok(limits)
    }

    /// Drops refilled buckets and ended blocks.
    pub fn maintain(&self) {
        self.clients.maintain();
        self.auth_failures.maintain();
    }

    /// Runs [`maintain`](Self::maintain) every [`MAINTENANCE_INTERVAL`] until
    /// the limiters are dropped. Needs a Tokio runtime.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let limits: Weak<RateLimits> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(MAINTENANCE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                match limits.upgrade() {
                    Some(limits) => limits.maintain(),
                    None => break,
                }
            }
        })
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("tracked_addresses", &self.auth_failures.tracked_addresses())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn principal(client: &str) -> Principal {
        Principal {
            client_id: client.to_owned(),
            scopes: Vec::new(),
            expires_at: 0,
        }
    }

    fn config(default: Limit) -> RateLimitConfig {
        RateLimitConfig {
            default,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn parses_limits_and_overrides() {
        assert_eq!(Limit::parse("5"), Ok(Limit::per_second(5, 10)));
        assert_eq!(Limit::parse("5:7"), Ok(Limit::per_second(5, 7)));
        assert_eq!(Limit::parse("0"), Ok(Limit::OFF));
        assert!(Limit::parse("0").unwrap().is_off());
        assert!(Limit::parse("5:0").is_err());
        assert!(Limit::parse("-1").is_err());
        assert!(Limit::parse("1.5").is_err());
        assert_eq!(
            parse_client_limit("ingest=50:100"),
            Ok(("ingest".to_owned(), Limit::per_second(50, 100)))
        );
        assert_eq!(
            parse_client_limit("a=b=0"),
            Ok(("a=b".to_owned(), Limit::OFF))
        );
        assert!(parse_client_limit("=5").is_err());
        assert!(parse_client_limit("nolimit").is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_at_least_one() {
        let secs = |d| Limited { wait: d }.retry_after_secs();
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_secs(1)), 1);
        assert_eq!(secs(Duration::from_millis(1001)), 2);
        assert_eq!(secs(Duration::from_secs(7)), 7);
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let clock = FakeRelativeClock::default();
        let limiter =
            LocalClientLimiter::with_clock(&config(Limit::per_second(2, 3)), clock.clone());
        let a = "a".to_owned();
        for _ in 0..3 {
            assert_eq!(limiter.check_client(&a), Ok(()));
        }
        let refused = limiter.check_client(&a).unwrap_err();
        assert_eq!(refused.wait, Duration::from_millis(500));
        assert_eq!(refused.retry_after_secs(), 1);
        // Another client has its own bucket.
        assert_eq!(limiter.check_client(&"b".to_owned()), Ok(()));
        clock.advance(Duration::from_millis(499));
        assert!(limiter.check_client(&a).is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check_client(&a), Ok(()));
        assert!(limiter.check_client(&a).is_err());
    }

    #[test]
    fn overrides_replace_the_default_and_zero_turns_limits_off() {
        let clock = FakeRelativeClock::default();
        let mut cfg = config(Limit::per_second(1, 1));
        cfg.clients
            .insert("big".to_owned(), Limit::per_second(1, 5));
        cfg.clients.insert("free".to_owned(), Limit::OFF);
        let limiter = LocalClientLimiter::with_clock(&cfg, clock);
        let (small, big, free) = ("small".to_owned(), "big".to_owned(), "free".to_owned());
        assert!(limiter.check_client(&small).is_ok());
        assert!(limiter.check_client(&small).is_err());
        for _ in 0..5 {
            assert!(limiter.check_client(&big).is_ok());
        }
        assert!(limiter.check_client(&big).is_err());
        for _ in 0..10_000 {
            assert!(limiter.check_client(&free).is_ok());
        }
        let off = LocalClientLimiter::with_clock(&config(Limit::OFF), FakeRelativeClock::default());
        for _ in 0..10_000 {
            assert!(off.check_client(&small).is_ok());
        }
        assert_eq!(off.tracked_clients(), 0);
    }

    #[test]
    fn refilled_client_buckets_are_dropped() {
        let clock = FakeRelativeClock::default();
        let limiter =
            LocalClientLimiter::with_clock(&config(Limit::per_second(10, 10)), clock.clone());
        for i in 0..100 {
            limiter.check_client(&format!("client-{i}")).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), 100);
        limiter.maintain();
        assert_eq!(limiter.tracked_clients(), 100, "not refilled yet");
        clock.advance(Duration::from_secs(2));
        limiter.maintain();
        assert_eq!(limiter.tracked_clients(), 0);
    }

    #[test]
    fn failures_block_an_address_until_its_bucket_refills() {
        let clock = FakeRelativeClock::default();
        let limiter = AuthFailureLimiter::with_clock(Limit::per_second(1, 3), clock.clone());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(ip), Ok(()), "checking takes nothing");
            limiter.record_failure(ip);
        }
        // The bucket is empty but no failure was refused yet.
        assert_eq!(limiter.check(ip), Ok(()));
        limiter.record_failure(ip);
        let refused = limiter.check(ip).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(limiter.check(other), Ok(()));
        clock.advance(Duration::from_millis(999));
        assert!(limiter.check(ip).is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check(ip), Ok(()));
        // One more failure fits, the next blocks again.
        limiter.record_failure(ip);
        assert_eq!(limiter.check(ip), Ok(()));
        limiter.record_failure(ip);
        assert!(limiter.check(ip).is_err());
        clock.advance(Duration::from_secs(10));
        limiter.maintain();
        assert_eq!(limiter.tracked_addresses(), 0);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let limiter =
            AuthFailureLimiter::with_clock(Limit::per_second(1, 1), FakeRelativeClock::default());
        limiter.record_failure("2001:db8:1:2::1".parse().unwrap());
        limiter.record_failure("2001:db8:1:2:ffff::9".parse().unwrap());
        assert!(limiter.check("2001:db8:1:2::77".parse().unwrap()).is_err());
        assert!(limiter.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        limiter.record_failure("::ffff:192.0.2.1".parse().unwrap());
        limiter.record_failure("192.0.2.1".parse().unwrap());
        assert!(limiter.check("192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn an_off_failure_limit_never_blocks() {
        let limiter = AuthFailureLimiter::with_clock(Limit::OFF, FakeRelativeClock::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..1000 {
            limiter.record_failure(ip);
        }
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.tracked_addresses(), 0);
    }

    #[tokio::test]
    async fn the_trait_checks_by_client_id() {
        let limits = RateLimits::local(&config(Limit::per_second(1, 1)));
        assert!(limits.clients.check(&principal("x")).await.is_ok());
        assert!(limits.clients.check(&principal("x")).await.is_err());
        assert!(limits.clients.check(&principal("y")).await.is_ok());
    }
}
