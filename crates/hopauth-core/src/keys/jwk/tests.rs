//! JWK hygiene: what becomes a key, what is dropped and why.

use super::*;
use crate::sign::SigningKey;

const ALL: &[Alg] = &[Alg::ES256, Alg::RS256, Alg::PS256, Alg::EdDSA];

fn jwks(keys: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
}

#[test]
fn keys_bind_to_their_algorithm() {
    let es = SigningKey::generate(Alg::ES256, "es").unwrap();
    let ed = SigningKey::generate(Alg::EdDSA, "ed").unwrap();
    let mut es_jwk = es.public_jwk();
    es_jwk.as_object_mut().unwrap().remove("alg");
    let parsed = parse_jwks(&jwks(&[es_jwk, ed.public_jwk()]), ALL).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let algs: Vec<(Option<&str>, Alg)> = parsed.keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
    assert_eq!(algs, vec![(Some("es"), Alg::ES256), (Some("ed"), Alg::EdDSA)]);
}

#[test]
fn rsa_without_alg_serves_each_allowed_rsa_alg() {
    let rs = SigningKey::generate(Alg::RS256, "rs").unwrap();
    let mut jwk = rs.public_jwk();
    jwk.as_object_mut().unwrap().remove("alg");
    let parsed = parse_jwks(&jwks(&[jwk]), ALL).unwrap();
    let algs: Vec<Alg> = parsed.keys.iter().map(|k| k.alg).collect();
    assert_eq!(algs, vec![Alg::RS256, Alg::PS256]);
}

#[test]
fn unhygienic_keys_are_dropped_and_named() {
    let es = SigningKey::generate(Alg::ES256, "es").unwrap();
    let good = es.public_jwk();
    let mut enc = good.clone();
    enc["use"] = "enc".into();
    enc["kid"] = "enc".into();
    let mut wrong_alg = good.clone();
    wrong_alg["alg"] = "RS256".into();
    wrong_alg["kid"] = "wa".into();
    let mut off_curve = good.clone();
    off_curve["kid"] = "oc".into();
    off_curve["y"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
    let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0","kid":"hs"});
    let small_rsa =
        serde_json::json!({"kty":"RSA","kid":"small","n": URL_SAFE_NO_PAD.encode([0xc3u8; 255]),"e":"AQAB"});
    let e_one = serde_json::json!({"kty":"RSA","kid":"e1","n": URL_SAFE_NO_PAD.encode([0xc3u8; 256]),"e":"AQ"});
    let dup = good.clone();
    let garbage = serde_json::json!(42);
    let parsed =
        parse_jwks(&jwks(&[good.clone(), enc, wrong_alg, off_curve, oct, small_rsa, e_one, dup, garbage]), ALL)
            .unwrap();
    assert_eq!(parsed.keys.len(), 1);
    assert_eq!(
        parsed.rejected,
        vec![
            KeyRejection::NotForSignatures,
            KeyRejection::AlgMismatch,
            KeyRejection::BadKeyMaterial,
            KeyRejection::UnsupportedType,
            KeyRejection::WeakRsa,
            KeyRejection::BadKeyMaterial,
            KeyRejection::DuplicateKid,
            KeyRejection::Unparseable,
        ]
    );
}

#[test]
fn roca_fingerprint_spares_ordinary_keys() {
    for _ in 0..3 {
        let rs = SigningKey::generate(Alg::RS256, "rs").unwrap();
        let n = URL_SAFE_NO_PAD.decode(rs.public_jwk()["n"].as_str().unwrap()).unwrap();
        assert!(!has_roca_fingerprint(&n));
    }
    // 65537^k itself is in the subgroup for every prime: the test must flag it.
    let mut n = vec![0u8; 256];
    n[253] = 1;
    n[255] = 1; // 65537 = 0x010001
    assert!(has_roca_fingerprint(strip_leading_zeros(&n)));
}

#[test]
fn a_key_outside_the_allowlist_is_dropped() {
    let ed = SigningKey::generate(Alg::EdDSA, "ed").unwrap();
    let parsed = parse_jwks(&jwks(&[ed.public_jwk()]), &[Alg::ES256]).unwrap();
    assert!(parsed.keys.is_empty());
    assert_eq!(parsed.rejected, vec![KeyRejection::AlgNotAllowed]);
}

/// Hostile key material is a rejected key, never a panic (a panic in debug builds used
/// to end the provider's refresh task).
#[test]
fn hostile_key_material_is_rejected_without_panicking() {
    let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let big = b(&[0xc3u8; 256]);
    let rsa = |n: &str, e: &str| serde_json::json!({"kty":"RSA","n": n,"e": e});
    let ec = |x: &str, y: &str| serde_json::json!({"kty":"EC","crv":"P-256","x": x,"y": y});
    let cases = [
        (rsa("", "AQAB"), KeyRejection::WeakRsa),
        (rsa("AA", "AQAB"), KeyRejection::WeakRsa),
        (rsa(&b(&[0u8; 300]), "AQAB"), KeyRejection::WeakRsa),
        (rsa(&big, ""), KeyRejection::BadKeyMaterial),
        (rsa(&big, "AA"), KeyRejection::BadKeyMaterial),
        (rsa(&big, &b(&[0u8; 12])), KeyRejection::BadKeyMaterial),
        (rsa(&big, &b(&[0xffu8; 64])), KeyRejection::BadKeyMaterial),
        // Larger than any RSA verifier accepts (8192 bits): refused before the ROCA scan.
        (rsa(&b(&vec![0xc3u8; 200_000]), "AQAB"), KeyRejection::BadKeyMaterial),
        (rsa("not base64!", "AQAB"), KeyRejection::BadKeyMaterial),
        (ec("", ""), KeyRejection::BadKeyMaterial),
        (ec(&b(&[0u8; 32]), &b(&[0u8; 32])), KeyRejection::BadKeyMaterial),
        (ec(&b(&[1u8; 33]), &b(&[1u8; 31])), KeyRejection::BadKeyMaterial),
        (ec(&b(&vec![1u8; 100_000]), ""), KeyRejection::BadKeyMaterial),
        (serde_json::json!({"kty":"OKP","crv":"Ed25519","x":""}), KeyRejection::BadKeyMaterial),
        (serde_json::json!({"kty":"OKP","crv":"Ed25519","x": b(&[0u8; 31])}), KeyRejection::BadKeyMaterial),
    ];
    for (jwk, want) in cases {
        let label = jwk.to_string().chars().take(80).collect::<String>();
        let parsed = parse_jwks(&jwks(&[jwk]), ALL).unwrap();
        assert!(parsed.keys.is_empty(), "{label}");
        assert_eq!(parsed.rejected, vec![want], "{label}");
    }
}

#[test]
fn a_key_keeps_its_id_across_fetches_and_ids_tell_keys_apart() {
    let es = SigningKey::generate(Alg::ES256, "es").unwrap();
    let other = SigningKey::generate(Alg::ES256, "es").unwrap();
    let mut renamed = es.public_jwk();
    renamed["kid"] = "es-renamed".into();
    let ids = |jwk: serde_json::Value| parse_jwks(&jwks(&[jwk]), ALL).unwrap().keys[0].id;
    assert_eq!(ids(es.public_jwk()), ids(es.public_jwk()));
    assert_ne!(ids(es.public_jwk()), ids(other.public_jwk()), "same kid, other key");
    assert_ne!(ids(es.public_jwk()), ids(renamed), "same key, other kid");
    let h1 = VerifyKey::hmac(Alg::HS256, b"0123456789abcdef0123456789abcdef").unwrap();
    let h2 = VerifyKey::hmac(Alg::HS256, b"0123456789abcdef0123456789abcdef").unwrap();
    assert_ne!(h1.id, h2.id);
}

#[test]
fn an_empty_or_zero_modulus_is_weak_not_a_panic() {
    // Found by fuzz/fuzz_targets/jwks.rs (issue hole 9): `n.len() * 8 - 8` underflowed for
    // an empty modulus, which panics a debug build and ends the provider's refresh task.
    for n in ["", "AA", "AAAA"] {
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","kid":"k","n":"{n}","e":"AQAB"}}]}}"#);
        let parsed = parse_jwks(doc.as_bytes(), &[Alg::RS256]).unwrap();
        assert!(parsed.keys.is_empty(), "{n:?}");
        assert_eq!(parsed.rejected, vec![KeyRejection::WeakRsa], "{n:?}");
    }
}

#[test]
fn not_a_jwks_is_an_error() {
    assert!(parse_jwks(b"<html>", ALL).is_err());
    assert!(parse_jwks(b"{\"keys\": 1}", ALL).is_err());
    assert!(parse_jwks(b"{\"keys\": []}", ALL).unwrap().keys.is_empty());
}
