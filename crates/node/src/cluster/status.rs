//! The cluster as one node sees it: what `onggi cluster status` prints.
//!
//! A node answers `GET /onggi/cluster/status` with JSON: itself, the layout (partitions,
//! replication factor, version), every member with its cluster address, whether this node can
//! reach it right now (a short status request over the transport), the partitions it holds, the
//! failure detector's phi for it and whether it is suspected (`gossip.rs`), the
//! items it stores itself (all tables), and the hinted handoff counters (hints queued now, stored, delivered, dropped, discarded, and the
//! limit), the anti-entropy counters, tombstone collection's, and the upkeep of global index
//! views (changes queued here now, delivered, deferred, applied here; `views.rs`).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value as Json, json};

use crate::Node;

/// How long a member may take to answer before it is shown unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

impl Node {
    /// This node's view of its cluster, as JSON (see the module docs).
    pub(crate) async fn cluster_status_impl(&self) -> Json {
        self.recounted().await;
        let names = self.inner.catalog.names();
        let tables = names.len();
        // Items this node stores itself, over every table (a drained node's falls to zero).
        let items_stored: i64 = names
            .iter()
            .filter_map(|name| self.inner.catalog.get(name))
            .map(|table| table.stats.item_count.load(std::sync::atomic::Ordering::Relaxed).max(0))
            .sum();
        let Some(cluster) = self.inner.cluster.get() else {
            return json!({
                "node": 0,
                "cluster": null,
                "members": [{"id": 0, "address": null, "state": "self", "partitions": null}],
                "tables": tables,
                "note": "a single node: not part of a cluster",
            });
        };
        let layout = cluster.layout();
        let mut members = Vec::new();
        for (id, address) in layout.addresses() {
            let state = if id == cluster.me {
                "self"
            } else {
                let probe = cluster.transport.request(address, super::wire::tag::STATUS, Bytes::new(), PROBE_TIMEOUT);
                match probe.await {
                    Ok(_) => "up",
                    Err(error) => {
                        tracing::debug!(%error, member = id.0, "status probe failed");
                        "unreachable"
                    }
                }
            };
            let draining =
                layout.target().node(id).is_some_and(|member| member.state == onggi_core::layout::NodeState::Draining);
            // The failure detector's view (gossip), beside the probe's: how surprising the
            // member's silence is, and whether that makes it suspected.
            let phi = cluster.gossip.phi(id).filter(|_| id != cluster.me).map(|phi| (phi * 100.0).round() / 100.0);
            members.push(json!({
                "id": id.0,
                "address": address.to_string(),
                "zone": layout.target().node(id).and_then(|member| member.zone.clone()),
                "state": state,
                "phi": phi,
                "suspected": id != cluster.me && cluster.gossip.suspects(id),
                "draining": draining,
                "partitions": layout.partitions_of(id).count(),
                "partitions_after_change": layout.next().map(|next| next.partitions_of(id).count()),
            }));
        }
        let change = layout.next().map(|next| {
            let done = layout
                .moved()
                .iter()
                .filter(|&&partition| {
                    let new = next.replicas(partition);
                    let caught_up = layout.caught_up(partition);
                    new.iter().filter(|node| caught_up.contains(node)).count() > new.len() / 2
                })
                .count();
            json!({"moved_partitions": layout.moved().len(), "caught_up_partitions": done})
        });
        json!({
            "node": cluster.me.0,
            "cluster": cluster.transport.config().cluster.clone(),
            "layout_version": layout.version(),
            "layout_epoch": layout.epoch(),
            "layout_change": change,
            "partitions": layout.partition_count(),
            "replication": layout.replica_count(),
            "members": members,
            "tables": tables,
            "items_stored": items_stored,
            "hints": hints_json(cluster.hints.counts()),
            "repair": repair_json(cluster.repair.stats.snapshot()),
            "leases": leases_json(cluster.leases.counts()),
            "consensus": consensus_json(&cluster.consensus_stats),
            "tombstones": tombstones_json(&cluster.collector.stats),
            "views": views_json(&cluster.views.stats),
        })
    }
}

fn views_json(stats: &super::views::ViewStats) -> Json {
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "queued": read(&stats.queued),
        "delivered": read(&stats.delivered),
        "deferred": read(&stats.deferred),
        "applied": read(&stats.applied),
    })
}

fn hints_json(counts: super::hints::HintCounts) -> Json {
    json!({
        "queued": counts.queued,
        "stored": counts.stored,
        "delivered": counts.delivered,
        "dropped": counts.dropped,
        "discarded": counts.discarded,
        "limit": counts.limit,
    })
}

fn tombstones_json(stats: &super::tombstones::CollectionStats) -> Json {
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "rounds": read(&stats.rounds),
        "rounds_abandoned": read(&stats.rounds_abandoned),
        "removed": read(&stats.removed),
        "commits_dropped": read(&stats.commits_dropped),
    })
}

fn consensus_json(stats: &super::ConsensusStats) -> Json {
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "contended": read(&stats.contended),
        "timed_out": read(&stats.timed_out),
        "past_deadline": read(&stats.past_deadline),
        "indeterminate": read(&stats.indeterminate),
        "forwarded": read(&stats.forwarded),
        "taken_over": read(&stats.taken_over),
    })
}

fn leases_json(counts: super::leases::LeaseCounts) -> Json {
    json!({"formed": counts.formed, "used": counts.used})
}

fn repair_json(counts: super::repair::RepairCounts) -> Json {
    json!({
        "sweeps": counts.sweeps,
        "comparisons": counts.comparisons,
        "abandoned": counts.comparisons_abandoned,
        "with_differences": counts.comparisons_with_differences,
        "versions_sent": counts.versions_sent,
        "versions_received": counts.versions_received,
        "versions_applied": counts.versions_applied,
        "proposals_finished": counts.proposals_finished,
        "live_trees_built": counts.live_trees_built,
    })
}

/// Renders a status (as fetched from a node) for a terminal.
pub fn render_status(status: &Json) -> String {
    let mut out = String::new();
    let text = |value: &Json| match value {
        Json::String(text) => text.clone(),
        Json::Null => "-".to_string(),
        other => other.to_string(),
    };
    if status["cluster"].is_null() {
        out.push_str(&format!("a single node, not part of a cluster ({} tables)\n", text(&status["tables"])));
        return out;
    }
    out.push_str(&format!(
        "cluster {}: asked node {}; {} partitions, {} replicas each, layout version {}; {} tables\n",
        text(&status["cluster"]),
        text(&status["node"]),
        text(&status["partitions"]),
        text(&status["replication"]),
        text(&status["layout_version"]),
        text(&status["tables"]),
    ));
    match status["layout_change"].as_object() {
        Some(change) => out.push_str(&format!(
            "layout change in progress (epoch {}): {} of {} moved partitions caught up by a majority of their new \
             replicas\n",
            text(&status["layout_epoch"]),
            text(&change["caught_up_partitions"]),
            text(&change["moved_partitions"]),
        )),
        None => out.push_str(&format!("no layout change in progress (epoch {})\n", text(&status["layout_epoch"]))),
    }
    out.push_str(&format!(
        "{:>6}  {:<22} {:<10} {:<12} {:>10} {:>8}  {}\n",
        "node", "cluster address", "zone", "state", "partitions", "after", "failure detector"
    ));
    for member in status["members"].as_array().into_iter().flatten() {
        let state = match (text(&member["state"]), member["draining"].as_bool()) {
            (state, Some(true)) => format!("{state}, draining"),
            (state, _) => state,
        };
        let detector = match (member["suspected"].as_bool(), member["phi"].as_f64()) {
            (Some(true), Some(phi)) => format!("suspected (phi {phi:.1})"),
            (_, Some(phi)) => format!("heard (phi {phi:.1})"),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:>6}  {:<22} {:<10} {:<12} {:>10} {:>8}  {}\n",
            text(&member["id"]),
            text(&member["address"]),
            text(&member["zone"]),
            state,
            text(&member["partitions"]),
            text(&member["partitions_after_change"]),
            detector,
        ));
    }
    match status["hints"].as_object() {
        Some(hints) => out.push_str(&format!(
            "hints queued: {} (limit {}); stored {}, delivered {}, dropped {}, discarded {}\n",
            text(&hints["queued"]),
            text(&hints["limit"]),
            text(&hints["stored"]),
            text(&hints["delivered"]),
            text(&hints["dropped"]),
            text(&hints["discarded"]),
        )),
        // A node of an earlier build describes its hints in words.
        None => out.push_str(&format!("hints: {}\n", text(&status["hints"]))),
    }
    if let Some(leases) = status["leases"].as_object() {
        out.push_str(&format!(
            "writes coordinated here that ended with a lease: {}; started from one (no prepare): {}\n",
            text(&leases["formed"]),
            text(&leases["used"]),
        ));
    }
    if let Some(consensus) = status["consensus"].as_object() {
        out.push_str(&format!(
            "writes handed to their item's home: {}, taken back: {}; rounds that met another coordinator: {}, \
             timed out: {}; operations given up at their deadline: {}, unsure of their outcome: {}\n",
            text(&consensus["forwarded"]),
            text(&consensus["taken_over"]),
            text(&consensus["contended"]),
            text(&consensus["timed_out"]),
            text(&consensus["past_deadline"]),
            text(&consensus["indeterminate"]),
        ));
    }
    if let Some(repair) = status["repair"].as_object() {
        let fields: Vec<String> = repair.iter().map(|(name, value)| format!("{name} {}", text(value))).collect();
        out.push_str(&format!("repair: {}\n", fields.join(", ")));
    }
    if let Some(views) = status["views"].as_object() {
        out.push_str(&format!(
            "global index changes queued here: {}; delivered {}, deferred {}; applied here as a view replica {}\n",
            text(&views["queued"]),
            text(&views["delivered"]),
            text(&views["deferred"]),
            text(&views["applied"]),
        ));
    }
    if let Some(tombstones) = status["tombstones"].as_object() {
        out.push_str(&format!(
            "tombstone collection: rounds started here {} ({} abandoned); tombstones removed here {}; old commits dropped {}\n",
            text(&tombstones["rounds"]),
            text(&tombstones["rounds_abandoned"]),
            text(&tombstones["removed"]),
            text(&tombstones["commits_dropped"]),
        ));
    }
    out
}
