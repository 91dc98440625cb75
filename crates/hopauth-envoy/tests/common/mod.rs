//! Helpers shared by the module's Envoy tests: the Envoy binary, the built module, free
//! ports, condition waits, and HTTP/1.1 over std (an echo upstream and a client).
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
pub(crate) const POLL: Duration = Duration::from_millis(20);

pub(crate) fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn repo_root() -> PathBuf {
    manifest_dir().join("../..")
}

/// The Envoy binary: `$HOPAUTH_ENVOY` or the repo's `.tools/bin/envoy`.
pub(crate) fn envoy_bin() -> PathBuf {
    let path =
        std::env::var_os("HOPAUTH_ENVOY").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {}: run `make envoy` at the repo root (or set HOPAUTH_ENVOY)",
        path.display()
    );
    path
}

/// Builds the module (release, the artefact Envoy loads) once per test process and returns
/// the directory holding `libhopauth_envoy.so`.
pub(crate) fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--release", "--manifest-path"])
            .arg(manifest_dir().join("Cargo.toml"))
            // The features these tests were built with (`test-hooks`, through the crate's
            // dev-dependency on itself), so the module is the one `cargo test` just built.
            .args(if cfg!(feature = "test-hooks") { &["--features", "test-hooks"][..] } else { &[] })
            .env("CARGO_INCREMENTAL", "0")
            .env("CARGO_TARGET_DIR", std::env::current_exe().unwrap().ancestors().nth(3).unwrap())
            .status()
            .expect("run cargo build --release for the module");
        assert!(status.success(), "cargo build --release of hopauth-envoy failed");
        // This test executable is <target>/<profile>/deps/<name>: the module is in
        // <target>/release whatever the target dir is (own, the workspace's, or
        // $CARGO_TARGET_DIR).
        let exe = std::env::current_exe().expect("the test executable's path");
        let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<exe>").to_owned();
        let dir = target.join("release");
        assert!(dir.join("libhopauth_envoy.so").is_file(), "no libhopauth_envoy.so in {}", dir.display());
        dir
    })
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `cond` until it holds or `deadline` passes (then panics naming `what`).
pub(crate) fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        thread::sleep(POLL);
    }
}

pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hopauth-envoy-abi-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ------------------------------------------------------------------------------------------
// HTTP/1.1 over std: the echo upstream and a client.
// ------------------------------------------------------------------------------------------

/// An upstream that answers 200 with the request head it received as the body.
pub(crate) struct Echo {
    pub(crate) port: u16,
    pub(crate) hits: Arc<AtomicUsize>,
}

impl Echo {
    pub(crate) fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let counter = counter.clone();
                thread::spawn(move || serve_echo(conn, &counter));
            }
        });
        Echo { port, hits }
    }
}

pub(crate) fn serve_echo(mut conn: TcpStream, hits: &AtomicUsize) {
    // Keep-alive: Envoy reuses upstream connections; answer head after head.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            hits.fetch_add(1, Ordering::SeqCst);
            let mut resp =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n", head.len())
                    .into_bytes();
            resp.extend_from_slice(&head);
            if conn.write_all(&resp).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The headers the echo upstream saw (parsed from the echoed request head).
    pub(crate) fn upstream_headers(&self) -> Vec<(String, Vec<u8>)> {
        parse_header_lines(&self.body[find(&self.body, b"\r\n").map_or(0, |i| i + 2)..])
    }

    pub(crate) fn upstream_values(&self, name: &str) -> Vec<String> {
        self.upstream_headers()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) fn parse_header_lines(mut text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = find(text, b"\r\n") {
        let line = &text[..end];
        text = &text[end + 2..];
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            out.push((name, value));
        }
    }
    out
}

/// One HTTP/1.1 GET with `Connection: close`; reads the whole response.
pub(crate) fn get(port: u16, path: &str, headers: &[(&str, &[u8])]) -> Response {
    try_get(port, path, headers).unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// [`get`], or `None` when the connection fails or breaks (e.g. Envoy is exiting).
pub(crate) fn try_get(port: u16, path: &str, headers: &[(&str, &[u8])]) -> Option<Response> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: probe.test\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    conn.write_all(&req).ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let head_end = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head: {:?}", String::from_utf8_lossy(&raw)));
    let status_line = String::from_utf8_lossy(&raw[..find(&raw, b"\r\n").unwrap()]).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = parse_header_lines(&raw[status_line.len() + 2..head_end + 4]);
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Some(Response { status, headers, body })
}

/// The payload of a `transfer-encoding: chunked` body (no trailers, as Envoy sends here).
pub(crate) fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(raw, b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or_else(|| panic!("bad chunk size line in {:?}", String::from_utf8_lossy(raw)));
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    out
}

pub(crate) fn admin_get(port: u16, path: &str) -> String {
    get(port, path, &[]).body_text()
}
