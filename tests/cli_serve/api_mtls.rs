//! Mutual TLS for the issuer role (`--issuer-client-ca`): issuer requests need a client
//! certificate from the configured CA on top of their token, other roles and public reads
//! do not, and a certificate from another CA is refused in the handshake.

use std::path::Path;
use std::sync::Arc;

use crate::kit;
use crate::kit::bin::up;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A client certificate and key (PEM) signed by `ca`.
fn client_cert(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client(data: &Path, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(data.join("tls/cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

async fn call(
    c: &reqwest::Client,
    url: String,
    token: &str,
    body: Option<&str>,
) -> reqwest::Result<(u16, Value)> {
    let req = match body {
        Some(b) => c
            .post(url)
            .header("content-type", "application/json")
            .body(b.to_string()),
        None => c.get(url),
    };
    let r = req.bearer_auth(token).send().await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_role_requires_a_client_certificate_from_the_configured_ca() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("api_mtls");
    let data = dir.path().join("appliance");
    let good_ca = ca("issuer clients");
    let rogue_ca = ca("someone else");
    let ca_file = dir.path().join("issuer-ca.pem");
    std::fs::write(&ca_file, &good_ca.pem).unwrap();
    let good = client_cert(&good_ca, "issuer-app");
    let rogue = client_cert(&rogue_ca, "issuer-app");

    let (server, addr, stdout, seen) =
        up(&data, &["--issuer-client-ca", ca_file.to_str().unwrap()]);
    let officer = stdout.trim().to_string();
    assert!(officer.starts_with("mpcppa_"), "{seen:#?}");
    let base = format!("https://{addr}");
    let plain = client(&data, None);

    // The officer needs no certificate, and creates an issuer token.
    let (s, created) = call(
        &plain,
        format!("{base}/v1/tokens"),
        &officer,
        Some(r#"{"name":"issuer-1","role":"issuer"}"#),
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{created}");
    let issuer = created["token"].as_str().unwrap().to_string();
    let policy = Some(r#"{"version":"1.0"}"#);

    // A valid issuer token without a client certificate is refused, and stores nothing.
    let (s, e) = call(&plain, format!("{base}/v1/policies"), &issuer, policy)
        .await
        .unwrap();
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("CLIENT_CERTIFICATE_REQUIRED"))
    );
    let (s, e) = call(&plain, format!("{base}/v1/grants/g-1"), &issuer, None)
        .await
        .unwrap();
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("CLIENT_CERTIFICATE_REQUIRED"))
    );

    // A certificate from another CA does not get through the handshake.
    let r = call(
        &client(&data, Some(&rogue)),
        format!("{base}/v1/policies"),
        &issuer,
        policy,
    )
    .await;
    assert!(r.is_err(), "rogue client certificate accepted: {r:?}");

    // With the CA's certificate the same request succeeds; a bad token still does not.
    let trusted = client(&data, Some(&good));
    let (s, stored) = call(&trusted, format!("{base}/v1/policies"), &issuer, policy)
        .await
        .unwrap();
    assert_eq!(s, 201, "{stored}");
    let (s, e) = call(
        &trusted,
        format!("{base}/v1/policies"),
        "mpcppa_x_y",
        policy,
    )
    .await
    .unwrap();
    assert_eq!((s, e["code"].as_str()), (401, Some("UNAUTHORIZED")));
    // Public reads need nothing.
    let r = plain
        .get(format!("{base}/.well-known/mpcp-keys.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop();
}
