//! The JWS algorithms hopauth verifies, and the key family each one needs (RFC 7518 §3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signature algorithm. `none` is deliberately not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// What kind of key an algorithm verifies with; a JWK's `kty`/`crv` must match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Exact, case-sensitive match (RFC 7515 §4.1.1): `none`, `None`, `hs256` are all refused.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => KeyFamily::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => KeyFamily::Rsa,
            Alg::ES256 => KeyFamily::P256,
            Alg::ES384 => KeyFamily::P384,
            Alg::EdDSA => KeyFamily::Ed25519,
        }
    }

    pub fn is_hmac(self) -> bool {
        self.family() == KeyFamily::Hmac
    }

    /// The aws-lc verification parameters for public-key algorithms.
    pub(crate) fn verification(self) -> Option<&'static dyn aws_lc_rs::signature::VerificationAlgorithm> {
        use aws_lc_rs::signature as s;
        Some(match self {
            Alg::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            Alg::ES256 => &s::ECDSA_P256_SHA256_FIXED,
            Alg::ES384 => &s::ECDSA_P384_SHA384_FIXED,
            Alg::EdDSA => &s::ED25519,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => return None,
        })
    }

    pub(crate) fn rsa_parameters(self) -> Option<&'static aws_lc_rs::signature::RsaParameters> {
        use aws_lc_rs::signature as s;
        Some(match self {
            Alg::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    pub(crate) fn hmac(self) -> Option<aws_lc_rs::hmac::Algorithm> {
        use aws_lc_rs::hmac;
        Some(match self {
            Alg::HS256 => hmac::HMAC_SHA256,
            Alg::HS384 => hmac::HMAC_SHA384,
            Alg::HS512 => hmac::HMAC_SHA512,
            _ => return None,
        })
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unsupported algorithm {0:?}: use one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA (`none` is never allowed)")]
pub struct UnknownAlg(String);

impl FromStr for Alg {
    type Err = UnknownAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::from_name(s).ok_or_else(|| UnknownAlg(s.to_string()))
    }
}

impl Serialize for Alg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_none_is_refused() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_name(a.as_str()), Some(a));
        }
        for bad in ["none", "None", "NONE", "nOnE", "es256", "RS1", ""] {
            assert_eq!(Alg::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn families_bind_keys() {
        assert_eq!(Alg::PS256.family(), KeyFamily::Rsa);
        assert_eq!(Alg::ES384.family(), KeyFamily::P384);
        assert!(Alg::HS512.is_hmac());
        assert!(Alg::HS256.verification().is_none());
        assert!(Alg::EdDSA.verification().is_some());
    }
}
