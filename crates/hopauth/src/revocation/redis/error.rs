//! Why talking to Redis failed: discovering the masters, a session of the sync, or a
//! write. One enum that keeps the Redis error as its source; the messages also show it,
//! since the sync logs them as one line.

use redis::RedisError;

#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// A connection or command to one node failed; `what` names the step.
    #[error("{node}: {what}: {source}")]
    Node {
        node: String,
        what: &'static str,
        #[source]
        source: RedisError,
    },
    /// A command failed where no single node is named (the cluster router, keyed reads).
    #[error("{what}: {source}")]
    Command {
        what: &'static str,
        #[source]
        source: RedisError,
    },
    /// A node address (from a sentinel or `CLUSTER NODES`) that is not a valid address.
    #[error("bad node address {addr:?}: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: RedisError,
    },
    #[error("sentinel {sentinel} does not know master {name:?}")]
    UnknownMaster { sentinel: String, name: String },
    #[error("sentinel {sentinel} named a bad port {port:?}")]
    BadPort { sentinel: String, port: String },
    /// No address is named by more than half of the configured sentinels.
    #[error("no master is named by a majority of the {configured} sentinels (named: [{named}]; errors: [{errors}])")]
    NoQuorum { configured: usize, named: String, errors: String },
    #[error("{0} is not a master (failover in progress?)")]
    NotMaster(String),
    #[error("cluster serves {covered} of {total} slots from healthy masters")]
    SlotsUncovered { covered: usize, total: usize },
    /// Discovery found no master (no cluster seed reports one).
    #[error("no master found")]
    NoMaster,
    /// A failover moved a master while our connections stayed up.
    #[error("the masters changed: {was:?} -> {now:?}")]
    MastersChanged { was: Vec<String>, now: Vec<String> },
    #[error("the connection to Redis was lost")]
    ConnectionLost,
    #[error("asking a sentinel: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl RedisStoreError {
    /// A failed step on `node`.
    pub(super) fn node(node: impl std::fmt::Display, what: &'static str) -> impl FnOnce(RedisError) -> Self {
        let node = node.to_string();
        move |source| RedisStoreError::Node { node, what, source }
    }

    /// A failed step that names no single node.
    pub(super) fn command(what: &'static str) -> impl FnOnce(RedisError) -> Self {
        move |source| RedisStoreError::Command { what, source }
    }
}
