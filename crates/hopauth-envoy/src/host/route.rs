//! Per-route policy of the `hopauth` filter: the route's `filter_config` is a JSON object
//! with the keys ext_authz reads from `context_extensions` (`hopauth.providers`,
//! `hopauth.require_scopes`, `hopauth.anonymous`), string values. Parsed once, when Envoy
//! builds the route config; anything else is refused with a message naming it. Built with
//! the `test-hooks` feature (this crate's tests only) it also takes [`TEST_PANIC_KEY`].
use std::sync::Arc;

use hopauth_core::policy::{RoutePolicy, ANONYMOUS_KEY, PROVIDERS_KEY, REQUIRE_SCOPES_KEY};

use crate::ffi::ConfigError;

/// The keys a per-route config may hold.
pub const KEYS: [&str; 3] = [PROVIDERS_KEY, REQUIRE_SCOPES_KEY, ANONYMOUS_KEY];

/// `test-hooks` builds only: set (to any string) on a route, the filter panics in its
/// request-headers hook there, so a test sees a panic of the real filter caught.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_KEY: &str = "hopauth.test_panic";

/// One route's settings, shared with the refetch task of a held request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSettings {
    providers: Option<String>,
    require_scopes: Option<String>,
    anonymous: Option<String>,
    /// [`TEST_PANIC_KEY`] was set.
    #[cfg(feature = "test-hooks")]
    pub(super) test_panic: bool,
}

/// What the per-route config pointer holds (see [`crate::ffi::RequestContext::route_config`]).
#[derive(Debug, Clone)]
pub struct RouteConfig(pub Arc<RouteSettings>);

impl RouteSettings {
    /// Parses the route's `filter_config` bytes.
    pub fn parse(config: &[u8]) -> Result<Self, ConfigError> {
        let refuse = |what: String| ConfigError::new(format!("hopauth per-route filter_config: {what}"));
        let value: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| refuse(format!("not valid JSON ({e})")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(refuse(format!("must be a JSON object with the keys {KEYS:?}")));
        };
        let mut settings = RouteSettings::default();
        for (key, value) in map {
            let slot = match key.as_str() {
                PROVIDERS_KEY => &mut settings.providers,
                REQUIRE_SCOPES_KEY => &mut settings.require_scopes,
                ANONYMOUS_KEY => &mut settings.anonymous,
                #[cfg(feature = "test-hooks")]
                TEST_PANIC_KEY => {
                    settings.test_panic = true;
                    continue;
                }
                other => return Err(refuse(format!("unknown key {other:?} (known: {KEYS:?})"))),
            };
            let serde_json::Value::String(text) = value else {
                return Err(refuse(format!("{key:?} must be a string")));
            };
            *slot = Some(text);
        }
        if let Some(a) = &settings.anonymous {
            if !matches!(a.trim().to_ascii_lowercase().as_str(), "allow" | "deny") {
                return Err(refuse(format!("{ANONYMOUS_KEY:?} must be \"allow\" or \"deny\", got {a:?}")));
            }
        }
        Ok(settings)
    }

    /// The policy view the decision core reads, exactly as ext_authz builds it.
    pub fn policy(&self) -> RoutePolicy<'_> {
        RoutePolicy::from_extensions(|k| match k {
            PROVIDERS_KEY => self.providers.as_deref(),
            REQUIRE_SCOPES_KEY => self.require_scopes.as_deref(),
            ANONYMOUS_KEY => self.anonymous.as_deref(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_keys_like_context_extensions() {
        let s = RouteSettings::parse(
            br#"{"hopauth.anonymous": "allow", "hopauth.providers": "main", "hopauth.require_scopes": "a b"}"#,
        )
        .unwrap();
        let p = s.policy();
        assert!(p.anonymous);
        assert!(p.allows_provider("main") && !p.allows_provider("other"));
        assert_eq!(p.missing_scope(&["a"]), Some("a b"));
        assert_eq!(RouteSettings::parse(b"{}").unwrap().policy(), RoutePolicy::default());
    }

    #[test]
    fn refuses_what_is_not_the_contract_with_a_message_naming_it() {
        let msg = |b: &[u8]| RouteSettings::parse(b).unwrap_err().message;
        assert!(msg(b"{nope").contains("not valid JSON"), "{}", msg(b"{nope"));
        assert!(msg(b"[1]").contains("must be a JSON object"));
        assert!(msg(br#"{"hopauth.anonymus": "allow"}"#).contains("unknown key \"hopauth.anonymus\""));
        assert!(msg(br#"{"hopauth.anonymous": true}"#).contains("\"hopauth.anonymous\" must be a string"));
        assert!(msg(br#"{"hopauth.anonymous": "yes"}"#).contains("must be \"allow\" or \"deny\""));
    }
}
