//! The FFI layer through a real Envoy 1.40: one assertion per declared callback, the panic
//! path, config refusal, and the version coupling (Envoy version, callback symbols, hooks,
//! ABI string). Envoy loads `libhopauth_envoy.so` (built here with `cargo build --release`)
//! and runs the `abi_probe` filter in front of a tiny echo upstream; every test starts its
//! own Envoy on free loopback ports.
//!
//! Needs `.tools/bin/envoy` (`make envoy`, or `HOPAUTH_ENVOY=<path>`) and binutils' `nm`.
mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hopauth_envoy::{ABI_VERSION, ENVOY_VERSION_LINE};

// ------------------------------------------------------------------------------------------
// Envoy with the module.
// ------------------------------------------------------------------------------------------

struct Envoy {
    child: Child,
    dir: PathBuf,
    listen: u16,
    admin: u16,
    log: PathBuf,
    access_log: PathBuf,
    echo: Echo,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept after a failure, for its envoy.log / access.log.
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Envoy {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    fn counter(&self, name: &str) -> Option<u64> {
        let stats = admin_get(self.admin, "/stats");
        stats.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok())?
        })
    }
}

const PROBE_LABEL: &str = "probe-label-1";

fn config_yaml(
    listen: u16,
    admin: u16,
    echo: u16,
    access_log: &Path,
    filter_name: &str,
    filter_config: &str,
) -> String {
    let route = |prefix: &str, per_route: Option<&str>| {
        let mut r =
            format!("              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: echo }}\n");
        if let Some(v) = per_route {
            r.push_str(&format!(
                "                typed_per_filter_config:
                  abi_probe:
                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                    dynamic_module_config: {{ name: hopauth_envoy }}
                    filter_name: abi_probe
                    filter_config: {{ \"@type\": type.googleapis.com/google.protobuf.StringValue, value: \"{v}\" }}
"
            ));
        }
        r
    };
    let routes = [route("/a", Some("route=alpha")), route("/b", Some("route=beta")), route("/", None)].concat();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {access_log}
              log_format:
                text_format_source:
                  inline_string: "tag=%REQ(X-TAG)% route=%DYNAMIC_METADATA(probe:route)% in_count=%DYNAMIC_METADATA(probe:in_count)% code=%RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS%\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: abi_probe
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: hopauth_envoy }}
              filter_name: {filter_name}
              filter_config: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{filter_config}" }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo} }} }} }} }} ] }} ]
"#,
        access_log = access_log.display(),
    )
}

/// Starts Envoy with `filter_name`/`filter_config`; returns it (ready) or its exit and log.
fn spawn_envoy(filter_name: &str, filter_config: &str) -> Result<Envoy, (i32, String)> {
    let dir = scratch_dir(filter_name);
    let (listen, admin) = (free_port(), free_port());
    let echo = Echo::start();
    let access_log = dir.join("access.log");
    let log = dir.join("envoy.log");
    let cfg = dir.join("envoy.yaml");
    std::fs::write(&cfg, config_yaml(listen, admin, echo.port, &access_log, filter_name, filter_config)).unwrap();
    let child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&cfg)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info", "--file-flush-interval-msec", "50"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn envoy");
    let mut envoy = Envoy { child, dir, listen, admin, log, access_log, echo };
    let end = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Some(status) = envoy.child.try_wait().unwrap() {
            return Err((status.code().unwrap_or(-1), envoy.log_text()));
        }
        let ready = try_get(admin, "/ready", &[]).is_some_and(|r| r.body_text().trim() == "LIVE")
            && TcpStream::connect(("127.0.0.1", listen)).is_ok();
        if ready {
            return Ok(envoy);
        }
        assert!(Instant::now() < end, "Envoy not ready after {STARTUP_DEADLINE:?}; log:\n{}", envoy.log_text());
        thread::sleep(POLL);
    }
}

fn probe_envoy() -> Envoy {
    spawn_envoy("abi_probe", &format!("label={PROBE_LABEL}"))
        .unwrap_or_else(|(code, log)| panic!("Envoy exited ({code}) at startup; log:\n{log}"))
}

// ------------------------------------------------------------------------------------------
// One behaviour per test.
// ------------------------------------------------------------------------------------------

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

/// http_set_dynamic_metadata_string / _number, seen by the access log.
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
    assert!(line("md-a").contains("route=alpha in_count=2 code=200"), "{log}");
    assert!(line("md-b").contains("route=beta in_count=0 code=200"), "{log}");
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

// ------------------------------------------------------------------------------------------
// Version coupling.
// ------------------------------------------------------------------------------------------

fn nm(args: &[&str], file: &Path) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().expect("run nm (binutils): apt-get install binutils");
    assert!(out.status.success(), "nm failed on {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

/// The NUL-terminated identifiers starting with `prefix` in `bytes` (like `strings | grep`).
fn symbol_strings(bytes: &[u8], prefix: &[u8]) -> Vec<String> {
    identifiers(bytes, prefix, true)
}

/// Identifiers starting with `prefix`; with `c_strings`, only NUL-terminated ones.
fn identifiers(bytes: &[u8], prefix: &[u8], c_strings: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], prefix) {
        let start = at + i;
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(bytes.len(), |e| start + e);
        // Only whole C strings: NUL-terminated and not glued to the next name (Envoy's
        // binary also has packed, unterminated copies of these names).
        let name = &bytes[start..end];
        let preceded = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let terminated = !c_strings || bytes.get(end) == Some(&0);
        if terminated && preceded && find(&name[1..], prefix).is_none() {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        at = end;
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn envoy_is_the_pinned_version_line() {
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION"))
        .and_then(|l| l.split('=').nth(1))
        .map(str::trim)
        .expect("ENVOY_VERSION in the Makefile");
    assert!(
        pinned.starts_with(&format!("{ENVOY_VERSION_LINE}.")),
        "the Makefile pins Envoy {pinned}, but this module is built for {ENVOY_VERSION_LINE}.x"
    );
    assert!(version.contains(&format!("/{pinned}/")), "{} is not Envoy {pinned}: {version}", envoy_bin().display());
}

#[test]
fn every_declared_callback_is_exported_by_envoy() {
    let exported = nm(&["-D", "--defined-only"], &envoy_bin());
    let exported: std::collections::HashSet<&str> = exported.iter().map(String::as_str).collect();
    // The callbacks the source declares…
    let src = std::fs::read_to_string(manifest_dir().join("src/ffi/decl.rs")).unwrap();
    let declared = identifiers(src.as_bytes(), b"envoy_dynamic_module_callback_", false);
    assert!(declared.len() >= 14, "found only {declared:?} in ffi/decl.rs");
    // …and those the built module actually imports.
    let imported = nm(&["-D", "--undefined-only"], &module_dir().join("libhopauth_envoy.so"));
    let imported: Vec<&String> = imported.iter().filter(|s| s.starts_with("envoy_")).collect();
    assert!(!imported.is_empty());
    for sym in declared.iter().chain(imported.iter().copied()) {
        assert!(exported.contains(sym.as_str()), "Envoy does not export {sym}");
    }
}

#[test]
fn the_module_exports_every_http_filter_hook_envoy_looks_up() {
    let envoy = std::fs::read(envoy_bin()).unwrap();
    let wanted = symbol_strings(&envoy, b"envoy_dynamic_module_on_http_filter_");
    assert!(wanted.len() >= 20, "only {wanted:?} in the Envoy binary");
    let ours = nm(&["-D", "--defined-only"], &module_dir().join("libhopauth_envoy.so"));
    for hook in wanted.iter().map(String::as_str).chain(["envoy_dynamic_module_on_program_init"]) {
        assert!(ours.iter().any(|s| s == hook), "the module does not export {hook}");
    }
}

#[test]
fn the_abi_version_string_is_the_one_in_envoy() {
    let envoy = std::fs::read(envoy_bin()).unwrap();
    let mut needle = ABI_VERSION.as_bytes().to_vec();
    needle.push(0);
    assert!(
        find(&envoy, &needle).is_some(),
        "Envoy does not contain the ABI version {ABI_VERSION:?} this module returns"
    );
    // And the module returns exactly that string from on_program_init.
    let module = std::fs::read(module_dir().join("libhopauth_envoy.so")).unwrap();
    assert!(find(&module, &needle).is_some(), "the module does not carry {ABI_VERSION:?}");
}

impl Envoy {
    fn child_alive(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.admin)).is_ok()
    }
}
