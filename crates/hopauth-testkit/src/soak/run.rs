//! The run: start every part, drive traffic and faults, then stop everything and report.

use super::*;

/// Runs the soak and stops everything it started.
pub async fn run(opts: Options) -> Report {
    assert!(opts.hopauth_bin.exists(), "hopauth binary {} missing: build it first", opts.hopauth_bin.display());
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), free_port(), &[]);
    let mut rpid = redis_pid(&redis);
    let token_exp = now() + opts.duration.as_secs() as i64 + 600;

    // Three issuers, three key families.
    let mut providers = Vec::new();
    for (i, alg) in [Alg::ES256, Alg::EdDSA, Alg::RS256].into_iter().enumerate() {
        let issuer = format!("https://issuer-{i}.test");
        let key = SigningKey::generate(alg, &format!("p{i}-k0")).unwrap();
        let jwks = JwksServer::start(jwks_of(&[&key]), &issuer).await;
        let jwks_proxy = FaultProxy::start(jwks.addr).await;
        providers.push(Provider {
            name: format!("p{i}"),
            issuer,
            alg,
            jwks,
            jwks_proxy,
            keys: vec![KeyState { key, published: Instant::now() - Duration::from_secs(3600), withdrawn: None }],
        });
    }
    let invalid = invalid_requests(&providers[0], token_exp);
    let mut state = State { providers, toks: Vec::new(), invalid, windows: Windows::default() };
    for p in 0..3 {
        state.mint_tokens(p, 0, token_exp);
    }

    let (grpc_port, http_port) = (free_port(), free_port());
    let config = dir.path().join("hopauth.yaml");
    // hopauth reaches Redis through the fault proxy; revocation writers go straight to it
    // (a partition between hopauth and Redis leaves the writers connected).
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    std::fs::write(&config, hopauth_config(grpc_port, http_port, &proxy.redis_url(), &state.providers, &opts)).unwrap();
    let mut hopauth = HopauthProc {
        bin: opts.hopauth_bin.clone(),
        config,
        log: dir.path().join("hopauth.log"),
        http_port,
        child: None,
    };
    hopauth.spawn();
    hopauth.wait_ready(Duration::from_secs(30)).await;
    let app = start_echo().await;
    let grpc_addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let envoy = Envoy::start("hopauth.yaml", grpc_addr, app).await;

    let world = Arc::new(World {
        opts: opts.clone(),
        t0: Instant::now(),
        state: Mutex::new(state),
        counts: Mutex::new(Counts::default()),
        stop: AtomicBool::new(false),
        envoy_port: envoy.port,
        http_port,
        redis_url: redis.url(),
        revocation_latency_faults: Mutex::new(Latencies::default()),
        revocation_latency_calm: Mutex::new(Latencies::default()),
        refusal_latency_faults: Mutex::new(Latencies::default()),
        revocation_retries: Mutex::new(0),
        not_enforced: Mutex::new(0),
        revocations: Mutex::new(0),
    });
    let mut tasks = Vec::new();
    for w in 0..opts.workers {
        tasks.push(tokio::spawn(traffic(world.clone(), w)));
    }
    tasks.push(tokio::spawn(revoker(world.clone())));

    let mut report = Report::default();
    let mut samples: Vec<Sample> = Vec::new();
    let envoy_pid = envoy.pid();
    let sample = |hopauth: &HopauthProc, samples: &mut Vec<Sample>| {
        samples.push(Sample {
            at: world.t0.elapsed(),
            hopauth_pid: hopauth.pid(),
            hopauth: proc_sample(hopauth.pid()),
            envoy: proc_sample(envoy_pid),
        });
    };
    let mut last_sample = Instant::now() - opts.sample_every;
    let mut restarts: Vec<Duration> = opts.hopauth_restarts_at.iter().map(|f| opts.duration.mul_f64(*f)).collect();
    restarts.sort();
    let deadline = world.t0 + opts.duration;
    let ms_ = opts.max_staleness;
    let long = ms_ + Duration::from_secs(2);
    let mut step = 0usize;
    // Pauses `d`, taking samples on the way.
    macro_rules! pause {
        ($d:expr) => {{
            let end = Instant::now() + $d;
            while Instant::now() < end {
                if last_sample.elapsed() >= opts.sample_every {
                    sample(&hopauth, &mut samples);
                    last_sample = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100).min(end.saturating_duration_since(Instant::now()))).await;
            }
        }};
    }
    pause!(opts.fault_gap);
    while Instant::now() + long + opts.fault_gap < deadline {
        let elapsed = world.t0.elapsed();
        if restarts.first().is_some_and(|r| elapsed >= *r) {
            restarts.remove(0);
            let w = world.open_window("hopauth restart".into(), Some(Duration::ZERO), false);
            hopauth.stop().await;
            hopauth.spawn();
            hopauth.wait_ready(Duration::from_secs(30)).await;
            world.close_window(w);
            report.hopauth_restarts += 1;
            report.faults.push(format!("{:.0}s hopauth restart", elapsed.as_secs_f64()));
            pause!(opts.fault_gap);
            continue;
        }
        let fault = CYCLE[step % CYCLE.len()];
        step += 1;
        report.faults.push(format!("{:.0}s {}", world.t0.elapsed().as_secs_f64(), fault.name()));
        let redis_window = |long: bool| world.open_window(fault.name(), long.then_some(ms_ / 2), true);
        match fault {
            Fault::RedisRestartShort => {
                let w = redis_window(false);
                redis.kill();
                pause!(Duration::from_millis(300));
                redis.restart();
                rpid = redis_pid(&redis);
                world.close_window(w);
            }
            Fault::RedisDownLong => {
                let w = redis_window(true);
                redis.kill();
                pause!(long);
                redis.restart();
                rpid = redis_pid(&redis);
                world.close_window(w);
            }
            Fault::PartitionShort | Fault::PartitionLong => {
                // hopauth ↔ Redis only: open connections hang, new ones never complete.
                let is_long = fault == Fault::PartitionLong;
                let w = redis_window(is_long);
                proxy.partition();
                pause!(if is_long { long } else { ms_ / 3 });
                proxy.heal();
                world.close_window(w);
            }
            Fault::Reset => {
                let w = redis_window(false);
                proxy.reset_all();
                pause!(Duration::from_millis(200));
                world.close_window(w);
            }
            Fault::Slow => {
                // 400 ms each way: more than Envoy's 200 ms Check deadline, which a Check
                // never waits on (no Redis round trip per request).
                let w = redis_window(false);
                proxy.set_latency(Dir::Up, Duration::from_millis(400));
                proxy.set_latency(Dir::Down, Duration::from_millis(400));
                pause!(ms_ / 2);
                proxy.set_latency(Dir::Up, Duration::ZERO);
                proxy.set_latency(Dir::Down, Duration::ZERO);
                world.close_window(w);
            }
            Fault::FrozenLong => {
                // redis-server stopped (SIGSTOP): every connection, writers' too, hangs.
                let w = redis_window(true);
                signal(rpid, "-STOP");
                pause!(long);
                signal(rpid, "-CONT");
                world.close_window(w);
            }
            Fault::JwksFailing(p) | Fault::JwksDown(p) => {
                // Invisible: last-good keys serve through fetch failures.
                let w = world.open_window(fault.name(), None, false);
                let down = matches!(fault, Fault::JwksDown(_));
                {
                    let s = world.state.lock().unwrap();
                    if down {
                        s.providers[p].jwks_proxy.set_refuse(true);
                        s.providers[p].jwks_proxy.reset_all();
                    } else {
                        s.providers[p].jwks.set_failing(true);
                    }
                }
                pause!(opts.jwks_refresh * 2 + GRACE);
                {
                    let s = world.state.lock().unwrap();
                    s.providers[p].jwks_proxy.set_refuse(false);
                    s.providers[p].jwks.set_failing(false);
                }
                world.close_window(w);
            }
            Fault::Rotate(p) => {
                report.key_rotations += 1;
                // Publish the new key, sign with it at once, then withdraw the old one.
                {
                    let mut s = world.state.lock().unwrap();
                    let alg = s.providers[p].alg;
                    let k = s.providers[p].keys.len();
                    let key = SigningKey::generate(alg, &format!("p{p}-k{k}")).unwrap();
                    s.providers[p].keys.push(KeyState { key, published: Instant::now(), withdrawn: None });
                    s.providers[p].publish();
                    s.mint_tokens(p, k, token_exp);
                }
                pause!(opts.jwks_refresh + GRACE);
                let mut s = world.state.lock().unwrap();
                let prov = &mut s.providers[p];
                let n = prov.keys.len();
                for k in &mut prov.keys[..n - 1] {
                    if k.withdrawn.is_none() {
                        k.withdrawn = Some(Instant::now());
                    }
                }
                prov.publish();
            }
        }
        pause!(opts.fault_gap);
    }
    // Faults are over: let the system settle, then stop traffic.
    let remaining = deadline.saturating_duration_since(Instant::now());
    pause!(remaining.max(RECOVERY));
    world.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Let the last probes finish.
    let probes_end = Instant::now() + Duration::from_secs(35);
    loop {
        let done = *world.revocations.lock().unwrap() as usize;
        let measured = world.revocation_latency_faults.lock().unwrap().len()
            + world.revocation_latency_calm.lock().unwrap().len()
            + *world.not_enforced.lock().unwrap() as usize;
        if measured >= done || Instant::now() > probes_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sample(&hopauth, &mut samples);

    // Every revocation enforced, every withdrawn key refused, the rest still passes.
    let mut conn = Conn::connect(envoy.port).await.expect("connect to Envoy for the final check");
    let toks: Vec<(String, String, bool, bool)> = {
        let s = world.state.lock().unwrap();
        s.toks
            .iter()
            .map(|t| {
                (
                    t.auth.clone(),
                    t.sub.clone(),
                    t.revoked.is_some(),
                    s.providers[t.provider].keys[t.key].withdrawn.is_some(),
                )
            })
            .collect()
    };
    for (auth, sub, revoked, withdrawn) in toks {
        let r = conn.get("/soak", &[("authorization", &auth)]).await.expect("final check answered");
        if revoked {
            report.final_revoked_checked += 1;
            // A revoked token of a withdrawn key may be refused for its key instead.
            let refused_as_revoked = r.status == 401 && r.body_text().contains("revoked");
            if !refused_as_revoked && !withdrawn {
                report.final_revoked_not_enforced.push(format!("{sub}: {} {}", r.status, r.body_text()));
            }
        } else if withdrawn {
            report.final_withdrawn_checked += 1;
            if r.status != 401 {
                report.final_withdrawn_allowed += 1;
            }
        } else {
            report.final_valid_checked += 1;
            if !(r.status == 200 && r.upstream_saw_sub(&sub)) {
                report.final_valid_refused += 1;
            }
        }
    }
    let _ = rpid;

    report.ran = world.t0.elapsed();
    report.strict_withdrawal = opts.strict_withdrawal;
    report.counts = world.counts.lock().unwrap().clone();
    report.revocations = *world.revocations.lock().unwrap();
    report.revocation_retries = *world.revocation_retries.lock().unwrap();
    report.revocations_not_enforced_in_time = *world.not_enforced.lock().unwrap();
    report.revocation_latency_faults = world.revocation_latency_faults.lock().unwrap().clone();
    report.revocation_latency_calm = world.revocation_latency_calm.lock().unwrap().clone();
    report.refusal_latency_faults = world.refusal_latency_faults.lock().unwrap().clone();
    // Flatness: hopauth over its last lifetime, Envoy over the whole run; the first two
    // samples of each are warm-up (caches filling, connections opening).
    let last_pid = hopauth.pid();
    let h: Vec<ProcSample> = samples.iter().filter(|s| s.hopauth_pid == last_pid).filter_map(|s| s.hopauth).collect();
    let e: Vec<ProcSample> = samples.iter().filter_map(|s| s.envoy).collect();
    flatness("hopauth (last lifetime)", &h, 2, &mut report);
    flatness("envoy", &e, 2, &mut report);
    report.samples = samples;
    hopauth.stop().await;
    drop(envoy);
    drop(proxy);
    drop(redis);
    report
}
