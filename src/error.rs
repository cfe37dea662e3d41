//! One error type for the whole appliance: a stable machine-readable code, a human message
//! and, where it helps, the offending field. The HTTP layer maps (`api::error::http_status`)
//! and renders `{code, message, field?}`; the CLI prints the code. Messages never carry PINs,
//! tokens or key material.

use std::fmt;

/// Stable error codes. The string form ([`ErrorCode::as_str`]) is part of the public
/// contract: tests, vectors and clients match on it, so a variant is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // Input that cannot be canonicalised unambiguously.
    JsonMalformed,
    JsonDuplicateKey,
    JsonNumberNotInteger,
    JsonNumberOutOfRange,
    JsonInvalidUtf8,
    JsonTooDeep,
    JsonTooLarge,
    CanonicalizationUnsupported,
    // Schema and content validation.
    SchemaInvalid,
    UnknownField,
    VersionUnsupported,
    GrantNotConforming,
    AddressInvalid,
    AmountInvalid,
    AmountInconsistent,
    TimestampInvalid,
    ScopeUnsupported,
    ArtifactUnknown,
    // Keys and signatures.
    KeyNotFound,
    KeyRevoked,
    KeySetInvalid,
    KeyFormatInvalid,
    KeyAlgMismatch,
    KeyPrivateMaterial,
    AlgorithmUnsupported,
    AlgorithmDeprecated,
    SignatureEncodingInvalid,
    SignatureHighS,
    SignatureInvalid,
    PolicyGrantSignatureInvalid,
    PolicyHashMismatch,
    GrantRevoked,
    IssuerNotApproved,
    BundleRootRequired,
    // Time.
    ArtifactExpired,
    ArtifactNotYetValid,
    LifetimeExceeded,
    // Appliance operations (HSM, key registry, audit log, service).
    HsmUnavailable,
    HsmPinInvalid,
    HsmTokenNotFound,
    HsmMechanismUnsupported,
    HsmKeyAttributesUnsafe,
    HsmTimeout,
    HsmError,
    ConfigInvalid,
    KeyStateInvalid,
    StoreError,
    AuditUnavailable,
    ClockBehind,
    ClockJump,
    ProofOutOfRange,
    IdempotencyConflict,
    Conflict,
    NotFound,
    Unauthorized,
    Forbidden,
    ClientCertificateRequired,
    RateLimited,
    PayloadTooLarge,
    UnsupportedMediaType,
    Io,
    Internal,
    // Audit log verification.
    AuditProofInvalid,
    AuditLogInvalid,
    AuditTimeBackwards,
    CheckpointInvalid,
    CheckpointInconsistent,
    // Appended codes.
    KeyRoleMismatch,
    // Service routing.
    RouteNotFound,
    MethodNotAllowed,
    NotReady,
    // Audit checkpoints.
    AuditKeyMissing,
    // API tokens.
    /// A retried token creation that already succeeded: its secret is never shown again.
    TokenSecretNotReplayed,
    // Key discovery.
    /// The signed key set cannot be produced: no usable root key (server state).
    KeySetUnavailable,
    /// An active key's private object is missing from its token (server state).
    KeyMaterialMissing,
    // Connection and request limits.
    /// The request body did not arrive within the body deadline (408).
    RequestTimeout,
    /// The request URI is longer than the service's head limit (414).
    UriTooLong,
    /// The request head (request line and header fields) is larger than the limit (431).
    HeadersTooLarge,
    // Authorization between callers.
    /// The artifact belongs to another issuer token (403): an issuer revokes only its own
    /// grants and versions only its own allowlists.
    NotOwner,
    /// The change would leave no active security-officer token (409).
    LastOfficer,
}

impl ErrorCode {
    /// The stable wire name of the code (SCREAMING_SNAKE_CASE).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            JsonMalformed => "JSON_MALFORMED",
            JsonDuplicateKey => "JSON_DUPLICATE_KEY",
            JsonNumberNotInteger => "JSON_NUMBER_NOT_INTEGER",
            JsonNumberOutOfRange => "JSON_NUMBER_OUT_OF_RANGE",
            JsonInvalidUtf8 => "JSON_INVALID_UTF8",
            JsonTooDeep => "JSON_TOO_DEEP",
            JsonTooLarge => "JSON_TOO_LARGE",
            CanonicalizationUnsupported => "CANONICALIZATION_UNSUPPORTED",
            SchemaInvalid => "SCHEMA_INVALID",
            UnknownField => "UNKNOWN_FIELD",
            VersionUnsupported => "VERSION_UNSUPPORTED",
            GrantNotConforming => "GRANT_NOT_CONFORMING",
            AddressInvalid => "ADDRESS_INVALID",
            AmountInvalid => "AMOUNT_INVALID",
            AmountInconsistent => "AMOUNT_INCONSISTENT",
            TimestampInvalid => "TIMESTAMP_INVALID",
            ScopeUnsupported => "SCOPE_UNSUPPORTED",
            ArtifactUnknown => "ARTIFACT_UNKNOWN",
            KeyNotFound => "KEY_NOT_FOUND",
            KeyRevoked => "KEY_REVOKED",
            KeySetInvalid => "KEY_SET_INVALID",
            KeyFormatInvalid => "KEY_FORMAT_INVALID",
            KeyAlgMismatch => "KEY_ALG_MISMATCH",
            KeyPrivateMaterial => "KEY_PRIVATE_MATERIAL",
            AlgorithmUnsupported => "ALGORITHM_UNSUPPORTED",
            AlgorithmDeprecated => "ALGORITHM_DEPRECATED",
            SignatureEncodingInvalid => "SIGNATURE_ENCODING_INVALID",
            SignatureHighS => "SIGNATURE_HIGH_S",
            SignatureInvalid => "SIGNATURE_INVALID",
            PolicyGrantSignatureInvalid => "POLICY_GRANT_SIGNATURE_INVALID",
            PolicyHashMismatch => "POLICY_HASH_MISMATCH",
            GrantRevoked => "GRANT_REVOKED",
            IssuerNotApproved => "ISSUER_NOT_APPROVED",
            BundleRootRequired => "BUNDLE_ROOT_REQUIRED",
            ArtifactExpired => "ARTIFACT_EXPIRED",
            ArtifactNotYetValid => "ARTIFACT_NOT_YET_VALID",
            LifetimeExceeded => "LIFETIME_EXCEEDED",
            HsmUnavailable => "HSM_UNAVAILABLE",
            HsmPinInvalid => "HSM_PIN_INVALID",
            HsmTokenNotFound => "HSM_TOKEN_NOT_FOUND",
            HsmMechanismUnsupported => "HSM_MECHANISM_UNSUPPORTED",
            HsmKeyAttributesUnsafe => "HSM_KEY_ATTRIBUTES_UNSAFE",
            HsmTimeout => "HSM_TIMEOUT",
            HsmError => "HSM_ERROR",
            ConfigInvalid => "CONFIG_INVALID",
            KeyStateInvalid => "KEY_STATE_INVALID",
            StoreError => "STORE_ERROR",
            AuditUnavailable => "AUDIT_UNAVAILABLE",
            ClockBehind => "CLOCK_BEHIND",
            ClockJump => "CLOCK_JUMP",
            ProofOutOfRange => "PROOF_OUT_OF_RANGE",
            IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Conflict => "CONFLICT",
            NotFound => "NOT_FOUND",
            Unauthorized => "UNAUTHORIZED",
            Forbidden => "FORBIDDEN",
            ClientCertificateRequired => "CLIENT_CERTIFICATE_REQUIRED",
            RateLimited => "RATE_LIMITED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Io => "IO_ERROR",
            Internal => "INTERNAL",
            AuditProofInvalid => "AUDIT_PROOF_INVALID",
            AuditLogInvalid => "AUDIT_LOG_INVALID",
            AuditTimeBackwards => "AUDIT_TIME_BACKWARDS",
            CheckpointInvalid => "CHECKPOINT_INVALID",
            CheckpointInconsistent => "CHECKPOINT_INCONSISTENT",
            KeyRoleMismatch => "KEY_ROLE_MISMATCH",
            RouteNotFound => "ROUTE_NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            NotReady => "NOT_READY",
            AuditKeyMissing => "AUDIT_KEY_MISSING",
            TokenSecretNotReplayed => "TOKEN_SECRET_NOT_REPLAYED",
            KeySetUnavailable => "KEY_SET_UNAVAILABLE",
            KeyMaterialMissing => "KEY_MATERIAL_MISSING",
            RequestTimeout => "REQUEST_TIMEOUT",
            UriTooLong => "URI_TOO_LONG",
            HeadersTooLarge => "HEADERS_TOO_LARGE",
            NotOwner => "NOT_OWNER",
            LastOfficer => "LAST_OFFICER",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An appliance error: stable code, human message, optional JSON field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// The offending field (JSON member name or dotted path), when one is to blame.
    pub field: Option<String>,
}

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An error blaming one field.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// Prefixes the field path (used when a nested validator reports a relative field).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Some(match self.field {
            Some(f) if f.starts_with('[') => format!("{parent}{f}"),
            Some(f) => format!("{parent}.{f}"),
            None => parent.to_string(),
        });
        self
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_render_stably() {
        assert_eq!(ErrorCode::KeyRevoked.as_str(), "KEY_REVOKED");
        assert_eq!(ErrorCode::ClockBehind.as_str(), "CLOCK_BEHIND");
        assert_eq!(
            ErrorCode::AuditTimeBackwards.as_str(),
            "AUDIT_TIME_BACKWARDS"
        );
        let e = Error::field(ErrorCode::AddressInvalid, "gateway", "bad checksum").within("grant");
        assert_eq!(e.field.as_deref(), Some("grant.gateway"));
        assert_eq!(e.to_string(), "ADDRESS_INVALID: bad checksum");
    }
}
