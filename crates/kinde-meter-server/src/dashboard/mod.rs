//! The usage dashboard (`docs/dashboard.md`): one HTML page, one ES module and
//! one stylesheet, written by hand and compiled into the binary, served at
//! `GET /dashboard` and beside it. The page talks to the API of the server that
//! served it with a bearer token the user supplies (in the URL fragment, which
//! never reaches the server, or in a sign-in field) and keeps it in
//! `sessionStorage`; the routes here are public and carry no data.
//!
//! Every answer forbids what the page does not need: a `Content-Security-Policy`
//! that allows scripts, styles and requests to this origin only (no inline
//! code, no other host, no framing), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. Assets are revalidated on every use
//! (`Cache-Control: no-cache`) against a strong `ETag` of their bytes, so a new
//! binary's assets are picked up at once and an unchanged one costs a 304.

use std::sync::LazyLock;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

/// The page's `Content-Security-Policy`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// The page's `Cache-Control`: keep, but ask again before every use.
pub const CACHE_CONTROL: &str = "no-cache";

/// One embedded file with its content type and entity tag.
struct Asset {
    content_type: &'static str,
    bytes: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, bytes: &'static [u8]) -> Asset {
        let digest = Sha256::digest(bytes);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Asset {
            content_type,
            bytes,
            etag: HeaderValue::from_str(&etag).expect("a hex entity tag is a header value"),
        }
    }

    /// The asset, or 304 when the request's `If-None-Match` names its tag.
    fn answer(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag.as_bytes() == self.etag.as_bytes());
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = self.bytes.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    )
});
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("text/css; charset=utf-8", include_bytes!("assets/app.css")));

/// The usage dashboard: an HTML page that reads this server's API with a
/// token given in the URL fragment (`/dashboard#token=…`) or a sign-in field.
#[utoipa::path(get, path = "/dashboard", tag = "Dashboard", responses(
    (status = 200, description = "The dashboard's page", content_type = "text/html", body = String),
    (status = 304, description = "Not modified (If-None-Match names the page's ETag)"),
))]
pub async fn page(request: HeaderMap) -> Response {
    PAGE.answer(&request)
}

/// The dashboard's script (an ES module).
#[utoipa::path(get, path = "/dashboard/app.js", tag = "Dashboard", responses(
    (status = 200, description = "The dashboard's script", content_type = "text/javascript", body = String),
    (status = 304, description = "Not modified (If-None-Match names the script's ETag)"),
))]
pub async fn script(request: HeaderMap) -> Response {
    SCRIPT.answer(&request)
}

/// The dashboard's stylesheet.
#[utoipa::path(get, path = "/dashboard/app.css", tag = "Dashboard", responses(
    (status = 200, description = "The dashboard's stylesheet", content_type = "text/css", body = String),
    (status = 304, description = "Not modified (If-None-Match names the stylesheet's ETag)"),
))]
pub async fn style(request: HeaderMap) -> Response {
    STYLE.answer(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_with_the_tag_is_not_modified() {
        let tag = SCRIPT.etag.clone();
        let mut request = HeaderMap::new();
        assert_eq!(SCRIPT.answer(&request).status(), StatusCode::OK);
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(SCRIPT.answer(&request).status(), StatusCode::OK);
        let list = format!("\"other\", W/{}", tag.to_str().unwrap());
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&list).unwrap());
        let answer = SCRIPT.answer(&request);
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(answer.headers()[header::ETAG], tag);
        assert!(answer.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let html = std::str::from_utf8(PAGE.bytes).unwrap();
        assert!(html.contains(r#"src="dashboard/app.js""#), "{html}");
        assert!(html.contains(r#"href="dashboard/app.css""#), "{html}");
        for forbidden in ["http:", "https:", "<style", " style="] {
            assert!(!html.contains(forbidden), "{forbidden} in the page");
        }
        // No inline event handlers (`onclick=…`): the policy would block them.
        let handlers: Vec<&str> = html
            .split_whitespace()
            .filter(|word| word.starts_with("on") && word.contains('='))
            .collect();
        assert!(handlers.is_empty(), "{handlers:?}");
    }
}
