//! Token forgery helpers: segments signed exactly as given, JSON objects, signature arithmetic.

use super::*;

pub(super) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over the given segment strings, exactly as given.
pub(super) fn sign_segments(key: &SigningKey, header_seg: &str, payload_seg: &str) -> String {
    let input = format!("{header_seg}.{payload_seg}");
    let sig = key.sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(sig))
}

/// A compact JWS over raw header and payload bytes (any JSON text, or not JSON at all).
pub(super) fn sign_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    sign_segments(key, &b64(header), &b64(payload))
}

/// A JSON object text built from `base` members, `set` applied: a member named in `base`
/// is replaced (or removed when the value is `DROP`), others are appended; a name ending in
/// `#` appends a second member of that name (a duplicate). Values are raw JSON text.
pub(super) fn object(base: &[(&str, String)], set: &[(&str, &str)]) -> String {
    let mut members: Vec<(String, String)> = base.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    for (k, v) in set {
        if let Some(dup) = k.strip_suffix('#') {
            members.push((dup.to_string(), v.to_string()));
        } else if let Some(m) = members.iter_mut().find(|(name, _)| name == k) {
            m.1 = v.to_string();
        } else {
            members.push((k.to_string(), v.to_string()));
        }
    }
    let body: Vec<String> =
        members.iter().filter(|(_, v)| v != DROP).map(|(k, v)| format!("{}:{v}", serde_json::json!(k))).collect();
    format!("{{{}}}", body.join(","))
}

pub(super) const DROP: &str = "<drop>";

pub(super) fn q(s: &str) -> String {
    serde_json::json!(s).to_string()
}

/// The claims of a valid token at `now`.
pub(super) fn payload(now: i64, set: &[(&str, &str)]) -> String {
    let base = [
        ("iss", q(ISSUER)),
        ("sub", q("user-1")),
        ("aud", q(AUDIENCE)),
        ("iat", now.to_string()),
        ("nbf", (now - 5).to_string()),
        ("exp", (now + 300).to_string()),
        ("jti", q("jti-1")),
        ("scope", q("orders:read")),
    ];
    object(&base, set)
}

/// The header of a valid token signed by `key`.
pub(super) fn header(key: &SigningKey, set: &[(&str, &str)]) -> String {
    object(&[("alg", q(key.alg.as_str())), ("kid", q(&key.kid)), ("typ", q("JWT"))], set)
}

pub(super) fn token(key: &SigningKey, header_set: &[(&str, &str)], claims_set: &[(&str, &str)], now: i64) -> String {
    sign_raw(key, header(key, header_set).as_bytes(), payload(now, claims_set).as_bytes())
}

/// Replaces the signature segment of `tok` with `sig`, base64url-encoded.
pub(super) fn with_sig(tok: &str, sig: &[u8]) -> String {
    let input = &tok[..tok.rfind('.').unwrap()];
    format!("{input}.{}", b64(sig))
}

pub(super) fn sig_of(tok: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(&tok[tok.rfind('.').unwrap() + 1..]).unwrap()
}

/// Big-endian `a - b` for 32-byte numbers with a >= b.
pub(super) fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = if d < 0 { 1 } else { 0 };
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// Little-endian `a + b` for 32-byte numbers (no overflow for the values used here).
pub(super) fn add_le(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = a[i] as u16 + b[i] as u16 + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

/// The order of P-256 (big-endian).
pub(super) const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The order L of the Ed25519 group (little-endian).
pub(super) const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `seg` (base64url of `n` bytes, `n % 3 != 0`) with an unused trailing bit flipped: decoders
/// that ignore those bits read the same bytes, a strict one refuses it.
pub(super) fn noncanonical(seg: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // With 2 or 3 characters in the last quantum, the lowest bit of the last one is unused.
    if seg.len() % 4 < 2 {
        return None;
    }
    let last = *seg.as_bytes().last()?;
    let v = ALPHABET.iter().position(|&c| c == last)?;
    Some(format!("{}{}", &seg[..seg.len() - 1], ALPHABET[v ^ 1] as char))
}
