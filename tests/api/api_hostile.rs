//! Hostile clients over real TLS on loopback, against the real service: connections that
//! complete the handshake and send nothing, send only the HTTP/2 preface and SETTINGS, stop
//! in the middle of their headers, or send an authenticated body one byte at a time. One peer
//! address cannot hold the service (the per-address cap closes its excess connections at
//! once), every hostile connection is closed by its deadline, and a client from another
//! address (127.0.0.2: all of 127/8 is loopback on Linux) is served meanwhile. Idle
//! keep-alive connections (HTTP/1.1 and HTTP/2) are closed, and an HTTP/2 peer that does not
//! answer pings is dropped.
//!
//! Deadlines are short here (1-3 s); assertions allow them a margin of [`MARGIN`] and are
//! upper bounds only.

use mpcp_pa::api::artifacts::trees;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::api::{Harness, client_tls};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// What a deadline may be late by on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
const HOSTILE: &str = "127.0.0.1";
const OTHER: &str = "127.0.0.2";
/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const POLICY: &str = r#"{"allowedRails":["xrpl"],"version":"1.0"}"#;

/// A TCP connection to the service from the loopback address `src`.
async fn tcp_from(src: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A TLS connection from `src` offering `alpn`; the error when the service closes it before
/// the handshake completes.
async fn tls_from(h: &Harness, src: &str, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&h.tls, &[alpn])));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tcp = tcp_from(src, h.addr).await;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("handshake hung")))
}

/// Reads until the service closes the connection (EOF or an error) and returns what it sent;
/// panics if it is still open `within` after `since`.
async fn closed_by<S: AsyncRead + Unpin>(
    what: &str,
    stream: &mut S,
    since: Instant,
    within: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = (since + within).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: still open {:?} after it started (allowed {within:?}); got {:?}",
                since.elapsed(),
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Status and body of the first HTTP/1.1 response in `raw`.
fn parse_response(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Sends one GET on an HTTP/1.1 connection and reads the whole response (Content-Length).
async fn h1_get(stream: &mut TlsStream<TcpStream>, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return parse_response(&raw).0;
            }
        }
    }
}

/// One HTTP/2 frame: type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The header block of `GET path`: :method GET and :scheme https from the static table,
/// :authority and :path as literals with indexed names (no Huffman coding).
fn h2_get_block(path: &str) -> Vec<u8> {
    assert!(path.len() < 127);
    let mut block = vec![0x82, 0x87, 0x01, 9];
    block.extend_from_slice(b"127.0.0.1");
    block.extend_from_slice(&[0x04, path.len() as u8]);
    block.extend_from_slice(path.as_bytes());
    block
}

/// The types of the HTTP/2 frames in `bytes` (a trailing partial frame is ignored).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Reads HTTP/2 frames until one of `kind` arrives on `stream` with `flags` set; returns
/// the types of every frame seen.
async fn h2_until(s: &mut TlsStream<TcpStream>, kind: u8, stream_id: u32, flags: u8) -> Vec<u8> {
    let mut seen = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        seen.push(head[3]);
        if head[3] == kind && id == stream_id && head[4] & flags == flags {
            return seen;
        }
    }
}

/// A POST of [`POLICY`] whose body is sent one byte every 500 ms (never all of it); returns
/// the reading half and when the headers were sent.
async fn slow_body(
    h: &Harness,
    token: &str,
) -> (tokio::io::ReadHalf<TlsStream<TcpStream>>, Instant) {
    let mut s = tls_from(h, HOSTILE, b"http/1.1").await.unwrap();
    s.write_all(
        format!(
            "POST /v1/policies HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            POLICY.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let sent = Instant::now();
    let (read, mut write) = tokio::io::split(s);
    tokio::spawn(async move {
        for b in POLICY.as_bytes()[..POLICY.len() - 1].iter() {
            if write.write_all(&[*b]).await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (read, sent)
}

/// A reqwest client (HTTP/1.1) connecting from `src`.
fn client_from(h: &Harness, src: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&h.tls, &[b"http/1.1"]))
        .local_address(src.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// GET /healthz from another address must be answered within 2 s.
async fn other_client_is_served(h: &Harness) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client_from(h, OTHER).get(h.url("/healthz")).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("a client from {OTHER} was not served within 2 s"))
    .unwrap();
    assert_eq!(r.status(), 200, "after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_capped_and_its_connections_close_by_their_deadlines() {
    kit::child::alone!("one_address_is_capped_and_its_connections_close_by_their_deadlines");
    let limits = Limits {
        max_connections: 10,
        max_connections_per_ip: 5,
        handshake_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(2),
        requests_per_second_per_token: 0,
        ..Limits::default()
    };
    let h = Harness::start(limits.clone()).await;
    let token = h.token("issuer-1", ApiRole::Issuer);

    // Five connections from one address, each stuck in another phase.
    let mut no_tls = tcp_from(HOSTILE, h.addr).await;
    let no_tls_at = Instant::now();
    let mut idle = tls_from(&h, HOSTILE, b"http/1.1").await.unwrap();
    let idle_at = Instant::now();
    let mut preface = tls_from(&h, HOSTILE, b"h2").await.unwrap();
    preface.write_all(H2_PREFACE).await.unwrap();
    let preface_at = Instant::now();
    let mut partial = tls_from(&h, HOSTILE, b"http/1.1").await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let partial_at = Instant::now();
    let (mut slow, slow_at) = slow_body(&h, &token).await;

    // The same address trying to take the rest of the global limit is closed at once.
    for i in 0..limits.max_connections - limits.max_connections_per_ip {
        let r = tls_from(&h, HOSTILE, b"http/1.1").await;
        assert!(
            r.is_err(),
            "connection {} from {HOSTILE} accepted beyond its cap of {}",
            limits.max_connections_per_ip + i + 1,
            limits.max_connections_per_ip
        );
    }
    other_client_is_served(&h).await;

    closed_by(
        "no TLS handshake",
        &mut no_tls,
        no_tls_at,
        limits.handshake_timeout + MARGIN,
    )
    .await;
    closed_by(
        "idle after the handshake",
        &mut idle,
        idle_at,
        limits.header_read_timeout + MARGIN,
    )
    .await;
    closed_by(
        "HTTP/2 preface and SETTINGS only",
        &mut preface,
        preface_at,
        limits.header_read_timeout + MARGIN,
    )
    .await;
    closed_by(
        "headers never finished",
        &mut partial,
        partial_at,
        limits.header_read_timeout + MARGIN,
    )
    .await;
    let answer = closed_by(
        "body at one byte per 500 ms",
        &mut slow,
        slow_at,
        limits.body_timeout + MARGIN,
    )
    .await;
    let (status, body) = parse_response(&answer);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["code"], "REQUEST_TIMEOUT", "{body}");
    assert!(body["message"].is_string());
    assert_eq!(h.state.artifacts().count(trees::POLICIES).unwrap(), 0);

    // Its slots are free again.
    let mut again = tls_from(&h, HOSTILE, b"http/1.1").await.unwrap();
    assert_eq!(h1_get(&mut again, "/healthz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_serves_the_next_client_once_the_deadlines_expire() {
    kit::child::alone!("a_full_service_serves_the_next_client_once_the_deadlines_expire");
    // One address may hold every connection here; the next client waits in the backlog
    // only until the first hostile connection misses its deadline.
    let limits = Limits {
        max_connections: 4,
        max_connections_per_ip: 4,
        handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(5),
        requests_per_second_per_token: 0,
        ..Limits::default()
    };
    let h = Harness::start(limits.clone()).await;
    let token = h.token("issuer-1", ApiRole::Issuer);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tls_from(&h, HOSTILE, b"http/1.1").await.unwrap());
    }
    let mut preface = tls_from(&h, HOSTILE, b"h2").await.unwrap();
    preface.write_all(H2_PREFACE).await.unwrap();
    held.push(preface);
    let (slow, _) = slow_body(&h, &token).await;
    other_client_is_served(&h).await;
    drop((held, slow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    kit::child::alone!("idle_keep_alive_connections_are_closed");
    let limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_millis(1500),
        http2_ping_interval: Duration::from_secs(60),
        ..Limits::default()
    };
    let h = Harness::start(limits.clone()).await;

    let mut h1 = tls_from(&h, HOSTILE, b"http/1.1").await.unwrap();
    assert_eq!(h1_get(&mut h1, "/healthz").await, 200);
    let h1_at = Instant::now();

    let mut h2 = tls_from(&h, HOSTILE, b"h2").await.unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(H2_PREFACE).await.unwrap();
    h2.write_all(&h2_frame(0x1, 0x5, 1, &h2_get_block("/healthz")))
        .await
        .unwrap();
    // The response ends its stream (END_STREAM on HEADERS or DATA).
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut head = [0u8; 9];
            h2.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            h2.read_exact(&mut payload).await.unwrap();
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if id == 1 && matches!(head[3], 0x0 | 0x1) && head[4] & 0x1 == 1 {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no HTTP/2 response");
    let h2_at = Instant::now();

    closed_by(
        "idle HTTP/1.1",
        &mut h1,
        h1_at,
        limits.idle_timeout + MARGIN,
    )
    .await;
    // GOAWAY, then the close (this peer never acknowledges the GOAWAY's ping: bounded).
    let tail = closed_by(
        "HTTP/2 with no stream",
        &mut h2,
        h2_at,
        limits.idle_timeout + Duration::from_secs(1) + MARGIN,
    )
    .await;
    assert!(
        frame_types(&tail).contains(&0x7),
        "no GOAWAY before the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_peer_that_ignores_pings_is_dropped() {
    kit::child::alone!("http2_peer_that_ignores_pings_is_dropped");
    let limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        http2_ping_interval: Duration::from_secs(1),
        http2_ping_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let h = Harness::start(limits.clone()).await;
    let mut s = tls_from(&h, HOSTILE, b"h2").await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    let at = Instant::now();
    let seen = tokio::time::timeout(
        limits.http2_ping_interval + MARGIN,
        h2_until(&mut s, 0x6, 0, 0),
    )
    .await
    .expect("no PING from the service");
    assert_eq!(seen.last(), Some(&0x6));
    closed_by(
        "HTTP/2 peer not answering pings",
        &mut s,
        at,
        limits.http2_ping_interval + limits.http2_ping_timeout + MARGIN,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_peer_that_never_reads_its_response_is_dropped() {
    kit::child::alone!("http2_peer_that_never_reads_its_response_is_dropped");
    let limits = Limits {
        idle_timeout: Duration::from_millis(1500),
        http2_ping_interval: Duration::from_secs(60),
        ..Limits::default()
    };
    let h = Harness::start(limits.clone()).await;
    let mut s = tls_from(&h, HOSTILE, b"h2").await.unwrap();
    // Preface, then SETTINGS_INITIAL_WINDOW_SIZE = 0: no response body can ever be sent.
    s.write_all(&H2_PREFACE[..24]).await.unwrap();
    s.write_all(&h2_frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .await
        .unwrap();
    s.write_all(&h2_frame(0x1, 0x5, 1, &h2_get_block("/healthz")))
        .await
        .unwrap();
    let at = Instant::now();
    // The response head is not flow-controlled; its body is.
    tokio::time::timeout(Duration::from_secs(5), h2_until(&mut s, 0x1, 1, 0x4))
        .await
        .expect("no response head");
    closed_by(
        "HTTP/2 peer with a zero window",
        &mut s,
        at,
        limits.idle_timeout + Duration::from_secs(1) + MARGIN,
    )
    .await;
}
