//! Verification keys: a JWK turned into a parsed aws-lc key bound to exactly one algorithm,
//! after hygiene checks (RFC 7518 §3, RFC 8725 §3.1; Wycheproof JWK cases).

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};

use crate::alg::{Alg, KeyFamily};

/// Smallest RSA modulus accepted (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted: aws-lc verifies up to 8192 bits.
pub const MAX_RSA_BITS: usize = 8192;

/// A key parsed once, used only with `alg`.
pub struct VerifyKey {
    pub kid: Option<Box<str>>,
    pub alg: Alg,
    /// Names this key across refreshes: the same JWK fetched again has the same id.
    pub id: KeyId,
    material: Material,
}

/// A key's identity: SHA-256 over its algorithm, `kid` and public material (a configured
/// HMAC secret gets a process-unique id instead, so nothing is derived from the secret).
/// A cached token records the id of the key that verified it; a refresh that drops the key
/// drops its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId([u8; 32]);

impl KeyId {
    fn of(alg: Alg, kid: Option<&str>, material: &[&[u8]]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        // Length-prefixed parts, so no two different keys hash the same input.
        let mut part = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        part(alg.as_str().as_bytes());
        part(kid.map_or(&[][..], str::as_bytes));
        for m in material {
            part(m);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        KeyId(id)
    }

    fn unique() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0xffu8; 32];
        id[..8].copy_from_slice(&n.to_be_bytes());
        KeyId(id)
    }
}

enum Material {
    Public(ParsedPublicKey),
    /// Boxed: an HMAC key holds its precomputed pads (over 1 KiB).
    Hmac(Box<hmac::Key>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An HMAC key from a configured secret; HMAC comparison is constant-time.
    pub fn hmac(alg: Alg, secret: &[u8]) -> Option<Self> {
        let key = Material::Hmac(Box::new(hmac::Key::new(alg.hmac()?, secret)));
        Some(VerifyKey { kid: None, alg, id: KeyId::unique(), material: key })
    }

    /// Whether `signature` is valid for `signing_input` under this key.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Public(key) => key.verify_sig(signing_input, signature).is_ok(),
            Material::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
        }
    }
}

/// Why a JWK was dropped; `as_str` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unparseable,
    UnsupportedType,
    NotForSignatures,
    WeakRsa,
    RocaRsa,
    BadKeyMaterial,
    AlgMismatch,
    AlgNotAllowed,
    DuplicateKid,
}

impl KeyRejection {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [KeyRejection; 9] = [
        KeyRejection::Unparseable,
        KeyRejection::UnsupportedType,
        KeyRejection::NotForSignatures,
        KeyRejection::WeakRsa,
        KeyRejection::RocaRsa,
        KeyRejection::BadKeyMaterial,
        KeyRejection::AlgMismatch,
        KeyRejection::AlgNotAllowed,
        KeyRejection::DuplicateKid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyRejection::Unparseable => "unparseable",
            KeyRejection::UnsupportedType => "unsupported_type",
            KeyRejection::NotForSignatures => "not_for_signatures",
            KeyRejection::WeakRsa => "weak_rsa",
            KeyRejection::RocaRsa => "roca_rsa",
            KeyRejection::BadKeyMaterial => "bad_key_material",
            KeyRejection::AlgMismatch => "alg_mismatch",
            KeyRejection::AlgNotAllowed => "alg_not_allowed",
            KeyRejection::DuplicateKid => "duplicate_kid",
        }
    }
}

/// The keys of one JWKS document that passed hygiene, and what was dropped.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyKey>,
    pub rejected: Vec<KeyRejection>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksDocError {
    #[error("JWKS is not a JSON object with a `keys` array: {0}")]
    NotAJwks(#[source] serde_json::Error),
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document. One bad key drops that key, never the whole set.
pub fn parse_jwks(json: &[u8], allowed: &[Alg]) -> Result<ParsedJwks, JwksDocError> {
    let raw: RawJwks = serde_json::from_slice(json).map_err(JwksDocError::NotAJwks)?;
    let mut out = ParsedJwks::default();
    let mut kids: Vec<String> = Vec::new();
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(_) => {
                out.rejected.push(KeyRejection::Unparseable);
                continue;
            }
        };
        if let Some(kid) = &jwk.common.key_id {
            if kids.contains(kid) {
                out.rejected.push(KeyRejection::DuplicateKid);
                continue;
            }
            kids.push(kid.clone());
        }
        match keys_from_jwk(&jwk, allowed) {
            Ok(keys) => out.keys.extend(keys),
            Err(why) => out.rejected.push(why),
        }
    }
    Ok(out)
}

/// One `VerifyKey` per algorithm the JWK may serve: its own `alg`, or, without one, each of
/// the provider's allowed algorithms of its key type.
pub fn keys_from_jwk(jwk: &Jwk, allowed: &[Alg]) -> Result<Vec<VerifyKey>, KeyRejection> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return Err(KeyRejection::NotForSignatures);
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
            return Err(KeyRejection::NotForSignatures);
        }
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyFamily::P256,
            EllipticCurve::P384 => KeyFamily::P384,
            _ => return Err(KeyRejection::UnsupportedType),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyFamily::Ed25519,
            _ => return Err(KeyRejection::UnsupportedType),
        },
        // Symmetric keys never come from a JWKS: HS* only with a configured secret.
        _ => return Err(KeyRejection::UnsupportedType),
    };
    let algs: Vec<Alg> = match jwk.common.key_algorithm {
        Some(ka) => {
            let alg = Alg::from_name(&ka.to_string()).ok_or(KeyRejection::AlgMismatch)?;
            if alg.family() != family {
                return Err(KeyRejection::AlgMismatch);
            }
            if !allowed.contains(&alg) {
                return Err(KeyRejection::AlgNotAllowed);
            }
            vec![alg]
        }
        None => allowed.iter().copied().filter(|a| a.family() == family).collect(),
    };
    if algs.is_empty() {
        return Err(KeyRejection::AlgNotAllowed);
    }
    let kid: Option<Box<str>> = jwk.common.key_id.as_deref().map(Into::into);
    let mut keys = Vec::with_capacity(algs.len());
    for alg in algs {
        let (parsed, id) = parse_public(jwk, alg, kid.as_deref())?;
        keys.push(VerifyKey { kid: kid.clone(), alg, id, material: Material::Public(parsed) });
    }
    Ok(keys)
}

fn b64(s: &str) -> Result<Vec<u8>, KeyRejection> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| KeyRejection::BadKeyMaterial)
}

fn parse_public(jwk: &Jwk, alg: Alg, kid: Option<&str>) -> Result<(ParsedPublicKey, KeyId), KeyRejection> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64(&p.n)?;
            let e = b64(&p.e)?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            // The first byte is non-zero after stripping, so this cannot underflow; an empty
            // modulus has 0 bits.
            let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(KeyRejection::WeakRsa);
            }
            if bits > MAX_RSA_BITS {
                // No verifier accepts it; refuse before the ROCA scan walks a huge modulus.
                return Err(KeyRejection::BadKeyMaterial);
            }
            if has_roca_fingerprint(n) {
                return Err(KeyRejection::RocaRsa);
            }
            // e must be odd and greater than 1 (e = 1 makes every "signature" verify).
            if e.is_empty() || e.len() > 8 || e == [1] || e.last().is_some_and(|b| b % 2 == 0) {
                return Err(KeyRejection::BadKeyMaterial);
            }
            let params = alg.rsa_parameters().ok_or(KeyRejection::AlgMismatch)?;
            let parsed = RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(params)
                .map_err(|_| KeyRejection::BadKeyMaterial)?;
            Ok((parsed, KeyId::of(alg, kid, &[n, e])))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            let size = if alg == Alg::ES256 { 32 } else { 48 };
            if x.len() != size || y.len() != size {
                return Err(KeyRejection::BadKeyMaterial);
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let id = KeyId::of(alg, kid, &[&point]);
            // Parsing checks the point is on the curve.
            let parsed = ParsedPublicKey::new(alg.verification().ok_or(KeyRejection::AlgMismatch)?, point)
                .map_err(|_| KeyRejection::BadKeyMaterial)?;
            Ok((parsed, id))
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            let x = b64(&p.x)?;
            if x.len() != 32 {
                return Err(KeyRejection::BadKeyMaterial);
            }
            let id = KeyId::of(alg, kid, &[&x]);
            let parsed = ParsedPublicKey::new(alg.verification().ok_or(KeyRejection::AlgMismatch)?, x)
                .map_err(|_| KeyRejection::BadKeyMaterial)?;
            Ok((parsed, id))
        }
        _ => Err(KeyRejection::UnsupportedType),
    }
}

/// Odd primes up to 167: the moduli of the ROCA fingerprint (CVE-2017-15361).
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// The ROCA test of Nemec et al.: keys from the vulnerable Infineon library have a modulus
/// that, modulo each small prime p, lies in the subgroup generated by 65537. A random
/// modulus passes all 38 tests with negligible probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |r, &b| (r * 256 + u32::from(b)) % p);
        let generator = 65537 % p;
        let mut x = 1u32;
        for _ in 0..p {
            if x == residue {
                return true;
            }
            x = x * generator % p;
        }
        false
    })
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests;
