//! What can go wrong with a call: one error enum per operation
//! ([`CreateMeterUsageRecordError`], [`GetMeterUsageError`], [`CreateWebHookError`], …), as in
//! aws-sdk-rust. Today they share their variants:
//!
//! | variant | when |
//! |---|---|
//! | `BadRequest(ErrorResponse)` | 400: invalid field, unknown agreement, reused idempotency key, a hard entitlement limit reached, … |
//! | `Forbidden(ErrorResponse)` | 403: missing, expired or wrong token; missing scope |
//! | `PayloadTooLarge(ErrorResponse)` | 413: body over 64 KiB |
//! | `TooManyRequests { error, retry_after }` | 429: rate limited; wait `retry_after` |
//! | `ServiceUnavailable { error, retry_after }` | 503: storage unavailable, nothing stored |
//! | `Unexpected { status, body, error }` | any other non-2xx status |
//! | `Transport(reqwest::Error)` | connection failure, timeout, interrupted response |
//! | `Decode { status, body, source }` | a 2xx whose body is not the expected JSON |
//! | `InvalidInput(String)` | the SDK refused to send the request (e.g. a required field unset) |
//! | `Token(TokenError)` | no access token could be obtained from the client credentials |
//!
//! A variant says what the status was; [`error_code`](CreateMeterUsageRecordError::error_code)
//! says which documented code the server gave, so a caller can match on
//! [`ErrorCode`] (e.g. `ENTITLEMENT_LIMIT_EXCEEDED`, a usage
//! record refused by a hard limit, see
//! [`is_entitlement_limit_exceeded`](CreateMeterUsageRecordError::is_entitlement_limit_exceeded)):
//!
//! ```
//! use kinde_sdk::CreateMeterUsageRecordError;
//! use kinde_sdk::models::ErrorCode;
//!
//! fn explain(error: &CreateMeterUsageRecordError) -> &'static str {
//!     match error.error_code() {
//!         Some(ErrorCode::EntitlementLimitExceeded) => "over the plan's hard limit; nothing stored",
//!         Some(ErrorCode::AgreementNotActive) => "the customer changed plans",
//!         _ if error.is_retryable() => "try again later",
//!         _ => "refused",
//!     }
//! }
//! # let _ = explain;
//! ```
//!
//! With the default [`RetryPolicy`](crate::RetryPolicy) an error is what the
//! *last* attempt got: retryable failures were already retried.
//!
//! Error bodies are parsed leniently: Kinde's `{"errors":[{"code","message"}]}`,
//! a single `{"code","message"}` object or an OAuth2 `{"error","error_description"}`
//! become an [`ErrorResponse`]; anything else (a proxy's HTML page, an empty body)
//! becomes one entry with an empty code and the raw body as its message.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use kinde_meter_wire::{ErrorCode, ErrorResponse};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

pub use crate::token::TokenError;

/// A non-success answer as read off the wire.
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// A request the SDK refused to send; becomes the operation's `InvalidInput`.
#[derive(Debug)]
pub(crate) struct InvalidInput(pub(crate) String);

/// How [`crate::client::ApiClient`] builds any operation's error, and what its
/// retry loop needs to know about one.
pub(crate) trait OperationError: From<InvalidInput> {
    /// A non-2xx answer.
    fn from_response(response: RawResponse) -> Self;
    /// No complete answer.
    fn transport(error: reqwest::Error) -> Self;
    /// A 2xx answer whose body did not decode.
    fn decode(status: StatusCode, body: String, source: serde_json::Error) -> Self;
    /// No token.
    fn token(error: TokenError) -> Self;
    /// Whether the same request may be sent again.
    fn retryable(&self) -> bool;
    /// The delay the server asked for.
    fn server_delay(&self) -> Option<Duration>;
    /// A 401 or 403: the token was refused.
    fn token_refused(&self) -> bool;
}

/// Defines an operation's error enum, its accessors and its [`OperationError`]
/// constructors.
///
/// `replay_safe` says whether sending the same request again cannot apply it
/// twice (a read, or a write carrying an `Idempotency-Key`). It decides whether
/// failures that leave the outcome unknown (a timeout, a 502) are retryable.
macro_rules! operation_error {
    ($(#[$meta:meta])* $name:ident, replay_safe = $replay_safe:literal) => {
        $(#[$meta])*
        ///
        /// See the [module documentation](crate::error) for what each variant means.
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            /// 400: the request was invalid (a missing or malformed field, an
            /// unknown agreement or feature, an idempotency key reused with another
            /// body, …). Fix the request; retrying it unchanged fails again.
            #[error("400 Bad Request: {}", Summary(.0))]
            BadRequest(ErrorResponse),
            /// 403: the token is missing, malformed, expired, wrongly signed or
            /// wrongly addressed, or lacks the scope the route needs.
            #[error("403 Forbidden: {}", Summary(.0))]
            Forbidden(ErrorResponse),
            /// 413: the body is over the server's limit (64 KiB for kinde-meter).
            #[error("413 Payload Too Large: {}", Summary(.0))]
            PayloadTooLarge(ErrorResponse),
            /// 429: the caller's rate limit is exceeded; nothing was done.
            #[error("429 Too Many Requests: {}", Summary(error))]
            TooManyRequests {
                /// The parsed error body.
                error: ErrorResponse,
                /// How long to wait before the server accepts a request again,
                /// from the `RateLimit-Reset` or `Retry-After` header.
                retry_after: Option<Duration>,
            },
            /// 503: the server cannot store right now (storage unavailable, write
            /// queue full); nothing was stored.
            #[error("503 Service Unavailable: {}", Summary(error))]
            ServiceUnavailable {
                /// The parsed error body.
                error: ErrorResponse,
                /// How long the server asks to wait, from the `Retry-After` (or
                /// `RateLimit-Reset`) header.
                retry_after: Option<Duration>,
            },
            /// Any other non-2xx status (401, 404, 500, 502, …).
            #[error("unexpected answer {status}: {}", Brief(body))]
            Unexpected {
                /// The status.
                status: StatusCode,
                /// The raw body.
                body: String,
                /// The body, if it parsed as an error response.
                error: Option<ErrorResponse>,
            },
            /// No complete answer: the connection failed, the request timed out
            /// ([`reqwest::Error::is_timeout`]) or the response was cut off.
            #[error(transparent)]
            Transport(reqwest::Error),
            /// The server answered success, but the body is not the JSON the
            /// operation returns. The request *was* applied.
            #[error("could not decode the body of a {status} answer")]
            Decode {
                /// The status.
                status: StatusCode,
                /// The raw body.
                body: String,
                /// Why it did not decode.
                #[source]
                source: serde_json::Error,
            },
            /// The SDK refused to send the request, e.g. because a required field
            /// of a builder was not set or the idempotency key is invalid.
            #[error("invalid request: {0}")]
            InvalidInput(String),
            /// No access token could be obtained from the client credentials
            /// ([`Auth::ClientCredentials`](crate::Auth::ClientCredentials)); the
            /// request itself was not sent.
            #[error("could not get an access token: {0}")]
            Token(#[source] TokenError),
        }

        impl $name {
            /// The server's error body, for an answer that had one.
            pub fn error_response(&self) -> Option<&ErrorResponse> {
                match self {
                    Self::BadRequest(error)
                    | Self::Forbidden(error)
                    | Self::PayloadTooLarge(error)
                    | Self::TooManyRequests { error, .. }
                    | Self::ServiceUnavailable { error, .. } => Some(error),
                    Self::Unexpected { error, .. } => error.as_ref(),
                    Self::Transport(_)
                    | Self::Decode { .. }
                    | Self::InvalidInput(_)
                    | Self::Token(_) => None,
                }
            }

            /// The first error code of the server's answer, e.g.
            /// `"INVALID_METER_VALUE"`; compare with
            /// [`ErrorCode::as_str`](crate::models::ErrorCode::as_str).
            pub fn code(&self) -> Option<&str> {
                self.error_response()?
                    .errors
                    .iter()
                    .map(|error| error.code.as_str())
                    .find(|code| !code.is_empty())
            }

            /// The first error code of the server's answer as an [`ErrorCode`],
            /// `None` without one or for a code this SDK does not know (real
            /// Kinde may answer with codes of its own; [`code`](Self::code) has
            /// them as text). See the [module documentation](crate::error).
            pub fn error_code(&self) -> Option<ErrorCode> {
                self.code().and_then(ErrorCode::parse)
            }

            /// Whether the server refused the request because it would take a
            /// period's usage of a feature with a hard limit beyond that limit
            /// (400 `ENTITLEMENT_LIMIT_EXCEEDED`, kinde-meter only). Nothing was
            /// stored, and sending the same request again is refused again.
            pub fn is_entitlement_limit_exceeded(&self) -> bool {
                matches!(self, Self::BadRequest(_))
                    && self.error_code() == Some(ErrorCode::EntitlementLimitExceeded)
            }

            /// The first error message of the server's answer, or the reason the
            /// SDK refused to send the request.
            pub fn message(&self) -> Option<&str> {
                if let Self::InvalidInput(message) = self {
                    return Some(message);
                }
                self.error_response()?
                    .errors
                    .iter()
                    .map(|error| error.message.as_str())
                    .find(|message| !message.is_empty())
            }

            /// The HTTP status, if the server answered.
            pub fn status(&self) -> Option<StatusCode> {
                match self {
                    Self::BadRequest(_) => Some(StatusCode::BAD_REQUEST),
                    Self::Forbidden(_) => Some(StatusCode::FORBIDDEN),
                    Self::PayloadTooLarge(_) => Some(StatusCode::PAYLOAD_TOO_LARGE),
                    Self::TooManyRequests { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
                    Self::ServiceUnavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
                    Self::Unexpected { status, .. } | Self::Decode { status, .. } => Some(*status),
                    Self::Transport(error) => error.status(),
                    Self::InvalidInput(_) | Self::Token(_) => None,
                }
            }

            /// How long the server asked to wait before trying again (429, 503,
            /// or the token endpoint's 429/503).
            pub fn retry_after(&self) -> Option<Duration> {
                match self {
                    Self::TooManyRequests { retry_after, .. }
                    | Self::ServiceUnavailable { retry_after, .. } => *retry_after,
                    Self::Token(error) => error.retry_after(),
                    _ => None,
                }
            }

            /// Whether sending the same request again (after
            /// [`retry_after`](Self::retry_after), with the same idempotency key)
            /// may succeed and cannot apply it twice.
            ///
            /// True for 429, 503 and connection failures. Failures that leave
            /// the outcome unknown — timeouts, cut-off responses, 408, 500, 502,
            /// 504 — are retryable only for operations that are safe to replay:
            /// reads, and usage writes, which always carry an `Idempotency-Key`.
            /// A token that could not be fetched is retryable when the token
            /// endpoint's failure is ([`TokenError::is_retryable`]): the request
            /// itself was never sent. Everything else (400, 403, 413, a success
            /// that did not decode, a refused input) fails the same way again.
            pub fn is_retryable(&self) -> bool {
                const REPLAY_SAFE: bool = $replay_safe;
                match self {
                    Self::TooManyRequests { .. } | Self::ServiceUnavailable { .. } => true,
                    Self::Unexpected { status, .. } => {
                        REPLAY_SAFE && matches!(status.as_u16(), 408 | 500 | 502 | 504)
                    }
                    Self::Transport(error) => {
                        !error.is_builder() && (error.is_connect() || REPLAY_SAFE)
                    }
                    Self::Token(error) => error.is_retryable(),
                    Self::BadRequest(_)
                    | Self::Forbidden(_)
                    | Self::PayloadTooLarge(_)
                    | Self::Decode { .. }
                    | Self::InvalidInput(_) => false,
                }
            }
        }

        impl From<InvalidInput> for $name {
            fn from(InvalidInput(message): InvalidInput) -> Self {
                Self::InvalidInput(message)
            }
        }

        impl OperationError for $name {
            fn from_response(response: RawResponse) -> Self {
                let RawResponse { status, headers, body } = response;
                let error = || parse_error_body(&body).unwrap_or_else(|| raw_error(status, &body));
                match status {
                    StatusCode::BAD_REQUEST => Self::BadRequest(error()),
                    StatusCode::FORBIDDEN => Self::Forbidden(error()),
                    StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(error()),
                    StatusCode::TOO_MANY_REQUESTS => Self::TooManyRequests {
                        error: error(),
                        retry_after: retry_after(&headers, Timestamp::now()),
                    },
                    StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable {
                        error: error(),
                        retry_after: retry_after(&headers, Timestamp::now()),
                    },
                    _ => Self::Unexpected { status, error: parse_error_body(&body), body },
                }
            }

            fn transport(error: reqwest::Error) -> Self {
                Self::Transport(error)
            }

            fn decode(status: StatusCode, body: String, source: serde_json::Error) -> Self {
                Self::Decode { status, body, source }
            }

            fn token(error: TokenError) -> Self {
                Self::Token(error)
            }

            fn retryable(&self) -> bool {
                self.is_retryable()
            }

            fn server_delay(&self) -> Option<Duration> {
                self.retry_after()
            }

            fn token_refused(&self) -> bool {
                matches!(
                    self.status().map(|status| status.as_u16()),
                    Some(401 | 403)
                ) && !matches!(self, Self::Transport(_))
            }
        }
    };
}

operation_error! {
    /// Failure of
    /// [`BillingMeterUsageApi::create_meter_usage_record`](crate::BillingMeterUsageApi::create_meter_usage_record).
    /// The request always carries an `Idempotency-Key`, so it is safe to replay.
    CreateMeterUsageRecordError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingMeterUsageApi::create_meter_usage_records_batch`](crate::BillingMeterUsageApi::create_meter_usage_records_batch).
    /// The request always carries an `Idempotency-Key` (for the whole batch), so it
    /// is safe to replay.
    CreateMeterUsageRecordsBatchError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingMeterUsageApi::get_meter_usage`](crate::BillingMeterUsageApi::get_meter_usage).
    GetMeterUsageError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingMeterUsageApi::export_meter_usage`](crate::BillingMeterUsageApi::export_meter_usage).
    ExportMeterUsageError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingAgreementsApi::create_billing_agreement`](crate::BillingAgreementsApi::create_billing_agreement).
    /// Not safe to replay when the outcome is unknown: a second agreement for the
    /// customer would end the first one.
    CreateBillingAgreementError, replay_safe = false
}

operation_error! {
    /// Failure of
    /// [`BillingAgreementsApi::get_billing_agreements`](crate::BillingAgreementsApi::get_billing_agreements).
    GetBillingAgreementsError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingEntitlementsApi::get_billing_entitlements`](crate::BillingEntitlementsApi::get_billing_entitlements).
    GetBillingEntitlementsError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`BillingEntitlementsApi::check`](crate::BillingEntitlementsApi::check).
    CheckBillingEntitlementError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`WebhooksApi::create_web_hook`](crate::WebhooksApi::create_web_hook).
    /// Not safe to replay when the outcome is unknown: a second call would make
    /// a second webhook.
    CreateWebHookError, replay_safe = false
}

operation_error! {
    /// Failure of [`WebhooksApi::get_web_hooks`](crate::WebhooksApi::get_web_hooks).
    GetWebHooksError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`WebhooksApi::update_web_hook`](crate::WebhooksApi::update_web_hook).
    /// Setting the same fields again changes nothing, so it is safe to replay.
    UpdateWebHookError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`WebhooksApi::delete_web_hook`](crate::WebhooksApi::delete_web_hook).
    /// Safe to replay: a repeat finds the webhook gone (`WEBHOOK_NOT_FOUND`).
    DeleteWebHookError, replay_safe = true
}

operation_error! {
    /// Failure of [`WebhooksApi::get_event`](crate::WebhooksApi::get_event).
    GetEventError, replay_safe = true
}

operation_error! {
    /// Failure of
    /// [`WebhooksApi::get_event_types`](crate::WebhooksApi::get_event_types).
    GetEventTypesError, replay_safe = true
}

/// Reads an error body in any shape we know, `None` for anything else.
fn parse_error_body(body: &str) -> Option<ErrorResponse> {
    use kinde_meter_wire::Error;
    use serde_json::Value;

    if let Ok(response) = serde_json::from_str::<ErrorResponse>(body)
        && !response.errors.is_empty()
    {
        return Some(response);
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body) else {
        return None;
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    // A single `{"code","message"}` (Kinde answers some errors so), or an OAuth2
    // `{"error","error_description"}` (token endpoints, gateways).
    let (code, message) = match (text("code"), text("message"), text("error")) {
        (Some(code), message, _) => (code, message.unwrap_or_default()),
        (None, Some(message), _) => (String::new(), message),
        (None, None, Some(error)) => (error, text("error_description").unwrap_or_default()),
        (None, None, None) => return None,
    };
    Some(ErrorResponse {
        errors: vec![Error { code, message }],
    })
}

/// An error response that keeps an unparseable body as its message.
fn raw_error(status: StatusCode, body: &str) -> ErrorResponse {
    let body = body.trim();
    let message = if body.is_empty() {
        status.canonical_reason().unwrap_or("no body").to_owned()
    } else {
        body.to_owned()
    };
    ErrorResponse {
        errors: vec![kinde_meter_wire::Error {
            code: String::new(),
            message,
        }],
    }
}

/// The delay the server asks for: `RateLimit-Reset` first, then `Retry-After`,
/// either as whole seconds (a fraction is rounded up); `Retry-After` may also be
/// an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    ["ratelimit-reset", "retry-after"]
        .into_iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(|value| parse_delay(value.trim(), now))
}

fn parse_delay(value: &str, now: Timestamp) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs(seconds.ceil() as u64));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    // A date in the past means "now"; a partial second is rounded up, as the
    // whole-second headers are.
    let wait = Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO);
    let whole = Duration::from_secs(wait.as_secs());
    Some(if wait > whole {
        whole + Duration::from_secs(1)
    } else {
        whole
    })
}

/// Displays an error response as `CODE: message; CODE: message`.
struct Summary<'a>(&'a ErrorResponse);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.errors.is_empty() {
            return f.write_str("(no details)");
        }
        for (i, error) in self.0.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if !error.code.is_empty() {
                write!(f, "{}: ", error.code)?;
            }
            write!(f, "{}", Brief(&error.message))?;
        }
        Ok(())
    }
}

/// Displays at most 300 characters of a text that may be a whole HTML page.
struct Brief<'a>(&'a str);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LIMIT: usize = 300;
        match self.0.char_indices().nth(LIMIT) {
            Some((end, _)) => write!(f, "{}…", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> RawResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.to_owned(),
        }
    }

    #[test]
    fn kinde_error_response_is_parsed() {
        let body = r#"{"errors":[{"code":"INVALID_METER_VALUE","message":"meter_value must be a decimal"},{"code":"MISSING_FIELD","message":"billing_feature_code is required"}]}"#;
        let error = CreateMeterUsageRecordError::from_response(response(400, &[], body));
        assert!(
            matches!(&error, CreateMeterUsageRecordError::BadRequest(e) if e.errors.len() == 2)
        );
        assert_eq!(error.code(), Some("INVALID_METER_VALUE"));
        assert_eq!(error.message(), Some("meter_value must be a decimal"));
        assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "400 Bad Request: INVALID_METER_VALUE: meter_value must be a decimal; \
             MISSING_FIELD: billing_feature_code is required"
        );
    }

    #[test]
    fn other_json_shapes_are_read_leniently() {
        let single = parse_error_body(r#"{"code":"INVALID_CREDENTIALS","message":"bad token"}"#);
        assert_eq!(single.unwrap().errors[0].code, "INVALID_CREDENTIALS");
        let oauth = parse_error_body(r#"{"error":"invalid_client","error_description":"nope"}"#);
        let oauth = oauth.unwrap();
        assert_eq!(
            (
                oauth.errors[0].code.as_str(),
                oauth.errors[0].message.as_str()
            ),
            ("invalid_client", "nope")
        );
        assert_eq!(parse_error_body(r#"{"errors":[]}"#), None);
        assert_eq!(parse_error_body(r#"{"errors":"broken"}"#), None);
        assert_eq!(parse_error_body("<html>Forbidden</html>"), None);
    }

    #[test]
    fn unparseable_bodies_are_kept_raw() {
        let error = GetMeterUsageError::from_response(response(403, &[], " <html>nope</html>\n"));
        let GetMeterUsageError::Forbidden(body) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(body.errors[0].message, "<html>nope</html>");
        assert_eq!(error.code(), None);
        assert_eq!(error.message(), Some("<html>nope</html>"));

        let empty = GetMeterUsageError::from_response(response(413, &[], ""));
        assert_eq!(empty.message(), Some("Payload Too Large"));
    }

    #[test]
    fn unexpected_statuses_keep_the_body() {
        let error = CreateMeterUsageRecordError::from_response(response(502, &[], "bad gateway"));
        let CreateMeterUsageRecordError::Unexpected {
            status,
            body,
            error: parsed,
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(
            (*status, body.as_str(), parsed),
            (StatusCode::BAD_GATEWAY, "bad gateway", &None)
        );
        assert!(
            error.is_retryable(),
            "a usage write carries an idempotency key"
        );
        let agreement = CreateBillingAgreementError::from_response(response(502, &[], ""));
        assert!(
            !agreement.is_retryable(),
            "creating an agreement twice is not harmless"
        );

        let not_found = GetMeterUsageError::from_response(response(
            404,
            &[],
            r#"{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}"#,
        ));
        assert_eq!(not_found.code(), Some("NOT_FOUND"));
        assert!(!not_found.is_retryable());
    }

    #[test]
    fn rate_limit_delay_comes_from_headers() {
        let error = CreateMeterUsageRecordError::from_response(response(
            429,
            &[("ratelimit-reset", "3"), ("retry-after", "5")],
            r#"{"errors":[{"code":"TOO_MANY_REQUESTS","message":"slow down"}]}"#,
        ));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        assert!(error.is_retryable());
        assert!(CreateBillingAgreementError::from_response(response(429, &[], "")).is_retryable());

        let unavailable =
            CreateMeterUsageRecordError::from_response(response(503, &[("retry-after", "7")], ""));
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(7)));
        assert!(unavailable.is_retryable());
    }

    #[test]
    fn delays_parse_seconds_fractions_and_http_dates() {
        let now: Timestamp = "2015-10-21T07:27:58.5Z".parse().unwrap();
        assert_eq!(parse_delay("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_delay("0.2", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_delay("-1", now), None);
        assert_eq!(parse_delay("soon", now), None);
        assert_eq!(
            parse_delay("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_delay("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn long_bodies_are_shortened_in_display() {
        let body = "x".repeat(1000);
        let error = GetMeterUsageError::from_response(response(500, &[], &body));
        let shown = error.to_string();
        assert!(shown.len() < 400, "{shown}");
        assert!(shown.ends_with('…'));
        let GetMeterUsageError::Unexpected { body: kept, .. } = error else {
            unreachable!()
        };
        assert_eq!(kept.len(), 1000);
    }
}
