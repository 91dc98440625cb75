//! Revocation, timed per hop (every hop polled from the moment the revoke is sent), then
//! a refresh that continues the session while the revoked token stays refused.

use std::time::{Duration, Instant};

use hopauth_testkit::{bearer, send, ADMIN_TOKEN};
use serde_json::json;

use crate::checks::{claims_of, expect_invalid_token};
use crate::output::{bold, cyan, detail, dim, green, ms, red, short, show_request, status_text};
use crate::story::Demo;

pub(crate) async fn step_revoke(d: &mut Demo, token: &str) {
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
        let url = format!("http://{}/admin/revoke", d.sys.hopauth_of(0).http_addr());
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

pub(crate) async fn step_refresh(d: &mut Demo, refresh_token: &str, revoked: &str) -> Option<String> {
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
