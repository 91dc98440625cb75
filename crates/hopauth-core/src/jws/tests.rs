//! The strict parse: what it takes apart and everything it refuses.

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
