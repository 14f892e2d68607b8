//! Errors become responses here, in one place, so every route answers in Kinde's
//! `{"errors":[{"code","message"}]}` shape by construction.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use kinde_meter_core::{ErrorCode, request::FieldError};
use kinde_meter_store::StoreError;
use kinde_meter_wire::{Error, ErrorResponse, Scope};
use std::{
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

/// An error answer: a status, one or more `{code, message}` entries, and the
/// seconds to wait for 429/503.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<Error>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An answer with a status and a single error.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            errors: vec![Error {
                code: code.as_str().to_owned(),
                message: message.into(),
            }],
            retry_after: None,
        }
    }

    /// 400 with one error.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 listing every field problem.
    pub fn fields(problems: Vec<FieldError>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: problems
                .into_iter()
                .map(|p| Error {
                    code: p.code.as_str().to_owned(),
                    message: p.message,
                })
                .collect(),
            retry_after: None,
        }
    }

    /// 403 `INVALID_CREDENTIALS`; the message never echoes the token.
    pub fn invalid_credentials(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InvalidCredentials,
            message,
        )
    }

    /// 403 `INSUFFICIENT_SCOPE`.
    pub fn insufficient_scope(scope: Scope) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            format!("the token lacks the scope {scope}"),
        )
    }

    /// 429 `TOO_MANY_REQUESTS`, retry after `seconds`.
    pub fn too_many_requests(seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "rate limit exceeded; retry later",
            )
        }
    }

    /// 413 `BODY_TOO_LARGE`.
    pub fn body_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "the body is over 64 KiB",
        )
    }

    /// 503 `SERVICE_UNAVAILABLE` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServiceUnavailable,
                message,
            )
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The detail goes to the log, not to the client.
        if let Some(suppressed) = STORE_REFUSALS.line_due(process_millis()) {
            tracing::warn!(
                error = %e,
                suppressed,
                "storage refused a request (and `suppressed` more since the previous line)"
            );
        }
        match e {
            StoreError::QueueFull => {
                ApiError::unavailable("the write queue is full; nothing was stored, retry later")
            }
            StoreError::ShuttingDown => ApiError::unavailable(
                "the server is shutting down; nothing was stored, retry later",
            ),
            StoreError::Unavailable(_) => {
                ApiError::unavailable("storage is unavailable; nothing was stored, retry later")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorResponse {
                errors: self.errors,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            let value = HeaderValue::from(seconds);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, value.clone());
            if self.status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert("ratelimit-reset", value);
            }
        }
        response
    }
}

/// Storage refusals' log lines: under overload or an outage every refused
/// request would write one (thousands a second); at most one a second is
/// written instead, counting those left out.
static STORE_REFUSALS: LogThrottle = LogThrottle::new(1000);

/// Milliseconds since the first call (the throttle's clock).
fn process_millis() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// At most one log line per `every_ms`, lock-free; the events not written
/// are counted and reported with the next line.
struct LogThrottle {
    every_ms: u64,
    next_line_at: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    const fn new(every_ms: u64) -> LogThrottle {
        LogThrottle {
            every_ms,
            next_line_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// For an event at `now_ms`: `Some(events left out since the last line)`
    /// when a line is due, `None` when this one is left out.
    fn line_due(&self, now_ms: u64) -> Option<u64> {
        let due = self.next_line_at.load(Relaxed);
        if now_ms >= due
            && self
                .next_line_at
                .compare_exchange(due, now_ms.saturating_add(self.every_ms), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn one_line_per_interval_and_the_next_line_counts_those_left_out() {
        let throttle = LogThrottle::new(1000);
        assert_eq!(throttle.line_due(0), Some(0));
        for now in [1, 500, 999] {
            assert_eq!(throttle.line_due(now), None);
        }
        assert_eq!(throttle.line_due(1000), Some(3));
        assert_eq!(throttle.line_due(1001), None);
        // A quiet spell: the next event is written at once.
        assert_eq!(throttle.line_due(60_000), Some(1));
        assert_eq!(throttle.line_due(60_001), None);
    }
}
