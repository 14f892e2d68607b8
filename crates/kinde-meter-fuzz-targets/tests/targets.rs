//! The targets' own fixtures: what they rely on to reach the code under test.

use kinde_meter_fuzz_targets::{bearer, now, spool};
use kinde_meter_server::auth::{KeySet, MintRequest, Verifier, VerifierConfig, mint_token};

/// The signed mode of `bearer` only reaches the claims checks if the fixed key
/// verifies what it signs: a token minted by the server with it is accepted,
/// and one signed by the target from the same header and claims too.
#[test]
fn tokens_signed_with_the_fuzz_key_are_accepted() {
    let key = bearer::signing_key();
    let token = mint_token(
        key,
        &MintRequest {
            issuer: bearer::ISSUER.to_owned(),
            audience: vec![bearer::AUDIENCE.to_owned()],
            client_id: "client_1".to_owned(),
            scopes: vec!["create:meter_usage".to_owned()],
            lifetime: jiff::SignedDuration::from_hours(1),
            now: now(),
        },
    )
    .expect("minted");
    let verifier = Verifier::new(
        VerifierConfig::new(bearer::ISSUER, vec![bearer::AUDIENCE.to_owned()]),
        std::sync::Arc::new(KeySet::from_signing_keys(&[key])),
    );
    let principal = verifier
        .verify(&token, now().as_second())
        .expect("accepted");
    assert_eq!(principal.client_id, "client_1");

    let mut parts = token.split('.').map(|part| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url")
    });
    let (header, claims) = (parts.next().unwrap(), parts.next().unwrap());
    let resigned = bearer::sign(&header, &claims);
    assert_eq!(verifier.verify(&resigned, now().as_second()), Ok(principal));

    let mut input = vec![1];
    input.extend_from_slice(&header);
    input.push(b'\n');
    input.extend_from_slice(&claims);
    bearer::bearer(&input);
    bearer::bearer(format!("\0Bearer {token}").as_bytes());
}

/// The sealed mode of `spool` writes lines exactly as the SDK does (its header
/// line, as in the SDK's own test) and leaves the text after the last newline
/// unsealed.
#[test]
fn sealed_entries_are_spool_lines() {
    assert_eq!(
        spool::seal(b"{\"t\":\"h\",\"v\":1}\n{\"t\":\"k\",\"id\":7}\ntorn"),
        b"8f76f92d {\"t\":\"h\",\"v\":1}\ne48c593a {\"t\":\"k\",\"id\":7}\ntorn".to_vec()
    );
}
