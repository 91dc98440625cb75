//! The tasks that drive a run: traffic workers, the revoker and its enforcement probes.

use super::*;

/// Whether a 503 is Envoy's own (hopauth unreachable, or its Check deadline passed): the
/// shipped configs answer it with this JSON body (older ones with an empty body); hopauth's
/// own 503s name `revocation_unavailable`, `keys_unavailable` or `overloaded`.
pub(super) fn envoy_503(body: &str) -> bool {
    body.is_empty() || body.contains("temporarily_unavailable")
}

pub(super) async fn traffic(world: Arc<World>, worker: usize) {
    let mut conn = match Conn::connect(world.envoy_port).await {
        Ok(c) => c,
        Err(e) => panic!("worker {worker}: cannot connect to Envoy: {e}"),
    };
    let interval = Duration::from_secs_f64(world.opts.workers as f64 / world.opts.rate);
    // Spread the workers' first requests over one interval.
    let mut next = Instant::now() + interval.mul_f64(worker as f64 / world.opts.workers as f64);
    while !world.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        next = (next + interval).max(Instant::now());
        let (sent, auth, path) = world.pick();
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        let t_send = Instant::now();
        let result = tokio::time::timeout(world.opts.request_timeout, conn.get(path, &headers)).await;
        let t_recv = Instant::now();
        let response = match result {
            Ok(Ok(r)) => Some(r),
            _ => None,
        };
        world.judge(&sent, response.as_ref(), t_send, t_recv);
    }
}

pub(super) async fn redis_write(url: &str, args: &[String]) -> bool {
    let attempt = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        cmd.query_async::<()>(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(())))
}

pub(super) async fn admin_write(http_port: u16, body: Value) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    matches!(
        client
            .post(format!("http://127.0.0.1:{http_port}/admin/revoke"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await,
        Ok(r) if r.status() == 200
    )
}

/// Revokes a live token every `revoke_every`, cycling through the four ways, retrying until
/// the write is acknowledged, then probes it until it is refused.
pub(super) async fn revoker(world: Arc<World>) {
    let mut n = 0usize;
    while !world.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(world.opts.revoke_every).await;
        let how = RevokeHow::ALL[n % 4];
        n += 1;
        let (tok, auth, jti, exp, iss, sub) = {
            let mut s = world.state.lock().unwrap();
            let live = s.live();
            let Some(&tok) = live.choose(&mut rand::rng()) else { continue };
            let first_attempt = Instant::now();
            s.toks[tok].revoked = Some(Revocation { how, first_attempt, done: None });
            let t = &s.toks[tok];
            (tok, t.auth.clone(), t.jti.clone(), t.exp, s.providers[t.provider].issuer.clone(), t.sub.clone())
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let ttl = (exp - now()).max(1).to_string();
            let before = now();
            let ok = match how {
                RevokeHow::RedisJti => {
                    redis_write(
                        &world.redis_url,
                        &["SET".into(), format!("hopauth:revoked:jti:{jti}"), "1".into(), "EX".into(), ttl],
                    )
                    .await
                }
                RevokeHow::RedisSubject => {
                    redis_write(
                        &world.redis_url,
                        &[
                            "SET".into(),
                            format!("hopauth:revoked:sub:{iss}|{sub}"),
                            before.to_string(),
                            "EX".into(),
                            "86400".into(),
                        ],
                    )
                    .await
                }
                RevokeHow::AdminJti => admin_write(world.http_port, json!({"jti": jti, "exp": exp})).await,
                RevokeHow::AdminSubject => {
                    admin_write(world.http_port, json!({"iss": iss, "sub": sub, "before": before})).await
                }
            };
            if ok {
                break;
            }
            if world.stop.load(Ordering::Relaxed) && attempts > 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let done = Instant::now();
        let first_attempt = {
            let mut s = world.state.lock().unwrap();
            let r = s.toks[tok].revoked.as_mut().unwrap();
            r.done = Some(done);
            r.first_attempt
        };
        *world.revocations.lock().unwrap() += 1;
        if attempts > 1 {
            *world.revocation_retries.lock().unwrap() += 1;
        }
        let w = world.clone();
        tokio::spawn(async move { probe(w, auth, first_attempt, done).await });
    }
}

/// Sends a just-revoked token until it is refused as revoked; records the latency.
pub(super) async fn probe(world: Arc<World>, auth: String, first_attempt: Instant, done: Instant) {
    let Ok(mut conn) = Conn::connect(world.envoy_port).await else { return };
    let end = done + Duration::from_secs(30);
    let mut refused = false;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), conn.get("/soak", &[("authorization", &auth)])).await;
        if let Ok(Ok(r)) = r {
            if r.status != 200 && !refused {
                refused = true;
                let faulty = world.state.lock().unwrap().windows.any(first_attempt, Instant::now());
                if faulty {
                    world.refusal_latency_faults.lock().unwrap().push(Instant::now().saturating_duration_since(done));
                }
            }
            if r.status == 401 && r.body_text().contains("revoked") {
                let latency = Instant::now().saturating_duration_since(done);
                let faulty = world.state.lock().unwrap().windows.any(first_attempt, Instant::now());
                let target = if faulty { &world.revocation_latency_faults } else { &world.revocation_latency_calm };
                target.lock().unwrap().push(latency);
                return;
            }
        }
        if Instant::now() > end {
            *world.not_enforced.lock().unwrap() += 1;
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
