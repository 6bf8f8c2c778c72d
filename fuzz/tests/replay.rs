//! Replays the committed seeds (`corpus/<target>/seed-*`) and every reproducer in
//! `regressions/<target>/` through the fuzz targets' checks, without libFuzzer:
//! `cargo test` in `fuzz/`. Set `ONGGI_FUZZ_REPLAY_ALL=1` to replay the whole local corpus too.

use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("expression", onggi_fuzz::expression),
    ("request_body", onggi_fuzz::request_body),
    ("codec", onggi_fuzz::codec),
    ("number", onggi_fuzz::number),
    ("node_requests", onggi_fuzz::node_requests),
];

fn inputs(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let all = std::env::var_os("ONGGI_FUZZ_REPLAY_ALL").is_some();
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in TARGETS {
        let directory = root.join(kind).join(target);
        for path in inputs(&directory) {
            if kind == "corpus" && !all && !path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                continue;
            }
            count += 1;
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    eprintln!("replayed {count} {kind} inputs");
    assert!(failures.is_empty(), "{} of {count} inputs fail:\n  {}", failures.len(), failures.join("\n  "));
}

#[test]
fn seeds() {
    replay("corpus");
}

#[test]
fn regressions() {
    replay("regressions");
}
