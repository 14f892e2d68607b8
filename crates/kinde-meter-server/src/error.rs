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
        tracing::warn!(error = %e, "storage refused a request");
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
