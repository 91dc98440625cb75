//! One behaviour of the FFI layer per test, each observed through the probe filter in a
//! real Envoy.

use super::*;

/// http_get_header (every value, raw bytes), http_get_headers(_size), http_set_header,
/// http_add_header, http_set_header(null) = remove, per-route config and the filter config.
#[test]
fn headers_are_read_set_added_and_removed_and_route_config_is_per_route() {
    let envoy = probe_envoy();
    let raw: &[u8] = b"a\x80\xfeb";
    let r = get(
        envoy.listen,
        "/a/x",
        &[
            ("x-probe-in", b"one"),
            ("x-probe-in", b"two"),
            ("x-probe-raw", raw),
            ("x-probe-set", b"client"),
            ("x-probe-add", b"client"),
            ("x-probe-remove", b"client"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    // get_header: both values, in order (index 0 then 1, count from optional_size).
    assert_eq!(r.upstream_values("x-probe-seen"), ["one|two"]);
    // get_headers: the whole-map listing shows both too.
    assert_eq!(r.upstream_values("x-probe-listed-in"), ["2"]);
    // Raw bytes come through unmodified, not as UTF-8.
    assert_eq!(r.upstream_values("x-probe-hex"), ["6180fe62"]);
    // set replaces, add appends, set(null) removes.
    assert_eq!(r.upstream_values("x-probe-set"), ["module"]);
    assert_eq!(r.upstream_values("x-probe-add"), ["client", "module"]);
    assert!(r.upstream_values("x-probe-remove").is_empty(), "{}", r.body_text());
    assert_eq!(r.upstream_values("x-probe-label"), [PROBE_LABEL]);
    // Pseudo-headers read like any other.
    assert_eq!(r.upstream_values("x-probe-path"), ["/a/x"]);
    // The wrapper refuses an increment whose label count differs from the definition.
    assert_eq!(r.upstream_values("x-probe-bad-labels-refused"), ["yes"]);
    // get_most_specific_route_config: the route's own config, or none.
    assert_eq!(r.upstream_values("x-probe-route"), ["alpha"]);
    let b = get(envoy.listen, "/b", &[]);
    assert_eq!(b.upstream_values("x-probe-route"), ["beta"]);
    let none = get(envoy.listen, "/c", &[]);
    assert_eq!(none.upstream_values("x-probe-route"), ["none"]);
    assert_eq!(none.upstream_values("x-probe-listed-in"), ["0"]);
}

/// http_send_response: status, headers, body, details; the upstream never sees it.
#[test]
fn local_reply_carries_status_headers_body_and_stops_the_request() {
    let envoy = probe_envoy();
    let r = get(envoy.listen, "/a", &[("x-probe-reply", b"418"), ("x-tag", b"reply")]);
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-probe-replied"), Some(&b"yes"[..]));
    assert_eq!(r.body_text(), "probe reply 418");
    assert_eq!(envoy.echo.hits.load(Ordering::SeqCst), 0, "the upstream saw a replied request");
    wait_until("the access log line of the reply", Duration::from_secs(10), || {
        envoy.access_log_text().contains("tag=reply")
    });
    let log = envoy.access_log_text();
    assert!(log.contains("code=418 details=abi_probe_reply"), "{log}");
}

/// http_set_dynamic_metadata_string / _number / _string_batch / _bool / _struct, seen by
/// the access log.
#[test]
fn dynamic_metadata_reaches_the_access_log() {
    let envoy = probe_envoy();
    get(envoy.listen, "/a", &[("x-tag", b"md-a"), ("x-probe-in", b"1"), ("x-probe-in", b"2")]);
    get(envoy.listen, "/b", &[("x-tag", b"md-b")]);
    wait_until("both access log lines", Duration::from_secs(10), || {
        let l = envoy.access_log_text();
        l.contains("tag=md-a") && l.contains("tag=md-b")
    });
    let log = envoy.access_log_text();
    let line = |tag: &str| {
        log.lines()
            .find(|l| l.starts_with(&format!("tag={tag} ")))
            .unwrap_or_else(|| panic!("no line for {tag} in {log}"))
            .to_owned()
    };
    // The batch of 17 strings is two calls (16 + 1): the first, the last of the first call
    // and the one in the second call all arrive. The boolean is a JSON `true`, not a string.
    let rest = "batch=v0,v15,v16 flag=true nested=";
    assert!(line("md-a").contains(&format!("route=alpha in_count=2 {rest}")), "{log}");
    assert!(line("md-b").contains(&format!("route=beta in_count=0 {rest}")), "{log}");
    // http_set_dynamic_metadata_struct: merged into the namespace (route and in_count
    // stay), with an object, a boolean and a list kept as such, not as JSON text.
    for (tag, route) in [("md-a", "alpha"), ("md-b", "beta")] {
        let l = line(tag);
        let nested = l.split(" nested=").nth(1).and_then(|r| r.split(" code=").next()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(nested).unwrap_or_else(|e| panic!("nested is not JSON ({e}): {l}"));
        assert_eq!(v["route"], route, "{l}");
        assert_eq!(v["ok"], true, "{l}");
        assert_eq!(v["list"][0].as_f64(), Some(1.0), "{l}");
        assert_eq!(v["list"][1], "x", "{l}");
        assert!(l.contains(" code=200"), "{l}");
    }
}

/// http_filter_scheduler_new (worker) / _commit (module thread) / _delete,
/// on_http_filter_scheduled on the worker, http_filter_continue_decoding.
#[test]
fn a_held_request_is_resumed_from_another_thread_through_the_scheduler() {
    let envoy = probe_envoy();
    let delay = Duration::from_millis(300);
    let started = Instant::now();
    let r = get(envoy.listen, "/a", &[("x-probe-suspend-ms", b"300")]);
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(elapsed >= delay, "answered after {elapsed:?}, before the {delay:?} hold ended");
    // on_scheduled ran on Envoy's worker thread, not on the committing module thread.
    let resumed = r.upstream_values("x-probe-resumed");
    assert_eq!(resumed.len(), 1, "{}", r.body_text());
    assert_eq!(resumed, ["on-the-holding-worker"]);
    // Headers set before the hold are still there.
    assert_eq!(r.upstream_values("x-probe-route"), ["alpha"]);

    // A client that hangs up while held: the late commit finds an inert scheduler (the
    // filter and its scheduler were deleted) and Envoy keeps serving.
    let hits_before = envoy.echo.hits.load(Ordering::SeqCst);
    let mut c = TcpStream::connect(("127.0.0.1", envoy.listen)).unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\nx-probe-suspend-ms: 200\r\nx-tag: gone\r\n\r\n").unwrap();
    let sent = Instant::now();
    wait_until("Envoy to hold the request", Duration::from_secs(5), || {
        envoy.counter("dynamicmodulescustom.abi_probe_requests") == Some(2)
    });
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    wait_until("the hung-up stream's access log line", Duration::from_secs(10), || {
        envoy.access_log_text().contains("tag=gone")
    });
    wait_until("the hold of the gone request to run out", Duration::from_secs(5), || {
        sent.elapsed() > Duration::from_millis(400)
    });
    let after = get(envoy.listen, "/b", &[]);
    assert_eq!(after.status, 200);
    assert_eq!(envoy.echo.hits.load(Ordering::SeqCst), hits_before + 1, "the hung-up request reached the upstream");
}

/// http_filter_config_define_counter (in config_new) and http_filter_increment_counter,
/// without and with labels.
#[test]
fn the_request_counter_is_an_envoy_stat() {
    let envoy = probe_envoy();
    assert_eq!(envoy.counter("dynamicmodulescustom.abi_probe_requests"), Some(0));
    for _ in 0..3 {
        assert_eq!(get(envoy.listen, "/c", &[]).status, 200);
    }
    assert_eq!(envoy.counter("dynamicmodulescustom.abi_probe_requests"), Some(3));
    assert_eq!(get(envoy.listen, "/c", &[("x-probe-reply", b"403")]).status, 403);
    let prom = admin_get(envoy.admin, "/stats/prometheus");
    assert!(
        prom.lines().any(|l| l.starts_with("envoy_dynamicmodulescustom_abi_probe_requests") && l.ends_with(" 4")),
        "{prom}"
    );
    // The labelled counter: one series per label value.
    let series = |outcome: &str| {
        prom.lines()
            .find(|l| {
                l.starts_with("envoy_dynamicmodulescustom_abi_probe_outcomes{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!(series("passed"), Some(3), "{prom}");
    assert_eq!(series("replied"), Some(1), "{prom}");
}

/// catch_unwind at the hook: a panic answers 503, is logged through
/// envoy_dynamic_module_callback_log, and Envoy keeps serving.
#[test]
fn a_panic_in_the_filter_answers_503_and_envoy_keeps_serving() {
    let envoy = probe_envoy();
    let r = get(envoy.listen, "/a", &[("x-probe-panic", b"1")]);
    assert_eq!(r.status, 503);
    assert_eq!(r.body_text(), "{\"error\":\"internal\",\"reason\":\"filter failure\"}");
    assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(envoy.echo.hits.load(Ordering::SeqCst), 0);
    for _ in 0..2 {
        assert_eq!(get(envoy.listen, "/a", &[]).status, 200);
    }
    // The same from the scheduled hook, on a held request.
    let r = get(envoy.listen, "/a", &[("x-probe-panic", b"scheduled"), ("x-probe-suspend-ms", b"50")]);
    assert_eq!(r.status, 503);
    assert_eq!(r.body_text(), "{\"error\":\"internal\",\"reason\":\"filter failure\"}");
    assert_eq!(envoy.echo.hits.load(Ordering::SeqCst), 2);
    assert_eq!(get(envoy.listen, "/a", &[]).status, 200);
    assert!(envoy.child_alive(), "Envoy died after the panic");
    let log = envoy.log_text();
    assert!(log.contains("filter \"abi_probe\" panicked in on_request_headers: abi_probe: panic requested"), "{log}");
    assert!(
        log.contains("filter \"abi_probe\" panicked in on_scheduled: abi_probe: panic requested in on_scheduled"),
        "{log}"
    );
}

/// envoy_dynamic_module_callback_log from config_new reaches Envoy's log.
#[test]
fn module_log_lines_reach_envoys_log() {
    let envoy = probe_envoy();
    let log = envoy.log_text();
    assert!(log.contains(&format!("abi_probe: filter config loaded, label={PROBE_LABEL}")), "{log}");
    // Envoy compares the string from on_program_init with its own and says so.
    assert!(
        log.contains(&format!("Dynamic module ABI version {ABI_VERSION} matched")),
        "Envoy did not match the module's ABI version:\n{log}"
    );
}

/// A bad filter_config, or an unknown filter_name, makes Envoy refuse the config, and the
/// log says why.
#[test]
fn a_bad_filter_config_is_refused_with_a_message_naming_it() {
    let (code, log) = spawn_envoy("abi_probe", "nonsense").err().expect("Envoy accepted a bad config");
    assert_ne!(code, 0);
    assert!(
        log.contains("abi_probe: filter_config must be `label=<text>`, got \\\"nonsense\\\"")
            || log.contains("abi_probe: filter_config must be `label=<text>`, got \"nonsense\""),
        "{log}"
    );
    let (code, log) = spawn_envoy("no_such_filter", "label=x").err().expect("Envoy accepted an unknown filter_name");
    assert_ne!(code, 0);
    assert!(log.contains("unknown filter_name \"no_such_filter\""), "{log}");
}
