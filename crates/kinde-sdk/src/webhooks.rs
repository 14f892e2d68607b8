//! Reading webhook deliveries: [`decode`] verifies a delivered body and returns
//! the typed [`WebhookEvent`], as `decodeWebhook` of Kinde's `@kinde/webhooks`
//! does for TypeScript (feature `webhooks`, on by default).
//!
//! Each delivery is a `POST` whose body (`Content-Type: application/jwt`) is a
//! compact RS256 JWT signed by the sender (Kinde, or a kinde-meter server) with
//! a key of its JSON Web Key Set at `<issuer>/.well-known/jwks.json`; its claims
//! are the event (`type`, `event_id`, `source`, `timestamp`, `data`, plus `iss`,
//! `iat`, `jti`). [`decode`] and [`WebhookDecoder::decode`]
//!
//! - accept only `alg` `RS256` (`none`, HMAC and every other algorithm are
//!   refused before any key is looked at), and require a `kid`;
//! - take the key with that `kid` from the issuer's JWKS (an RSA key of at least
//!   2048 bits whose `alg`, `use` and `key_ops`, when present, allow RS256
//!   signatures), fetched once and kept for 10 minutes; a `kid` the cached set
//!   lacks (the sender rotated its key) refetches the set, at most once every 30
//!   seconds (as `@kinde/webhooks`' JWKS client does);
//! - verify the signature, an `exp`/`nbf` if the token has them, and that `iss`
//!   is the issuer given (which `decodeWebhook` does not check);
//! - read the event: the six kinde-meter billing types into typed data
//!   ([`EventData`]), any other type (Kinde's `user.created`, a type added
//!   later) kept as raw JSON in [`EventData::Other`].
//!
//! ```no_run
//! use kinde_sdk::webhooks::{self, EventData};
//!
//! # async fn handle(body: &str) -> Result<(), webhooks::DecodeError> {
//! // `body`: the raw request body of the delivery.
//! let event = webhooks::decode(body, "https://meter.example.com").await?;
//! // Deliveries are at least once: skip an event_id already handled.
//! match &event.data {
//!     EventData::PlanChanged(change) => {
//!         println!("{} moved from {} to {}", change.customer_id, change.previous_plan_code, change.plan_code);
//!     }
//!     EventData::MeterUsageUpdated(usage) => {
//!         println!("{} used {} of {} this period", usage.customer_id, usage.value, usage.feature_code);
//!     }
//!     other => println!("{} {}", event.event_id, other.event_type()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Answer the delivery with a 2xx once the event is safely handled (or stored);
//! anything else makes the sender retry the same `event_id` later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kinde_meter_wire::UsageTotal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// How long a fetched JWKS is used before it is fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// The least time between two fetches caused by an unknown `kid`.
const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// How long a JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// RS256 keys shorter than this are refused (2048 bits), as `@kinde/webhooks` does.
const MIN_MODULUS_BYTES: usize = 256;
/// The largest JWKS read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Verifies `body` (a delivered webhook, the raw request body) against the
/// JWKS of `issuer` (`<issuer>/.well-known/jwks.json`) and returns its event.
///
/// `issuer` is the sender's URL: a kinde-meter server's public URL
/// (`serve --public-url`) or `https://<subdomain>.kinde.com`; a trailing `/`
/// is ignored. The JWKS is cached per issuer for the life of the process; use a
/// [`WebhookDecoder`] to choose the JWKS URL, the HTTP client or the cache
/// timings. See the [module documentation](self) for what is checked.
///
/// # Errors
///
/// See [`DecodeError`].
pub async fn decode(body: &str, issuer: &str) -> Result<WebhookEvent, DecodeError> {
    static DECODERS: OnceLock<Mutex<HashMap<String, WebhookDecoder>>> = OnceLock::new();
    let issuer = trim_issuer(issuer);
    let decoder = {
        let mut decoders = DECODERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        decoders
            .entry(issuer.to_owned())
            .or_insert_with(|| WebhookDecoder::new(issuer))
            .clone()
    };
    decoder.decode(body).await
}

/// Verifies webhook deliveries from one issuer, with its own JWKS cache.
/// Clones share the cache.
///
/// ```no_run
/// use std::time::Duration;
/// use kinde_sdk::webhooks::WebhookDecoder;
///
/// # async fn example(body: &str) -> Result<(), kinde_sdk::webhooks::DecodeError> {
/// let decoder = WebhookDecoder::new("https://meter.example.com")
///     // The server's JWKS as reached from here, if not under its public URL.
///     .with_jwks_url("http://10.0.0.7:8080/.well-known/jwks.json")
///     .with_refetch_cooldown(Duration::from_secs(10));
/// let event = decoder.decode(body).await?;
/// println!("{} {}", event.event_id, event.event_type());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WebhookDecoder {
    issuer: String,
    jwks_url: String,
    http: reqwest::Client,
    max_age: Duration,
    refetch_cooldown: Duration,
    cache: Arc<tokio::sync::Mutex<KeyCache>>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("fetched_at", &self.fetched_at)
            .finish()
    }
}

impl WebhookDecoder {
    /// A decoder for deliveries whose `iss` is `issuer` (a trailing `/`
    /// ignored), with keys from `<issuer>/.well-known/jwks.json`.
    pub fn new(issuer: &str) -> Self {
        // jsonwebtoken verifies with aws-lc-rs, unless the application chose
        // a provider itself (then this does nothing).
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let issuer = trim_issuer(issuer).to_owned();
        let http = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .timeout(JWKS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        WebhookDecoder {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            http,
            max_age: JWKS_MAX_AGE,
            refetch_cooldown: REFETCH_COOLDOWN,
            cache: Arc::default(),
        }
    }

    /// Fetches the keys from `jwks_url` instead of `<issuer>/.well-known/jwks.json`.
    pub fn with_jwks_url(mut self, jwks_url: impl Into<String>) -> Self {
        self.jwks_url = jwks_url.into();
        self.cache = Arc::default();
        self
    }

    /// Fetches the JWKS with `client` (its proxy, TLS roots and timeouts)
    /// instead of a default one (5 s timeout, no redirects).
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.http = client;
        self
    }

    /// How long a fetched JWKS is used before it is fetched again (default 10
    /// minutes).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The least time between two fetches caused by an unknown `kid` (default
    /// 30 s), so that tokens with made-up `kid`s cannot make the decoder fetch
    /// the JWKS on every call.
    pub fn with_refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.refetch_cooldown = cooldown;
        self
    }

    /// The issuer deliveries must name in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the keys are fetched from.
    pub fn jwks_url(&self) -> &str {
        &self.jwks_url
    }

    /// Verifies `body` and returns its event; see the
    /// [module documentation](self) for what is checked.
    ///
    /// # Errors
    ///
    /// See [`DecodeError`].
    pub async fn decode(&self, body: &str) -> Result<WebhookEvent, DecodeError> {
        let token = body.trim();
        let header = read_header(token)?;
        if header.alg != "RS256" {
            return Err(DecodeError::UnsupportedAlgorithm(header.alg));
        }
        let kid = header.kid.ok_or(DecodeError::MissingKeyId)?;
        let key = self.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => DecodeError::InvalidSignature,
                ErrorKind::ExpiredSignature => DecodeError::Expired,
                ErrorKind::ImmatureSignature => DecodeError::NotYetValid,
                _ => DecodeError::Malformed(error.to_string()),
            })?
            .claims;

        let issuer = claims.get("iss").and_then(Value::as_str);
        if issuer != Some(self.issuer.as_str()) {
            return Err(DecodeError::WrongIssuer {
                expected: self.issuer.clone(),
                found: issuer.map(str::to_owned),
            });
        }
        WebhookEvent::from_claims(claims)
    }

    /// The key with id `kid`, fetching the JWKS when the cache is empty or
    /// old, or lacks `kid` and was not fetched within the cooldown.
    async fn key(&self, kid: &str) -> Result<DecodingKey, DecodeError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        if !fresh {
            self.refresh(&mut cache).await?;
        }
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let cooling_down = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.refetch_cooldown);
        if fresh && !cooling_down {
            self.refresh(&mut cache).await?;
            if let Some(key) = cache.keys.get(kid) {
                return Ok(key.clone());
            }
        }
        Err(DecodeError::UnknownKeyId(kid.to_owned()))
    }

    async fn refresh(&self, cache: &mut KeyCache) -> Result<(), DecodeError> {
        let jwks_error = |reason: String| DecodeError::Jwks {
            url: self.jwks_url.clone(),
            reason,
        };
        let response = self
            .http
            .get(&self.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| jwks_error(error.to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(jwks_error(format!("answered {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(jwks_error("larger than 1 MiB".to_owned()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| jwks_error(error.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(jwks_error("larger than 1 MiB".to_owned()));
        }
        let jwks: Jwks = serde_json::from_slice(&body)
            .map_err(|error| jwks_error(format!("not a JSON Web Key Set: {error}")))?;
        cache.keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.kid.clone()?, rs256_key(jwk)?)))
            .collect();
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }
}

fn trim_issuer(issuer: &str) -> &str {
    issuer.trim_end_matches('/')
}

/// The protected header fields looked at before any key is.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn read_header(token: &str) -> Result<JoseHeader, DecodeError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DecodeError::Malformed(
            "not a compact JWT (three base64url parts)".to_owned(),
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| DecodeError::Malformed("the header is not base64url".to_owned()))?;
    serde_json::from_slice(&header).map_err(|error| {
        DecodeError::Malformed(format!("the header is not a JOSE header: {error}"))
    })
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// The members of a JWK that decide whether it verifies RS256.
#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// The key of `jwk` if it may verify RS256 signatures.
fn rs256_key(jwk: &Jwk) -> Option<DecodingKey> {
    let allowed = jwk.kty == "RSA"
        && jwk.alg.as_deref().is_none_or(|alg| alg == "RS256")
        && jwk.use_.as_deref().is_none_or(|use_| use_ == "sig")
        && jwk
            .key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|op| op == "verify"));
    if !allowed {
        return None;
    }
    let (n, e) = (jwk.n.as_deref()?, jwk.e.as_deref()?);
    let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
    let significant = modulus.iter().skip_while(|&&byte| byte == 0).count();
    if significant < MIN_MODULUS_BYTES {
        return None;
    }
    DecodingKey::from_rsa_components(n, e).ok()
}

/// Why a delivered body was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not a well-formed JWT, or its claims are not JSON.
    #[error("not a webhook token: {0}")]
    Malformed(String),
    /// The token's `alg` is not `RS256` (`none`, `HS256`, …).
    #[error("the token's algorithm {0:?} is not accepted (only RS256)")]
    UnsupportedAlgorithm(String),
    /// The token's header has no `kid`.
    #[error("the token names no key (kid)")]
    MissingKeyId,
    /// The issuer's JWKS has no RS256 key with the token's `kid`, even after
    /// fetching it again (or within the refetch cooldown).
    #[error("the issuer's JWKS has no key {0:?}")]
    UnknownKeyId(String),
    /// The JWKS could not be fetched or read.
    #[error("could not read the JWKS at {url}: {reason}")]
    Jwks {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The signature does not verify with the key named by `kid`.
    #[error("the token's signature is invalid")]
    InvalidSignature,
    /// The token has an `exp` that has passed.
    #[error("the token has expired")]
    Expired,
    /// The token has an `nbf` still in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token's `iss` is not the expected issuer.
    #[error("the token's issuer is {found:?}, not {expected:?}")]
    WrongIssuer {
        /// The issuer the decoder expects.
        expected: String,
        /// The token's `iss`, if it has one.
        found: Option<String>,
    },
    /// The token is valid, but its claims are not a webhook event, or the data
    /// of a known event type does not have that type's fields.
    #[error("the token's claims are not a webhook event: {source}")]
    Event {
        /// The verified claims.
        claims: Value,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
}

/// A verified webhook event: Kinde's envelope and the typed [`EventData`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event's id (`event_…`): the same on every retry and for every
    /// webhook that receives it, so receivers deduplicate by it.
    pub event_id: String,
    /// What caused it: `"api"` for kinde-meter; Kinde also sends `"admin"`,
    /// `"user"`.
    pub source: String,
    /// When it happened, RFC 3339 as sent.
    pub timestamp: String,
    /// When it happened, RFC 3339 in UTC with milliseconds, if sent.
    pub event_timestamp: Option<String>,
    /// The type and its data.
    pub data: EventData,
    /// Every claim of the token (`type`, `data`, `iss`, `iat`, `jti`, …), as
    /// sent.
    pub claims: Value,
}

impl WebhookEvent {
    /// The event type, e.g. `customer.plan_changed`.
    pub fn event_type(&self) -> &str {
        self.data.event_type()
    }

    /// When the event happened: `event_timestamp`, else `timestamp`, if either
    /// is RFC 3339.
    pub fn occurred_at(&self) -> Option<Timestamp> {
        self.event_timestamp
            .as_deref()
            .and_then(|at| at.parse().ok())
            .or_else(|| self.timestamp.parse().ok())
    }

    /// Reads verified claims as an event.
    pub fn from_claims(claims: Value) -> Result<WebhookEvent, DecodeError> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            event_type: String,
            event_id: String,
            #[serde(default)]
            source: String,
            #[serde(default)]
            timestamp: String,
            #[serde(default)]
            event_timestamp: Option<String>,
            #[serde(default)]
            data: Value,
        }
        let fail = |claims: Value, source| DecodeError::Event { claims, source };
        let envelope = match Envelope::deserialize(&claims) {
            Ok(envelope) => envelope,
            Err(source) => return Err(fail(claims, source)),
        };
        let data = match EventData::parse(envelope.event_type, envelope.data) {
            Ok(data) => data,
            Err(source) => return Err(fail(claims, source)),
        };
        Ok(WebhookEvent {
            event_id: envelope.event_id,
            source: envelope.source,
            timestamp: envelope.timestamp,
            event_timestamp: envelope.event_timestamp,
            data,
            claims,
        })
    }
}

/// An event's type and typed `data` (docs/api.md#webhooks).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventData {
    /// `customer.agreement_created`: an agreement was created.
    AgreementCreated(AgreementCreated),
    /// `customer.plan_assigned`: a customer with no active agreement got one.
    PlanAssigned(PlanAssigned),
    /// `customer.plan_changed`: a new agreement replaced the active one.
    PlanChanged(PlanChanged),
    /// `customer.agreement_cancelled`: an agreement ended (it was replaced).
    AgreementCancelled(AgreementCancelled),
    /// `customer.meter_usage_updated`: a feature's usage changed (at most one
    /// per agreement and feature per interval, with the usage when sent).
    MeterUsageUpdated(MeterUsageUpdated),
    /// `customer.entitlement_threshold_reached` (kinde-meter only): usage first
    /// reached a threshold of the feature's limit in a period.
    EntitlementThresholdReached(EntitlementThresholdReached),
    /// Any other type (Kinde's `user.created`, …), its data as sent.
    Other {
        /// The type.
        event_type: String,
        /// The data.
        data: Value,
    },
}

impl EventData {
    /// The `customer.agreement_created` type.
    pub const AGREEMENT_CREATED: &'static str = "customer.agreement_created";
    /// The `customer.plan_assigned` type.
    pub const PLAN_ASSIGNED: &'static str = "customer.plan_assigned";
    /// The `customer.plan_changed` type.
    pub const PLAN_CHANGED: &'static str = "customer.plan_changed";
    /// The `customer.agreement_cancelled` type.
    pub const AGREEMENT_CANCELLED: &'static str = "customer.agreement_cancelled";
    /// The `customer.meter_usage_updated` type.
    pub const METER_USAGE_UPDATED: &'static str = "customer.meter_usage_updated";
    /// The `customer.entitlement_threshold_reached` type.
    pub const ENTITLEMENT_THRESHOLD_REACHED: &'static str =
        "customer.entitlement_threshold_reached";

    /// The event type, e.g. `customer.meter_usage_updated`.
    pub fn event_type(&self) -> &str {
        match self {
            EventData::AgreementCreated(_) => Self::AGREEMENT_CREATED,
            EventData::PlanAssigned(_) => Self::PLAN_ASSIGNED,
            EventData::PlanChanged(_) => Self::PLAN_CHANGED,
            EventData::AgreementCancelled(_) => Self::AGREEMENT_CANCELLED,
            EventData::MeterUsageUpdated(_) => Self::METER_USAGE_UPDATED,
            EventData::EntitlementThresholdReached(_) => Self::ENTITLEMENT_THRESHOLD_REACHED,
            EventData::Other { event_type, .. } => event_type,
        }
    }

    /// Reads `data` as the data of `event_type`.
    pub fn parse(event_type: String, data: Value) -> Result<EventData, serde_json::Error> {
        fn typed<T: DeserializeOwned>(data: Value) -> Result<T, serde_json::Error> {
            serde_json::from_value(data)
        }
        Ok(match event_type.as_str() {
            Self::AGREEMENT_CREATED => EventData::AgreementCreated(typed(data)?),
            Self::PLAN_ASSIGNED => EventData::PlanAssigned(typed(data)?),
            Self::PLAN_CHANGED => EventData::PlanChanged(typed(data)?),
            Self::AGREEMENT_CANCELLED => EventData::AgreementCancelled(typed(data)?),
            Self::METER_USAGE_UPDATED => EventData::MeterUsageUpdated(typed(data)?),
            Self::ENTITLEMENT_THRESHOLD_REACHED => {
                EventData::EntitlementThresholdReached(typed(data)?)
            }
            _ => EventData::Other { event_type, data },
        })
    }
}

/// The data of `customer.agreement_created`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AgreementCreated {
    /// The customer.
    pub customer_id: String,
    /// The new agreement.
    pub agreement_id: String,
    /// Its plan.
    pub plan_code: String,
}

/// The data of `customer.plan_assigned`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PlanAssigned {
    /// The customer.
    pub customer_id: String,
    /// The new agreement.
    pub agreement_id: String,
    /// Its plan.
    pub plan_code: String,
}

/// The data of `customer.plan_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PlanChanged {
    /// The customer.
    pub customer_id: String,
    /// The new agreement.
    pub agreement_id: String,
    /// Its plan.
    pub plan_code: String,
    /// The plan of the agreement it replaced.
    pub previous_plan_code: String,
    /// The agreement it replaced.
    pub previous_agreement_id: String,
}

/// The data of `customer.agreement_cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AgreementCancelled {
    /// The customer.
    pub customer_id: String,
    /// The agreement that ended.
    pub agreement_id: String,
    /// Its plan.
    pub plan_code: String,
    /// When it ended.
    pub expires_on: Timestamp,
}

/// The data of `customer.meter_usage_updated`.
///
/// The data also carries `quantity`, the same usage as a JSON number (for
/// Kinde's receivers); it is not read here, as [`value`](Self::value) is exact
/// (it remains in [`WebhookEvent::claims`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MeterUsageUpdated {
    /// The customer.
    pub customer_id: String,
    /// The agreement the usage is recorded against.
    pub agreement_id: String,
    /// The metered feature.
    pub feature_code: String,
    /// The meter: the feature's code.
    pub meter_id: String,
    /// The period's usage when the event was built, exact.
    #[serde(deserialize_with = "usage_total")]
    pub value: UsageTotal,
    /// The billing period's start.
    pub period_start: Timestamp,
    /// The billing period's end.
    pub period_end: Timestamp,
}

/// The data of `customer.entitlement_threshold_reached` (kinde-meter only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct EntitlementThresholdReached {
    /// The customer.
    pub customer_id: String,
    /// The agreement.
    pub agreement_id: String,
    /// The feature.
    pub feature_code: String,
    /// The threshold reached, in percent of the limit (e.g. 80, 100).
    pub threshold_percent: u32,
    /// The feature's `limit_max` for the period.
    pub entitlement_limit_max: i64,
    /// The usage that reached the threshold, exact.
    #[serde(deserialize_with = "usage_total")]
    pub value: UsageTotal,
    /// The billing period's start.
    pub period_start: Timestamp,
    /// The billing period's end.
    pub period_end: Timestamp,
}

/// A usage total sent as a decimal string.
fn usage_total<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UsageTotal, D::Error> {
    let text = String::deserialize(deserializer)?;
    UsageTotal::parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_are_read_before_any_key() {
        let header = |json: &str| format!("{}.e30.", URL_SAFE_NO_PAD.encode(json));
        assert!(matches!(
            read_header(&header(r#"{"alg":"none"}"#)),
            Ok(JoseHeader { alg, kid: None }) if alg == "none"
        ));
        assert!(matches!(read_header("a.b"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            read_header("!!.b.c"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn claims_become_typed_events() {
        let claims = json!({
            "type": "customer.meter_usage_updated", "event_id": "event_1", "source": "api",
            "timestamp": "2025-01-02T03:04:05Z", "event_timestamp": "2025-01-02T03:04:05.000Z",
            "data": {"customer_id": "c", "agreement_id": "a", "feature_code": "api_calls",
                     "meter_id": "api_calls", "value": "1523.5", "quantity": 1523.5,
                     "period_start": "2025-01-01T00:00:00Z", "period_end": "2025-02-01T00:00:00Z"},
            "iss": "https://meter.example.com", "iat": 1735787045, "jti": "event_1"
        });
        let event = WebhookEvent::from_claims(claims).unwrap();
        assert_eq!(event.event_type(), "customer.meter_usage_updated");
        let EventData::MeterUsageUpdated(usage) = &event.data else {
            panic!("{event:?}");
        };
        assert_eq!(usage.value.to_string(), "1523.5");
        assert_eq!(
            event.occurred_at(),
            Some("2025-01-02T03:04:05Z".parse().unwrap())
        );

        let other = WebhookEvent::from_claims(json!({
            "type": "user.created", "event_id": "event_2", "data": {"user": {"id": "kp_1"}}
        }))
        .unwrap();
        assert_eq!(
            other.data,
            EventData::Other {
                event_type: "user.created".to_owned(),
                data: json!({"user": {"id": "kp_1"}})
            }
        );

        let broken = WebhookEvent::from_claims(json!({
            "type": "customer.plan_changed", "event_id": "event_3", "data": {"customer_id": "c"}
        }));
        assert!(matches!(broken, Err(DecodeError::Event { .. })));
    }

    #[test]
    fn only_rs256_signing_keys_of_2048_bits_are_kept() {
        let n = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        let short = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let jwk = |extra: Value| -> Jwk {
            let mut base = json!({"kty": "RSA", "kid": "k", "n": n, "e": "AQAB"});
            base.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(base).unwrap()
        };
        assert!(rs256_key(&jwk(json!({}))).is_some());
        assert!(rs256_key(&jwk(json!({"use": "sig", "alg": "RS256"}))).is_some());
        assert!(rs256_key(&jwk(json!({"use": "enc"}))).is_none());
        assert!(rs256_key(&jwk(json!({"alg": "RS512"}))).is_none());
        assert!(rs256_key(&jwk(json!({"key_ops": ["encrypt"]}))).is_none());
        assert!(rs256_key(&jwk(json!({"n": short}))).is_none());
        assert!(rs256_key(&jwk(json!({"kty": "EC"}))).is_none());
    }
}
