//! The story's steps other than revocation: log in, the chain verified at every hop,
//! refusals at the gateway and past it, scope-protected routes, and what hopauth counted.

use hopauth_testkit::bearer;
use hopauth_testkit::issuer_stack::TokenReply;

use crate::checks::{claims_of, ensure, expect_invalid_token, expect_status, tamper};
use crate::output::{cyan, detail, short, show_request, status_text};
use crate::story::Demo;
use crate::Mode;

pub(crate) async fn step_login(d: &mut Demo) -> Option<TokenReply> {
    let title = "Log in at the issuer (password grant)";
    d.begin(title);
    let (r, _) = d
        .post_form("/token", &[("grant_type", "password"), ("username", "alice"), ("password", "alice-pw")], None)
        .await;
    let outcome = (|| {
        ensure!(r.status == 200, "login answered {}: {}", r.status, r.body);
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
        ensure!(c["sub"] == "alice", "the access token's sub is {}", c["sub"]);
        Ok(())
    })();
    let ok = outcome.is_ok();
    d.end(title, outcome, "an ES256 access token (5 min) and a rotating refresh token");
    ok.then_some(r)
}

pub(crate) async fn step_chain(d: &mut Demo, token: &str) {
    let title = "Call A, which calls B, which calls C: every hop verifies the same token";
    d.begin(title);
    let outcome = d.call_chain(token, "client → gateway → A's sidecar → A → B's sidecar → B → C's sidecar → C").await;
    d.end(title, outcome, "200; each service saw alice, verified by its own sidecar");
}

pub(crate) async fn step_refused_at_gateway(d: &mut Demo, token: &str) {
    let title = "No token, then a tampered token: refused at the gateway";
    d.begin(title);
    let a_stat = "http.inbound.downstream_rq_total";
    let a_before = d.sys.chain.hops[0].envoy.stat(a_stat).await;
    let url = d.sys.chain.gateway_url("/chain");
    let r = d.get(&url, &[], "no Authorization header").await;
    let first = (|| {
        expect_status(&r, 401)?;
        let c = r.header("www-authenticate");
        ensure!(c == Some("Bearer realm=\"hopauth\""), "expected `Bearer realm=\"hopauth\"`, got {c:?}");
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
        ensure!(a_after == a_before, "{} refused request(s) reached A's sidecar", a_after - a_before);
        Ok(())
    });
    d.end(title, outcome, "401 both times; neither request entered the mesh");
}

pub(crate) async fn step_bypass(d: &mut Demo, token: &str) {
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

pub(crate) async fn step_scope(d: &mut Demo, token: &str) {
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
        ensure!(
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
        ensure!(sub == "alice", "A saw sub {sub}");
        Ok(())
    });
    d.end(title, outcome, "403 insufficient_scope without the scope, 200 with it");
}

pub(crate) async fn step_metrics(d: &mut Demo) {
    let title = "What hopauth counted";
    d.begin(title);
    let h = d.sys.hopauth_of(0);
    let url = format!("http://{}/metrics", h.http_addr());
    show_request("GET", &url, &[], if d.sys.redis() { "the gateway's hopauth" } else { "the shared hopauth" });
    let outcome = async {
        let text = get_text(d, &url).await?;
        print_nonzero(&text, "hopauth_checks_total{");
        match d.sys.mode {
            Mode::ExtAuthz => {
                let errors = d.sys.chain.ext_authz_errors().await;
                detail("Envoy ext_authz errors, all four Envoys", errors);
                ensure!(errors == 0, "Envoy counted {errors} ext_authz errors (every deny must be a normal answer)");
            }
            Mode::Module => {
                // The module's counters as Envoy's own stats, on the gateway's admin port.
                let url = format!("http://{}/stats/prometheus", d.sys.chain.gateway.admin);
                show_request("GET", &url, &[], "the gateway Envoy's own stats of the module");
                let text = get_text(d, &url).await?;
                let series = "envoy_dynamicmodulescustom_hopauth_checks_total{";
                print_nonzero(&text, series);
                ensure!(text.lines().any(|l| l.starts_with(series)), "Envoy's stats have no {series}…}} series");
            }
        }
        Ok::<(), String>(())
    }
    .await;
    let ok = match d.sys.mode {
        Mode::ExtAuthz => "every decision is counted by decision and reason; no ext_authz errors",
        Mode::Module => "every decision is counted by decision and reason, in /metrics and in Envoy's stats",
    };
    d.end(title, outcome, ok);
}

/// `GET url` answered 200: its body.
async fn get_text(d: &Demo, url: &str) -> Result<String, String> {
    let resp = d.sys.client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    println!("  {} {}", cyan("←"), status_text(status));
    ensure!(status == 200, "GET {url} answered {status}");
    Ok(text)
}

/// The lines of `text` starting with `series` whose value is not 0.
fn print_nonzero(text: &str, series: &str) {
    for l in text.lines().filter(|l| l.starts_with(series)) {
        if l.rsplit(' ').next().is_some_and(|v| v != "0") {
            println!("      {l}");
        }
    }
}
