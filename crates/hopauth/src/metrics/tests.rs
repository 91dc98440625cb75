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
