//! The XRPL Foundation's own clients as checkers: `tests/interop/xrpl_check.mjs` decodes each
//! blob with `ripple-binary-codec`, verifies its signature with `ripple-keypairs`, derives the
//! account from its key and re-encodes it (`scripts/ensure-deps.sh` installs the packages; a
//! missing one fails the test).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Ripple epoch offset (seconds from the Unix epoch to 2000-01-01).
pub const RIPPLE_EPOCH: i64 = 946_684_800;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Checks every blob (uppercase hex) with the npm codec; one result per blob, in order:
/// `{ok, tx, hash, signatureValid, accountMatchesKey, canonical, signingPubKey}`.
pub fn check_blobs(blobs: &[String]) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(script("xrpl_check.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`node` is required (scripts/ensure-deps.sh installs it)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for b in blobs {
            writeln!(stdin, "{}", json!({ "blob": b })).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "xrpl_check.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), blobs.len(), "one result per blob");
    lines
}

/// Whether the npm codec accepts `result` as a valid transaction of its own signer: it
/// decodes, re-encodes to the same bytes, its signature verifies and its account is its key's.
pub fn valid(result: &Value) -> bool {
    result["ok"] == true
        && result["signatureValid"] == true
        && result["accountMatchesKey"] == true
        && result["canonical"] == true
}

/// `blob` with the byte at `index` flipped (bits inverted), as uppercase hex.
pub fn flip_byte(blob: &str, index: usize) -> String {
    let mut bytes = hex::decode(blob).unwrap();
    bytes[index] ^= 0xFF;
    hex::encode_upper(bytes)
}

/// Uppercase hex of `s`'s UTF-8 bytes (a CredentialType).
pub fn hex_of(s: &str) -> String {
    hex::encode_upper(s.as_bytes())
}

/// A running `tests/interop/rippled_standin.mjs` (a strict rippled JSON-RPC stand-in) on a
/// state file that survives its SIGKILL; killed when dropped.
pub struct Standin {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its state file.
    pub state: PathBuf,
}

impl Standin {
    /// Starts the stand-in on `state` (`port` 0: an ephemeral one), ledgers closing every
    /// 200 ms; waits for its `listening <port>` line.
    pub fn start(state: &std::path::Path, port: u16) -> Standin {
        Standin::start_with_fee(state, port, 10)
    }

    /// [`Standin::start`] with the ledger's base fee (and open-ledger fee) at `base_fee` drops.
    pub fn start_with_fee(state: &std::path::Path, port: u16, base_fee: u64) -> Standin {
        use std::io::BufRead;
        let mut child = Command::new("node")
            .arg(script("rippled_standin.mjs"))
            .args([
                "--state",
                state.to_str().unwrap(),
                "--port",
                &port.to_string(),
            ])
            .args(["--close-ms", "200", "--base-fee", &base_fee.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`node` is required (scripts/ensure-deps.sh installs it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("stand-in did not start: {line:?}"))
            .parse()
            .unwrap();
        Standin {
            child: Some(child),
            port,
            state: state.to_path_buf(),
        }
    }

    /// Starts it again on the same state file and port.
    pub fn restart(&mut self) {
        self.kill();
        let again = Standin::start(&self.state, self.port);
        *self = again;
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// SIGKILLs it (its state is on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Calls `method` with `params`; the `result` object (panics on a transport error).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let r = rpc_client()
            .post(self.url())
            .header("content-type", "application/json")
            .body(json!({"method": method, "params": [params]}).to_string())
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["result"].clone()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain-HTTP client for the stand-in.
pub fn rpc_client() -> reqwest::Client {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}
