//! `providers`: the issuers trusted, each with its audiences, algorithms, keys (`jwks` or
//! an HMAC secret), leeway, identity headers and token-type rules.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sources::{is_header_name, is_reserved_header};
use super::{media_subtype, JwksConfig, Problems};
use hopauth_core::alg::Alg;

/// Clock skew tolerated on `exp`/`nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// One trusted issuer. `name`, `issuer`, `audiences` and `algorithms` are required: left
/// out, validation names them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksConfig>,
    /// Environment variable holding the HMAC secret; required for HS* algorithms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret_env: Option<String>,
    #[serde(with = "super::duration")]
    pub leeway: Duration,
    /// Claim name → upstream header name.
    pub claims_to_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_header: Option<String>,
    /// The claims put into dynamic metadata namespace `hopauth`: every claim when absent,
    /// only those listed otherwise (`[]`: none). Each one costs Envoy a metadata merge per
    /// request, so a mesh that reads none can say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims_to_metadata: Option<Vec<String>>,
    /// Explicit typing (RFC 8725 §3.11, RFC 9068): the JOSE header `typ` every token must
    /// carry, e.g. `at+jwt`; compared case-insensitively, the `application/` prefix optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Tokens whose `iat` is older than this are refused, and so are tokens without `iat`.
    #[serde(skip_serializing_if = "Option::is_none", with = "super::optional_duration")]
    pub max_token_age: Option<Duration>,
}

impl Default for Provider {
    /// The optional keys at their defaults; the required ones empty (and so refused).
    fn default() -> Self {
        Self {
            name: String::new(),
            issuer: String::new(),
            audiences: Vec::new(),
            algorithms: Vec::new(),
            jwks: None,
            hmac_secret_env: None,
            leeway: DEFAULT_LEEWAY,
            claims_to_headers: BTreeMap::new(),
            payload_header: None,
            claims_to_metadata: None,
            typ: None,
            max_token_age: None,
        }
    }
}

/// Every provider's problems, and names and issuers used twice.
pub(super) fn validate(providers: &[Provider], out: &mut Problems) {
    if providers.is_empty() {
        out.add("providers", "at least one provider is required");
    }
    let mut names = HashSet::new();
    let mut issuers = HashSet::new();
    for (i, p) in providers.iter().enumerate() {
        let key = format!("providers[{i}]");
        p.validate(&key, out);
        if !p.name.is_empty() && !names.insert(p.name.as_str()) {
            out.add(format!("{key}.name"), format!("{:?} is used by another provider", p.name));
        }
        if !p.issuer.is_empty() && !issuers.insert(p.issuer.as_str()) {
            out.add(format!("{key}.issuer"), format!("{:?} is used by another provider", p.issuer));
        }
    }
}

impl Provider {
    /// This provider's own problems, keys under `key` (`providers[0]`).
    fn validate(&self, key: &str, out: &mut Problems) {
        if self.name.is_empty() {
            out.add(format!("{key}.name"), "required: letters, digits, `-`, `_`, `.`");
        } else if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            out.add(format!("{key}.name"), "use letters, digits, `-`, `_`, `.`");
        }
        if self.issuer.is_empty() {
            out.add(format!("{key}.issuer"), "required, and must not be empty");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            out.add(format!("{key}.audiences"), "list at least one non-empty audience");
        }
        if self.algorithms.is_empty() {
            out.add(format!("{key}.algorithms"), "list at least one algorithm");
        }
        self.validate_keys(key, out);
        if self.leeway > Duration::from_secs(300) {
            out.add(format!("{key}.leeway"), "at most 5m");
        }
        self.validate_headers(key, out);
        if let Some(typ) = &self.typ {
            // RFC 6838 restricted-name characters, after the optional `application/`.
            let sub = media_subtype(typ);
            if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b)) {
                out.add(format!("{key}.typ"), format!("{typ:?} is not a media type such as `at+jwt`"));
            }
        }
        if self.max_token_age.is_some_and(|age| age < Duration::from_secs(1)) {
            out.add(format!("{key}.max_token_age"), "must be at least 1s");
        }
    }

    /// Keys for every allowed algorithm: a JWKS for public-key ones, a secret of at least
    /// 32 bytes for HS* (RFC 8725 §3.5), and neither where nothing would use it.
    fn validate_keys(&self, key: &str, out: &mut Problems) {
        let wants_hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let wants_public = self.algorithms.iter().any(|a| !a.is_hmac());
        if wants_hmac && self.hmac_secret_env.is_none() {
            out.add(format!("{key}.algorithms"), "HS* algorithms need `hmac_secret_env`");
        }
        if !wants_hmac && self.hmac_secret_env.is_some() {
            out.add(format!("{key}.hmac_secret_env"), "set, but no HS* algorithm is allowed");
        }
        if let Some(var) = &self.hmac_secret_env {
            match std::env::var(var) {
                Ok(v) if v.len() >= 32 => {}
                Ok(_) => out.add(format!("{key}.hmac_secret_env"), format!("${var} must hold at least 32 bytes")),
                Err(_) => out.add(format!("{key}.hmac_secret_env"), format!("${var} is not set")),
            }
        }
        match (&self.jwks, wants_public) {
            (None, true) => out.add(format!("{key}.jwks"), "required for public-key algorithms"),
            (Some(j), _) => j.validate(&format!("{key}.jwks"), &self.issuer, out),
            (None, false) => {}
        }
    }

    /// Identity headers: lowercase names that replace nothing Envoy or the upstream relies on.
    fn validate_headers(&self, key: &str, out: &mut Problems) {
        for (claim, header) in &self.claims_to_headers {
            if claim.is_empty() {
                out.add(format!("{key}.claims_to_headers"), "claim names must not be empty");
            }
            if !is_header_name(header) {
                out.add(
                    format!("{key}.claims_to_headers.{claim}"),
                    format!("{header:?} is not a lowercase header name"),
                );
            }
            if is_reserved_header(header) {
                out.add(format!("{key}.claims_to_headers.{claim}"), format!("{header:?} cannot be overwritten"));
            }
        }
        if let Some(h) = &self.payload_header {
            if !is_header_name(h) || is_reserved_header(h) {
                out.add(format!("{key}.payload_header"), format!("{h:?} is not a usable header name"));
            }
        }
        let mut listed = HashSet::new();
        for (i, claim) in self.claims_to_metadata.iter().flatten().enumerate() {
            if claim.is_empty() {
                out.add(format!("{key}.claims_to_metadata[{i}]"), "claim names must not be empty");
            } else if !listed.insert(claim) {
                out.add(format!("{key}.claims_to_metadata[{i}]"), format!("{claim:?} is listed twice"));
            }
        }
    }
}
