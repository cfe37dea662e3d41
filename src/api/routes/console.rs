//! The read-only console at `/console/`: one page, its script and its style sheet, built
//! into the binary (no CDN, nothing fetched from elsewhere). The page calls the service's
//! own JSON APIs with the API token the user types, which the script keeps in a variable
//! only (never in storage or a cookie), so the console can do exactly what that token can,
//! and it only reads. The assets are public: they hold no data.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles from the
//! service itself only (no inline script or style), connections to the service only, no
//! framing, no `<base>`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The Content-Security-Policy of the console's answers.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /console/`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/app.js`: the script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/app.css`: the style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
