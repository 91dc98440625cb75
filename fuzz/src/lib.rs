//! What the fuzz targets share: a `RequestView` read from raw bytes, and the whole-Check
//! fixture (an `AuthorizationService` over a fixed Ed25519 JWKS file, an HMAC secret and
//! the memory revocation store) with the independent checks an allow must pass.
//!
//! The keys here are test keys, fixed so that committed seeds carry tokens that verify.

use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth::config::Config;
use hopauth::grpc::AuthorizationService;
use hopauth::metrics::Metrics;
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use hopauth_core::token::RequestView;
use serde_json::Value;

/// The whole-Check provider's issuer and audience.
pub const ISSUER: &str = "https://issuer.fuzz.test";
pub const AUDIENCE: &str = "svc";
/// A `jti` revoked in the fixture's store: its tokens must never be allowed.
pub const REVOKED_JTI: &str = "revoked-jti";
/// A subject whose tokens issued before now are revoked.
pub const REVOKED_SUB: &str = "revoked-sub";
/// The HMAC secret (HS256) of the fixture's provider, and its environment variable.
pub const HMAC_SECRET: &[u8] = b"hopauth-fuzz-hmac-secret-0123456789abcdef";
pub const HMAC_ENV: &str = "HOPAUTH_FUZZ_HMAC_SECRET";
/// The seed of the fixture's Ed25519 key (`kid` below): a test key, public on purpose.
pub const ED25519_SEED: [u8; 32] = *b"hopauth fuzz ed25519 test key 01";
pub const ED25519_KID: &str = "fuzz-ed";
/// Leeway on `exp`/`nbf` in the fixture's config.
pub const LEEWAY_SECS: i64 = 30;
/// `exp` of the seed tokens: 2100-01-01, far enough to stay valid.
pub const SEED_EXP: i64 = 4_102_444_800;

/// PKCS#8 v1 of an Ed25519 private key from its 32-byte seed (RFC 8410 §7).
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(seed);
    der
}

/// The fixture's signing keys: Ed25519 (JWKS file) and HS256 (configured secret).
pub fn signing_keys() -> (SigningKey, SigningKey) {
    let ed = SigningKey::from_pkcs8(Alg::EdDSA, ED25519_KID, &ed25519_pkcs8(&ED25519_SEED)).expect("valid Ed25519 key");
    let hs = SigningKey::hmac(Alg::HS256, "fuzz-hs", HMAC_SECRET).expect("valid HMAC key");
    (ed, hs)
}

/// A request read from bytes: the first line is the path, each further line a header
/// `name:value` (bytes, any case). `\n` separates; values may hold anything else.
pub struct FuzzRequest<'a> {
    pub path: &'a str,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> FuzzRequest<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut lines = data.split(|b| *b == b'\n');
        let first = lines.next().unwrap_or_default();
        let path = match std::str::from_utf8(first) {
            Ok(p) => p,
            Err(e) => std::str::from_utf8(&first[..e.valid_up_to()]).expect("valid prefix"),
        };
        let headers = lines
            .map(|line| match line.iter().position(|b| *b == b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            })
            .collect();
        FuzzRequest { path, headers }
    }
}

impl RequestView for FuzzRequest<'_> {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        let name = name.as_bytes().to_vec();
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| *v)
    }
    fn path(&self) -> &str {
        self.path
    }
}

/// The whole-Check fixture: built once per process.
pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub service: AuthorizationService,
    pub ed_public: Vec<u8>,
    /// Tokens of `REVOKED_SUB` issued at or before this (or without `iat`) are revoked.
    pub revoked_before: i64,
    _jwks_dir: TempDir,
}

/// A directory removed when the fixture goes (it lives for the process).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config of the whole-Check fixture; `jwks_file` holds the Ed25519 public key.
pub fn fixture_config(jwks_file: &std::path::Path) -> String {
    format!(
        r#"sources:
  - header: authorization
    prefix: "Bearer "
  - cookie: access_token
  - query: access_token
providers:
  - name: fuzz
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [EdDSA, HS256]
    hmac_secret_env: {HMAC_ENV}
    leeway: {LEEWAY_SECS}s
    jwks:
      file: {}
      kid_refetch_wait: 1ms
    claims_to_headers:
      sub: x-jwt-sub
    payload_header: x-jwt-payload
revocation:
  backend: memory
"#,
        jwks_file.display()
    )
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Set before any other thread exists: the fuzz target has not started yet.
        std::env::set_var(HMAC_ENV, std::str::from_utf8(HMAC_SECRET).expect("ASCII secret"));
        let (ed, _) = signing_keys();
        let dir = std::env::temp_dir().join(format!("hopauth-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let jwks_file = dir.join("jwks.json");
        let jwks = serde_json::json!({ "keys": [ed.public_jwk()] });
        std::fs::write(&jwks_file, jwks.to_string()).expect("write JWKS");
        let config = Config::from_yaml(&fixture_config(&jwks_file), std::path::Path::new("fuzz.yaml"))
            .expect("fixture config is valid");
        let revoked_before = hopauth_core::clock::unix_now();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let built = hopauth::server::build_authorizer(&config, &Metrics::standalone()).expect("authorizer");
        runtime.block_on(async {
            for cache in &built.jwks {
                cache.refresh().await.expect("the JWKS file loads");
            }
            let store = built.authorizer.revocation();
            store.revoke_jti(REVOKED_JTI, SEED_EXP).await.expect("revoke jti");
            store.revoke_subject(ISSUER, REVOKED_SUB, revoked_before).await.expect("revoke subject");
        });
        assert!(built.authorizer.ready(), "fixture authorizer is ready");
        let ed_public = URL_SAFE_NO_PAD.decode(ed.public_jwk()["x"].as_str().expect("x")).expect("base64 x");
        let service = AuthorizationService::new(built.authorizer);
        Fixture { runtime, service, ed_public, revoked_before, _jwks_dir: TempDir(dir) }
    })
}

/// Independent of hopauth's verifier: whether `token` is one the fixture must be able to
/// allow (signature under a fixture key, issuer, audience, time, not revoked). An allow for
/// a token failing this is a bug. Uses its own base64/JSON/crypto calls on purpose.
pub fn acceptable(token: &str, now: i64, fixture: &Fixture) -> Result<(), String> {
    let ed_public = &fixture.ed_public[..];
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not three segments".into());
    };
    let dec = |seg: &str| URL_SAFE_NO_PAD.decode(seg).map_err(|e| format!("base64: {e}"));
    let header: Value = serde_json::from_slice(&dec(h)?).map_err(|e| format!("header JSON: {e}"))?;
    let claims: Value = serde_json::from_slice(&dec(p)?).map_err(|e| format!("claims JSON: {e}"))?;
    let sig = dec(s)?;
    let input = &token[..h.len() + 1 + p.len()];
    let signed = match header.get("alg").and_then(Value::as_str) {
        Some("EdDSA") => UnparsedPublicKey::new(&ED25519, ed_public).verify(input.as_bytes(), &sig).is_ok(),
        Some("HS256") => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET);
            aws_lc_rs::hmac::verify(&key, input.as_bytes(), &sig).is_ok()
        }
        other => return Err(format!("alg {other:?} is not the fixture's")),
    };
    if !signed {
        return Err("signature does not verify".into());
    }
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("wrong issuer".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !aud_ok {
        return Err("audience".into());
    }
    let exp = claims.get("exp").and_then(Value::as_f64).ok_or("no numeric exp")?;
    if exp + LEEWAY_SECS as f64 <= now as f64 {
        return Err("expired".into());
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        if nbf > (now + LEEWAY_SECS) as f64 {
            return Err("not yet valid".into());
        }
    }
    if claims.get("jti").and_then(Value::as_str) == Some(REVOKED_JTI) {
        return Err("revoked jti".into());
    }
    if claims.get("sub").and_then(Value::as_str) == Some(REVOKED_SUB) {
        let iat = claims.get("iat").and_then(Value::as_f64);
        if iat.is_none_or(|iat| iat.trunc() <= fixture.revoked_before as f64) {
            return Err("revoked subject".into());
        }
    }
    Ok(())
}

/// How long one fuzz iteration may take at most before it is worth a look (not asserted).
pub const SLOW_ITERATION: Duration = Duration::from_millis(500);
