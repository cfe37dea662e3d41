//! Signing throughput: raw PKCS#11 `C_Sign` versus the appliance sign path.
//!
//! For each algorithm and N in {1, 2, 4, 8} threads:
//! - raw: each thread has its own pre-opened session and calls `C_Sign` directly through
//!   cryptoki on the same input (for ECDSA the precomputed SHA-256(D));
//! - path: each thread calls `DigestSigner::sign_digest` on an HSM signer as the service
//!   does, inline under a fresh `CallWatch` per call (prehash, pool checkout, the
//!   `C_GetSessionInfo` health check, the deadline published to the watch, C_Sign, DER +
//!   low-S), pool of 8 sessions.
//!
//! Both run under identical conditions: every thread alternates short blocks of raw and path
//! operations (a few operations each, the order swapped every round), charging each block
//! the wall-clock and the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`) since the end of
//! the previous block, so every instant of the run is charged to one kind. Load from other
//! processes therefore hits both alike, to the millisecond, whatever the machine is doing.
//! Throughput per kind is the sum over threads of operations / time spent in that kind's
//! blocks; the CPU figure is operations per CPU second of the threads that ran them. The
//! ratio path/raw is printed for both (target: >= 90%). On a machine with fewer cores than
//! N, a preemption lands in one block of one kind: the wall-clock ratio of large N then
//! varies from run to run; the CPU ratio does not.
//!
//! One more line per algorithm (N = 1) measures the hand-off path that a plain blocking
//! caller gets (no watch: the call runs on a pool worker thread so the caller can stop
//! waiting at the deadline), by wall-clock only (its CPU is spent on two threads).
//!
//! Needs SoftHSM2 (`apt-get install -y softhsm2`); uses a temporary token directory. Run with
//! `cargo bench --bench hsm_sign`; `HSM_BENCH_SECONDS` sets the time per cell (default 2 s).

#[path = "raw_token/mod.rs"]
mod raw_token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::{CallWatch, HsmBackend, HsmConfig};
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::DigestSigner;

const THREADS: [usize; 4] = [1, 2, 4, 8];
/// Operations per block before switching to the other kind.
const BLOCK: usize = 4;

/// This thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time spent in one kind's blocks by one thread.
#[derive(Default, Clone, Copy)]
struct Spent {
    ops: u64,
    wall_ns: u64,
    cpu_ns: u64,
}

impl Spent {
    fn add(&mut self, o: Spent) {
        self.ops += o.ops;
        self.wall_ns += o.wall_ns;
        self.cpu_ns += o.cpu_ns;
    }
}

/// A point in time on this thread: wall-clock and the thread's CPU time.
#[derive(Clone, Copy)]
struct Mark {
    wall: Instant,
    cpu_ns: u64,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            wall: Instant::now(),
            cpu_ns: thread_cpu_ns(),
        }
    }
}

/// Runs `BLOCK` operations and charges everything since `last` to them: consecutive blocks
/// share their boundary, so no time (a preemption on the clock read itself included) goes
/// uncounted.
fn block(op: &mut impl FnMut(), last: &mut Mark) -> Spent {
    for _ in 0..BLOCK {
        op();
    }
    let now = Mark::now();
    let spent = Spent {
        ops: BLOCK as u64,
        wall_ns: (now.wall - last.wall).as_nanos() as u64,
        cpu_ns: now.cpu_ns - last.cpu_ns,
    };
    *last = now;
    spent
}

/// One cell: throughput of each kind (ops/s over wall-clock, ops per CPU second).
struct Cell {
    raw_wall: f64,
    path_wall: f64,
    raw_cpu: f64,
    path_cpu: f64,
}

impl Cell {
    fn ratio_wall(&self) -> f64 {
        self.path_wall / self.raw_wall
    }
    fn ratio_cpu(&self) -> f64 {
        self.path_cpu / self.raw_cpu
    }
}

/// `n` threads, each alternating blocks of `raw` and `path` for `secs` after a warm-up.
/// `make(i)` builds thread i's two operations.
fn interleave<R, P>(n: usize, secs: f64, make: impl Fn(usize) -> (R, P)) -> Cell
where
    R: FnMut() + Send + 'static,
    P: FnMut() + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (mut raw, mut path) = make(i);
            let (stop, barrier) = (stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Warm-up outside the measured window: sessions opened, handles cached.
                let mut last = Mark::now();
                for _ in 0..2 {
                    block(&mut raw, &mut last);
                    block(&mut path, &mut last);
                }
                barrier.wait();
                let (mut r, mut p) = (Spent::default(), Spent::default());
                let mut round = 0u64;
                let mut last = Mark::now();
                while !stop.load(Ordering::Relaxed) {
                    // Swap the order every round so neither kind always follows the other.
                    if round.is_multiple_of(2) {
                        r.add(block(&mut raw, &mut last));
                        p.add(block(&mut path, &mut last));
                    } else {
                        p.add(block(&mut path, &mut last));
                        r.add(block(&mut raw, &mut last));
                    }
                    round += 1;
                }
                (r, p)
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut cell = Cell {
        raw_wall: 0.0,
        path_wall: 0.0,
        raw_cpu: 0.0,
        path_cpu: 0.0,
    };
    let (mut r_all, mut p_all) = (Spent::default(), Spent::default());
    for h in handles {
        let (r, p) = h.join().expect("bench thread");
        cell.raw_wall += r.ops as f64 / (r.wall_ns as f64 / 1e9);
        cell.path_wall += p.ops as f64 / (p.wall_ns as f64 / 1e9);
        r_all.add(r);
        p_all.add(p);
    }
    cell.raw_cpu = r_all.ops as f64 / (r_all.cpu_ns as f64 / 1e9);
    cell.path_cpu = p_all.ops as f64 / (p_all.cpu_ns as f64 / 1e9);
    cell
}

/// The raw baseline operation of one thread: its own read-write session (like the pool's),
/// opened and logged in (login is per token) before timing.
fn raw_op(
    p11: &Pkcs11,
    slot: Slot,
    id: &[u8],
    alg: Alg,
    message: [u8; 32],
) -> impl FnMut() + use<> {
    let session = p11.open_rw_session(slot).unwrap();
    let h = raw_token::find_private(&session, id);
    move || {
        session
            .sign(&raw_token::mechanism(alg), h, &message)
            .expect("C_Sign");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` it runs as a short smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("HSM_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 2.0 } else { 0.05 });
    let dir = tempfile::tempdir().expect("tempdir");
    let init = mpcp_pa::app::DataDir::new(dir.path())
        .init_dev()
        .expect("init-dev (is softhsm2 installed?)");
    let text = std::fs::read_to_string(&init.config_path).unwrap();
    std::fs::write(
        &init.config_path,
        text.replace("pool_size = 4", "pool_size = 8"),
    )
    .unwrap();
    let config = HsmConfig::load(&init.config_path).unwrap();
    let hsm = HsmBackend::open(&config).expect("open HSM");

    // The raw baseline: a second handle on the same (process-wide) library.
    let (p11, slot) = raw_token::open("mpcp-grant-signing");

    let digest = [0x42u8; 32];
    println!(
        "hsm_sign: SoftHSM2, {secs} s per cell, raw and path interleaved in blocks of {BLOCK} \
         operations on every thread, same input every call"
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
        let message = raw_token::token_input(alg, &digest);
        for n in THREADS {
            let cell = interleave(n, secs, |_| {
                let s = signer.clone();
                (
                    raw_op(&p11, slot, &key.object_id, alg, message),
                    move || {
                        // As the service signs: inline on its blocking thread, under a fresh
                        // watch per request (`hsm::bounded` minus the async waiter).
                        CallWatch::new()
                            .run(|| s.sign_digest(&digest))
                            .expect("sign_digest");
                    },
                )
            });
            worst_wall = worst_wall.min(cell.ratio_wall());
            worst_cpu = worst_cpu.min(cell.ratio_cpu());
            println!(
                "{:<7} {n:>3} {:>11.0} {:>11.0} {:>6.1}% {:>13.0} {:>13.0} {:>6.1}%",
                alg.as_str(),
                cell.raw_wall,
                cell.path_wall,
                cell.ratio_wall() * 100.0,
                cell.raw_cpu,
                cell.path_cpu,
                cell.ratio_cpu() * 100.0
            );
        }
        // The hand-off path of plain blocking callers (no watch), for comparison.
        let handoff = interleave(1, secs, |_| {
            let s = signer.clone();
            (
                raw_op(&p11, slot, &key.object_id, alg, message),
                move || {
                    s.sign_digest(&digest).expect("sign_digest");
                },
            )
        });
        println!(
            "{:<7} {:>3} hand-off path (blocking caller, no watch): {:.0} ops/s, {:.1}% of raw",
            alg.as_str(),
            1,
            handoff.path_wall,
            handoff.ratio_wall() * 100.0,
        );
    }
    println!(
        "lowest ratio: {:.1}% wall-clock, {:.1}% per CPU second (target >= 90%)",
        worst_wall * 100.0,
        worst_cpu * 100.0
    );
}
