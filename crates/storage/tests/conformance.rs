//! The conformance suite against both engines, and the tests only the on-disk engine needs:
//! reopening, the format marker, the directory lock, queue overload and a `kill -9` crash test.
//!
//! One test binary on purpose: every test binary is a separate link, and links dominate build
//! time on small machines.

use onggi_storage::conformance::{self, pseudo_random_bytes};
use onggi_storage::{
    BoxIter, Completion, Direction, Durability, Engine, FORMAT_FILE_NAME, FjallEngine, FjallOptions, MemoryEngine,
    StorageError, Tree, WriteBatch, commit_wait,
};
use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// A [`FjallEngine`] in a temporary directory that is removed after the engine is dropped.
struct TemporaryFjall {
    /// Declared first so that it is dropped (and shut down) before the directory goes.
    engine: FjallEngine,
    /// Removes the directory when dropped.
    _directory: tempfile::TempDir,
}

impl Engine for TemporaryFjall {
    fn open_tree(&self, name: &str) -> Result<Tree, StorageError> {
        self.engine.open_tree(name)
    }
    fn drop_tree(&self, name: &str) -> Result<(), StorageError> {
        self.engine.drop_tree(name)
    }
    fn list_trees(&self) -> Result<Vec<String>, StorageError> {
        self.engine.list_trees()
    }
    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.engine.get(tree, key)
    }
    fn range(
        &self,
        tree: &Tree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<BoxIter, StorageError> {
        self.engine.range(tree, lower, upper, direction)
    }
    fn commit(&self, batch: WriteBatch, durability: Durability, on_done: Completion) {
        self.engine.commit(batch, durability, on_done);
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }
}

fn memory_factory() -> Arc<dyn Engine> {
    Arc::new(MemoryEngine::new())
}

fn fjall_factory() -> Arc<dyn Engine> {
    let directory = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(directory.path(), FjallOptions::default()).unwrap();
    Arc::new(TemporaryFjall { engine, _directory: directory })
}

/// One `#[test]` per case and engine, so a failure names both.
macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        const LISTED_CASES: &[&str] = &[$(stringify!($case)),*];
        mod memory {
            $(#[test] fn $case() { onggi_storage::conformance::$case(&super::memory_factory) })*
        }
        mod fjall {
            $(#[test] fn $case() { onggi_storage::conformance::$case(&super::fjall_factory) })*
        }
    };
}

conformance_tests!(
    get_put_delete,
    overwrite_and_last_write_in_batch_wins,
    atomic_multi_tree_batch,
    refused_batch_leaves_no_trace,
    readers_never_see_half_a_batch,
    range_all_bounds_both_directions,
    empty_ranges,
    open_iterator_is_a_snapshot,
    drop_tree_then_reopen_is_empty,
    list_trees_and_names,
    completion_called_exactly_once,
    concurrent_committers,
    binary_keys_sort_as_unsigned_bytes,
    large_values,
    key_limits,
    foreign_tree_handles_are_refused,
);

/// A case added to the suite but not to the list above would silently not run.
#[test]
fn every_conformance_case_runs() {
    let suite: Vec<&str> = conformance::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(suite, LISTED_CASES);
}

fn put(engine: &dyn Engine, tree: &Tree, key: &[u8], value: &[u8], durability: Durability) {
    let mut batch = WriteBatch::new();
    batch.put(tree, key.to_vec(), value.to_vec());
    commit_wait(engine, batch, durability).unwrap();
}

/// Options that make memtables flush to table files quickly, to test reads from disk too.
fn small_memtables() -> FjallOptions {
    FjallOptions { memtable_bytes_max: 1024 * 1024, ..FjallOptions::default() }
}

#[test]
fn fjall_reopen_keeps_data_and_drops() {
    let directory = tempfile::tempdir().unwrap();
    let large = pseudo_random_bytes(7, 300 * 1024);
    {
        let engine = FjallEngine::open(directory.path(), small_memtables()).unwrap();
        let synced = engine.open_tree("synced").unwrap();
        let buffered = engine.open_tree("buffered").unwrap();
        let dropped = engine.open_tree("dropped").unwrap();
        put(&engine, &synced, b"k", b"sync", Durability::Sync);
        put(&engine, &buffered, b"k", b"buffered", Durability::Buffered);
        put(&engine, &dropped, b"k", b"gone", Durability::Sync);
        engine.drop_tree("dropped").unwrap();
        // About 6 MB through 1 MiB memtables: several flushes to table files.
        for index in 0..20_u32 {
            put(&engine, &synced, format!("large-{index:02}").as_bytes(), &large, Durability::Buffered);
        }
        // Dropping the engine drains the queue and fsyncs.
    }
    let engine = FjallEngine::open(directory.path(), small_memtables()).unwrap();
    assert_eq!(engine.list_trees().unwrap(), ["buffered", "synced"]);
    let synced = engine.open_tree("synced").unwrap();
    let buffered = engine.open_tree("buffered").unwrap();
    assert_eq!(engine.get(&synced, b"k").unwrap().as_deref(), Some(&b"sync"[..]));
    assert_eq!(engine.get(&buffered, b"k").unwrap().as_deref(), Some(&b"buffered"[..]));
    let scanned: Vec<_> = engine
        .range(&synced, Bound::Included(b"large-".to_vec()), Bound::Unbounded, Direction::Forward)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(scanned.len(), 20);
    assert!(scanned.iter().all(|(_, value)| *value == large));
    let dropped = engine.open_tree("dropped").unwrap();
    assert_eq!(engine.get(&dropped, b"k").unwrap(), None, "a dropped tree stays dropped across restarts");
}

#[test]
fn fjall_format_marker_is_checked() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("node-data");
    drop(FjallEngine::open(&path, FjallOptions::default()).unwrap());
    let marker = path.join(FORMAT_FILE_NAME);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "onggi-storage fjall v1\n");

    std::fs::write(&marker, "onggi-storage fjall v999\n").unwrap();
    let error = FjallEngine::open(&path, FjallOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StorageError::FormatMismatch { .. }), "{message}");
    assert!(message.contains("node-data") && message.contains("v999") && message.contains("fjall v1"), "{message}");

    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), b"not ours").unwrap();
    let error = FjallEngine::open(&foreign, FjallOptions::default()).unwrap_err();
    assert!(matches!(error, StorageError::NotStorageDirectory { .. }), "{error}");
    assert!(error.to_string().contains("foreign"), "{error}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1, "a refused directory is left untouched");
}

#[test]
fn fjall_directory_is_locked_while_open() {
    let directory = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(directory.path(), FjallOptions::default()).unwrap();
    let error = FjallEngine::open(directory.path(), FjallOptions::default()).unwrap_err();
    assert!(error.to_string().contains("in use by another process"), "{error}");
    drop(engine);
    FjallEngine::open(directory.path(), FjallOptions::default()).unwrap();
}

#[test]
fn fjall_options_are_validated() {
    let directory = tempfile::tempdir().unwrap();
    let options = FjallOptions { journal_bytes_max: 1024, ..FjallOptions::default() };
    let error = FjallEngine::open(directory.path(), options).unwrap_err();
    assert!(matches!(error, StorageError::InvalidOptions { .. }) && error.to_string().contains("journal_bytes_max"));
}

#[test]
fn fjall_full_queue_refuses_commits() {
    let directory = tempfile::tempdir().unwrap();
    let options = FjallOptions { queue_batches_max: 1, ..FjallOptions::default() };
    let engine = FjallEngine::open(directory.path(), options).unwrap();
    let tree = engine.open_tree("items").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(&tree, b"k".to_vec(), b"v".to_vec());

    // Hold the committer inside a completion so that the next commit stays queued.
    let (entered_sender, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    engine.commit(
        batch.clone(),
        Durability::Buffered,
        Box::new(move |result| {
            result.unwrap();
            entered_sender.send(()).unwrap();
            released.recv_timeout(Duration::from_secs(30)).unwrap();
        }),
    );
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    let (queued_sender, queued) = mpsc::channel();
    engine.commit(batch.clone(), Durability::Sync, Box::new(move |result| queued_sender.send(result).unwrap()));
    let error = commit_wait(&engine, batch.clone(), Durability::Sync).unwrap_err();
    assert!(matches!(error, StorageError::Overloaded { queue_batches_max: 1, .. }), "{error}");
    assert!(error.is_retryable());

    release.send(()).unwrap();
    queued.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    commit_wait(&engine, batch, Durability::Sync).unwrap();
}

#[test]
fn fjall_last_handle_dropped_inside_a_completion() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Arc::new(FjallEngine::open(directory.path(), FjallOptions::default()).unwrap());
    let tree = engine.open_tree("items").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(&tree, b"k".to_vec(), b"v".to_vec());
    drop(tree);

    // The completion holds the last handle and drops it on the committer thread, which therefore
    // runs the engine's `Drop`; that must neither deadlock nor lose the write.
    let held = Arc::clone(&engine);
    let (dropped_sender, dropped) = mpsc::channel::<()>();
    let (result_sender, results) = mpsc::channel();
    engine.commit(
        batch,
        Durability::Sync,
        Box::new(move |result| {
            dropped.recv_timeout(Duration::from_secs(30)).unwrap();
            drop(held);
            result_sender.send(result).unwrap();
        }),
    );
    drop(engine);
    dropped_sender.send(()).unwrap();
    results.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();

    // The committer thread releases the directory lock as it exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    let engine = loop {
        match FjallEngine::open(directory.path(), FjallOptions::default()) {
            Ok(engine) => break engine,
            Err(error) if Instant::now() < deadline => {
                assert!(error.to_string().contains("in use"), "{error}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("the engine was not released: {error}"),
        }
    };
    let tree = engine.open_tree("items").unwrap();
    assert_eq!(engine.get(&tree, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Selects the writer role of the crash test in the child process, and names its directory.
const CRASH_DIRECTORY_VARIABLE: &str = "ONGGI_STORAGE_CRASH_WRITER_DIRECTORY";
/// Which round of the crash test the child writes (keys are unique per round).
const CRASH_ROUND_VARIABLE: &str = "ONGGI_STORAGE_CRASH_ROUND";
/// Rounds of write, kill, recover, verify; later rounds crash a directory that was recovered.
const CRASH_ROUNDS: u32 = 3;
/// Acknowledgements the parent waits for before it kills the writer.
const CRASH_ACKNOWLEDGEMENTS_PER_ROUND: usize = 300;
/// Writer threads in the child.
const CRASH_WRITER_THREADS: u32 = 4;
/// Each writer thread stops after this many commits, or after `CRASH_WRITER_DURATION`.
const CRASH_WRITER_COMMITS_MAX: u32 = 20_000;
/// How long the writer runs if nobody kills it, and how long the parent waits for it.
const CRASH_WRITER_DURATION: Duration = Duration::from_secs(60);

/// The crash test: a child process commits from several threads and prints each acknowledged key;
/// the parent kills it with SIGKILL mid-stream, reopens the directory, and checks that every
/// acknowledged write (Sync, and Buffered too, since a process crash keeps what reached the OS)
/// is present with its value, and that every batch is whole.
///
/// A SIGKILL tests process crashes only; power loss is modelled by `MemoryEngine` in the
/// simulator.
#[test]
fn fjall_kill9_keeps_every_acknowledged_write() {
    if let Ok(directory) = std::env::var(CRASH_DIRECTORY_VARIABLE) {
        let round = std::env::var(CRASH_ROUND_VARIABLE).unwrap().parse().unwrap();
        crash_writer(Path::new(&directory), round);
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..CRASH_ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["fjall_kill9_keeps_every_acknowledged_write", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIRECTORY_VARIABLE, directory.path())
            .env(CRASH_ROUND_VARIABLE, round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(key) = line.strip_prefix("ACK ") {
                    let _ = sender.send(key.to_owned());
                }
            }
        });
        let deadline = Instant::now() + CRASH_WRITER_DURATION;
        let mut round_acknowledged = Vec::new();
        while round_acknowledged.len() < CRASH_ACKNOWLEDGEMENTS_PER_ROUND {
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(key) => round_acknowledged.push(key),
                Err(_) => break,
            }
        }
        // SIGKILL to the child we started, by its PID.
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Lines printed before the kill are acknowledged writes too.
        round_acknowledged.extend(receiver.try_iter());
        assert!(
            round_acknowledged.len() >= CRASH_ACKNOWLEDGEMENTS_PER_ROUND,
            "round {round}: the writer acknowledged only {} writes in {CRASH_WRITER_DURATION:?}",
            round_acknowledged.len()
        );
        acknowledged.extend(round_acknowledged);
        let recovered = verify_after_crash(directory.path(), &acknowledged);
        eprintln!(
            "crash round {round}: {} writes acknowledged so far, {recovered} batches recovered",
            acknowledged.len()
        );
    }
}

/// The value the crash test writes for `key`: 64 to 4159 poorly compressible bytes.
fn crash_value(key: &str) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    pseudo_random_bytes(seed, 64 + (seed % 4096) as usize)
}

/// The child's role: commit until killed, printing `ACK <key>` after each successful commit.
fn crash_writer(directory: &Path, round: u32) {
    let engine = Arc::new(FjallEngine::open(directory, FjallOptions::default()).unwrap());
    let items = engine.open_tree("items").unwrap();
    let index = engine.open_tree("index").unwrap();
    // A tree that is dropped before the crash must stay dropped after it.
    let ephemeral = engine.open_tree("ephemeral").unwrap();
    put(&*engine, &ephemeral, b"k", b"v", Durability::Buffered);
    engine.drop_tree("ephemeral").unwrap();

    let deadline = Instant::now() + CRASH_WRITER_DURATION;
    let threads: Vec<_> = (0..CRASH_WRITER_THREADS)
        .map(|thread| {
            let (engine, items, index) = (Arc::clone(&engine), items.clone(), index.clone());
            std::thread::spawn(move || {
                for commit in 0..CRASH_WRITER_COMMITS_MAX {
                    if Instant::now() > deadline {
                        break;
                    }
                    let key = format!("r{round}-t{thread}-c{commit:06}");
                    let mut batch = WriteBatch::new();
                    batch.put(&items, key.clone().into_bytes(), crash_value(&key));
                    batch.put(&index, key.clone().into_bytes(), Vec::new());
                    let durability = if commit % 4 == 3 { Durability::Buffered } else { Durability::Sync };
                    commit_wait(&*engine, batch, durability).unwrap();
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "ACK {key}").unwrap();
                    stdout.flush().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Reopens the crashed directory, checks every acknowledged write and every batch, and returns the
/// number of batches found.
fn verify_after_crash(directory: &Path, acknowledged: &[String]) -> usize {
    let engine = FjallEngine::open(directory, FjallOptions::default()).unwrap();
    assert_eq!(engine.list_trees().unwrap(), ["index", "items"], "the dropped tree stays dropped");
    let items = engine.open_tree("items").unwrap();
    let index = engine.open_tree("index").unwrap();
    for key in acknowledged {
        let value = engine.get(&items, key.as_bytes()).unwrap();
        assert!(value.as_deref() == Some(&crash_value(key)[..]), "acknowledged write {key} lost or damaged");
    }
    // Acknowledged or not, every batch that survived survived whole, with the right value.
    let scan = |tree: &Tree| -> Vec<(Vec<u8>, Vec<u8>)> {
        engine
            .range(tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let item_rows = scan(&items);
    let index_keys: Vec<Vec<u8>> = scan(&index).into_iter().map(|(key, _)| key).collect();
    let item_keys: Vec<Vec<u8>> = item_rows.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(item_keys, index_keys, "a batch survived in one tree but not the other");
    for (key, value) in &item_rows {
        assert!(*value == crash_value(std::str::from_utf8(key).unwrap()), "damaged value at {key:?}");
    }
    assert!(item_rows.len() >= acknowledged.len());
    item_rows.len()
}
