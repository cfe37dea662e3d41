//! TLS material: the server certificate and key (PEM files), the NEXT (backup) key whose pin
//! gateways hold alongside the current one, and the `pin-sha256` pins of both.
//!
//! With no files configured, the appliance uses `<data-dir>/tls/`: on first start it
//! generates a self-signed development certificate for `localhost`, `127.0.0.1` and `::1`
//! (P-256, rcgen) and a next key, private keys written 0600. A pin is
//! `base64(SHA-256(SubjectPublicKeyInfo DER))`, the HPKP / `pin-sha256` form; it is computed
//! from the private key file through the TLS provider, and the certificate is checked to
//! carry that same public key before the server starts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Certificate chain (PEM), end-entity first.
    pub cert: PathBuf,
    /// Private key of the end-entity certificate (PEM, PKCS#8 / SEC1 / PKCS#1).
    pub key: PathBuf,
    /// The next (backup) key (PEM), if one is prepared.
    pub next_key: Option<PathBuf>,
}

/// The pins gateways should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// pin-sha256 of the key the server presents now.
    pub current: String,
    /// pin-sha256 of the backup key, if one is prepared.
    pub next: Option<String>,
}

/// The TLS provider of the appliance (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::ConfigInvalid,
        format!("{what} {}: {e}", path.display()),
    )
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| tls_err("cannot read TLS key", path, e))
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_secret(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| tls_err("no private key in", path, e))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| tls_err("cannot read certificate", path, e))?;
    if chain.is_empty() {
        return Err(tls_err("no certificate in", path, "empty"));
    }
    Ok(chain)
}

/// The SHA-256 of the DER leaf certificate a client presented and the server verified
/// against the configured client CA (a request extension; absent without a certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Lowercase hex SHA-256 of the leaf certificate.
    pub sha256: String,
}

impl ClientCertificate {
    /// The verified leaf of a TLS connection, if the client presented one.
    pub fn of(conn: &rustls::ServerConnection) -> Option<ClientCertificate> {
        let leaf = conn.peer_certificates()?.first()?;
        Some(ClientCertificate {
            sha256: hex::encode(Sha256::digest(leaf.as_ref())),
        })
    }
}

fn client_verifier(
    client_ca: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let Some(path) = client_ca else {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_chain(path)? {
        roots
            .add(ca)
            .map_err(|e| tls_err("unusable client CA certificate in", path, e))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err("client CA", path, e))
}

/// `pin-sha256` of the public half of the private key in `path`.
pub fn key_pin(path: &Path) -> Result<String> {
    let key = provider()
        .key_provider
        .load_private_key(load_key(path)?)
        .map_err(|e| tls_err("unusable TLS key", path, e))?;
    let spki = key.public_key().ok_or_else(|| {
        tls_err(
            "cannot derive the public key of",
            path,
            "unsupported key type",
        )
    })?;
    Ok(STANDARD.encode(Sha256::digest(spki.as_ref())))
}

/// The pins of the current and next keys.
pub fn pins(paths: &TlsPaths) -> Result<Pins> {
    Ok(Pins {
        current: key_pin(&paths.key)?,
        next: paths.next_key.as_deref().map(key_pin).transpose()?,
    })
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(path)
        .map_err(|e| tls_err("cannot create", path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| tls_err("cannot write", path, e))
}

fn generate_key_pem() -> Result<(rcgen::KeyPair, Zeroizing<String>)> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("TLS key generation: {e}")))?;
    let pem = Zeroizing::new(key.serialize_pem());
    Ok((key, pem))
}

/// Makes sure the embedded default material exists in `paths` (from
/// `crate::app::DataDir::tls`): generates the development certificate and key when both are
/// absent and the next key when it is absent. Returns whether anything was generated.
/// A certificate without its key (or the reverse) is refused rather than overwritten.
pub fn ensure_dev_material(paths: &TlsPaths, names: &[String]) -> Result<bool> {
    let dir = paths
        .key
        .parent()
        .ok_or_else(|| tls_err("no directory for", &paths.key, "path"))?;
    std::fs::create_dir_all(dir).map_err(|e| tls_err("cannot create", dir, e))?;
    let mut generated = false;
    match (paths.cert.exists(), paths.key.exists()) {
        (true, true) => {}
        (false, false) => {
            let (key, pem) = generate_key_pem()?;
            let mut params = rcgen::CertificateParams::new(names.to_vec())
                .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("TLS names: {e}")))?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "mpcp-pa development certificate");
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(365);
            let cert = params
                .self_signed(&key)
                .map_err(|e| Error::new(ErrorCode::Internal, format!("self-signing: {e}")))?;
            write_new(&paths.key, pem.as_bytes(), true)?;
            write_new(&paths.cert, cert.pem().as_bytes(), false)?;
            generated = true;
        }
        _ => {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{} and {} must both exist or both be absent",
                    paths.cert.display(),
                    paths.key.display()
                ),
            ));
        }
    }
    if let Some(next) = &paths.next_key
        && !next.exists()
    {
        let (_, pem) = generate_key_pem()?;
        write_new(next, pem.as_bytes(), true)?;
        generated = true;
    }
    Ok(generated)
}

/// The names the development certificate covers.
pub fn dev_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// A rustls server configuration from the certificate and key files: TLS 1.3 and 1.2,
/// ALPN h2 and http/1.1, no client authentication. Refuses a certificate whose public key is
/// not the key's.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>> {
    server_config_with_client_ca(paths, None)
}

/// Like [`server_config`], and when `client_ca` (PEM, one or more CA certificates) is given,
/// the server asks every client for a certificate and accepts a connection without one, but
/// a presented certificate must chain to one of those CAs or the handshake fails. Which
/// routes need a certificate is decided per request ([`ClientCertificate`]).
pub fn server_config_with_client_ca(
    paths: &TlsPaths,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let chain = load_chain(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| tls_err("certificate and key do not match:", &paths.cert, e))?;
    if certified.keys_match().is_err() {
        return Err(tls_err(
            "certificate does not carry the public key of",
            &paths.key,
            "mismatch",
        ));
    }
    let verifier = client_verifier(client_ca, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_material_is_generated_once_and_pins_differ() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths {
            cert: dir.path().join("tls/cert.pem"),
            key: dir.path().join("tls/key.pem"),
            next_key: Some(dir.path().join("tls/next-key.pem")),
        };
        assert!(ensure_dev_material(&paths, &dev_names()).unwrap());
        assert!(!ensure_dev_material(&paths, &dev_names()).unwrap());
        let p = pins(&paths).unwrap();
        let next = p.next.clone().unwrap();
        assert_ne!(p.current, next);
        assert_eq!(STANDARD.decode(&p.current).unwrap().len(), 32);
        server_config(&paths).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A certificate served with the wrong key is refused.
        let wrong = TlsPaths {
            key: paths.next_key.clone().unwrap(),
            ..paths.clone()
        };
        assert_eq!(
            server_config(&wrong).unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
        // Half-present material is refused, not overwritten.
        std::fs::remove_file(&paths.cert).unwrap();
        assert!(ensure_dev_material(&paths, &dev_names()).is_err());
    }
}
