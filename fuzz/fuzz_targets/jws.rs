//! `jws::split` / `jws::parse` on arbitrary tokens. First byte even: the rest is the token
//! text. Odd: the rest is `header JSON \0 claims JSON \0 signature bytes`, encoded into a
//! token here, so mutations reach the JSON and claim checks instead of dying in base64.
//!
//! Properties: an accepted token has exactly three non-empty segments, each canonical
//! base64url (re-encoding the decoded bytes gives the segment back: no padding, no
//! foreign characters, no non-zero unused bits); `signing_input` and `payload_b64` are the
//! token's own bytes; a strict parse agrees with a plain JSON parse of the same bytes (no
//! duplicate was let through); typed claims match the JSON they came from; and re-encoding
//! the claims gives a token that parses to the same claims.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_core::jws;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0);
        let (h, p, s) =
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p), URL_SAFE_NO_PAD.encode(s))
    };
    check(&token);
});

fn check(token: &str) {
    let split = jws::split(token);
    let parsed = jws::parse(token);
    if parsed.is_ok() {
        assert!(split.is_ok(), "parse accepted what split refused");
    }
    let Ok(parts) = split else { return };

    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "accepted a token without exactly three segments");
    for seg in &segments {
        assert!(!seg.is_empty(), "accepted an empty segment");
        let bytes = URL_SAFE_NO_PAD.decode(seg).expect("accepted segment decodes");
        assert_eq!(&URL_SAFE_NO_PAD.encode(&bytes), seg, "accepted non-canonical base64url");
    }
    assert_eq!(parts.signing_input, &token[..segments[0].len() + 1 + segments[1].len()]);
    assert_eq!(parts.payload_b64, segments[1]);
    assert_eq!(parts.payload, URL_SAFE_NO_PAD.decode(segments[1]).unwrap());
    assert_eq!(parts.signature, URL_SAFE_NO_PAD.decode(segments[2]).unwrap());

    // The header was accepted: a plain parse sees the same object and its alg.
    let header_json = URL_SAFE_NO_PAD.decode(segments[0]).unwrap();
    let plain: Map<String, Value> = serde_json::from_slice(&header_json).expect("accepted header is a JSON object");
    assert_eq!(plain.get("alg").and_then(Value::as_str), Some(parts.header.alg.as_str()));
    assert_eq!(plain.get("kid").and_then(Value::as_str), parts.header.kid.as_deref());
    for refused in ["jku", "jwk", "x5u", "x5c", "crit", "b64", "enc", "zip"] {
        assert!(!plain.contains_key(refused), "accepted a header with {refused}");
    }
    assert_eq!(count_members(&header_json), Some(count_plain(&Value::Object(plain))), "duplicate header member");

    let Ok(jws) = parsed else { return };
    let plain: Map<String, Value> = serde_json::from_slice(&parts.payload).expect("accepted claims are a JSON object");
    assert_eq!(plain, jws.claims.all, "strict and plain parses differ");
    assert_eq!(count_members(&parts.payload), Some(count_plain(&Value::Object(plain.clone()))), "duplicate claim");
    let s = |k: &str| plain.get(k).and_then(Value::as_str);
    assert_eq!(jws.claims.iss.as_deref(), s("iss"));
    assert_eq!(jws.claims.sub.as_deref(), s("sub"));
    assert_eq!(jws.claims.jti.as_deref(), s("jti"));
    for (name, value) in [("exp", jws.claims.exp), ("nbf", jws.claims.nbf), ("iat", jws.claims.iat)] {
        match value {
            Some(v) => {
                assert!((0..=253_402_300_799).contains(&v), "{name} out of range: {v}");
                let f = plain[name].as_f64().expect("numeric date is a number");
                assert_eq!(f.trunc() as i64, v, "{name}");
            }
            None => assert!(!plain.contains_key(name), "{name} present but not read"),
        }
    }
    match plain.get("aud") {
        None => assert!(jws.claims.aud.is_empty()),
        Some(Value::String(a)) => assert_eq!(jws.claims.aud, vec![a.clone()]),
        Some(Value::Array(items)) => {
            let want: Vec<&str> = items.iter().map(|v| v.as_str().expect("aud item is a string")).collect();
            assert_eq!(jws.claims.aud, want);
        }
        Some(other) => panic!("aud accepted as {other}"),
    }

    // Re-encoded claims (serde_json's canonical text) parse to the same claims. Floats may
    // move by an ulp: serde_json's default float parser is not exactly round-trip.
    let again =
        format!("{}.{}.{}", segments[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&plain).unwrap()), segments[2]);
    let reparsed = jws::parse(&again).expect("re-encoded claims parse");
    let (a, b) = (&reparsed.claims, &jws.claims);
    assert_eq!((&a.iss, &a.sub, &a.jti, &a.aud, &a.scopes), (&b.iss, &b.sub, &b.jti, &b.aud, &b.scopes));
    for (x, y) in [(a.exp, b.exp), (a.nbf, b.nbf), (a.iat, b.iat)] {
        assert!(x.is_some() == y.is_some() && x.unwrap_or(0).abs_diff(y.unwrap_or(0)) <= 1, "{x:?} vs {y:?}");
    }
    assert!(same(&Value::Object(a.all.clone()), &Value::Object(b.all.clone())), "{:?} vs {:?}", a.all, b.all);
}

/// Equal, floats within a relative 1e-12.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
/// Members of every object in `json`, counted as written (duplicates included); `None`
/// when it is not JSON.
fn count_members(json: &[u8]) -> Option<usize> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_str<E>(self, _: &str) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(Counted(c)) = seq.next_element()? {
                n += c;
            }
            Ok(n)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while map.next_key::<IgnoredAny>()?.is_some() {
                let Counted(c) = map.next_value()?;
                n += 1 + c;
            }
            Ok(n)
        }
    }
    struct Counted(usize);
    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Count).map(Counted)
        }
    }
    serde_json::from_slice::<Counted>(json).ok().map(|Counted(n)| n)
}

/// Members of every object in a parsed value (where duplicates are already merged).
fn count_plain(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(|v| 1 + count_plain(v)).sum(),
        Value::Array(items) => items.iter().map(count_plain).sum(),
        _ => 0,
    }
}
