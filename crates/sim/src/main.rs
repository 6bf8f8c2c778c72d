//! Replays or sweeps simulator seeds: `onggi-sim --seed S` runs one seed and prints its report;
//! `onggi-sim --from A --count N` runs seeds A..A+N and prints one line per seed, or with
//! `--quiet` only the failing seeds and a total.

use std::process::ExitCode;

use onggi_sim::{Config, run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<u64> {
        let at = args.iter().position(|arg| arg == flag)?;
        args.get(at + 1)?.parse().ok()
    };
    let (from, count) = match (value("--seed"), value("--from"), value("--count")) {
        (Some(seed), _, _) => (seed, 1),
        (None, Some(from), Some(count)) => (from, count),
        (None, None, Some(count)) => (0, count),
        _ => {
            eprintln!("usage: onggi-sim --seed S | [--from A] --count N");
            return ExitCode::from(2);
        }
    };
    let quiet = args.iter().any(|arg| arg == "--quiet");
    let mut failures = 0;
    let (mut operations, mut faults, mut converge) = (0, 0, Vec::new());
    let (mut tombstones_removed, mut commits_dropped) = (0, 0);
    for seed in from..from.saturating_add(count) {
        let config = Config::from_seed(seed);
        let report = run(&config);
        operations += report.ok + report.failed + report.indeterminate;
        faults += report.partitions + report.crashes + report.pauses;
        converge.extend(report.converged_after_ms);
        tombstones_removed += report.tombstones_removed;
        commits_dropped += report.commits_dropped;
        if count == 1 {
            println!("{config:?}");
        }
        if !quiet || !report.violations.is_empty() {
            println!("{}", report.summary());
        }
        for violation in &report.violations {
            println!("  {violation}");
        }
        if !report.violations.is_empty() {
            failures += 1;
            println!("  replay: cargo run -p onggi-sim --release -- --seed {seed}");
        }
    }
    converge.sort_unstable();
    let median = converge.get(converge.len() / 2).copied().unwrap_or(0);
    let max = converge.last().copied().unwrap_or(0);
    println!(
        "seeds {from}..{}: {operations} client operations, {faults} partitions/crashes/pauses; replicas converged \
         after healing in {median} ms median, {max} ms max (simulated); {tombstones_removed} tombstones collected, \
         {commits_dropped} old commits dropped",
        from.saturating_add(count)
    );
    if failures > 0 {
        println!("{failures} of {count} seeds failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
