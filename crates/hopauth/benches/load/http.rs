//! HTTP/1.1 over std, for the probes between runs: the status of a response once it is
//! whole, "send on one keep-alive connection until the status is X" (how revocation
//! latency is measured), and "send these tokens one after another" (the callgrind counts).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Requests through Envoy on one keep-alive connection until the status is `want`; the
/// time from the call to that answer.
pub(crate) fn until_status(port: u16, token: &str, want: u16, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut buf = vec![0u8; 8192];
    while start.elapsed() < deadline {
        s.write_all(req.as_bytes()).unwrap();
        if read_status(&mut s, &mut buf) == want {
            return Some(start.elapsed());
        }
    }
    None
}

/// One request per token through Envoy, one after another on one keep-alive connection;
/// how many were answered, and how many of those not with a 2xx.
pub(crate) fn each_token<'t>(port: u16, tokens: impl IntoIterator<Item = &'t str>) -> (u64, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 8192];
    let (mut answered, mut non_2xx) = (0, 0);
    for token in tokens {
        let req = format!("GET / HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        answered += 1;
        if !(200..300).contains(&read_status(&mut s, &mut buf)) {
            non_2xx += 1;
        }
    }
    (answered, non_2xx)
}

/// The status of the HTTP/1.1 response in `got`, once its headers and `content-length`
/// body have all arrived.
pub(crate) fn complete_response(got: &[u8]) -> Option<u16> {
    let h = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (got.len() >= h + 4 + len).then(|| head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Reads one HTTP/1.1 response and returns its status.
fn read_status(s: &mut TcpStream, buf: &mut [u8]) -> u16 {
    let mut got = Vec::new();
    loop {
        let n = s.read(buf).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        if let Some(status) = complete_response(&got) {
            return status;
        }
    }
}
