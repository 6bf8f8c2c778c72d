//! Catalog anti-entropy: members' catalogs converge on the registry's tables, whatever
//! announcements they missed.
//!
//! Table changes are agreed in the registry (`crate::registry`, per-item consensus); each node's
//! catalog is its cache of it. The node that made a change tells every member at once
//! (`Node::announce_table_schema`), but a member that is down or cut off at that moment misses
//! the message. So, like items, the catalogs heal in the background: about once a second each
//! node sends one peer (in turn) a digest of its catalog — each table's id and revision, and the
//! ids of the tables it knows were deleted — and the peer answers with what the digest lacks:
//! descriptions of tables unknown to the sender or newer than its copy, and deletions of tables
//! the sender still has. The sender applies them as it applies announcements: a description is
//! kept only if its revision is newer, and a deleted table's id is remembered
//! (`Catalog::remove`), so a late or repeated description never brings it back. A node that
//! returns thus learns the tables created, changed and deleted while it was away within a round
//! of digests, before anti-entropy brings their items (and a request naming a table the node has
//! not heard of reads the registry at once: `Node::table`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use onggi_model::table::TableSchema;
use serde::{Deserialize, Serialize};

use super::{ROUND_TIMEOUT, wire};
use crate::{Inner, Node};

/// How often a node compares its catalog with a peer's.
const SYNC_INTERVAL: Duration = Duration::from_millis(1_000);

/// What a node has: table id → revision, and the deleted table ids it remembers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Digest {
    tables: BTreeMap<String, u64>,
    deleted: BTreeSet<String>,
}

/// What the asking node lacks.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Missing {
    schemas: Vec<TableSchema>,
    deleted: Vec<String>,
}

impl Node {
    fn catalog_digest(&self) -> Digest {
        let catalog = &self.inner.catalog;
        Digest {
            tables: catalog
                .user_tables()
                .iter()
                .map(|table| (table.schema.id.clone(), table.schema.revision))
                .collect(),
            deleted: catalog.deleted().into_iter().collect(),
        }
    }

    /// What a peer whose catalog is `theirs` lacks of this node's.
    fn catalog_missing(&self, theirs: &Digest) -> Missing {
        let catalog = &self.inner.catalog;
        let schemas = catalog
            .user_tables()
            .iter()
            .filter(|table| !theirs.deleted.contains(&table.schema.id))
            .filter(|table| {
                theirs.tables.get(&table.schema.id).is_none_or(|revision| *revision < table.schema.revision)
            })
            .map(|table| table.schema.clone())
            .collect();
        let deleted = catalog.deleted().into_iter().filter(|id| theirs.tables.contains_key(id)).collect();
        Missing { schemas, deleted }
    }

    /// Answers a peer's [`wire::tag::CATALOG_SYNC`].
    pub(super) async fn answer_catalog_sync(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let theirs: Digest = serde_json::from_slice(payload).map_err(|error| format!("catalog digest: {error}"))?;
        serde_json::to_vec(&self.catalog_missing(&theirs)).map_err(|error| error.to_string())
    }

    /// Applies what a peer said this node lacks; returns how many changes were applied.
    async fn apply_missing(&self, missing: Missing) -> usize {
        let mut applied = 0;
        for id in missing.deleted {
            match self.uninstall_table(&id).await {
                Ok(_) => applied += 1,
                Err(error) => tracing::warn!(%error, table = %id, "a deletion learned from a peer failed"),
            }
        }
        for schema in missing.schemas {
            let (name, id) = (schema.name.clone(), schema.id.clone());
            match self.apply_schema(schema).await {
                Ok(()) => applied += 1,
                Err(error) => {
                    tracing::warn!(%error, table = %name, %id, "a table description from a peer was not applied")
                }
            }
        }
        applied
    }

    /// Compares this node's catalog with `peer`'s once and applies what it lacks.
    pub(super) async fn pull_catalog(&self, peer: std::net::SocketAddr) -> Result<usize, String> {
        let cluster = self.cluster().ok_or("not on a cluster")?.clone();
        let digest = serde_json::to_vec(&self.catalog_digest()).map_err(|error| error.to_string())?;
        let reply = cluster
            .transport
            .request(peer, wire::tag::CATALOG_SYNC, Bytes::from(digest), ROUND_TIMEOUT)
            .await
            .map_err(|error| error.to_string())?;
        let missing: Missing = serde_json::from_slice(&reply).map_err(|error| format!("catalog reply: {error}"))?;
        Ok(self.apply_missing(missing).await)
    }

    /// Starts the background catalog comparison (see the module docs).
    pub(super) fn spawn_catalog_sync(&self) {
        tokio::spawn(catalog_walk(Arc::downgrade(&self.inner)));
    }
}

/// Every [`SYNC_INTERVAL`], compares the catalog with the next peer in turn, until the node stops.
async fn catalog_walk(inner: Weak<Inner>) {
    let mut turn = 0usize;
    loop {
        tokio::time::sleep(SYNC_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let node = Node { inner };
        let Some(cluster) = node.cluster() else { continue };
        let peers = cluster.peers();
        if peers.is_empty() {
            continue;
        }
        let peer = peers[turn % peers.len()];
        turn = turn.wrapping_add(1);
        match node.pull_catalog(peer).await {
            Ok(0) => {}
            Ok(applied) => tracing::info!(%peer, applied, "catalog changes learned from a peer"),
            Err(error) => tracing::debug!(%error, %peer, "catalog comparison failed"),
        }
    }
}
