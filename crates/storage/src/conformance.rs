//! The conformance suite: the behaviour every [`Engine`] must have.
//!
//! Each case is a function taking a factory that returns a fresh, empty engine; it panics with a
//! message naming what went wrong. `tests/conformance.rs` runs every case against every engine of
//! this crate; another crate's engine (a fault-injecting wrapper, say) can run the same cases.
//! All cases are bounded in operation count; none sleeps.
//!
//! The suite is the contract: if a behaviour matters to the node, it belongs here.

use crate::limits::KEY_BYTES_MAX;
use crate::{
    Direction, Durability, Engine, KeyValue, StorageError, Tree, WriteBatch, commit_async, commit_wait, scan_prefix,
};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Makes a fresh, empty engine.
pub type Factory<'factory> = &'factory dyn Fn() -> Arc<dyn Engine>;

/// One conformance case.
pub type Case = fn(Factory<'_>);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("get_put_delete", get_put_delete),
    ("overwrite_and_last_write_in_batch_wins", overwrite_and_last_write_in_batch_wins),
    ("atomic_multi_tree_batch", atomic_multi_tree_batch),
    ("refused_batch_leaves_no_trace", refused_batch_leaves_no_trace),
    ("readers_never_see_half_a_batch", readers_never_see_half_a_batch),
    ("range_all_bounds_both_directions", range_all_bounds_both_directions),
    ("empty_ranges", empty_ranges),
    ("open_iterator_is_a_snapshot", open_iterator_is_a_snapshot),
    ("drop_tree_then_reopen_is_empty", drop_tree_then_reopen_is_empty),
    ("list_trees_and_names", list_trees_and_names),
    ("completion_called_exactly_once", completion_called_exactly_once),
    ("concurrent_committers", concurrent_committers),
    ("binary_keys_sort_as_unsigned_bytes", binary_keys_sort_as_unsigned_bytes),
    ("large_values", large_values),
    ("key_limits", key_limits),
    ("foreign_tree_handles_are_refused", foreign_tree_handles_are_refused),
];

/// Runs every case in order.
pub fn run_all(factory: Factory<'_>) {
    for (name, case) in CASES {
        let started = Instant::now();
        case(factory);
        tracing::debug!(case = name, elapsed_ms = started.elapsed().as_millis() as u64, "conformance case passed");
    }
}

/// Reads, writes and deletes single keys, with both durabilities.
pub fn get_put_delete(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    assert_eq!(engine.get(&tree, b"k").unwrap(), None, "a fresh tree is empty");

    put(&*engine, &tree, b"k", b"v1", Durability::Sync);
    assert_eq!(engine.get(&tree, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    put(&*engine, &tree, b"buffered", b"v2", Durability::Buffered);
    assert_eq!(engine.get(&tree, b"buffered").unwrap().as_deref(), Some(&b"v2"[..]), "buffered writes are visible");
    put(&*engine, &tree, b"empty-value", b"", Durability::Sync);
    assert_eq!(engine.get(&tree, b"empty-value").unwrap().as_deref(), Some(&b""[..]), "empty values are values");

    delete(&*engine, &tree, b"k");
    assert_eq!(engine.get(&tree, b"k").unwrap(), None);
    delete(&*engine, &tree, b"never-written");
    assert_eq!(engine.get(&tree, b"never-written").unwrap(), None, "deleting a missing key is fine");
    assert_eq!(engine.flush(), Ok(()));
}

/// Later writes replace earlier ones, also within one batch.
pub fn overwrite_and_last_write_in_batch_wins(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    put(&*engine, &tree, b"k", b"1", Durability::Sync);
    put(&*engine, &tree, b"k", b"2", Durability::Sync);
    assert_eq!(engine.get(&tree, b"k").unwrap().as_deref(), Some(&b"2"[..]));

    let mut batch = WriteBatch::new();
    batch.put(&tree, b"k".to_vec(), b"a".to_vec()).put(&tree, b"k".to_vec(), b"b".to_vec());
    batch.put(&tree, b"x".to_vec(), b"x".to_vec()).delete(&tree, b"x".to_vec());
    batch.delete(&tree, b"y".to_vec()).put(&tree, b"y".to_vec(), b"y".to_vec());
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(&tree, b"k").unwrap().as_deref(), Some(&b"b"[..]), "put then put: the last wins");
    assert_eq!(engine.get(&tree, b"x").unwrap(), None, "put then delete: deleted");
    assert_eq!(engine.get(&tree, b"y").unwrap().as_deref(), Some(&b"y"[..]), "delete then put: present");
    assert_eq!(
        scan(&*engine, &tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward),
        vec![pair(b"k", b"b"), pair(b"y", b"y")],
        "a scan shows each key once"
    );
}

/// A batch spanning trees is applied to all of them.
pub fn atomic_multi_tree_batch(factory: Factory<'_>) {
    let engine = factory();
    let items = engine.open_tree("items").unwrap();
    let index = engine.open_tree("index").unwrap();
    let hints = engine.open_tree("hints").unwrap();
    put(&*engine, &items, b"old", b"x", Durability::Sync);

    let mut batch = WriteBatch::new();
    batch.put(&items, b"item-1".to_vec(), b"body".to_vec());
    batch.put(&index, b"by-color/red/item-1".to_vec(), b"".to_vec());
    batch.put(&hints, b"node-2/item-1".to_vec(), b"body".to_vec());
    batch.delete(&items, b"old".to_vec());
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    assert!(engine.get(&items, b"item-1").unwrap().is_some());
    assert!(engine.get(&index, b"by-color/red/item-1").unwrap().is_some());
    assert!(engine.get(&hints, b"node-2/item-1").unwrap().is_some());
    assert!(engine.get(&items, b"old").unwrap().is_none());
}

/// A batch refused for one bad operation applies none of its operations.
pub fn refused_batch_leaves_no_trace(factory: Factory<'_>) {
    let engine = factory();
    let items = engine.open_tree("items").unwrap();
    let doomed = engine.open_tree("doomed").unwrap();

    let mut batch = WriteBatch::new();
    batch.put(&items, b"good".to_vec(), b"v".to_vec()).put(&items, Vec::new(), b"v".to_vec());
    assert_eq!(commit_wait(&*engine, batch, Durability::Sync), Err(StorageError::KeyEmpty));

    engine.drop_tree("doomed").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(&items, b"good".to_vec(), b"v".to_vec()).put(&doomed, b"k".to_vec(), b"v".to_vec());
    assert_eq!(
        commit_wait(&*engine, batch, Durability::Buffered),
        Err(StorageError::TreeDropped { name: "doomed".into() })
    );
    assert_eq!(engine.get(&items, b"good").unwrap(), None, "no operation of a refused batch is applied");
}

/// Concurrent readers see every batch entirely or not at all, across trees and within a scan.
pub fn readers_never_see_half_a_batch(factory: Factory<'_>) {
    // The writer goes on until the reader has checked often enough, within these bounds.
    const GENERATIONS_MIN: u64 = 200;
    const GENERATIONS_MAX: u64 = 5_000;
    const CHECKS_MIN: u64 = 100;
    const ROWS: usize = 8;
    let engine = factory();
    let left = engine.open_tree("left").unwrap();
    let right = engine.open_tree("right").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));

    let reader = std::thread::spawn({
        let (engine, left, right) = (Arc::clone(&engine), left.clone(), right.clone());
        let (done, checks) = (Arc::clone(&done), Arc::clone(&checks));
        move || {
            loop {
                let finished = done.load(Ordering::Acquire);
                // Read in both orders: whichever tree a torn batch reached first, one order shows it.
                let (first_left, then_right) = (generation(&*engine, &left), generation(&*engine, &right));
                assert!(then_right >= first_left, "right {then_right} read after left {first_left}: torn batch");
                let (first_right, then_left) = (generation(&*engine, &right), generation(&*engine, &left));
                assert!(then_left >= first_right, "left {then_left} read after right {first_right}: torn batch");
                let rows = scan(
                    &*engine,
                    &left,
                    Bound::Included(b"row".to_vec()),
                    Bound::Excluded(b"rox".to_vec()),
                    Direction::Forward,
                );
                assert!(rows.len() == ROWS || rows.is_empty(), "a scan saw {} of {ROWS} rows of a batch", rows.len());
                assert!(rows.windows(2).all(|pair| pair[0].1 == pair[1].1), "a scan saw rows of different batches");
                checks.fetch_add(1, Ordering::AcqRel);
                if finished {
                    break;
                }
            }
        }
    });
    for generation in 1..=GENERATIONS_MAX {
        let value = generation.to_be_bytes().to_vec();
        let mut batch = WriteBatch::new();
        batch.put(&left, b"gen".to_vec(), value.clone()).put(&right, b"gen".to_vec(), value.clone());
        for row in 0..ROWS {
            batch.put(&left, format!("row{row}").into_bytes(), value.clone());
        }
        commit_wait(&*engine, batch, Durability::Buffered).unwrap();
        if generation >= GENERATIONS_MIN && checks.load(Ordering::Acquire) >= CHECKS_MIN {
            break;
        }
    }
    done.store(true, Ordering::Release);
    reader.join().expect("the reader found a torn batch");
}

/// Every combination of bounds, in both directions, against a model.
pub fn range_all_bounds_both_directions(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    let stored: Vec<&[u8]> = vec![b"b", b"d", b"d\0", b"f", b"h"];
    let mut batch = WriteBatch::new();
    for key in &stored {
        batch.put(&tree, key.to_vec(), [b"value-", *key].concat());
    }
    commit_wait(&*engine, batch, Durability::Sync).unwrap();

    let probes: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"d\0", b"e", b"h", b"i"];
    let mut bounds = vec![Bound::Unbounded];
    for probe in &probes {
        bounds.push(Bound::Included(probe.to_vec()));
        bounds.push(Bound::Excluded(probe.to_vec()));
    }
    for lower in &bounds {
        for upper in &bounds {
            let expected: Vec<KeyValue> = stored
                .iter()
                .filter(|key| above(key, lower) && below(key, upper))
                .map(|key| (key.to_vec(), [b"value-", *key].concat()))
                .collect();
            let forward = scan(&*engine, &tree, lower.clone(), upper.clone(), Direction::Forward);
            assert_eq!(forward, expected, "forward scan of {lower:?}..{upper:?}");
            let mut reversed = expected;
            reversed.reverse();
            let reverse = scan(&*engine, &tree, lower.clone(), upper.clone(), Direction::Reverse);
            assert_eq!(reverse, reversed, "reverse scan of {lower:?}..{upper:?}");
        }
    }
}

/// Empty trees, inverted and degenerate bounds, and ranges past the data yield nothing.
pub fn empty_ranges(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    for direction in [Direction::Forward, Direction::Reverse] {
        assert!(scan(&*engine, &tree, Bound::Unbounded, Bound::Unbounded, direction).is_empty(), "empty tree");
    }
    put(&*engine, &tree, b"m", b"v", Durability::Sync);
    let inc = |key: &[u8]| Bound::Included(key.to_vec());
    let exc = |key: &[u8]| Bound::Excluded(key.to_vec());
    let cases = [
        (inc(b"z"), inc(b"a")),
        (inc(b"m"), exc(b"m")),
        (exc(b"m"), inc(b"m")),
        (exc(b"m"), exc(b"m")),
        (inc(b"n"), Bound::Unbounded),
        (Bound::Unbounded, exc(b"m")),
        (Bound::Unbounded, inc(b"")),
        (exc(b"m"), exc(b"m\0")),
    ];
    for (lower, upper) in cases {
        for direction in [Direction::Forward, Direction::Reverse] {
            let found = scan(&*engine, &tree, lower.clone(), upper.clone(), direction);
            assert!(found.is_empty(), "{lower:?}..{upper:?} {direction:?} found {found:?}");
        }
    }
    assert_eq!(
        scan(&*engine, &tree, inc(b""), Bound::Unbounded, Direction::Forward).len(),
        1,
        "an empty lower bound is no bound"
    );
    assert_eq!(scan(&*engine, &tree, inc(b"m"), inc(b"m"), Direction::Reverse).len(), 1, "a one-key range");
    assert_eq!(scan_prefix(&*engine, &tree, b"x", Direction::Forward).unwrap().count(), 0);
}

/// An open iterator sees the tree as it was when it was opened, whatever is written later.
pub fn open_iterator_is_a_snapshot(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    let mut batch = WriteBatch::new();
    for index in 0..10 {
        batch.put(&tree, format!("k{index}").into_bytes(), b"old".to_vec());
    }
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    let before: Vec<KeyValue> = (0..10).map(|index| (format!("k{index}").into_bytes(), b"old".to_vec())).collect();

    let mut forward = engine.range(&tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward).unwrap();
    let mut seen: Vec<KeyValue> = forward.by_ref().take(3).map(Result::unwrap).collect();
    let reverse = engine.range(&tree, Bound::Unbounded, Bound::Unbounded, Direction::Reverse).unwrap();

    let mut batch = WriteBatch::new();
    batch.put(&tree, b"k5".to_vec(), b"new".to_vec()).delete(&tree, b"k7".to_vec());
    batch.put(&tree, b"k55".to_vec(), b"new".to_vec()).delete(&tree, b"k1".to_vec());
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    put(&*engine, &tree, b"k9", b"new", Durability::Buffered);

    // Finish the partly read iterator on another thread: iterators are owned and `Send`.
    let rest = std::thread::spawn(move || forward.map(Result::unwrap).collect::<Vec<_>>()).join().unwrap();
    seen.extend(rest);
    assert_eq!(seen, before, "a partly read forward iterator ignores later writes");
    let mut reversed: Vec<KeyValue> = reverse.map(Result::unwrap).collect();
    reversed.reverse();
    assert_eq!(reversed, before, "an unread reverse iterator ignores later writes");

    let after = scan(&*engine, &tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward);
    let keys: Vec<&[u8]> = after.iter().map(|(key, _)| key.as_slice()).collect();
    assert_eq!(keys, [&b"k0"[..], b"k2", b"k3", b"k4", b"k5", b"k55", b"k6", b"k8", b"k9"]);
    assert_eq!(engine.get(&tree, b"k5").unwrap().as_deref(), Some(&b"new"[..]));
}

/// Dropping a tree removes its data at once; old handles fail; the name can be reused.
pub fn drop_tree_then_reopen_is_empty(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("table").unwrap();
    let bystander = engine.open_tree("bystander").unwrap();
    put(&*engine, &tree, b"k", b"v", Durability::Sync);
    put(&*engine, &bystander, b"k", b"v", Durability::Sync);

    let started = Instant::now();
    engine.drop_tree("table").unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "dropping a small tree took {elapsed:?}");
    assert_eq!(engine.list_trees().unwrap(), ["bystander"]);

    let dropped = StorageError::TreeDropped { name: "table".into() };
    assert_eq!(engine.get(&tree, b"k"), Err(dropped.clone()));
    assert_eq!(
        engine.range(&tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward).err(),
        Some(dropped.clone())
    );
    let mut batch = WriteBatch::new();
    batch.put(&tree, b"k".to_vec(), b"v".to_vec());
    assert_eq!(commit_wait(&*engine, batch, Durability::Sync), Err(dropped.clone()));

    let reopened = engine.open_tree("table").unwrap();
    assert_ne!(reopened, tree, "a new incarnation gets a new handle");
    assert_eq!(engine.get(&reopened, b"k").unwrap(), None, "a re-created tree starts empty");
    assert!(scan(&*engine, &reopened, Bound::Unbounded, Bound::Unbounded, Direction::Forward).is_empty());
    put(&*engine, &reopened, b"k2", b"v2", Durability::Sync);
    assert_eq!(engine.get(&tree, b"k2"), Err(dropped), "old handles stay dead after re-creation");
    assert_eq!(engine.get(&bystander, b"k").unwrap().as_deref(), Some(&b"v"[..]), "other trees are untouched");

    engine.drop_tree("never-existed").unwrap();
    for _ in 0..3 {
        let tree = engine.open_tree("churn").unwrap();
        put(&*engine, &tree, b"k", b"v", Durability::Buffered);
        engine.drop_tree("churn").unwrap();
    }
    let churn = engine.open_tree("churn").unwrap();
    assert_eq!(engine.get(&churn, b"k").unwrap(), None);
}

/// Trees are listed sorted; opening is idempotent; bad names are refused.
pub fn list_trees_and_names(factory: Factory<'_>) {
    let engine = factory();
    assert_eq!(engine.list_trees().unwrap(), Vec::<String>::new(), "a fresh engine has no trees");
    let b = engine.open_tree("b").unwrap();
    engine.open_tree("a").unwrap();
    engine.open_tree("c.d-E_9").unwrap();
    assert_eq!(engine.open_tree("b").unwrap(), b, "opening an open tree returns the same handle");
    assert_eq!(b.name(), "b");
    assert_eq!(engine.list_trees().unwrap(), ["a", "b", "c.d-E_9"]);
    let long = "x".repeat(crate::limits::TREE_NAME_BYTES_MAX);
    engine.open_tree(&long).unwrap();
    for bad in ["", "a/b", "a b", "ä", &"x".repeat(crate::limits::TREE_NAME_BYTES_MAX + 1)] {
        assert_eq!(engine.open_tree(bad), Err(StorageError::InvalidTreeName { name: bad.into() }));
        assert_eq!(engine.drop_tree(bad), Err(StorageError::InvalidTreeName { name: bad.into() }));
    }
    assert_eq!(engine.list_trees().unwrap().len(), 4);
}

/// Every commit's completion runs exactly once, on success and on every kind of refusal, and a
/// panicking completion harms nothing.
pub fn completion_called_exactly_once(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    let dropped = engine.open_tree("dropped").unwrap();
    engine.drop_tree("dropped").unwrap();

    let mut batches = Vec::new();
    let mut ok = WriteBatch::new();
    ok.put(&tree, b"k".to_vec(), b"v".to_vec());
    batches.push((ok.clone(), Durability::Sync, true));
    batches.push((ok, Durability::Buffered, true));
    batches.push((WriteBatch::new(), Durability::Sync, true));
    batches.push((WriteBatch::new(), Durability::Buffered, true));
    let mut bad = WriteBatch::new();
    bad.put(&tree, Vec::new(), b"v".to_vec());
    batches.push((bad, Durability::Sync, false));
    let mut gone = WriteBatch::new();
    gone.delete(&dropped, b"k".to_vec());
    batches.push((gone, Durability::Buffered, false));

    let (sender, receiver) = mpsc::channel();
    let mut counters = Vec::new();
    for (index, (batch, durability, should_succeed)) in batches.into_iter().enumerate() {
        let calls = Arc::new(AtomicUsize::new(0));
        counters.push(Arc::clone(&calls));
        let sender = sender.clone();
        engine.commit(
            batch,
            durability,
            Box::new(move |result| {
                calls.fetch_add(1, Ordering::SeqCst);
                // Report rather than assert: a panic in a completion is caught by the engine.
                let _ = sender.send((index, should_succeed, result));
            }),
        );
    }
    drop(sender);
    let completed: Vec<_> = receiver.iter().collect();
    assert_eq!(completed.len(), counters.len(), "every completion ran");
    for (index, should_succeed, result) in completed {
        assert_eq!(result.is_ok(), should_succeed, "commit {index}: {result:?}");
    }
    engine.commit(WriteBatch::new(), Durability::Sync, Box::new(|_| panic!("a deliberately panicking completion")));
    engine.flush().unwrap();
    for (index, calls) in counters.iter().enumerate() {
        assert_eq!(calls.load(Ordering::SeqCst), 1, "completion {index} ran {} times", calls.load(Ordering::SeqCst));
    }
    put(&*engine, &tree, b"after-panic", b"v", Durability::Sync);
    assert!(engine.get(&tree, b"after-panic").unwrap().is_some(), "the engine works after a completion panicked");
}

/// Many threads commit at once, blocking and async, both durabilities; every acknowledged write is
/// visible afterwards.
pub fn concurrent_committers(factory: Factory<'_>) {
    const THREADS: usize = 8;
    const COMMITS_PER_THREAD: usize = 100;
    let engine = factory();
    let items = engine.open_tree("items").unwrap();
    let index = engine.open_tree("index").unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (engine, items, index) = (Arc::clone(&engine), items.clone(), index.clone());
            std::thread::spawn(move || {
                for commit in 0..COMMITS_PER_THREAD {
                    let key = format!("t{thread:02}-c{commit:04}").into_bytes();
                    let mut batch = WriteBatch::new();
                    batch.put(&items, key.clone(), key.repeat(3)).put(&index, key.clone(), Vec::new());
                    let durability = if commit % 2 == 0 { Durability::Sync } else { Durability::Buffered };
                    let result = if commit % 3 == 0 {
                        block_on(commit_async(&*engine, batch, durability))
                    } else {
                        commit_wait(&*engine, batch, durability)
                    };
                    result.unwrap();
                    assert_eq!(engine.get(&items, &key).unwrap(), Some(key.repeat(3)), "read your own write");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a committer thread failed");
    }
    engine.flush().unwrap();
    let all = scan(&*engine, &items, Bound::Unbounded, Bound::Unbounded, Direction::Forward);
    assert_eq!(all.len(), THREADS * COMMITS_PER_THREAD);
    assert!(all.iter().all(|(key, value)| *value == key.repeat(3)));
    let indexed = scan(&*engine, &index, Bound::Unbounded, Bound::Unbounded, Direction::Reverse);
    assert_eq!(indexed.len(), THREADS * COMMITS_PER_THREAD);
}

/// Keys are compared as unsigned bytes; 0x00 and 0xFF are ordinary bytes, also in prefixes.
pub fn binary_keys_sort_as_unsigned_bytes(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("binary").unwrap();
    let mut keys: Vec<Vec<u8>> = vec![
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xFF],
        vec![0x01],
        vec![0x7F],
        vec![0x80],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF],
        b"a\x00b".to_vec(),
    ];
    let mut batch = WriteBatch::new();
    for key in &keys {
        batch.put(&tree, key.clone(), [&[0x00, 0xFF][..], key].concat());
    }
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    keys.sort();
    let scanned: Vec<Vec<u8>> = scan(&*engine, &tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(scanned, keys, "forward order is unsigned byte order");
    for key in &keys {
        assert_eq!(engine.get(&tree, key).unwrap(), Some([&[0x00, 0xFF][..], key].concat()), "key {key:?}");
    }
    let prefixed = |prefix: &[u8], direction| -> Vec<Vec<u8>> {
        scan_prefix(&*engine, &tree, prefix, direction).unwrap().map(|item| item.unwrap().0).collect()
    };
    assert_eq!(
        prefixed(&[0xFF], Direction::Forward),
        [vec![0xFF], vec![0xFF, 0x00], vec![0xFF, 0xFF], vec![0xFF, 0xFF, 0xFF]]
    );
    assert_eq!(prefixed(&[0xFF, 0xFF], Direction::Reverse), [vec![0xFF, 0xFF, 0xFF], vec![0xFF, 0xFF]]);
    assert_eq!(prefixed(&[0x00], Direction::Forward), [vec![0x00], vec![0x00, 0x00], vec![0x00, 0xFF]]);
    assert_eq!(prefixed(b"a\x00", Direction::Forward), [b"a\x00b".to_vec()]);
}

/// Values of DynamoDB's largest item size (400 KB) round-trip through gets, scans and overwrites.
pub fn large_values(factory: Factory<'_>) {
    const VALUE_BYTES: usize = 400 * 1024;
    let engine = factory();
    let tree = engine.open_tree("large").unwrap();
    let values: Vec<Vec<u8>> = (0..4_u64).map(|seed| pseudo_random_bytes(seed, VALUE_BYTES)).collect();
    let mut batch = WriteBatch::new();
    for (index, value) in values.iter().enumerate().take(3) {
        batch.put(&tree, format!("big{index}").into_bytes(), value.clone());
    }
    commit_wait(&*engine, batch, Durability::Sync).unwrap();
    put(&*engine, &tree, b"big3", &values[3], Durability::Buffered);
    for (index, value) in values.iter().enumerate() {
        assert!(engine.get(&tree, format!("big{index}").as_bytes()).unwrap().as_ref() == Some(value), "value {index}");
    }
    let scanned = scan(&*engine, &tree, Bound::Unbounded, Bound::Unbounded, Direction::Reverse);
    assert_eq!(scanned.len(), 4);
    assert!(scanned.iter().rev().zip(&values).all(|((_, found), expected)| found == expected));
    put(&*engine, &tree, b"big0", b"small", Durability::Sync);
    assert_eq!(engine.get(&tree, b"big0").unwrap().as_deref(), Some(&b"small"[..]));
}

/// Keys must be 1 to [`KEY_BYTES_MAX`] bytes; reads of impossible keys simply find nothing.
pub fn key_limits(factory: Factory<'_>) {
    let engine = factory();
    let tree = engine.open_tree("items").unwrap();
    let longest = vec![0xAB; KEY_BYTES_MAX];
    put(&*engine, &tree, &longest, b"v", Durability::Sync);
    assert_eq!(engine.get(&tree, &longest).unwrap().as_deref(), Some(&b"v"[..]));

    let too_long = vec![0xAB; KEY_BYTES_MAX + 1];
    let mut batch = WriteBatch::new();
    batch.put(&tree, too_long.clone(), b"v".to_vec());
    assert_eq!(
        commit_wait(&*engine, batch, Durability::Sync),
        Err(StorageError::KeyTooLarge { key_bytes: KEY_BYTES_MAX + 1, key_bytes_max: KEY_BYTES_MAX })
    );
    assert_eq!(engine.get(&tree, &too_long).unwrap(), None);
    assert_eq!(engine.get(&tree, b"").unwrap(), None);

    // A bound longer than any key still orders correctly against stored keys.
    let above = scan(&*engine, &tree, Bound::Included(too_long.clone()), Bound::Unbounded, Direction::Forward);
    assert!(above.is_empty(), "the longest key sorts below a longer key with the same prefix");
    let below = scan(&*engine, &tree, Bound::Unbounded, Bound::Excluded(too_long), Direction::Forward);
    assert_eq!(below.len(), 1);
}

/// Handles are tied to the engine instance that made them.
pub fn foreign_tree_handles_are_refused(factory: Factory<'_>) {
    let first = factory();
    let second = factory();
    let foreign = first.open_tree("items").unwrap();
    second.open_tree("items").unwrap();
    let refused = StorageError::ForeignTree { name: "items".into() };
    assert_eq!(second.get(&foreign, b"k"), Err(refused.clone()));
    assert_eq!(
        second.range(&foreign, Bound::Unbounded, Bound::Unbounded, Direction::Forward).err(),
        Some(refused.clone())
    );
    let mut batch = WriteBatch::new();
    batch.put(&foreign, b"k".to_vec(), b"v".to_vec());
    assert_eq!(commit_wait(&*second, batch, Durability::Sync), Err(refused));
}

/// Commits one put and panics if it fails.
fn put(engine: &dyn Engine, tree: &Tree, key: &[u8], value: &[u8], durability: Durability) {
    let mut batch = WriteBatch::new();
    batch.put(tree, key.to_vec(), value.to_vec());
    commit_wait(engine, batch, durability).unwrap_or_else(|error| panic!("put {key:?}: {error}"));
}

/// Commits one delete (Sync) and panics if it fails.
fn delete(engine: &dyn Engine, tree: &Tree, key: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.delete(tree, key.to_vec());
    commit_wait(engine, batch, Durability::Sync).unwrap_or_else(|error| panic!("delete {key:?}: {error}"));
}

/// Collects a whole scan, panicking on any error.
fn scan(
    engine: &dyn Engine,
    tree: &Tree,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    direction: Direction,
) -> Vec<KeyValue> {
    engine.range(tree, lower, upper, direction).unwrap().map(|item| item.unwrap()).collect()
}

/// A key-value pair from literals.
fn pair(key: &[u8], value: &[u8]) -> KeyValue {
    (key.to_vec(), value.to_vec())
}

/// Reads the generation counter of `readers_never_see_half_a_batch` (0 before the first batch).
fn generation(engine: &dyn Engine, tree: &Tree) -> u64 {
    match engine.get(tree, b"gen").unwrap() {
        Some(value) => u64::from_be_bytes(value.try_into().expect("generations are 8 bytes")),
        None => 0,
    }
}

/// True if `key` satisfies the lower bound.
fn above(key: &[u8], lower: &Bound<Vec<u8>>) -> bool {
    match lower {
        Bound::Included(bound) => key >= bound.as_slice(),
        Bound::Excluded(bound) => key > bound.as_slice(),
        Bound::Unbounded => true,
    }
}

/// True if `key` satisfies the upper bound.
fn below(key: &[u8], upper: &Bound<Vec<u8>>) -> bool {
    match upper {
        Bound::Included(bound) => key <= bound.as_slice(),
        Bound::Excluded(bound) => key < bound.as_slice(),
        Bound::Unbounded => true,
    }
}

/// Deterministic, poorly compressible bytes (a 64-bit linear congruential generator).
pub fn pseudo_random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..length)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// Runs a future to completion on the current thread (the suite has no async runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    /// Wakes the blocked thread.
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
