//! The Redis layout of revocations (docs/revocation.md), shared by every writer and by the
//! Redis view: `hopauth:revoked:jti:<jti>` and `hopauth:revoked:sub:<iss>|<sub>`. Names
//! only; no Redis client.

/// Redis key prefix shared by every writer (see docs/revocation.md).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_round_trips() {
        assert_eq!(jti_key("abc"), "hopauth:revoked:jti:abc");
        assert_eq!(subject_key("https://i", "alice"), "hopauth:revoked:sub:https://i|alice");
        assert_eq!(parse_key(&jti_key("abc")), Some(RevokedKey::Jti("abc")));
        assert_eq!(
            parse_key(&subject_key("https://i", "a|b")),
            Some(RevokedKey::Subject { iss: "https://i", sub: "a|b" })
        );
        assert_eq!(parse_key("hopauth:revoked:jti:"), None);
        assert_eq!(parse_key("other:key"), None);
    }
}
