//! HTTP/1.1 over std, for synchronous tests and readiness polls: a one-shot client
//! (`connection: close`, the whole response read) and an echo upstream that answers each
//! request with its own head; plus [`wait_blocking`], the synchronous condition wait.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `deadline` passes (then panics naming `what`).
pub fn wait_blocking(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// An upstream that answers 200 with the request head it received as the body.
pub struct Echo {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start() -> Echo {
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

pub fn serve_echo(mut conn: TcpStream, hits: &AtomicUsize) {
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

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The headers the echo upstream saw (parsed from the echoed request head).
    pub fn upstream_headers(&self) -> Vec<(String, Vec<u8>)> {
        parse_header_lines(&self.body[find(&self.body, b"\r\n").map_or(0, |i| i + 2)..])
    }

    pub fn upstream_values(&self, name: &str) -> Vec<String> {
        self.upstream_headers()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn parse_header_lines(mut text: &[u8]) -> Vec<(String, Vec<u8>)> {
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
pub fn get(port: u16, path: &str, headers: &[(&str, &[u8])]) -> Response {
    try_get(port, path, headers).unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// [`get`], or `None` when the connection fails or breaks (e.g. Envoy is exiting).
pub fn try_get(port: u16, path: &str, headers: &[(&str, &[u8])]) -> Option<Response> {
    request(port, "GET", path, headers)
}

/// One bodyless HTTP/1.1 request with `Connection: close`, or `None` when the connection
/// fails or breaks.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Option<Response> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let length = if method == "GET" { "" } else { "content-length: 0\r\n" };
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: probe.test\r\nconnection: close\r\n{length}").into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    conn.write_all(&req).ok()?;
    // Read until the response is whole, not until the connection closes: after a local
    // reply Envoy waits for the client to close first (`delayed_close_timeout`, 1 s), so
    // reading to the end would make every deny take a second.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(len) = complete_length(&raw, method) {
            raw.truncate(len);
            break;
        }
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    // No complete head: the connection broke (e.g. Envoy exiting, or not listening yet).
    let head_end = find(&raw, b"\r\n\r\n")?;
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

/// The length of the whole response in `raw` once it has all arrived: the head plus a
/// `content-length` body, or a chunked body through its last chunk; `None` while more is
/// to come, and always for a body delimited by the close.
fn complete_length(raw: &[u8], method: &str) -> Option<usize> {
    let body_at = find(raw, b"\r\n\r\n")? + 4;
    let status: u16 = std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()?;
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(body_at);
    }
    let headers = parse_header_lines(&raw[find(raw, b"\r\n")? + 2..body_at]);
    let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice());
    if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
        return chunked_length(&raw[body_at..]).map(|n| body_at + n);
    }
    let length: usize = std::str::from_utf8(value("content-length")?).ok()?.trim().parse().ok()?;
    (raw.len() >= body_at + length).then_some(body_at + length)
}

/// The length of a chunked body (no trailers) once its last chunk has arrived.
fn chunked_length(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let eol = at + find(&body[at..], b"\r\n")?;
        let line = std::str::from_utf8(&body[at..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = eol + 2;
        if size == 0 {
            return (body.len() >= at + 2 && &body[at..at + 2] == b"\r\n").then_some(at + 2);
        }
        at += size + 2;
        if body.len() < at {
            return None;
        }
    }
}

/// The payload of a `transfer-encoding: chunked` body (no trailers, as Envoy sends here).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
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

pub fn admin_get(port: u16, path: &str) -> String {
    get(port, path, &[]).body_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_whole_once_its_length_or_last_chunk_is_in() {
        let head = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\n";
        let mut raw = head.to_vec();
        assert_eq!(complete_length(&raw, "GET"), None, "body still to come");
        raw.extend_from_slice(b"abcde");
        assert_eq!(complete_length(&raw, "GET"), Some(raw.len()));
        assert_eq!(complete_length(&raw[..10], "GET"), None, "head still to come");
        assert_eq!(complete_length(head, "HEAD"), Some(head.len()), "HEAD has no body");

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(complete_length(chunked, "GET"), Some(chunked.len()));
        assert_eq!(complete_length(&chunked[..chunked.len() - 2], "GET"), None, "last CRLF missing");
        assert_eq!(complete_length(&chunked[..chunked.len() - 5], "GET"), None, "last chunk missing");

        let until_close = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(complete_length(until_close, "GET"), None, "delimited by the close");
    }
}
