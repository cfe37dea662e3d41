//! Key listing for the security officer. `GET /v1/keys` lists every published key of each
//! role (revoked and destroyed ones with `active:false`) through the registry's
//! [`crate::keys::ActiveKeys`] view; private material never appears.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::json_response;
use crate::api::AppState;
use crate::api::auth::{Auth, SecurityOfficer};
use crate::api::error::ApiResult;
use crate::api::signing::blocking;
use crate::keys::KeyRole;

/// `GET /v1/keys`: `{"keys": {"grant-signing": [JWK...], "root": [...], "audit": [...]}}`.
pub async fn list(
    State(state): State<AppState>,
    _auth: Auth<SecurityOfficer>,
) -> ApiResult<Response> {
    let keys = state.keys().clone();
    let by_role = blocking(move || {
        let mut out = Map::new();
        for role in KeyRole::ALL {
            let jwks = keys.published_keys(role)?;
            out.insert(
                role.as_str().to_string(),
                serde_json::to_value(jwks).map_err(|e| {
                    crate::Error::new(crate::ErrorCode::Internal, format!("jwk: {e}"))
                })?,
            );
        }
        Ok(out)
    })
    .await?;
    let mut body = Map::new();
    body.insert("keys".into(), Value::Object(by_role));
    json_response(StatusCode::OK, &Value::Object(body))
}
