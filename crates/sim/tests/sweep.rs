//! The simulator sweep CI runs: a bounded range of seeds must pass every checker, and deliberate
//! bugs must be caught (so the checkers can fail).
//!
//! `ONGGI_SIM_SEEDS=N` (default 100; `scripts/test.sh` also sweeps thousands in a release build) and `ONGGI_SIM_FROM=A` (default 0) choose the seeds; a
//! failing seed prints its report and the command that replays it.

use onggi_sim::{Config, Sabotage, run};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn every_seed_passes_every_checker() {
    let from = env_u64("ONGGI_SIM_FROM", 0);
    let count = env_u64("ONGGI_SIM_SEEDS", 100);
    let mut failures = Vec::new();
    let (mut operations, mut faults, mut converge_max) = (0, 0, 0);
    for seed in from..from + count {
        let report = run(&Config::from_seed(seed));
        operations += report.ok + report.failed + report.indeterminate;
        faults += report.partitions + report.crashes + report.pauses;
        converge_max = converge_max.max(report.converged_after_ms.unwrap_or(0));
        if !report.violations.is_empty() {
            eprintln!("{}", report.summary());
            for violation in &report.violations {
                eprintln!("  {violation}");
            }
            eprintln!("  replay: cargo run -p onggi-sim --release -- --seed {seed}");
            failures.push(seed);
        }
    }
    eprintln!(
        "simulated seeds {from}..{}: {operations} client operations, {faults} partitions/crashes/pauses, \
         slowest convergence after healing {converge_max} ms",
        from + count
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

/// Seeds that crash nodes, with the sabotage applied; returns how many the checkers flagged.
fn caught(sabotage: Sabotage, seeds: u64) -> usize {
    (0..)
        .map(|seed| {
            let mut config = Config::from_seed(seed);
            config.faults.crash_every_ms = 300;
            config.sabotage = Some(sabotage);
            config
        })
        .take(seeds as usize)
        .filter(|config| !run(config).violations.is_empty())
        .count()
}

#[test]
fn acceptors_that_forget_promises_in_a_crash_are_caught() {
    assert!(caught(Sabotage::ForgetfulAcceptors, 60) > 0);
}

#[test]
fn a_cluster_without_repair_is_caught_not_converging() {
    assert!(caught(Sabotage::NoRepair, 20) > 0);
}
