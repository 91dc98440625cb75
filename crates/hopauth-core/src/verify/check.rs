//! Full verification of one token, in the phases a host without a runtime can run on its
//! own thread: the cheap checks ([`Verifier::precheck`]), the signature against the
//! provider's keys ([`Verifier::signature`], which may find the `kid` unknown), and the
//! claims, after which the host's renderer builds the allow ([`Verifier::claims`]).

use crate::clock::Instant;
use crate::decision::{DenyReason, VerifiedToken};
use crate::jws::{self, JwsError, UnverifiedJws};
use crate::keys::{KeyId, KeyLookup};
use crate::render::{header_value, AllowParts, Renderer};
use serde_json::{Map, Value};

use super::{Provider, Verifier};

/// A token that passed the cheap checks, with the provider that will verify it.
pub struct Prechecked<'t, 'v> {
    pub(super) jws: UnverifiedJws<'t>,
    pub(super) provider: &'v Provider,
}

impl Prechecked<'_, '_> {
    pub fn provider(&self) -> &Provider {
        self.provider
    }
}

impl<R: Renderer> Verifier<R> {
    /// Parse, issuer, algorithm, usable keys; past `start_by` (the request waited too
    /// long), `Overloaded` rather than the signature check.
    pub fn precheck<'t>(&self, token: &'t str, start_by: Option<Instant>) -> Result<Prechecked<'t, '_>, DenyReason> {
        let jws = jws::parse(token).map_err(|e| match e {
            JwsError::Malformed | JwsError::BadJson => DenyReason::Malformed,
            JwsError::BadAlg => DenyReason::AlgNotAllowed,
            JwsError::EmbeddedKey => DenyReason::EmbeddedKey,
            JwsError::UnknownCrit => DenyReason::UnknownCrit,
            JwsError::Unsupported => DenyReason::Unsupported,
            JwsError::BadClaim => DenyReason::InvalidClaim,
            JwsError::TooDeep => DenyReason::NestingTooDeep,
        })?;
        let iss = jws.claims.iss.as_deref().ok_or(DenyReason::UnknownIssuer)?;
        let provider = self.providers.iter().find(|p| &*p.issuer == iss).ok_or(DenyReason::UnknownIssuer)?;
        if !provider.algorithms.contains(&jws.header.alg) {
            return Err(DenyReason::AlgNotAllowed);
        }
        if !provider.keys.usable() {
            return Err(DenyReason::KeysUnavailable);
        }
        if start_by.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(DenyReason::Overloaded);
        }
        Ok(Prechecked { jws, provider })
    }

    /// The signature against the provider's current keys: the key that verified it, a
    /// deny, or `None` when the token names a `kid` the provider does not have.
    pub fn signature(&self, token: &Prechecked<'_, '_>) -> Option<Result<KeyId, DenyReason>> {
        let jws = &token.jws;
        token.provider.keys.with_candidates(jws.header.kid.as_deref(), jws.header.alg, |lookup| match lookup {
            KeyLookup::Found(keys) => {
                match keys.iter().find(|k| k.verify(jws.signing_input.as_bytes(), &jws.signature)) {
                    Some(key) => Some(Ok(key.id)),
                    None => Some(Err(DenyReason::BadSignature)),
                }
            }
            KeyLookup::NoKey => Some(Err(DenyReason::UnknownKey)),
            KeyLookup::UnknownKid => None,
        })
    }

    /// The claims of a token whose signature `key` verified, at `now`; then the allow,
    /// rendered once by the host.
    pub fn claims(
        &self,
        token: Prechecked<'_, '_>,
        key: KeyId,
        now: i64,
    ) -> Result<VerifiedToken<R::Rendered>, DenyReason> {
        let Prechecked { jws, provider } = token;
        let key = provider.keys.bind(key);
        let c = jws.claims;
        let leeway = provider.leeway_secs;
        if !provider.profile.typ_ok(jws.header.typ.as_deref()) {
            return Err(DenyReason::BadTokenType);
        }
        let exp = c.exp.ok_or(DenyReason::MissingExp)?;
        if now >= exp + leeway {
            return Err(DenyReason::Expired);
        }
        let exp = provider.profile.deadline(exp, c.iat, now, leeway)?;
        if c.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(DenyReason::NotYetValid);
        }
        if !c.aud.iter().any(|a| provider.audiences.contains(a)) {
            return Err(DenyReason::BadAudience);
        }
        let headers: Vec<(&str, String)> = provider
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| Some((&**header, header_value(c.all.get(claim)?)?)))
            .collect();
        let selected: Map<String, Value>;
        let claims = match &provider.claims_to_metadata {
            None => &c.all,
            Some(names) => {
                selected = names.iter().filter_map(|n| Some((n.clone(), c.all.get(n)?.clone()))).collect();
                &selected
            }
        };
        let rendered = self.renderer.allow(AllowParts {
            identity_headers: &self.identity_headers,
            headers: &headers,
            payload: provider.payload_header.as_deref().map(|h| (h, jws.payload_b64)),
            claims,
        });
        Ok(VerifiedToken {
            provider: provider.name.clone(),
            iss: provider.issuer.clone(),
            sub: c.sub.map(Into::into),
            jti: c.jti.map(Into::into),
            iat: c.iat,
            exp,
            leeway_secs: leeway,
            scopes: c.scopes.into_iter().map(Into::into).collect(),
            key,
            rendered,
        })
    }
}
