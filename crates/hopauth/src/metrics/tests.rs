//! The exposition carries every series, pre-registered.

use std::time::Duration;

use super::*;

#[test]
fn decisions_show_up_in_text_output() {
    let m = Metrics::standalone();
    m.checks().allowed(false, Duration::from_micros(3));
    m.checks().denied(&DenyReason::Revoked, Duration::from_micros(3));
    let text = m.render();
    assert!(text.contains(r#"hopauth_checks_total{decision="allow",reason="verified"} 1"#), "{text}");
    assert!(text.contains(r#"hopauth_checks_total{decision="deny",reason="revoked"} 1"#), "{text}");
    assert!(text.contains("hopauth_revocations_enforced_total 1"), "{text}");
    assert!(text.contains("hopauth_check_duration_seconds_bucket"), "{text}");
    for reason in BadKey::NAMES {
        let series = format!("hopauth_revocation_bad_keys_total{{reason=\"{reason}\"}} 0");
        assert!(text.contains(&series), "{series} is not pre-registered: {text}");
    }
    for name in ["hopauth_revocation_store_connected", "hopauth_revocation_store_evicting"] {
        assert!(text.contains(name), "{name} missing");
    }
    for name in ["hopauth_verify_cache_hits_total", "hopauth_verify_cache_misses_total", "hopauth_revocation_store_up"]
    {
        assert!(text.contains(name), "{name} missing");
    }
}

#[test]
fn a_reload_keeps_the_key_age_a_provider_already_has() {
    let m = Metrics::standalone();
    let age = |m: &Metrics, p: &str| {
        let series = format!("hopauth_jwks_key_age_seconds{{provider=\"{p}\"}} ");
        let text = m.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("{text}"))
    };
    let first = m.jwks("main");
    assert_eq!(age(&m, "main"), "-1", "never fetched");
    first.key_age(Some(Duration::from_secs(30)));
    // What a reload does for a provider it keeps, and for one it adds.
    let _again = m.jwks("main");
    let _added = m.jwks("partner");
    assert_eq!(age(&m, "main"), "30", "the measured age stays until the new core measures");
    assert_eq!(age(&m, "partner"), "-1");
}
