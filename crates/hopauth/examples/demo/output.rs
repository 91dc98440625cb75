//! Terminal output: colours (off when stdout is not a TTY or `NO_COLOR` is set), requests
//! and replies as the story shows them, tokens shortened to be readable.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use hopauth_testkit::Reply;

fn color_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
}

fn paint(code: &str, text: impl std::fmt::Display) -> String {
    if color_on() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub(crate) fn bold(t: impl std::fmt::Display) -> String {
    paint("1", t)
}
pub(crate) fn dim(t: impl std::fmt::Display) -> String {
    paint("2", t)
}
pub(crate) fn green(t: impl std::fmt::Display) -> String {
    paint("32", t)
}
pub(crate) fn red(t: impl std::fmt::Display) -> String {
    paint("31", t)
}
pub(crate) fn yellow(t: impl std::fmt::Display) -> String {
    paint("33", t)
}
pub(crate) fn cyan(t: impl std::fmt::Display) -> String {
    paint("36", t)
}

/// `eyJhbGciOiJFUzI1…Qx9w (612 bytes)`: a token short enough to read.
pub(crate) fn short(token: &str) -> String {
    if token.len() <= 28 {
        return token.to_string();
    }
    format!("{}…{} ({} bytes)", &token[..18], &token[token.len() - 6..], token.len())
}

pub(crate) fn status_text(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let text = format!("{status} {reason}");
    match status {
        200..=299 => green(bold(text)),
        400..=499 => yellow(bold(text)),
        _ => red(bold(text)),
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `→ METHOD url` and the headers sent (tokens shortened), and a note.
pub(crate) fn show_request(method: &str, url: &str, headers: &[(&str, &str)], note: &str) {
    println!("  {} {} {}", cyan("→"), bold(method), url);
    for (name, value) in headers {
        let value = match value.strip_prefix("Bearer ") {
            Some(token) => format!("Bearer {}", short(token)),
            None => value.to_string(),
        };
        println!("      {}: {}", dim(name), value);
    }
    if !note.is_empty() {
        println!("      {}", dim(note));
    }
}

/// The reply: status, and for a deny the challenge and the error body.
pub(crate) fn show_reply(r: &Reply, elapsed: Duration) {
    println!("  {} {}  {}", cyan("←"), status_text(r.status), dim(ms(elapsed)));
    if let Some(c) = r.header("www-authenticate") {
        println!("      {}: {}", dim("www-authenticate"), c);
    }
    if r.status != 200 {
        if let (Some(e), Some(d)) = (r.body["error"].as_str(), r.body["error_description"].as_str()) {
            println!("      {}: {{\"error\":\"{e}\",\"error_description\":\"{d}\"}}", dim("body"));
        }
    }
}

pub(crate) fn detail(label: &str, value: impl std::fmt::Display) {
    println!("      {} {}", dim(format!("{label}:")), value);
}
