//! `abi_probe`: a test filter that drives every wrapped callback in a way an HTTP client
//! (or the access log, or `/stats`) can observe. `tests/abi/` asserts each behaviour
//! through a real Envoy. It is not for production use, and it only acts on requests that
//! carry its `x-probe-*` headers, plus the always-on `x-probe-label`/`x-probe-route`.
//!
//! Filter config: `label=<text>` (anything else is refused). Per-route config:
//! `route=<text>`. Request headers it understands:
//! - always: upstream sees `x-probe-label` (filter config), `x-probe-route` (per-route
//!   config or `none`), `x-probe-seen` (every `x-probe-in` value joined by `|`),
//!   `x-probe-hex` (hex of the raw bytes of `x-probe-raw`) and `x-probe-listed-in` (how many
//!   `x-probe-in` the whole-map listing shows), `x-probe-set: module`
//!   (replacing the client's), one more `x-probe-add: module`, and no `x-probe-remove`;
//!   dynamic metadata `probe.route` (string), `probe.in_count` (number), `probe.s0` …
//!   `probe.s16` (`v0` … `v16`, one string batch: two Envoy calls), `probe.flag` (boolean
//!   `true`) and, merged in as a Struct, `probe.nested`
//!   (`{"route": <route>, "ok": true, "list": [1, "x"]}`); counter
//!   `abi_probe_requests` +1, `abi_probe_outcomes{outcome="passed"}` +1 (`replied` for a
//!   local reply); `x-probe-path` (the `:path` pseudo-header) and
//!   `x-probe-bad-labels-refused: yes` (an increment with the wrong label count is refused).
//! - `x-probe-reply: <status>`: a local reply with that status, header
//!   `x-probe-replied: yes` and body `probe reply <status>`.
//! - `x-probe-suspend-ms: <n>`: StopIteration; a module thread commits the scheduler after
//!   `n` ms; `on_scheduled` adds `x-probe-resumed: on-the-holding-worker` (or
//!   `on-another-thread`) and continues decoding.
//! - `x-probe-panic: 1`: panics inside the hook (the FFI layer must answer 503).
//! - `x-probe-panic: scheduled` with `x-probe-suspend-ms`: panics in `on_scheduled` instead.
use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use crate::ffi::{
    log, ConfigContext, ConfigError, Counter, FilterFactory, HeadersStatus, HttpFilter, LogLevel, RequestContext,
};

/// The `filter_name` that selects this filter.
pub const FILTER_NAME: &str = "abi_probe";
/// The event id the probe's module thread commits.
const RESUME_EVENT: u64 = 7;
/// The longest suspension the probe accepts, so a typo cannot hang a test for long.
const MAX_SUSPEND_MS: u64 = 10_000;

/// The `abi_probe` filter configuration.
pub struct ProbeFactory {
    label: String,
    requests: Counter,
    outcomes: Counter,
}

impl ProbeFactory {
    /// Parses `label=<text>` and defines the `abi_probe_requests` counter.
    pub fn new(config: &[u8], cx: &mut ConfigContext<'_>) -> Result<Self, ConfigError> {
        let text =
            std::str::from_utf8(config).map_err(|_| ConfigError::new("abi_probe: filter_config is not UTF-8"))?;
        let label = text.strip_prefix("label=").ok_or_else(|| {
            ConfigError::new(format!("abi_probe: filter_config must be `label=<text>`, got {text:?}"))
        })?;
        let requests = cx.define_counter("abi_probe_requests")?;
        let outcomes = cx.define_counter_with_labels("abi_probe_outcomes", &["outcome"])?;
        log(LogLevel::Info, &format!("abi_probe: filter config loaded, label={label}"));
        Ok(Self { label: label.to_owned(), requests, outcomes })
    }
}

impl FilterFactory for ProbeFactory {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(Probe {
            label: self.label.clone(),
            requests: self.requests,
            outcomes: self.outcomes,
            held_on: None,
            panic_when_scheduled: false,
        })
    }
}

/// The `abi_probe` per-route config.
#[derive(Debug)]
pub struct ProbeRoute {
    name: String,
}

impl ProbeRoute {
    /// Parses `route=<text>`.
    pub fn parse(config: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(config)
            .map_err(|_| ConfigError::new("abi_probe: per-route filter_config is not UTF-8"))?;
        let name = text.strip_prefix("route=").ok_or_else(|| {
            ConfigError::new(format!("abi_probe: per-route filter_config must be `route=<text>`, got {text:?}"))
        })?;
        Ok(Self { name: name.to_owned() })
    }
}

struct Probe {
    label: String,
    requests: Counter,
    outcomes: Counter,
    /// The thread that held the request, to show `on_scheduled` runs on the same worker.
    held_on: Option<thread::ThreadId>,
    panic_when_scheduled: bool,
}

impl HttpFilter for Probe {
    fn on_request_headers(&mut self, ctx: &mut RequestContext<'_>, _end_of_stream: bool) -> HeadersStatus {
        ctx.increment_counter(self.requests, 1);
        self.panic_when_scheduled = ctx.first_header("x-probe-panic") == Some(b"scheduled");
        if ctx.first_header("x-probe-panic").is_some() && !self.panic_when_scheduled {
            panic!("abi_probe: panic requested by x-probe-panic");
        }
        if let Some(status) = ctx.first_header("x-probe-reply") {
            let status = parse_u64(status).unwrap_or(500);
            let status = u16::try_from(status).unwrap_or(500);
            let body = format!("probe reply {status}");
            ctx.increment_counter_with_labels(self.outcomes, &["replied"], 1);
            ctx.send_local_reply(status, &[("x-probe-replied", b"yes")], body.as_bytes(), "abi_probe_reply");
            return HeadersStatus::StopIteration;
        }

        ctx.increment_counter_with_labels(self.outcomes, &["passed"], 1);
        // A wrong label count is refused by the wrapper, never handed to Envoy.
        let refused = !ctx.increment_counter_with_labels(self.outcomes, &[], 1);
        let path = ctx.first_header(":path").map(<[u8]>::to_vec).unwrap_or_default();
        let seen: Vec<Vec<u8>> = ctx.header("x-probe-in").map(<[u8]>::to_vec).collect();
        // The whole-map listing (http_get_headers) cross-checks the per-name lookup.
        let all = ctx.headers();
        let listed_in = all.iter().filter(|(k, _)| *k == b"x-probe-in").count();
        let hex = all.iter().find(|(k, _)| *k == b"x-probe-raw").map(|(_, v)| to_hex(v)).unwrap_or_default();
        drop(all);
        let route = ctx.route_config::<ProbeRoute>().map(|r| r.name.clone()).unwrap_or_else(|| "none".to_owned());
        let suspend = ctx.first_header("x-probe-suspend-ms").and_then(parse_u64);

        ctx.set_header("x-probe-label", self.label.as_bytes());
        ctx.set_header("x-probe-route", route.as_bytes());
        ctx.set_header("x-probe-seen", &seen.join(&b'|'));
        ctx.set_header("x-probe-hex", hex.as_bytes());
        ctx.set_header("x-probe-listed-in", listed_in.to_string().as_bytes());
        ctx.set_header("x-probe-set", b"module");
        ctx.set_header("x-probe-path", &path);
        ctx.set_header("x-probe-bad-labels-refused", if refused { b"yes" } else { b"no" });
        ctx.add_header("x-probe-add", b"module");
        ctx.remove_header("x-probe-remove");
        ctx.set_metadata_string("probe", "route", &route);
        ctx.set_metadata_number("probe", "in_count", seen.len() as f64);
        let batch: Vec<(String, String)> = (0..=16).map(|i| (format!("s{i}"), format!("v{i}"))).collect();
        ctx.set_metadata_strings("probe", &batch);
        ctx.set_metadata_bool("probe", "flag", true);
        let nested = serde_json::json!({ "nested": { "route": route, "ok": true, "list": [1, "x"] } });
        ctx.set_metadata_struct("probe", &hopauth::render::claims_struct(nested.as_object().expect("an object")));

        match suspend {
            Some(ms) => {
                let scheduler = ctx.scheduler();
                self.held_on = Some(thread::current().id());
                let delay = Duration::from_millis(ms.min(MAX_SUSPEND_MS));
                thread::Builder::new()
                    .name("abi-probe-resume".to_owned())
                    .spawn(move || {
                        thread::sleep(delay);
                        scheduler.commit(RESUME_EVENT);
                    })
                    .map_or(HeadersStatus::Continue, |_| HeadersStatus::StopIteration)
            }
            None => HeadersStatus::Continue,
        }
    }

    fn on_scheduled(&mut self, ctx: &mut RequestContext<'_>, event_id: u64) {
        if event_id != RESUME_EVENT {
            return;
        }
        if self.panic_when_scheduled {
            panic!("abi_probe: panic requested in on_scheduled");
        }
        let same = self.held_on == Some(thread::current().id());
        let on: &[u8] = if same { b"on-the-holding-worker" } else { b"on-another-thread" };
        ctx.set_header("x-probe-resumed", on);
        ctx.continue_decoding();
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_config_is_parsed_or_refused_with_the_expected_form() {
        assert_eq!(ProbeRoute::parse(b"route=a").unwrap().name, "a");
        let err = ProbeRoute::parse(b"nope").unwrap_err();
        assert!(err.message.contains("route=<text>"), "{err}");
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(to_hex(&[0x00, 0xff, 0x41]), "00ff41");
    }
}
