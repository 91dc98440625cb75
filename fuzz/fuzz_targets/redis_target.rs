//! `RedisTarget::parse` (the `revocation.redis_url` forms) and `config::redact_url` on
//! arbitrary text.
//!
//! Properties: never a panic; an accepted URL names at least one node (sentinels need a
//! master name); the redacted URL never shows a password the URL parser sees, and for a
//! URL hopauth accepts neither it nor the debug form shows the password hopauth uses.
#![no_main]

use hopauth::config::redact_url;
use hopauth::revocation::redis::RedisTarget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else { return };
    let redacted = redact_url(url);
    // A password the URL parser sees is never printed. Judged on the parser's own
    // serialization: it drops tabs and newlines, so `s3c\rretpw` in a path becomes the
    // password's text without being the password.
    if let Ok(u) = url::Url::parse(url) {
        if let Some(pw) = u.password().filter(|pw| odd(u.as_str(), pw)) {
            assert!(!redacted.contains(pw), "redacted {redacted:?} still shows the password");
        }
    }
    let Ok(target) = RedisTarget::parse(url) else { return };
    match &target {
        RedisTarget::Single(_) => {}
        RedisTarget::Sentinel { sentinels, master_name, .. } => {
            assert!(!sentinels.is_empty());
            assert!(!master_name.is_empty() && !master_name.contains('/'));
        }
        RedisTarget::Cluster { seeds } => assert!(!seeds.is_empty()),
    }
    // A URL hopauth accepts and would log: its password (as hopauth splits it) never shows.
    // Not judged when the parser's serialization (what the redactor prints) holds the
    // password's text twice: percent-encoding can make it, e.g. a NUL before `3cvetpwpw`
    // in the query prints `%003cvetpwpw`, which contains the password `03cvetpwpw`.
    let once_serialized = |pw: &str| url::Url::parse(url).map_or(true, |u| u.as_str().matches(pw).count() == 1);
    if let Some(pw) =
        password(url).filter(|pw| odd(url, pw) && !url.contains(['\t', '\n', '\r']) && once_serialized(pw))
    {
        let shown = format!("{target:?}");
        assert!(!shown.contains(pw), "debug form {shown:?} shows the password");
        assert!(!redacted.contains(pw), "redacted {redacted:?} still shows the password");
    }
});

/// The password in `scheme://user:password@host…`, split as RedisTarget does.
fn password(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://")?.1;
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let creds = authority.rsplit_once('@')?.0;
    Some(creds.split_once(':')?.1)
}

/// Long and odd enough that finding it elsewhere in the output can only mean it leaked (a
/// one-letter password matches any host name), and written nowhere else in the URL.
fn odd(url: &str, pw: &str) -> bool {
    pw.len() >= 6
        && pw.bytes().all(|b| b.is_ascii_alphanumeric())
        && pw.bytes().any(|b| b.is_ascii_digit())
        && pw.bytes().any(|b| b.is_ascii_alphabetic())
        && url.matches(pw).count() == 1
}
