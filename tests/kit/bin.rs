//! Shared helpers of the tests that drive the `mpcp-pa` binary as a server process: a child
//! that is killed when the test ends, a clean SIGTERM stop, `serve` started on a data
//! directory (retrying while a killed predecessor still holds the store lock), an HTTPS
//! client that trusts the development certificate of a data directory, and what the
//! SIGKILL crash tests share (idempotent POSTs; their random source is [`super::rng::Rng`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// A server child process, killed on drop if it is still running.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Sends SIGTERM and waits (up to 15 s) for a successful exit.
    pub fn stop(mut self) {
        sigterm(&self.0);
        for _ in 0..150 {
            if let Some(s) = self.0.try_wait().unwrap() {
                assert!(s.success(), "exit status {s}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not stop on SIGTERM");
    }
}

/// Sends SIGTERM to `child` (the graceful stop the appliance drains on), asserting that
/// `kill` succeeded; does not wait.
pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A request a crash test sends under its own `Idempotency-Key`, as the client records it
/// (with whatever else the test needs to check it, such as its first response).
pub trait Recorded: Clone {
    /// The path it is POSTed to and its JSON body.
    fn request(&self) -> (&str, &str);
}

/// Records `request` under `key` in `sent` and `mine` before POSTing it (see
/// [`post_idempotent`]), so that a kill with the request in flight still leaves it to
/// retry. `None`: the service died with the request in flight.
#[allow(clippy::too_many_arguments)]
pub async fn send_recorded<S: Recorded>(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    sent: &Mutex<BTreeMap<String, S>>,
    mine: &mut Vec<String>,
    key: &str,
    request: S,
) -> Option<(u16, bool, Vec<u8>)> {
    let (path, body) = request.request();
    let (path, body) = (path.to_string(), body.to_string());
    sent.lock().unwrap().insert(key.to_string(), request);
    mine.push(key.to_string());
    post_idempotent(http, base, token, key, &path, &body)
        .await
        .ok()
}

/// Sends the request recorded under `key` again (after a restart, the service is up: a
/// transport error panics); returns the record as it was before and the response (status,
/// replayed, body).
pub async fn resend<S: Recorded>(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    sent: &Mutex<BTreeMap<String, S>>,
    key: &str,
) -> (S, u16, bool, Vec<u8>) {
    let s = sent.lock().unwrap()[key].clone();
    let (path, body) = s.request();
    let (status, replayed, body) = post_idempotent(http, base, token, key, path, body)
        .await
        .unwrap();
    (s, status, replayed, body)
}

/// The keys a crash test retries after a restart: those sent in the run before the kill
/// (taken from `previous`), or in the last round (`last`) every key ever sent.
pub fn keys_to_retry<S>(
    sent: &Mutex<BTreeMap<String, S>>,
    previous: &mut Vec<String>,
    last: bool,
) -> Vec<String> {
    if last {
        sent.lock().unwrap().keys().cloned().collect()
    } else {
        std::mem::take(previous)
    }
}

/// Ends a crash-test round: SIGKILLs `server` and reaps it, then tells the client tasks to
/// `stop` and returns the keys they sent (in task order), requests in flight included.
pub async fn kill_round(
    server: Server,
    stop: &AtomicBool,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
) -> Vec<String> {
    let mut server = server;
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for w in workers {
        sent.extend(w.await.unwrap());
    }
    drop(server);
    sent
}

/// An HTTPS client trusting only the development certificate in `data/tls/cert.pem`.
pub fn client(data: &Path) -> reqwest::Client {
    client_builder(data).build().unwrap()
}

/// The builder of [`client`], for tests that add settings (a timeout).
pub fn client_builder(data: &Path) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(super::tls::client_config(
        &mpcp_pa::app::DataDir::new(data).tls().cert,
        &[],
    ))
}

/// Runs `mpcp-pa --data-dir DATA ARGS` to completion and asserts that it succeeded.
pub fn bin(data: &Path, args: &[&str]) -> Output {
    output_ok(&mut bin_command(data, args), args)
}

/// The command `mpcp-pa --data-dir DATA ARGS`, for a test that adds to its environment.
pub fn bin_command(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"));
    cmd.arg("--data-dir").arg(data).args(args);
    cmd
}

/// Runs `cmd` (the binary with `args`) to completion and asserts that it succeeded.
pub fn output_ok(cmd: &mut Command, args: &[&str]) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command `mpcp-pa --data-dir DATA serve --listen 127.0.0.1:0 EXTRA`, stderr piped
/// (the address is announced there) and stdout discarded.
pub fn serve_command(data: &Path, extra: &[&str]) -> Command {
    serve_command_at(data, "127.0.0.1:0", extra)
}

/// [`serve_command`] listening on `listen`.
pub fn serve_command_at(data: &Path, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", listen])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Spawns `serve` (see [`serve_command`]) and a thread that keeps draining its stderr, so
/// the child never blocks on a full pipe; the lines arrive on the receiver.
pub fn spawn_serve(data: &Path, extra: &[&str]) -> (Server, mpsc::Receiver<String>) {
    spawn_serve_at(data, "127.0.0.1:0", extra)
}

/// [`spawn_serve`] listening on `listen`.
pub fn spawn_serve_at(
    data: &Path,
    listen: &str,
    extra: &[&str],
) -> (Server, mpsc::Receiver<String>) {
    spawn_lines(serve_command_at(data, listen, extra))
}

/// Spawns `cmd` (its stderr piped) and a thread that keeps draining its stderr, so the child
/// never blocks on a full pipe; the lines arrive on the receiver.
pub fn spawn_lines(mut cmd: Command) -> (Server, mpsc::Receiver<String>) {
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (Server(child), rx)
}

/// Waits (up to `wait` per line) for the "listening on" line; returns the announced address,
/// or the lines seen before stderr closed or went quiet.
pub fn announced(lines: &mpsc::Receiver<String>, wait: Duration) -> Result<String, Vec<String>> {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(wait) {
        if let Some(addr) = line.split(" listening on ").nth(1) {
            return Ok(addr.trim().to_string());
        }
        seen.push(line);
    }
    Err(seen)
}

/// Starts `serve` on `data` with `extra` arguments, retrying (for up to 60 s) while the
/// previous process's store lock is still held (a start that fails with `STORE_ERROR`);
/// returns the server and its base URL (`https://ADDR`). Any other failure panics with what
/// the service printed.
pub fn serve_on(data: &Path, extra: &[&str]) -> (Server, String) {
    serve_on_at(data, "127.0.0.1:0", extra)
}

/// [`serve_on`] listening on `listen`.
pub fn serve_on_at(data: &Path, listen: &str, extra: &[&str]) -> (Server, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (server, lines) = spawn_serve_at(data, listen, extra);
        let log = match announced(&lines, Duration::from_secs(60)) {
            Ok(addr) => return (server, format!("https://{addr}")),
            Err(log) => log,
        };
        drop(server);
        let text = log.join("\n");
        assert!(
            Instant::now() < deadline && text.contains("STORE_ERROR"),
            "serve did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A POST of `body` (JSON) to `url` with a bearer token, to send.
pub fn json_post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    http.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
}

/// A PUT of `body` (JSON) to `url` with a bearer token, to send.
pub fn json_put(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    http.put(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
}

/// POSTs `body` (JSON) to `base` + `path` with a bearer token and an `Idempotency-Key`
/// (30 s timeout); returns the status, whether the response was a replay
/// (`Idempotent-Replayed`) and the body bytes. A transport error (the service died with the
/// request in flight) is returned, not panicked on.
pub async fn post_idempotent(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    path: &str,
    body: &str,
) -> reqwest::Result<(u16, bool, Vec<u8>)> {
    let r = json_post(http, format!("{base}{path}"), token, body.to_string())
        .header("idempotency-key", key)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    Ok((status, replayed, r.bytes().await?.to_vec()))
}

/// Starts `mpcp-pa up` (with `extra` arguments) on `data` and returns the server, its
/// address, stdout (the secret, if shown) and the stderr lines before the address was
/// announced.
pub fn up(data: &Path, extra: &[&str]) -> (Server, String, String, Vec<String>) {
    up_at(data, "127.0.0.1:0", extra)
}

/// [`up`] listening on `listen`.
pub fn up_at(data: &Path, listen: &str, extra: &[&str]) -> (Server, String, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(data)
        .args(["up", "--listen", listen])
        .args(extra)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("MPCP_PA_AUDIT_ORIGIN")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut seen = Vec::new();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split(" listening on ").nth(1) {
            addr = Some(rest.trim().to_string());
            break;
        }
        seen.push(line);
    }
    let addr = addr.unwrap_or_else(|| panic!("no address announced: {seen:#?}"));
    std::thread::spawn(move || for _ in lines {});
    // Everything `prepare` prints on stdout is written before serving starts; the pipe
    // stays open while the server runs, so read what is there without waiting for EOF.
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = stdout.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    std::thread::sleep(Duration::from_millis(300));
    let stdout = if out.is_finished() {
        out.join().unwrap()
    } else {
        String::new()
    };
    (server, addr, stdout, seen)
}

/// The XRPL classic address the end-to-end grants name as their gateway.
pub const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";

/// The security-officer token `up` printed on stdout at first use.
pub fn officer_token(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("mpcppa_"))
        .unwrap_or_else(|| panic!("no officer token in {stdout:?}"))
        .to_string()
}

/// POSTs `body` (JSON) to `base` + `path` with a bearer token, asserts a 2xx answer and
/// returns its body.
pub async fn post_ok(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = json_post(http, format!("{base}{path}"), token, body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null);
    assert!((200..300).contains(&status), "POST {path}: {status} {v}");
    v
}

/// Creates the issuer token `issuer-1` as `officer` and stores a policy (grants up to a day)
/// as that issuer; returns (issuer token, policyHash).
pub async fn issuer_with_policy(
    http: &reqwest::Client,
    base: &str,
    officer: &str,
) -> (String, String) {
    let role = serde_json::json!({"name": "issuer-1", "role": "issuer"});
    let issuer = post_ok(http, base, officer, "/v1/tokens", role).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let policy = serde_json::json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400});
    let ph = post_ok(http, base, &issuer, "/v1/policies", policy).await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    (issuer, ph)
}

/// A conforming grant request under `policy_hash`, expiring at `expires_at`.
pub fn grant_request(id: &str, policy_hash: &str, expires_at: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "1.0", "grantId": id, "policyHash": policy_hash, "subjectId": "vehicle-4711",
        "scope": "SESSION", "allowedRails": ["xrpl"], "authorizedGateway": GATEWAY,
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000", "budgetCurrency": "XRP", "expiresAt": expires_at,
    })
}
