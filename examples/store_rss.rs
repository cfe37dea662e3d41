//! How much resident memory the store alone gains per grant: the sled store opened as the
//! appliance opens it (`Store::open`, 16 MiB page cache, the binary's allocator), written
//! with the appliance's pattern of one grant (an audit entry, its Merkle nodes, its record in
//! a leaf-index bucket, the grant record, the idempotency record and the size counter, in one
//! transaction per batch of 8 and one flush per batch), and VmRSS printed at each tenth, then
//! the slope of a line fitted through one sample per 40th after the first tenth. It separates
//! what sled keeps in memory from what the service does, for `benches/soak.rs`
//! (docs/performance.md, "Memory").
//!
//! Run: `cargo run --release --example store_rss -- 200000` (grants; default 200000).
//! `STORE_RSS_ENTRY` and `STORE_RSS_GRANT` set the entry and grant sizes in bytes (600, 1100).

#[path = "../tests/kit/line_fit.rs"]
mod line_fit;

use mpcp_pa::audit::leaf_buckets;
use sled::Transactional;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = mpcp_pa::store::Store::open(dir.path()).expect("store");
    let names = [
        "audit/entries",
        "audit/nodes",
        "audit/leaf-buckets",
        "api/grants",
        "api/idempotency",
        "audit/meta",
    ];
    let t: Vec<sled::Tree> = names.iter().map(|n| store.tree(n).expect("tree")).collect();
    let entry = vec![7u8; size("STORE_RSS_ENTRY", 600)];
    let grant = vec![9u8; size("STORE_RSS_GRANT", 1100)];
    const BATCH: u64 = 8;
    println!("{:>8} {:>9}", "grants", "RSS MiB");
    let mut i = 0u64;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while i < n {
        (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5])
            .transaction(|(e, nodes, leaves, g, idem, meta)| {
                for j in i..i + BATCH {
                    e.insert(&j.to_be_bytes(), entry.clone())?;
                    // The Merkle nodes an append completes: one per level up to its first
                    // left child.
                    let (mut k, mut level) = (j, 0u8);
                    loop {
                        nodes
                            .insert([&[level][..], &k.to_be_bytes()[..]].concat(), vec![1u8; 32])?;
                        if k & 1 == 0 || level > 7 {
                            break;
                        }
                        k >>= 1;
                        level += 1;
                    }
                    // The leaf index: the record of the entry in its hash's bucket.
                    let leaf: [u8; 32] =
                        <sha2::Sha256 as sha2::Digest>::digest(j.to_be_bytes()).into();
                    let key = leaf_buckets::bucket_key(&leaf);
                    let mut bucket = leaves.get(key)?.map(|b| b.to_vec()).unwrap_or_default();
                    leaf_buckets::push(&mut bucket, &leaf, j);
                    leaves.insert(&key, bucket)?;
                    g.insert(format!("grant-{j}").as_bytes(), grant.clone())?;
                    idem.insert(format!("issuer-1\ngrant-{j}").as_bytes(), vec![3u8; 150])?;
                }
                meta.insert("size", &(i + BATCH).to_be_bytes())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .expect("transaction");
        store.flush().expect("flush");
        i += BATCH;
        if i % (n / 40).max(BATCH) < BATCH {
            let rss = rss_mib();
            if i % (n / 10).max(BATCH) < BATCH {
                println!("{i:>8} {rss:>9.1}");
            }
            if i >= n / 10 {
                samples.push((i as f64, rss));
            }
        }
    }
    // RSS moves by several MiB between samples: a least-squares line through the samples
    // after the first tenth (one per 40th) gives the slope.
    let line = line_fit::Line::fit(&samples);
    println!(
        "fitted through {} samples after the first tenth: {:.3} MiB per 1,000 grants, {:.1} -> {:.1} MiB",
        samples.len(),
        line.slope * 1000.0,
        line.at((n / 10) as f64),
        line.at(n as f64)
    );
}
