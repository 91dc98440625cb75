//! Signing JWTs with aws-lc: the reference issuer signs with it, and tests and benchmarks
//! mint tokens (good and hostile) with it.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use aws_lc_rs::{hmac, rsa::KeySize};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::alg::Alg;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot generate or load a {alg} key")]
    Key { alg: Alg },
    #[error("signing failed")]
    Sign,
}

enum Inner {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
    Hmac(Box<hmac::Key>),
}

/// A private key bound to one algorithm and `kid`.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    inner: Inner,
    /// PKCS#8 document, so the key can be stored and reloaded (not for HMAC).
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key for `alg` (RSA keys are 2048-bit).
    pub fn generate(alg: Alg, kid: &str) -> Result<Self, SignError> {
        let err = || SignError::Key { alg };
        let pkcs8 = match alg {
            Alg::ES256 | Alg::ES384 => {
                let signing = if alg == Alg::ES256 {
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                EcdsaKeyPair::generate(signing).and_then(|k| k.to_pkcs8v1()).map_err(|_| err())?.as_ref().to_vec()
            }
            Alg::EdDSA => Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8()).map_err(|_| err())?.as_ref().to_vec(),
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                use aws_lc_rs::encoding::AsDer;
                let k = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| err())?;
                k.as_der().map_err(|_| err())?.as_ref().to_vec()
            }
            Alg::HS256 | Alg::HS384 | Alg::HS512 => return Err(err()),
        };
        Self::from_pkcs8(alg, kid, &pkcs8)
    }

    /// Loads a PKCS#8 (or, for RSA, PKCS#8/PKCS#1 DER) private key.
    pub fn from_pkcs8(alg: Alg, kid: &str, der: &[u8]) -> Result<Self, SignError> {
        let err = || SignError::Key { alg };
        let inner = match alg.family() {
            crate::alg::KeyFamily::P256 => {
                Inner::Ec(EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|_| err())?)
            }
            crate::alg::KeyFamily::P384 => {
                Inner::Ec(EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, der).map_err(|_| err())?)
            }
            crate::alg::KeyFamily::Ed25519 => Inner::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|_| err())?),
            crate::alg::KeyFamily::Rsa => {
                Inner::Rsa(RsaKeyPair::from_pkcs8(der).or_else(|_| RsaKeyPair::from_der(der)).map_err(|_| err())?)
            }
            crate::alg::KeyFamily::Hmac => return Err(err()),
        };
        Ok(SigningKey { kid: kid.to_string(), alg, inner, pkcs8: der.to_vec() })
    }

    /// An HMAC key (HS256/384/512) over `secret`.
    pub fn hmac(alg: Alg, kid: &str, secret: &[u8]) -> Result<Self, SignError> {
        let a = alg.hmac().ok_or(SignError::Key { alg })?;
        Ok(SigningKey {
            kid: kid.to_string(),
            alg,
            inner: Inner::Hmac(Box::new(hmac::Key::new(a, secret))),
            pkcs8: Vec::new(),
        })
    }

    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.inner {
            Inner::Ec(k) => {
                let point = k.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = if self.alg == Alg::ES256 { "P-256" } else { "P-384" };
                json!({"kty":"EC","crv":crv,"x":b(&point[1..1 + size]),"y":b(&point[1 + size..])})
            }
            Inner::Ed(k) => json!({"kty":"OKP","crv":"Ed25519","x":b(k.public_key().as_ref())}),
            Inner::Rsa(k) => {
                let p = k.public_key();
                json!({"kty":"RSA","n":b(p.modulus().big_endian_without_leading_zero()),
                       "e":b(p.exponent().big_endian_without_leading_zero())})
            }
            Inner::Hmac(_) => json!({"kty":"oct"}),
        };
        jwk["kid"] = self.kid.clone().into();
        jwk["alg"] = self.alg.as_str().into();
        jwk["use"] = "sig".into();
        jwk
    }

    /// The raw signature over `input`, in JWS form (fixed-size r‖s for ECDSA).
    pub fn sign_raw(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        Ok(match &self.inner {
            Inner::Ec(k) => k.sign(&rng, input).map_err(|_| SignError::Sign)?.as_ref().to_vec(),
            Inner::Ed(k) => k.sign(input).as_ref().to_vec(),
            Inner::Rsa(k) => {
                let padding: &'static dyn sig::RsaEncoding = match self.alg {
                    Alg::RS256 => &sig::RSA_PKCS1_SHA256,
                    Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                    Alg::RS512 => &sig::RSA_PKCS1_SHA512,
                    Alg::PS256 => &sig::RSA_PSS_SHA256,
                    Alg::PS384 => &sig::RSA_PSS_SHA384,
                    _ => &sig::RSA_PSS_SHA512,
                };
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut out).map_err(|_| SignError::Sign)?;
                out
            }
            Inner::Hmac(k) => hmac::sign(k, input).as_ref().to_vec(),
        })
    }

    /// A compact JWS over `header` and `claims`, as given (tests use this to forge headers).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> Result<String, SignError> {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.sign_raw(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// A JWT with header `{"alg","kid","typ":"JWT"}`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, SignError> {
        self.sign_with_header(&json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": "JWT"}), claims)
    }
}
