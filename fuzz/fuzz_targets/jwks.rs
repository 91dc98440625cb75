//! `jwks::parse_jwks` on arbitrary documents, with a fuzzed set of allowed algorithms.
//! First byte: bit i allows `Alg::ALL[i % 12]` (and the second byte the rest); then the
//! document. Keys that parse are used once on fuzzed signature bytes.
//!
//! Properties: never a panic (hostile `n`, `e`, `x`, `y`, sizes, curves); a document that
//! is not `{"keys":[…]}` is an error, one that is gives one entry per key (a rejection,
//! or one or more keys); every key serves an allowed algorithm of its own key type; an
//! accepted RSA key has at least 2048 bits; two JWKs with the same `kid` never both serve.
#![no_main]

use hopauth_core::alg::Alg;
use hopauth_core::keys::{parse_jwks, MIN_RSA_BITS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let [a, b, doc @ ..] = data else { return };
    let bits = u16::from(*a) | (u16::from(*b) << 8);
    let allowed: Vec<Alg> =
        Alg::ALL.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, a)| *a).collect();

    let result = parse_jwks(doc, &allowed);
    // What a plain parse sees: the `keys` array, if the document has one (serde also takes
    // a struct as a sequence, so `[[…]]` is a JWKS to parse_jwks: lax, not unsafe).
    let plain: Option<Vec<Value>> = serde_json::from_slice::<Value>(doc).ok().and_then(|v| match v {
        Value::Object(m) => m.get("keys")?.as_array().cloned(),
        Value::Array(a) if a.len() == 1 => a[0].as_array().cloned(),
        _ => None,
    });
    let Ok(parsed) = result else {
        assert!(plain.is_none() || top_level_keys(doc) > 1, "a document with a keys array was refused whole");
        return;
    };
    let raw = plain.expect("an accepted document has a keys array");
    assert!(parsed.rejected.len() <= raw.len());
    let served_jwks = raw.len() - parsed.rejected.len();
    assert!(parsed.keys.len() >= served_jwks, "an accepted JWK serves no algorithm");
    assert!(parsed.keys.len() <= served_jwks * allowed.len().max(1));

    let mut kids: Vec<(&str, Alg)> = Vec::new();
    for key in &parsed.keys {
        assert!(allowed.contains(&key.alg), "{:?} serves {:?}, not allowed", key.kid, key.alg);
        assert!(!key.alg.is_hmac(), "a symmetric key came from a JWKS");
        if let Some(kid) = key.kid.as_deref() {
            assert!(!kids.contains(&(kid, key.alg)), "kid {kid:?} serves {:?} twice", key.alg);
            kids.push((kid, key.alg));
        }
        // Verification with hostile inputs never panics and never passes an empty signature.
        assert!(!key.verify(b"fuzz.input", &[]));
        let _ = key.verify(doc, doc);
    }
    // RSA keys that served: their JWK's modulus is at least MIN_RSA_BITS long.
    for jwk in &raw {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else { continue };
        let same_kid = raw.iter().filter(|j| j.get("kid").and_then(Value::as_str) == Some(kid)).count();
        let served = parsed.keys.iter().any(|k| k.kid.as_deref() == Some(kid));
        if same_kid != 1 || !served || jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
            continue;
        }
        use base64::Engine;
        let n = jwk.get("n").and_then(Value::as_str).expect("a served RSA JWK has n");
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n).expect("a served n is base64url");
        let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
        let bits = match n.first() {
            Some(first) => n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        assert!(bits >= MIN_RSA_BITS, "RSA key of {bits} bits served");
    }
});

/// How many times the top-level object names `keys` (serde refuses a duplicate field).
fn top_level_keys(doc: &[u8]) -> usize {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                n += usize::from(k == "keys");
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(doc);
    (&mut de).deserialize_map(Count).unwrap_or(0)
}
