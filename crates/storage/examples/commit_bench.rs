//! Measures `Sync` commits per second of [`FjallEngine`] with 1, 16 and 64 concurrent committers,
//! with group commit (default options) and with one fsync per commit (`group_batches_max = 1`).
//!
//! Run: `cargo run --release -p onggi-storage --example commit_bench [DIRECTORY] [SECONDS]`.
//! The directory (default: a temporary one) must be on the disk to be measured, not on tmpfs.

use onggi_storage::{Durability, Engine, FjallEngine, FjallOptions, WriteBatch, commit_wait};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most seconds a single measurement may run, whatever the command line says.
const SECONDS_MAX: u64 = 60;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let parent = arguments.next().map(std::path::PathBuf::from);
    let seconds: u64 = arguments.next().map(|text| text.parse().expect("SECONDS is a number")).unwrap_or(2);
    let duration = Duration::from_secs(seconds.clamp(1, SECONDS_MAX));
    let root = match &parent {
        Some(parent) => tempfile::tempdir_in(parent).expect("create a directory in DIRECTORY"),
        None => tempfile::tempdir().expect("create a temporary directory"),
    };
    println!("directory {}, {} s per measurement, 100-byte values", root.path().display(), duration.as_secs());
    let idle = FjallEngine::open(root.path().join("idle"), FjallOptions::default()).expect("open the engine");
    for table in 0..5 {
        idle.open_tree(&format!("table-{table}")).expect("open a tree");
    }
    println!("resident memory with an idle engine and 5 empty trees: {} KiB", resident_kibibytes());
    drop(idle);
    println!("{:>11} {:>22} {:>22} {:>8}", "committers", "group commit (c/s)", "fsync per commit (c/s)", "ratio");
    for (run, committers) in [1_usize, 16, 64].into_iter().enumerate() {
        let grouped =
            measure(&root.path().join(format!("grouped-{run}")), FjallOptions::default(), committers, duration);
        let single_options = FjallOptions { group_batches_max: 1, ..FjallOptions::default() };
        let single = measure(&root.path().join(format!("single-{run}")), single_options, committers, duration);
        println!("{committers:>11} {grouped:>22.0} {single:>22.0} {:>8.1}", grouped / single);
    }
    println!("resident memory at the end: {} KiB", resident_kibibytes());
}

/// The process's resident set size from `/proc/self/status` (Linux), or 0 if unknown.
fn resident_kibibytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `committers` threads committing single-put `Sync` batches for `duration`; returns commits
/// per second.
fn measure(path: &std::path::Path, options: FjallOptions, committers: usize, duration: Duration) -> f64 {
    let engine = Arc::new(FjallEngine::open(path, options).expect("open the engine"));
    let tree = engine.open_tree("bench").expect("open the tree");
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..committers)
        .map(|thread| {
            let (engine, tree, stop, commits) =
                (Arc::clone(&engine), tree.clone(), Arc::clone(&stop), Arc::clone(&commits));
            std::thread::spawn(move || {
                let mut sequence = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = WriteBatch::new();
                    batch.put(&tree, format!("{thread:04}-{sequence:012}").into_bytes(), vec![0x5A; 100]);
                    commit_wait(&*engine, batch, Durability::Sync).expect("commit");
                    commits.fetch_add(1, Ordering::Relaxed);
                    sequence += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("committer thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    commits.load(Ordering::Relaxed) as f64 / elapsed
}
