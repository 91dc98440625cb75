//! The run: JWKS, hopauth, the echo app and the gateway Envoy, the burst and the paced phase.

use super::report::ENVOY_STATS;
use super::*;

/// Starts JWKS, hopauth (in this process), the echo app and the gateway Envoy, runs the
/// phases and stops everything.
pub async fn run(opts: &Options) -> Report {
    // Ours: a socket per connection plus the servers in this process; Envoy (inheriting
    // the limit) the same plus its upstream connections.
    let fd_soft_limit = ensure_fd_limit(opts.connections as u64 + 2_000);
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let hopauth = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
    wait_ready(&hopauth).await;
    let app = start_echo().await;
    let port = pick_port();
    let envoy = Envoy::start_with(
        "gateway.yaml",
        hopauth.grpc_addr,
        &[
            ("port_value: 10000", format!("port_value: {port}")),
            ("port_value: 9001", format!("port_value: {}", hopauth.grpc_addr.port())),
            ("port_value: 8080", format!("port_value: {}", app.port())),
            ("path: /dev/stdout", "path: /dev/null".to_string()),
        ],
    )
    .await;

    let users: Arc<Vec<(String, String)>> = Arc::new(
        (0..opts.users)
            .map(|i| {
                let sub = format!("load-user-{i}");
                let token = keys.es.sign_jwt(&claims(&sub)).unwrap();
                (sub, bearer(&token))
            })
            .collect(),
    );

    let n = opts.connections;
    // Every connection task and this one meet at each phase boundary.
    let opened = Arc::new(Barrier::new(n + 1));
    let go_warm = Arc::new(Barrier::new(n + 1));
    let go_sweep = Arc::new(Barrier::new(n + 1));
    let window = Arc::new(Semaphore::new(opts.window));
    let warm_window = Arc::new(Semaphore::new(opts.warm_window));
    let go_paced = Arc::new(Barrier::new(n + 1));
    let go_burst = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let connecting = Arc::new(Semaphore::new(opts.connect_parallelism));
    let connect_started = Instant::now();
    let paced_start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (opened, go_warm, go_sweep, go_paced, go_burst, done) =
            (opened.clone(), go_warm.clone(), go_sweep.clone(), go_paced.clone(), go_burst.clone(), done.clone());
        let (connecting, window, warm_window, users, paced_start, opts) =
            (connecting.clone(), window.clone(), warm_window.clone(), users.clone(), paced_start.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let conn = {
                let _permit = connecting.acquire().await.unwrap();
                Conn::connect(port).await
            };
            opened.wait().await;
            let (sub, auth) = &users[i % users.len()];
            let mut phases: [Phase; 4] = Default::default();
            let [warm, sweep, paced, burst] = &mut phases;
            let Ok(mut conn) = conn else {
                for b in [&go_warm, &go_sweep, &go_paced, &go_burst, &done] {
                    b.wait().await;
                }
                return (false, 0, phases);
            };
            go_warm.wait().await;
            // Warm-up: each user's token once, so the verify cache holds every token (real
            // traffic repeats a session's token on every call).
            if i < users.len() {
                let _permit = warm_window.acquire().await.unwrap();
                warm.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            go_sweep.wait().await;
            // Sweep: every connection once, at most `window` in flight.
            {
                let _permit = window.acquire().await.unwrap();
                sweep.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            go_paced.wait().await;
            let start = *paced_start.get_or_init(Instant::now);
            let mut at: Vec<Duration> = {
                let mut rng = rand::rng();
                let per_conn = if opts.open_loop { opts.paced_per_conn } else { 0 };
                (0..per_conn).map(|_| opts.paced_over.mul_f64(rng.random::<f64>())).collect()
            };
            at.sort_unstable();
            for offset in at {
                let when = start + offset;
                tokio::time::sleep_until(when.into()).await;
                // Open loop: a request held up by an earlier slow answer counts from when it
                // was due, so queueing shows in the latency.
                paced.one(&mut conn, auth, sub, opts.request_timeout, when).await;
            }
            go_burst.wait().await;
            if opts.open_loop {
                burst.one(&mut conn, auth, sub, opts.request_timeout, Instant::now()).await;
            }
            done.wait().await;
            (true, conn.reconnects, phases)
        }));
    }

    opened.wait().await;
    let connect_took = connect_started.elapsed();
    let connected_at_gateway = || envoy.stat("http.edge.downstream_cx_active");
    // Envoy may accept the last few sockets a moment after our connect() returned.
    let want = n as u64;
    let mut held = connected_at_gateway().await;
    let settle = Instant::now() + Duration::from_secs(5);
    while held < want && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = connected_at_gateway().await;
    }
    let envoy_sample = proc_sample(envoy.pid());
    let this_sample = proc_sample(std::process::id());

    go_warm.wait().await;
    let t = Instant::now();
    go_sweep.wait().await;
    let warm_took = t.elapsed();
    let t = Instant::now();
    go_paced.wait().await;
    let sweep_took = t.elapsed();
    let t = Instant::now();
    go_burst.wait().await;
    let paced_took = t.elapsed();
    let t = Instant::now();
    done.wait().await;
    let burst_took = t.elapsed();

    let cpu = |pid: u32| proc_sample(pid).map_or(0, |s| s.cpu_ticks);
    let envoy_cpu_secs = cpu(envoy.pid()).saturating_sub(envoy_sample.map_or(0, |s| s.cpu_ticks)) as f64 / 100.0;
    let this_cpu_secs = cpu(std::process::id()).saturating_sub(this_sample.map_or(0, |s| s.cpu_ticks)) as f64 / 100.0;
    let mut report = Report {
        envoy_cpu_secs,
        this_cpu_secs,
        connections: n,
        window: opts.window,
        warm_window: opts.warm_window,
        open_loop: opts.open_loop,
        paced_rate: (n * opts.paced_per_conn) as f64 / opts.paced_over.as_secs_f64(),
        held_open_at_gateway: held,
        connect_took,
        fd_soft_limit,
        envoy: envoy_sample,
        this_process: this_sample,
        ..Default::default()
    };
    for t in tasks {
        let (connected, reconnects, [warm, sweep, paced, burst]) = t.await.expect("connection task");
        report.warm.merge(&warm);
        report.sweep.merge(&sweep);
        if !connected {
            report.connect_failures += 1;
        }
        report.reconnects += reconnects;
        report.burst.merge(&burst);
        report.paced.merge(&paced);
    }
    report.warm.took = warm_took;
    report.sweep.took = sweep_took;
    report.burst.took = burst_took;
    report.paced.took = paced_took;
    for name in ENVOY_STATS {
        report.envoy_stats.push((name, envoy.stat(name).await));
    }
    // Every connection closed: Envoy's count goes back down (nothing leaked at the gateway).
    wait_until("gateway connections closed", Duration::from_secs(10), || async {
        envoy.stat("http.edge.downstream_cx_active").await == 0
    })
    .await;
    drop(envoy);
    hopauth.shutdown().await;
    report
}
