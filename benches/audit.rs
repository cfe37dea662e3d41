//! Audit-log benchmark (harness = false): durable appends per second with group commit at 1,
//! 8 and 64 concurrent writers (ratio to the 1-writer baseline of the same run), and
//! inclusion-proof time at 10^3, 10^5 and 10^6 entries (ratio to 10^3; the proof reads
//! O(log n) stored nodes, so the time should grow roughly with log n, not n).
//!
//! Run with `cargo bench --bench audit`. `AUDIT_BENCH_SECONDS` sets the append phase length
//! per writer count (default 3). Uses a real sled store on disk with a real flush per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpcp_pa::audit::log::CACHED_LEVEL;
use mpcp_pa::audit::merkle::{leaf_hash, verify_inclusion};
use mpcp_pa::audit::{AuditConfig, AuditLog};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::{Actor, Event, EventSink};
use mpcp_pa::store::Store;

fn event(i: u64) -> Event {
    Event::GrantIssued {
        grant_id: format!("grant-{i}"),
        issuer_key_id: "pa-grant-1".into(),
        policy_hash: format!("{i:064x}"),
        request_digest: format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        credential_tx: None,
    }
}

fn actor() -> Actor {
    Actor {
        name: "bench".into(),
        role: "issuer".into(),
    }
}

fn open(dir: &std::path::Path) -> (Store, AuditLog) {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(dir).expect("open store");
    let log = AuditLog::open(
        &store,
        AuditConfig::new("bench.local/audit"),
        Arc::new(SystemClock),
    )
    .expect("open log");
    (store, log)
}

/// Appends per second and mean entries per flushed batch.
fn appends_per_second(base: &std::path::Path, writers: usize, seconds: f64) -> (f64, f64) {
    let (_store, log) = open(&base.join(format!("appends-{writers}")));
    let log = Arc::new(log);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (log, stop, done) = (log.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = w as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    log.record(&actor(), event(i)).expect("record");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    assert_eq!(log.size(), n);
    (
        n as f64 / elapsed,
        n as f64 / log.stats().batches.max(1) as f64,
    )
}

/// Mean time of one inclusion proof for pseudo-random indices at the current size, the
/// longest proof, and the mean number of stored nodes read per proof.
fn proof_time(log: &AuditLog, samples: u64) -> (Duration, usize, f64) {
    let size = log.size();
    let root = log.root(size).expect("root");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let picks: Vec<u64> = (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % size
        })
        .collect();
    let leaves: Vec<_> = picks
        .iter()
        .map(|&i| leaf_hash(&log.entries(i, i + 1).expect("entry")[0]))
        .collect();
    let reads_before = log.stats().node_reads;
    let start = Instant::now();
    let mut len = 0;
    let mut proofs = Vec::with_capacity(picks.len());
    for &i in &picks {
        let p = log.inclusion_proof(i, size).expect("proof");
        len = len.max(p.len());
        proofs.push(p);
    }
    let t = start.elapsed() / samples as u32;
    let reads = (log.stats().node_reads - reads_before) as f64 / samples as f64;
    for ((i, p), leaf) in picks.iter().zip(&proofs).zip(&leaves) {
        verify_inclusion(*i, size, leaf, p, &root).expect("proof verifies");
    }
    (t, len, reads)
}

fn grow_to(log: &AuditLog, target: u64) {
    const CHUNK: u64 = 5_000;
    while log.size() < target {
        let from = log.size();
        let to = target.min(from + 50_000);
        let batch: Vec<_> = (from..to).map(|i| (actor(), event(i))).collect();
        log.bulk_append(batch, CHUNK as usize).expect("bulk append");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` (no argument) this runs as a quick
    // smoke test of the same code with small sizes, so the figures are not meaningful then.
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = std::env::var("AUDIT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3.0 } else { 0.2 });
    let sizes: &[u64] = if full {
        &[1_000, 100_000, 1_000_000]
    } else {
        &[1_000, 4_000]
    };
    let base = std::env::temp_dir().join(format!("mpcp-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");

    println!("durable appends (record() returns after flush; group commit), {seconds} s each");
    let mut baseline = 0.0;
    for writers in [1usize, 8, 64] {
        let (rate, per_flush) = appends_per_second(&base, writers, seconds);
        if writers == 1 {
            baseline = rate;
        }
        println!(
            "  {writers:>2} writers: {rate:>10.0} appends/s   ratio to 1 writer: {:.2}x   \
             ({per_flush:.1} entries per flush)",
            rate / baseline
        );
    }

    println!(
        "inclusion proof (sled-backed; O(log n) nodes, levels >= {CACHED_LEVEL} cached in memory), \
         mean of 2000 random leaves"
    );
    let (_store, log) = open(&base.join("proofs"));
    let mut first = None;
    for &target in sizes {
        let t0 = Instant::now();
        grow_to(&log, target);
        let build = t0.elapsed();
        let (t, len, reads) = proof_time(&log, 2000);
        let (t0, reads0) = *first.get_or_insert((t, reads));
        println!(
            "  {target:>9} entries: {:>7.2} us/proof, ratio to 10^3 {:.2}x | {reads:.1} store reads \
             (ratio {:.2}x; log2 n ratio {:.2}x) | {len} hashes | {:.2} us per store read | build {:.1} s",
            t.as_secs_f64() * 1e6,
            t.as_secs_f64() / t0.as_secs_f64(),
            reads / reads0,
            (target as f64).log2() / 1_000f64.log2(),
            t.as_secs_f64() * 1e6 / reads,
            build.as_secs_f64()
        );
    }
    drop(log);
    let _ = std::fs::remove_dir_all(&base);
}
