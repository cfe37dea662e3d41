//! `GET /metrics`: the appliance's metrics for Prometheus, for the `monitoring` role (and
//! the auditor).
//!
//! Why a role of its own: the token a Prometheus server holds sits in a configuration file
//! on another machine. A `monitoring` token reads the metrics and nothing else, so a leaked
//! scraper credential reveals counts and latencies, never the audit log, grants or keys.
//! The auditor may read them too: they are counts of what the audit log already records in
//! full, and reveal no token, secret or artifact.
//!
//! The values the appliance already keeps (the log's size, keys by role and state, the
//! readiness checks of `/readyz`) are sampled for each scrape. The answer is the Prometheus text format 0.0.4, or OpenMetrics
//! to a scraper whose `Accept` asks for `application/openmetrics-text`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiResult};
use crate::api::signing::blocking;
use crate::error::ErrorCode;
use crate::keys::KeyRole;

/// Content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics (404 NOT_FOUND when the appliance runs with metrics off).
pub async fn scrape(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(metrics) = state.metrics().cloned() else {
        return Err(ApiError::new(ErrorCode::NotFound, "metrics are off"));
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let registry = state.registry().clone();
    let audit = state.audit().clone();
    let s = state.clone();
    let text = blocking(move || {
        let checks: Vec<(String, bool)> = super::public::readiness_checks(&s)
            .into_iter()
            .map(|(name, code)| (name, code.is_none()))
            .collect();
        metrics.set_ready(&checks);
        metrics.set_audit_log(audit.size());
        let mut counts = Vec::new();
        for role in KeyRole::ALL {
            let mut by_state = std::collections::BTreeMap::<&'static str, u64>::new();
            for record in registry.list_role(role)? {
                *by_state.entry(record.state.as_str()).or_default() += 1;
            }
            counts.extend(
                by_state
                    .into_iter()
                    .map(|(s, n)| (role.as_str().to_string(), s.to_string(), n)),
            );
        }
        metrics.set_keys(&counts);
        let mut by_state = [
            ("signed", 0u64),
            ("submitted", 0),
            ("validated", 0),
            ("failed", 0),
        ];
        for tx in s
            .ledger()
            .list(&crate::api::ledger_book::TxFilter::default())?
        {
            if let Some(slot) = by_state.iter_mut().find(|(n, _)| *n == tx.state.as_str()) {
                slot.1 += 1;
            }
        }
        metrics.set_ledger_transactions(&by_state);
        Ok(if openmetrics {
            metrics.render_openmetrics()
        } else {
            metrics.render()
        })
    })
    .await?;
    let content_type = if openmetrics {
        OPENMETRICS_FORMAT
    } else {
        TEXT_FORMAT
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response())
}
