//! Key discovery at static-file speed: `GET /.well-known/mpcp-keys.json` from the real
//! `mpcp-pa` binary against nginx serving the same bytes with the same certificate and key,
//! both over TLS on loopback, driven by one wrk client in alternating slices (appliance,
//! nginx, appliance, nginx, ...) so that load from elsewhere hits both alike. The ratio
//! printed per concurrency level is the median of the per-pair ratios of requests per second
//! (target: >= 1.0x nginx at 32 keep-alive connections).
//!
//! CPUs (the machine has 2): the appliance and nginx (one worker) each run pinned to CPU 0,
//! one at a time under load; wrk (one thread) is pinned to CPU 1. SoftHSM2 is not involved:
//! the document is served from memory and no token is touched per request.
//!
//! Before measuring, the bench checks that both servers answer 200 with byte-identical
//! bodies and that the appliance's strong ETag revalidates (304).
//!
//! Run: `cargo bench --bench discovery` (`DISCOVERY_BENCH_SECONDS`: seconds per slice, default
//! 3; `DISCOVERY_BENCH_PAIRS`: slice pairs per level, default 5). Under `cargo test` (no
//! `--bench` argument) it runs as a smoke test with short slices. Needs nginx and wrk
//! (scripts/ensure-deps.sh installs them).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATH: &str = "/.well-known/mpcp-keys.json";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `mpcp-pa up` on `data`, pinned to CPU 0; returns once it listens.
fn start_appliance(data: &Path, port: u16) -> Killed {
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(data)
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--issuer", "pa.example.com"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("SOFTHSM2_CONF")
        .spawn()
        .expect("run taskset (util-linux) and mpcp-pa");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(" listening on ") => break,
            Some(Ok(l)) => seen.push(l),
            _ => panic!("the appliance did not start: {seen:#?}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Killed(child)
}

/// nginx (one worker, pinned to CPU 0) serving `body` at [`PATH`] with the appliance's TLS
/// certificate and key and the same Cache-Control.
fn start_nginx(dir: &Path, port: u16, tls: &Path, body: &[u8], cache_control: &str) -> Killed {
    let root = dir.join("www/.well-known");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("mpcp-keys.json"), body).unwrap();
    let user = if running_as_root() { "user root;" } else { "" };
    let conf = format!(
        "{user}\nworker_processes 1;\nworker_cpu_affinity 01;\ndaemon off;\nmaster_process on;\n\
         pid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {tmp}/b;\n  proxy_temp_path {tmp}/p;\n\
         fastcgi_temp_path {tmp}/f;\n  uwsgi_temp_path {tmp}/u;\n  scgi_temp_path {tmp}/s;\n\
         keepalive_requests 1000000;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n\
         http2 on;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         ssl_protocols TLSv1.2 TLSv1.3;\n    root {www};\n\
         location = {PATH} {{ default_type application/json; add_header Cache-Control \"{cache_control}\"; }}\n\
         }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        err = dir.join("nginx.err").display(),
        tmp = dir.display(),
        cert = tls.join("cert.pem").display(),
        key = tls.join("key.pem").display(),
        www = dir.join("www").display(),
    );
    // nginx 1.22 knows `http2` only as a listen parameter.
    let conf = conf
        .replace("\nhttp2 on;", "")
        .replace(" ssl;\n", " ssl http2;\n");
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("taskset")
        .args(["-c", "0", "/usr/sbin/nginx", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run nginx (scripts/ensure-deps.sh installs it)");
    Killed(child)
}

/// nginx's workers run as `nobody` under root unless told otherwise, and could not read the
/// files of this private temporary directory.
fn running_as_root() -> bool {
    // /proc/self/status avoids a libc dependency for one call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One GET over TLS verified against `ca` (Node's https): status, ETag and body.
fn fetch(port: u16, ca: &Path, etag: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut cmd = Command::new("node");
    cmd.arg("-e").arg(
        "const https=require('https');const fs=require('fs');\
         const [port,ca,etag]=process.argv.slice(1);\
         const h=etag?{'if-none-match':etag}:{};\
         https.get({host:'127.0.0.1',servername:'localhost',port,path:process.env.P,ca:fs.readFileSync(ca),headers:h},r=>{\
         const c=[];r.on('data',d=>c.push(d));r.on('end',()=>{\
         process.stdout.write(JSON.stringify({s:r.statusCode,e:r.headers.etag||null,b:Buffer.concat(c).toString('base64')}))})})",
    );
    cmd.arg(port.to_string()).arg(ca);
    if let Some(e) = etag {
        cmd.arg(e);
    }
    let out = cmd.env("P", PATH).output().expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD
        .decode(v["b"].as_str().unwrap())
        .unwrap();
    (
        v["s"].as_u64().unwrap() as u16,
        v["e"].as_str().map(str::to_string),
        body,
    )
}

/// Waits until `port` answers 200 at [`PATH`].
fn wait_ready(port: u16, ca: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && fetch(port, ca, None).0 == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "port {port} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One wrk slice (one thread, pinned to CPU 1): requests per second and non-2xx responses.
fn wrk(port: u16, connections: usize, seconds: f64) -> (f64, u64) {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", seconds.max(1.0).round() as u64))
        .arg(format!("https://localhost:{port}{PATH}"))
        .output()
        .expect("run wrk (scripts/ensure-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rps, non2xx)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (seconds, pairs, levels): (f64, usize, Vec<usize>) = if full {
        (
            env_or("DISCOVERY_BENCH_SECONDS", 3.0),
            env_or("DISCOVERY_BENCH_PAIRS", 5),
            vec![1, 8, 32],
        )
    } else {
        (1.0, 1, vec![8])
    };
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let (pa_port, nginx_port) = (free_port(), free_port());
    let _pa = start_appliance(&data, pa_port);
    let ca = mpcp_pa::app::DataDir::new(&data).tls().cert;
    wait_ready(pa_port, &ca);
    let (status, etag, body) = fetch(pa_port, &ca, None);
    assert_eq!(status, 200);
    let etag = etag.expect("the appliance sends an ETag");
    assert_eq!(fetch(pa_port, &ca, Some(&etag)).0, 304, "ETag revalidates");
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let _nginx = start_nginx(
        &nginx_dir,
        nginx_port,
        &mpcp_pa::app::DataDir::new(&data).tls_dir(),
        &body,
        "public, max-age=300",
    );
    wait_ready(nginx_port, &ca);
    assert_eq!(
        fetch(nginx_port, &ca, None).2,
        body,
        "nginx serves the same bytes"
    );

    println!(
        "GET {PATH} ({} bytes) over TLS, keep-alive; appliance and nginx on CPU 0, wrk -t1 on CPU 1; \
         {pairs} alternating pair(s) of {seconds} s slices per level",
        body.len()
    );
    println!(
        "{:>5} {:>14} {:>14} {:>10}",
        "conns", "appliance r/s", "nginx r/s", "ratio"
    );
    for c in levels {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..pairs {
            let (a, a_bad) = wrk(pa_port, c, seconds);
            let (n, n_bad) = wrk(nginx_port, c, seconds);
            assert_eq!((a_bad, n_bad), (0, 0), "every response must be 2xx");
            ours.push(a);
            theirs.push(n);
            ratios.push(a / n);
        }
        println!(
            "{c:>5} {:>14.0} {:>14.0} {:>9.2}x",
            median(ours),
            median(theirs),
            median(ratios)
        );
    }
}
