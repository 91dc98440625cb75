//! Load-test tools for loopback: a raw HTTP/1.1 keep-alive client connection (one per
//! tokio task, so 10 000 of them are 10 000 sockets held open), latency percentiles, the
//! file-descriptor limit, and RSS / open-fd samples of a process from /proc.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response heads larger than this are a protocol error (Envoy's are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Bodies larger than this are a protocol error (the echo app's are ~2 KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Whether the echo app received `x-jwt-sub: <sub>` (its body lists the headers it got).
    pub fn upstream_saw_sub(&self, sub: &str) -> bool {
        let needle = format!("\"x-jwt-sub\":\"{sub}\"");
        memfind(&self.body, needle.as_bytes())
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An HTTP/1.1 keep-alive connection to `127.0.0.1:port`; reconnects (and counts it) when
/// the server closed it.
pub struct Conn {
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Connections opened after the first.
    pub reconnects: u64,
}

impl Conn {
    pub async fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { port, stream: Some(stream), buf: Vec::with_capacity(4096), reconnects: 0 })
    }

    /// `GET path` with `headers`; the whole response. An I/O error leaves the connection
    /// closed (the next call reconnects).
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        let result = self.exchange(path, headers).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
            self.reconnects += 1;
        }
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: loadgen\r\n");
        for (k, v) in headers {
            req.push_str(k);
            req.push_str(": ");
            req.push_str(v);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(req.as_bytes()).await?;
        let response = read_response(stream, &mut self.buf).await?;
        if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.stream = None;
        }
        Ok(response)
    }

    /// Whether the socket is (as far as we know) open.
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one response from `stream`; `buf` holds bytes already read (kept across calls).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Response> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad("response head too large"));
        }
        fill(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end);
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(stream, buf).await?
    } else {
        let len: usize = match find("content-length") {
            Some(v) => v.parse().map_err(|_| bad(format!("bad content-length {v:?}")))?,
            None => 0,
        };
        if len > MAX_BODY_BYTES {
            return Err(bad("body too large"));
        }
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Ok(Response { status, headers, body })
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        buf.drain(..line_end + 2);
        if body.len() + size > MAX_BODY_BYTES {
            return Err(bad("body too large"));
        }
        while buf.len() < size + 2 {
            fill(stream, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// Latency samples and their percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: &Latencies) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0–100), nearest rank; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// `p50 … p99 … max …` in milliseconds.
    pub fn summary(&self) -> String {
        format!(
            "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            self.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.max())
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The soft and hard `RLIMIT_NOFILE` of this process, from /proc/self/limits.
pub fn fd_limits() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = text.lines().find(|l| l.starts_with("Max open files")).expect("Max open files in /proc/self/limits");
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

/// Makes sure this process may open `need` files: raises the soft limit to the hard one
/// with util-linux `prlimit` (no `unsafe` needed; children such as Envoy inherit it when
/// spawned afterwards). Panics with what to do when even the hard limit is too low.
pub fn ensure_fd_limit(need: u64) -> u64 {
    let (soft, hard) = fd_limits();
    if soft >= need {
        return soft;
    }
    assert!(
        hard >= need,
        "this test needs {need} open files but the hard limit is {hard}: raise it (`ulimit -Hn {need}` as root, \
         or LimitNOFILE= in the service unit) and run again"
    );
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run prlimit (util-linux) to raise the open-file limit: {e}"));
    assert!(status.success(), "prlimit failed to raise the open-file soft limit from {soft} to {hard}");
    let (now, _) = fd_limits();
    assert!(now >= need, "open-file soft limit is {now} after prlimit, need {need}");
    now
}

/// Resident memory (KiB) and open file descriptors of process `pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub fds: u64,
    /// User + system CPU time so far, in clock ticks (1/100 s on Linux).
    pub cpu_ticks: u64,
}

/// Reads /proc/`pid`/status (VmRSS) and counts /proc/`pid`/fd; `None` if the process is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    // /proc/PID/stat: the command may hold spaces, so count fields after its closing ')'.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the command.
    let cpu_ticks = fields.get(11)? + fields.get(12)?;
    Some(ProcSample { rss_kib, fds, cpu_ticks })
}
