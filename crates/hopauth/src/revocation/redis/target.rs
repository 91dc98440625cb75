//! Where the revocation data lives: one node (`redis://`, `rediss://`), a Sentinel-managed
//! master (`redis+sentinel://`), or a Cluster (`redis+cluster://`); and how to find the
//! masters to track.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisError};

use super::RedisStoreError;

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

fn node(host: &str, tls: bool, creds: Option<&str>) -> Result<ConnectionInfo, RedisError> {
    let scheme = if tls { "rediss" } else { "redis" };
    let url = match creds {
        Some(c) => format!("{scheme}://{c}@{host}"),
        None => format!("{scheme}://{host}"),
    };
    url.as_str().into_connection_info()
}

/// `node` for a host in the URL; the message names the host (never the credentials).
fn url_node(host: &str, tls: bool, creds: Option<&str>) -> Result<ConnectionInfo, String> {
    node(host, tls, creds).map_err(|e| format!("bad node {host:?}: {e}"))
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://").or_else(|| url.strip_prefix("rediss+sentinel://")) {
            let tls = url.starts_with("rediss");
            let (creds, hosts, path) = split_hosts(rest);
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let master_name = parts.next().ok_or("redis+sentinel:// needs /<master-name> after the hosts")?;
            let db: i64 = match parts.next() {
                Some(d) => d.parse().map_err(|_| format!("bad database number {d:?}"))?,
                None => 0,
            };
            if hosts.is_empty() {
                return Err("redis+sentinel:// needs at least one sentinel host:port".into());
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
                return Err("redis+cluster:// needs at least one seed host:port".into());
            }
            let seeds = hosts.iter().map(|h| url_node(h, tls, creds).map(resp3)).collect::<Result<Vec<_>, _>>()?;
            return Ok(RedisTarget::Cluster { seeds });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let info = url.into_connection_info().map_err(|e| e.to_string())?;
            return Ok(RedisTarget::Single(resp3(info)));
        }
        Err("use redis://, rediss://, redis+sentinel:// or redis+cluster://".into())
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }

    /// The current master(s): the node itself, the master a majority of the sentinels names
    /// (checked with ROLE so a demoted node is never read), or every master of the cluster.
    pub async fn masters(&self, timeout: Duration) -> Result<Vec<ConnectionInfo>, RedisStoreError> {
        match self {
            RedisTarget::Single(info) => Ok(vec![info.clone()]),
            RedisTarget::Sentinel { sentinels, master_name, settings, tls } => {
                // Every sentinel at once, so one that does not answer costs one timeout.
                let mut asks = tokio::task::JoinSet::new();
                for (i, s) in sentinels.iter().enumerate() {
                    let (s, name) = (s.clone(), master_name.clone());
                    asks.spawn(async move { (i, ask_sentinel(&s, &name, timeout).await) });
                }
                let mut answers: Vec<(usize, SentinelAnswer)> = Vec::with_capacity(sentinels.len());
                while let Some(joined) = asks.join_next().await {
                    answers.push(joined.map_err(RedisStoreError::Task)?);
                }
                // In URL order, so the error message reads the same way every time.
                answers.sort_by_key(|(i, _)| *i);
                let answers: Vec<_> = answers.into_iter().map(|(_, a)| a).collect();
                let (host, port) = quorum_master(sentinels.len(), &answers)?;
                let addr = addr_of(&host, port, *tls)?;
                let info = sentinels[0].clone().set_addr(addr).set_redis_settings(settings.clone());
                check_role_master(&info, timeout).await?;
                Ok(vec![info])
            }
            RedisTarget::Cluster { seeds } => {
                let mut last = RedisStoreError::NoMaster;
                for seed in seeds {
                    match cluster_masters(seed, timeout).await {
                        Ok(masters) if !masters.is_empty() => return Ok(masters),
                        Ok(_) => last = RedisStoreError::NoMaster,
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

/// What one sentinel says the master is.
type SentinelAnswer = Result<(String, u16), RedisStoreError>;

/// The master named by a majority (more than half) of the `configured` sentinels. A
/// sentinel that is partitioned away can still name a master that is no longer written
/// to; the majority is what Sentinel's own failover agreement rests on, so a minority's
/// answer is never taken, and without a majority there is no master (an error: the view
/// goes stale and `failure_mode` applies).
pub(super) fn quorum_master(configured: usize, answers: &[SentinelAnswer]) -> SentinelAnswer {
    let mut votes: Vec<(&(String, u16), usize)> = Vec::new();
    for addr in answers.iter().flatten() {
        match votes.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, n)) => *n += 1,
            None => votes.push((addr, 1)),
        }
    }
    if let Some((addr, _)) = votes.iter().find(|(_, n)| n * 2 > configured) {
        return Ok((*addr).clone());
    }
    let named: Vec<String> = votes.iter().map(|((h, p), n)| format!("{h}:{p} by {n}")).collect();
    // Several causes, one per sentinel: the message lists them all.
    let errors: Vec<String> = answers.iter().filter_map(|a| a.as_ref().err().map(ToString::to_string)).collect();
    Err(RedisStoreError::NoQuorum { configured, named: named.join(", "), errors: errors.join("; ") })
}

fn addr_of(host: &str, port: u16, tls: bool) -> Result<ConnectionAddr, RedisStoreError> {
    let addr = format!("{host}:{port}");
    match node(&addr, tls, None) {
        Ok(info) => Ok(info.addr().clone()),
        Err(source) => Err(RedisStoreError::BadAddress { addr, source }),
    }
}

pub(super) async fn connect_node(
    info: &ConnectionInfo,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, RedisStoreError> {
    let client = redis::Client::open(info.clone()).map_err(RedisStoreError::node(info.addr(), "client"))?;
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(RedisStoreError::node(info.addr(), "connect"))
}

async fn ask_sentinel(s: &ConnectionInfo, name: &str, timeout: Duration) -> Result<(String, u16), RedisStoreError> {
    let mut con = connect_node(s, timeout).await?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(&mut con)
        .await
        .map_err(RedisStoreError::node(s.addr(), "SENTINEL get-master-addr-by-name"))?;
    let sentinel = || s.addr().to_string();
    let (host, port) =
        addr.ok_or_else(|| RedisStoreError::UnknownMaster { sentinel: sentinel(), name: name.to_string() })?;
    match port.parse() {
        Ok(p) => Ok((host, p)),
        Err(_) => Err(RedisStoreError::BadPort { sentinel: sentinel(), port }),
    }
}

async fn check_role_master(info: &ConnectionInfo, timeout: Duration) -> Result<(), RedisStoreError> {
    let mut con = connect_node(info, timeout).await?;
    let role: Vec<redis::Value> =
        redis::cmd("ROLE").query_async(&mut con).await.map_err(RedisStoreError::node(info.addr(), "ROLE"))?;
    match role.first() {
        Some(redis::Value::BulkString(b)) if b == b"master" => Ok(()),
        Some(redis::Value::SimpleString(s)) if s == "master" => Ok(()),
        _ => Err(RedisStoreError::NotMaster(info.addr().to_string())),
    }
}

/// Slots in a Redis Cluster.
const CLUSTER_SLOTS: usize = 16384;

/// The healthy masters in `CLUSTER NODES` text as `host:port`, and how many slots they serve.
/// Public for the fuzz target (fuzz/fuzz_targets/cluster_nodes.rs) only.
pub fn parse_cluster_nodes(text: &str) -> (Vec<(String, u16)>, usize) {
    let mut masters = Vec::new();
    // Each slot counted once, whoever lists it and however often: a sum of range lengths
    // could reach CLUSTER_SLOTS while some slot has no healthy master.
    let mut served = vec![false; CLUSTER_SLOTS];
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        // `fail?` (suspected) and `fail` both disqualify: its data may be gone or stale.
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") || flags.contains("noaddr") {
            continue;
        }
        let hostport = addr.split('@').next().unwrap_or(addr);
        let Some((host, port)) = hostport.rsplit_once(':') else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        let host = if host.is_empty() { "127.0.0.1".to_string() } else { host.to_string() };
        for range in fields.iter().skip(8).filter(|r| !r.starts_with('[')) {
            // `a-b` or `a`; anything else (reversed, out of range, not a number) serves nothing.
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                if a <= b && b < CLUSTER_SLOTS {
                    served[a..=b].fill(true);
                }
            }
        }
        masters.push((host, port));
    }
    masters.sort();
    (masters, served.iter().filter(|s| **s).count())
}

/// The masters serving every slot; an error while any slot has no healthy master (a
/// failover in progress), so a shard is never silently left untracked.
pub(super) async fn cluster_master_set<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
) -> Result<Vec<(String, u16)>, RedisStoreError> {
    let text: String =
        redis::cmd("CLUSTER").arg("NODES").query_async(con).await.map_err(RedisStoreError::command("CLUSTER NODES"))?;
    let (masters, covered) = parse_cluster_nodes(&text);
    if covered < CLUSTER_SLOTS {
        return Err(RedisStoreError::SlotsUncovered { covered, total: CLUSTER_SLOTS });
    }
    Ok(masters)
}

async fn cluster_masters(seed: &ConnectionInfo, timeout: Duration) -> Result<Vec<ConnectionInfo>, RedisStoreError> {
    let mut con = connect_node(seed, timeout).await?;
    let tls = matches!(seed.addr(), ConnectionAddr::TcpTls { .. });
    let mut out = Vec::new();
    for (host, port) in cluster_master_set(&mut con).await? {
        out.push(seed.clone().set_addr(addr_of(&host, port, tls)?));
    }
    Ok(out)
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
        assert!(RedisTarget::parse("redis+sentinel://h:1").is_err(), "master name required");
        assert!(RedisTarget::parse("http://h").is_err());
    }

    #[test]
    fn cluster_nodes_count_each_valid_slot_once() {
        // Found by fuzz/fuzz_targets/cluster_nodes.rs: slots were summed per range, so two
        // masters listing the same half counted as every slot served while the other half
        // had no healthy master; a malformed range counted as one slot; and a range ending
        // at usize::MAX overflowed (a panic in debug builds).
        let same_half = "a h:7000 master - 0 0 1 connected 0-8191\nb h:7001 master - 0 0 2 connected 0-8191\n";
        assert_eq!(parse_cluster_nodes(same_half).1, 8192);
        let repeated = "a h:7000 master - 0 0 1 connected 0 0 0 1 0-1 connected\n";
        assert_eq!(parse_cluster_nodes(repeated).1, 2);
        let bogus = "a h:7000 master - 0 0 1 connected 9-3 x-y 100-20-200 16384 16000-16384 -5 5-\n";
        assert_eq!(parse_cluster_nodes(bogus).1, 0);
        let huge = "a h:7000 master - 0 0 1 connected 0-18446744073709551615 18446744073709551615\n";
        assert_eq!(parse_cluster_nodes(huge).1, 0);
        let whole = "a h:7000 master - 0 0 1 connected 0-16383\n";
        assert_eq!(parse_cluster_nodes(whole).1, CLUSTER_SLOTS);
    }

    #[test]
    fn the_sentinel_majority_names_the_master() {
        let addr = |p: u16| ("10.0.0.1".to_string(), p);
        let m = |p: u16| Ok(addr(p));
        let down = || Err(RedisStoreError::UnknownMaster { sentinel: "10.0.0.9:26379".into(), name: "m".into() });
        assert_eq!(quorum_master(1, &[m(1)]).unwrap(), addr(1));
        assert_eq!(quorum_master(3, &[m(9), m(1), m(1)]).unwrap(), addr(1), "a stale first sentinel is outvoted");
        assert_eq!(quorum_master(3, &[down(), m(1), m(1)]).unwrap(), addr(1), "two of three is a majority");
        let err = quorum_master(3, &[m(9), m(1), down()]).unwrap_err().to_string();
        assert!(err.contains("10.0.0.1:9 by 1") && err.contains("does not know master"), "{err}");
        assert!(quorum_master(3, &[down(), down(), m(1)]).is_err(), "one answer of three is a minority");
        assert!(quorum_master(2, &[m(1), m(2)]).is_err(), "a tie is no majority");
        assert!(quorum_master(4, &[m(1), m(1), down(), down()]).is_err(), "half is not more than half");
        assert!(quorum_master(0, &[]).is_err());
    }

    #[test]
    fn cluster_nodes_yield_healthy_masters_and_slot_coverage() {
        let text = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:7001@17001 master,fail - 0 0 2 connected 5461-10922\n\
                    c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383 [5000->-x]\n\
                    d 127.0.0.1:7003@17003 slave a 0 0 1 connected\n";
        let (masters, covered) = parse_cluster_nodes(text);
        assert_eq!(masters, vec![("127.0.0.1".to_string(), 7000), ("127.0.0.1".to_string(), 7002)]);
        assert_eq!(covered, 5461 + 5461);
        let promoted = text
            .replace("d 127.0.0.1:7003@17003 slave a", "d 127.0.0.1:7003@17003 master -")
            .replace("connected\n", "connected 5461-10922\n");
        assert_eq!(parse_cluster_nodes(&promoted).1, 16384);
    }
}
