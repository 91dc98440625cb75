//! Wycheproof's JWS and JWK vectors (crates/hopauth-core/tests/vectors/wycheproof, Apache-2.0, see its README) run against hopauth's
//! signature layer: strict JWS splitting, JWKS hygiene, key selection and aws-lc
//! verification. Every `invalid` vector must be refused; a `valid` one refused on purpose
//! is listed in `DEVIATIONS` with the reason.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_core::alg::Alg;
use hopauth_core::keys::{parse_jwks, KeyLookup, KeySet, KeySettings, VerifyKey};
use serde_json::{json, Value};

/// Valid vectors hopauth refuses by design.
const DEVIATIONS: &[(u64, &str)] = &[
    (259, "empty payload: a JWT payload is a JSON object, never empty"),
    (264, "empty payload: a JWT payload is a JSON object, never empty"),
    (268, "empty payload: a JWT payload is a JSON object, never empty"),
    (272, "empty payload: a JWT payload is a JSON object, never empty"),
    (320, "empty payload: a JWT payload is a JSON object, never empty"),
    (325, "empty payload: a JWT payload is a JSON object, never empty"),
    (346, "PS384 signature over a JWK whose alg is PS256: a key serves only its own alg (RFC 8725 3.1)"),
    (350, "PS384 signature over a JWK whose alg is PS256: a key serves only its own alg (RFC 8725 3.1)"),
    (347, "ES512 (P-521) is not supported"),
    (351, "ES512 (P-521) is not supported"),
    (372, "a '?' inside a base64url segment: hopauth decodes strictly and never skips characters"),
    (373, "a '?' inside a base64url segment: hopauth decodes strictly and never skips characters"),
];

/// Valid vectors from the JWK file that hopauth refuses by design.
const JWK_DEVIATIONS: &[(u64, &str)] = &[
    (2, "symmetric (oct) keys never come from a JWKS: HS* only with a configured secret"),
    (13, "symmetric (oct) keys never come from a JWKS: HS* only with a configured secret"),
    (14, "symmetric (oct) keys never come from a JWKS: HS* only with a configured secret"),
    (15, "symmetric (oct) keys never come from a JWKS: HS* only with a configured secret"),
];

fn vectors(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wycheproof").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the vectors live in tests/vectors/wycheproof)", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The keys a provider configured with this group's key material would hold: public keys
/// through JWKS hygiene; a lone `oct` key as a configured HMAC secret.
fn keys_for(group: &Value) -> Vec<VerifyKey> {
    let public_algs: Vec<Alg> = Alg::ALL.into_iter().filter(|a| !a.is_hmac()).collect();
    let material = group.get("public").or_else(|| group.get("private")).cloned().unwrap_or(Value::Null);
    if material.get("kty") == Some(&json!("oct")) {
        let alg = material["alg"].as_str().and_then(Alg::from_name).filter(|a| a.is_hmac());
        let secret = material["k"].as_str().and_then(|k| URL_SAFE_NO_PAD.decode(k).ok());
        return match (alg, secret) {
            (Some(alg), Some(secret)) if !secret.is_empty() => VerifyKey::hmac(alg, &secret).into_iter().collect(),
            _ => Vec::new(),
        };
    }
    let set = if material.get("keys").is_some() { material } else { json!({ "keys": [material] }) };
    parse_jwks(set.to_string().as_bytes(), &public_algs).map(|p| p.keys).unwrap_or_default()
}

fn accepts(cache: &KeySet, jws: &str) -> bool {
    let Ok(parts) = hopauth_core::jws::split(jws) else { return false };
    cache.with_candidates(parts.header.kid.as_deref(), parts.header.alg, |lookup| match lookup {
        KeyLookup::Found(keys) => keys.iter().any(|k| k.verify(parts.signing_input.as_bytes(), &parts.signature)),
        _ => false,
    })
}

fn run(file: &str, deviations: &[(u64, &str)]) -> (usize, Vec<String>) {
    let doc = vectors(file);

    let mut count = 0;
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let keys = keys_for(group);
        // In this copy, two `invalid` padding vectors are byte-for-byte a `valid` vector of
        // their group (the padding was lost): they cannot be told apart, so they are checked
        // to be exactly that and nothing else.
        let valid_jws: Vec<&str> = group["tests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["result"] == "valid")
            .filter_map(|t| t["jws"].as_str())
            .collect();
        let settings = KeySettings {
            max_stale: std::time::Duration::from_secs(3600),
            kid_refetch_interval: std::time::Duration::from_secs(30),
            kid_refetch_wait: std::time::Duration::from_millis(1),
        };
        let cache = KeySet::new("wycheproof", Vec::new(), false, settings, keys);
        for test in group["tests"].as_array().unwrap() {
            count += 1;
            let id = test["tcId"].as_u64().unwrap();
            let jws = test["jws"].as_str().unwrap_or("");
            let expected_valid = test["result"] == "valid";
            let got = accepts(&cache, jws);
            let deviation = deviations.iter().any(|(d, _)| *d == id);
            if !expected_valid && valid_jws.contains(&jws) {
                assert!(
                    [367, 370].contains(&id) && file.starts_with("json_web_signature"),
                    "tc{id} duplicates a valid vector"
                );
                continue;
            }
            if got && !expected_valid {
                failures.push(format!("tc{id} ({}) is invalid but was ACCEPTED", test["comment"]));
            } else if !got && expected_valid && !deviation {
                failures.push(format!(
                    "tc{id} ({}) is valid but was refused; list it in DEVIATIONS with a reason",
                    test["comment"]
                ));
            }
        }
    }
    (count, failures)
}

#[test]
fn json_web_signature_vectors() {
    let (count, failures) = run("json_web_signature_test.json", DEVIATIONS);
    assert!(count > 300, "only {count} vectors read");
    assert!(failures.is_empty(), "{} of {count} vectors failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn json_web_key_vectors() {
    let (count, failures) = run("json_web_key_test.json", JWK_DEVIATIONS);
    assert!(count > 10, "only {count} vectors read");
    assert!(failures.is_empty(), "{} of {count} vectors failed:\n{}", failures.len(), failures.join("\n"));
}
