//! Signing throughput: raw PKCS#11 `C_Sign` versus the appliance sign path.
//!
//! For each algorithm and N in {1, 2, 4, 8} threads:
//! - raw: N threads, each with its own pre-opened session, call `C_Sign` directly through
//!   cryptoki on the same input (for ECDSA the precomputed SHA-256(D));
//! - path: N threads call `DigestSigner::sign_digest` on an HSM signer (prehash, pool
//!   checkout, worker hand-off with timeout, C_Sign, DER + low-S), pool of 8 sessions.
//!
//! The two are measured in alternating slices (raw, path, raw, path, ...) so that load from
//! other processes hits both alike; the ratio printed is the median of the per-pair ratios.
//! Per algorithm, one more line gives the floor the timeout mechanism sets by itself: the raw
//! C_Sign run on a helper thread per call (no pool, no checks, no encoding), relative to raw.
//! Prints ops/s for both and the ratio path/raw (target: >= 90%), and the same per CPU second of this process (from
//! /proc/self/task/*/schedstat), which stays meaningful when other processes compete for
//! the cores: a sign path that sleeps and wakes per call is favoured by the scheduler over a
//! busy raw loop, so wall-clock ratios above 100% on a loaded machine mean little. Needs SoftHSM2
//! (`apt-get install -y softhsm2`); uses a temporary token directory. Run with
//! `cargo bench --bench hsm_sign`; set `HSM_BENCH_SECONDS` to change the time per cell.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass};
use mpcp_pa::crypto::{Alg, ecdsa_prehash};
use mpcp_pa::hsm::dev::{SOFTHSM2_MODULE, init_dev};
use mpcp_pa::hsm::{HsmBackend, HsmConfig};
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::DigestSigner;

const THREADS: [usize; 4] = [1, 2, 4, 8];
/// Alternating slices per cell and path.
const SLICES: usize = 8;

/// CPU time consumed so far by all live threads of this process, in seconds.
fn cpu_seconds() -> f64 {
    let mut ns: u64 = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

/// Runs `op` on `n` threads for `secs`, returning (operations, elapsed s, CPU s).
fn measure<S: Send + 'static>(
    n: usize,
    secs: f64,
    setup: &impl Fn(usize) -> S,
    op: Arc<impl Fn(&S) + Send + Sync + 'static>,
) -> (u64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let state = setup(i);
            let (op, stop, count, barrier) =
                (op.clone(), stop.clone(), count.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Warm-up outside the measured window.
                for _ in 0..3 {
                    op(&state);
                }
                barrier.wait();
                let mut local = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(&state);
                    local += 1;
                }
                count.fetch_add(local, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    std::thread::sleep(Duration::from_secs_f64(secs));
    // Read while the threads are still alive (an exited thread leaves the task list).
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("bench thread");
    }
    let ops = count.load(Ordering::Relaxed);
    // Scale the CPU reading (taken at `secs`) to the counted window's length.
    let wall = start.elapsed().as_secs_f64();
    (ops, wall, cpu * wall / secs)
}

/// One cell's result: rates over all slices, and the median of the per-pair ratios
/// path/raw (each pair measured back to back, so a load spike skews one pair only).
struct Cell {
    raw_wall: f64,
    path_wall: f64,
    raw_cpu: f64,
    path_cpu: f64,
    ratio_wall: f64,
    ratio_cpu: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// Alternates `SLICES` slices of each path (raw first, then path).
fn compare<A: Send + 'static, B: Send + 'static>(
    n: usize,
    secs: f64,
    raw: (impl Fn(usize) -> A, impl Fn(&A) + Send + Sync + 'static),
    path: (impl Fn(usize) -> B, impl Fn(&B) + Send + Sync + 'static),
) -> Cell {
    let slice = secs / SLICES as f64;
    let (raw_setup, raw_op) = (raw.0, Arc::new(raw.1));
    let (path_setup, path_op) = (path.0, Arc::new(path.1));
    let mut tot = [(0u64, 0.0f64, 0.0f64); 2];
    let (mut wall_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    for _ in 0..SLICES {
        let r = measure(n, slice, &raw_setup, raw_op.clone());
        let p = measure(n, slice, &path_setup, path_op.clone());
        for (acc, x) in tot.iter_mut().zip([r, p]) {
            acc.0 += x.0;
            acc.1 += x.1;
            acc.2 += x.2;
        }
        wall_ratios.push((p.0 as f64 / p.1) / (r.0 as f64 / r.1));
        cpu_ratios.push((p.0 as f64 / p.2) / (r.0 as f64 / r.2));
    }
    Cell {
        raw_wall: tot[0].0 as f64 / tot[0].1,
        path_wall: tot[1].0 as f64 / tot[1].1,
        raw_cpu: tot[0].0 as f64 / tot[0].2,
        path_cpu: tot[1].0 as f64 / tot[1].2,
        ratio_wall: median(wall_ratios),
        ratio_cpu: median(cpu_ratios),
    }
}

type Job = Box<dyn FnOnce(&cryptoki::session::Session, cryptoki::object::ObjectHandle) + Send>;

fn find_private(session: &cryptoki::session::Session, id: &[u8]) -> cryptoki::object::ObjectHandle {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap()[0]
}

fn mechanism(alg: Alg) -> Mechanism<'static> {
    match alg {
        Alg::EdDSA => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        _ => Mechanism::Ecdsa,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` it runs as a short smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("HSM_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1.0 } else { 0.05 });
    let dir = tempfile::tempdir().expect("tempdir");
    let init = init_dev(dir.path()).expect("init-dev (is softhsm2 installed?)");
    let text = std::fs::read_to_string(&init.config_path).unwrap();
    std::fs::write(
        &init.config_path,
        text.replace("pool_size = 4", "pool_size = 8"),
    )
    .unwrap();
    let config = HsmConfig::load(&init.config_path).unwrap();
    let hsm = HsmBackend::open(&config).expect("open HSM");

    // The raw baseline: a second handle on the same (process-wide) library.
    let p11 = Pkcs11::new(SOFTHSM2_MODULE).unwrap();
    match p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == "mpcp-grant-signing")
        .unwrap();

    let digest = [0x42u8; 32];
    println!(
        "hsm_sign: SoftHSM2, {secs} s per path and cell in {SLICES} alternating slices, same input every call"
    );
    println!(
        "{:<7} {:>3} {:>11} {:>11} {:>7} {:>13} {:>13} {:>7}",
        "alg", "N", "raw ops/s", "path ops/s", "ratio", "raw ops/CPUs", "path ops/CPUs", "ratio"
    );
    let (mut worst_wall, mut worst_cpu) = (f64::INFINITY, f64::INFINITY);
    for alg in Alg::ALL {
        let key = hsm
            .generate(KeyRole::GrantSigning, alg, &format!("bench-{alg}"))
            .unwrap();
        let signer: Arc<dyn DigestSigner> = hsm
            .signer(KeyRole::GrantSigning, alg, &key.object_id, "bench")
            .unwrap();
        let message: [u8; 32] = match alg {
            Alg::EdDSA => digest,
            _ => ecdsa_prehash(&digest),
        };
        for n in THREADS {
            let s = signer.clone();
            let id = key.object_id.clone();
            let cell = compare(
                n,
                secs,
                (
                    |_| {
                        // Its own read-write session (like the pool's), opened and logged in
                        // (login is per token) before timing.
                        let session = p11.open_rw_session(slot).unwrap();
                        let h = find_private(&session, &id);
                        (session, h)
                    },
                    move |(session, h): &(
                        cryptoki::session::Session,
                        cryptoki::object::ObjectHandle,
                    )| {
                        session.sign(&mechanism(alg), *h, &message).expect("C_Sign");
                    },
                ),
                (
                    |_| s.clone(),
                    move |s: &Arc<dyn DigestSigner>| {
                        s.sign_digest(&digest).expect("sign_digest");
                    },
                ),
            );
            worst_wall = worst_wall.min(cell.ratio_wall);
            worst_cpu = worst_cpu.min(cell.ratio_cpu);
            println!(
                "{:<7} {n:>3} {:>11.0} {:>11.0} {:>6.1}% {:>13.0} {:>13.0} {:>6.1}%",
                alg.as_str(),
                cell.raw_wall,
                cell.path_wall,
                cell.ratio_wall * 100.0,
                cell.raw_cpu,
                cell.path_cpu,
                cell.ratio_cpu * 100.0
            );
        }
        // The floor set by the timeout mechanism alone: the same raw C_Sign, but run on a
        // helper thread and waited for, as the pool does (no pool, checks or encoding).
        let id = key.object_id.clone();
        let floor = compare(
            1,
            secs,
            (
                |_| {
                    let session = p11.open_rw_session(slot).unwrap();
                    let h = find_private(&session, &id);
                    (session, h)
                },
                move |(session, h): &(
                    cryptoki::session::Session,
                    cryptoki::object::ObjectHandle,
                )| {
                    session.sign(&mechanism(alg), *h, &message).expect("C_Sign");
                },
            ),
            (
                |_| {
                    let (tx, rx) = std::sync::mpsc::channel::<Job>();
                    let (p11, id) = (p11.clone(), id.clone());
                    std::thread::spawn(move || {
                        let session = p11.open_rw_session(slot).unwrap();
                        let h = find_private(&session, &id);
                        while let Ok(job) = rx.recv() {
                            job(&session, h);
                        }
                    });
                    tx
                },
                move |tx: &std::sync::mpsc::Sender<Job>| {
                    let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
                    tx.send(Box::new(move |session, h| {
                        let sig = session.sign(&mechanism(alg), h, &message).expect("C_Sign");
                        let _ = rtx.send(sig);
                    }))
                    .unwrap();
                    rrx.recv().unwrap();
                },
            ),
        );
        println!(
            "{:<7} {:>3} C_Sign through a bare thread hand-off: {:.1}% of raw ({:.1}% per CPU s)",
            alg.as_str(),
            1,
            floor.ratio_wall * 100.0,
            floor.ratio_cpu * 100.0
        );
    }
    println!(
        "lowest ratio: {:.1}% wall-clock, {:.1}% per CPU second (target >= 90%)",
        worst_wall * 100.0,
        worst_cpu * 100.0
    );
}
