//! Transport: the certificate served is the one whose pin `mpcp-pa pins` prints, the next
//! key's pin differs, HTTP/2 and HTTP/1.1 both work over TLS, plain HTTP is refused off
//! loopback, the connection limit holds, and shutdown drains an in-flight request.

use mpcp_pa::api::artifacts::trees;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::kit;
use crate::kit::api::{Harness, client_tls};
use crate::kit::bin::bin;
use base64::Engine as _;
use mpcp_pa::api::tls::pins;
use mpcp_pa::api::{Limits, Transport, server};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pin_of_cert(der: &[u8]) -> String {
    let cert = CertificateDer::from(der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
    let spki = ee.subject_public_key_info();
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_certificate_matches_the_printed_pin() {
    kit::child::own_process!("served_certificate_matches_the_printed_pin");
    let h = Harness::start(Limits::default()).await;
    let resp = h.client.get(h.url("/healthz")).send().await.unwrap();
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let served = pin_of_cert(info.peer_certificate().unwrap());

    let out = bin(h.dir.path(), &["pins", "--json"]);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["current"], served.as_str());
    let next = printed["next"].as_str().unwrap();
    assert_ne!(next, served, "the backup pin must be a different key");
    assert_eq!(pins(&h.tls).unwrap().next.as_deref(), Some(next));

    // Line form, for operators.
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .args(["pins", "--data-dir"])
        .arg(h.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("current pin-sha256=\"{served}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("next    pin-sha256=\"{next}\"")),
        "{text}"
    );

    // Without material, pins refuses instead of inventing a key.
    let empty = kit::tmp::dir("api_tls");
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .args(["pins", "--data-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFIG_INVALID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_untrusted_clients() {
    kit::child::own_process!("http2_and_untrusted_clients");
    let h = Harness::start(Limits::default()).await;
    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&h.tls, &[b"h2"]))
        .build()
        .unwrap();
    let r = h2.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    // A client that does not trust the development certificate fails the handshake.
    let stranger = kit::tmp::dir("api_tls");
    let other = mpcp_pa::app::DataDir::new(stranger.path()).tls();
    mpcp_pa::api::tls::ensure_dev_material(&other, &mpcp_pa::api::tls::dev_names()).unwrap();
    let c = kit::api::client_for(&other);
    assert!(c.get(h.url("/healthz")).send().await.is_err());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_on_loopback() {
    kit::child::own_process!("plain_http_only_on_loopback");
    let app = axum::Router::new();
    let e = server::start(
        "0.0.0.0:0".parse().unwrap(),
        app.clone(),
        Transport::InsecureLoopback,
        Limits::default(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, mpcp_pa::ErrorCode::ConfigInvalid);
    let s = server::start(
        "127.0.0.1:0".parse().unwrap(),
        app,
        Transport::InsecureLoopback,
        Limits::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(s.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 404"));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_the_next_connection_until_one_closes() {
    kit::child::own_process!("connection_limit_holds_the_next_connection_until_one_closes");
    let h = Harness::start(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    let first = kit::api::raw_connect(&h).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&h.tls, &[b"http/1.1"])));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut second = tokio::spawn(async move { connector.connect(name, tcp).await });
    // While the first connection is open, the second is not served (bounded wait).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "second connection was accepted beyond the limit"
    );
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("second connection served after the first closed")
        .unwrap();
    assert!(second.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_in_flight_request() {
    kit::child::own_process!("shutdown_drains_an_in_flight_request");
    let mut h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", mpcp_pa::api::tokens::ApiRole::Issuer);
    let body = r#"{"allowedRails":["xrpl"],"version":"1.0"}"#;
    let (head, tail) = body.split_at(10);
    let mut conn = kit::api::raw_connect(&h).await;
    conn.write_all(
        format!(
            "POST /v1/policies HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {issuer}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Shutdown begins while the request body is still arriving.
    let server = h.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown must wait for the in-flight request"
    );
    // New connections are no longer accepted.
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(h.addr),
    )
    .await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "listener still open: {refused:?}"
    );
    conn.write_all(tail.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
    let resp = String::from_utf8_lossy(&buf);
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(h.state.artifacts().count(trees::POLICIES).unwrap(), 1);
}
