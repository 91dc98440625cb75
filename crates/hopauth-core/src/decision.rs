//! What hopauth answers: `Decision::Allow` with the verified identity, or `Decision::Deny`
//! with a reason. Pure values, no wire types: each host renders them its own way.

use std::sync::Arc;

use crate::keys::KeyBinding;

/// `T` is the host's rendered allow kept with a verified token (see `render`).
#[derive(Debug, Clone)]
pub enum Decision<T = ()> {
    Allow(Allowed<T>),
    Deny(DenyReason),
}

#[derive(Debug, Clone)]
pub enum Allowed<T = ()> {
    /// A token was verified; its identity goes upstream.
    Verified(Arc<VerifiedToken<T>>),
    /// No token, on a route with `hopauth.anonymous: allow`.
    Anonymous,
}

/// A token whose signature and claims passed; shared by every request that presents it.
/// Kept compact (names shared with the provider, boxed slices): the cache holds many.
#[derive(Debug)]
pub struct VerifiedToken<T = ()> {
    pub provider: Arc<str>,
    pub iss: Arc<str>,
    pub sub: Option<Box<str>>,
    pub jti: Option<Box<str>>,
    pub iat: Option<i64>,
    pub exp: i64,
    pub leeway_secs: i64,
    pub scopes: Box<[Box<str>]>,
    /// The key that verified the signature: a cache hit is refused once that key leaves the
    /// provider's JWKS, and answered 503 once the provider's keys are past `max_stale`.
    pub key: KeyBinding,
    /// The host's answer that allows this token (for the sidecar the encoded CheckResponse
    /// with identity headers and claims metadata), rendered once when it was verified, so a
    /// cache hit answers without building or encoding anything.
    pub rendered: T,
}

/// The HTTP family a deny renders as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 401, RFC 6750 `invalid_token` or no error code.
    Unauthorized,
    /// 403, RFC 6750 `insufficient_scope`.
    Forbidden,
    /// 503: a dependency (keys, revocation store) is not usable.
    Unavailable,
    /// 400, RFC 6750 `invalid_request`: the CheckRequest itself could not be read.
    BadRequest,
}

/// Why a request was refused. `as_str` is the stable name used in metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    MissingToken,
    MultipleTokens,
    TokenTooLarge,
    Malformed,
    AlgNotAllowed,
    EmbeddedKey,
    UnknownCrit,
    Unsupported,
    InvalidClaim,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    MissingExp,
    Expired,
    NotYetValid,
    BadAudience,
    ProviderNotAllowed,
    Revoked,
    /// Carries the space-separated scopes the route requires.
    InsufficientScope(String),
    KeysUnavailable,
    RevocationUnavailable,
    /// The Check waited longer than `max_queue_delay` and would need a full verification.
    Overloaded,
    /// The token's header or claims nest deeper than `jws::MAX_JSON_DEPTH`.
    NestingTooDeep,
    /// A credential in another scheme (e.g. `Basic`) where the bearer token is looked for:
    /// hopauth cannot verify it, so it never passes, not even on an anonymous route.
    OtherScheme,
    /// The CheckRequest was not valid protobuf (answered 400 inside a normal CheckResponse).
    MalformedRequest,
    /// The JOSE `typ` is not the provider's required `typ`.
    BadTokenType,
    /// `iat` is further in the past than the provider's `max_token_age`.
    TokenTooOld,
    /// The provider sets `max_token_age` and the token has no `iat`.
    MissingIat,
}

impl DenyReason {
    /// Every reason, for pre-registering metric series.
    pub const NAMES: [&'static str; 28] = [
        "missing_token",
        "multiple_tokens",
        "token_too_large",
        "malformed_token",
        "alg_not_allowed",
        "embedded_key",
        "unknown_crit",
        "unsupported_token",
        "invalid_claim",
        "unknown_issuer",
        "unknown_key",
        "bad_signature",
        "missing_exp",
        "expired",
        "not_yet_valid",
        "bad_audience",
        "provider_not_allowed",
        "revoked",
        "insufficient_scope",
        "keys_unavailable",
        "revocation_unavailable",
        "overloaded",
        "nesting_too_deep",
        "other_scheme",
        "malformed_request",
        "bad_token_type",
        "token_too_old",
        "missing_iat",
    ];

    /// Index into `NAMES`.
    pub fn index(&self) -> usize {
        match self {
            DenyReason::MissingToken => 0,
            DenyReason::MultipleTokens => 1,
            DenyReason::TokenTooLarge => 2,
            DenyReason::Malformed => 3,
            DenyReason::AlgNotAllowed => 4,
            DenyReason::EmbeddedKey => 5,
            DenyReason::UnknownCrit => 6,
            DenyReason::Unsupported => 7,
            DenyReason::InvalidClaim => 8,
            DenyReason::UnknownIssuer => 9,
            DenyReason::UnknownKey => 10,
            DenyReason::BadSignature => 11,
            DenyReason::MissingExp => 12,
            DenyReason::Expired => 13,
            DenyReason::NotYetValid => 14,
            DenyReason::BadAudience => 15,
            DenyReason::ProviderNotAllowed => 16,
            DenyReason::Revoked => 17,
            DenyReason::InsufficientScope(_) => 18,
            DenyReason::KeysUnavailable => 19,
            DenyReason::RevocationUnavailable => 20,
            DenyReason::Overloaded => 21,
            DenyReason::NestingTooDeep => 22,
            DenyReason::OtherScheme => 23,
            DenyReason::MalformedRequest => 24,
            DenyReason::BadTokenType => 25,
            DenyReason::TokenTooOld => 26,
            DenyReason::MissingIat => 27,
        }
    }

    pub fn as_str(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    pub fn status(&self) -> DenyStatus {
        match self {
            DenyReason::InsufficientScope(_) => DenyStatus::Forbidden,
            DenyReason::KeysUnavailable | DenyReason::RevocationUnavailable | DenyReason::Overloaded => {
                DenyStatus::Unavailable
            }
            DenyReason::MalformedRequest => DenyStatus::BadRequest,
            _ => DenyStatus::Unauthorized,
        }
    }

    /// Short text for the client's `error_description`: standard, no internals.
    pub fn description(&self) -> &'static str {
        match self {
            DenyReason::MissingToken => "no bearer token in the request",
            DenyReason::MultipleTokens => "more than one token in the request",
            DenyReason::TokenTooLarge => "token is too large",
            DenyReason::Malformed => "token is malformed",
            DenyReason::AlgNotAllowed => "token algorithm is not allowed",
            DenyReason::EmbeddedKey => "token header carries a key",
            DenyReason::UnknownCrit => "token has an unsupported critical header",
            DenyReason::Unsupported => "token type is not supported",
            DenyReason::InvalidClaim => "token has an invalid claim",
            DenyReason::UnknownIssuer => "token issuer is not trusted",
            DenyReason::UnknownKey => "token signing key is unknown",
            DenyReason::BadSignature => "token signature is invalid",
            DenyReason::MissingExp => "token has no expiry",
            DenyReason::Expired => "token has expired",
            DenyReason::NotYetValid => "token is not yet valid",
            DenyReason::BadAudience => "token audience is not accepted",
            DenyReason::ProviderNotAllowed => "token issuer is not accepted on this route",
            DenyReason::Revoked => "token has been revoked",
            DenyReason::InsufficientScope(_) => "token lacks a required scope",
            DenyReason::KeysUnavailable => "signing keys are temporarily unavailable",
            DenyReason::RevocationUnavailable => "revocation status is temporarily unavailable",
            DenyReason::Overloaded => "the authorization service is overloaded",
            DenyReason::NestingTooDeep => "token claims are nested too deeply",
            DenyReason::OtherScheme => "credentials use a scheme other than Bearer",
            DenyReason::MalformedRequest => "the authorization request could not be read",
            DenyReason::BadTokenType => "token type (typ) is not accepted",
            DenyReason::TokenTooOld => "token was issued too long ago",
            DenyReason::MissingIat => "token has no issue time (iat)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexed() {
        let mut seen = std::collections::HashSet::new();
        for n in DenyReason::NAMES {
            assert!(seen.insert(n), "{n}");
        }
        assert_eq!(DenyReason::Revoked.as_str(), "revoked");
        assert_eq!(DenyReason::InsufficientScope("a".into()).as_str(), "insufficient_scope");
        assert_eq!(DenyReason::RevocationUnavailable.as_str(), "revocation_unavailable");
        assert_eq!(DenyReason::InsufficientScope("a".into()).status(), DenyStatus::Forbidden);
        assert_eq!(DenyReason::KeysUnavailable.status(), DenyStatus::Unavailable);
        assert_eq!(DenyReason::Overloaded.status(), DenyStatus::Unavailable);
        assert_eq!(DenyReason::Overloaded.as_str(), "overloaded");
        assert_eq!(DenyReason::Expired.status(), DenyStatus::Unauthorized);
        assert_eq!(DenyReason::MalformedRequest.status(), DenyStatus::BadRequest);
        assert_eq!(DenyReason::OtherScheme.status(), DenyStatus::Unauthorized);
        // Every reason's index points at its own name.
        for (i, r) in [
            DenyReason::NestingTooDeep,
            DenyReason::OtherScheme,
            DenyReason::MalformedRequest,
            DenyReason::BadTokenType,
            DenyReason::TokenTooOld,
            DenyReason::MissingIat,
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(r.index(), 22 + i, "{r:?}");
        }
    }
}
