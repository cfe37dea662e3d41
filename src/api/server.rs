//! The listener: TLS by rustls through tokio-rustls, HTTP/1.1 and HTTP/2 by hyper-util, the
//! router by axum.
//!
//! No client holds a connection longer than the [`Limits`] allow. A semaphore bounds
//! concurrent connections: at the limit the next connection waits in the kernel's backlog
//! (first come, first served) rather than being refused, because every held connection is
//! closed by a deadline at the latest: the TLS handshake, then the first request's headers
//! (protocol detection, the HTTP/2 preface and SETTINGS included), each later HTTP/1.1
//! request's headers, each body (where it is read, [`crate::api::body`]) and, between
//! requests, the idle timeout; HTTP/2 peers must answer keep-alive pings. A per-peer cap
//! below the global one keeps one address from taking every slot: its excess connections are
//! closed as soon as they are accepted. Shutdown stops accepting, lets in-flight requests
//! finish (bounded by the drain timeout) and then returns.
//!
//! Plain HTTP exists only as [`Transport::InsecureLoopback`], which [`check_bind`] refuses on
//! anything but a loopback address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::tls::ClientCertificate;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::Metrics;

/// Request and connection limits. Every phase of a connection before its requests are
/// dispatched has a deadline, request bodies have one, and idle connections are closed, so
/// no client holds a connection (and with it one of [`Limits::max_connections`]) for longer
/// than these bounds allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (bytes); larger is 413.
    pub max_body_bytes: usize,
    /// Sustained requests per second per API token (0 = unlimited); more is 429.
    pub requests_per_second_per_token: u32,
    /// Burst per API token.
    pub burst_per_token: u32,
    /// Concurrent connections. At the limit the next connection waits in the kernel's
    /// backlog until one closes (each closes by the deadlines below at the latest).
    pub max_connections: usize,
    /// Concurrent connections from one peer (an IPv4 address, or an IPv6 /64). A connection
    /// beyond it is closed as soon as it is accepted, before any TLS.
    pub max_connections_per_ip: usize,
    /// Time allowed for a TLS handshake, from accept.
    pub handshake_timeout: Duration,
    /// Time allowed, once the TLS handshake is done, for the first request's headers to
    /// arrive, protocol detection included (HTTP/1.1 or HTTP/2, preface and SETTINGS
    /// included); for HTTP/1.1 also for each later request's headers, from the end of the
    /// previous response. A connection that misses it is closed without a response.
    pub header_read_timeout: Duration,
    /// Time allowed for a request body to arrive completely, from the moment the handler
    /// starts reading it; later is 408 `REQUEST_TIMEOUT`.
    pub body_timeout: Duration,
    /// A connection on which no handler is running for this long is closed (HTTP/2: GOAWAY);
    /// a response still being sent then has one more second, so a peer that does not read
    /// its responses is closed too. An HTTP/1.1 connection also needs its next request's
    /// headers within `header_read_timeout`, so it idles at most the shorter of the two.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings (zero: none).
    pub http2_ping_interval: Duration,
    /// An HTTP/2 connection whose peer does not acknowledge a ping within this is closed.
    pub http2_ping_timeout: Duration,
    /// Largest request head (request line and header fields, counted as in HTTP/1.1) the
    /// service answers: a longer URI is 414 `URI_TOO_LONG`, a longer head 431
    /// `HEADERS_TOO_LARGE`, both JSON.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    /// 256 KiB bodies, 16 KiB request heads, 20 requests/s per token with bursts of 40, 256
    /// connections of which 32 per peer, 10 s for handshakes and headers, 30 s for a body,
    /// 60 s idle, HTTP/2 pings every 20 s answered within 10 s, 30 s drain.
    fn default() -> Limits {
        Limits {
            max_body_bytes: 256 * 1024,
            requests_per_second_per_token: 20,
            burst_per_token: 40,
            max_connections: 256,
            max_connections_per_ip: 32,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            http2_ping_interval: Duration::from_secs(20),
            http2_ping_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// How connections are secured.
#[derive(Clone)]
pub enum Transport {
    /// TLS with this configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP; development only, loopback only.
    InsecureLoopback,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::InsecureLoopback => "InsecureLoopback",
        })
    }
}

/// Refuses plain HTTP on a non-loopback address.
pub fn check_bind(addr: &SocketAddr, transport: &Transport) -> Result<()> {
    if matches!(transport, Transport::InsecureLoopback) && !addr.ip().is_loopback() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("plain HTTP is only allowed on a loopback address, not {addr}"),
        ));
    }
    Ok(())
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drains in-flight requests and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits for the server to end (after a shutdown signal).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("server task failed: {e}")))?
    }
}

/// Binds `addr` and serves `app` in the background until [`RunningServer::shutdown`] or
/// `shutdown` resolves.
pub async fn start(
    addr: SocketAddr,
    app: axum::Router,
    transport: Transport,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningServer> {
    start_counted(addr, app, transport, limits, None, shutdown).await
}

/// [`start`], counting open and refused connections into `metrics`.
pub async fn start_counted(
    addr: SocketAddr,
    app: axum::Router,
    transport: Transport,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningServer> {
    check_bind(&addr, &transport)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::Io, format!("cannot bind {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorCode::Io, format!("bound address: {e}")))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = stopped => {}
            _ = shutdown => {}
        }
    };
    let task = tokio::spawn(serve(listener, app, transport, limits, metrics, signal));
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Serves connections from `listener` until `shutdown` resolves, then drains: in-flight
/// requests complete (within the drain timeout), idle connections close. Open and refused
/// connections are counted into `metrics`, if given.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    transport: Transport,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let peers = PeerCounts::default();
    let (stop, stopping) = watch::channel(false);
    let builder = http_builder(&limits);
    let acceptor = match &transport {
        Transport::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(config.clone())),
        Transport::InsecureLoopback => None,
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors or a reset before accept: back off briefly, go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Over its cap, the peer's connection is dropped here: the global permit returns
        // at once and nothing (not even TLS) is spent on it.
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_ip) else {
            if let Some(m) = &metrics {
                m.connection_refused();
            }
            tracing::debug!(peer = %peer.ip(), "connection refused: peer over its connection cap");
            continue;
        };
        let open = metrics.as_ref().map(|m| m.connection());
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let stopping = stopping.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _held = (permit, slot, open);
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    // The verified client certificate travels with each request of the
                    // connection, for routes that require one.
                    let cert = ClientCertificate::of(tls.get_ref().1);
                    serve_connection(tls, app, cert, &builder, &limits, stopping).await;
                }
                None => serve_connection(tcp, app, None, &builder, &limits, stopping).await,
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection task holds a permit until it ends: all permits back means drained.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all)).await;
    Ok(())
}

/// hyper-util's auto builder (HTTP/1.1 and HTTP/2) with the limits hyper enforces itself.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Heads up to these sizes reach the service, which answers oversized ones in JSON.
    let head = crate::api::head::hyper_head_bytes(limits.max_header_bytes);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(head);
    let ping = (!limits.http2_ping_interval.is_zero()).then_some(limits.http2_ping_interval);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(limits.http2_ping_timeout)
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX));
    builder
}

/// After an idle connection is asked to close (HTTP/2: GOAWAY), how long it may take
/// before it is dropped: nothing is in flight, so only a peer that never answers the GOAWAY's
/// ping needs it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection (after TLS) and closes it when it misses a deadline: no request
/// within `header_read_timeout` of its start (dropped at once, protocol detection
/// included), no handler running for `idle_timeout` (closed gracefully; a response still
/// being sent gets [`CLOSE_GRACE`] more), or shutdown (closed gracefully once its requests
/// are done).
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    cert: Option<ClientCertificate>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (activity, mut seen) = watch::channel(Activity::default());
    let service = Tracked {
        inner: TowerToHyperService::new(app),
        cert,
        activity: Arc::new(activity),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let opened = Instant::now();
    let mut idle_since = opened;
    let mut closing: Option<Closing> = None;
    loop {
        let now = *seen.borrow_and_update();
        let deadline = match closing {
            Some(Closing::Drain(t)) => Some(t),
            // A request that raced the GOAWAY finishes; then the grace runs again.
            Some(Closing::Idle) if now.in_flight > 0 => None,
            Some(Closing::Idle) => Some(idle_since + CLOSE_GRACE),
            None if now.in_flight > 0 => None,
            None if now.started == 0 => Some(opened + limits.header_read_timeout),
            None => Some(idle_since + limits.idle_timeout),
        };
        let expired = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = seen.changed() => {
                if changed.is_err() {
                    return;
                }
                if seen.borrow().in_flight == 0 {
                    idle_since = Instant::now();
                }
            }
            _ = stopping.changed(), if !matches!(closing, Some(Closing::Drain(_))) => {
                // Requests in flight finish; the drain timeout bounds the wait.
                conn.as_mut().graceful_shutdown();
                closing = Some(Closing::Drain(Instant::now() + limits.drain_timeout));
            }
            _ = expired => {
                if closing.is_some() || now.started == 0 {
                    // Past the grace, or nothing to answer before the first request.
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(Closing::Idle);
                idle_since = Instant::now();
            }
        }
    }
}

/// Why a connection is closing.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// Idle too long: asked to close, dropped [`CLOSE_GRACE`] after its last handler ends.
    Idle,
    /// Shutdown: dropped at this instant at the latest.
    Drain(Instant),
}

/// Requests of one connection: how many began, how many are in progress (until their
/// handler has answered).
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    started: u64,
    in_flight: usize,
}

/// Counts a request as in progress while it lives.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|a| {
            a.started += 1;
            a.in_flight += 1;
        });
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

/// The router as one connection's hyper service: adds the connection's client certificate
/// to each request and keeps [`Activity`] for the connection's deadlines.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<axum::Router>,
    cert: Option<ClientCertificate>,
    activity: Arc<watch::Sender<Activity>>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        if let Some(cert) = &self.cert {
            req.extensions_mut().insert(cert.clone());
        }
        let response = self.inner.call(req);
        Box::pin(async move {
            // In progress until the handler answers: sending the (buffered) response counts
            // as idle, so a peer that never reads it is closed by the idle timeout.
            let resp = response.await;
            drop(in_flight);
            resp
        })
    }
}

/// Open connections per peer group ([`peer_group`]).
#[derive(Debug, Clone, Default)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`PeerCounts`], given back on drop.
struct PeerSlot {
    counts: PeerCounts,
    group: IpAddr,
}

impl PeerCounts {
    /// A slot for a connection from `ip`, unless its group already has `cap` open.
    fn take(&self, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let group = peer_group(ip);
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(group).or_insert(0);
        if *n >= cap.max(1) {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            group,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.group);
            }
        }
    }
}

/// The group a peer's connections are counted in: its IPv4 address (IPv4-mapped IPv6
/// included), or its IPv6 /64, since one IPv6 host usually holds a whole /64.
fn peer_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_ipv4_address_or_ipv6_64() {
        let counts = PeerCounts::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.take(a, 2).unwrap();
        let _second = counts.take(mapped, 2).unwrap();
        assert!(
            counts.take(a, 2).is_none(),
            "the mapped address is the same peer"
        );
        assert!(counts.take(b, 2).is_some());
        drop(first);
        assert!(counts.take(a, 2).is_some());

        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_group(x), peer_group(y));
        assert_ne!(peer_group(x), peer_group(z));
        let _x = counts.take(x, 1).unwrap();
        assert!(counts.take(y, 1).is_none());
        assert!(counts.take(z, 1).is_some());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let lan: SocketAddr = "192.0.2.1:443".parse().unwrap();
        assert!(check_bind(&lo, &Transport::InsecureLoopback).is_ok());
        assert!(check_bind(&lo6, &Transport::InsecureLoopback).is_ok());
        for a in [any, lan] {
            let e = check_bind(&a, &Transport::InsecureLoopback).unwrap_err();
            assert_eq!(e.code, ErrorCode::ConfigInvalid);
        }
    }
}
