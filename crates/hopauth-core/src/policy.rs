//! Per-route requirements, read from Envoy's `check_settings.context_extensions`.

/// Comma list of provider names accepted on the route.
pub const PROVIDERS_KEY: &str = "hopauth.providers";
/// Space list of scopes, all required.
pub const REQUIRE_SCOPES_KEY: &str = "hopauth.require_scopes";
/// `"allow"`: a request without a token passes, without identity.
pub const ANONYMOUS_KEY: &str = "hopauth.anonymous";

/// Borrowed view of a route's policy; building it allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutePolicy<'a> {
    providers: Option<&'a str>,
    require_scopes: Option<&'a str>,
    pub anonymous: bool,
}

impl<'a> RoutePolicy<'a> {
    /// `get` looks a context extension up by key.
    pub fn from_extensions(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        RoutePolicy {
            providers: get(PROVIDERS_KEY).filter(|s| !s.trim().is_empty()),
            require_scopes: get(REQUIRE_SCOPES_KEY).filter(|s| !s.trim().is_empty()),
            anonymous: get(ANONYMOUS_KEY).is_some_and(|v| v.trim().eq_ignore_ascii_case("allow")),
        }
    }

    /// Whether a token from provider `name` is accepted here (no list: every provider).
    pub fn allows_provider(&self, name: &str) -> bool {
        match self.providers {
            None => true,
            Some(list) => list.split(',').any(|p| p.trim() == name),
        }
    }

    /// The first required scope the token lacks, if any; with the full requirement for the
    /// client's `scope="…"`.
    pub fn missing_scope<S: AsRef<str>>(&self, have: &[S]) -> Option<&'a str> {
        let required = self.require_scopes?;
        required
            .split_ascii_whitespace()
            .any(|want| !have.iter().any(|h| h.as_ref() == want))
            .then_some(required.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn policy(pairs: &[(&str, &str)]) -> (HashMap<String, String>, ()) {
        (pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ())
    }

    #[test]
    fn reads_every_key() {
        let (ext, _) = policy(&[
            (PROVIDERS_KEY, "main, partner"),
            (REQUIRE_SCOPES_KEY, "orders:read  orders:write"),
            (ANONYMOUS_KEY, "allow"),
        ]);
        let p = RoutePolicy::from_extensions(|k| ext.get(k).map(String::as_str));
        assert!(p.anonymous);
        assert!(p.allows_provider("main") && p.allows_provider("partner"));
        assert!(!p.allows_provider("mai"));
        assert_eq!(p.missing_scope(&["orders:read", "orders:write"]), None);
        assert_eq!(p.missing_scope(&["orders:read"]), Some("orders:read  orders:write"));
        assert_eq!(p.missing_scope::<&str>(&[]), Some("orders:read  orders:write"));
    }

    #[test]
    fn empty_policy_allows_every_provider_and_needs_no_scope() {
        let p = RoutePolicy::from_extensions(|_| None);
        assert!(!p.anonymous);
        assert!(p.allows_provider("anything"));
        assert_eq!(p.missing_scope::<&str>(&[]), None);
        let (ext, _) = policy(&[(ANONYMOUS_KEY, "deny")]);
        assert!(!RoutePolicy::from_extensions(|k| ext.get(k).map(String::as_str)).anonymous);
    }
}
