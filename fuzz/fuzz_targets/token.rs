//! `token::extract` on a fuzzed request (`FuzzRequest`: a path line, then `name:value`
//! header lines) with a fuzzed choice of sources.
//!
//! Properties: a token found is non-empty, within the size bound, has no `,` unless it
//! came from the query (and no escape if it did), and is a slice of the request itself (a
//! header value after its scheme, a cookie value, a query value under a name that decodes
//! to the configured one) for one of the configured sources; whether a request is refused,
//! and the token found, do not depend on the order of the sources (one credential per
//! request, whatever the config lists first); "no token" means no configured source
//! offered one.
#![no_main]

use hopauth_core::token::{extract, RequestView, TokenSource};
use hopauth_fuzz::FuzzRequest;
use libfuzzer_sys::fuzz_target;

/// Sources the first byte picks from, one bit each.
fn all_sources() -> [TokenSource; 6] {
    [
        TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
        TokenSource::Cookie("access_token".into()),
        TokenSource::Query("access_token".into()),
        TokenSource::Header { name: "x-token".into(), prefix: String::new() },
        TokenSource::Cookie("session".into()),
        TokenSource::Query("t".into()),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let sources: Vec<TokenSource> =
        all_sources().into_iter().enumerate().filter(|(i, _)| pick & (1 << i) != 0).map(|(_, s)| s).collect();
    // Bit 6: a small size bound, so the bound itself is exercised.
    let max = if pick & 64 != 0 { 24 } else { hopauth::config::DEFAULT_MAX_TOKEN_BYTES };
    let req = FuzzRequest::parse(rest);
    let result = extract(&req, &sources, max);
    let mut reversed = sources.clone();
    reversed.reverse();
    // Which deny reason comes first may follow the order (a too-large token before two
    // tokens); whether there is a deny, and the token, may not.
    let other = extract(&req, &reversed, max);
    assert_eq!(result.is_ok(), other.is_ok(), "the order of sources changed the outcome: {result:?} vs {other:?}");
    if result.is_ok() {
        assert_eq!(result, other, "the order of sources changed the token");
    }

    let offered = offers(&req, &sources);
    match result {
        Ok(Some(token)) => {
            assert!(!token.is_empty());
            assert!(token.len() <= max, "a token over the size bound");
            // From a header a ',' means two joined header lines.
            let in_path = req.path.as_bytes().as_ptr_range().contains(&token.as_ptr());
            assert!(in_path || !token.contains(','), "a header token with ',' is two tokens joined");
            // From the query, an escape means the upstream would read another value.
            assert!(!in_path || !token.contains(['%', '+']), "an escaped query token");
            assert!(
                offered.iter().any(|o| o.as_ptr() == token.as_ptr() && o.len() == token.len()),
                "token {token:?} is not what any source offered"
            );
        }
        Ok(None) => assert!(offered.is_empty(), "sources offered {offered:?} but no token was found"),
        Err(_) => {}
    }
});

/// Every candidate any source offers, found independently of `extract`.
fn offers<'r>(req: &'r FuzzRequest<'_>, sources: &[TokenSource]) -> Vec<&'r [u8]> {
    let mut out = Vec::new();
    for s in sources {
        match s {
            TokenSource::Header { name, prefix } => {
                for v in req.header_values(name) {
                    if v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()) {
                        out.push(&v[prefix.len()..]);
                    }
                }
            }
            TokenSource::Cookie(name) => {
                for v in req.header_values("cookie") {
                    for pair in v.split(|b| *b == b';' || *b == b',') {
                        let pair = trim(pair);
                        if let Some(value) = pair.strip_prefix(name.as_bytes()).and_then(|r| r.strip_prefix(b"=")) {
                            out.push(value);
                        }
                    }
                }
            }
            TokenSource::Query(name) => {
                // Parameters split on `&` and `;`, names compared percent-decoded: any
                // parameter an upstream framework could read as this name.
                if let Some((_, q)) = req.path().split_once('?') {
                    let q = q.split('#').next().unwrap_or_default();
                    for pair in q.split(['&', ';']) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        if decode(key).as_deref() == Some(name.as_bytes()) {
                            out.push(value.as_bytes());
                        }
                    }
                }
            }
        }
    }
    out
}

/// `%XX` and `+` decoded; `None` for a broken escape.
fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|c| c.is_ascii_hexdigit()))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Spaces and tabs off both ends (what a cookie pair loses around it).
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
