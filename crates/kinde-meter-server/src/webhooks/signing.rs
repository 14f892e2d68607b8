//! What a webhook delivery carries: the event as a compact RS256 JWT signed
//! with the server's current key (its `kid` in the header, the key in the
//! server's `/.well-known/jwks.json`), and the `webhook-id` header that names
//! the delivery (`docs/webhooks.md`).

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, Header};
use kinde_meter_core::webhook::{Event, EventId, WebhookId};
use sha2::{Digest, Sha256};

use crate::auth::SigningKey;

/// The content type of a delivery's body.
pub const CONTENT_TYPE: &str = "application/jwt";

/// The header naming the delivery.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";

/// The body of a delivery of `event`: Kinde's webhook claims
/// ([`Event::claims`]: `type`, `event_id`, `source`, `timestamp`,
/// `event_timestamp`, `data`, `iss` = `issuer`, `iat` = `now`, `jti` =
/// `event_id`) signed with `key` (header `alg: RS256`, `typ: JWT`, `kid`).
pub fn sign_event(
    key: &SigningKey,
    event: &Event,
    issuer: &str,
    now: Timestamp,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, &event.claims(issuer, now), key.encoding_key())
}

/// The `webhook-id` of the delivery of `event` to `webhook`: `msg_` and 32 hex
/// digits of a hash of both ids, so it is unique to the pair and the same on
/// every retry (a receiver may deduplicate by it, or by the body's
/// `event_id`, which is the same for every webhook).
pub fn webhook_message_id(webhook: &WebhookId, event: &EventId) -> String {
    let mut hash = Sha256::new();
    hash.update(webhook.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(event.as_str().as_bytes());
    let digest = hash.finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}
