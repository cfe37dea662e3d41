//! The listener: TLS by rustls through tokio-rustls, HTTP/1.1 and HTTP/2 by hyper-util, the
//! router by axum. A semaphore bounds concurrent connections (the next connection waits in
//! the kernel's backlog until one closes); TLS handshakes and request headers have time
//! limits. Shutdown stops accepting, lets in-flight requests finish (bounded by the drain
//! timeout) and then returns.
//!
//! Plain HTTP exists only as [`Transport::InsecureLoopback`], which [`check_bind`] refuses on
//! anything but a loopback address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorCode, Result};

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
    /// A connection with no request in progress for this long is closed (HTTP/2: GOAWAY).
    /// An HTTP/1.1 connection also needs its next request's headers within
    /// `header_read_timeout`, so it idles at most the shorter of the two.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings (zero: none).
    pub http2_ping_interval: Duration,
    /// An HTTP/2 connection whose peer does not acknowledge a ping within this is closed.
    pub http2_ping_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    /// 256 KiB bodies, 20 requests/s per token with bursts of 40, 256 connections of which
    /// 32 per peer, 10 s for handshakes and headers, 30 s for a body, 60 s idle, HTTP/2 pings
    /// every 20 s answered within 10 s, 30 s drain.
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
    let task = tokio::spawn(serve(listener, app, transport, limits, signal));
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Serves connections from `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    transport: Transport,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
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
        let (tcp, _peer) = tokio::select! {
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
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    // The verified client certificate travels with each request of the
                    // connection, for routes that require one.
                    let service = match crate::api::tls::ClientCertificate::of(tls.get_ref().1) {
                        Some(cert) => TowerToHyperService::new(app.layer(axum::Extension(cert))),
                        None => TowerToHyperService::new(app),
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let service = TowerToHyperService::new(app);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    // In-flight requests complete; idle connections close.
    let _ = tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
