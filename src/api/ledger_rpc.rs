//! A minimal rippled JSON-RPC client for the submitter ([`super::ledger_submitter`]):
//! `account_info`, `fee`, `submit` and `tx`, over plain http or https.
//!
//! The HTTP client is `reqwest` (well kept, and already in the tree as the tests' client),
//! rustls only: the ring provider is handed to it explicitly (no process-wide default is
//! installed) and https endpoints are checked against the platform's roots. Every call has a
//! 5 s deadline.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

/// Deadline of one JSON-RPC call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The endpoint is unreachable: connect error, timeout, HTTP 5xx.
    Down(String),
    /// The node answered with an RPC error (`actNotFound`, `txnNotFound`,
    /// `invalidTransaction`, ...).
    Rpc {
        /// rippled's error token.
        error: String,
        /// Its message.
        message: String,
    },
    /// The answer could not be understood.
    Bad(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Down(m) => write!(f, "endpoint unreachable: {m}"),
            RpcError::Rpc { error, message } => write!(f, "{error}: {message}"),
            RpcError::Bad(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

/// A transaction as `tx` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxStatus {
    /// Whether it is in a validated ledger.
    pub validated: bool,
    /// Its final result (`meta.TransactionResult`), once validated.
    pub result: Option<String>,
    /// The validated ledger holding it.
    pub ledger_index: Option<u32>,
}

/// The client of one endpoint.
#[derive(Debug, Clone)]
pub struct LedgerRpc {
    url: String,
    http: reqwest::Client,
}

fn http_client() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

impl LedgerRpc {
    /// A client of `url` (`http://` or `https://`).
    pub fn new(url: &str) -> crate::error::Result<LedgerRpc> {
        let bad = |why: String| {
            crate::error::Error::new(
                crate::error::ErrorCode::ConfigInvalid,
                format!("--xrpl-rpc {url}: {why}"),
            )
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("must be an http:// or https:// URL".into()));
        }
        Ok(LedgerRpc {
            url: url.to_string(),
            http: http_client().map_err(bad)?,
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params`; the `result` object of a successful answer.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let body = json!({"method": method, "params": [params]}).to_string();
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| RpcError::Down(e.to_string()))?;
        let status = r.status();
        if status.is_server_error() {
            return Err(RpcError::Down(format!("HTTP {}", status.as_u16())));
        }
        let bytes = r.bytes().await.map_err(|e| RpcError::Down(e.to_string()))?;
        if !status.is_success() {
            return Err(RpcError::Bad(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| RpcError::Bad(format!("not JSON: {e}")))?;
        let result = v
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Bad("no result".into()))?;
        if result.get("status").and_then(Value::as_str) == Some("error")
            || result.get("error").is_some()
        {
            let s = |k: &str| {
                result
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let message = match s("error_exception") {
                m if !m.is_empty() => m,
                _ => s("error_message"),
            };
            return Err(RpcError::Rpc {
                error: s("error"),
                message,
            });
        }
        Ok(result)
    }

    /// The account's `Sequence` in the current (open) ledger.
    pub async fn account_sequence(&self, account: &str) -> Result<u32, RpcError> {
        let r = self
            .call(
                "account_info",
                json!({"account": account, "ledger_index": "current"}),
            )
            .await?;
        r.pointer("/account_data/Sequence")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| RpcError::Bad("account_info without account_data.Sequence".into()))
    }

    /// The open ledger's fee (drops).
    pub async fn open_ledger_fee(&self) -> Result<u64, RpcError> {
        let r = self.call("fee", json!({})).await?;
        r.pointer("/drops/open_ledger_fee")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RpcError::Bad("fee without drops.open_ledger_fee".into()))
    }

    /// Submits `blob`: the engine result (`tesSUCCESS`, `terPRE_SEQ`, ...).
    pub async fn submit(&self, blob: &str) -> Result<String, RpcError> {
        let r = self.call("submit", json!({"tx_blob": blob})).await?;
        r.get("engine_result")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RpcError::Bad("submit without engine_result".into()))
    }

    /// What the ledger knows of `hash` (`None`: txnNotFound).
    pub async fn tx(&self, hash: &str) -> Result<Option<TxStatus>, RpcError> {
        match self.call("tx", json!({"transaction": hash})).await {
            Ok(r) => {
                let validated = r.get("validated").and_then(Value::as_bool) == Some(true);
                Ok(Some(TxStatus {
                    validated,
                    result: r
                        .pointer("/meta/TransactionResult")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    ledger_index: r
                        .get("ledger_index")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok()),
                }))
            }
            Err(RpcError::Rpc { error, .. }) if error == "txnNotFound" => Ok(None),
            Err(e) => Err(e),
        }
    }
}
