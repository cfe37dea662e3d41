//! What the end-to-end benches share: CPU accounting from /proc, timed slices of concurrent
//! clients, the raw `C_Sign` baseline on a token, and the statistics they print.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use mpcp_pa::crypto::Alg;

use super::raw_token;

/// Name prefix of the HTTPS client's threads (their CPU is counted apart).
pub const CLIENT_THREADS: &str = "bench-client";

/// CPU time consumed so far by the live threads of this process, in seconds: (all threads,
/// the HTTPS client's threads).
pub fn cpu_seconds() -> (f64, f64) {
    let (mut all, mut client) = (0u64, 0u64);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let ns: u64 = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            all += ns;
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with(CLIENT_THREADS) {
                client += ns;
            }
        }
    }
    (all as f64 / 1e9, client as f64 / 1e9)
}

/// CPU time of the calling thread so far, in ns.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// A slice's result: operations, wall seconds, CPU seconds (all, of which the client's).
#[derive(Clone, Copy, Default)]
pub struct Slice {
    /// Operations completed.
    pub ops: u64,
    /// Wall seconds.
    pub wall: f64,
    /// CPU seconds of every thread.
    pub cpu: f64,
    /// CPU seconds of the client's threads.
    pub client_cpu: f64,
}

impl Slice {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.wall
    }
}

/// The raw baseline: `sessions` threads calling C_Sign for `secs`.
pub fn raw_slice(
    p11: &Pkcs11,
    slot: Slot,
    object_id: &[u8],
    alg: Alg,
    sessions: usize,
    secs: f64,
) -> Slice {
    let message = Arc::new(raw_token::token_input(alg, &[0x42u8; 32]));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let handles: Vec<_> = (0..sessions)
        .map(|_| {
            // Its own read-write session (like the pool's), opened before timing; the
            // token is logged in (login is per token and process).
            let session: Session = p11.open_rw_session(slot).unwrap();
            let key = raw_token::find_private(&session, object_id);
            let (stop, count, barrier, message) = (
                stop.clone(),
                count.clone(),
                barrier.clone(),
                message.clone(),
            );
            std::thread::spawn(move || {
                let mech = raw_token::mechanism(alg);
                session.sign(&mech, key, &message[..]).expect("C_Sign");
                barrier.wait();
                let mut local = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    session.sign(&mech, key, &message[..]).expect("C_Sign");
                    local += 1;
                }
                count.fetch_add(local, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let cpu0 = cpu_seconds().0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    // Read while the threads are alive (an exited thread leaves the task list).
    let cpu = cpu_seconds().0 - cpu0;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("raw thread");
    }
    let wall = start.elapsed().as_secs_f64();
    Slice {
        ops: count.load(Ordering::Relaxed),
        wall,
        cpu: cpu * wall / secs,
        client_cpu: 0.0,
    }
}

/// `clients` concurrent clients (tasks on the client runtime `rt`), each sending
/// `request` in a loop for `secs`; the latencies of requests completed inside the window are
/// appended to `lat`.
pub async fn timed_slice<F, Fut>(
    rt: &tokio::runtime::Handle,
    clients: usize,
    secs: f64,
    lat: &Arc<Mutex<Vec<Duration>>>,
    request: F,
) -> Slice
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let cpu0 = cpu_seconds();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (request, lat) = (request.clone(), lat.clone());
            rt.spawn(async move {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let d = request().await;
                    // Only requests that completed inside the window count.
                    if Instant::now() <= deadline {
                        mine.push(d);
                    }
                }
                let n = mine.len() as u64;
                lat.lock().unwrap().extend(mine);
                n
            })
        })
        .collect();
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds();
    // The tail (requests finishing after the window) costs CPU too: scale it out.
    let scale = secs / wall;
    Slice {
        ops,
        wall: secs,
        cpu: (cpu1.0 - cpu0.0) * scale,
        client_cpu: (cpu1.1 - cpu0.1) * scale,
    }
}

/// The `p` quantile of `sorted`, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// The HTTPS floor: `clients` concurrent clients sending `GET /healthz` (no auth, no store,
/// no HSM: TLS, HTTP and routing only) for `secs`, through the same client as e2e.
pub async fn floor_slice(
    rt: &tokio::runtime::Handle,
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    secs: f64,
) -> Slice {
    let (client, url) = (client.clone(), url.to_string());
    let lat = Arc::new(Mutex::new(Vec::new()));
    timed_slice(rt, clients, secs, &lat, move || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let t = Instant::now();
            let r = client.get(&url).send().await.expect("request");
            assert_eq!(r.status(), 200);
            r.bytes().await.expect("response body");
            t.elapsed()
        }
    })
    .await
}
