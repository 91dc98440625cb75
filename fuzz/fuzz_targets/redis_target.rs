//! `RedisTarget::parse` (the `revocation.redis_url` forms) and `config::redact_url` on
//! arbitrary text.
//!
//! Properties: never a panic; an accepted URL names at least one node (sentinels need a
//! master name); the debug form never shows the URL's password, nor does the redacted URL.
#![no_main]

use hopauth::config::redact_url;
use hopauth::revocation::redis::RedisTarget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else { return };
    if let Ok(target) = RedisTarget::parse(url) {
        match &target {
            RedisTarget::Single(_) => {}
            RedisTarget::Sentinel { sentinels, master_name, .. } => {
                assert!(!sentinels.is_empty());
                assert!(!master_name.is_empty() && !master_name.contains('/'));
            }
            RedisTarget::Cluster { seeds } => assert!(!seeds.is_empty()),
        }
        let shown = format!("{target:?}");
        if let Some(pw) = password(url) {
            assert!(!shown.contains(pw), "debug form {shown:?} shows the password");
        }
    }
    let redacted = redact_url(url);
    if let Some(pw) = password(url) {
        assert!(!redacted.contains(pw), "redacted {redacted:?} still shows the password");
    }
});

/// The password of `url` when it is long and odd enough that finding it elsewhere in the
/// output can only mean it leaked (a one-letter password matches any host name), and
/// written nowhere else in the URL.
fn password(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://")?.1;
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let creds = authority.rsplit_once('@')?.0;
    let pw = creds.split_once(':')?.1;
    (pw.len() >= 6
        && pw.bytes().all(|b| b.is_ascii_alphanumeric())
        && pw.bytes().any(|b| b.is_ascii_digit())
        && pw.bytes().any(|b| b.is_ascii_alphabetic())
        && url.matches(pw).count() == 1)
        .then_some(pw)
}
