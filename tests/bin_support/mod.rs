//! Shared helpers of the tests that drive the `mpcp-pa` binary as a server process: a child
//! that is killed when the test ends, a clean SIGTERM stop, and an HTTPS client that trusts
//! the development certificate of a data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
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

/// An HTTPS client trusting only the development certificate in `data/tls/cert.pem`.
pub fn client(data: &Path) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(data.join("tls/cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

/// Starts `mpcp-pa up` (with `extra` arguments) on `data` and returns the server, its address, stdout (the secret, if shown) and the
/// stderr lines before the address was announced.
pub fn up(data: &Path, extra: &[&str]) -> (Server, String, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(data)
        .args(["up", "--listen", "127.0.0.1:0"])
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
