//! Load generators: closed loop with `wrk -t1 -c32` over a token list, and an open loop at
//! a fixed rate, measured from the scheduled send time (no coordinated omission).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::http::complete_response;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) non_2xx: u64,
    /// Connect, read and write errors and timeouts (wrk; 0 for the open loop, which counts
    /// a failed request as non-2xx).
    pub(crate) socket_errors: u64,
    pub(crate) requests: u64,
}

/// Cycles through the tokens of `args[1]` from line `args[2]` (0 when absent), so a run
/// after a warm-up continues with tokens the warm-up did not send.
const WRK_LUA: &str = r#"
local tokens = {}
local n = 0
local i = 0
init = function(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do n = n + 1; tokens[n] = line end
  f:close()
  i = (tonumber(args[2]) or 0) % n
end
request = function()
  i = i % n + 1
  return wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. tokens[i] })
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("JSON {\"requests\":%d,\"non2xx\":%d,\"socket_errors\":%d,\"p50\":%d,\"p99\":%d,\"p999\":%d,\"duration_us\":%d}\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), summary.duration))
end
"#;

pub(crate) fn require(bin: &str, hint: &str) -> String {
    assert!(hopauth_testkit::redis_server::which(bin).is_some(), "{bin} not found: {hint}");
    bin.to_string()
}

/// `wrk -t1 -c32` for `secs` against `port`, tokens from `tokens` starting at line `from`.
pub(crate) fn wrk(port: u16, tokens: &Path, dir: &Path, secs: u64, from: u64) -> Run {
    let script = dir.join("bench.lua");
    std::fs::write(&script, WRK_LUA).unwrap();
    let out = Command::new(require("wrk", "run `make bench-tools` (apt-get install wrk)"))
        .args(["-t1", "-c32", &format!("-d{secs}s"), "--timeout", "2s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("--")
        .arg(tokens)
        .arg(from.to_string())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("JSON ")).unwrap_or_else(|| panic!("wrk output: {text}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let requests = v["requests"].as_u64().unwrap();
    Run {
        rps: requests as f64 / (v["duration_us"].as_f64().unwrap() / 1e6),
        p50_ms: v["p50"].as_f64().unwrap() / 1000.0,
        p99_ms: v["p99"].as_f64().unwrap() / 1000.0,
        p999_ms: v["p999"].as_f64().unwrap() / 1000.0,
        non_2xx: v["non2xx"].as_u64().unwrap(),
        socket_errors: v["socket_errors"].as_u64().unwrap(),
        requests,
    }
}

/// Open loop: `conns` keep-alive connections share a fixed schedule of `rate` req/s;
/// a request sent late because the previous answer was late counts from its scheduled
/// time, so a stall shows up in the percentiles (no coordinated omission). One
/// runtime thread drives every connection, so the generator takes as little CPU from the
/// system under test as it can.
pub(crate) fn open_loop(port: u16, token: &str, rate: f64, secs: u64, conns: usize) -> Run {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET / HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut all, bad) = rt.block_on(async move {
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let interval = Duration::from_secs_f64(conns as f64 / rate);
        let end = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut next = start + interval.mul_f64(c as f64 / conns as f64);
                    let (mut lat, mut bad) = (Vec::new(), 0u64);
                    let mut buf = vec![0u8; 4096];
                    let mut idle = true;
                    while next < end {
                        // Latency counts from the scheduled time when the previous answer
                        // came late (queueing in the system under test), and from the send
                        // when the connection was idle: the generator's own timer (1 ms
                        // ticks) is then not charged to the system under test.
                        let origin = if idle {
                            tokio::time::sleep_until(next).await;
                            tokio::time::Instant::now()
                        } else {
                            next
                        };
                        s.write_all(&request).await.unwrap();
                        let mut got = Vec::new();
                        let status = loop {
                            let n = s.read(&mut buf).await.unwrap();
                            assert!(n > 0, "connection closed");
                            got.extend_from_slice(&buf[..n]);
                            if let Some(status) = complete_response(&got) {
                                break status;
                            }
                        };
                        if status != 200 {
                            bad += 1;
                        }
                        let done = tokio::time::Instant::now();
                        lat.push(done.duration_since(origin));
                        next += interval;
                        idle = done <= next;
                    }
                    (lat, bad)
                })
            })
            .collect();
        let (mut all, mut bad) = (Vec::new(), 0);
        for t in tasks {
            let (l, b) = t.await.unwrap();
            all.extend(l);
            bad += b;
        }
        (all, bad)
    });
    all.sort();
    Run {
        rps: all.len() as f64 / secs as f64,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        non_2xx: bad,
        socket_errors: 0,
        requests: all.len() as u64,
    }
}

/// The `p` quantile of `sorted`, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
