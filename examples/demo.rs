//! `make demo` / `cargo run --release --example demo`: hopauth end to end, told as a story.
//!
//! Starts, on free loopback ports, a JWKS endpoint with freshly generated keys, hopauth
//! in-process, an echo app (it answers with the headers it received) and a real Envoy
//! configured from `envoy/hopauth.yaml`; then sends requests through Envoy and checks each
//! outcome. Exits 0 when every step behaved as expected, 1 otherwise (naming the step).
//! Output is coloured on a terminal; plain when stdout is not a TTY or `NO_COLOR` is set.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use support::{bearer, claims, now, Reply, Stack};

// ---------------------------------------------------------------------------------------
// Output

fn color_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
}

fn paint(code: &str, text: impl std::fmt::Display) -> String {
    if color_on() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn bold(t: impl std::fmt::Display) -> String {
    paint("1", t)
}
fn dim(t: impl std::fmt::Display) -> String {
    paint("2", t)
}
fn green(t: impl std::fmt::Display) -> String {
    paint("32", t)
}
fn red(t: impl std::fmt::Display) -> String {
    paint("31", t)
}
fn yellow(t: impl std::fmt::Display) -> String {
    paint("33", t)
}
fn cyan(t: impl std::fmt::Display) -> String {
    paint("36", t)
}

/// `eyJhbGciOiJFUzI1…Qx9w` (length): a token short enough to read.
fn short(token: &str) -> String {
    if token.len() <= 28 {
        return token.to_string();
    }
    format!("{}…{} ({} bytes)", &token[..18], &token[token.len() - 6..], token.len())
}

fn status_text(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let text = format!("{status} {reason}");
    match status {
        200..=299 => green(bold(text)),
        400..=499 => yellow(bold(text)),
        _ => red(bold(text)),
    }
}

/// Prints one request: `→ GET <url>` and the headers sent (tokens shortened).
fn show_request(url: &str, headers: &[(&str, &str)], note: &str) {
    println!("  {} {} {}", cyan("→"), bold("GET"), url);
    for (name, value) in headers {
        let value = match value.strip_prefix("Bearer ") {
            Some(token) => format!("Bearer {}", short(token)),
            None => value.to_string(),
        };
        println!("      {}: {}", dim(name), value);
    }
    if !note.is_empty() {
        println!("      {}", dim(note));
    }
}

/// Prints the reply: status, and for a deny the challenge and the error body.
fn show_reply(r: &Reply, elapsed: Duration) {
    println!("  {} {}  {}", cyan("←"), status_text(r.status), dim(format!("{:.1} ms", elapsed.as_secs_f64() * 1e3)));
    if let Some(c) = r.header("www-authenticate") {
        println!("      {}: {}", dim("www-authenticate"), c);
    }
    if r.status != 200 {
        if let (Some(e), Some(d)) = (r.body["error"].as_str(), r.body["error_description"].as_str()) {
            println!("      {}: {{\"error\":\"{e}\",\"error_description\":\"{d}\"}}", dim("body"));
        }
    }
}

fn detail(label: &str, value: impl std::fmt::Display) {
    println!("      {} {}", dim(format!("{label}:")), value);
}

// ---------------------------------------------------------------------------------------
// Checks

/// One step's expectations; the first unmet one is the step's failure.
type Outcome = Result<(), String>;

macro_rules! expect {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn expect_status(r: &Reply, want: u16) -> Outcome {
    expect!(r.status == want, "expected HTTP {want}, got {} (body: {})", r.status, r.body);
    Ok(())
}

fn expect_invalid_token(r: &Reply, description: &str) -> Outcome {
    expect_status(r, 401)?;
    let c = r.header("www-authenticate").unwrap_or("");
    expect!(
        c.starts_with("Bearer realm=\"hopauth\"") && c.contains("error=\"invalid_token\""),
        "expected a `Bearer realm=\"hopauth\", error=\"invalid_token\"` challenge, got `{c}`"
    );
    expect!(
        r.body["error_description"] == description,
        "expected error_description \"{description}\", got {}",
        r.body["error_description"]
    );
    Ok(())
}

struct Demo {
    stack: Stack,
    step: usize,
    total: usize,
    failures: Vec<String>,
}

impl Demo {
    async fn get(&self, path: &str, headers: &[(&str, &str)], note: &str) -> Reply {
        show_request(&self.stack.envoy.url(path), headers, note);
        let start = Instant::now();
        let r = self.stack.get(path, headers).await;
        show_reply(&r, start.elapsed());
        r
    }

    fn begin(&mut self, title: &str) {
        self.step += 1;
        println!();
        println!("{} {}", bold(cyan(format!("[{}/{}]", self.step, self.total))), bold(title));
    }

    fn end(&mut self, title: &str, outcome: Outcome, ok: &str) {
        match outcome {
            Ok(()) => println!("  {} {}", green("✔ as expected:"), ok),
            Err(e) => {
                println!("  {} {}", red(bold("✘ UNEXPECTED:")), red(&e));
                self.failures.push(format!("step {} ({title}): {e}", self.step));
            }
        }
    }

    fn token(&self, claims: &Value) -> String {
        self.stack.keys.es.sign_jwt(claims).expect("signing a demo token")
    }
}

// ---------------------------------------------------------------------------------------
// The story

const STEPS: usize = 8;

async fn step_valid(d: &mut Demo, alice: &str) {
    let title = "A valid ES256 token is let through, with the verified identity";
    d.begin(title);
    let auth = bearer(alice);
    let r =
        d.get("/orders/42", &[("authorization", &auth)], "ES256 token: sub=alice, scope=\"orders:read profile\"").await;
    let outcome = (|| {
        expect_status(&r, 200)?;
        let sub = r.upstream_header("x-jwt-sub");
        let scope = r.upstream_header("x-jwt-scope");
        let forwarded = r.upstream_header("authorization");
        detail("app saw x-jwt-sub", sub.unwrap_or("(absent)"));
        detail("app saw x-jwt-scope", scope.unwrap_or("(absent)"));
        let same = forwarded == Some(auth.as_str());
        detail(
            "app saw authorization",
            if same { "unchanged, byte for byte (the next hop can verify it again)" } else { "CHANGED" },
        );
        expect!(sub == Some("alice"), "the app saw x-jwt-sub {sub:?}, expected \"alice\"");
        expect!(scope == Some("orders:read profile"), "the app saw x-jwt-scope {scope:?}");
        expect!(same, "the Authorization header was not forwarded unchanged: {forwarded:?}");
        Ok(())
    })();
    d.end(title, outcome, "200, identity headers set by hopauth, token forwarded untouched");
}

async fn step_no_token(d: &mut Demo) {
    let title = "No token at all";
    d.begin(title);
    let r = d.get("/orders/42", &[], "").await;
    let outcome = (|| {
        expect_status(&r, 401)?;
        let c = r.header("www-authenticate");
        expect!(c == Some("Bearer realm=\"hopauth\""), "expected `Bearer realm=\"hopauth\"`, got {c:?}");
        Ok(())
    })();
    d.end(title, outcome, "401 with a bare RFC 6750 challenge (no error code when no token was sent)");
}

async fn step_tampered(d: &mut Demo, alice: &str) {
    let title = "A tampered token: payload changed to sub=root, signature kept";
    d.begin(title);
    let mut parts: Vec<&str> = alice.split('.').collect();
    let mut forged: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("payload is base64url"))
        .expect("payload is JSON");
    forged["sub"] = "root".into();
    forged["scope"] = "admin".into();
    let payload = URL_SAFE_NO_PAD.encode(forged.to_string());
    parts[1] = &payload;
    let tampered = parts.join(".");
    let auth = bearer(&tampered);
    let r = d
        .get(
            "/orders/42",
            &[("authorization", &auth)],
            "alice's header and signature, payload says sub=root, scope=admin",
        )
        .await;
    let outcome = expect_invalid_token(&r, "token signature is invalid");
    d.end(title, outcome, "401 invalid_token: the signature does not cover the new payload");
}

async fn step_expired(d: &mut Demo) {
    let title = "An expired token";
    d.begin(title);
    let mut c = claims("alice");
    let now = now();
    c["iat"] = (now - 600).into();
    c["nbf"] = (now - 600).into();
    c["exp"] = (now - 60).into();
    let auth = bearer(&d.token(&c));
    let r = d.get("/orders/42", &[("authorization", &auth)], "validly signed, exp = one minute ago").await;
    let outcome = expect_invalid_token(&r, "token has expired");
    d.end(title, outcome, "401 invalid_token, \"token has expired\"");
}

async fn step_spoof(d: &mut Demo, alice: &str) {
    let title = "A client tries to spoof its identity with x-jwt-sub: root";
    d.begin(title);
    let auth = bearer(alice);
    let headers = [("authorization", auth.as_str()), ("x-jwt-sub", "root"), ("x-jwt-scope", "admin")];
    let r = d.get("/orders/42", &headers, "alice's valid token plus forged identity headers").await;
    let outcome = (|| {
        expect_status(&r, 200)?;
        let sub = r.upstream_header("x-jwt-sub");
        let scope = r.upstream_header("x-jwt-scope");
        detail("app saw x-jwt-sub", sub.unwrap_or("(absent)"));
        detail("app saw x-jwt-scope", scope.unwrap_or("(absent)"));
        expect!(sub == Some("alice"), "the app saw x-jwt-sub {sub:?}: the spoofed header got through");
        expect!(scope == Some("orders:read profile"), "the app saw x-jwt-scope {scope:?}");
        Ok(())
    })();
    d.end(title, outcome, "the client's copies were replaced: the app sees the real subject");
}

async fn step_scope(d: &mut Demo, alice: &str) {
    let title = "Route /admin requires scope \"admin\"";
    d.begin(title);
    let auth = bearer(alice);
    let r = d.get("/admin", &[("authorization", &auth)], "alice's token: scope=\"orders:read profile\"").await;
    let first = (|| {
        expect_status(&r, 403)?;
        let c = r.header("www-authenticate").unwrap_or("");
        expect!(
            c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"admin\""),
            "expected an insufficient_scope challenge naming scope \"admin\", got `{c}`"
        );
        Ok(())
    })();
    println!();
    let mut admin = claims("root");
    admin["scope"] = "admin".into();
    let auth = bearer(&d.token(&admin));
    let r = d.get("/admin", &[("authorization", &auth)], "an admin token: sub=root, scope=\"admin\"").await;
    let outcome = first.and_then(|()| {
        expect_status(&r, 200)?;
        let sub = r.upstream_header("x-jwt-sub");
        detail("app saw x-jwt-sub", sub.unwrap_or("(absent)"));
        expect!(sub == Some("root"), "the app saw x-jwt-sub {sub:?}, expected \"root\"");
        Ok(())
    });
    d.end(title, outcome, "403 insufficient_scope without the scope, 200 with it");
}

/// Returns the milliseconds from the start of the revocation write until the first
/// request through Envoy that was refused.
async fn step_revoke(d: &mut Demo) -> Option<f64> {
    let title = "Revoke a token (by jti) and time until Envoy refuses it";
    d.begin(title);
    let mut c = claims("bob");
    let jti = c["jti"].as_str().unwrap().to_string();
    let exp = c["exp"].as_i64().unwrap();
    c["iat"] = (now() - 60).into();
    let auth = bearer(&d.token(&c));
    let r = d
        .get("/orders/42", &[("authorization", &auth)], "bob's token, before revocation (now in the verified cache)")
        .await;
    if let Err(e) = expect_status(&r, 200) {
        d.end(title, Err(format!("before revocation: {e}")), "");
        return None;
    }

    let url = format!("http://{}/admin/revoke", d.stack.hopauth.http_addr);
    let body = json!({ "jti": jti, "exp": exp });
    println!();
    println!("  {} {} {}", cyan("→"), bold("POST"), url);
    println!("      {}: Bearer {}", dim("authorization"), dim("$HOPAUTH_ADMIN_TOKEN"));
    println!("      {}: {}", dim("body"), body);
    let start = Instant::now();
    let resp = d.stack.admin_revoke(body).await;
    let written = start.elapsed();
    let status = resp.status().as_u16();
    let echo = resp.text().await.unwrap_or_default();
    println!("  {} {}  {}", cyan("←"), status_text(status), dim(format!("{:.1} ms", written.as_secs_f64() * 1e3)));
    detail("body", &echo);
    if status != 200 {
        d.end(title, Err(format!("POST /admin/revoke answered {status}: {echo}")), "");
        return None;
    }

    // Send bob's token again and again until it is refused.
    let mut attempts = 0;
    let (refused, took, r) = loop {
        attempts += 1;
        let sent = Instant::now();
        let r = d.stack.get("/orders/42", &[("authorization", &auth)]).await;
        if r.status != 200 || start.elapsed() > Duration::from_secs(5) {
            break (start.elapsed(), sent.elapsed(), r);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!();
    show_request(
        &d.stack.envoy.url("/orders/42"),
        &[("authorization", &auth)],
        "bob's token again, right after the write",
    );
    show_reply(&r, took);
    let ms = refused.as_secs_f64() * 1e3;
    let outcome = expect_invalid_token(&r, "token has been revoked");
    if outcome.is_ok() {
        detail(
            "revocation took effect",
            bold(format!(
                "{ms:.1} ms from the write to the refusal through Envoy ({} request{} after the write)",
                attempts,
                if attempts == 1 { "" } else { "s" }
            )),
        );
    }
    d.end(title, outcome, "the still-cached token is refused; no wait for its exp");
    Some(ms)
}

async fn step_metrics(d: &mut Demo) {
    let title = "Metrics";
    d.begin(title);
    let url = format!("http://{}/metrics", d.stack.hopauth.http_addr);
    detail("Prometheus metrics are at", bold(&url));
    println!("  {} {} {}", cyan("→"), bold("GET"), url);
    let outcome = async {
        let resp = d.stack.client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        println!("  {} {}", cyan("←"), status_text(status));
        expect!(status == 200, "GET {url} answered {status}");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("hopauth_checks_total{"))
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .collect();
        for l in &lines {
            println!("      {}", l);
        }
        for series in [
            r#"hopauth_checks_total{decision="allow",reason="verified"}"#,
            r#"hopauth_checks_total{decision="deny",reason="missing_token"}"#,
            r#"hopauth_checks_total{decision="deny",reason="bad_signature"}"#,
            r#"hopauth_checks_total{decision="deny",reason="expired"}"#,
            r#"hopauth_checks_total{decision="deny",reason="insufficient_scope"}"#,
            r#"hopauth_checks_total{decision="deny",reason="revoked"}"#,
        ] {
            expect!(lines.iter().any(|l| l.starts_with(series)), "no non-zero {series} in {url}");
        }
        Ok::<(), String>(())
    }
    .await;
    d.end(title, outcome, "every decision above is counted, by decision and reason");
}

async fn run() -> i32 {
    println!("{}", bold("hopauth demo: JWTs verified by Envoy ext_authz on every hop"));
    // Panics with install instructions when Envoy is missing, before anything starts.
    let envoy_bin = support::envoy_bin();
    println!("{}", dim("starting a JWKS endpoint, hopauth, an echo app and Envoy on free ports…"));
    let started = Instant::now();
    let stack = Stack::start().await;
    println!();
    println!("  {:<22} {}", "JWKS (generated keys)", stack.jwks.url());
    println!("  {:<22} {} (ext_authz gRPC)", "hopauth", stack.hopauth.grpc_addr);
    println!("  {:<22} http://{} (metrics, health, admin)", "hopauth HTTP", stack.hopauth.http_addr);
    println!("  {:<22} {} (envoy/hopauth.yaml, {})", "Envoy", stack.envoy.url("/"), envoy_bin.display());
    println!("  {:<22} http://{}", "Envoy admin", stack.envoy.admin);
    println!("  {}", dim(format!("ready in {:.1} s", started.elapsed().as_secs_f64())));

    let mut d = Demo { stack, step: 0, total: STEPS, failures: Vec::new() };
    let alice = d.token(&claims("alice"));
    step_valid(&mut d, &alice).await;
    step_no_token(&mut d).await;
    step_tampered(&mut d, &alice).await;
    step_expired(&mut d).await;
    step_spoof(&mut d, &alice).await;
    step_scope(&mut d, &alice).await;
    let revocation_ms = step_revoke(&mut d).await;
    step_metrics(&mut d).await;

    let ext_authz_errors = d.stack.envoy.stat("http.ingress.ext_authz.error").await;
    if ext_authz_errors != 0 {
        d.failures
            .push(format!("Envoy counted {ext_authz_errors} ext_authz errors (every deny must be a normal answer)"));
    }

    // Stop everything before reporting: Envoy first (killed on drop), then hopauth.
    let Demo { stack, failures, .. } = d;
    let Stack { envoy, hopauth, .. } = stack;
    drop(envoy);
    hopauth.shutdown().await;

    println!();
    if failures.is_empty() {
        let revocation = revocation_ms.map(|ms| format!("; revocation took effect in {ms:.1} ms")).unwrap_or_default();
        println!("{}", green(bold(format!("✔ all {STEPS} steps behaved as expected{revocation}"))));
        0
    } else {
        println!("{}", red(bold(format!("✘ demo FAILED: {} problem(s)", failures.len()))));
        for f in &failures {
            println!("  {}", red(f));
        }
        1
    }
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(run());
    // Every process and task is gone before exiting: `run` dropped Envoy and stopped hopauth.
    drop(runtime);
    std::process::exit(code);
}
