//! Hostile traffic in volume against hopauth in-process (docs/security.md F10, F12): random
//! issuers, key ids and subjects at a high rate leave the set of metric series unchanged
//! and the deny log within its per-second budget, and no log line holds a token; a flood of
//! forged RSA tokens leaves cached traffic and `/metrics` served and memory flat.

use hopauth_testkit as support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopauth::grpc::AuthorizationService;
use hopauth_core::authorizer::DENY_LOG_LINES_PER_SEC;
use serde_json::json;
use support::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

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

/// The two tests run one at a time: F10 reads this process's RSS (which F12's hopauth
/// would grow), and F12 counts every deny line of the process (which F10's flood would
/// crowd). With both in parallel, CI once saw F10's RSS grow by 230 MB and F12 count 0 lines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// F12. The test runs on one thread (the default `#[tokio::test]`), so every task of this
/// hopauth logs to the counting subscriber set for this thread, and nothing else does.
#[tokio::test]
async fn f12_random_iss_kid_and_sub_keep_metric_series_fixed_and_deny_logs_rate_limited() {
    let _alone = ONE_AT_A_TIME.lock().await;
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
            assert_eq!(check_status(&svc, &token).await, want);
            denies += u64::from(want != 200);
        }
    }
    let baseline = series(&scrape(&client, hopauth.http_addr).await);

    let start = Instant::now();
    let first_second = now();
    let rounds = 1000;
    for i in 0..rounds {
        for (token, want) in round(&keys) {
            assert_eq!(check_status(&svc, &token).await, want, "round {i}");
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
    assert_eq!(check_status(&svc, "not-a-token").await, 401);
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
    // This layer stamps a line with its own clock read, a moment after hopauth charged it to
    // a second: lines at a second's edge can land in the next, never twice a budget's worth.
    for (second, lines) in &seen.per_second {
        assert!(*lines <= 2 * u64::from(DENY_LOG_LINES_PER_SEC), "{lines} deny lines in second {second}");
    }
    let seconds = (now() - first_second + 1) as u64;
    assert!(seen.denied <= (seconds + 1) * u64::from(DENY_LOG_LINES_PER_SEC), "{seen:?}");
    assert!(seen.suppressed > 0, "the flood was big enough to hit the budget");
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A valid-looking RS256/PS256 token (a real header and claims, distinct `jti`) with a
/// random signature of the right length: a cache miss that costs a full RSA verification.
fn forged_rsa(i: usize) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let (alg, kid) = if i.is_multiple_of(2) { ("RS256", "rs-1") } else { ("PS256", "ps-1") };
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
    let signature: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(&format!("flood-{i}")).to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Latency of one Check run as its own task, as a request arriving on a connection would.
async fn timed(svc: &Arc<AuthorizationService>, token: &Arc<str>) -> (Duration, i32) {
    let (svc, token) = (svc.clone(), token.clone());
    let start = Instant::now();
    let status = tokio::spawn(async move { check_status(&svc, &token).await }).await.unwrap();
    (start.elapsed(), status)
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// F10: a flood of distinct forged RS256/PS256 tokens (each a full RSA verification, 256
/// in flight) beside a valid, cached token. Verifications are bounded in number
/// (`max_concurrent_verifies`), so the cached token keeps a bounded p99, the flood is
/// refused (401, or 503 `overloaded` when it waits too long), memory stays flat and
/// `/metrics` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_a_flood_of_forged_rsa_tokens_leaves_cached_traffic_and_metrics_served() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&hopauth).await;
    let svc = Arc::new(AuthorizationService::new(hopauth.authorizer.clone()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let valid: Arc<str> = keys.es.sign_jwt(&claims("cached")).unwrap().into();
    assert_eq!(check_status(&svc, &valid).await, 200);
    let flood: Arc<Vec<String>> = Arc::new((0..4000).map(forged_rsa).collect());
    assert_eq!(check_status(&svc, &flood[0]).await, 401);
    assert_eq!(check_status(&svc, &flood[1]).await, 401);

    let mut quiet = Vec::new();
    for _ in 0..300 {
        let (took, s) = timed(&svc, &valid).await;
        assert_eq!(s, 200);
        quiet.push(took);
    }
    quiet.sort();
    let rss0 = rss_kib();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(std::collections::BTreeMap::<i32, u64>::new()));
    let driver = {
        let (svc, flood, stop, outcomes) = (svc.clone(), flood.clone(), stop.clone(), outcomes.clone());
        tokio::spawn(async move {
            let mut in_flight = tokio::task::JoinSet::new();
            let mut i = 2usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                while in_flight.len() < 256 {
                    let (svc, token) = (svc.clone(), flood[i % flood.len()].clone());
                    i += 1;
                    in_flight.spawn(async move { check_status(&svc, &token).await });
                }
                let s = in_flight.join_next().await.unwrap().unwrap();
                *outcomes.lock().unwrap().entry(s).or_default() += 1;
            }
            while let Some(s) = in_flight.join_next().await {
                *outcomes.lock().unwrap().entry(s.unwrap()).or_default() += 1;
            }
        })
    };

    let flood_start = Instant::now();
    let scraper = {
        let (client, addr, stop) = (client.clone(), hopauth.http_addr, stop.clone());
        tokio::spawn(async move {
            let (mut took, mut rss) = (Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let r = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert!(r.text().await.unwrap().contains("hopauth_checks_total"));
                took.push(t.elapsed());
                rss.push(rss_kib());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (took, rss)
        })
    };
    let mut loaded = Vec::new();
    while flood_start.elapsed() < Duration::from_secs(3) {
        let (took, s) = timed(&svc, &valid).await;
        assert_eq!(s, 200, "the cached token is always answered");
        loaded.push(took);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    driver.await.unwrap();
    let (mut scrapes, samples) = scraper.await.unwrap();
    let rss: Vec<u64> = std::iter::once(rss0).chain(samples).chain(std::iter::once(rss_kib())).collect();
    let outcomes = outcomes.lock().unwrap().clone();
    loaded.sort();
    scrapes.sort();
    assert!(scrapes.len() >= 3, "/metrics answered only {} times in 3 s", scrapes.len());
    let flooded: u64 = outcomes.values().sum();
    eprintln!(
        "F10: {flooded} forged RSA/PS Checks in {:?} ({:?}); cached token p50/p99/max quiet {:?}/{:?}/{:?}, \
         under flood {:?}/{:?}/{:?} ({} samples); /metrics max {:?} ({} scrapes); RSS KiB {rss:?}",
        flood_start.elapsed(),
        outcomes,
        p(&quiet, 0.5),
        p(&quiet, 0.99),
        quiet.last().unwrap(),
        p(&loaded, 0.5),
        p(&loaded, 0.99),
        loaded.last().unwrap(),
        loaded.len(),
        scrapes.last().unwrap(),
        scrapes.len(),
    );
    assert!(flooded > 1000, "the flood ran");
    assert!(
        outcomes.keys().all(|s| *s == 401 || *s == 503),
        "a forged token got something other than 401/503: {outcomes:?}"
    );
    // Loose bounds for a shared 2-core machine; the numbers above are the measurement.
    assert!(p(&loaded, 0.99) < Duration::from_millis(100), "cached p99 under flood {:?}", p(&loaded, 0.99));
    assert!(*scrapes.last().unwrap() < Duration::from_secs(2));
    let grew = rss.iter().max().unwrap().saturating_sub(rss0);
    assert!(grew < 64 * 1024, "RSS grew by {grew} KiB under the flood: {rss:?}");
}
