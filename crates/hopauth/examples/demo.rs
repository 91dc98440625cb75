//! `make demo` / `cargo run --release --example demo`: the whole system, told as a story.
//!
//! Starts, on free loopback ports: Redis (when `redis-server` is on `PATH`), the reference
//! issuer (`hopauth issuer`, in-process), hopauth (one per Envoy, sharing Redis; one shared
//! instance on the memory backend without Redis), the edge gateway (`envoy/gateway.yaml`)
//! and the chain A → B → C, each service behind its own sidecar (`envoy/sidecar.yaml`).
//! Then: log in; call A → B → C with every hop verified; no token and a tampered token
//! refused at the gateway; a call that bypasses the gateway refused by B's sidecar; revoke
//! the token at the issuer and time every hop's refusal; refresh and continue; a
//! scope-protected route. Exits 0 when every step behaved, 1 otherwise (naming the step),
//! after stopping every process it started.
//!
//! `--up` (`make up`) starts the same system, prints its URLs and a ready-made `curl`, and
//! keeps it running until Ctrl-C. Output is coloured on a terminal; plain when stdout is
//! not a TTY or `NO_COLOR` is set. The wiring is the tests': tests/support/issuer_stack.rs,
//! tests/support/chain_stack.rs, tests/support/redis_server.rs.

use hopauth_testkit as support;
use hopauth_testkit::chain_stack;
use hopauth_testkit::issuer_stack;
use hopauth_testkit::redis_server;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chain_stack::{Chain, HopauthAddrs, NAMES};
use issuer_stack::{hopauth_yaml, post_form, start_issuer, IssuerParts, Options, TokenReply};
use serde_json::{json, Value};
use support::{bearer, send, start_hopauth, wait_ready, Reply, ADMIN_TOKEN};

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

/// `eyJhbGciOiJFUzI1…Qx9w (612 bytes)`: a token short enough to read.
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

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `→ METHOD url` and the headers sent (tokens shortened), and a note.
fn show_request(method: &str, url: &str, headers: &[(&str, &str)], note: &str) {
    println!("  {} {} {}", cyan("→"), bold(method), url);
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

/// The reply: status, and for a deny the challenge and the error body.
fn show_reply(r: &Reply, elapsed: Duration) {
    println!("  {} {}  {}", cyan("←"), status_text(r.status), dim(ms(elapsed)));
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

/// The `/admin/revoke` body that revokes `token`: its own `jti` and `exp`.
fn revoke_body(token: &str) -> String {
    let c = claims_of(token);
    json!({ "jti": c["jti"], "exp": c["exp"] }).to_string()
}

/// The claims of a JWT, unverified (for display).
fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
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

// ---------------------------------------------------------------------------------------
// The system

/// Everything `make demo` and `make up` start; `shutdown` stops it all.
struct System {
    issuer: IssuerParts,
    /// `(label, hopauth)`: one per Envoy (gateway, A, B, C) with Redis, one shared without.
    hopauths: Vec<(&'static str, hopauth::server::Running)>,
    chain: Chain,
    client: reqwest::Client,
}

impl System {
    async fn start() -> System {
        let redis = redis_server::which("redis-server").is_some();
        if redis {
            println!("{}", dim("starting Redis, the issuer, 4 hopauths, the gateway and A → B → C on free ports…"));
        } else {
            println!(
                "{} {}",
                yellow(bold("note:")),
                yellow(
                    "redis-server is not on PATH (`make tools` installs it with apt): using the memory \
                     revocation backend with ONE hopauth shared by the gateway and every sidecar. The \
                     issuer's revocations cannot reach hopauth without Redis, so the revocation step \
                     writes through hopauth's own POST /admin/revoke instead."
                )
            );
            println!("{}", dim("starting the issuer, hopauth, the gateway and A → B → C on free ports…"));
        }
        let issuer = start_issuer(&Options { issuer_extra: String::new(), redis }).await;
        let redis_url = issuer.redis.as_ref().map(redis_server::RedisServer::url);
        let yaml = hopauth_yaml(&issuer.config.issuer, redis_url.as_deref());
        let labels: &[&'static str] = if redis { &["gateway", "A", "B", "C"] } else { &["shared"] };
        let mut hopauths = Vec::new();
        for label in labels {
            hopauths.push((*label, start_hopauth(&yaml).await));
        }
        for (_, h) in &hopauths {
            wait_ready(h).await;
        }
        let addr = |i: usize| hopauths[i.min(hopauths.len() - 1)].1.grpc_addr;
        let addrs = HopauthAddrs { gateway: addr(0), sidecars: [addr(1), addr(2), addr(3)] };
        let chain = Chain::start(addrs).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        System { issuer, hopauths, chain, client }
    }

    fn redis(&self) -> bool {
        self.issuer.redis.is_some()
    }

    fn issuer_url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.config.issuer)
    }

    /// The hopauth the Envoy of `hop` asks (0: gateway, 1..=3: A, B, C).
    fn hopauth_of(&self, hop: usize) -> &hopauth::server::Running {
        &self.hopauths[hop.min(self.hopauths.len() - 1)].1
    }

    /// `(label, url)` of the gateway and each sidecar inbound, for `path`.
    fn entry_points(&self, gateway_path: &str, sidecar_path: &str) -> Vec<(String, String)> {
        let mut v = vec![("gateway".to_string(), self.chain.gateway_url(gateway_path))];
        for hop in &self.chain.hops {
            v.push((format!("{}'s sidecar", hop.name), hop.url(sidecar_path)));
        }
        v
    }

    fn print(&self) {
        println!();
        let row = |k: &str, v: String| println!("  {:<26} {}", k, v);
        match &self.issuer.redis {
            Some(r) => row("Redis", r.url()),
            None => row("Redis", yellow("none: memory backend, one shared hopauth")),
        }
        row("issuer", format!("{} (token, revoke, logout, JWKS)", self.issuer.config.issuer));
        row("issuer admin", format!("http://{}/metrics", self.issuer.issuer.admin_addr));
        for (label, h) in &self.hopauths {
            row(&format!("hopauth ({label})"), format!("grpc {} · http://{}/metrics", h.grpc_addr, h.http_addr));
        }
        row("gateway", format!("{} (Envoy admin http://{})", self.chain.gateway_url("/"), self.chain.gateway.admin));
        for hop in &self.chain.hops {
            row(
                &format!("{}'s sidecar", hop.name),
                format!("{} (Envoy admin http://{})", hop.url("/"), hop.envoy.admin),
            );
        }
    }

    async fn login(&self, user: &str, password: &str) -> TokenReply {
        let form = [("grant_type", "password"), ("username", user), ("password", password)];
        post_form(&self.client, &self.issuer_url("/token"), &form, None).await
    }

    async fn shutdown(self) {
        let System { issuer, hopauths, chain, .. } = self;
        drop(chain); // every Envoy is killed on drop
        for (_, h) in hopauths {
            h.shutdown().await;
        }
        let IssuerParts { redis, issuer, dir, .. } = issuer;
        issuer.shutdown().await;
        drop(redis); // killed on drop
        drop(dir);
    }
}

// ---------------------------------------------------------------------------------------
// The story

const STEPS: usize = 8;

struct Demo {
    sys: System,
    step: usize,
    failures: Vec<String>,
    /// Per hop, the time from the revoke request to its first refusal.
    revocation: Vec<(String, Duration)>,
}

impl Demo {
    async fn get(&self, url: &str, headers: &[(&str, &str)], note: &str) -> Reply {
        show_request("GET", url, headers, note);
        let start = Instant::now();
        let r = send(&self.sys.client, url, headers).await;
        show_reply(&r, start.elapsed());
        r
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)], bearer_token: Option<&str>) -> (TokenReply, Duration) {
        let url = self.sys.issuer_url(path);
        let shown: Vec<String> = form
            .iter()
            .map(|(k, v)| if k.contains("token") { format!("{k}={}", short(v)) } else { format!("{k}={v}") })
            .collect();
        let auth = bearer_token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        show_request("POST", &url, &headers, &shown.join("&"));
        let start = Instant::now();
        let r = post_form(&self.sys.client, &url, form, bearer_token).await;
        let took = start.elapsed();
        println!("  {} {}  {}", cyan("←"), status_text(r.status), dim(ms(took)));
        (r, took)
    }

    fn begin(&mut self, title: &str) {
        self.step += 1;
        println!();
        println!("{} {}", bold(cyan(format!("[{}/{STEPS}]", self.step))), bold(title));
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

    /// Sum over every hopauth of one metric line's value.
    fn metric_sum(&self, line_start: &str) -> f64 {
        self.sys
            .hopauths
            .iter()
            .map(|(_, h)| {
                h.metrics
                    .render()
                    .lines()
                    .find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse::<f64>().ok()))
                    .unwrap_or(0.0)
            })
            .sum()
    }

    /// Calls A → B → C through the gateway and prints what each service saw.
    async fn call_chain(&self, token: &str, note: &str) -> Outcome {
        let auth = bearer(token);
        let allowed = r#"hopauth_checks_total{decision="allow",reason="verified"} "#;
        let before = self.metric_sum(allowed);
        let r = self.get(&self.sys.chain.gateway_url("/chain"), &[("authorization", &auth)], note).await;
        expect_status(&r, 200)?;
        let mut node = &r.body;
        for (i, name) in NAMES.iter().enumerate() {
            let sub = node["identity"]["x-jwt-sub"].as_str().unwrap_or("(none)");
            let scope = node["identity"]["x-jwt-scope"].as_str().unwrap_or("(none)");
            println!(
                "      {}{} {} saw sub={} scope=\"{}\" {}",
                "   ".repeat(i),
                if i == 0 { "▶" } else { "└▶" },
                bold(format!("service {name}")),
                green(bold(sub)),
                scope,
                dim(format!("(verified by {name}'s sidecar, token received: {})", node["token_received"])),
            );
            expect!(node["service"] == *name, "hop {} is {}, expected {name}", i + 1, node["service"]);
            expect!(sub == "alice", "{name} saw sub {sub}, expected alice");
            expect!(node["token_received"] == true, "{name} did not receive the token");
            if i + 1 < NAMES.len() {
                expect!(node["next"]["status"] == 200, "{name}'s call to the next hop: {}", node["next"]);
                node = &node["next"]["body"];
            }
        }
        let checks = (self.metric_sum(allowed) - before).round() as u64;
        detail("hopauth allow decisions for this request", format!("{checks} (gateway, A, B, C)"));
        expect!(checks == 4, "expected 4 verified allows (one per hop), got {checks}");
        Ok(())
    }
}

async fn step_login(d: &mut Demo) -> Option<TokenReply> {
    let title = "Log in at the issuer (password grant)";
    d.begin(title);
    let (r, _) = d
        .post_form("/token", &[("grant_type", "password"), ("username", "alice"), ("password", "alice-pw")], None)
        .await;
    let outcome = (|| {
        expect!(r.status == 200, "login answered {}: {}", r.status, r.body);
        let access = r.body["access_token"].as_str().unwrap_or("");
        let c = claims_of(access);
        detail("access_token", short(access));
        detail("refresh_token", short(r.body["refresh_token"].as_str().unwrap_or("")));
        detail("expires_in", &r.body["expires_in"]);
        detail(
            "claims",
            format!(
                "sub={} scope=\"{}\" jti={} sid={}",
                c["sub"],
                c["scope"].as_str().unwrap_or(""),
                c["jti"],
                c["sid"]
            ),
        );
        expect!(c["sub"] == "alice", "the access token's sub is {}", c["sub"]);
        Ok(())
    })();
    let ok = outcome.is_ok();
    d.end(title, outcome, "an ES256 access token (5 min) and a rotating refresh token");
    ok.then_some(r)
}

async fn step_chain(d: &mut Demo, token: &str) {
    let title = "Call A, which calls B, which calls C: every hop verifies the same token";
    d.begin(title);
    let outcome = d.call_chain(token, "client → gateway → A's sidecar → A → B's sidecar → B → C's sidecar → C").await;
    d.end(title, outcome, "200; each service saw alice, verified by its own sidecar");
}

async fn step_refused_at_gateway(d: &mut Demo, token: &str) {
    let title = "No token, then a tampered token: refused at the gateway";
    d.begin(title);
    let a_stat = "http.inbound.downstream_rq_total";
    let a_before = d.sys.chain.hops[0].envoy.stat(a_stat).await;
    let url = d.sys.chain.gateway_url("/chain");
    let r = d.get(&url, &[], "no Authorization header").await;
    let first = (|| {
        expect_status(&r, 401)?;
        let c = r.header("www-authenticate");
        expect!(c == Some("Bearer realm=\"hopauth\""), "expected `Bearer realm=\"hopauth\"`, got {c:?}");
        Ok(())
    })();
    println!();
    let tampered = tamper(token);
    let auth = bearer(&tampered);
    let r = d.get(&url, &[("authorization", &auth)], "alice's token, payload changed to sub=root scope=admin").await;
    let a_after = d.sys.chain.hops[0].envoy.stat(a_stat).await;
    let outcome = first.and_then(|()| {
        expect_invalid_token(&r, "token signature is invalid")?;
        detail("requests that reached A's sidecar", a_after - a_before);
        expect!(a_after == a_before, "{} refused request(s) reached A's sidecar", a_after - a_before);
        Ok(())
    });
    d.end(title, outcome, "401 both times; neither request entered the mesh");
}

/// `token` with its payload changed to sub=root, scope=admin, the signature kept.
fn tamper(token: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims_of(token);
    forged["sub"] = "root".into();
    forged["scope"] = "admin".into();
    let payload = URL_SAFE_NO_PAD.encode(forged.to_string());
    parts[1] = &payload;
    parts.join(".")
}

async fn step_bypass(d: &mut Demo, token: &str) {
    let title = "Bypass the gateway: call B directly";
    d.begin(title);
    let url = d.sys.chain.hops[1].url("/chain");
    let r = d.get(&url, &[("x-jwt-sub", "alice")], "straight to B's sidecar, no token, a forged identity header").await;
    let first = expect_status(&r, 401);
    println!();
    let auth = bearer(&tamper(token));
    let r = d.get(&url, &[("authorization", &auth)], "straight to B's sidecar with the tampered token").await;
    let outcome = first.and_then(|()| expect_invalid_token(&r, "token signature is invalid"));
    d.end(title, outcome, "401: B's sidecar verifies on its own; being inside the mesh grants nothing");
}

async fn step_revoke(d: &mut Demo, token: &str) {
    let title = "Revoke the token; time until every hop refuses it";
    d.begin(title);
    // Every hop accepts it first (and has it in its verified cache).
    let points = d.sys.entry_points("/chain", "/healthz");
    let auth = bearer(token);
    for (label, url) in &points {
        let r = send(&d.sys.client, url, &[("authorization", &auth)]).await;
        if r.status != 200 {
            d.end(title, Err(format!("before revocation, {label} answered {}", r.status)), "");
            return;
        }
    }
    detail("before", "the gateway and the three sidecars accept the token (200)");

    // Poll every hop concurrently from the moment the revocation is sent.
    let start = Instant::now();
    let mut pollers = Vec::new();
    for (label, url) in points.clone() {
        let (client, auth) = (d.sys.client.clone(), auth.clone());
        pollers.push(tokio::spawn(async move {
            loop {
                let r = send(&client, &url, &[("authorization", &auth)]).await;
                if r.status == 401 || start.elapsed() > Duration::from_secs(5) {
                    return (label, start.elapsed(), r);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let written = if d.sys.redis() {
        let (r, took) = d.post_form("/revoke", &[("token", token), ("token_type_hint", "access_token")], None).await;
        detail("the issuer wrote", "the token's jti into Redis; every hopauth's local view is pushed the change");
        (r.status == 200).then_some(took).ok_or(format!("POST /revoke answered {}: {}", r.status, r.body))
    } else {
        let c = claims_of(token);
        let url = format!("http://{}/admin/revoke", d.sys.hopauth_of(0).http_addr);
        let body = json!({ "jti": c["jti"], "exp": c["exp"] });
        show_request("POST", &url, &[("authorization", "Bearer $HOPAUTH_ADMIN_TOKEN")], &body.to_string());
        let t = Instant::now();
        let resp = d.sys.client.post(&url).bearer_auth(ADMIN_TOKEN).json(&body).send().await;
        let took = t.elapsed();
        match resp {
            Ok(resp) if resp.status() == 200 => {
                println!("  {} {}  {}", cyan("←"), status_text(200), dim(ms(took)));
                Ok(took)
            }
            Ok(resp) => Err(format!("POST /admin/revoke answered {}", resp.status())),
            Err(e) => Err(format!("POST /admin/revoke: {e}")),
        }
    };
    let mut results = Vec::new();
    for p in pollers {
        results.push(p.await.expect("poller"));
    }
    let outcome = (|| {
        written?;
        for (label, took, r) in &results {
            let line = format!("{:<16} refused {}", label, bold(ms(*took)));
            let after = dim("after the revoke request was sent");
            println!("      {} {} {}", if r.status == 401 { green("✔") } else { red("✘") }, line, after);
        }
        for (label, _, r) in &results {
            expect_invalid_token(r, "token has been revoked").map_err(|e| format!("{label}: {e}"))?;
        }
        Ok(())
    })();
    d.revocation = results.iter().map(|(l, t, _)| (l.clone(), *t)).collect();
    d.end(title, outcome, "every hop refuses the revoked token within milliseconds, long before its exp");
}

async fn step_refresh(d: &mut Demo, refresh_token: &str, revoked: &str) -> Option<String> {
    let title = "Refresh (the session lives on) and continue";
    d.begin(title);
    let (r, _) =
        d.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], None).await;
    if r.status != 200 {
        d.end(title, Err(format!("refresh answered {}: {}", r.status, r.body)), "");
        return None;
    }
    let access = r.access().to_string();
    detail("new access_token", short(&access));
    detail("new refresh_token", format!("{} (the old one is spent)", short(r.refresh())));
    println!();
    let mut outcome = d.call_chain(&access, "the new access token").await;
    println!();
    let url = d.sys.chain.gateway_url("/chain");
    let old = d.get(&url, &[("authorization", &bearer(revoked))], "the revoked token, once more").await;
    outcome = outcome.and_then(|()| expect_invalid_token(&old, "token has been revoked"));
    d.end(title, outcome, "the new token goes through every hop; the revoked one stays refused");
    Some(access)
}

async fn step_scope(d: &mut Demo, token: &str) {
    let title = "Scope-protected routes on the gateway";
    d.begin(title);
    let auth = bearer(token);
    let scope = claims_of(token)["scope"].as_str().unwrap_or("").to_string();
    let r = d
        .get(
            &d.sys.chain.gateway_url("/admin"),
            &[("authorization", &auth)],
            &format!("/admin requires scope \"admin\"; alice has \"{scope}\""),
        )
        .await;
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
    let r = d
        .get(
            &d.sys.chain.gateway_url("/orders/42"),
            &[("authorization", &auth)],
            "/orders requires scope \"orders:read\" (at the gateway and at A's sidecar)",
        )
        .await;
    let outcome = first.and_then(|()| {
        expect_status(&r, 200)?;
        let sub = r.body["identity"]["x-jwt-sub"].as_str().unwrap_or("(none)");
        detail("service A saw", format!("sub={sub} path={}", r.body["path"]));
        expect!(sub == "alice", "A saw sub {sub}");
        Ok(())
    });
    d.end(title, outcome, "403 insufficient_scope without the scope, 200 with it");
}

async fn step_metrics(d: &mut Demo) {
    let title = "What hopauth counted";
    d.begin(title);
    let h = d.sys.hopauth_of(0);
    let url = format!("http://{}/metrics", h.http_addr);
    show_request("GET", &url, &[], if d.sys.redis() { "the gateway's hopauth" } else { "the shared hopauth" });
    let outcome = async {
        let resp = d.sys.client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        println!("  {} {}", cyan("←"), status_text(status));
        expect!(status == 200, "GET {url} answered {status}");
        for l in text.lines().filter(|l| l.starts_with("hopauth_checks_total{")) {
            if l.rsplit(' ').next().is_some_and(|v| v != "0") {
                println!("      {l}");
            }
        }
        let errors = d.sys.chain.ext_authz_errors().await;
        detail("Envoy ext_authz errors, all four Envoys", errors);
        expect!(errors == 0, "Envoy counted {errors} ext_authz errors (every deny must be a normal answer)");
        Ok::<(), String>(())
    }
    .await;
    d.end(title, outcome, "every decision is counted by decision and reason; no ext_authz errors");
}

async fn run_demo(sys: System) -> i32 {
    let mut d = Demo { sys, step: 0, failures: Vec::new(), revocation: Vec::new() };
    if let Some(login) = step_login(&mut d).await {
        let access = login.access().to_string();
        step_chain(&mut d, &access).await;
        step_refused_at_gateway(&mut d, &access).await;
        step_bypass(&mut d, &access).await;
        step_revoke(&mut d, &access).await;
        if let Some(fresh) = step_refresh(&mut d, login.refresh(), &access).await {
            step_scope(&mut d, &fresh).await;
        }
        step_metrics(&mut d).await;
    }
    let Demo { sys, step, mut failures, revocation } = d;
    if step < STEPS && failures.is_empty() {
        failures.push(format!("only {step} of {STEPS} steps ran"));
    }
    sys.shutdown().await;

    println!();
    if failures.is_empty() {
        let times: Vec<String> = revocation.iter().map(|(l, t)| format!("{l} {}", ms(*t))).collect();
        println!("{}", green(bold(format!("✔ all {STEPS} steps behaved as expected"))));
        println!("  {} {}", dim("revocation → refusal:"), times.join(", "));
        0
    } else {
        println!("{}", red(bold(format!("✘ demo FAILED: {} problem(s)", failures.len()))));
        for f in &failures {
            println!("  {}", red(f));
        }
        1
    }
}

/// The log file of the in-process hopauths and issuer under `make up`.
fn up_log_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hopauth-up-{}.log", std::process::id()))
}

/// Sends the in-process services' logs to `up_log_path()` (`make up` keeps the terminal for
/// the instructions). Failing that, they are not written, and the path says so.
fn log_to_file() -> Option<std::path::PathBuf> {
    let path = up_log_path();
    let file = std::fs::File::create(&path).ok()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .ok()?;
    Some(path)
}

async fn run_up(sys: System, log: Option<std::path::PathBuf>) -> i32 {
    let login = sys.login("alice", "alice-pw").await;
    println!();
    println!("{}", green(bold("The system is up. Explore it; Ctrl-C stops everything.")));
    if login.status == 200 {
        let gw = sys.chain.gateway_url("/chain");
        println!();
        println!("  {}", bold("A fresh token for alice (5 minutes) and a call through A → B → C:"));
        println!("    export TOKEN={}", login.access());
        println!("    export RT={}", login.refresh());
        println!("    curl -s {gw} -H \"authorization: Bearer $TOKEN\"");
        println!(
            "    curl -s {} -H \"authorization: Bearer $TOKEN\"   {}",
            sys.chain.gateway_url("/admin"),
            dim("# 403")
        );
        println!(
            "    curl -s {} -H \"authorization: Bearer $TOKEN\"   {}",
            sys.chain.hops[1].url("/chain"),
            dim("# B directly")
        );
    }
    let iss = sys.issuer_url("");
    println!();
    println!("  {}", bold("Issuer (users alice, bob, carol, dave, erin, frank, mallory; password <name>-pw):"));
    println!("    curl -s {iss}/token -d grant_type=password -d username=alice -d password=alice-pw");
    println!("    curl -s {iss}/token -d grant_type=refresh_token -d refresh_token=\"$RT\"");
    println!("    curl -s {iss}/revoke -d token=\"$TOKEN\"");
    println!("    curl -s -X POST {iss}/logout -H \"authorization: Bearer $TOKEN\"");
    println!("    curl -s {iss}/.well-known/openid-configuration");
    println!("  {}", bold("hopauth admin API:"));
    println!("    export HOPAUTH_ADMIN_TOKEN={ADMIN_TOKEN}");
    println!(
        "    curl -s -X POST http://{}/admin/revoke -H \"authorization: Bearer $HOPAUTH_ADMIN_TOKEN\" -H 'content-type: application/json' -d '{}'   {}",
        sys.hopauth_of(0).http_addr,
        revoke_body(login.access()),
        dim("# revokes $TOKEN")
    );
    println!("  {}", bold("Logs (tail -f):"));
    match &log {
        Some(p) => {
            println!("    {}   {}", p.display(), dim("# hopauth x4 and the issuer (HOPAUTH_LOG=debug for more)"))
        }
        None => println!("    {}", dim("hopauth and issuer logs could not be opened")),
    }
    println!("    {}   {}", sys.chain.gateway_log.display(), dim("# gateway access log"));
    for hop in &sys.chain.hops {
        println!("    {}   {}", hop.access_log.display(), dim(format!("# {} sidecar access log", hop.name)));
    }
    println!("    {}   {}", sys.chain.gateway.log_path().display(), dim("# gateway Envoy's own log"));
    let code = match tokio::signal::ctrl_c().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot wait for Ctrl-C: {e}");
            1
        }
    };
    println!();
    println!("{}", dim("stopping every process…"));
    sys.shutdown().await;
    println!("{}", green("stopped"));
    code
}

async fn run(up: bool) -> i32 {
    println!("{}", bold("hopauth demo: an issuer, a gateway and a chain of services, every hop verifying the JWT"));
    // Panics with install instructions when Envoy is missing, before anything starts.
    let envoy_bin = support::envoy_bin();
    let started = Instant::now();
    let log = if up { log_to_file() } else { None };
    let sys = System::start().await;
    sys.print();
    println!("  {}", dim(format!("Envoy {}; ready in {:.1} s", envoy_bin.display(), started.elapsed().as_secs_f64())));
    if up {
        run_up(sys, log).await
    } else {
        run_demo(sys).await
    }
}

fn main() {
    let up = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--up") => true,
        Some(_) => {
            eprintln!("usage: demo [--up]");
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(run(up));
    // Every process is gone before exiting: `System::shutdown` stopped Envoy, hopauth, the
    // issuer and Redis; dropping the runtime ends the chain services' tasks.
    drop(runtime);
    std::process::exit(code);
}
