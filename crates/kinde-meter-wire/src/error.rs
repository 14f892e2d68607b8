//! Kinde's `ErrorResponse` shape and the stable error codes.

use serde::{Deserialize, Serialize};

/// Kinde's error body: `{"errors":[{"code":"...","message":"..."}]}`, one entry
/// per problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    /// The problems found, at least one.
    #[serde(default)]
    pub errors: Vec<Error>,
}

/// One problem of an [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Error {
    /// A stable machine-readable code, see [`ErrorCode`].
    #[serde(default)]
    pub code: String,
    /// A human-readable message naming the offending field.
    #[serde(default)]
    pub message: String,
}

impl ErrorResponse {
    /// A response with a single error.
    pub fn single(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            errors: vec![Error {
                code: code.as_str().to_owned(),
                message: message.into(),
            }],
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// The stable error codes of kinde-meter (`docs/errors.md`), as they appear in
        /// [`Error::code`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as written on the wire, e.g. `"INVALID_METER_VALUE"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text,)* }
            }

            /// The code for a wire string, `None` for a code this crate does not know
            /// (real Kinde may answer with codes of its own).
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code { $($text => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The body is not a JSON object.
    InvalidJson => "INVALID_JSON",
    /// A required field is absent or null.
    MissingField => "MISSING_FIELD",
    /// A field has the wrong JSON type or an unusable value.
    InvalidField => "INVALID_FIELD",
    /// `meter_value` is not a non-negative decimal of at most 18 integer and 9 fractional digits.
    InvalidMeterValue => "INVALID_METER_VALUE",
    /// `meter_usage_timestamp` is not an RFC 3339 date-time.
    InvalidTimestamp => "INVALID_TIMESTAMP",
    /// `meter_usage_timestamp` is more than 5 minutes in the future.
    TimestampInFuture => "TIMESTAMP_IN_FUTURE",
    /// `meter_type_code` is neither `delta` nor `absolute`.
    InvalidMeterType => "INVALID_METER_TYPE",
    /// The record would take a usage total beyond 10^27.
    ValueOutOfRange => "VALUE_OUT_OF_RANGE",
    /// No agreement has that id.
    AgreementNotFound => "AGREEMENT_NOT_FOUND",
    /// The agreement has ended.
    AgreementNotActive => "AGREEMENT_NOT_ACTIVE",
    /// The agreement's plan has no feature with that code.
    FeatureNotFound => "FEATURE_NOT_FOUND",
    /// The feature exists but is not metered.
    FeatureNotMetered => "FEATURE_NOT_METERED",
    /// The `Idempotency-Key` was used before with another body.
    IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
    /// A batch holds more than 100 records.
    BatchTooLarge => "BATCH_TOO_LARGE",
    /// The catalog has no plan with that code.
    PlanNotFound => "PLAN_NOT_FOUND",
    /// No webhook has that id.
    WebhookNotFound => "WEBHOOK_NOT_FOUND",
    /// No event has that id.
    EventNotFound => "EVENT_NOT_FOUND",
    /// The body is over 64 KiB.
    BodyTooLarge => "BODY_TOO_LARGE",
    /// The bearer token is missing, malformed, expired, wrongly signed or wrongly addressed.
    InvalidCredentials => "INVALID_CREDENTIALS",
    /// The token lacks the scope the route needs.
    InsufficientScope => "INSUFFICIENT_SCOPE",
    /// The caller's rate limit is exceeded.
    TooManyRequests => "TOO_MANY_REQUESTS",
    /// Storage is unavailable or the write queue is full; nothing was stored.
    ServiceUnavailable => "SERVICE_UNAVAILABLE",
    /// The record would take a period's usage of a feature with a hard limit
    /// (`enforce_limit`) beyond `limit_max`; nothing was stored.
    EntitlementLimitExceeded => "ENTITLEMENT_LIMIT_EXCEEDED",
    /// A route that does not exist (not in the documented list; answered for unknown paths).
    NotFound => "NOT_FOUND",
    /// A method the route does not allow.
    MethodNotAllowed => "METHOD_NOT_ALLOWED",
    /// The server failed unexpectedly while answering (a bug); the request may
    /// or may not have taken effect. The detail goes to the server's log only.
    InternalError => "INTERNAL_ERROR",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("SOMETHING_ELSE"), None);
    }

    #[test]
    fn error_response_shape() {
        let body = ErrorResponse::single(ErrorCode::MissingField, "meter_value is required");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"errors":[{"code":"MISSING_FIELD","message":"meter_value is required"}]}"#
        );
    }
}
