//! Reading revocation keys into the local view: GET and PTTL per key, each applied as the
//! layout says, and what does not follow the layout counted (the `reason` label of
//! `hopauth_revocation_bad_keys_total`) and logged at most once per ten seconds. Everything
//! that names a revocation fails closed.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;

use super::RedisStore;
use hopauth_core::clock::unix_now;
use hopauth_core::revocation::layout::{parse_key, BadKey, RevokedKey};
use hopauth_core::revocation::LocalView;

/// What GET said about a key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Read<'a> {
    Absent,
    Value(&'a [u8]),
    /// The key exists but holds something other than a string.
    WrongType,
}

/// Applies one key's current state (from GET and PTTL) to `view`; returns what was wrong
/// with it, if anything. A `jti` key revokes whatever it holds; a subject key that is not a
/// string is skipped; a subject string that is not a time fails closed.
pub(super) fn apply(view: &LocalView, key: &[u8], read: Read<'_>, pttl_ms: i64, now: i64) -> Option<BadKey> {
    let Some(parsed) = std::str::from_utf8(key).ok().and_then(parse_key) else { return Some(BadKey::BadKey) };
    let value = match read {
        Read::Absent => {
            match parsed {
                RevokedKey::Jti(jti) => view.remove_jti(jti),
                RevokedKey::Subject { iss, sub } => view.remove_subject(iss, sub),
            };
            return None;
        }
        Read::Value(v) => Some(v),
        Read::WrongType => None,
    };
    // No TTL (-1): the writer forgot EX; keep the entry as long as anything could use it.
    let until = if pttl_ms >= 0 { now + (pttl_ms + 999) / 1000 } else { i64::MAX / 2 };
    match parsed {
        // Existence alone revokes: whatever the value (or type), the token is refused.
        RevokedKey::Jti(jti) => {
            view.insert_jti(jti, until, now);
            value.is_none().then_some(BadKey::WrongType)
        }
        RevokedKey::Subject { iss, sub } => {
            // A subject key that is not a string is counted and skipped (the contract): it
            // holds no revocation time, and the view keeps what it had for that subject.
            let Some(value) = value else { return Some(BadKey::WrongType) };
            let before = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<i64>().ok());
            // A string that is not a time fails closed: every token of the subject is refused.
            view.insert_subject(iss, sub, before.unwrap_or(i64::MAX / 2), until, now);
            before.is_none().then_some(BadKey::BadValue)
        }
    }
}

/// At most one log line about bad keys per this long; the metric counts every one.
const BAD_KEY_LOG_EVERY: Duration = Duration::from_secs(10);

/// The rate limit of the bad-key log line.
#[derive(Default)]
pub(super) struct BadKeyLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RedisStore {
    /// Counts a key that could not be read as the layout says, and says so in the log at
    /// most once per [`BAD_KEY_LOG_EVERY`].
    pub(super) fn record_bad_key(&self, reason: BadKey, key: &[u8]) {
        self.metrics.bad_key(reason);
        let mut log = self.bad_key_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.last.is_some_and(|t| t.elapsed() < BAD_KEY_LOG_EVERY) {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(Instant::now());
        drop(log);
        // Escaped and cut short: the name is someone else's data.
        let shown: String = key.escape_ascii().to_string().chars().take(160).collect();
        tracing::warn!(
            key = %shown,
            reason = reason.as_str(),
            suppressed,
            "revocation key does not follow the layout; counted in hopauth_revocation_bad_keys_total \
             (wrong_type and bad_value fail closed, bad_key names no token and is skipped)"
        );
    }
}

/// GET and PTTL for `keys` in one round trip, applied to `view`. Each command answers on
/// its own, so one bad key cannot fail the others; only a failure that is not about the
/// data (connection, permissions) fails the batch.
pub(super) async fn load_keys<C: ConnectionLike + Send>(
    store: &RedisStore,
    con: &mut C,
    keys: &[Vec<u8>],
    view: &LocalView,
) -> redis::RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for k in keys {
        pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
    }
    let values: Vec<redis::Value> = pipe.query_async(con).await?;
    if values.len() != keys.len() * 2 {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "pipeline answered the wrong number of replies",
        )));
    }
    let now = unix_now();
    for (k, pair) in keys.iter().zip(values.chunks(2)) {
        let read = match &pair[0] {
            redis::Value::Nil => Read::Absent,
            redis::Value::BulkString(b) => Read::Value(b),
            redis::Value::SimpleString(s) => Read::Value(s.as_bytes()),
            redis::Value::ServerError(e) if e.code() == "WRONGTYPE" => Read::WrongType,
            redis::Value::ServerError(e) => return Err(e.clone().into()),
            _ => Read::WrongType,
        };
        let pttl = match &pair[1] {
            redis::Value::Int(n) => *n,
            redis::Value::ServerError(e) => return Err(e.clone().into()),
            _ => -2,
        };
        if let Some(reason) = apply(view, k, read, pttl, now) {
            store.record_bad_key(reason, k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopauth_core::revocation::layout::{jti_key, subject_key};
    use hopauth_core::revocation::{RevocationStatus, TokenIdentity};

    #[test]
    fn applied_values_follow_redis() {
        let view = LocalView::new();
        let id = TokenIdentity { iss: "https://i", sub: Some("alice"), jti: Some("j"), iat: Some(100) };
        let jti = jti_key("j").into_bytes();
        let subject = subject_key("https://i", "alice").into_bytes();
        assert_eq!(apply(&view, &jti, Read::Value(b"1"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        assert_eq!(apply(&view, &jti, Read::Absent, -2, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::NotRevoked);
        assert_eq!(apply(&view, &subject, Read::Value(b"150"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        assert_eq!(apply(&view, &subject, Read::Value(b"50"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked, "the widest revocation is kept");
    }

    #[test]
    fn unreadable_keys_fail_closed_or_are_skipped() {
        let id = TokenIdentity { iss: "https://i", sub: Some("alice"), jti: Some("j"), iat: Some(100) };
        let jti = jti_key("j").into_bytes();
        let subject = subject_key("https://i", "alice").into_bytes();
        // A jti value that is not UTF-8 still revokes (it used to read as "absent").
        let view = LocalView::new();
        assert_eq!(apply(&view, &jti, Read::Value(b"\xff\xfe"), 60_000, 1000), None);
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        let view = LocalView::new();
        assert_eq!(apply(&view, &jti, Read::WrongType, 60_000, 1000), Some(BadKey::WrongType));
        assert_eq!(view.check(&id, 1000), RevocationStatus::Revoked);
        // A subject key that is not a string is counted and skipped, leaving the view as it was.
        let view = LocalView::new();
        assert_eq!(apply(&view, &subject, Read::WrongType, 60_000, 1000), Some(BadKey::WrongType));
        assert_eq!(view.check(&TokenIdentity { iat: Some(i64::MAX / 4), ..id }, 1000), RevocationStatus::NotRevoked);
        assert_eq!(apply(&view, &subject, Read::Value(b"2000"), 60_000, 1000), None);
        assert_eq!(apply(&view, &subject, Read::WrongType, 60_000, 1000), Some(BadKey::WrongType));
        assert_eq!(view.check(&TokenIdentity { iat: Some(1500), ..id }, 1000), RevocationStatus::Revoked);
        for (read, reason) in [(Read::Value(b"\xff"), BadKey::BadValue), (Read::Value(b"soon"), BadKey::BadValue)] {
            let view = LocalView::new();
            assert_eq!(apply(&view, &subject, read, 60_000, 1000), Some(reason));
            assert_eq!(view.check(&TokenIdentity { iat: Some(i64::MAX / 4), ..id }, 1000), RevocationStatus::Revoked);
        }
        let view = LocalView::new();
        for key in [&b"hopauth:revoked:jti:\xff"[..], b"hopauth:revoked:other:x", b"hopauth:revoked:jti:"] {
            assert_eq!(apply(&view, key, Read::Value(b"1"), 60_000, 1000), Some(BadKey::BadKey));
        }
        assert!(view.is_empty());
        for k in [BadKey::WrongType, BadKey::BadKey, BadKey::BadValue] {
            assert_eq!(BadKey::NAMES[k.index()], k.as_str());
        }
    }
}
