//! The Redis key layout every revocation writer and reader shares (docs/revocation.md):
//! `hopauth:revoked:jti:<jti>` = `1`, expiring with the token, and
//! `hopauth:revoked:sub:<iss>|<sub>` = the Unix second at or before which every token of
//! that subject is revoked, expiring after the longest token lifetime. Pure functions: the
//! sidecar's sync reads with them, the sidecar's admin API and the issuer write with them.

use std::time::Duration;

use super::{validate_jti, validate_subject, RevocationError};

/// Redis key prefix shared by every writer.
pub const KEY_PREFIX: &str = "hopauth:revoked:";

/// `hopauth:revoked:jti:<jti>`.
pub fn jti_key(jti: &str) -> String {
    format!("{KEY_PREFIX}jti:{jti}")
}

/// `hopauth:revoked:sub:<iss>|<sub>`.
pub fn subject_key(iss: &str, sub: &str) -> String {
    format!("{KEY_PREFIX}sub:{iss}|{sub}")
}

/// What a revocation key names.
#[derive(Debug, PartialEq, Eq)]
pub enum RevokedKey<'a> {
    Jti(&'a str),
    Subject { iss: &'a str, sub: &'a str },
}

pub fn parse_key(key: &str) -> Option<RevokedKey<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    if let Some(jti) = rest.strip_prefix("jti:") {
        return (!jti.is_empty()).then_some(RevokedKey::Jti(jti));
    }
    let (iss, sub) = rest.strip_prefix("sub:")?.split_once('|')?;
    (!iss.is_empty() && !sub.is_empty()).then_some(RevokedKey::Subject { iss, sub })
}

/// One revocation as Redis stores it: `SET key value EX ttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    pub key: String,
    pub value: i64,
    pub ttl_secs: i64,
}

/// The write that revokes token `jti` until its `exp`, checked first.
pub fn jti_write(jti: &str, exp: i64, now: i64) -> Result<KeyWrite, RevocationError> {
    validate_jti(jti, exp, now)?;
    Ok(KeyWrite { key: jti_key(jti), value: 1, ttl_secs: exp - now })
}

/// The write that revokes every token of `iss`/`sub` issued at or before `before`; kept for
/// `max_token_lifetime`, which no token outlives.
pub fn subject_write(
    iss: &str,
    sub: &str,
    before: i64,
    max_token_lifetime: Duration,
) -> Result<KeyWrite, RevocationError> {
    validate_subject(iss, sub)?;
    let ttl_secs = i64::try_from(max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
    Ok(KeyWrite { key: subject_key(iss, sub), value: before, ttl_secs })
}

/// Why a key under the prefix could not be read as docs/revocation.md lays it out; the
/// `reason` label of `hopauth_revocation_bad_keys_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKey {
    /// Not a string (a hash, a list…): a `jti` key still revokes, a subject key revokes
    /// every token of the subject.
    WrongType,
    /// A name that is not UTF-8 or not in the layout: no token can match it, so it is skipped.
    BadKey,
    /// A subject revocation whose value is not unix seconds: every token of the subject is
    /// refused.
    BadValue,
}

impl BadKey {
    /// Every label value, in `index` order, so the metric can be pre-registered at 0.
    pub const NAMES: [&'static str; 3] = ["wrong_type", "bad_key", "bad_value"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    pub fn index(self) -> usize {
        match self {
            BadKey::WrongType => 0,
            BadKey::BadKey => 1,
            BadKey::BadValue => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_round_trips() {
        assert_eq!(jti_key("abc"), "hopauth:revoked:jti:abc");
        assert_eq!(subject_key("https://i", "u1"), "hopauth:revoked:sub:https://i|u1");
        assert_eq!(parse_key(&jti_key("abc")), Some(RevokedKey::Jti("abc")));
        assert_eq!(
            parse_key(&subject_key("https://i", "u1")),
            Some(RevokedKey::Subject { iss: "https://i", sub: "u1" })
        );
        assert_eq!(parse_key("hopauth:revoked:jti:"), None);
        assert_eq!(parse_key("other:jti:x"), None);
    }

    #[test]
    fn writes_carry_the_layout_and_are_checked() {
        let w = jti_write("j1", 1_100, 1_000).unwrap();
        assert_eq!(w, KeyWrite { key: "hopauth:revoked:jti:j1".into(), value: 1, ttl_secs: 100 });
        assert!(jti_write("j1", 1_000, 1_000).is_err());
        let w = subject_write("https://i", "u", 900, Duration::from_secs(3600)).unwrap();
        assert_eq!(w, KeyWrite { key: "hopauth:revoked:sub:https://i|u".into(), value: 900, ttl_secs: 3600 });
        assert!(subject_write("a|b", "u", 900, Duration::from_secs(1)).is_err());
    }
}
