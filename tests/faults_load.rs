//! Hostile traffic in volume against hopauth in-process (docs/security.md F12): random
//! issuers, key ids and subjects at a high rate leave the set of metric series unchanged
//! and the deny log within its per-second budget, and no log line holds a token.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use hopauth::authorizer::DENY_LOG_LINES_PER_SEC;
use hopauth::grpc::AuthorizationService;
use serde_json::json;
use support::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

fn check_request(token: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    path: "/x".into(),
                    headers: [("authorization".to_string(), bearer(token))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn status(svc: &AuthorizationService, token: &str) -> i32 {
    match svc.check_request(&check_request(token)).await.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.unwrap().code,
        other => panic!("{other:?}"),
    }
}

/// What a counting `tracing` layer saw.
#[derive(Default, Debug)]
struct Seen {
    /// "denied" lines written.
    denied: u64,
    /// Sum of the `suppressed` counts reported.
    suppressed: u64,
    /// Unix seconds in which a "denied" line was written, with how many.
    per_second: std::collections::BTreeMap<i64, u64>,
    /// Any field value that looked like a whole token.
    token_leaks: Vec<String>,
}

#[derive(Clone, Default)]
struct Counting(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Fields {
    message: String,
    suppressed: Option<u64>,
    values: Vec<String>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = Some(value);
        }
    }

    fn record_str(&mut self, _field: &Field, value: &str) {
        self.values.push(value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text.clone();
        }
        self.values.push(text);
    }
}

impl<S: tracing::Subscriber> Layer<S> for Counting {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut seen = self.0.lock().unwrap();
        if f.message == "denied" {
            seen.denied += 1;
            *seen.per_second.entry(now()).or_default() += 1;
        }
        if let Some(n) = f.suppressed {
            seen.suppressed += n;
        }
        // A JWS starts with the base64url of `{"`: no field may carry one.
        seen.token_leaks.extend(f.values.into_iter().filter(|v| v.contains("eyJ")));
    }
}

/// Series (sample lines) in a Prometheus text exposition, by name and labels.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

async fn scrape(client: &reqwest::Client, addr: std::net::SocketAddr) -> String {
    let r = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// F12. The test runs on one thread (the default `#[tokio::test]`), so every task of this
/// hopauth logs to the counting subscriber set for this thread, and nothing else does.
#[tokio::test]
async fn f12_random_iss_kid_and_sub_keep_metric_series_fixed_and_deny_logs_rate_limited() {
    let seen = Counting::default();
    let _log = tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    // A loaded machine can stall this thread past max_queue_delay (503 `overloaded`, F10's
    // business); here every Check must reach its real answer.
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "max_queue_delay: 10s\n")).await;
    wait_ready(&hopauth).await;
    let svc = AuthorizationService::new(hopauth.authorizer.clone());
    let client = reqwest::Client::new();

    // Each round: a random issuer, a random kid, a random subject (valid), random bytes.
    let mut n = 0u64;
    let mut round = |keys: &Keys| {
        n += 1;
        let r = format!("{:016x}", rand_suffix().wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n);
        let mut c = claims(&format!("sub-{r}"));
        c["iss"] = json!(format!("https://evil-{r}.test"));
        let random_iss = keys.es.sign_jwt(&c).unwrap();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": format!("kid-{r}")});
        let random_kid = keys.es.sign_with_header(&header, &claims(&format!("k-{r}"))).unwrap();
        let random_sub = keys.es.sign_jwt(&claims(&format!("user-{r}"))).unwrap();
        let garbage = format!("eyJ{r}.{r}.{r}");
        [(random_iss, 401), (random_kid, 401), (random_sub, 200), (garbage, 401)]
    };
    let mut denies = 0u64;
    for _ in 0..50 {
        for (token, want) in round(&keys) {
            assert_eq!(status(&svc, &token).await, want);
            denies += u64::from(want != 200);
        }
    }
    let baseline = series(&scrape(&client, hopauth.http_addr).await);

    let start = Instant::now();
    let first_second = now();
    let rounds = 1000;
    for i in 0..rounds {
        for (token, want) in round(&keys) {
            assert_eq!(status(&svc, &token).await, want, "round {i}");
            denies += u64::from(want != 200);
        }
        if i % 250 == 0 {
            assert_eq!(series(&scrape(&client, hopauth.http_addr).await), baseline, "after {i} rounds");
        }
    }
    let took = start.elapsed();
    let after = series(&scrape(&client, hopauth.http_addr).await);
    assert_eq!(
        after.symmetric_difference(&baseline).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "random iss/kid/sub added or removed metric series"
    );

    // One deny in a later second makes hopauth report what the last one suppressed.
    let last_second = now();
    while now() == last_second {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&svc, "not-a-token").await, 401);
    denies += 1;

    let seen = seen.0.lock().unwrap();
    eprintln!(
        "F12: {} Checks ({denies} denied) in {took:?}; {} metric series before and after; \
         {} deny lines written, {} suppressed; busiest second {:?}",
        rounds * 4,
        baseline.len(),
        seen.denied,
        seen.suppressed,
        seen.per_second.values().max()
    );
    assert!(seen.token_leaks.is_empty(), "a log field holds a token: {:?}", &seen.token_leaks[..1]);
    assert_eq!(seen.denied + seen.suppressed, denies, "every deny is either written or counted as suppressed");
    for (second, lines) in &seen.per_second {
        assert!(*lines <= u64::from(DENY_LOG_LINES_PER_SEC), "{lines} deny lines in second {second}");
    }
    let seconds = (now() - first_second + 1) as u64;
    assert!(seen.denied <= (seconds + 1) * u64::from(DENY_LOG_LINES_PER_SEC), "{seen:?}");
    assert!(seen.suppressed > 0, "the flood was big enough to hit the budget");
}
