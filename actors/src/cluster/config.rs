//! `[cluster]` in config.toml: whether this node joins others over NATS, and its timings.

use serde::Deserialize;

use crate::config::LimitsError;

/// `[cluster]`: several nodes as one engine over NATS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URL (`nats://127.0.0.1:4222`); empty runs one node alone. Default empty.
    pub nats_url: String,
    /// This node's name in the cluster (health, heartbeats); empty generates one at start.
    /// Default empty.
    pub node_id: String,
    /// How often the node announces itself (with its connection count and geo reach).
    /// Default 1,000.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is dead: its presences leave everywhere.
    /// Default 5,000.
    pub node_down_ms: u64,
    /// A durable topic's room that sees a gap in the offsets (a publication from another node
    /// still on its way, or lost while NATS was down) waits this long before it reads the
    /// missing publications from the database. Default 100.
    pub gap_wait_ms: u64,
    /// Publications, presence changes and geo events waiting to go out to NATS, in bytes; past
    /// it they are dropped for other nodes (`locus_messages_dropped_total{reason=
    /// "cluster_queue_full"}`) and still delivered on this node. Default 16,777,216 (16 MiB).
    pub outbound_queue_bytes_max: usize,
    /// Messages NATS may hold for one subscription of this node before it drops them (the
    /// client's slow-consumer bound). Default 8,192.
    pub subscription_messages_max: usize,
    /// Most peers this node tracks; heartbeats of further nodes are ignored and counted.
    /// Default 64.
    pub nodes_max: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: String::new(),
            node_id: String::new(),
            heartbeat_ms: 1_000,
            node_down_ms: 5_000,
            gap_wait_ms: 100,
            outbound_queue_bytes_max: 16 * 1024 * 1024,
            subscription_messages_max: 8_192,
            nodes_max: 64,
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs in a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats_url.is_empty()
    }

    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |s: &str| Err(LimitsError(s.to_owned()));
        if self.heartbeat_ms == 0 || self.node_down_ms <= self.heartbeat_ms {
            return err("cluster: 0 < heartbeat_ms < node_down_ms must hold");
        }
        if self.outbound_queue_bytes_max == 0
            || self.subscription_messages_max == 0
            || self.nodes_max == 0
        {
            return err("cluster: outbound_queue_bytes_max, subscription_messages_max and nodes_max must be positive");
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err("cluster.node_id: at most 64 of [A-Za-z0-9_-]");
        }
        Ok(())
    }
}
