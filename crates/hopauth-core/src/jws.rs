//! Strict parsing of a compact JWS carrying JWT claims (RFC 7515 §7.1, RFC 7519, RFC 8725):
//! exactly three canonical base64url segments, a JSON-object header and payload without
//! duplicate members, typed claims. Nothing here trusts the token: it only takes it apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::alg::Alg;

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

/// A JSON value whose objects, at every depth, have no duplicate member names (RFC 8725
/// §3.7 / RFC 7515 §4: a downstream parser could otherwise read the other value), and
/// whose arrays and objects nest at most `MAX_JSON_DEPTH` deep.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor { depth: 0 })
    }
}

/// Reads one value `depth` containers deep; a container here would be at `depth + 1`.
#[derive(Clone, Copy)]
struct StrictVisitor {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for StrictVisitor {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(self)
    }
}

/// The error text `strict_object` recognises as "too deep".
const TOO_DEEP: &str = "nesting deeper than MAX_JSON_DEPTH";

impl StrictVisitor {
    /// The visitor for the members of a container opened at this level; refused before
    /// any member is read when it would be too deep.
    fn inner<E: de::Error>(self) -> Result<StrictVisitor, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(StrictVisitor { depth: self.depth + 1 })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v).map(|n| Strict(Value::Number(n))).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value_seed(inner)?;
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            map.insert(key, value);
        }
        Ok(Strict(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", enc(header), enc(payload), enc("sig"))
    }

    const H: &str = r#"{"alg":"ES256","kid":"k1"}"#;
    const P: &str = r#"{"iss":"i","sub":"s","aud":"a","exp":2000000000,"scope":"a b","scp":["c"]}"#;

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(H, P);
        let jws = parse(&t).unwrap();
        assert_eq!(jws.header.alg, Alg::ES256);
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.claims.aud, vec!["a"]);
        assert_eq!(jws.claims.exp, Some(2_000_000_000));
        assert_eq!(jws.claims.scopes, vec!["a", "b", "c"]);
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.signing_input, &t[..t.rfind('.').unwrap()]);
    }

    #[test]
    fn segment_shapes_are_refused() {
        let (h, p) = (enc(H), enc(P));
        for bad in [
            String::new(),
            "a".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}."),
            format!(".{p}.c2ln"),
            format!("{h}..c2ln"),
            format!("{h}.{p}.c2ln.d"),
            format!("{h}.{p}.c2ln.d.e"),
            format!("{h}.{p}.c2ln="),
            format!("{h}.{p}.c2l n"),
            format!("{h}.{p}.c2ln!!!!"),
            format!("{h}.{p}.c2+/"),
            // "si" is c2k; c2l has non-zero unused bits and must not decode to the same bytes
            format!("{h}.{p}.c2l"),
        ] {
            assert_eq!(parse(&bad).unwrap_err(), JwsError::Malformed, "{bad}");
        }
    }

    #[test]
    fn alg_none_and_unknown_algs_are_refused() {
        for alg in ["none", "None", "NONE", "nOnE", "HS1", ""] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), P);
            assert_eq!(parse(&t).unwrap_err(), JwsError::BadAlg, "{alg}");
        }
        assert_eq!(parse(&token(r#"{"kid":"x"}"#, P)).unwrap_err(), JwsError::BadAlg);
        assert_eq!(parse(&token(r#"{"alg":1}"#, P)).unwrap_err(), JwsError::BadAlg);
    }

    #[test]
    fn keys_from_the_token_are_refused() {
        for member in ["jku", "jwk", "x5u", "x5c"] {
            let t = token(&format!(r#"{{"alg":"RS256","{member}":"http://evil"}}"#), P);
            assert_eq!(parse(&t).unwrap_err(), JwsError::EmbeddedKey, "{member}");
        }
    }

    #[test]
    fn crit_b64_jwe_and_nested_are_refused() {
        let crit = token(r#"{"alg":"ES256","crit":["x-custom"],"x-custom":1}"#, P);
        assert_eq!(parse(&crit).unwrap_err(), JwsError::UnknownCrit);
        let b64 = token(r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#, P);
        assert_eq!(parse(&b64).unwrap_err(), JwsError::Unsupported);
        let nested = token(r#"{"alg":"ES256","cty":"JWT"}"#, P);
        assert_eq!(parse(&nested).unwrap_err(), JwsError::Unsupported);
        let jwe = token(r#"{"alg":"ES256","enc":"A128GCM"}"#, P);
        assert_eq!(parse(&jwe).unwrap_err(), JwsError::Unsupported);
    }

    #[test]
    fn non_objects_and_duplicates_are_refused() {
        for payload in ["[]", "1", "null", "\"x\"", "{", "\u{feff}{}"] {
            assert_eq!(parse(&token(H, payload)).unwrap_err(), JwsError::BadJson, "{payload}");
        }
        let dup_alg = token(r#"{"alg":"HS256","alg":"RS256"}"#, P);
        assert_eq!(parse(&dup_alg).unwrap_err(), JwsError::BadJson);
        let dup_sub = token(H, r#"{"sub":"u","sub":"admin","exp":1}"#);
        assert_eq!(parse(&dup_sub).unwrap_err(), JwsError::BadJson);
        let nested_dup = token(H, r#"{"exp":1,"x":{"a":1,"a":2}}"#);
        assert_eq!(parse(&nested_dup).unwrap_err(), JwsError::BadJson);
        let bad_utf8 = format!("{}.{}.{}", enc(H), URL_SAFE_NO_PAD.encode([b'{', 0xff, b'}']), enc("s"));
        assert_eq!(parse(&bad_utf8).unwrap_err(), JwsError::BadJson);
    }

    #[test]
    fn claim_types_are_checked_not_coerced() {
        for payload in [
            r#"{"exp":"9999999999"}"#,
            r#"{"exp":null}"#,
            r#"{"exp":true}"#,
            r#"{"exp":[]}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":2.001e+206}"#,
            r#"{"nbf":"0","exp":1}"#,
            r#"{"nbf":9223372036854775807,"exp":1}"#,
            r#"{"exp":1,"aud":123}"#,
            r#"{"exp":1,"aud":[123]}"#,
            r#"{"exp":1,"iss":["i"]}"#,
            r#"{"exp":1,"sub":5}"#,
            r#"{"exp":1,"scope":["a",1]}"#,
            r#"{"exp":1,"scope":{"a":1}}"#,
            r#"{"exp":1,"scp":[1]}"#,
        ] {
            assert_eq!(parse(&token(H, payload)).unwrap_err(), JwsError::BadClaim, "{payload}");
        }
        let frac_token = token(H, r#"{"exp":2000000000.5}"#);
        let frac = parse(&frac_token).unwrap();
        assert_eq!(frac.claims.exp, Some(2_000_000_000));
        let huge = parse(&token(H, r#"{"exp":1e400}"#)).unwrap_err();
        assert!(matches!(huge, JwsError::BadJson | JwsError::BadClaim));
    }

    #[test]
    fn scope_may_be_an_array_of_strings() {
        let t = token(H, r#"{"exp":1,"scope":["orders:read","profile"],"scp":"x"}"#);
        assert_eq!(parse(&t).unwrap().claims.scopes, vec!["orders:read", "profile", "x"]);
        assert_eq!(parse(&token(H, r#"{"exp":1,"scope":[]}"#)).unwrap().claims.scopes, Vec::<String>::new());
    }

    /// `{"exp":1,"a":{"a":…1…}}` with `depth` containers in all, the claims object included.
    fn nested(depth: usize, open: &str, close: &str) -> String {
        format!(r#"{{"exp":1,"a":{}1{}}}"#, open.repeat(depth - 1), close.repeat(depth - 1))
    }

    #[test]
    fn nesting_is_bounded() {
        for (open, close) in [(r#"{"a":"#, "}"), ("[", "]")] {
            let at_limit = nested(16, open, close);
            assert!(parse(&token(H, &at_limit)).is_ok(), "{at_limit}");
            let past = nested(17, open, close);
            assert_eq!(parse(&token(H, &past)).unwrap_err(), JwsError::TooDeep, "{past}");
            let far = nested(120, open, close);
            assert_eq!(parse(&token(H, &far)).unwrap_err(), JwsError::TooDeep);
        }
        let deep_header = format!(r#"{{"alg":"ES256","x":{}1{}}}"#, "[".repeat(20), "]".repeat(20));
        assert_eq!(parse(&token(&deep_header, P)).unwrap_err(), JwsError::TooDeep);
    }
}
