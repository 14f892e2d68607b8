//! Issue 3's JWT attack suite, over HTTP: every forged, tampered or misaddressed
//! token is 403 INVALID_CREDENTIALS (or INSUFFICIENT_SCOPE where only the scope is
//! wrong), and none of them stores anything.

use crate::support::{TestApp, assert_error};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Claims that would be valid for `app`, to be bent by each attack.
fn claims(app: &TestApp) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({
        "iss": app.issuer,
        "aud": [format!("{}/api", app.issuer)],
        "azp": "attacker",
        "iat": now,
        "exp": now + 3600,
        "jti": "j",
        "gty": ["client_credentials"],
        "scope": "create:billing_agreements",
        "scp": ["create:billing_agreements"],
    })
}

/// Signs `claims` with the server's own key (a legitimate signature), under `kid`.
fn signed(app: &TestApp, claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, app.key.encoding_key()).unwrap()
}

async fn create_agreement(app: &TestApp, token: &str) -> reqwest::Response {
    app.create_agreement_with(token, "victim").await
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let kid = app.key.kid().to_owned();
    let now = jiff::Timestamp::now().as_second();
    let good = signed(&app, &claims(&app), &kid);
    assert_eq!(
        create_agreement(&app, &good).await.status(),
        StatusCode::OK,
        "the baseline token works"
    );

    let mut attacks: Vec<(&str, String)> = Vec::new();
    // alg: none, with and without a trailing dot.
    let none = format!(
        "{}.{}",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&claims(&app))
    );
    attacks.push(("alg none", format!("{none}.")));
    attacks.push(("alg none, no signature part", none.clone()));
    attacks.push((
        "alg None",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "None", "kid": kid})),
            b64(&claims(&app))
        ),
    ));
    // Key confusion: HS256 keyed with the server's RSA public key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let public_pem = app.key.public_key_pem();
    attacks.push((
        "HS256 with the public key as secret",
        encode(
            &hs,
            &claims(&app),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap(),
    ));
    // Expired, not yet valid, wrong issuer, wrong audience.
    let mut c = claims(&app);
    c["exp"] = json!(now - 3600);
    attacks.push(("expired", signed(&app, &c, &kid)));
    let mut c = claims(&app);
    c["nbf"] = json!(now + 3600);
    attacks.push(("nbf in the future", signed(&app, &c, &kid)));
    let mut c = claims(&app);
    c["iss"] = json!("https://evil.kinde.com");
    attacks.push(("wrong iss", signed(&app, &c, &kid)));
    let mut c = claims(&app);
    c["aud"] = json!(["https://evil.kinde.com/api"]);
    attacks.push(("wrong aud", signed(&app, &c, &kid)));
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("exp");
    attacks.push(("no exp", signed(&app, &c, &kid)));
    // A kid the server does not have, and no kid at all.
    attacks.push(("unknown kid", signed(&app, &claims(&app), "not-our-kid")));
    attacks.push((
        "no kid",
        encode(
            &Header::new(Algorithm::RS256),
            &claims(&app),
            app.key.encoding_key(),
        )
        .unwrap(),
    ));
    // Payload swapped after signing: more scopes, another client.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(&app);
    c["azp"] = json!("someone-else");
    attacks.push((
        "payload tampered",
        format!("{}.{}.{}", parts[0], b64(&c), parts[2]),
    ));
    // Signature of another token.
    let other = signed(&app, &json!({"different": true}), &kid);
    attacks.push((
        "signature swapped",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.split('.').nth(2).unwrap()
        ),
    ));
    // Scopes in the wrong claim type.
    let mut c = claims(&app);
    c["scp"] = json!("create:billing_agreements");
    attacks.push(("scp as a string", signed(&app, &c, &kid)));
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("scp");
    c["scope"] = json!(["create:billing_agreements"]);
    attacks.push(("scope as an array", signed(&app, &c, &kid)));

    for (what, token) in &attacks {
        let response = create_agreement(&app, token).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(
            body["errors"][0]["code"], "INVALID_CREDENTIALS",
            "{what}: {body}"
        );
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: the token is echoed"
        );
    }
    // Only the baseline created an agreement.
    let page = app
        .list_agreements("customer_id=victim&page_size=500")
        .await;
    assert_eq!(page["agreements"].as_array().unwrap().len(), 1);

    // A real token without the route's scope is a scope problem, not a credential one.
    let mut c = claims(&app);
    c["scp"] = json!(["read:meter_usage"]);
    c["scope"] = json!("read:meter_usage");
    assert_error(
        create_agreement(&app, &signed(&app, &c, &kid)).await,
        StatusCode::FORBIDDEN,
        &["INSUFFICIENT_SCOPE"],
    )
    .await;
}
