//! The bearer token path of the server: `bearer_token` (the `Authorization`
//! header) and `Verifier::verify` (the JWT's header, signature and claims) of
//! `kinde-meter-server` (docs/tokens.md), with a fixed key so that signatures
//! can be made to verify.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use kinde_meter_server::auth::{
    DEFAULT_LEEWAY_SECS, KeySet, Principal, SigningKey, Verifier, VerifierConfig, bearer_token,
};
use serde_json::{Map, Value};

use crate::now;

/// The issuer the verifier accepts.
pub const ISSUER: &str = "https://fuzz.kinde-meter.test";
/// The audience the verifier accepts.
pub const AUDIENCE: &str = "https://fuzz.kinde-meter.test/api";

/// A key made for these targets only (it signs nothing else), fixed so that
/// corpus files naming its `kid` keep meaning the same key.
const KEY_PEM: &str = include_str!("fuzz-signing-key.pem");

/// The fixed signing key.
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_pem(KEY_PEM).expect("the fuzz key is valid"))
}

fn key_set() -> Arc<KeySet> {
    static KEYS: OnceLock<Arc<KeySet>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(KeySet::from_signing_keys(&[signing_key()])))
        .clone()
}

/// A token whose header and claims are the given JSON texts, signed RS256 with
/// the fixed key (whatever the header says).
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        signing_key().encoding_key(),
        Algorithm::RS256,
    )
    .expect("RS256 signing with the fuzz key");
    format!("{input}.{signature}")
}

/// The first byte chooses: even, the rest is an `Authorization` header value;
/// odd, the rest is a JWT header and its claims as JSON, separated by the
/// first newline, signed with the fixed key into a token presented as
/// `Bearer <token>`. Properties: a token taken from a header is its last
/// word, non-empty, and taken again from `Bearer <token>`; verifying a token
/// twice (the second time from the cache) gives the same answer; and an
/// accepted token's header and claims say what the principal says (RS256,
/// the fixed key's `kid`, the issuer, the audience, unexpired, `azp`/`sub`,
/// `scp`/`scope`).
pub fn bearer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header_value = if mode % 2 == 0 {
        let Ok(value) = std::str::from_utf8(rest) else {
            return;
        };
        value.to_owned()
    } else {
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (header, claims) = rest.split_at(split);
        format!(
            "Bearer {}",
            sign(header, claims.get(1..).unwrap_or_default())
        )
    };
    let Some(token) = bearer_token(&header_value) else {
        return;
    };
    assert!(
        !token.is_empty() && !token.contains([' ', '\t']),
        "{token:?}"
    );
    assert!(
        header_value.trim_end_matches([' ', '\t']).ends_with(token),
        "{token:?} is not the end of {header_value:?}"
    );
    assert_eq!(bearer_token(&format!("Bearer {token}")), Some(token));

    let verifier = Verifier::with_cache_capacity(
        VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        key_set(),
        4,
    );
    let now = now().as_second();
    let first = verifier.verify(token, now);
    let second = verifier.verify(token, now);
    assert_eq!(first, second, "the cache answered differently");
    if let Ok(principal) = first {
        check_accepted(token, &principal, now);
    }
}

/// What an accepted token must say, read from its parts here.
fn check_accepted(token: &str, principal: &Principal, now: i64) {
    // Lossy: a string the verifier does not read (a claim like `gty`, a header
    // member like `typ`) is not checked for UTF-8 by serde_json when it skips
    // it, so a signed token may carry invalid UTF-8 there and be accepted
    // (fuzz/regressions/bearer/invalid-utf8-in-unread-claim). Every member
    // checked below is read by the verifier, as UTF-8.
    let part = |index: usize| -> Map<String, Value> {
        let text = token.split('.').nth(index).expect("three parts");
        let json = URL_SAFE_NO_PAD.decode(text).expect("base64url");
        // Every key an ordinary key, as the verifier's typed claims read them.
        match kinde_meter_wire::json::from_slice(String::from_utf8_lossy(&json).as_bytes()) {
            Ok(Value::Object(object)) => object,
            other => panic!("an accepted token's part {index} is {other:?}"),
        }
    };
    let (header, claims) = (part(0), part(1));
    assert_eq!(header.get("alg"), Some(&Value::from("RS256")), "{header:?}");
    assert_eq!(
        header.get("kid"),
        Some(&Value::from(signing_key().kid())),
        "{header:?}"
    );
    assert!(!header.contains_key("crit"), "{header:?}");
    assert_eq!(claims.get("iss"), Some(&Value::from(ISSUER)), "{claims:?}");
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(auds)) => auds.contains(&Value::from(AUDIENCE)),
        _ => false,
    };
    assert!(audience_ok, "{claims:?}");
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .expect("a numeric exp");
    assert_eq!(
        principal.expires_at as f64,
        exp.floor().clamp(i64::MIN as f64, i64::MAX as f64)
    );
    let leeway = DEFAULT_LEEWAY_SECS as i64;
    assert!(
        principal.expires_at.saturating_add(leeway) > now,
        "{claims:?}"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("a numeric nbf");
        assert!(nbf.floor() <= (now + leeway) as f64, "{claims:?}");
    }
    let client = ["azp", "sub"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(Value::as_str))
        .unwrap_or("unknown");
    assert_eq!(principal.client_id, client, "{claims:?}");
    let scopes: Vec<String> = match (claims.get("scp"), claims.get("scope")) {
        (Some(Value::Array(scp)), _) => scp
            .iter()
            .map(|s| s.as_str().expect("scp strings").to_owned())
            .collect(),
        (None, Some(Value::String(scope))) => scope.split_whitespace().map(str::to_owned).collect(),
        (None, None) => Vec::new(),
        (scp, scope) => panic!("accepted scp {scp:?} with scope {scope:?}"),
    };
    assert_eq!(principal.scopes, scopes, "{claims:?}");
}
