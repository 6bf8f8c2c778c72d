//! Replays or sweeps simulator seeds: `onggi-sim --seed S` runs one seed and prints its report;
//! `onggi-sim --from A --count N` runs seeds A..A+N and prints every failing one.

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
    let mut failures = 0;
    for seed in from..from.saturating_add(count) {
        let config = Config::from_seed(seed);
        let report = run(&config);
        if count == 1 {
            println!("{config:?}");
        }
        println!("{}", report.summary());
        for violation in &report.violations {
            println!("  {violation}");
        }
        if !report.violations.is_empty() {
            failures += 1;
            println!("  replay: cargo run -p onggi-sim --release -- --seed {seed}");
        }
    }
    if failures > 0 {
        println!("{failures} of {count} seeds failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
