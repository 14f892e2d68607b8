//! Tests of the token module with real RSA keys.
//!
//! Key generation takes a noticeable time, so most tests share one key
//! generated once per test binary; only the tests about creating the key
//! file generate their own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_750_000_000;
const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "http://127.0.0.1:8080/api";

fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key generation"))
}

fn verifier() -> Verifier {
    Verifier::built_in(
        VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        test_key(),
    )
}

fn mint_request(scopes: &[&str]) -> MintRequest {
    MintRequest {
        issuer: ISSUER.to_owned(),
        audience: vec![AUDIENCE.to_owned()],
        client_id: "client-1".to_owned(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        lifetime: SignedDuration::from_secs(3600),
        now: Timestamp::from_second(NOW).unwrap(),
    }
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// A token with arbitrary header and claims, correctly RS256-signed by the
/// test key (so only the property under test is wrong).
fn signed(header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        test_key().encoding_key(),
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

fn rs256_header() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": test_key().kid()})
}

fn good_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "azp": "client-1",
        "exp": NOW + 3600,
        "iat": NOW,
        "scp": ["create:meter_usage"],
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn seed_key(dir: &Path) {
    let path = dir.join(KEY_FILE_NAME);
    std::fs::write(&path, test_key().to_pkcs8_pem().unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---------------------------------------------------------------- keys

#[test]
fn created_key_file_is_private_and_reloads_with_the_same_kid() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    let created = SigningKey::load_or_create(&data_dir).unwrap();
    let path = data_dir.join(KEY_FILE_NAME);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let reloaded = SigningKey::load_or_create(&data_dir).unwrap();
    assert_eq!(created.kid(), reloaded.kid());
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE_NAME)]);
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    seed_key(dir.path());
    let path = dir.path().join(KEY_FILE_NAME);
    for mode in [0o644, 0o640, 0o602, 0o610] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SigningKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: m, .. } if m == mode),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }
    // Restricting it is the fix; 0400 is fine too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(
        SigningKey::load_or_create(dir.path()).unwrap().kid(),
        test_key().kid()
    );
}

#[test]
fn racing_creators_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = Arc::new(dir.path().join("data"));
    let threads = 3;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let data_dir = data_dir.clone();
            std::thread::spawn(move || {
                barrier.wait();
                SigningKey::load_or_create(&data_dir)
                    .unwrap()
                    .kid()
                    .to_owned()
            })
        })
        .collect();
    let kids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
    let on_disk = SigningKey::load_or_create(&data_dir).unwrap();
    assert_eq!(on_disk.kid(), kids[0]);
    assert_eq!(std::fs::read_dir(&*data_dir).unwrap().count(), 1);
}

#[test]
fn garbage_key_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    std::fs::write(&path, "not a key").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SigningKey::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn kid_is_the_rfc_7638_thumbprint() {
    // The example of RFC 7638 §3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    assert_eq!(
        keys::rsa_thumbprint(n, "AQAB"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    let jwk = test_key().jwk();
    assert_eq!(
        keys::rsa_thumbprint(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()),
        test_key().kid()
    );
}

#[test]
fn jwk_and_jwks_have_the_published_shape() {
    let key = test_key();
    let jwk = key.jwk();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["kid"], key.kid());
    assert_eq!(jwk["e"], "AQAB");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256, "2048-bit modulus without a leading zero");
    assert_eq!(jwks(&[key]), json!({ "keys": [jwk] }));

    // jsonwebtoken reads it back as a JWK.
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
    assert_eq!(parsed.common.key_id.as_deref(), Some(key.kid()));
}

#[test]
fn debug_output_shows_only_the_kid() {
    let key = test_key();
    let debug = format!("{key:?}");
    assert!(debug.contains(key.kid()));
    let n = key.jwk()["n"].as_str().unwrap().to_owned();
    assert!(!debug.contains(&n[..20]));
    assert!(debug.len() < 120, "{debug}");
}

#[test]
fn pem_round_trip_keeps_the_key() {
    let key = test_key();
    let pem = key.to_pkcs8_pem().unwrap();
    assert_eq!(SigningKey::from_pem(&pem).unwrap().kid(), key.kid());
    assert!(
        key.public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert!(matches!(
        SigningKey::from_pem(&key.public_key_pem()),
        Err(KeyError::Invalid { .. })
    ));
}

#[test]
fn pem_forms() {
    use base64::engine::general_purpose::STANDARD;
    let pem = |label: &str, der: &[u8]| {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let key = test_key();
    let pkcs8_pem = key.to_pkcs8_pem().unwrap();
    let body: String = pkcs8_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let pkcs8 = STANDARD.decode(body).unwrap();
    // PKCS#8 wraps the PKCS#1 key in an OCTET STRING after the SEQUENCE
    // header, version 0 and the rsaEncryption algorithm identifier.
    let at = 4 + 3 + 15;
    assert_eq!(&pkcs8[at..at + 2], &[0x04, 0x82]);
    let pkcs1 = pem("RSA PRIVATE KEY", &pkcs8[at + 4..]);
    assert_eq!(SigningKey::from_pem(&pkcs1).unwrap().kid(), key.kid());
    // The first private key block counts; others are skipped.
    let after_public = format!("{}{pkcs8_pem}", key.public_key_pem());
    assert_eq!(
        SigningKey::from_pem(&after_public).unwrap().kid(),
        key.kid()
    );
    // Not RSA, or not a key.
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for text in [
        ec.as_str(),
        "",
        "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
    ] {
        assert!(
            matches!(SigningKey::from_pem(text), Err(KeyError::Invalid { .. })),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------- identity

#[test]
fn identity_defaults_saves_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(IssuerIdentity::load(dir.path()), None);
    let default = IssuerIdentity::default();
    assert_eq!(default.issuer(), "http://127.0.0.1:8080");
    assert_eq!(default.audience(), "http://127.0.0.1:8080/api");

    let identity = IssuerIdentity::new("https://meter.example.com/");
    assert_eq!(identity.issuer(), "https://meter.example.com");
    assert_eq!(identity.audience(), "https://meter.example.com/api");
    identity.save(dir.path()).unwrap();
    assert_eq!(IssuerIdentity::load(dir.path()), Some(identity));
    IssuerIdentity::new("http://other:1")
        .save(dir.path())
        .unwrap();
    assert_eq!(
        IssuerIdentity::load(dir.path()).unwrap().issuer(),
        "http://other:1"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    std::fs::write(dir.path().join(IDENTITY_FILE_NAME), "{").unwrap();
    assert!(IssuerIdentity::try_load(dir.path()).is_err());
    assert_eq!(IssuerIdentity::load(dir.path()), None);
}

// ---------------------------------------------------------------- mint

#[test]
fn minted_token_has_kinde_m2m_shape_and_verifies() {
    let token = mint_token(
        test_key(),
        &mint_request(&[
            "create:meter_usage",
            "read:meter_usage",
            "create:meter_usage",
        ]),
    )
    .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_segment(parts[0]);
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": test_key().kid()})
    );
    let claims = decode_segment(parts[1]);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], json!([AUDIENCE]));
    assert_eq!(claims["azp"], "client-1");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 3600);
    assert_eq!(claims["gty"], json!(["client_credentials"]));
    assert_eq!(claims["scope"], "create:meter_usage read:meter_usage");
    assert_eq!(
        claims["scp"],
        json!(["create:meter_usage", "read:meter_usage"])
    );
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 32);
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit()));

    let principal = verifier().verify(&token, NOW + 10).unwrap();
    assert_eq!(
        principal,
        Principal {
            client_id: "client-1".to_owned(),
            scopes: vec![
                "create:meter_usage".to_owned(),
                "read:meter_usage".to_owned()
            ],
            expires_at: NOW + 3600,
        }
    );
    assert!(principal.has_scope("read:meter_usage"));
    assert!(!principal.has_scope("read:meter"));

    // Two mints differ by jti.
    let again = mint_token(test_key(), &mint_request(&[])).unwrap();
    let other = mint_token(test_key(), &mint_request(&[])).unwrap();
    assert_ne!(again, other);
}

#[test]
fn jsonwebtoken_agrees_with_our_signing_and_verification() {
    let key = test_key();
    // Our token, their verifier.
    let token = mint_token(key, &mint_request(&["a"])).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(&token, key.decoding_key(), &validation).unwrap();
    assert_eq!(data.claims["azp"], "client-1");

    // Their token (signed with encoding_key()), our verifier.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid().to_owned());
    let theirs = jsonwebtoken::encode(&header, &good_claims(), key.encoding_key()).unwrap();
    assert!(verifier().verify(&theirs, NOW).is_ok());

    // And a key set built from our JWKS document verifies our tokens.
    let keys = KeySet::new();
    assert_eq!(keys.replace(parse_jwks(&jwks(&[key])).unwrap()), 1);
    let from_jwks = Verifier::new(
        VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        Arc::new(keys),
    );
    assert!(from_jwks.verify(&token, NOW).is_ok());
}

#[test]
fn mint_refuses_unusable_requests() {
    let mut req = mint_request(&["has space"]);
    assert!(matches!(
        mint_token(test_key(), &req),
        Err(MintError::Invalid(_))
    ));
    req = mint_request(&[""]);
    assert!(matches!(
        mint_token(test_key(), &req),
        Err(MintError::Invalid(_))
    ));
    req = mint_request(&["a"]);
    req.lifetime = SignedDuration::ZERO;
    assert!(matches!(
        mint_token(test_key(), &req),
        Err(MintError::Invalid(_))
    ));
    req = mint_request(&["a"]);
    req.audience.clear();
    assert!(matches!(
        mint_token(test_key(), &req),
        Err(MintError::Invalid(_))
    ));
}

#[test]
fn mint_for_data_dir_uses_the_saved_identity_or_the_override() {
    let dir = tempfile::tempdir().unwrap();
    seed_key(dir.path());
    let now = Timestamp::from_second(NOW).unwrap();
    let scopes = split_scopes("create:meter_usage  read:meter_usage");
    let lifetime = SignedDuration::from_secs(600);

    // Never saved: the default identity.
    let token = mint_for_data_dir(dir.path(), &scopes, None, None, lifetime, now).unwrap();
    let claims = decode_segment(token.split('.').nth(1).unwrap());
    assert_eq!(claims["iss"], DEFAULT_PUBLIC_URL);
    assert_eq!(claims["azp"], CLI_CLIENT_ID);
    assert_eq!(claims["exp"], NOW + 600);

    // Saved by the server: its identity; the server's verifier accepts it.
    let identity = IssuerIdentity::new("https://meter.example.com/");
    identity.save(dir.path()).unwrap();
    let token = mint_for_data_dir(dir.path(), &scopes, Some("ops"), None, lifetime, now).unwrap();
    let server = Verifier::built_in(VerifierConfig::for_identity(&identity, &[]), test_key());
    let principal = server.verify(&token, NOW).unwrap();
    assert_eq!(principal.client_id, "ops");
    assert_eq!(principal.scopes, scopes);

    // The override wins.
    let token = mint_for_data_dir(
        dir.path(),
        &scopes,
        None,
        Some("http://10.0.0.1:9000"),
        lifetime,
        now,
    )
    .unwrap();
    let claims = decode_segment(token.split('.').nth(1).unwrap());
    assert_eq!(claims["iss"], "http://10.0.0.1:9000");
    assert_eq!(claims["aud"], json!(["http://10.0.0.1:9000/api"]));

    // A corrupt identity file is an error, not a silent default.
    std::fs::write(dir.path().join(IDENTITY_FILE_NAME), "garbage").unwrap();
    assert!(matches!(
        mint_for_data_dir(dir.path(), &scopes, None, None, lifetime, now),
        Err(MintError::Identity(_))
    ));
}

// ---------------------------------------------------------------- verify: attacks

#[test]
fn alg_none_is_refused() {
    let header = json!({"alg": "none", "typ": "JWT", "kid": test_key().kid()});
    let unsigned = format!("{}.{}.", b64(&header), b64(&good_claims()));
    assert_eq!(
        verifier().verify(&unsigned, NOW),
        Err(AuthError::UnsupportedAlgorithm)
    );
    let header = json!({"alg": "None", "kid": test_key().kid()});
    let unsigned = format!("{}.{}.", b64(&header), b64(&good_claims()));
    assert_eq!(
        verifier().verify(&unsigned, NOW),
        Err(AuthError::UnsupportedAlgorithm)
    );
    // Without the signature segment at all.
    let two_parts = format!("{}.{}", b64(&header), b64(&good_claims()));
    assert!(matches!(
        verifier().verify(&two_parts, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let key = test_key();
    let spki_der = {
        let pem = key.public_key_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let secrets: Vec<Vec<u8>> = vec![
        key.public_key_pem().into_bytes(),
        spki_der,
        serde_json::to_vec(&key.jwk()).unwrap(),
    ];
    for secret in secrets {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &good_claims(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }
}

#[test]
fn other_algorithms_are_refused_even_with_a_valid_rs256_signature() {
    for alg in ["RS512", "PS256", "ES256", "rs256", "HS256", ""] {
        let header = json!({"alg": alg, "kid": test_key().kid()});
        // Signed with RS256 regardless: the header alone decides refusal.
        let token = signed(&header, &good_claims());
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(AuthError::UnsupportedAlgorithm),
            "alg {alg:?}"
        );
    }
    let no_alg = signed(&json!({"kid": test_key().kid()}), &good_claims());
    assert!(matches!(
        verifier().verify(&no_alg, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn expiry_is_checked_with_leeway() {
    let v = verifier();
    // exp in the past by more than the 30 s leeway.
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!(NOW - 31)),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::Expired));
    // Exactly at exp + leeway: expired (valid only strictly before).
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!(NOW - 30)),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::Expired));
    // Within the leeway.
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!(NOW - 29)),
    );
    assert!(v.verify(&token, NOW).is_ok());
    // Missing or mistyped exp.
    let token = signed(&rs256_header(), &without(good_claims(), "exp"));
    assert_eq!(v.verify(&token, NOW), Err(AuthError::MissingExpiry));
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!("9999999999")),
    );
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
    let token = signed(&rs256_header(), &with(good_claims(), "exp", Value::Null));
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn nbf_in_the_future_is_refused() {
    let v = verifier();
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "nbf", json!(NOW + 31)),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::NotYetValid));
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "nbf", json!(NOW + 30)),
    );
    assert!(v.verify(&token, NOW).is_ok());
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "nbf", json!(NOW - 100)),
    );
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn wrong_issuer_is_refused() {
    let v = verifier();
    for iss in [
        json!("https://evil.example.com"),
        json!("http://127.0.0.1:8080/"),
    ] {
        let token = signed(&rs256_header(), &with(good_claims(), "iss", iss));
        assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongIssuer));
    }
    let token = signed(&rs256_header(), &without(good_claims(), "iss"));
    assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongIssuer));
}

#[test]
fn audience_must_intersect() {
    let v = verifier();
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "aud", json!(["https://other/api"])),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongAudience));
    let token = signed(&rs256_header(), &with(good_claims(), "aud", json!([])));
    assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongAudience));
    let token = signed(&rs256_header(), &without(good_claims(), "aud"));
    assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongAudience));
    // A single string, and an array containing ours among others.
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "aud", json!(AUDIENCE)),
    );
    assert!(v.verify(&token, NOW).is_ok());
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "aud", json!(["https://other/api", AUDIENCE])),
    );
    assert!(v.verify(&token, NOW).is_ok());
    // Any configured audience is enough.
    let extra = Verifier::built_in(
        VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned(), "billing".to_owned()]),
        test_key(),
    );
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "aud", json!(["billing"])),
    );
    assert!(extra.verify(&token, NOW).is_ok());
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let v = verifier();
    let token = signed(
        &json!({"alg": "RS256", "kid": "not-our-key"}),
        &good_claims(),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::UnknownKid));
    let token = signed(&json!({"alg": "RS256"}), &good_claims());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::MissingKid));
}

#[test]
fn tampered_payload_is_refused() {
    let v = verifier();
    let token = mint_token(test_key(), &mint_request(&["read:meter_usage"])).unwrap();
    let admin = mint_token(test_key(), &mint_request(&["create:meter_usage"])).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let admin_parts: Vec<&str> = admin.split('.').collect();

    // Payload of another genuine token under this token's signature.
    let swapped = format!("{}.{}.{}", parts[0], admin_parts[1], parts[2]);
    assert_eq!(v.verify(&swapped, NOW), Err(AuthError::BadSignature));

    // Payload edited by hand.
    let mut claims = decode_segment(parts[1]);
    claims["scp"] = json!(["create:meter_usage", "read:meter_usage"]);
    let edited = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(v.verify(&edited, NOW), Err(AuthError::BadSignature));

    // Signature truncated or replaced.
    let truncated = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 4]
    );
    assert!(v.verify(&truncated, NOW).is_err());
    let empty_sig = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(v.verify(&empty_sig, NOW), Err(AuthError::BadSignature));

    // The genuine one still passes, and the failures were not cached.
    assert!(v.verify(&token, NOW).is_ok());
    assert!(!v.is_cached(&swapped));
    assert!(!v.is_cached(&edited));
}

#[test]
fn scope_claims_of_the_wrong_type_are_refused() {
    let v = verifier();
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "scp", json!("create:meter_usage")),
    );
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed("scp is not an array of strings"))
    );
    let token = signed(&rs256_header(), &with(good_claims(), "scp", json!([1, 2])));
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
    // serde_json's private raw value key is an ordinary key: an object, not
    // the array its string spells (kinde_meter_wire::json).
    let raw = json!({"$serde_json::private::RawValue": "[\"create:meter_usage\"]"});
    let token = signed(&rs256_header(), &with(good_claims(), "scp", raw));
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed("scp is not an array of strings"))
    );
    let token = signed(
        &rs256_header(),
        &with(
            without(good_claims(), "scp"),
            "scope",
            json!(["create:meter_usage"]),
        ),
    );
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed("scope is not a string"))
    );
}

#[test]
fn garbage_is_malformed() {
    let v = verifier();
    for token in ["x", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.e30"] {
        assert!(
            matches!(v.verify(token, NOW), Err(AuthError::Malformed(_))),
            "{token}"
        );
    }
    assert_eq!(v.verify("", NOW), Err(AuthError::MissingToken));
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(v.verify(&long, NOW), Err(AuthError::Malformed(_))));
    // A payload that is a JSON array, not an object.
    let token = signed(&rs256_header(), &json!(["x"]));
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
    // Unknown critical header extensions.
    let mut header = rs256_header();
    header["crit"] = json!(["exp"]);
    let token = signed(&header, &good_claims());
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn header_members_besides_alg_and_kid() {
    let v = verifier();
    // `typ` of any value, and extra string members, are ignored.
    for typ in [json!("JWT"), json!("at+jwt")] {
        let mut header = rs256_header();
        header["typ"] = typ;
        header["x-tenant"] = json!("acme");
        assert!(v.verify(&signed(&header, &good_claims()), NOW).is_ok());
    }
    let no_typ = json!({"alg": "RS256", "kid": test_key().kid()});
    assert!(v.verify(&signed(&no_typ, &good_claims()), NOW).is_ok());
    // jsonwebtoken reads extra header members as strings only: anything else
    // makes the header unreadable, and the token malformed.
    let mut header = rs256_header();
    header["x-version"] = json!(2);
    assert!(matches!(
        v.verify(&signed(&header, &good_claims()), NOW),
        Err(AuthError::Malformed(_))
    ));
    // A member twice.
    let twice = format!(
        r#"{{"alg":"RS256","kid":"{}","alg":"none"}}"#,
        test_key().kid()
    );
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(twice), b64(&good_claims()));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        test_key().encoding_key(),
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    assert!(v.verify(&format!("{input}.{sig}"), NOW).is_err());
}

#[test]
fn claims_of_odd_shapes() {
    let v = verifier();
    // A fractional exp counts whole seconds.
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!(NOW as f64 + 10.7)),
    );
    assert_eq!(v.verify(&token, NOW).unwrap().expires_at, NOW + 10);
    // Negative or absurd expiry.
    for exp in [json!(-1), json!(1e300), json!(true), json!({})] {
        let token = signed(&rs256_header(), &with(good_claims(), "exp", exp.clone()));
        assert!(v.verify(&token, NOW).is_err(), "exp {exp}");
    }
    // `iss` is one string, not a list that happens to contain ours.
    for iss in [json!([ISSUER]), json!(1), Value::Null] {
        let token = signed(&rs256_header(), &with(good_claims(), "iss", iss.clone()));
        assert!(
            matches!(v.verify(&token, NOW), Err(AuthError::Malformed(_))),
            "iss {iss}"
        );
    }
    // `aud` of the wrong type.
    for aud in [json!(1), json!([AUDIENCE, 1]), Value::Null] {
        let token = signed(&rs256_header(), &with(good_claims(), "aud", aud.clone()));
        assert!(
            matches!(v.verify(&token, NOW), Err(AuthError::Malformed(_))),
            "aud {aud}"
        );
    }
    // A claim twice: which one would count?
    let payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"azp":"a","azp":"b"}}"#,
        NOW + 60
    );
    let input = format!(
        "{}.{}",
        b64(&rs256_header()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        test_key().encoding_key(),
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    assert!(matches!(
        v.verify(&format!("{input}.{sig}"), NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn mangled_tokens_are_refused_without_panicking() {
    let v = verifier();
    let token = mint_token(test_key(), &mint_request(&["a"])).unwrap();
    assert!(v.verify(&token, NOW).is_ok());
    v.clear_cache();
    let bytes = token.as_bytes();
    for at in 0..bytes.len() {
        // Cut short, and one byte replaced (checking the signature of each
        // is slow, so the signature segment is sampled).
        assert!(v.verify(&token[..at], NOW).is_err(), "cut at {at}");
        if bytes[at] != b'.'
            && at + 1 < bytes.len()
            && at % 7 != 0
            && at > token.rfind('.').unwrap()
        {
            continue;
        }
        for replacement in [b'A', b'.', b'=', b'_', 0xff] {
            if bytes[at] == replacement {
                continue;
            }
            let mut mangled = bytes.to_vec();
            mangled[at] = replacement;
            let mangled = String::from_utf8_lossy(&mangled);
            assert!(v.verify(&mangled, NOW).is_err(), "{replacement} at {at}");
        }
    }
    assert_eq!(v.cached_tokens(), 0);
}

// ---------------------------------------------------------------- verify: claims

#[test]
fn scopes_come_from_scp_or_else_scope() {
    let v = verifier();
    let scope_only = signed(
        &rs256_header(),
        &with(without(good_claims(), "scp"), "scope", json!("a  b c")),
    );
    assert_eq!(v.verify(&scope_only, NOW).unwrap().scopes, ["a", "b", "c"]);

    let scp_only = signed(
        &rs256_header(),
        &with(good_claims(), "scp", json!(["x", "y"])),
    );
    assert_eq!(v.verify(&scp_only, NOW).unwrap().scopes, ["x", "y"]);

    let both = signed(
        &rs256_header(),
        &with(
            with(good_claims(), "scp", json!(["x"])),
            "scope",
            json!("a b"),
        ),
    );
    assert_eq!(v.verify(&both, NOW).unwrap().scopes, ["x"]);

    let neither = signed(&rs256_header(), &without(good_claims(), "scp"));
    assert!(v.verify(&neither, NOW).unwrap().scopes.is_empty());
}

#[test]
fn client_id_comes_from_azp_else_sub() {
    let v = verifier();
    let token = signed(
        &rs256_header(),
        &with(without(good_claims(), "azp"), "sub", json!("subject")),
    );
    assert_eq!(v.verify(&token, NOW).unwrap().client_id, "subject");
    let token = signed(&rs256_header(), &without(good_claims(), "azp"));
    assert_eq!(v.verify(&token, NOW).unwrap().client_id, "unknown");
}

#[test]
fn leeway_is_clamped_to_sixty_seconds() {
    let mut config = VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    config.leeway_secs = 3600;
    let v = Verifier::built_in(config, test_key());
    assert_eq!(v.config().leeway_secs, MAX_LEEWAY_SECS);
    let token = signed(
        &rs256_header(),
        &with(good_claims(), "exp", json!(NOW - 61)),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::Expired));
}

// ---------------------------------------------------------------- verify: cache

#[test]
fn cache_serves_hits_and_still_enforces_expiry() {
    let v = verifier();
    let token = mint_token(test_key(), &mint_request(&["a"])).unwrap();
    let exp = NOW + 3600;
    assert!(!v.is_cached(&token));
    let first = v.verify(&token, NOW).unwrap();
    assert!(v.is_cached(&token));
    assert_eq!(v.cached_tokens(), 1);
    let hit = v.verify(&token, NOW + 100).unwrap();
    assert_eq!(hit, first);
    assert_eq!(v.cached_tokens(), 1);

    // Within the leeway after exp: still accepted from the cache.
    assert!(v.verify(&token, exp + 29).is_ok());
    // Past it: refused although cached, and dropped from the cache.
    assert!(v.is_cached(&token));
    assert_eq!(v.verify(&token, exp + 30), Err(AuthError::Expired));
    assert!(!v.is_cached(&token));
    // Verifying from scratch gives the same answer.
    assert_eq!(v.verify(&token, exp + 30), Err(AuthError::Expired));
    assert!(!v.is_cached(&token));
}

/// `cached` answers for exactly the bytes `verify` accepted, enforces
/// expiry as a hit does, and knows nothing else (what the server's header
/// fast path relies on).
#[test]
fn cached_answers_only_for_verified_bytes() {
    let v = verifier();
    let token = mint_token(test_key(), &mint_request(&["a"])).unwrap();
    assert!(v.cached(token.as_bytes(), NOW).is_none());
    let principal = v.verify(&token, NOW).unwrap();
    assert_eq!(
        v.cached(token.as_bytes(), NOW)
            .map(|r| r.map(Arc::unwrap_or_clone)),
        Some(Ok(principal))
    );
    // Not a prefix, not another case, not with a trailing byte.
    assert!(v.cached(&token.as_bytes()[1..], NOW).is_none());
    assert!(v.cached(token.to_uppercase().as_bytes(), NOW).is_none());
    assert!(v.cached(format!("{token}=").as_bytes(), NOW).is_none());
    // A token refused is never cached.
    let forged = format!("{token}x");
    assert!(v.verify(&forged, NOW).is_err());
    assert!(v.cached(forged.as_bytes(), NOW).is_none());
    // Expired: refused once, then forgotten.
    let exp = NOW + 3600;
    assert_eq!(
        v.cached(token.as_bytes(), exp + 30).map(|r| r.map(|_| ())),
        Some(Err(AuthError::Expired))
    );
    assert!(v.cached(token.as_bytes(), exp + 30).is_none());
}

#[test]
fn replacing_keys_invalidates_cached_tokens() {
    let v = verifier();
    let token = mint_token(test_key(), &mint_request(&["a"])).unwrap();
    assert!(v.verify(&token, NOW).is_ok());
    assert!(v.is_cached(&token));
    v.key_set().replace(std::iter::empty());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::UnknownKid));
    v.key_set().replace([(
        test_key().kid().to_owned(),
        test_key().decoding_key().clone(),
    )]);
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn key_set_keeps_only_rsa_keys() {
    let keys = KeySet::new();
    assert!(keys.is_empty());
    let kept = keys.replace([
        (
            "hmac".to_owned(),
            jsonwebtoken::DecodingKey::from_secret(b"s"),
        ),
        (
            test_key().kid().to_owned(),
            test_key().decoding_key().clone(),
        ),
    ]);
    assert_eq!(kept, 1);
    assert_eq!(keys.kids(), vec![test_key().kid().to_owned()]);

    let parsed = parse_jwks(&json!({"keys": [
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        test_key().jwk(),
    ]}))
    .unwrap();
    assert_eq!(parsed.len(), 1);
    assert!(parsed.contains_key(test_key().kid()));
    assert!(parse_jwks(&json!({"nope": []})).is_err());
}

// ---------------------------------------------------------------- bearer header

/// `bearer_token_span` finds what `bearer_token` takes, before the
/// character check: wherever `bearer_token` accepts, the span is its token;
/// wherever only the span is found, its characters are what was refused.
#[test]
fn bearer_token_span_is_where_bearer_token_looks() {
    let values = [
        "Bearer abc.def-_~+/=",
        "bearer abc",
        "BEARER    abc",
        "  Bearer abc  ",
        "\tBearer abc\t",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer a b",
        "Bearer a\tb",
        "Bearer\tabc",
        "Bearer\t abc",
        "Basic abc",
        "Bearerabc",
        "Bearer ===",
        "Bearer a=b",
        "Bearer ab€",
        "",
        " ",
    ];
    for value in values {
        let span = bearer_token_span(value.as_bytes());
        match bearer_token(value) {
            Some(token) => assert_eq!(span.map(|s| &value[s]), Some(token), "{value:?}"),
            None => {
                if let Some(s) = span {
                    let body = value[s].trim_end_matches('=');
                    assert!(
                        body.is_empty()
                            || body
                                .bytes()
                                .any(|b| !(b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))),
                        "{value:?}: {body:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token("Bearer abc.def-_~+/="), Some("abc.def-_~+/="));
    assert_eq!(bearer_token("bearer abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER    abc"), Some("abc"));
    assert_eq!(bearer_token("  Bearer abc  "), Some("abc"));
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearer    "), None);
    assert_eq!(bearer_token("Bearer a b"), None);
    assert_eq!(bearer_token("Bearer a\tb"), None);
    assert_eq!(bearer_token("Bearer\tabc"), None);
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearerabc"), None);
    assert_eq!(bearer_token("Bearer ==="), None);
    assert_eq!(bearer_token("Bearer a=b"), None);
    assert_eq!(bearer_token(""), None);
    // Exactly RFC 6750's b64token characters, whatever their value.
    for b in 0x21..0x7f_u8 {
        let c = char::from(b);
        let expected = c.is_ascii_alphanumeric() || "-._~+/".contains(c);
        let token = format!("a{c}b");
        assert_eq!(
            bearer_token(&format!("Bearer {token}")).is_some(),
            expected,
            "{c:?}"
        );
    }
    // Long tokens are checked in blocks: a bad byte anywhere is found.
    let long = "aZ09-._~+/".repeat(30);
    assert_eq!(
        bearer_token(&format!("Bearer {long}==")).map(str::len),
        Some(302)
    );
    // (Not first or last: spaces there are trimmed, and `=`s end a token.)
    for at in [1, 63, 64, 65, 127, 128, 200, 298] {
        for bad in ['=', ' ', '%', '\u{e9}', '\u{0}'] {
            let mut token: Vec<char> = long.chars().collect();
            token[at] = bad;
            let token: String = token.into_iter().collect();
            assert_eq!(
                bearer_token(&format!("Bearer {token}")),
                None,
                "{bad:?} at {at}"
            );
        }
    }
}

// ---------------------------------------------------------------- cost

/// Rough per-call cost of minting and verifying (miss and cache hit), for
/// comparing implementations on one machine:
/// `cargo test --release -p kinde-meter-server --lib auth::tests::cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a test"]
fn cost() {
    use std::time::Instant;
    let key = test_key();
    let req = mint_request(&["create:meter_usage", "read:meter_usage"]);
    let per_call = |n: u32, f: &mut dyn FnMut()| {
        for _ in 0..n / 10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed() / n
    };
    let mint = per_call(500, &mut || {
        std::hint::black_box(mint_token(key, &req).unwrap());
    });
    let token = mint_token(key, &req).unwrap();
    let v = verifier();
    let miss = per_call(2000, &mut || {
        v.clear_cache();
        std::hint::black_box(v.verify(&token, NOW).unwrap());
    });
    let hit = per_call(200_000, &mut || {
        std::hint::black_box(v.verify(&token, NOW).unwrap());
    });
    // A genuine signature, of another token.
    let other = mint_token(key, &req).unwrap();
    let bad = format!(
        "{}.{}",
        &token[..token.rfind('.').unwrap()],
        &other[other.rfind('.').unwrap() + 1..]
    );
    let refused = per_call(2000, &mut || {
        std::hint::black_box(v.verify(&bad, NOW).unwrap_err());
    });
    println!("mint {mint:?}  verify: miss {miss:?}  hit {hit:?}  bad signature {refused:?}");
}
