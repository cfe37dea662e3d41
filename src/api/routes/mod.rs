//! The route table and the router built from it. Each route is declared once, with the
//! role it requires: the router puts [`crate::api::auth::authenticate`] in front of every
//! route that has one, and handlers receive the admitted [`crate::api::auth::Caller`].

pub mod allowlists;
pub mod audit;
pub mod bundles;
pub mod console;
pub mod grants;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod policies;
pub mod public;
pub mod receipts;
pub mod tokens;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::AppState;
use super::auth::{Access, authenticate};
use super::error::ApiError;
use super::issuance::issue;
use super::observe;
use super::tokens::ApiRole;
use crate::error::ErrorCode;

/// One served route: method, path (axum / OpenAPI template syntax) and the role it requires
/// (`None` = public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// HTTP method.
    pub method: Method,
    /// Path template, e.g. `/v1/grants/{grantId}`.
    pub path: &'static str,
    /// Required role, or public.
    pub role: Option<ApiRole>,
    /// Further roles the route also admits (empty for most routes).
    pub also: &'static [ApiRole],
}

impl RouteEntry {
    /// Whether a token of `role` may call the route (public routes admit every role).
    pub fn allows(&self, role: ApiRole) -> bool {
        self.access().is_none_or(|a| a.admits(role))
    }

    /// The rule [`authenticate`] enforces, or `None` for a public route.
    pub fn access(&self) -> Option<Access> {
        self.role.map(|role| Access {
            role,
            also: self.also,
        })
    }
}

fn entry(
    method: Method,
    path: &'static str,
    role: Option<ApiRole>,
    handler: MethodRouter<AppState>,
) -> (RouteEntry, MethodRouter<AppState>) {
    entry_also(method, path, role, &[], handler)
}

/// A route admitting `role` and the roles in `also`.
fn entry_also(
    method: Method,
    path: &'static str,
    role: Option<ApiRole>,
    also: &'static [ApiRole],
    handler: MethodRouter<AppState>,
) -> (RouteEntry, MethodRouter<AppState>) {
    (
        RouteEntry {
            method,
            path,
            role,
            also,
        },
        handler,
    )
}

/// Every route the service serves, with its handler. The router is built from exactly this
/// list, and the OpenAPI document is tested against it. One row a route, kept as a table.
#[rustfmt::skip]
fn table_with_handlers() -> Vec<(RouteEntry, MethodRouter<AppState>)> {
    use ApiRole::*;
    vec![
        entry(Method::GET, "/healthz", None, get(public::healthz)),
        entry(Method::GET, "/readyz", None, get(public::readyz)),
        entry(Method::GET, "/.well-known/mpcp-keys.json", None, get(public::key_set)),
        entry(Method::GET, "/.well-known/mpcp-keys.signed.json", None, get(public::signed_key_set)),
        entry(Method::GET, "/.well-known/mpcp-trust-bundle.json", None, get(bundles::well_known)),
        entry(Method::GET, "/.well-known/mpcp-receipt-keys.json", None, get(public::receipt_key_set)),
        entry(Method::GET, "/v1/trust-bundles", None, get(bundles::list)),
        entry(Method::GET, "/v1/destination-allowlists/{allowlistId}", None, get(allowlists::get_latest)),
        entry(Method::POST, "/v1/policies", Some(Issuer), post(policies::store)),
        entry(Method::GET, "/v1/policies/{policyHash}", Some(Issuer), get(policies::fetch)),
        entry(Method::POST, "/v1/grants", Some(Issuer), post(issue::<grants::Grants>)),
        entry(Method::GET, "/v1/grants/{grantId}", Some(Issuer), get(grants::fetch)),
        // Its own grants for an issuer; any grant for a security officer (emergency).
        entry_also(Method::POST, "/v1/grants/{grantId}/revoke", Some(Issuer), &[SecurityOfficer], post(grants::revoke)),
        entry(Method::POST, "/v1/destination-allowlists", Some(Issuer), post(issue::<allowlists::Allowlists>)),
        entry(Method::POST, "/v1/trust-bundles", Some(SecurityOfficer), post(issue::<bundles::Bundles>)),
        entry(Method::GET, "/v1/keys", Some(SecurityOfficer), get(keys::list)),
        entry(Method::POST, "/v1/keys/{role}/rotate", Some(SecurityOfficer), post(keys::rotate)),
        entry(Method::POST, "/v1/keys/{kid}/revoke", Some(SecurityOfficer), post(keys::revoke)),
        entry(Method::POST, "/v1/keys/{kid}/destroy", Some(SecurityOfficer), post(keys::destroy)),
        entry_also(Method::GET, "/v1/ledger/account", Some(SecurityOfficer), &[Auditor], get(ledger::account)),
        entry_also(Method::GET, "/v1/ledger/transactions", Some(SecurityOfficer), &[Auditor], get(ledger::transactions)),
        entry(Method::GET, "/v1/tokens", Some(SecurityOfficer), get(tokens::list)),
        entry(Method::POST, "/v1/tokens", Some(SecurityOfficer), post(tokens::create)),
        entry(Method::POST, "/v1/tokens/{name}/revoke", Some(SecurityOfficer), post(tokens::revoke)),
        entry(Method::PUT, "/v1/receipts/policy", Some(SecurityOfficer), put(receipts::set_policy)),
        entry_also(Method::GET, "/v1/receipts/policy", Some(SecurityOfficer), &[Auditor], get(receipts::get_policy)),
        entry(Method::POST, "/v1/receipts/decisions", Some(ReceiptRequester), post(issue::<receipts::decisions::Decisions>)),
        entry(Method::POST, "/v1/receipts/consume", Some(ReceiptConsumer), post(receipts::consume::consume)),
        entry(Method::POST, "/v1/receipts/outcomes", Some(ReceiptConsumer), post(receipts::outcomes::report)),
        entry_also(Method::GET, "/v1/whoami", Some(Issuer), &[SecurityOfficer, Auditor, Monitoring, ReceiptRequester, ReceiptConsumer], get(tokens::whoami)),
        entry(Method::GET, "/v1/audit/checkpoint", Some(Auditor), get(audit::checkpoint)),
        entry_also(Method::POST, "/v1/audit/checkpoints", Some(Auditor), &[SecurityOfficer], post(audit::sign_checkpoint)),
        entry(Method::GET, "/v1/audit/vkeys", Some(Auditor), get(audit::vkeys)),
        entry(Method::GET, "/v1/audit/entries", Some(Auditor), get(audit::read::<audit::EntriesQuery>)),
        entry(Method::GET, "/v1/audit/proofs/inclusion", Some(Auditor), get(audit::read::<audit::InclusionQuery>)),
        entry(Method::GET, "/v1/audit/proofs/consistency", Some(Auditor), get(audit::read::<audit::ConsistencyQuery>)),
        // The auditor, or a monitoring token that can read nothing else (a scraper's).
        entry_also(Method::GET, "/metrics", Some(Monitoring), &[Auditor], get(metrics::scrape)),
        entry(Method::GET, "/console/", None, get(console::index)),
        entry(Method::GET, "/console/app.js", None, get(console::script)),
        entry(Method::GET, "/console/app.css", None, get(console::style)),
    ]
}

/// Every route the service serves.
pub fn table() -> Vec<RouteEntry> {
    table_with_handlers().into_iter().map(|(e, _)| e).collect()
}

/// Builds the router from [`table`].
pub fn build(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (e, handler) in table_with_handlers() {
        let handler = match e.access() {
            Some(access) => handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), access),
                authenticate,
            )),
            None => handler,
        };
        match by_path.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((e.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    // Outermost last: a request id is set (a malformed one replaced) before the span opens,
    // the span and the request's log line enclose the panic containment, so a panic is
    // answered, counted and logged like any 500.
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_request_with_state(
            state.clone(),
            super::head::check_head,
        ))
        .layer(axum::middleware::map_response(common_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(observe::request_span)
                .on_request(())
                .on_response(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(observe::REQUEST_ID))
        .layer(SetRequestIdLayer::new(observe::REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(
            observe::drop_malformed_request_id,
        ))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message may carry request data: it goes to the log (for the operator), never
    // to the caller, who gets the stable code.
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    tracing::error!(panic = %what, "handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

async fn common_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_and_answered_with_the_stable_code_only() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        for payload in [
            Box::new("boom in handler") as Box<dyn std::any::Any + Send>,
            Box::new(String::from("boom in handler")),
        ] {
            let log = Buffer::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .finish();
            let r = tracing::subscriber::with_default(subscriber, || panic_response(payload));
            let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
            assert!(logged.contains("handler panicked"), "{logged}");
            assert!(logged.contains("boom in handler"), "{logged}");
            assert_eq!(r.status(), 500);
            let body = rt
                .block_on(axum::body::to_bytes(r.into_body(), 1024))
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["code"], "INTERNAL");
            assert!(!String::from_utf8_lossy(&body).contains("boom"));
        }
    }
}
