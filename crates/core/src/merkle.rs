//! Merkle trees for anti-entropy: how two replicas of a partition find, cheaply, where they differ.
//!
//! Hinted handoff and read repair fix most divergence between replicas, but a replica that missed
//! writes for long enough (a crash, lost hints, a long network partition) must still converge.
//! The Dynamo paper (DeCandia et al., SOSP 2007, §4.7) does it with Merkle trees: every node keeps
//! a hash tree for each key range it holds, two replicas of a range exchange the root hashes, then
//! descend only into the children whose hashes differ, and finally exchange only the keys under the
//! leaves that differ. This module is that tree and that exchange, as pure data and a state
//! machine; the shell feeds it writes, carries its messages, and repairs the ranges it reports.
//!
//! **Definitions.** A tree covers a token interval `[first, last]` — usually a partition,
//! [`crate::layout::Layout::partition_range`] — and has `2^depth` leaves ([`DEPTH_DEFAULT`] = 10,
//! at most [`DEPTH_MAX`]) that cut the interval into equal sub-ranges of tokens: with
//! `span = last − first + 1`, the token `t` falls in leaf `⌊(t − first) · 2^depth / span⌋`. The
//! shape `(first, last, depth)` never depends on the data, so two trees of the same [`Shape`] can
//! be compared node by node. An *entry* is a pair (storage key, version): a replica holds one entry
//! per storage key, its latest committed version, tombstones included. The version is the bytes
//! that identify it on every replica, by default [`version_stamp`] (the HLC timestamp and the
//! writing node). Then:
//! - entry hash `h(key, version) = xxh3_128(len(key) as u64 LE ‖ key ‖ version)` (the length makes
//!   the pair unambiguous);
//! - a leaf keeps `sum = Σ h mod 2^128` over its entries and their `count`; its digest is
//!   `xxh3_128(sum LE ‖ count LE)`;
//! - an inner node's digest is `xxh3_128(left LE ‖ right LE)` (32 bytes of input, where a leaf's
//!   is 24, so the two kinds of hash never share an input).
//!
//! Levels are numbered from the root (level 0, one node) to the leaves (level `depth`); node `i`
//! of level `l` has children `2i` and `2i + 1` on level `l + 1`.
//!
//! **Invariant.** Two trees of the same shape have equal digests at a node if and only if (with
//! overwhelming probability) they hold the same entries under that node; in particular equal roots
//! if and only if equal entry sets. "If" is exact: the sum does not depend on the order in which
//! entries arrived, and the inner hashes are deterministic. "Only if" fails only on a 128-bit
//! collision, about 2^-128 per compared node for data nobody aims at us. xxh3 is not a
//! cryptographic hash, and clients choose keys, but the cluster chooses versions (timestamps and
//! node ids), so a collision cannot be aimed at a known entry set; and a collision would only
//! delay the repair of one leaf until either side writes to it again.
//!
//! **Sum, not XOR.** Both make the leaf digest order-independent and incremental (removal is
//! subtraction, or XOR again). But with XOR an entry added twice cancels out: if the shell ever
//! applied one write twice (a replayed log, a retried call), the replica would look as if it did
//! not hold the entry at all, and would compare *equal* to a replica that really lacks it — the
//! divergence anti-entropy exists to find would be hidden forever. With a sum, a doubled entry
//! contributes `2h`, the leaf's count is off by one, and the leaf compares *different* from every
//! correct replica: the error is visible (a leaf that keeps differing while its entries compare
//! equal is the shell's signal to rebuild the tree from storage). Removal is exact subtraction.
//!
//! **Incremental and lazy.** The shell calls [`MerkleTree::replace`] on every committed write,
//! with the version it replaced (read under the item's lock, in the same write). That updates the
//! leaf's sum and count in O(1) and marks the path to the root dirty, stopping at the first
//! ancestor already dirty (which holds because a dirty node's ancestors are always dirty): no
//! hashing at all on the write path, and amortized O(1). Inner digests are recomputed when read:
//! reading a node computes through its dirty descendants (always correct), and
//! [`MerkleTree::refresh`] recomputes every dirty node once and caches the results (the shell calls
//! it before starting or answering a comparison, so the exchange reads cached digests). Eager
//! recomputation would cost `depth` hashes per write; writes outnumber comparisons by orders of
//! magnitude (a busy partition takes thousands of writes per second, and is compared every few
//! minutes), and a burst of writes under one subtree costs one recomputation instead of thousands.
//! The tree must follow storage: a node that starts rebuilds each tree by one scan of the
//! partition's keys and versions ([`MerkleTree::from_entries`]), and periodic rebuilds heal any
//! drift (removing an entry the tree never held is detected only when its leaf is empty).
//!
//! **Cassandra and Riak.** Cassandra builds a binary tree (depth 15, 2^15 leaves) for every repair
//! session by a *validation compaction* — a full read of the range on every replica — sends whole
//! trees to the coordinator, and throws them away: nothing on the write path, but every repair
//! reads all the data. Riak's active anti-entropy keeps a persistent hash tree per partition,
//! updated on every write (segments marked dirty, hashes refreshed before an exchange), rebuilt
//! periodically from the data, and exchanged top-down over a wide tree (a million segments under a
//! fanout of 1024). We resemble Riak: the tree is kept current on the write path, so comparing two
//! identical replicas — the common case — costs one hash and no disk read, and background repair
//! can run every few minutes. Unlike Riak we keep the tree in memory (about 49 KiB per partition at
//! depth 10, 3.1 MiB at depth 16) and rebuild it when a node starts, because persisting it would
//! add a second write to every write, while a rebuild is one sequential scan.
//!
//! **The exchange.** A pull protocol, sans I/O: the initiator runs a [`Comparison`], the responder
//! answers each [`Request`] with the pure function [`respond`]. Every request carries the shape, so
//! the responder keeps no session and refuses, with [`Refusal::ShapeMismatch`], a tree of another
//! shape. The first request asks for the root alone: identical replicas finish in one round trip
//! that carries one digest. Below a differing node the initiator asks for its descendants
//! [`LEVELS_PER_STEP`] = 2 levels down (4 nodes, the last step possibly 1 level). Why two: a binary
//! step fetches 2 digests per level per difference, `2 · depth` in `depth` round trips; a 4-way
//! step fetches 4 per two levels, the same `2 · depth`, in half the round trips; an 8-way step
//! fetches `8/3 · depth`. **Cost model:** with fanout `f = 4`, an isolated difference costs about
//! `depth/2 × f` digests — at most `1 + 4 · ⌈depth/2⌉` (21 at depth 10) in `1 + ⌈depth/2⌉` round
//! trips; `k` differences cost at most `k` times as much, less where they share ancestors. At most
//! `hashes_per_message_max` nodes travel per message (a larger frontier is split), and one request
//! is in flight at a time, so the shell paces the exchange by choosing when to send the next one.
//! The exchange ends with the differing leaves as token ranges, contiguous leaves merged
//! ([`Comparison::differing_ranges`]); the shell then exchanges the entries (keys and versions) in
//! those ranges and copies the newer versions across.
//!
//! Writes continue during an exchange, and each side reads its digests when it handles a message,
//! so an exchange sees moving trees: it may miss a difference created under a node it already
//! passed, or report a leaf that converged meanwhile. Both are harmless: the next exchange finds
//! the first, and the second costs one leaf's entry exchange.
//!
//! **Stability.** The hash inputs above are part of the wire protocol: two builds that hashed
//! differently would see every leaf differ. xxh3 is fixed by its specification and the byte
//! layouts here are fixed; changing either needs a new protocol version.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

use crate::hlc::Timestamp;
use crate::keys::TOKEN_BYTES;
use crate::layout::NodeId;

/// The tree depth when none is chosen: 1024 leaves per partition.
pub const DEPTH_DEFAULT: u8 = 10;
/// The largest tree depth: 65 536 leaves, about 3.1 MiB per tree.
pub const DEPTH_MAX: u8 = 16;
/// Levels a comparison descends per step below a differing node (a fanout of `2^LEVELS_PER_STEP`).
pub const LEVELS_PER_STEP: u8 = 2;
/// The most node digests one message may carry (64 KiB of digests); responders refuse more.
pub const HASHES_PER_MESSAGE_MAX: u32 = 4096;
/// The per-message bound on node digests when none is chosen.
pub const HASHES_PER_MESSAGE_DEFAULT: u32 = 256;
/// Bytes of a [`version_stamp`].
pub const VERSION_STAMP_BYTES: usize = 16;

const _: () = assert!(DEPTH_DEFAULT <= DEPTH_MAX);
// Node indices travel as u32, and the deepest level holds 2^DEPTH_MAX nodes.
const _: () = assert!(DEPTH_MAX < 32);
// One step's descendants of a node fit in one message.
const _: () = assert!(LEVELS_PER_STEP >= 1 && (1u32 << LEVELS_PER_STEP) <= HASHES_PER_MESSAGE_MAX);
const _: () = assert!(HASHES_PER_MESSAGE_DEFAULT >= 1 && HASHES_PER_MESSAGE_DEFAULT <= HASHES_PER_MESSAGE_MAX);

/// The version bytes of an entry: the HLC timestamp and the writing node, big-endian. Every
/// replica derives the same bytes for the same version, which is all the tree needs.
pub fn version_stamp(timestamp: Timestamp, node: NodeId) -> [u8; VERSION_STAMP_BYTES] {
    let mut stamp = [0u8; VERSION_STAMP_BYTES];
    stamp[..8].copy_from_slice(&timestamp.0.to_be_bytes());
    stamp[8..].copy_from_slice(&node.0.to_be_bytes());
    stamp
}

/// The token of a storage key: its leading 8 bytes, big-endian (zero-padded when shorter).
fn token_of(key: &[u8]) -> u64 {
    let mut token = [0u8; TOKEN_BYTES];
    let length = key.len().min(TOKEN_BYTES);
    token[..length].copy_from_slice(&key[..length]);
    u64::from_be_bytes(token)
}

/// The 128-bit hash of one entry; see the module documentation.
fn entry_hash(key: &[u8], version: &[u8]) -> u128 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(version);
    hasher.digest128()
}

/// A node digest: 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub u128);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({:032x})", self.0)
    }
}

/// The digest of an inner node from its children's.
fn combine(left: Digest, right: Digest) -> Digest {
    let mut input = [0u8; 32];
    input[..16].copy_from_slice(&left.0.to_le_bytes());
    input[16..].copy_from_slice(&right.0.to_le_bytes());
    Digest(xxh3_128(&input))
}

/// What a tree covers: the token interval `[first, last]` (both inclusive) and the depth
/// (`2^depth` leaves). Trees compare only with trees of the same shape.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Shape {
    /// The first token covered.
    pub first: u64,
    /// The last token covered (inclusive).
    pub last: u64,
    /// Levels below the root; the leaves are level `depth`.
    pub depth: u8,
}

impl Shape {
    /// Checks that the depth is at most [`DEPTH_MAX`] and that the interval holds at least one
    /// token per leaf (so no leaf is empty of tokens).
    pub fn validate(self) -> Result<Shape, MerkleError> {
        if self.depth > DEPTH_MAX {
            return Err(MerkleError::Depth(self.depth));
        }
        if self.first > self.last || u128::from(self.last - self.first) + 1 < 1u128 << self.depth {
            return Err(MerkleError::Interval { first: self.first, last: self.last, depth: self.depth });
        }
        Ok(self)
    }

    // The helpers below hold for validated shapes only: every tree and comparison holds one.

    /// Tokens in the interval: up to 2^64, hence u128.
    fn span(self) -> u128 {
        u128::from(self.last - self.first) + 1
    }

    fn leaf_count(self) -> u32 {
        1 << self.depth
    }

    fn leaf_of_token(self, token: u64) -> Option<u32> {
        if token < self.first || token > self.last {
            return None;
        }
        let offset = u128::from(token - self.first);
        Some((offset * u128::from(self.leaf_count()) / self.span()) as u32)
    }

    /// The first token offset of leaf `leaf` (`leaf_count()` gives one past the end): the
    /// smallest offset `o` with `⌊o · leaves / span⌋ ≥ leaf`, that is `⌈leaf · span / leaves⌉`.
    fn leaf_start_offset(self, leaf: u32) -> u128 {
        (u128::from(leaf) * self.span()).div_ceil(u128::from(self.leaf_count()))
    }

    fn leaf_range(self, leaf: u32) -> (u64, u64) {
        debug_assert!(leaf < self.leaf_count());
        let first = u128::from(self.first);
        let start = first + self.leaf_start_offset(leaf);
        let end = first + self.leaf_start_offset(leaf + 1) - 1;
        debug_assert!(start <= end && end <= u128::from(self.last));
        (start as u64, end as u64)
    }

    fn node_count(self, level: u8) -> Option<u32> {
        (level <= self.depth).then(|| 1 << level)
    }
}

/// Why a tree cannot be built or updated.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MerkleError {
    /// The depth is above [`DEPTH_MAX`].
    Depth(u8),
    /// The interval is empty (`first > last`) or holds fewer tokens than the tree has leaves.
    Interval {
        /// The first token asked for.
        first: u64,
        /// The last token asked for.
        last: u64,
        /// The depth asked for.
        depth: u8,
    },
    /// A key's token lies outside the tree's interval: it belongs to another partition's tree.
    OutsideInterval {
        /// The key's token.
        token: u64,
        /// The tree's first token.
        first: u64,
        /// The tree's last token.
        last: u64,
    },
    /// A removal from a leaf that holds no entry: the tree and storage have drifted apart (the
    /// tree is unchanged; rebuild it from storage).
    EmptyLeaf {
        /// The leaf.
        leaf: u32,
    },
}

impl fmt::Display for MerkleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MerkleError::Depth(depth) => write!(f, "Merkle tree depth {depth} is above the maximum of {DEPTH_MAX}"),
            MerkleError::Interval { first, last, depth } => write!(
                f,
                "token interval [{first:#018x}, {last:#018x}] must hold at least one token per leaf of a depth {depth} \
                 Merkle tree"
            ),
            MerkleError::OutsideInterval { token, first, last } => {
                write!(f, "token {token:#018x} is outside the Merkle tree's interval [{first:#018x}, {last:#018x}]")
            }
            MerkleError::EmptyLeaf { leaf } => {
                write!(f, "cannot remove an entry from Merkle leaf {leaf}, which holds none; rebuild the tree")
            }
        }
    }
}

impl std::error::Error for MerkleError {}

/// One leaf's order-independent digest of its entries.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Leaf {
    /// Σ entry hash, wrapping (mod 2^128).
    sum: u128,
    /// Entries held.
    count: u64,
}

impl Leaf {
    fn digest(self) -> Digest {
        let mut input = [0u8; 24];
        input[..16].copy_from_slice(&self.sum.to_le_bytes());
        input[16..].copy_from_slice(&self.count.to_le_bytes());
        Digest(xxh3_128(&input))
    }
}

/// A Merkle tree over one token interval; see the module documentation.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    /// The interval and depth, validated.
    shape: Shape,
    /// The `2^depth` leaves, in token order.
    leaves: Vec<Leaf>,
    /// Digests of the `2^depth − 1` inner nodes in heap order (node `i` of level `l` at
    /// `2^l − 1 + i`), valid where not dirty.
    inner: Vec<Digest>,
    /// Which inner digests are stale. A dirty node's ancestors are all dirty.
    dirty: Vec<bool>,
    /// Entries held, over all leaves.
    len: u64,
}

impl MerkleTree {
    /// An empty tree over the tokens `[first, last]` (both inclusive) with `2^depth` leaves.
    pub fn new(first: u64, last: u64, depth: u8) -> Result<MerkleTree, MerkleError> {
        let shape = Shape { first, last, depth }.validate()?;
        let leaf_count = shape.leaf_count() as usize;
        // Every node of one level of an empty tree has the same digest.
        let mut inner = vec![Digest::default(); leaf_count - 1];
        let mut below = Leaf::default().digest();
        for level in (0..depth).rev() {
            let digest = combine(below, below);
            let start = (1usize << level) - 1;
            inner[start..start + (1 << level)].fill(digest);
            below = digest;
        }
        Ok(MerkleTree {
            shape,
            leaves: vec![Leaf::default(); leaf_count],
            inner,
            dirty: vec![false; leaf_count - 1],
            len: 0,
        })
    }

    /// A tree over `[first, last]` holding `entries` (storage key, version): how a node rebuilds
    /// its trees from storage. Costs one hash per entry plus one per node.
    pub fn from_entries<K, V>(
        first: u64,
        last: u64,
        depth: u8,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<MerkleTree, MerkleError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut tree = MerkleTree::new(first, last, depth)?;
        for (key, version) in entries {
            let (key, version) = (key.as_ref(), version.as_ref());
            let leaf = tree.checked_leaf_of(key)?;
            let slot = &mut tree.leaves[leaf as usize];
            slot.sum = slot.sum.wrapping_add(entry_hash(key, version));
            slot.count += 1;
            tree.len += 1;
        }
        tree.dirty.fill(true);
        tree.refresh();
        Ok(tree)
    }

    /// The tree's interval and depth.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Levels below the root.
    pub fn depth(&self) -> u8 {
        self.shape.depth
    }

    /// Leaves: `2^depth`.
    pub fn leaf_count(&self) -> u32 {
        self.shape.leaf_count()
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The leaf holding the storage key `key` (its token is its first 8 bytes), or `None` when the
    /// token lies outside the tree's interval.
    pub fn leaf_of(&self, key: &[u8]) -> Option<u32> {
        self.shape.leaf_of_token(token_of(key))
    }

    /// The leaf holding `token`, or `None` when it lies outside the tree's interval.
    pub fn leaf_of_token(&self, token: u64) -> Option<u32> {
        self.shape.leaf_of_token(token)
    }

    /// The first and last tokens of `leaf`, both inclusive: leaves tile the interval in order,
    /// with no gap and no overlap, so the shell can range-scan storage for a leaf's entries.
    ///
    /// # Panics
    /// If `leaf` is not below [`MerkleTree::leaf_count`].
    pub fn leaf_range(&self, leaf: u32) -> (u64, u64) {
        assert!(leaf < self.leaf_count(), "leaf {leaf} of {} leaves", self.leaf_count());
        self.shape.leaf_range(leaf)
    }

    /// Entries held by `leaf`.
    ///
    /// # Panics
    /// If `leaf` is not below [`MerkleTree::leaf_count`].
    pub fn leaf_len(&self, leaf: u32) -> u64 {
        self.leaves[leaf as usize].count
    }

    /// Adds the entry (`key`, `version`).
    pub fn insert(&mut self, key: &[u8], version: &[u8]) -> Result<(), MerkleError> {
        let leaf = self.checked_leaf_of(key)?;
        self.update(leaf, None, Some(entry_hash(key, version)))
    }

    /// Removes the entry (`key`, `version`), which the tree must hold. Removing an entry the tree
    /// does not hold is refused when its leaf is empty; otherwise it goes unnoticed and makes the
    /// leaf differ from every replica until the tree is rebuilt.
    pub fn remove(&mut self, key: &[u8], version: &[u8]) -> Result<(), MerkleError> {
        let leaf = self.checked_leaf_of(key)?;
        self.update(leaf, Some(entry_hash(key, version)), None)
    }

    /// Replaces `key`'s entry of version `old_version` (`None` when the key had none) with
    /// `new_version`: what the shell calls on every committed write, tombstones included.
    pub fn replace(&mut self, key: &[u8], old_version: Option<&[u8]>, new_version: &[u8]) -> Result<(), MerkleError> {
        let leaf = self.checked_leaf_of(key)?;
        self.update(leaf, old_version.map(|old| entry_hash(key, old)), Some(entry_hash(key, new_version)))
    }

    /// The tree of the same entries over the same interval at a smaller `depth`, without the
    /// entries: leaf `i` at depth `d − 1` covers exactly the tokens of leaves `2i` and `2i + 1` at
    /// depth `d` (`⌊⌊x⌋ / 2⌋ = ⌊x / 2⌋`), so its sum and count are theirs added. A node that keeps
    /// one deep tree per partition answers comparisons of any shallower shape with it. Costs one
    /// pass over the leaves and one hash per node of the result.
    pub fn folded(&self, depth: u8) -> Result<MerkleTree, MerkleError> {
        if depth > self.shape.depth {
            return Err(MerkleError::Depth(depth));
        }
        let mut tree = MerkleTree::new(self.shape.first, self.shape.last, depth)?;
        let shift = self.shape.depth - depth;
        for (index, leaf) in self.leaves.iter().enumerate() {
            let slot = &mut tree.leaves[index >> shift];
            slot.sum = slot.sum.wrapping_add(leaf.sum);
            slot.count += leaf.count;
        }
        tree.len = self.len;
        tree.dirty.fill(true);
        tree.refresh();
        Ok(tree)
    }

    /// Empties the tree, keeping its shape.
    pub fn clear(&mut self) {
        self.leaves.fill(Leaf::default());
        self.len = 0;
        self.dirty.fill(true);
        self.refresh();
    }

    /// The root's digest: equal on two trees of the same shape if and only if (with overwhelming
    /// probability) they hold the same entries.
    pub fn root(&self) -> Digest {
        self.digest_at(0, 0)
    }

    /// The digest of node `index` of `level` (0 the root, `depth` the leaves), or `None` when there
    /// is no such node.
    pub fn node(&self, level: u8, index: u32) -> Option<Digest> {
        (index < self.shape.node_count(level)?).then(|| self.digest_at(level, index))
    }

    /// The digests of the nodes `nodes` of `level`, or `None` when one of them does not exist.
    pub fn level(&self, level: u8, nodes: Range<u32>) -> Option<Vec<Digest>> {
        if nodes.end > self.shape.node_count(level)? {
            return None;
        }
        Some(nodes.map(|index| self.digest_at(level, index)).collect())
    }

    /// Recomputes and caches every stale inner digest (at most one hash per node written to since
    /// the last refresh). Reads are correct without it, only slower; call it before a comparison.
    pub fn refresh(&mut self) {
        if self.shape.depth > 0 {
            self.refresh_node(0, 0);
        }
    }

    /// The leaf of `key`, or the error naming the interval it is outside of.
    fn checked_leaf_of(&self, key: &[u8]) -> Result<u32, MerkleError> {
        let token = token_of(key);
        self.shape.leaf_of_token(token).ok_or(MerkleError::OutsideInterval {
            token,
            first: self.shape.first,
            last: self.shape.last,
        })
    }

    /// Takes `removed` out of and puts `added` into `leaf`, all or nothing, and marks its path dirty.
    fn update(&mut self, leaf: u32, removed: Option<u128>, added: Option<u128>) -> Result<(), MerkleError> {
        let slot = &mut self.leaves[leaf as usize];
        if let Some(hash) = removed {
            if slot.count == 0 {
                return Err(MerkleError::EmptyLeaf { leaf });
            }
            slot.sum = slot.sum.wrapping_sub(hash);
            slot.count -= 1;
            self.len -= 1;
        }
        if let Some(hash) = added {
            slot.sum = slot.sum.wrapping_add(hash);
            slot.count += 1;
            self.len += 1;
        }
        self.mark_dirty(leaf);
        Ok(())
    }

    /// Marks the ancestors of `leaf` dirty, bottom-up, stopping at the first one already dirty:
    /// its own ancestors are dirty already.
    fn mark_dirty(&mut self, leaf: u32) {
        let depth = self.shape.depth;
        if depth == 0 {
            return;
        }
        let mut flat = (1usize << (depth - 1)) - 1 + (leaf as usize >> 1);
        while !self.dirty[flat] {
            self.dirty[flat] = true;
            if flat == 0 {
                break;
            }
            flat = (flat - 1) / 2;
        }
    }

    /// The digest of an existing node, computed through dirty descendants.
    fn digest_at(&self, level: u8, index: u32) -> Digest {
        if level == self.shape.depth {
            return self.leaves[index as usize].digest();
        }
        let flat = (1usize << level) - 1 + index as usize;
        if !self.dirty[flat] {
            return self.inner[flat];
        }
        combine(self.digest_at(level + 1, 2 * index), self.digest_at(level + 1, 2 * index + 1))
    }

    /// Recomputes the dirty nodes under (and including) an existing node; returns its digest.
    fn refresh_node(&mut self, level: u8, index: u32) -> Digest {
        if level == self.shape.depth {
            return self.leaves[index as usize].digest();
        }
        let flat = (1usize << level) - 1 + index as usize;
        if self.dirty[flat] {
            let left = self.refresh_node(level + 1, 2 * index);
            let right = self.refresh_node(level + 1, 2 * index + 1);
            self.inner[flat] = combine(left, right);
            self.dirty[flat] = false;
        }
        self.inner[flat]
    }
}

/// A message from the initiator of a comparison to the responder. Plain data; the shell frames
/// and versions it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Send the digests of these nodes of `level` (0 the root, `depth` the leaves), from a tree
    /// of exactly `shape`.
    Hashes {
        /// The shape of the initiator's tree; a responder with another shape refuses.
        shape: Shape,
        /// The level of every node asked for.
        level: u8,
        /// Node indices within the level, in ascending order, at most [`HASHES_PER_MESSAGE_MAX`].
        nodes: Vec<u32>,
    },
}

/// A message from the responder of a comparison to the initiator. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The digests asked for, in the order asked.
    Hashes {
        /// The level asked for.
        level: u8,
        /// One digest per node asked for.
        digests: Vec<Digest>,
    },
    /// The request cannot be answered.
    Refused(Refusal),
}

/// Why a responder refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The responder's tree has another shape: different partitions, partition counts or depths
    /// cannot be compared.
    ShapeMismatch {
        /// The responder's shape.
        responder: Shape,
    },
    /// More nodes than [`HASHES_PER_MESSAGE_MAX`] in one request.
    TooManyNodes {
        /// Nodes asked for.
        count: u64,
    },
    /// A level or node index outside the tree.
    NoSuchNode {
        /// The level asked for.
        level: u8,
        /// The node asked for.
        node: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ShapeMismatch { responder } => write!(
                f,
                "the responder's Merkle tree covers [{:#018x}, {:#018x}] at depth {}",
                responder.first, responder.last, responder.depth
            ),
            Refusal::TooManyNodes { count } => {
                write!(f, "{count} Merkle nodes asked in one message; the limit is {HASHES_PER_MESSAGE_MAX}")
            }
            Refusal::NoSuchNode { level, node } => write!(f, "no Merkle node {node} at level {level}"),
        }
    }
}

/// Answers one request from `tree`: the responder's whole side of the protocol. Pure; call
/// [`MerkleTree::refresh`] first so that the digests read are cached ones.
pub fn respond(tree: &MerkleTree, request: &Request) -> Response {
    let Request::Hashes { shape, level, nodes } = request;
    if *shape != tree.shape() {
        return Response::Refused(Refusal::ShapeMismatch { responder: tree.shape() });
    }
    if nodes.len() > HASHES_PER_MESSAGE_MAX as usize {
        return Response::Refused(Refusal::TooManyNodes { count: nodes.len() as u64 });
    }
    let mut digests = Vec::with_capacity(nodes.len());
    for &node in nodes {
        match tree.node(*level, node) {
            Some(digest) => digests.push(digest),
            None => return Response::Refused(Refusal::NoSuchNode { level: *level, node }),
        }
    }
    Response::Hashes { level: *level, digests }
}

/// Why a comparison failed. A failed comparison stays failed; start another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComparisonError {
    /// The two trees have different shapes (also when the initiator's tree is swapped for one of
    /// another shape midway).
    ShapeMismatch {
        /// The initiator's shape.
        initiator: Shape,
        /// The responder's shape.
        responder: Shape,
    },
    /// The responder refused a request for another reason (a bug on one side, or a version skew).
    Refused(Refusal),
    /// A response when no request was in flight, or one that does not answer the request in flight.
    UnexpectedResponse,
    /// The per-message bound is not in `1..=HASHES_PER_MESSAGE_MAX`.
    HashesPerMessage(u32),
}

impl fmt::Display for ComparisonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComparisonError::ShapeMismatch { initiator, responder } => write!(
                f,
                "cannot compare Merkle trees of different shapes: [{:#018x}, {:#018x}] at depth {} and \
                 [{:#018x}, {:#018x}] at depth {}",
                initiator.first, initiator.last, initiator.depth, responder.first, responder.last, responder.depth
            ),
            ComparisonError::Refused(refusal) => write!(f, "Merkle comparison refused: {refusal}"),
            ComparisonError::UnexpectedResponse => {
                write!(f, "a Merkle comparison response that answers no request in flight")
            }
            ComparisonError::HashesPerMessage(max) => {
                write!(f, "{max} digests per message is not between 1 and {HASHES_PER_MESSAGE_MAX}")
            }
        }
    }
}

impl std::error::Error for ComparisonError {}

/// Where a comparison stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Running,
    Finished,
    Failed(ComparisonError),
}

/// The initiator's side of a comparison with one replica, as a state machine: take requests from
/// [`Comparison::poll_request`], send them, feed the responses to [`Comparison::handle_response`],
/// until [`Comparison::is_finished`]; then [`Comparison::differing_ranges`] are the token ranges
/// to repair. See the module documentation.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The shape of both trees.
    shape: Shape,
    /// The most node digests per message.
    hashes_per_message_max: u32,
    /// The level whose nodes are being fetched.
    level: u8,
    /// Nodes of `level` still to ask for, ascending.
    pending: VecDeque<u32>,
    /// Nodes of the next level to ask for once `level` is done, ascending.
    next: Vec<u32>,
    /// The nodes of `level` asked for by the request in flight.
    in_flight: Option<Vec<u32>>,
    /// Leaves found to differ, ascending.
    differing_leaves: Vec<u32>,
    state: State,
    /// Responses handled.
    round_trips: u64,
    /// Digests received.
    hashes_received: u64,
}

impl Comparison {
    /// A comparison of `tree` with a replica's tree of the same shape, sending at most
    /// `hashes_per_message_max` node digests per message (see [`HASHES_PER_MESSAGE_DEFAULT`]).
    pub fn new(tree: &MerkleTree, hashes_per_message_max: u32) -> Result<Comparison, ComparisonError> {
        if !(1..=HASHES_PER_MESSAGE_MAX).contains(&hashes_per_message_max) {
            return Err(ComparisonError::HashesPerMessage(hashes_per_message_max));
        }
        Ok(Comparison {
            shape: tree.shape(),
            hashes_per_message_max,
            level: 0,
            pending: VecDeque::from([0]),
            next: Vec::new(),
            in_flight: None,
            differing_leaves: Vec::new(),
            state: State::Running,
            round_trips: 0,
            hashes_received: 0,
        })
    }

    /// The shape of the trees compared.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The next request to send, or `None` while one is in flight, or once the comparison has
    /// finished or failed.
    pub fn poll_request(&mut self) -> Option<Request> {
        if self.state != State::Running || self.in_flight.is_some() {
            return None;
        }
        debug_assert!(!self.pending.is_empty(), "a running comparison has nodes to ask for");
        let count = self.pending.len().min(self.hashes_per_message_max as usize);
        let nodes: Vec<u32> = self.pending.drain(..count).collect();
        self.in_flight = Some(nodes.clone());
        Some(Request::Hashes { shape: self.shape, level: self.level, nodes })
    }

    /// The request in flight, again: for resending after the shell's timeout (the answer to
    /// either copy may then be handed in, but only one of them).
    pub fn request_in_flight(&self) -> Option<Request> {
        let nodes = self.in_flight.clone()?;
        Some(Request::Hashes { shape: self.shape, level: self.level, nodes })
    }

    /// Handles the responder's answer to the request in flight, comparing its digests with those
    /// of `tree` (the initiator's tree, as it is now). A response while no request is in flight is
    /// refused and changes nothing; any other error ends the comparison.
    ///
    /// The shell must hand in only the answer to the request in flight (its RPC layer matches
    /// responses to requests): the messages carry no request id, and an answer to an earlier
    /// request of the same level and length would be compared with the wrong nodes.
    pub fn handle_response(&mut self, tree: &MerkleTree, response: Response) -> Result<(), ComparisonError> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        let Some(nodes) = self.in_flight.take() else {
            // A stray response (late, or duplicated by a resend) changes nothing.
            return Err(ComparisonError::UnexpectedResponse);
        };
        let digests = match response {
            Response::Refused(Refusal::ShapeMismatch { responder }) => {
                return self.fail(ComparisonError::ShapeMismatch { initiator: self.shape, responder });
            }
            Response::Refused(refusal) => return self.fail(ComparisonError::Refused(refusal)),
            Response::Hashes { level, digests } if level == self.level && digests.len() == nodes.len() => digests,
            Response::Hashes { .. } => return self.fail(ComparisonError::UnexpectedResponse),
        };
        if tree.shape() != self.shape {
            // The responder answered for `self.shape`, so that is its shape.
            return self.fail(ComparisonError::ShapeMismatch { initiator: tree.shape(), responder: self.shape });
        }
        self.round_trips += 1;
        self.hashes_received += digests.len() as u64;
        let depth = self.shape.depth;
        let next_level = self.level.saturating_add(LEVELS_PER_STEP).min(depth);
        for (&node, theirs) in nodes.iter().zip(digests) {
            if tree.digest_at(self.level, node) == theirs {
                continue;
            }
            if self.level == depth {
                self.differing_leaves.push(node);
            } else {
                let shift = next_level - self.level;
                self.next.extend(node << shift..(node + 1) << shift);
            }
        }
        if self.pending.is_empty() {
            if self.next.is_empty() {
                self.state = State::Finished;
            } else {
                self.level = next_level;
                self.pending = std::mem::take(&mut self.next).into();
            }
        }
        Ok(())
    }

    /// Whether the comparison has completed: the differing leaves are all known.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The error that ended the comparison, if one did.
    pub fn error(&self) -> Option<&ComparisonError> {
        match &self.state {
            State::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The leaves found to differ so far, ascending; all of them once finished.
    pub fn differing_leaves(&self) -> &[u32] {
        &self.differing_leaves
    }

    /// The token ranges of the differing leaves, contiguous leaves merged into one range, in
    /// order, both ends inclusive: what the shell scans on both replicas to find the entries that
    /// differ. Complete once finished.
    pub fn differing_ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut previous: Option<u32> = None;
        for &leaf in &self.differing_leaves {
            let (start, end) = self.shape.leaf_range(leaf);
            match ranges.last_mut() {
                Some(last) if previous.is_some_and(|previous| previous + 1 == leaf) => last.1 = end,
                _ => ranges.push((start, end)),
            }
            previous = Some(leaf);
        }
        ranges
    }

    /// Responses handled so far: round trips.
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Node digests received so far.
    pub fn hashes_received(&self) -> u64 {
        self.hashes_received
    }

    fn fail(&mut self, error: ComparisonError) -> Result<(), ComparisonError> {
        self.in_flight = None;
        self.state = State::Failed(error.clone());
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Layout, Node, PartitionId};
    use crate::rng::Rng;
    use std::collections::{BTreeMap, BTreeSet};

    type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

    /// A storage key with token `token`.
    fn key_at(token: u64, suffix: u64) -> Vec<u8> {
        let mut key = token.to_be_bytes().to_vec();
        key.extend_from_slice(&suffix.to_be_bytes());
        key
    }

    fn random_token(rng: &mut Rng, first: u64, last: u64) -> u64 {
        match last - first {
            u64::MAX => rng.next_u64(),
            span_minus_one => first + rng.below(span_minus_one + 1),
        }
    }

    fn random_version(rng: &mut Rng) -> Vec<u8> {
        version_stamp(Timestamp(rng.next_u64()), NodeId(rng.below(5))).to_vec()
    }

    fn random_entries(rng: &mut Rng, first: u64, last: u64, count: usize) -> Entries {
        (0..count).map(|_| (key_at(random_token(rng, first, last), rng.below(4)), random_version(rng))).collect()
    }

    fn tree_of(shape: Shape, entries: &Entries) -> MerkleTree {
        MerkleTree::from_entries(shape.first, shape.last, shape.depth, entries).unwrap()
    }

    /// Every digest of every level, read through the public interface.
    fn all_digests(tree: &MerkleTree) -> Vec<Vec<Digest>> {
        (0..=tree.depth()).map(|level| tree.level(level, 0..1 << level).unwrap()).collect()
    }

    /// Runs a comparison to its end, checking the per-message bound on every message.
    fn compare(initiator: &MerkleTree, responder: &MerkleTree, max: u32) -> Result<Comparison, ComparisonError> {
        let mut comparison = Comparison::new(initiator, max)?;
        for _ in 0..1_000_000 {
            let Some(request) = comparison.poll_request() else { break };
            let Request::Hashes { nodes, .. } = &request;
            assert!(!nodes.is_empty() && nodes.len() <= max as usize, "{} nodes, bound {max}", nodes.len());
            assert_eq!(comparison.poll_request(), None, "one request in flight at a time");
            let response = respond(responder, &request);
            if let Response::Hashes { digests, .. } = &response {
                assert_eq!(digests.len(), nodes.len());
            }
            comparison.handle_response(initiator, response)?;
        }
        assert!(comparison.is_finished());
        Ok(comparison)
    }

    #[test]
    fn a_folded_tree_is_the_tree_built_at_its_depth() {
        let mut rng = Rng::new(0xF01D);
        // A partition's interval (not a power-of-two span) and the whole token space.
        for (first, last) in [(0x4000_0000_0000_0000, 0x4000_0000_0000_0000 + 1_000_000_006), (0, u64::MAX)] {
            let entries = random_entries(&mut rng, first, last, 700);
            let deep = tree_of(Shape { first, last, depth: 10 }, &entries);
            for depth in 0..=10 {
                let folded = deep.folded(depth).unwrap();
                let built = tree_of(Shape { first, last, depth }, &entries);
                assert_eq!(all_digests(&folded), all_digests(&built), "depth {depth}");
                assert_eq!(folded.len(), built.len());
                assert_eq!(folded.shape(), built.shape());
            }
            assert_eq!(deep.folded(11).unwrap_err(), MerkleError::Depth(11));
        }
    }

    /// The leaves holding a key whose entry differs between the two sets: the brute-force answer.
    fn differing_leaves(tree: &MerkleTree, ours: &Entries, theirs: &Entries) -> BTreeSet<u32> {
        let keys: BTreeSet<&Vec<u8>> = ours.keys().chain(theirs.keys()).collect();
        keys.into_iter()
            .filter(|key| ours.get(*key) != theirs.get(*key))
            .map(|key| tree.leaf_of(key).unwrap())
            .collect()
    }

    /// Checks that `ranges` are sorted, disjoint, not adjacent (maximal runs), and cover exactly
    /// the leaves `expected`.
    fn check_ranges(tree: &MerkleTree, ranges: &[(u64, u64)], expected: &BTreeSet<u32>) {
        for pair in ranges.windows(2) {
            assert!(pair[0].1 < pair[1].0 && pair[0].1 + 1 != pair[1].0, "{ranges:?}");
        }
        for leaf in 0..tree.leaf_count() {
            let (start, end) = tree.leaf_range(leaf);
            let covered = ranges.iter().any(|&(first, last)| first <= start && end <= last);
            let touched = ranges.iter().any(|&(first, last)| first <= end && start <= last);
            assert_eq!(covered, touched, "leaf {leaf} is cut by a range");
            assert_eq!(covered, expected.contains(&leaf), "leaf {leaf}");
        }
    }

    #[test]
    fn incremental_updates_match_a_rebuild() {
        let mut rng = Rng::new(7);
        for (first, last, depth) in [(0, u64::MAX, 6), (1 << 60, (2 << 60) - 1, 10), (12_345, 1_000_000, 3)] {
            let mut tree = MerkleTree::new(first, last, depth).unwrap();
            let mut model = Entries::new();
            for step in 0..3000 {
                let roll = rng.below(10);
                if model.is_empty() || roll < 5 {
                    let key = key_at(random_token(&mut rng, first, last), rng.below(4));
                    let version = random_version(&mut rng);
                    let old = model.insert(key.clone(), version.clone());
                    tree.replace(&key, old.as_deref(), &version).unwrap();
                } else {
                    let index = rng.below(model.len() as u64) as usize;
                    let key = model.keys().nth(index).unwrap().clone();
                    if roll < 8 {
                        let version = random_version(&mut rng);
                        let old = model.insert(key.clone(), version.clone()).unwrap();
                        tree.replace(&key, Some(old.as_slice()), &version).unwrap();
                    } else {
                        let old = model.remove(&key).unwrap();
                        tree.remove(&key, &old).unwrap();
                    }
                }
                if step % 250 == 249 {
                    let rebuilt = tree_of(tree.shape(), &model);
                    // Reads through dirty nodes, then from the refreshed cache, agree with a rebuild.
                    assert_eq!(all_digests(&tree), all_digests(&rebuilt), "step {step}");
                    tree.refresh();
                    assert_eq!(all_digests(&tree), all_digests(&rebuilt), "step {step}");
                    assert_eq!(tree.len(), model.len() as u64);
                    let per_leaf: u64 = (0..tree.leaf_count()).map(|leaf| tree.leaf_len(leaf)).sum();
                    assert_eq!(per_leaf, tree.len());
                }
            }
            // Removing everything gives back the empty tree.
            for (key, version) in &model {
                tree.remove(key, version).unwrap();
            }
            assert!(tree.is_empty());
            assert_eq!(tree.root(), MerkleTree::new(first, last, depth).unwrap().root());
        }
    }

    #[test]
    fn order_does_not_matter_and_contents_do() {
        let mut rng = Rng::new(11);
        let shape = Shape { first: 0, last: u64::MAX, depth: DEPTH_DEFAULT };
        let entries = random_entries(&mut rng, 0, u64::MAX, 500);
        let forward = tree_of(shape, &entries);
        let backward = MerkleTree::from_entries(0, u64::MAX, DEPTH_DEFAULT, entries.iter().rev()).unwrap();
        assert_eq!(forward.root(), backward.root());
        // Inserted one by one in a shuffled order, with unrelated entries added and removed between.
        let mut shuffled: Vec<(&Vec<u8>, &Vec<u8>)> = entries.iter().collect();
        for index in (1..shuffled.len()).rev() {
            shuffled.swap(index, rng.below(index as u64 + 1) as usize);
        }
        let mut incremental = MerkleTree::new(0, u64::MAX, DEPTH_DEFAULT).unwrap();
        let extra = random_entries(&mut rng, 0, u64::MAX, 100);
        for (key, version) in &extra {
            incremental.insert(key, version).unwrap();
        }
        for (key, version) in shuffled {
            incremental.insert(key, version).unwrap();
        }
        assert_ne!(incremental.root(), forward.root());
        for (key, version) in &extra {
            incremental.remove(key, version).unwrap();
        }
        assert_eq!(incremental.root(), forward.root());
        assert_eq!(all_digests(&incremental), all_digests(&forward));

        // One differing version changes the root and exactly one leaf.
        let mut changed = entries.clone();
        let key = changed.keys().nth(250).unwrap().clone();
        changed.insert(key.clone(), random_version(&mut rng));
        let other = tree_of(shape, &changed);
        assert_ne!(other.root(), forward.root());
        let leaves = forward.depth();
        let differing: Vec<u32> =
            (0..forward.leaf_count()).filter(|&leaf| forward.node(leaves, leaf) != other.node(leaves, leaf)).collect();
        assert_eq!(differing, [forward.leaf_of(&key).unwrap()]);
        // So does one more key, and the same key with another version of equal length.
        let mut added = entries.clone();
        added.insert(key_at(42, 0), random_version(&mut rng));
        assert_ne!(tree_of(shape, &added).root(), forward.root());
        // The version bytes matter, not only their hash positions: an entry's key and version do
        // not trade bytes.
        let mut left = MerkleTree::new(0, u64::MAX, 4).unwrap();
        let mut right = MerkleTree::new(0, u64::MAX, 4).unwrap();
        left.insert(&key_at(1, 2), b"v").unwrap();
        right.insert(&[key_at(1, 2), b"v".to_vec()].concat(), b"").unwrap();
        assert_ne!(left.root(), right.root());
    }

    /// With an XOR digest, an entry applied twice would vanish and compare equal to its absence.
    #[test]
    fn an_entry_added_twice_does_not_vanish() {
        let key = key_at(99, 1);
        let empty = MerkleTree::new(0, u64::MAX, 4).unwrap();
        let mut once = empty.clone();
        once.insert(&key, b"v1").unwrap();
        let mut twice = once.clone();
        twice.insert(&key, b"v1").unwrap();
        assert_ne!(twice.root(), empty.root());
        assert_ne!(twice.root(), once.root());
        assert_eq!(twice.len(), 2);
        twice.remove(&key, b"v1").unwrap();
        assert_eq!(twice.root(), once.root());
    }

    #[test]
    fn comparison_finds_exactly_the_differing_leaves() {
        let mut rng = Rng::new(23);
        let (first, last) = (3 << 60, (4 << 60) - 1);
        for round in 0..60 {
            let depth = [0, 1, 3, 6, 7, DEPTH_DEFAULT][round % 6];
            let max = [1, 2, 3, 5, 64, HASHES_PER_MESSAGE_MAX][rng.below(6) as usize];
            let differences = [1, 2, 5, 30, 300][rng.below(5) as usize];
            let ours = random_entries(&mut rng, first, last, 1000);
            let mut theirs = ours.clone();
            let mut mine = ours.clone();
            for _ in 0..differences {
                let key = mine.keys().nth(rng.below(mine.len() as u64) as usize).unwrap().clone();
                match rng.below(4) {
                    // A key only we hold.
                    0 => drop(theirs.remove(&key)),
                    // A key only they hold.
                    1 => drop(theirs.insert(key_at(random_token(&mut rng, first, last), 9), random_version(&mut rng))),
                    // A key each side holds at a different version.
                    2 => drop(theirs.insert(key, random_version(&mut rng))),
                    // Our own write they have not seen.
                    _ => drop(mine.insert(key, random_version(&mut rng))),
                }
            }
            let shape = Shape { first, last, depth };
            let initiator = tree_of(shape, &mine);
            let responder = tree_of(shape, &theirs);
            let expected = differing_leaves(&initiator, &mine, &theirs);
            assert!(!expected.is_empty());
            let comparison = compare(&initiator, &responder, max).unwrap();
            let found: BTreeSet<u32> = comparison.differing_leaves().iter().copied().collect();
            assert_eq!(found, expected, "round {round}");
            assert!(comparison.differing_leaves().windows(2).all(|pair| pair[0] < pair[1]));
            check_ranges(&initiator, &comparison.differing_ranges(), &expected);
            // The cost model: at most 1 + 4 · ⌈depth/2⌉ digests per differing leaf.
            let per_difference = 1 + (1u64 << LEVELS_PER_STEP) * u64::from(depth.div_ceil(LEVELS_PER_STEP));
            assert!(comparison.hashes_received() <= per_difference * expected.len() as u64);
            // Either side may start: the answer is the same.
            let reverse = compare(&responder, &initiator, max).unwrap();
            assert_eq!(reverse.differing_leaves(), comparison.differing_leaves());
        }
    }

    #[test]
    fn identical_trees_take_one_round_trip() {
        let mut rng = Rng::new(5);
        let entries = random_entries(&mut rng, 0, u64::MAX, 2000);
        for depth in [0, 5, DEPTH_DEFAULT, DEPTH_MAX] {
            let shape = Shape { first: 0, last: u64::MAX, depth };
            let (ours, mut theirs) = (tree_of(shape, &entries), MerkleTree::new(0, u64::MAX, depth).unwrap());
            // Same entries, arrived in another order and one at a time.
            for (key, version) in entries.iter().rev() {
                theirs.insert(key, version).unwrap();
            }
            let comparison = compare(&ours, &theirs, HASHES_PER_MESSAGE_DEFAULT).unwrap();
            assert_eq!((comparison.round_trips(), comparison.hashes_received()), (1, 1));
            assert!(comparison.differing_ranges().is_empty());
            let empty = MerkleTree::new(0, u64::MAX, depth).unwrap();
            assert_eq!(compare(&empty, &empty.clone(), 1).unwrap().round_trips(), 1);
        }
    }

    #[test]
    fn every_message_respects_the_bound() {
        // Trees that differ everywhere: the widest frontier, split into messages of at most `max`.
        let mut rng = Rng::new(3);
        let shape = Shape { first: 0, last: u64::MAX, depth: 8 };
        let ours = tree_of(shape, &random_entries(&mut rng, 0, u64::MAX, 3000));
        let theirs = tree_of(shape, &random_entries(&mut rng, 0, u64::MAX, 3000));
        for max in [1, 3, 16, 100] {
            let mut comparison = Comparison::new(&ours, max).unwrap();
            let mut messages = 0u64;
            while let Some(request) = comparison.poll_request() {
                let Request::Hashes { nodes, level, .. } = &request;
                assert!(nodes.len() <= max as usize);
                assert!(nodes.windows(2).all(|pair| pair[0] < pair[1]), "level {level}: {nodes:?}");
                comparison.handle_response(&ours, respond(&theirs, &request)).unwrap();
                messages += 1;
            }
            assert!(comparison.is_finished());
            assert_eq!(comparison.differing_leaves().len(), 256);
            assert_eq!(comparison.differing_ranges(), [(0, u64::MAX)]);
            // Levels 0, 2, 4, 6, 8 are fetched whole: 1 + 4 + 16 + 64 + 256 digests.
            assert_eq!(comparison.hashes_received(), 341);
            let expected: u64 = [1u64, 4, 16, 64, 256].iter().map(|count| count.div_ceil(u64::from(max))).sum();
            assert_eq!(messages, expected);
        }
        // A responder refuses oversized requests, and the bound is checked at the start.
        let big = MerkleTree::new(0, u64::MAX, DEPTH_MAX).unwrap();
        let nodes: Vec<u32> = (0..=HASHES_PER_MESSAGE_MAX).collect();
        assert_eq!(
            respond(&big, &Request::Hashes { shape: big.shape(), level: DEPTH_MAX, nodes }),
            Response::Refused(Refusal::TooManyNodes { count: u64::from(HASHES_PER_MESSAGE_MAX) + 1 })
        );
        assert_eq!(Comparison::new(&ours, 0).unwrap_err(), ComparisonError::HashesPerMessage(0));
        assert!(Comparison::new(&ours, HASHES_PER_MESSAGE_MAX + 1).is_err());
    }

    #[test]
    fn trees_of_different_shapes_are_not_compared() {
        let partition = (1u64 << 62, (1u64 << 63) - 1);
        let ours = MerkleTree::new(partition.0, partition.1, 10).unwrap();
        for (first, last, depth) in [(partition.0, partition.1, 9), (0, partition.1, 10), (partition.0, u64::MAX, 10)] {
            let theirs = MerkleTree::new(first, last, depth).unwrap();
            let mut comparison = Comparison::new(&ours, 64).unwrap();
            let request = comparison.poll_request().unwrap();
            let response = respond(&theirs, &request);
            assert_eq!(response, Response::Refused(Refusal::ShapeMismatch { responder: theirs.shape() }));
            let expected = ComparisonError::ShapeMismatch { initiator: ours.shape(), responder: theirs.shape() };
            assert_eq!(comparison.handle_response(&ours, response), Err(expected.clone()));
            assert_eq!(comparison.poll_request(), None);
            assert!(!comparison.is_finished());
            assert_eq!(comparison.error(), Some(&expected));
            assert!(expected.to_string().contains("different shapes"), "{expected}");
        }
        // The initiator's own tree swapped for another shape midway.
        let mut other = MerkleTree::new(partition.0, partition.1, 10).unwrap();
        other.insert(&key_at(partition.0, 0), b"v").unwrap();
        let mut comparison = Comparison::new(&ours, 64).unwrap();
        let request = comparison.poll_request().unwrap();
        let smaller = MerkleTree::new(partition.0, partition.1, 4).unwrap();
        assert!(matches!(
            comparison.handle_response(&smaller, respond(&other, &request)),
            Err(ComparisonError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn malformed_messages_end_the_comparison() {
        let tree = MerkleTree::new(0, u64::MAX, 4).unwrap();
        let shape = tree.shape();
        let ask = |level, nodes: &[u32]| respond(&tree, &Request::Hashes { shape, level, nodes: nodes.to_vec() });
        assert_eq!(ask(4, &[15]), Response::Hashes { level: 4, digests: vec![tree.node(4, 15).unwrap()] });
        assert_eq!(ask(4, &[16]), Response::Refused(Refusal::NoSuchNode { level: 4, node: 16 }));
        assert_eq!(ask(5, &[0]), Response::Refused(Refusal::NoSuchNode { level: 5, node: 0 }));
        assert_eq!(ask(0, &[]), Response::Hashes { level: 0, digests: vec![] });

        // A response with nothing in flight is refused and changes nothing, even once finished.
        let mut comparison = Comparison::new(&tree, 8).unwrap();
        let stray = Response::Hashes { level: 0, digests: vec![tree.root()] };
        assert_eq!(comparison.handle_response(&tree, stray.clone()), Err(ComparisonError::UnexpectedResponse));
        let request = comparison.poll_request().unwrap();
        comparison.handle_response(&tree, respond(&tree, &request)).unwrap();
        assert!(comparison.is_finished());
        assert_eq!(comparison.handle_response(&tree, stray), Err(ComparisonError::UnexpectedResponse));
        assert!(comparison.is_finished() && comparison.error().is_none());
        // A response for another level, or with too few digests.
        for wrong in
            [Response::Hashes { level: 1, digests: vec![tree.root()] }, Response::Hashes { level: 0, digests: vec![] }]
        {
            let mut comparison = Comparison::new(&tree, 8).unwrap();
            let request = comparison.poll_request().unwrap();
            assert_eq!(comparison.request_in_flight(), Some(request));
            assert_eq!(comparison.handle_response(&tree, wrong), Err(ComparisonError::UnexpectedResponse));
            assert_eq!(comparison.poll_request(), None);
        }
        // Any other refusal is passed on.
        let mut comparison = Comparison::new(&tree, 8).unwrap();
        comparison.poll_request().unwrap();
        let refusal = Refusal::NoSuchNode { level: 9, node: 0 };
        assert_eq!(
            comparison.handle_response(&tree, Response::Refused(refusal)),
            Err(ComparisonError::Refused(refusal))
        );
    }

    #[test]
    fn the_end_of_the_token_space_and_a_single_partition_work() {
        let mut rng = Rng::new(17);
        let four = Layout::new(4, 1, [Node::new(NodeId(1))]).unwrap();
        let one = Layout::new(1, 1, [Node::new(NodeId(1))]).unwrap();
        for (first, last) in [four.partition_range(PartitionId(3)), one.partition_range(PartitionId(0))] {
            assert_eq!(last, u64::MAX);
            for depth in [0, 1, DEPTH_DEFAULT, DEPTH_MAX] {
                let tree = MerkleTree::new(first, last, depth).unwrap();
                let leaves = tree.leaf_count();
                assert_eq!(tree.leaf_of_token(first), Some(0));
                assert_eq!(tree.leaf_of_token(u64::MAX), Some(leaves - 1));
                assert_eq!(tree.leaf_range(0).0, first);
                assert_eq!(tree.leaf_range(leaves - 1).1, u64::MAX);
                if first > 0 {
                    assert_eq!(tree.leaf_of_token(first - 1), None);
                }
            }
            // Differences at the two extreme tokens are found, and nothing else.
            let shape = Shape { first, last, depth: DEPTH_DEFAULT };
            let ours = random_entries(&mut rng, first, last, 300);
            let mut theirs = ours.clone();
            theirs.insert(key_at(u64::MAX, 0), b"last".to_vec());
            theirs.insert(vec![0xFF; 8], b"last, shorter key".to_vec());
            theirs.insert(key_at(first, 0), b"first".to_vec());
            let (initiator, responder) = (tree_of(shape, &ours), tree_of(shape, &theirs));
            let comparison = compare(&initiator, &responder, 16).unwrap();
            assert_eq!(comparison.differing_leaves(), [0, initiator.leaf_count() - 1]);
            let ranges = comparison.differing_ranges();
            assert_eq!(ranges, [initiator.leaf_range(0), initiator.leaf_range(1023)]);
            assert_eq!(ranges[1].1, u64::MAX);
        }
    }

    #[test]
    fn leaves_tile_the_interval() {
        let mut rng = Rng::new(13);
        for (first, last, depth) in
            [(0, 15, 4), (5, 105, 3), (1000, 1000 + 36 * 37, 5), (7, u64::MAX - 3, 11), (0, u64::MAX, DEPTH_MAX)]
        {
            let tree = MerkleTree::new(first, last, depth).unwrap();
            let mut expected_start = first;
            for leaf in 0..tree.leaf_count() {
                let (start, end) = tree.leaf_range(leaf);
                assert_eq!(start, expected_start, "leaf {leaf}");
                assert!(start <= end);
                assert_eq!((tree.leaf_of_token(start), tree.leaf_of_token(end)), (Some(leaf), Some(leaf)));
                expected_start = end.wrapping_add(1);
            }
            assert_eq!(tree.leaf_range(tree.leaf_count() - 1).1, last);
            for _ in 0..1000 {
                let token = random_token(&mut rng, first, last);
                let (start, end) = tree.leaf_range(tree.leaf_of_token(token).unwrap());
                assert!(start <= token && token <= end);
            }
        }
        // Equal sub-ranges: sizes differ by at most one token.
        let tree = MerkleTree::new(5, 105, 3).unwrap();
        let sizes: BTreeSet<u64> =
            (0..8).map(|leaf| tree.leaf_range(leaf)).map(|(start, end)| end - start + 1).collect();
        assert_eq!(sizes, BTreeSet::from([12, 13]));
    }

    #[test]
    fn invalid_shapes_and_keys_are_refused() {
        assert_eq!(MerkleTree::new(0, u64::MAX, 17).unwrap_err(), MerkleError::Depth(17));
        assert_eq!(MerkleTree::new(10, 5, 0).unwrap_err(), MerkleError::Interval { first: 10, last: 5, depth: 0 });
        // Fifteen tokens cannot give sixteen leaves a token each.
        assert_eq!(MerkleTree::new(0, 14, 4).unwrap_err(), MerkleError::Interval { first: 0, last: 14, depth: 4 });
        assert!(MerkleTree::new(0, 15, 4).is_ok());
        assert!(Shape { first: 0, last: 14, depth: 3 }.validate().is_ok());

        let (first, last) = (1 << 63, u64::MAX);
        let mut tree = MerkleTree::new(first, last, 6).unwrap();
        tree.insert(&key_at(first + 5, 0), b"v").unwrap();
        let (root, len) = (tree.root(), tree.len());
        let outside = key_at(first - 1, 0);
        let error = MerkleError::OutsideInterval { token: first - 1, first, last };
        assert_eq!(tree.insert(&outside, b"v"), Err(error.clone()));
        assert_eq!(tree.replace(&outside, Some(b"v".as_slice()), b"w"), Err(error.clone()));
        assert_eq!(tree.remove(&outside, b"v"), Err(error.clone()));
        assert_eq!(tree.leaf_of(&outside), None);
        assert!(error.to_string().contains("outside"), "{error}");
        let inside_empty_leaf = key_at(last, 0);
        let leaf = tree.leaf_of(&inside_empty_leaf).unwrap();
        assert_eq!(tree.remove(&inside_empty_leaf, b"v"), Err(MerkleError::EmptyLeaf { leaf }));
        assert_eq!(tree.replace(&inside_empty_leaf, Some(b"v".as_slice()), b"w"), Err(MerkleError::EmptyLeaf { leaf }));
        assert_eq!((tree.root(), tree.len()), (root, len), "refused updates change nothing");
        assert_eq!(tree.node(7, 0), None);
        assert_eq!(tree.node(6, 64), None);
        assert_eq!(tree.level(6, 60..65), None);
        assert!(MerkleTree::from_entries(first, last, 6, [(outside, b"v")]).is_err());
        // A short key reads as a zero-padded token.
        assert_eq!(tree.leaf_of(&[0xFF]), tree.leaf_of_token(0xFF00_0000_0000_0000));
        tree.clear();
        assert_eq!(tree.root(), MerkleTree::new(first, last, 6).unwrap().root());
        assert_eq!(
            version_stamp(Timestamp(1), NodeId(2)),
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2],
            "the version bytes are a wire format"
        );
    }
}
