//! A provider as the verifier sees it, and its optional token profile (RFC 8725 §3.11,
//! RFC 9068 explicit typing; `max_token_age`).

use std::sync::Arc;

use crate::alg::Alg;
use crate::decision::DenyReason;
use crate::keys::KeySet;

/// One trusted issuer, ready for the request path.
pub struct Provider {
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub leeway_secs: i64,
    /// (claim, header) pairs, in config order.
    pub claims_to_headers: Vec<(String, Arc<str>)>,
    pub payload_header: Option<Arc<str>>,
    /// The claims an allow carries as metadata: all of them when `None`.
    pub claims_to_metadata: Option<Box<[String]>>,
    pub keys: Arc<KeySet>,
    /// Explicit typing and token age, when the provider asks for them.
    pub profile: TokenProfile,
}

/// A provider's optional token profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenProfile {
    /// The required `typ`, without `application/` (compared case-insensitively).
    pub typ: Option<Box<str>>,
    /// Tokens issued (`iat`) longer ago than this are refused; so are tokens without `iat`.
    pub max_token_age_secs: Option<i64>,
}

/// The media type of a JOSE `typ` without its optional `application/` prefix (RFC 7515
/// §4.1.9: a `typ` without `/` means `application/<typ>`).
pub fn media_subtype(typ: &str) -> &str {
    const APPLICATION: &str = "application/";
    match typ.get(..APPLICATION.len()) {
        Some(head) if head.eq_ignore_ascii_case(APPLICATION) => &typ[APPLICATION.len()..],
        _ => typ,
    }
}

impl TokenProfile {
    /// Whether a token's JOSE `typ` is the one required.
    pub(super) fn typ_ok(&self, typ: Option<&str>) -> bool {
        match (&self.typ, typ) {
            (None, _) => true,
            (Some(want), Some(got)) => media_subtype(got).eq_ignore_ascii_case(want),
            (Some(_), None) => false,
        }
    }

    /// The time the token stops passing: `exp`, or earlier when `max_token_age` runs out
    /// first. The cache keeps an entry until then, so a cached token ages out too.
    pub(super) fn deadline(&self, exp: i64, iat: Option<i64>, now: i64, leeway: i64) -> Result<i64, DenyReason> {
        let Some(max_age) = self.max_token_age_secs else { return Ok(exp) };
        let iat = iat.ok_or(DenyReason::MissingIat)?;
        // With an age limit, a token issued in the future is not valid yet (as panva's
        // `maxTokenAge`); RFC 7519 alone is silent on a future `iat`.
        if iat > now + leeway {
            return Err(DenyReason::NotYetValid);
        }
        let until = iat.saturating_add(max_age);
        if now >= until.saturating_add(leeway) {
            return Err(DenyReason::TokenTooOld);
        }
        Ok(exp.min(until))
    }
}
