//! Shared harness of the service's end-to-end tests: the real service (axum over rustls) on
//! a loopback port with the development TLS material generated in a temporary data
//! directory, a real sled store, and a reqwest client that trusts only that certificate.
//!
//! Every part is the real one: keys live in SoftHSM2 tokens (one set of development tokens per
//! test process, in a temporary directory, because PKCS#11 library state is process-wide),
//! the key registry and the audit log share each test's own sled store, and the audit log is
//! the service's event sink. Each harness generates and activates its own grant-signing and
//! root keys.

pub mod snapshot;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mpcp_pa::algorithms::AlgorithmPolicy;
use mpcp_pa::api::tls::{TlsPaths, dev_names, ensure_dev_material, server_config};
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::api::{
    AppState, Limits, RunningServer, ServiceConfig, ServiceParts, Transport, router, server,
};
use mpcp_pa::app::{Appliance, AuditMode, DataDir, Options};
use mpcp_pa::audit::{AppendTicket, AuditLog, AuditSink, SideWrites};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::{Actor, Event, EventSink};
use mpcp_pa::hsm::HsmBackend;
use mpcp_pa::keys::{KeyRegistry, KeyRole};
use mpcp_pa::store::Store;
use serde_json::Value;

use super::hsm::dev_backend_with;
use super::tmp::{self, TmpDir};
use super::{gate, tls};

static HSM: OnceLock<(TmpDir, Arc<HsmBackend>)> = OnceLock::new();

/// The process's SoftHSM2 backend (development tokens in a temporary directory).
pub fn hsm() -> Arc<HsmBackend> {
    HSM.get_or_init(|| open_dev_hsm(None)).1.clone()
}

/// [`hsm`] with `sessions` sessions per token (the configuration's `pool_size`); call it
/// before anything else touches the backend.
pub fn hsm_with_pool_size(sessions: usize) -> Arc<HsmBackend> {
    let (_, b) = HSM.get_or_init(|| open_dev_hsm(Some(sessions)));
    b.clone()
}

fn open_dev_hsm(pool_size: Option<usize>) -> (TmpDir, Arc<HsmBackend>) {
    let dir = tmp::dir("hsm");
    let (backend, _) = dev_backend_with(dir.path(), pool_size);
    (dir, Arc::new(backend))
}

/// The directory of the process's development tokens: SoftHSM2 keeps one `*.object` file per
/// token object under it.
pub fn hsm_dir() -> std::path::PathBuf {
    hsm();
    HSM.get().unwrap().0.path().to_path_buf()
}

/// The audit log as the service's sink, with a switch that simulates an audit outage (every
/// record fails, as the log's own failure would) to check that nothing is released then.
/// (`src/keys/test_support.rs` has a similar `FlakySink`, but it is `#[cfg(test)]`, compiled
/// into the library's unit tests only, so this is the one integration tests can use.)
pub struct SwitchableSink {
    pub log: Arc<AuditLog>,
    pub down: AtomicBool,
}

impl EventSink for SwitchableSink {
    fn record(&self, actor: &Actor, event: Event) -> mpcp_pa::Result<u64> {
        if self.down.load(Ordering::SeqCst) {
            return Err(mpcp_pa::Error::new(
                mpcp_pa::ErrorCode::AuditUnavailable,
                "audit log unavailable (simulated)",
            ));
        }
        self.log.record(actor, event)
    }
}

impl AuditSink for SwitchableSink {
    fn append(&self, actor: &Actor, event: Event, writes: SideWrites) -> AppendTicket {
        if self.down.load(Ordering::SeqCst) {
            return AppendTicket::ready(Err(mpcp_pa::Error::new(
                mpcp_pa::ErrorCode::AuditUnavailable,
                "audit log unavailable (simulated)",
            )));
        }
        self.log.append(actor, event, writes)
    }
}

/// A running service and what the test needs to drive it.
///
/// A harness holds the kit's [`gate`] shared while it lives, so a timing-sensitive test of
/// the same binary ([`super::child::alone`]) runs while no harness does.
pub struct Harness {
    pub dir: TmpDir,
    pub store: Store,
    pub audit: Arc<AuditLog>,
    pub sink: Arc<SwitchableSink>,
    pub registry: Arc<KeyRegistry>,
    pub state: AppState,
    pub tls: TlsPaths,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    _gate: gate::Shared,
}

/// The audience (MCP provider) the kit's receipt-consumer tokens serve.
pub const PROVIDER: &str = "mcp://provider.test";

/// A rustls client configuration trusting only the certificate in `paths`.
pub fn client_tls(paths: &TlsPaths, alpn: &[&[u8]]) -> rustls::ClientConfig {
    tls::client_config(&paths.cert, alpn)
}

/// A reqwest client trusting only the development certificate.
pub fn client_for(paths: &TlsPaths) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(paths, &[b"http/1.1"]))
        .tls_info(true)
        .build()
        .unwrap()
}

impl Harness {
    /// Starts the service with `limits` over TLS, with an active EdDSA key for every role.
    pub async fn start(limits: Limits) -> Harness {
        Harness::start_with(limits, |_| {}).await
    }

    /// Starts the service with `limits` and a configuration adjusted by `tune`.
    pub async fn start_with(limits: Limits, tune: impl FnOnce(&mut ServiceConfig)) -> Harness {
        Harness::start_full(
            limits,
            &KeyRole::ALL,
            tune,
            AlgorithmPolicy::builtin().unwrap(),
        )
        .await
    }

    /// Starts the service with an active EdDSA key for each of `roles` only.
    pub async fn start_with_keys(
        limits: Limits,
        roles: &[KeyRole],
        tune: impl FnOnce(&mut ServiceConfig),
    ) -> Harness {
        Harness::start_full(limits, roles, tune, AlgorithmPolicy::builtin().unwrap()).await
    }

    /// Starts the service under the algorithm policy `policy`.
    pub async fn start_with_policy(
        limits: Limits,
        tune: impl FnOnce(&mut ServiceConfig),
        policy: AlgorithmPolicy,
    ) -> Harness {
        Harness::start_full(limits, &KeyRole::ALL, tune, policy).await
    }

    /// Starts the service with keys for `roles`, `tune`d, under `policy`.
    pub async fn start_full(
        limits: Limits,
        roles: &[KeyRole],
        tune: impl FnOnce(&mut ServiceConfig),
        policy: AlgorithmPolicy,
    ) -> Harness {
        Harness::start_observed(limits, roles, tune, policy, true).await
    }

    /// [`Harness::start_full`] with the appliance's metrics on or off (the baseline the
    /// api_throughput bench measures their cost against).
    pub async fn start_observed(
        limits: Limits,
        roles: &[KeyRole],
        tune: impl FnOnce(&mut ServiceConfig),
        policy: AlgorithmPolicy,
        metrics: bool,
    ) -> Harness {
        let gate = gate::shared();
        let dir = tmp::dir("harness");
        let data = DataDir::new(dir.path());
        let tls = data.tls();
        ensure_dev_material(&tls, &dev_names()).unwrap();
        // The one builder, over the process's development tokens.
        let mut app = Appliance::new(
            data,
            Options {
                audit: AuditMode::Create("pa.test/audit".into()),
                metrics,
                ..Options::default()
            },
        )
        .with_hsm(hsm())
        .with_policy(Arc::new(policy));
        let store = app.store().unwrap();
        let audit = app.audit().unwrap();
        let registry = app.registry().unwrap();
        let clock = app.clock();
        for &role in roles {
            let reg = registry.clone();
            tokio::task::spawn_blocking(move || {
                reg.rotate(&Actor::cli(), role, None, Some(role.default_alg()))
                    .unwrap()
            })
            .await
            .unwrap();
        }
        let (handle, sink) =
            mpcp_pa::api::AuditHandle::wrapped(audit.clone(), |log| SwitchableSink {
                log,
                down: AtomicBool::new(false),
            });
        let mut config = ServiceConfig::new("pa.test");
        config.limits = limits.clone();
        tune(&mut config);
        let state = AppState::new(
            ServiceParts {
                store: store.clone(),
                audit: handle,
                registry: registry.clone(),
                clock,
                readiness: Vec::new(),
                metrics: metrics.then(|| app.metrics()),
            },
            config,
        )
        .unwrap();
        let server = server::start_counted(
            "127.0.0.1:0".parse().unwrap(),
            router(state.clone()),
            Transport::Tls(server_config(&tls).unwrap()),
            limits,
            metrics.then(|| app.metrics()),
            std::future::pending(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        Harness {
            client: client_for(&tls),
            base: format!("https://127.0.0.1:{}", addr.port()),
            dir,
            store,
            audit,
            sink,
            registry,
            state,
            tls,
            server: Some(server),
            addr,
            _gate: gate,
        }
    }

    /// Creates an API token and returns its bearer value. A receipt-consumer token serves
    /// [`PROVIDER`].
    pub fn token(&self, name: &str, role: ApiRole) -> String {
        let audiences = if role == ApiRole::ReceiptConsumer {
            vec![PROVIDER.to_string()]
        } else {
            vec![]
        };
        self.token_for(name, role, &audiences)
    }

    /// Creates an API token bound to `audiences` and returns its bearer value.
    pub fn token_for(&self, name: &str, role: ApiRole, audiences: &[String]) -> String {
        self.state
            .tokens()
            .prepare_create_for(name, role, audiences, &Actor::cli(), &SystemClock)
            .unwrap()
            .commit(self.audit.as_ref())
            .unwrap()
            .secret
            .to_string()
    }

    /// Every event in the audit log, oldest first.
    pub fn events(&self) -> Vec<(Actor, Event)> {
        self.audit
            .entries(0, self.audit.size())
            .unwrap()
            .iter()
            .map(|raw| {
                let e: mpcp_pa::audit::Entry = serde_json::from_slice(raw).unwrap();
                (e.actor, e.event)
            })
            .collect()
    }

    /// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` (raw bytes) as JSON with an optional bearer token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// PUTs `body` (raw bytes) as JSON with a bearer token.
    pub async fn put(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let req = self
            .client
            .put(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string());
        read(req.send().await.unwrap()).await
    }

    /// GETs `path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// Stops the server (drains in-flight requests).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// Status and JSON body of a response (Null for an empty body).
pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, v)
}

/// Asserts an error response: status, code, and that the body is exactly {code, message,
/// field?}.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["code"], code, "code of {}", got.1);
    let obj = got.1.as_object().unwrap();
    assert!(obj["message"].is_string());
    assert!(
        obj.keys()
            .all(|k| ["code", "message", "field"].contains(&k.as_str()))
    );
}

/// A raw TLS connection to the service (HTTP/1.1 ALPN).
pub async fn raw_connect(h: &Harness) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&h.tls, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Sends raw request bytes on a new connection and reads until the server closes it.
pub async fn raw_exchange(h: &Harness, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = raw_connect(h).await;
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}
