//! What a `revocation.redis_url` may say: one node (`redis://`, `rediss://`), a
//! Sentinel-managed master (`redis+sentinel://`), or a Cluster (`redis+cluster://`),
//! parsed into connection settings without connecting. The config checks a URL with this
//! alone; finding the masters is the Redis backend's (`revocation::redis`).

use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisError};

/// A parsed `revocation.redis_url`.
#[derive(Clone)]
pub enum RedisTarget {
    Single(ConnectionInfo),
    /// `redis+sentinel://[user:pass@]host:port[,host:port…]/<master-name>[/<db>]`; the
    /// credentials are the master's; sentinels are reached without them.
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master_name: String,
        settings: RedisConnectionInfo,
        tls: bool,
    },
    /// `redis+cluster://[user:pass@]host:port[,host:port…]`: seed nodes.
    Cluster {
        seeds: Vec<ConnectionInfo>,
    },
}

/// Why a URL is not a usable `redis_url`. The messages never show credentials.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    #[error("use redis://, rediss://, redis+sentinel:// or redis+cluster://")]
    Scheme,
    #[error("redis+sentinel:// needs /<master-name> after the hosts")]
    NoMasterName,
    #[error("bad database number {0:?}")]
    Database(String),
    #[error("redis+sentinel:// needs at least one sentinel host:port")]
    NoSentinel,
    #[error("redis+cluster:// needs at least one seed host:port")]
    NoSeed,
    /// One host of a sentinel or cluster URL.
    #[error("bad node {host:?}: {source}")]
    Node {
        host: String,
        #[source]
        source: RedisError,
    },
    /// A one-node URL the client refuses.
    #[error("{0}")]
    Single(#[source] RedisError),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(i) => write!(f, "Single({})", i.addr()),
            RedisTarget::Sentinel { master_name, sentinels, .. } => {
                write!(f, "Sentinel({master_name} via {} sentinels)", sentinels.len())
            }
            RedisTarget::Cluster { seeds } => write!(f, "Cluster({} seeds)", seeds.len()),
        }
    }
}

fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// Parses `user:pass@h1:p1,h2:p2` into credentials and host list.
fn split_hosts(rest: &str) -> (Option<&str>, Vec<&str>, &str) {
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (creds, hosts) = authority.rsplit_once('@').map_or((None, authority), |(c, h)| (Some(c), h));
    (creds, hosts.split(',').filter(|h| !h.is_empty()).collect(), path)
}

/// The connection settings of `host` (`host:port`), with TLS and the credentials if given.
pub(crate) fn node(host: &str, tls: bool, creds: Option<&str>) -> Result<ConnectionInfo, RedisError> {
    let scheme = if tls { "rediss" } else { "redis" };
    let url = match creds {
        Some(c) => format!("{scheme}://{c}@{host}"),
        None => format!("{scheme}://{host}"),
    };
    url.as_str().into_connection_info()
}

/// `node` for a host in the URL; the error names the host (never the credentials).
fn url_node(host: &str, tls: bool, creds: Option<&str>) -> Result<ConnectionInfo, RedisUrlError> {
    node(host, tls, creds).map_err(|source| RedisUrlError::Node { host: host.to_string(), source })
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, RedisUrlError> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://").or_else(|| url.strip_prefix("rediss+sentinel://")) {
            let tls = url.starts_with("rediss");
            let (creds, hosts, path) = split_hosts(rest);
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let master_name = parts.next().ok_or(RedisUrlError::NoMasterName)?;
            let db: i64 = match parts.next() {
                Some(d) => d.parse().map_err(|_| RedisUrlError::Database(d.to_string()))?,
                None => 0,
            };
            if hosts.is_empty() {
                return Err(RedisUrlError::NoSentinel);
            }
            let sentinels = hosts.iter().map(|h| url_node(h, tls, None).map(resp3)).collect::<Result<Vec<_>, _>>()?;
            let with_creds = url_node(hosts[0], tls, creds)?;
            let settings = with_creds.redis_settings().clone().set_db(db).set_protocol(ProtocolVersion::RESP3);
            return Ok(RedisTarget::Sentinel { sentinels, master_name: master_name.to_string(), settings, tls });
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://").or_else(|| url.strip_prefix("rediss+cluster://")) {
            let tls = url.starts_with("rediss");
            let (creds, hosts, _) = split_hosts(rest);
            if hosts.is_empty() {
                return Err(RedisUrlError::NoSeed);
            }
            let seeds = hosts.iter().map(|h| url_node(h, tls, creds).map(resp3)).collect::<Result<Vec<_>, _>>()?;
            return Ok(RedisTarget::Cluster { seeds });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let info = url.into_connection_info().map_err(RedisUrlError::Single)?;
            return Ok(RedisTarget::Single(resp3(info)));
        }
        Err(RedisUrlError::Scheme)
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_topology() {
        assert!(matches!(RedisTarget::parse("redis://127.0.0.1:6379/0"), Ok(RedisTarget::Single(_))));
        assert!(matches!(RedisTarget::parse("rediss://h:6380"), Ok(RedisTarget::Single(_))));
        match RedisTarget::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2").unwrap() {
            RedisTarget::Sentinel { sentinels, master_name, settings, .. } => {
                assert_eq!(sentinels.len(), 2);
                assert_eq!(master_name, "mymaster");
                assert_eq!(settings.db(), 2);
            }
            other => panic!("{other:?}"),
        }
        match RedisTarget::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap() {
            RedisTarget::Cluster { seeds } => assert_eq!(seeds.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(RedisTarget::parse("redis+sentinel://h:1"), Err(RedisUrlError::NoMasterName)));
        assert!(matches!(RedisTarget::parse("http://h"), Err(RedisUrlError::Scheme)));
        assert!(matches!(RedisTarget::parse("redis+sentinel://h:1/m/x"), Err(RedisUrlError::Database(_))));
    }

    #[test]
    fn a_bad_node_is_named_and_keeps_the_client_error() {
        let err = RedisTarget::parse("redis+cluster://:s3cr3tpw@h:notaport").unwrap_err();
        assert!(std::error::Error::source(&err).is_some(), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("bad node \"h:notaport\""), "{text}");
        assert!(!text.contains("s3cr3tpw"), "{text}");
    }
}
