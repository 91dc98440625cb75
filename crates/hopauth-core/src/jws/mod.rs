//! Strict parsing of a compact JWS carrying JWT claims (RFC 7515 §7.1, RFC 7519, RFC 8725):
//! exactly three canonical base64url segments, a JSON-object header and payload without
//! duplicate members, typed claims. Nothing here trusts the token: it only takes it apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::alg::Alg;
use strict::{Strict, TOO_DEEP};

mod strict;

/// Why a token could not be taken apart; each maps onto one deny reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS with three base64url segments")]
    Malformed,
    #[error("header or payload is not a JSON object without duplicate members")]
    BadJson,
    #[error("`alg` is missing, `none`, or not a supported algorithm")]
    BadAlg,
    #[error("header carries a key or key URL (jku, jwk, x5u, x5c)")]
    EmbeddedKey,
    #[error("header lists a `crit` extension hopauth does not understand")]
    UnknownCrit,
    #[error("encrypted, nested or unencoded-payload tokens are not accepted")]
    Unsupported,
    #[error("a registered claim has the wrong JSON type or is out of range")]
    BadClaim,
    #[error("header or payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

/// The JOSE header fields hopauth acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Registered and scope claims, typed; `all` keeps the whole object for metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    /// From `scope` and `scp`, each a space-separated string or an array of strings.
    pub scopes: Vec<String>,
    pub all: Map<String, Value>,
}

/// A token split and decoded, not yet verified.
#[derive(Debug)]
pub struct UnverifiedJws<'t> {
    pub header: JoseHeader,
    pub claims: Claims,
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'t str,
    /// The payload segment: base64url of the claims JSON, forwarded as `payload_header`.
    pub payload_b64: &'t str,
    pub signature: Vec<u8>,
}

/// Deepest nesting of arrays and objects accepted in the header or the payload, the
/// top-level object counting as 1. The claims are copied into the CheckResponse's dynamic
/// metadata, where each object level costs protobuf 3 message levels (Value, Struct, map
/// entry) and each array 2: past ~32 levels Envoy (and prost) refuse to decode the answer
/// at their 100-level limit. 16 keeps every allow well under it (≤ 51 levels) and is far
/// deeper than any real token needs.
pub const MAX_JSON_DEPTH: usize = 16;

/// Latest NumericDate accepted (9999-12-31T23:59:59Z); anything later is an attack or a bug.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Header members that would have the verifier take a key from the token (RFC 8725 §3.10).
const EMBEDDED_KEY_MEMBERS: [&str; 4] = ["jku", "jwk", "x5u", "x5c"];

/// The signature layer of a compact JWS: header checked, segments decoded, payload not yet
/// interpreted.
#[derive(Debug)]
pub struct SignedParts<'t> {
    pub header: JoseHeader,
    pub signing_input: &'t str,
    pub payload_b64: &'t str,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits `token` into its three segments, decodes them strictly and checks the header.
/// The caller has already bounded its length.
pub fn split(token: &str) -> Result<SignedParts<'_>, JwsError> {
    let (header_b64, rest) = token.split_once('.').ok_or(JwsError::Malformed)?;
    let (payload_b64, sig_b64) = rest.split_once('.').ok_or(JwsError::Malformed)?;
    if header_b64.is_empty() || payload_b64.is_empty() || sig_b64.is_empty() || sig_b64.contains('.') {
        return Err(JwsError::Malformed);
    }
    let header = parse_header(&b64(header_b64)?)?;
    let payload = b64(payload_b64)?;
    let signature = b64(sig_b64)?;
    Ok(SignedParts {
        header,
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        payload_b64,
        payload,
        signature,
    })
}

/// Splits and decodes `token` and reads its payload as JWT claims.
pub fn parse(token: &str) -> Result<UnverifiedJws<'_>, JwsError> {
    let parts = split(token)?;
    let claims = parse_claims(&parts.payload)?;
    Ok(UnverifiedJws {
        header: parts.header,
        claims,
        signing_input: parts.signing_input,
        payload_b64: parts.payload_b64,
        signature: parts.signature,
    })
}

/// Canonical base64url: no padding, no foreign characters, zero unused bits.
fn b64(segment: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwsError::Malformed)
}

fn strict_object(json: &[u8]) -> Result<Map<String, Value>, JwsError> {
    match serde_json::from_slice::<Strict>(json) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        // serde_json's own limit (128) is past ours, so a deep document always ends here.
        Err(e) if e.is_data() && e.to_string().starts_with(TOO_DEEP) => Err(JwsError::TooDeep),
        _ => Err(JwsError::BadJson),
    }
}

fn parse_header(json: &[u8]) -> Result<JoseHeader, JwsError> {
    let map = strict_object(json)?;
    let alg = match map.get("alg") {
        Some(Value::String(name)) => Alg::from_name(name).ok_or(JwsError::BadAlg)?,
        _ => return Err(JwsError::BadAlg),
    };
    if EMBEDDED_KEY_MEMBERS.iter().any(|m| map.contains_key(*m)) {
        return Err(JwsError::EmbeddedKey);
    }
    // RFC 7797 unencoded payloads, JWE (`enc`, `zip`) and nested JWTs are refused outright.
    if map.contains_key("b64") || map.contains_key("enc") || map.contains_key("zip") {
        return Err(JwsError::Unsupported);
    }
    if let Some(cty) = map.get("cty") {
        match cty {
            Value::String(c) if !c.eq_ignore_ascii_case("JWT") => {}
            _ => return Err(JwsError::Unsupported),
        }
    }
    // RFC 7515 §4.1.11: hopauth understands no extension, so any `crit` makes the token invalid.
    if map.contains_key("crit") {
        return Err(JwsError::UnknownCrit);
    }
    let kid = optional_string(&map, "kid").map_err(|_| JwsError::BadJson)?;
    let typ = optional_string(&map, "typ").map_err(|_| JwsError::BadJson)?;
    Ok(JoseHeader { alg, kid, typ })
}

fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, JwsError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwsError::BadClaim),
    }
}

fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwsError> {
    let Some(v) = map.get(name) else { return Ok(None) };
    let Value::Number(n) = v else { return Err(JwsError::BadClaim) };
    let secs = if let Some(i) = n.as_i64() { i as f64 } else { n.as_f64().ok_or(JwsError::BadClaim)? };
    if !secs.is_finite() || !(0.0..=MAX_NUMERIC_DATE).contains(&secs) {
        return Err(JwsError::BadClaim);
    }
    Ok(Some(secs.trunc() as i64))
}

fn parse_claims(json: &[u8]) -> Result<Claims, JwsError> {
    let all = strict_object(json)?;
    let aud = match all.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned).ok_or(JwsError::BadClaim)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(JwsError::BadClaim),
    };
    let mut scopes: Vec<String> = Vec::new();
    // `scope` is a space-separated string (RFC 8693 §4.2), but some issuers send an array
    // of strings, as is usual for `scp`: both claims take both forms.
    for name in ["scope", "scp"] {
        match all.get(name) {
            None => {}
            Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                for v in items {
                    scopes.push(v.as_str().ok_or(JwsError::BadClaim)?.to_owned());
                }
            }
            Some(_) => return Err(JwsError::BadClaim),
        }
    }
    Ok(Claims {
        iss: optional_string(&all, "iss")?,
        sub: optional_string(&all, "sub")?,
        jti: optional_string(&all, "jti")?,
        aud,
        exp: numeric_date(&all, "exp")?,
        nbf: numeric_date(&all, "nbf")?,
        iat: numeric_date(&all, "iat")?,
        scopes,
        all,
    })
}

#[cfg(test)]
mod tests;
