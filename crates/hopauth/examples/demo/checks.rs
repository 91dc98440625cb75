//! What a step expects of a reply (the first unmet expectation is the step's failure),
//! and the token surgery the story needs: its claims, unverified, and a tampered copy.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hopauth_testkit::Reply;
use serde_json::{json, Value};

/// One step's expectations; the first unmet one is the step's failure.
pub(crate) type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

pub(crate) fn expect_status(r: &Reply, want: u16) -> Outcome {
    ensure!(r.status == want, "expected HTTP {want}, got {} (body: {})", r.status, r.body);
    Ok(())
}

pub(crate) fn expect_invalid_token(r: &Reply, description: &str) -> Outcome {
    expect_status(r, 401)?;
    let c = r.header("www-authenticate").unwrap_or("");
    ensure!(
        c.starts_with("Bearer realm=\"hopauth\"") && c.contains("error=\"invalid_token\""),
        "expected a `Bearer realm=\"hopauth\", error=\"invalid_token\"` challenge, got `{c}`"
    );
    ensure!(
        r.body["error_description"] == description,
        "expected error_description \"{description}\", got {}",
        r.body["error_description"]
    );
    Ok(())
}

/// The `/admin/revoke` body that revokes `token`: its own `jti` and `exp`.
pub(crate) fn revoke_body(token: &str) -> String {
    let c = claims_of(token);
    json!({ "jti": c["jti"], "exp": c["exp"] }).to_string()
}

/// The claims of a JWT, unverified (for display).
pub(crate) fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// `token` with its payload changed to sub=root, scope=admin, the signature kept.
pub(crate) fn tamper(token: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims_of(token);
    forged["sub"] = "root".into();
    forged["scope"] = "admin".into();
    let payload = URL_SAFE_NO_PAD.encode(forged.to_string());
    parts[1] = &payload;
    parts.join(".")
}
