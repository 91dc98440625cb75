//! Signature and claims checks for every provider, and the verified-token cache that makes
//! a repeated token cost one hash lookup.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::sync::Cache;
use serde_json::Value;

use crate::alg::Alg;
use crate::decision::DenyReason;
use crate::grpc::render;
use crate::jwks::{JwksCache, KeyBinding, KeyLookup, KeyStanding};
use crate::jws::{self, JwsError};

/// One trusted issuer, ready for the request path.
pub struct Provider {
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub leeway_secs: i64,
    /// (claim, header) pairs, in config order.
    pub claims_to_headers: Vec<(String, Arc<str>)>,
    pub payload_header: Option<Arc<str>>,
    pub keys: Arc<JwksCache>,
    /// Explicit typing and token age, when the provider asks for them.
    pub profile: TokenProfile,
}

/// A provider's optional token profile (RFC 8725 §3.11, RFC 9068; `max_token_age`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenProfile {
    /// The required `typ`, without `application/` (compared case-insensitively).
    pub typ: Option<Box<str>>,
    /// Tokens issued (`iat`) longer ago than this are refused; so are tokens without `iat`.
    pub max_token_age_secs: Option<i64>,
}

impl TokenProfile {
    pub fn from_config(p: &crate::config::Provider) -> Self {
        TokenProfile {
            typ: p.typ.as_deref().map(|t| crate::config::media_subtype(t).into()),
            max_token_age_secs: p.max_token_age.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }
    }

    /// Whether a token's JOSE `typ` is the one required.
    fn typ_ok(&self, typ: Option<&str>) -> bool {
        match (&self.typ, typ) {
            (None, _) => true,
            (Some(want), Some(got)) => crate::config::media_subtype(got).eq_ignore_ascii_case(want),
            (Some(_), None) => false,
        }
    }

    /// The time the token stops passing: `exp`, or earlier when `max_token_age` runs out
    /// first. The cache keeps an entry until then, so a cached token ages out too.
    fn deadline(&self, exp: i64, iat: Option<i64>, now: i64, leeway: i64) -> Result<i64, DenyReason> {
        let Some(max_age) = self.max_token_age_secs else { return Ok(exp) };
        let iat = iat.ok_or(DenyReason::MissingIat)?;
        // With an age limit, a token issued in the future is not valid yet (as panva's
        // `maxTokenAge`); RFC 7519 alone is silent on a future `iat`.
        if iat > now + leeway {
            return Err(DenyReason::NotYetValid);
        }
        let until = iat.saturating_add(max_age);
        if now >= until.saturating_add(leeway) {
            return Err(DenyReason::TokenTooOld);
        }
        Ok(exp.min(until))
    }
}

/// A token whose signature and claims passed; shared by every request that presents it.
/// Kept compact (names shared with the provider, boxed slices): the cache holds many.
#[derive(Debug)]
pub struct VerifiedToken {
    pub provider: Arc<str>,
    pub iss: Arc<str>,
    pub sub: Option<Box<str>>,
    pub jti: Option<Box<str>>,
    pub iat: Option<i64>,
    pub exp: i64,
    pub leeway_secs: i64,
    pub scopes: Box<[Box<str>]>,
    /// The key that verified the signature: a cache hit is refused once that key leaves the
    /// provider's JWKS, and answered 503 once the provider's keys are past `max_stale`.
    pub key: KeyBinding,
    /// The encoded CheckResponse that allows this token: identity headers from
    /// `claims_to_headers` and `payload_header`, the claims as dynamic metadata. Rendered
    /// once here, so a cache hit answers without building or encoding anything.
    pub allow_response: Bytes,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Bytes an entry costs beyond what it owns: moka's bookkeeping (~270 B measured, see
/// docs/performance.md), the key's and the value's allocations and the `Arc` header.
const ENTRY_OVERHEAD_BYTES: usize = 270 + std::mem::size_of::<VerifiedToken>() + 2 * 16;

impl VerifiedToken {
    /// What this token costs the cache under `key`, in bytes: the weight that bounds it.
    fn cache_bytes(&self, key: &str) -> usize {
        let boxed = |s: &Option<Box<str>>| s.as_deref().map_or(0, str::len);
        ENTRY_OVERHEAD_BYTES
            + key.len()
            + self.allow_response.len()
            + boxed(&self.sub)
            + boxed(&self.jti)
            + self.scopes.iter().map(|s| s.len() + 16).sum::<usize>()
    }
}

/// The verifier's bounds.
#[derive(Debug, Clone, Copy)]
pub struct VerifierLimits {
    /// Cache entries at most.
    pub cache_max_entries: u64,
    /// Cache bytes at most (each entry weighs what it holds, see `VerifiedToken::cache_bytes`).
    pub cache_max_bytes: u64,
    /// Signature verifications running at once.
    pub max_concurrent_verifies: usize,
}

/// Cache entries live until the token's `exp`, never longer.
struct UntilExp;

impl moka::Expiry<Box<str>, Arc<VerifiedToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Arc<VerifiedToken>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.exp.saturating_sub(unix_now()).max(0) as u64))
    }
}

pub struct Verifier {
    providers: Vec<Provider>,
    /// Every header any provider sets: stripped from what the client sent, always.
    identity_headers: Vec<String>,
    /// Keyed by the whole token string: only the identical token can hit an entry.
    cache: Cache<Box<str>, Arc<VerifiedToken>, foldhash::fast::RandomState>,
    /// Permits for signature verification: a flood of expensive tokens waits here (yielding
    /// its thread to cache hits) instead of occupying every runtime thread.
    verifies: tokio::sync::Semaphore,
    metrics: crate::metrics::Metrics,
}

impl Verifier {
    pub fn new(providers: Vec<Provider>, limits: VerifierLimits, metrics: crate::metrics::Metrics) -> Self {
        // Both bounds through one weight: an entry weighs its bytes, but never less than an
        // equal share of the byte budget per allowed entry, so neither bound is exceeded.
        let max_bytes = limits.cache_max_bytes.max(1);
        let min_weight = (max_bytes / limits.cache_max_entries.max(1)).clamp(1, u64::from(u32::MAX)) as u32;
        let cache = Cache::<Box<str>, Arc<VerifiedToken>, _>::builder()
            .max_capacity(max_bytes)
            .weigher(move |key, value: &Arc<VerifiedToken>| {
                u32::try_from(value.cache_bytes(key)).unwrap_or(u32::MAX).max(min_weight)
            })
            .expire_after(UntilExp)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let mut identity_headers: Vec<String> = Vec::new();
        for p in &providers {
            for h in p.claims_to_headers.iter().map(|(_, h)| h).chain(p.payload_header.iter()) {
                if !identity_headers.iter().any(|known| **known == **h) {
                    identity_headers.push(h.to_string());
                }
            }
        }
        let verifies = tokio::sync::Semaphore::new(limits.max_concurrent_verifies.max(1));
        Verifier { providers, identity_headers, cache, verifies, metrics }
    }

    /// Whether `token` has a cache entry now (the span's `cache_hit`; not on the hot path).
    pub fn is_cached(&self, token: &str) -> bool {
        self.cache.contains_key(token)
    }

    /// Entries in the cache and the bytes they weigh (after pending housekeeping).
    pub fn cache_usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// A verification permit, waiting for one no later than `start_by`.
    async fn verify_permit(&self, start_by: Option<Instant>) -> Result<tokio::sync::SemaphorePermit<'_>, DenyReason> {
        if let Ok(permit) = self.verifies.try_acquire() {
            return Ok(permit);
        }
        let acquire = self.verifies.acquire();
        let permit = match start_by {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.into(), acquire).await.map_err(|_| DenyReason::Overloaded)?
            }
            None => acquire.await,
        };
        // The semaphore is never closed.
        permit.map_err(|_| DenyReason::Overloaded)
    }

    pub fn identity_headers(&self) -> &[String] {
        &self.identity_headers
    }

    /// Lets the cache finish pending housekeeping (tests and benches measure after it).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// A verified token for `token` at time `now`: from the cache, or by full verification.
    /// A hit still needs its key: 503 past the provider's `max_stale`, 401 (and evicted)
    /// once a refresh has withdrawn the key that verified it.
    /// Past `start_by` (the request has waited too long) a cache hit is still answered, a
    /// miss is `Overloaded` instead of a signature check.
    pub async fn verify(
        &self,
        token: &str,
        now: i64,
        start_by: Option<Instant>,
    ) -> Result<Arc<VerifiedToken>, DenyReason> {
        if let Some(hit) = self.cache.get(token) {
            self.metrics.verify_cache_hits.inc();
            match hit.key.standing(now) {
                KeyStanding::Current => {}
                KeyStanding::Stale => return Err(DenyReason::KeysUnavailable),
                KeyStanding::Withdrawn => {
                    self.cache.invalidate(token);
                    return Err(DenyReason::UnknownKey);
                }
            }
            if now >= hit.exp + hit.leeway_secs {
                return Err(DenyReason::Expired);
            }
            return Ok(hit);
        }
        self.metrics.verify_cache_misses.inc();
        let verified = Arc::new(self.verify_uncached(token, now, start_by).await?);
        if verified.exp > now {
            self.cache.insert(token.into(), verified.clone());
        }
        Ok(verified)
    }

    /// Full verification without the cache (benchmarks measure this path). Past
    /// `start_by`, the token is refused as `Overloaded` once its cheap checks pass, before
    /// the signature check (or a refetch for an unknown `kid`) would spend time on it.
    pub async fn verify_uncached(
        &self,
        token: &str,
        now: i64,
        start_by: Option<Instant>,
    ) -> Result<VerifiedToken, DenyReason> {
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
        let iss = provider.issuer.clone();
        let alg = jws.header.alg;
        if !provider.algorithms.contains(&alg) {
            return Err(DenyReason::AlgNotAllowed);
        }
        if !provider.keys.usable() {
            return Err(DenyReason::KeysUnavailable);
        }
        if start_by.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(DenyReason::Overloaded);
        }
        let permit = self.verify_permit(start_by).await?;
        let kid = jws.header.kid.as_deref();
        let check = |lookup: KeyLookup<'_>| match lookup {
            KeyLookup::Found(keys) => {
                match keys.iter().find(|k| k.verify(jws.signing_input.as_bytes(), &jws.signature)) {
                    Some(key) => Some(Ok(key.id)),
                    None => Some(Err(DenyReason::BadSignature)),
                }
            }
            KeyLookup::NoKey => Some(Err(DenyReason::UnknownKey)),
            KeyLookup::UnknownKid => None,
        };
        let outcome = match provider.keys.with_candidates(kid, alg, check) {
            Some(r) => r,
            None => {
                // Maybe the issuer rotated: one bounded refetch, then one more look. The permit
                // is not held while waiting: a flood of random kids must not starve real
                // verifications.
                drop(permit);
                provider.keys.refetch_for_unknown_kid().await;
                let _permit = self.verify_permit(None).await?;
                provider.keys.with_candidates(kid, alg, check).unwrap_or(Err(DenyReason::UnknownKey))
            }
        };
        let key = provider.keys.bind(outcome?);

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
            .filter_map(|(claim, header)| Some((&**header, render_header_value(c.all.get(claim)?)?)))
            .collect();
        let allow = render::allow(
            &self.identity_headers,
            headers.iter().map(|(h, v)| (*h, v.as_str())),
            provider.payload_header.as_deref().map(|h| (h, jws.payload_b64)),
            Some(&c.all),
        );
        Ok(VerifiedToken {
            provider: provider.name.clone(),
            iss,
            sub: c.sub.map(Into::into),
            jti: c.jti.map(Into::into),
            iat: c.iat,
            exp,
            leeway_secs: leeway,
            scopes: c.scopes.into_iter().map(Into::into).collect(),
            key,
            allow_response: allow,
        })
    }
}

/// A claim as a header value: strings as they are, arrays of strings space-joined, other
/// values as JSON. `None` when the value would not be a safe header (control characters).
pub fn render_header_value(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
        }
        Value::Null => return None,
        other => other.to_string(),
    };
    let safe = text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (safe && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::{http_client, JwksSettings, JwksSource, VerifyKey};
    use crate::sign::SigningKey;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ISS: &str = "https://issuer.test";

    fn verifier(limits: VerifierLimits) -> Verifier {
        let metrics = crate::metrics::Metrics::standalone();
        let settings = JwksSettings {
            refresh_interval: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            max_bytes: 1 << 16,
            kid_refetch_interval: Duration::from_secs(30),
            kid_refetch_wait: Duration::from_millis(10),
        };
        let key = VerifyKey::hmac(Alg::HS256, SECRET).unwrap();
        let keys =
            JwksCache::new("main", vec![], JwksSource::None, settings, vec![key], http_client(), metrics.clone());
        let provider = Provider {
            name: "main".into(),
            issuer: ISS.into(),
            audiences: vec!["orders".into()],
            algorithms: vec![Alg::HS256],
            leeway_secs: 0,
            claims_to_headers: vec![],
            payload_header: None,
            keys: Arc::new(keys),
            profile: TokenProfile::default(),
        };
        Verifier::new(vec![provider], limits, metrics)
    }

    fn token(sub: &str, padding: usize) -> String {
        let key = SigningKey::hmac(Alg::HS256, "k", SECRET).unwrap();
        let claims =
            json!({"iss": ISS, "aud": "orders", "sub": sub, "exp": unix_now() + 300, "pad": "x".repeat(padding)});
        key.sign_jwt(&claims).unwrap()
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_bytes_as_well_as_entries() {
        let v = verifier(VerifierLimits {
            cache_max_entries: 100_000,
            cache_max_bytes: 1024 * 1024,
            max_concurrent_verifies: 1,
        });
        // 400 tokens of ~8 KiB: 3 MiB of tokens against a 1 MiB budget.
        for i in 0..400 {
            v.verify(&token(&format!("u{i}"), 6000), unix_now(), None).await.unwrap();
        }
        v.run_pending_tasks();
        let (entries, bytes) = v.cache_usage();
        assert!(bytes <= 1024 * 1024, "{bytes} bytes cached");
        assert!(entries > 0 && entries < 200, "{entries} entries of ~8 KiB in 1 MiB");

        // The entry bound still holds for small tokens.
        let v =
            verifier(VerifierLimits { cache_max_entries: 10, cache_max_bytes: 1 << 30, max_concurrent_verifies: 1 });
        for i in 0..50 {
            v.verify(&token(&format!("u{i}"), 0), unix_now(), None).await.unwrap();
        }
        v.run_pending_tasks();
        assert!(v.cache_usage().0 <= 10, "{:?}", v.cache_usage());
    }

    #[tokio::test]
    async fn verifications_past_the_concurrency_bound_wait_then_shed() {
        let v =
            verifier(VerifierLimits { cache_max_entries: 100, cache_max_bytes: 1 << 20, max_concurrent_verifies: 1 });
        let held = v.verifies.try_acquire().unwrap();
        let start_by = Instant::now() + Duration::from_millis(30);
        let refused = v.verify(&token("a", 0), unix_now(), Some(start_by)).await.unwrap_err();
        assert_eq!(refused, DenyReason::Overloaded);
        assert!(Instant::now() >= start_by, "it waited for a permit until the deadline");
        // A cache hit needs no permit.
        drop(held);
        let t = token("b", 0);
        v.verify(&t, unix_now(), None).await.unwrap();
        let held = v.verifies.try_acquire().unwrap();
        assert!(v.verify(&t, unix_now(), Some(Instant::now())).await.is_ok());
        // A waiting verification proceeds as soon as the permit is released.
        let c = token("c", 0);
        let waiter = v.verify(&c, unix_now(), Some(Instant::now() + Duration::from_secs(5)));
        let release = async move {
            tokio::task::yield_now().await;
            drop(held);
        };
        let (verified, ()) = tokio::join!(waiter, release);
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[test]
    fn header_values_are_rendered_safely() {
        assert_eq!(render_header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(render_header_value(&json!(["a", "b"])).as_deref(), Some("a b"));
        assert_eq!(render_header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(render_header_value(&json!({"k":1})).as_deref(), Some("{\"k\":1}"));
        assert_eq!(render_header_value(&json!("evil\r\nx-admin: 1")), None);
        assert_eq!(render_header_value(&json!(null)), None);
        assert_eq!(render_header_value(&json!("")), None);
    }
}
