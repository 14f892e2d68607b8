//! Verification of bearer tokens: RS256 only, key chosen by `kid`, then
//! `iss`, `aud`, `exp` and `nbf`, then scopes from `scp` or `scope`.
//! `jsonwebtoken` checks the signature, `iss`, `aud` and that `exp` is there;
//! this module picks the key by `kid`, checks the times against the caller's
//! clock, reads the principal and caches it.
//!
//! Verified tokens are cached by their exact text, so a client reusing its
//! token (the normal case) pays for one RSA verification per token instead of
//! one per request; see `docs/design.md#performance-budget` (about 35 µs against 8–11 µs
//! per request). Only successes are cached, and a hit still checks `exp`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use quick_cache::sync::Cache;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::identity::IssuerIdentity;
use super::keys::SigningKey;

/// Clock skew tolerated on `exp` and `nbf` unless configured otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// The largest leeway a [`Verifier`] accepts; larger values are clamped.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Number of verified tokens kept by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
/// Longer tokens are rejected before any parsing. Kinde's tokens are about
/// 1 KB; the bound keeps both the work per request and the cache small.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. All variants mean 403 `INVALID_CREDENTIALS` at
/// the HTTP layer; the variant (and [`reason`](Self::reason)) is for logs.
/// Never carries the token itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was presented.
    #[error("no bearer token")]
    MissingToken,
    /// Not a well-formed JWS/JWT, or a claim has the wrong JSON type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is anything but `RS256` (`none`, `HS256`, ...).
    #[error("unsupported signing algorithm (only RS256 is accepted)")]
    UnsupportedAlgorithm,
    /// The header has no `kid`.
    #[error("token header has no kid")]
    MissingKid,
    /// The `kid` names no key of the issuer.
    #[error("token kid names no known key")]
    UnknownKid,
    /// The signature does not match the header and payload.
    #[error("token signature is invalid")]
    BadSignature,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is missing or shares no value with the configured audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The token has no `exp`.
    #[error("token has no expiry")]
    MissingExpiry,
    /// `exp` (plus leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("token is not valid yet")]
    NotYetValid,
}

impl AuthError {
    /// A short fixed description for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "no bearer token",
            AuthError::Malformed(detail) => detail,
            AuthError::UnsupportedAlgorithm => "unsupported alg",
            AuthError::MissingKid => "missing kid",
            AuthError::UnknownKid => "unknown kid",
            AuthError::BadSignature => "bad signature",
            AuthError::WrongIssuer => "wrong issuer",
            AuthError::WrongAudience => "wrong audience",
            AuthError::MissingExpiry => "missing exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not valid yet (nbf)",
        }
    }
}

/// The authenticated caller, as read from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `azp`, else `sub`, else `"unknown"`.
    pub client_id: String,
    /// Granted scopes, from `scp` or else `scope`.
    pub scopes: Vec<String>,
    /// `exp`, in Unix seconds.
    pub expires_at: i64,
}

impl Principal {
    /// Whether the token grants `scope` (exact match).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What a [`Verifier`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Required `iss`, compared exactly.
    pub issuer: String,
    /// Accepted audiences: a token is accepted if its `aud` contains any.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

impl VerifierConfig {
    /// A config with the default leeway.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        VerifierConfig {
            issuer: issuer.into(),
            audiences,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// The built-in issuer's config: its issuer, its `<issuer>/api` audience
    /// plus `extra_audiences` (`--audience`), default leeway.
    pub fn for_identity(identity: &IssuerIdentity, extra_audiences: &[String]) -> Self {
        let mut audiences = vec![identity.audience()];
        for aud in extra_audiences {
            if !audiences.contains(aud) {
                audiences.push(aud.clone());
            }
        }
        VerifierConfig::new(identity.issuer(), audiences)
    }
}

/// The public keys tokens may be signed with, by `kid`.
///
/// Shared (`Arc`) and replaceable while verifiers use it, so that an
/// external issuer's JWKS can be refetched in the background and swapped in
/// with [`replace`](Self::replace). Every replacement bumps a generation
/// number, which makes verifiers re-check their cached tokens: a token
/// signed by a key that was withdrawn stops being accepted.
pub struct KeySet {
    keys: RwLock<Arc<HashMap<String, Arc<DecodingKey>>>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .field("generation", &self.generation())
            .finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet::new()
    }
}

impl KeySet {
    /// An empty key set (every token fails with [`AuthError::UnknownKid`]).
    pub fn new() -> Self {
        KeySet {
            keys: RwLock::new(Arc::new(HashMap::new())),
            generation: AtomicU64::new(0),
        }
    }

    /// The public halves of the built-in issuer's keys.
    pub fn from_signing_keys(keys: &[&SigningKey]) -> Self {
        let set = KeySet::new();
        set.replace(
            keys.iter()
                .map(|k| (k.kid().to_owned(), k.decoding_key().clone())),
        );
        set
    }

    /// Replaces all keys at once. Keys that are not RSA keys are dropped,
    /// since only RS256 is accepted. Returns the number of keys kept.
    pub fn replace(&self, keys: impl IntoIterator<Item = (String, DecodingKey)>) -> usize {
        let map: HashMap<String, Arc<DecodingKey>> = keys
            .into_iter()
            .filter(|(_, key)| key.family() == AlgorithmFamily::Rsa)
            .map(|(kid, key)| (kid, Arc::new(key)))
            .collect();
        let kept = map.len();
        // The lock only guards an `Arc` swap, so a panic elsewhere cannot
        // leave it inconsistent: recover from poisoning.
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        // Bumped after the swap: a verifier that read the new generation
        // necessarily looks keys up in the new map.
        self.generation.fetch_add(1, Ordering::AcqRel);
        kept
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// The known key ids, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        kids.sort();
        kids
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incremented by every [`replace`](Self::replace).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Reads the RS256 signing keys of a JWKS document (`{"keys":[...]}`), as
/// served at an issuer's `/.well-known/jwks`, by `kid`.
///
/// Keys without `kid`, of another type than RSA, with a `use` other than
/// `sig` or an `alg` other than `RS256` are skipped; a document that is not
/// a JWKS at all is an error.
pub fn parse_jwks(jwks: &Value) -> Result<HashMap<String, DecodingKey>, &'static str> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS document (no \"keys\" array)")?;
    let mut out = HashMap::new();
    for jwk in keys {
        let field = |name| jwk.get(name).and_then(Value::as_str);
        if field("kty") != Some("RSA") {
            continue;
        }
        if jwk.get("use").is_some() && field("use") != Some("sig") {
            continue;
        }
        if jwk.get("alg").is_some() && field("alg") != Some("RS256") {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (field("kid"), field("n"), field("e")) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_rsa_components(n, e) {
            out.insert(kid.to_owned(), key);
        }
    }
    Ok(out)
}

#[derive(Clone)]
struct CachedPrincipal {
    /// Shared with the requests that use it: a hit copies nothing.
    principal: Arc<Principal>,
    /// [`KeySet::generation`] when the token was verified.
    key_generation: u64,
}

/// Verifies bearer tokens against one issuer and a [`KeySet`], caching
/// successes. Cheap to share (`Arc<Verifier>`); all methods take `&self`.
pub struct Verifier {
    config: VerifierConfig,
    /// The checks jsonwebtoken makes, built from `config` once.
    validation: Validation,
    keys: Arc<KeySet>,
    /// Verified tokens by their exact bytes.
    cache: Cache<Box<[u8]>, CachedPrincipal>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .field("cached_tokens", &self.cache.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier with the default cache capacity. A leeway above
    /// [`MAX_LEEWAY_SECS`] is clamped to it.
    pub fn new(config: VerifierConfig, keys: Arc<KeySet>) -> Self {
        Verifier::with_cache_capacity(config, keys, DEFAULT_CACHE_CAPACITY)
    }

    /// The built-in issuer's verifier: accepts tokens signed by `key`.
    pub fn built_in(config: VerifierConfig, key: &SigningKey) -> Self {
        Verifier::new(config, Arc::new(KeySet::from_signing_keys(&[key])))
    }

    /// A verifier caching at most about `capacity` tokens.
    pub fn with_cache_capacity(
        mut config: VerifierConfig,
        keys: Arc<KeySet>,
        capacity: usize,
    ) -> Self {
        config.leeway_secs = config.leeway_secs.min(MAX_LEEWAY_SECS);
        super::keys::use_aws_lc();
        Verifier {
            validation: validation(&config),
            config,
            keys,
            cache: Cache::new(capacity.max(1)),
        }
    }

    /// The configuration in effect (leeway clamped).
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The key set, to replace keys (e.g. after refetching a JWKS).
    pub fn key_set(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Verifies `token` at `now` (Unix seconds) and returns its principal.
    ///
    /// An [`AuthError::UnknownKid`] is the caller's cue that an external
    /// issuer may have rotated keys: refetch its JWKS (rate-limited), replace
    /// the key set, and verify again.
    pub fn verify(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        self.verify_shared(token, now).map(Arc::unwrap_or_clone)
    }

    /// [`verify`](Self::verify), the principal shared with the cache (what
    /// the server uses: a cached token's principal is not copied).
    pub fn verify_shared(&self, token: &str, now: i64) -> Result<Arc<Principal>, AuthError> {
        // Read before verifying: if keys are replaced meanwhile, the entry
        // carries the old generation and is re-verified on its next use.
        let generation = self.keys.generation();
        if let Some(answer) = self.cached(token.as_bytes(), now) {
            return answer;
        }
        let principal = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(
            Box::from(token.as_bytes()),
            CachedPrincipal {
                principal: principal.clone(),
                key_generation: generation,
            },
        );
        Ok(principal)
    }

    /// The answer for `token` if these exact bytes were verified before with
    /// the current keys: its principal, or [`AuthError::Expired`] once it has
    /// expired (then it is forgotten); `None` if they were not.
    ///
    /// Only tokens that [`verify`](Self::verify) accepted are cached, and a
    /// token it accepts is three base64url parts joined by dots, so bytes
    /// found here are a well-formed bearer token: the server looks a header's
    /// token up here before checking its characters ([`bearer_token`]).
    pub fn cached(&self, token: &[u8], now: i64) -> Option<Result<Arc<Principal>, AuthError>> {
        let hit = self.cache.get(token)?;
        if hit.key_generation != self.keys.generation() {
            return None;
        }
        // The exact same bytes were verified before; only time moved.
        if hit.principal.expires_at.saturating_add(self.leeway()) <= now {
            self.cache.remove(token);
            return Some(Err(AuthError::Expired));
        }
        Some(Ok(hit.principal))
    }

    /// [`verify`](Self::verify) at the current time.
    pub fn verify_now(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify(token, jiff::Timestamp::now().as_second())
    }

    /// Forgets all cached tokens.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Number of tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    #[cfg(test)]
    pub(crate) fn is_cached(&self, token: &str) -> bool {
        self.cache.get(token.as_bytes()).is_some()
    }

    fn leeway(&self) -> i64 {
        // Clamped to MAX_LEEWAY_SECS at construction, so it fits.
        i64::try_from(self.config.leeway_secs).unwrap_or(MAX_LEEWAY_SECS as i64)
    }

    fn verify_uncached(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token too long"));
        }
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(AuthError::Malformed("not a three-part JWS"));
        }
        // The header only chooses the key. The algorithm is ours: RS256, the
        // only one in `self.validation`, whatever the header says.
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused_header(token))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: we understand no extension, so must reject.
            return Err(AuthError::Malformed("unsupported crit header"));
        }
        let kid = header.kid.ok_or(AuthError::MissingKid)?;
        let key = self.keys.get(&kid).ok_or(AuthError::UnknownKid)?;
        // Signature, then `iss`, `aud` and the presence of `exp`.
        let claims = jsonwebtoken::decode::<ObjectClaims>(token, &key, &self.validation)
            .map_err(|e| refused(e.kind(), token))?
            .claims
            .0;
        self.check_claims(claims, now)
    }

    /// What `self.validation` leaves to us: the time checks against the
    /// caller's clock (the cache checks `exp` the same way), and reading the
    /// principal.
    fn check_claims(&self, claims: RawClaims, now: i64) -> Result<Principal, AuthError> {
        let leeway = self.leeway();

        // jsonwebtoken also takes an array of issuers; ours is one string.
        if !matches!(claims.iss, Some(Value::String(_))) {
            return Err(AuthError::Malformed("iss is not a string"));
        }
        let exp = claims
            .exp
            .as_ref()
            .and_then(numeric_date)
            .ok_or(AuthError::Malformed("exp is not a number"))?;
        // RFC 7519 §4.1.4: valid only *before* exp.
        if exp.saturating_add(leeway) <= now {
            return Err(AuthError::Expired);
        }
        if let Some(v) = &claims.nbf {
            let nbf = numeric_date(v).ok_or(AuthError::Malformed("nbf is not a number"))?;
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }

        let azp = optional_string(claims.azp.as_ref(), "azp is not a string")?;
        let sub = optional_string(claims.sub.as_ref(), "sub is not a string")?;
        let client_id = azp.or(sub).unwrap_or("unknown").to_owned();

        // Both are type-checked when present, even if `scp` wins: a claim of
        // the wrong type means the token is not what we think it is.
        let scp = match &claims.scp {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or(AuthError::Malformed("scp is not an array of strings"))?,
            ),
            Some(_) => return Err(AuthError::Malformed("scp is not an array of strings")),
        };
        let scope = optional_string(claims.scope.as_ref(), "scope is not a string")?;
        let scopes = match (scp, scope) {
            (Some(scp), _) => scp,
            (None, Some(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
            (None, None) => Vec::new(),
        };

        Ok(Principal {
            client_id,
            scopes,
            expires_at: exp,
        })
    }
}

/// What jsonwebtoken checks for us: only RS256, `iss`, `aud`, and `exp`
/// present. Its own time checks are off: they read the system clock, while
/// [`Verifier::verify`] takes `now` and the cache must agree with it.
fn validation(config: &VerifierConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation
}

/// Why a header that jsonwebtoken could not read was refused: another `alg`
/// (`none`, `rs256`, ...) is [`AuthError::UnsupportedAlgorithm`], anything
/// else malformed.
fn refused_header(token: &str) -> AuthError {
    let header = token.split('.').next().unwrap_or_default();
    let Ok(json) = URL_SAFE_NO_PAD.decode(header) else {
        return AuthError::Malformed("header is not base64url");
    };
    match kinde_meter_wire::json::from_slice(&json) {
        Ok(Value::Object(header)) => match header.get("alg") {
            Some(Value::String(alg)) if alg != "RS256" => AuthError::UnsupportedAlgorithm,
            Some(Value::String(_)) => AuthError::Malformed("unreadable header member"),
            _ => AuthError::Malformed("header has no alg string"),
        },
        _ => AuthError::Malformed("header is not a valid JSON object"),
    }
}

/// Our name for a refusal by [`jsonwebtoken::decode`] (which runs after the
/// header was read, so `alg` is RS256 and the key is an RSA key).
fn refused(kind: &ErrorKind, token: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::BadSignature
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::UnsupportedAlgorithm
        }
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => missing_claim(claim, token),
        ErrorKind::Base64(_) => AuthError::Malformed("signature or payload is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("payload is not a valid JSON object")
        }
        _ => AuthError::Malformed("refused by the JWT library"),
    }
}

/// jsonwebtoken reports a required claim of the wrong type as missing; tell
/// the two apart. Only reached once the signature has been checked.
fn missing_claim(claim: &str, token: &str) -> AuthError {
    let present = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| kinde_meter_wire::json::from_slice(&json).ok())
        .is_some_and(|claims| claims.get(claim).is_some());
    match (claim, present) {
        ("exp", false) => AuthError::MissingExpiry,
        ("exp", true) => AuthError::Malformed("exp is not a number"),
        ("iss", false) => AuthError::WrongIssuer,
        ("iss", true) => AuthError::Malformed("iss is not a string"),
        ("aud", false) => AuthError::WrongAudience,
        ("aud", true) => AuthError::Malformed("aud is not a string or array of strings"),
        _ => AuthError::Malformed("a required claim is missing"),
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional (truncated).
fn numeric_date(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // `as` saturates out-of-range floats, and the time checks use
    // saturating arithmetic, so huge values cannot wrap around.
    f.is_finite().then_some(f.floor() as i64)
}

fn optional_string<'a>(
    v: Option<&'a Value>,
    err: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::Malformed(err)),
    }
}

/// [`RawClaims`] from a JSON object only: serde would also build a struct
/// from an array.
struct ObjectClaims(RawClaims);

impl<'de> Deserialize<'de> for ObjectClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = RawClaims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawClaims, A::Error> {
                RawClaims::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly).map(ObjectClaims)
    }
}

/// The claims we look at, each kept as raw JSON so that a wrong type gives
/// a precise error instead of a generic parse failure. A member present
/// twice is an error.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    azp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    scp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<Value>,
}

/// `Some` for any present member, including `null`: a claim explicitly set
/// to `null` is a claim of the wrong type, not an absent one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    kinde_meter_wire::json::value(d).map(Some)
}

/// The token of an `Authorization: Bearer <token>` header value.
///
/// The scheme is case-insensitive and followed by one or more spaces; the
/// token must be non-empty RFC 6750 `b64token` characters (so no spaces).
/// `None` for anything else.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let token = &header_value[bearer_token_span(header_value.as_bytes())?];
    let body = token.trim_end_matches('=');
    // Checked without an early exit and without branches per byte, which
    // the compiler turns into vector compares: a token is about 1 KB and is
    // checked on every request that misses the verified-token cache (a
    // byte-at-a-time `all` cost ~0.6 µs here).
    let valid = !body.is_empty()
        && body
            .bytes()
            .fold(0u8, |bad, b| bad | u8::from(!is_b64token_byte(b)))
            == 0;
    valid.then_some(token)
}

/// Where [`bearer_token`] finds the token in an `Authorization` value, its
/// characters not checked: the bytes after the `Bearer` scheme (any case)
/// and its spaces, the value's surrounding spaces and tabs left out (RFC
/// 9110 §5.5). Every boundary is at an ASCII byte, so the range also slices
/// the value as text.
pub fn bearer_token_span(header_value: &[u8]) -> Option<std::ops::Range<usize>> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = header_value.iter().position(|b| !blank(b))?;
    let end = header_value.iter().rposition(|b| !blank(b))? + 1;
    let space = start + header_value[start..end].iter().position(|&b| b == b' ')?;
    if !header_value[start..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token_start = space
        + header_value[space..end]
            .iter()
            .take_while(|&&b| b == b' ')
            .count();
    Some(token_start..end)
}

/// RFC 6750 `b64token` characters, besides the trailing `=`s.
fn is_b64token_byte(b: u8) -> bool {
    // `-`, `.`, `/` and the digits are 0x2D..=0x39; `b | 0x20` is a
    // lower-case letter exactly when `b` is a letter.
    (b.wrapping_sub(b'-') <= b'9' - b'-')
        | ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
}
