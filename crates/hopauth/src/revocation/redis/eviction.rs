//! Whether Redis may evict revocation keys. Under memory pressure a `maxmemory-policy`
//! other than `noeviction` drops keys (every `allkeys-*` policy, and every `volatile-*`
//! one too, since each revocation key has a TTL): an evicted key is a revocation silently
//! lifted. Checked at the start of every full resync; reported in
//! `hopauth_revocation_store_evicting` and in one log line per change.

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::RedisStore;

/// The only policy under which Redis never drops a key to make room.
const SAFE_POLICY: &str = "noeviction";

/// What one master said about its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Policy {
    Known(String),
    /// `CONFIG GET` refused (disabled, renamed, or not allowed by an ACL).
    Unknown(String),
}

/// The policy in a `CONFIG GET maxmemory-policy` reply (a RESP3 map or a RESP2 pair list).
fn policy_of(reply: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        Value::Array(items) => items.get(1).and_then(text),
        _ => None,
    }
}

/// The gauge value for a set of masters: 1 if any may evict, else -1 if any is unknown,
/// else 0.
pub(super) fn gauge(policies: &[(String, Policy)]) -> i64 {
    if policies.iter().any(|(_, p)| matches!(p, Policy::Known(p) if p != SAFE_POLICY)) {
        1
    } else if policies.iter().any(|(_, p)| matches!(p, Policy::Unknown(_))) {
        -1
    } else {
        0
    }
}

/// Asks every master for its policy, sets the gauge and, when the answer changed since
/// the last check, says what to do. Never fails the sync: this is advice, not data.
pub(super) async fn check(store: &RedisStore, conns: &mut [MultiplexedConnection], addrs: &[String]) {
    let mut policies = Vec::with_capacity(conns.len());
    for (con, addr) in conns.iter_mut().zip(addrs) {
        let reply: redis::RedisResult<Value> =
            redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(con).await;
        let policy = match reply {
            Ok(v) => match policy_of(&v) {
                Some(p) => Policy::Known(p),
                None => Policy::Unknown(format!("unexpected reply {v:?}")),
            },
            Err(e) => Policy::Unknown(e.to_string()),
        };
        policies.push((addr.clone(), policy));
    }
    let value = gauge(&policies);
    store.metrics.evicting(value);
    let mut last = store.eviction_seen.lock().unwrap_or_else(|p| p.into_inner());
    if last.as_deref() == Some(policies.as_slice()) {
        return;
    }
    *last = Some(policies.clone());
    drop(last);
    for (addr, policy) in &policies {
        match policy {
            Policy::Known(p) if p == SAFE_POLICY => {
                tracing::info!(master = %addr, policy = %p, "Redis never evicts revocation keys")
            }
            Policy::Known(p) => tracing::warn!(
                master = %addr,
                policy = %p,
                "Redis may evict revocation keys under memory pressure, silently lifting revocations; \
                 set `maxmemory-policy noeviction` (hopauth_revocation_store_evicting is 1)"
            ),
            Policy::Unknown(error) => tracing::warn!(
                master = %addr,
                %error,
                "cannot read maxmemory-policy (CONFIG disabled or renamed?): whether Redis may evict revocation \
                 keys is unknown; make sure it is `noeviction` (hopauth_revocation_store_evicting is -1)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_from_either_protocol_and_summarised() {
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"maxmemory-policy".to_vec()),
            Value::BulkString(b"allkeys-lru".to_vec()),
        )]);
        let resp2 = Value::Array(vec![
            Value::BulkString(b"maxmemory-policy".to_vec()),
            Value::BulkString(b"noeviction".to_vec()),
        ]);
        assert_eq!(policy_of(&resp3).as_deref(), Some("allkeys-lru"));
        assert_eq!(policy_of(&resp2).as_deref(), Some("noeviction"));
        assert_eq!(policy_of(&Value::Array(vec![])), None);
        let known = |p: &str| ("m".to_string(), Policy::Known(p.to_string()));
        let unknown = ("m".to_string(), Policy::Unknown("ERR unknown command".into()));
        assert_eq!(gauge(&[known("noeviction"), known("noeviction")]), 0);
        assert_eq!(gauge(&[known("noeviction"), known("volatile-ttl")]), 1, "volatile-* evicts keys with a TTL");
        assert_eq!(gauge(&[unknown.clone(), known("noeviction")]), -1);
        assert_eq!(gauge(&[unknown, known("allkeys-lfu")]), 1);
    }
}
