//! Request heads: the service's own bound on the URI and the header fields, answered in JSON
//! (414 `URI_TOO_LONG`, 431 `HEADERS_TOO_LARGE`) instead of hyper's empty responses. hyper's
//! buffers are set above this bound ([`hyper_head_bytes`]) so that every head up to them
//! reaches this check; what hyper still answers itself is listed in the README ("Errors that
//! are not JSON").

use axum::extract::{Request, State};

use super::AppState;
use super::error::ApiError;
use crate::error::{Error, ErrorCode};

/// hyper's HTTP/1.1 read buffer and HTTP/2 header-list limit for a service whose heads are
/// bounded by `max_header_bytes`: twice that, and at least 128 KiB, so that hyper's own
/// fixed URI limit (65,534 bytes) is reached before its buffer is.
pub fn hyper_head_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).max(128 * 1024)
}

/// The size of a request's head as it is written in HTTP/1.1: request line, each header
/// field as `name: value\r\n`, and the blank line.
pub fn head_bytes(req: &Request) -> usize {
    let line = req.method().as_str().len() + 1 + uri_bytes(req) + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

fn uri_bytes(req: &Request) -> usize {
    req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
}

/// Middleware: refuses a request whose URI alone (414) or whose whole head (431) is longer
/// than [`super::Limits::max_header_bytes`], before any route sees it.
pub async fn check_head(State(state): State<AppState>, req: Request) -> Result<Request, ApiError> {
    let max = state.limits().max_header_bytes;
    at_most("URI", uri_bytes(&req), max, ErrorCode::UriTooLong)?;
    at_most("head", head_bytes(&req), max, ErrorCode::HeadersTooLarge)?;
    Ok(req)
}

/// Refuses with `code` a request whose `part` is `len` bytes, more than `max`.
fn at_most(part: &str, len: usize, max: usize, code: ErrorCode) -> Result<(), ApiError> {
    if len > max {
        return Err(Error::new(
            code,
            format!("the request {part} is {len} bytes, more than the {max} allowed"),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_counted_as_http1_writes_it() {
        let req = Request::builder()
            .method("GET")
            .uri("/healthz?x=1")
            .header("host", "pa")
            .body(axum::body::Body::empty())
            .unwrap();
        let text = "GET /healthz?x=1 HTTP/1.1\r\nhost: pa\r\n\r\n";
        assert_eq!(head_bytes(&req), text.len());
        assert_eq!(hyper_head_bytes(16 * 1024), 128 * 1024);
        assert_eq!(hyper_head_bytes(100 * 1024), 200 * 1024);
    }
}
