//! Finding the token in a request: a header with a scheme prefix, a cookie, or a query
//! parameter, in the configured order. One credential per request (CVE-2020-25017 class).

use crate::decision::DenyReason;

/// The parts of an HTTP request hopauth reads, however Envoy encoded them.
pub trait RequestView {
    /// Every value of header `name` (lowercase), one item per header line.
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]>;
    /// The request target, with its query string.
    fn path(&self) -> &str;
}

/// A configured source, prepared once so extraction allocates nothing.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Header { name: String, prefix: String },
    Cookie(String),
    Query(String),
}

/// The token, if the request carries exactly one; `Err` when it carries several, or one
/// hopauth cannot verify. A configured source that is present but holds no usable bearer
/// token (another scheme such as `Basic`, the scheme with odd spacing, an empty or bare or
/// percent-encoded query value) is refused, never taken for "no token": on an anonymous
/// route the upstream would otherwise receive it as if hopauth had let it pass. What
/// follows the exact prefix is the token, to be refused by the strict JWS parse when it is
/// not one. Each candidate is bounded by `max_bytes` before anything else looks at it.
pub fn extract<'r, R: RequestView>(
    req: &'r R,
    sources: &[TokenSource],
    max_bytes: usize,
) -> Result<Option<&'r str>, DenyReason> {
    let mut found: Option<&'r [u8]> = None;
    let mut other_scheme = false;
    let mut take = |candidate: &'r [u8], same_source_seen: &mut bool| -> Result<(), DenyReason> {
        if candidate.len() > max_bytes {
            return Err(DenyReason::TokenTooLarge);
        }
        if *same_source_seen {
            return Err(DenyReason::MultipleTokens);
        }
        *same_source_seen = true;
        match found {
            Some(prev) if prev != candidate => Err(DenyReason::MultipleTokens),
            _ => {
                found = Some(candidate);
                Ok(())
            }
        }
    };
    for source in sources {
        let mut seen = false;
        match source {
            TokenSource::Header { name, prefix } => {
                for value in req.header_values(name) {
                    match classify(value, prefix.as_bytes()) {
                        Credential::Token(token) => {
                            if token.len() > max_bytes {
                                return Err(DenyReason::TokenTooLarge);
                            }
                            // Envoy joins repeated headers with ','; a JWT never contains one.
                            // (memchr's SIMD search: a third of the slice scan's instructions
                            // on a 300-byte token, and this runs on every cache hit.)
                            if memchr::memchr(b',', token).is_some() {
                                return Err(DenyReason::MultipleTokens);
                            }
                            take(token, &mut seen)?;
                        }
                        Credential::OtherScheme => other_scheme = true,
                        Credential::Malformed => return Err(DenyReason::Malformed),
                    }
                }
            }
            TokenSource::Cookie(name) => {
                for value in req.header_values("cookie") {
                    // Envoy joins cookie headers with "; " over HTTP/2 and "," over HTTP/1.1.
                    for pair in value.split(|b| *b == b';' || *b == b',') {
                        if let Some(v) = pair_value(trim(pair), name.as_bytes()) {
                            take(v, &mut seen)?;
                        }
                    }
                }
            }
            TokenSource::Query(name) => {
                let path = req.path();
                if let Some((_, query)) = path.split_once('?') {
                    let query = query.split_once('#').map_or(query, |(q, _)| q);
                    // `;` separates parameters for some upstream frameworks: split on both,
                    // so hopauth sees every parameter any of them could read.
                    for pair in query.as_bytes().split(|b| *b == b'&' || *b == b';') {
                        let (key, value) = match pair.iter().position(|b| *b == b'=') {
                            Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
                            None => (pair, None),
                        };
                        if !percent_decoded_eq(key, name.as_bytes()) {
                            continue;
                        }
                        // A bare `access_token` is a credential that holds nothing usable.
                        let value = value.ok_or(DenyReason::Malformed)?;
                        take(value, &mut seen)?;
                        // A JWT needs no escaping: `%` or `+` (a space) means the upstream
                        // would decode another value than hopauth verifies.
                        if value.contains(&b'+') || value.contains(&b'%') {
                            return Err(DenyReason::Malformed);
                        }
                    }
                }
            }
        }
    }
    match found {
        None if other_scheme => Err(DenyReason::OtherScheme),
        None => Ok(None),
        // A Basic header beside a bearer token: two credentials.
        Some(_) if other_scheme => Err(DenyReason::MultipleTokens),
        Some([]) => Err(DenyReason::Malformed),
        // Anything else that is not a compact JWS (spaces, quotes, bytes outside base64url)
        // is refused by the strict parse, before any key is looked at. A character check
        // here would repeat that scan on every cache hit.
        Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| DenyReason::Malformed),
    }
}

/// What one value of a header source holds.
enum Credential<'v> {
    /// The bytes after the scheme prefix, not yet checked.
    Token(&'v [u8]),
    /// Credentials in another scheme (`Basic …`).
    OtherScheme,
    /// The bearer scheme with anything but exactly the configured prefix before the token
    /// (`Bearer\t…`, `Bearer` alone, a leading space), or an empty value.
    Malformed,
}

/// Takes a header value apart: the scheme is compared case-insensitively (RFC 7235 §2.1)
/// and must be followed by exactly the configured prefix; an empty prefix takes the whole
/// value. Looks at no more than the scheme's length past the start.
fn classify<'v>(value: &'v [u8], prefix: &[u8]) -> Credential<'v> {
    if value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return Credential::Token(&value[prefix.len()..]);
    }
    let scheme = prefix.trim_ascii();
    let head = &value[..value.len().min(scheme.len() + 1)];
    let word = &head[..head.iter().position(|b| matches!(b, b' ' | b'\t')).unwrap_or(head.len())];
    if word.is_empty() || word.eq_ignore_ascii_case(scheme) {
        Credential::Malformed
    } else {
        Credential::OtherScheme
    }
}

/// Whether the query parameter name `encoded`, once percent-decoded (and `+` read as a
/// space), is `name`. Compares as it decodes: no allocation. A broken escape matches nothing.
fn percent_decoded_eq(encoded: &[u8], name: &[u8]) -> bool {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut want = name.iter();
    let mut i = 0;
    while i < encoded.len() {
        let byte = match encoded[i] {
            b'%' => {
                let (Some(hi), Some(lo)) =
                    (encoded.get(i + 1).copied().and_then(hex), encoded.get(i + 2).copied().and_then(hex))
                else {
                    return false;
                };
                i += 3;
                hi << 4 | lo
            }
            b'+' => {
                i += 1;
                b' '
            }
            b => {
                i += 1;
                b
            }
        };
        if want.next() != Some(&byte) {
            return false;
        }
    }
    want.next().is_none()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn pair_value<'v>(pair: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    let eq = pair.iter().position(|b| *b == b'=')?;
    (&pair[..eq] == name).then(|| &pair[eq + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        headers: Vec<(&'static str, &'static [u8])>,
        path: &'static str,
    }

    impl RequestView for Req {
        fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
            let name = name.to_owned();
            self.headers.iter().filter(move |(n, _)| *n == name).map(|(_, v)| *v)
        }
        fn path(&self) -> &str {
            self.path
        }
    }

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            TokenSource::Cookie("access_token".into()),
            TokenSource::Query("access_token".into()),
        ]
    }

    fn get(headers: Vec<(&'static str, &'static [u8])>, path: &'static str) -> Result<Option<String>, DenyReason> {
        let req = Req { headers, path };
        extract(&req, &sources(), 8192).map(|t| t.map(str::to_owned))
    }

    #[test]
    fn finds_each_source() {
        assert_eq!(get(vec![("authorization", b"Bearer a.b.c")], "/").unwrap().as_deref(), Some("a.b.c"));
        assert_eq!(get(vec![("authorization", b"bEaReR a.b.c")], "/").unwrap().as_deref(), Some("a.b.c"));
        assert_eq!(get(vec![("cookie", b"x=1; access_token=a.b.c")], "/").unwrap().as_deref(), Some("a.b.c"));
        assert_eq!(get(vec![], "/p?x=1&access_token=a.b.c#f").unwrap().as_deref(), Some("a.b.c"));
        assert_eq!(get(vec![], "/p").unwrap(), None);
    }

    #[test]
    fn other_schemes_are_refused_not_ignored() {
        // hopauth cannot verify a Basic credential: it never counts as "no token".
        assert_eq!(get(vec![("authorization", b"Basic dXNlcjpwYXNz")], "/"), Err(DenyReason::OtherScheme));
        assert_eq!(get(vec![("authorization", b"Token a.b.c")], "/"), Err(DenyReason::OtherScheme));
        // Beside a bearer token, in either order, it is a second credential.
        for headers in [
            vec![("authorization", &b"Basic dXNlcjpwYXNz"[..]), ("authorization", b"Bearer a.b.c")],
            vec![("authorization", &b"Bearer a.b.c"[..]), ("authorization", b"Basic dXNlcjpwYXNz")],
        ] {
            assert_eq!(get(headers, "/"), Err(DenyReason::MultipleTokens));
        }
        assert_eq!(get(vec![("cookie", b"access_tokens=x")], "/").unwrap(), None);
    }

    #[test]
    fn repeated_authorization_headers_joined_by_envoy_are_two_tokens() {
        // The comma may sit anywhere, also past the first SIMD block of a long token.
        let long = "a".repeat(100);
        for value in ["a.b.c,d.e.f".to_string(), format!("{long}.{long}.{long},x"), format!("{long},")] {
            let header: &'static [u8] = format!("Bearer {value}").into_bytes().leak();
            assert_eq!(get(vec![("authorization", header)], "/"), Err(DenyReason::MultipleTokens), "{value}");
        }
    }

    #[test]
    fn a_bearer_header_that_is_not_exactly_the_prefix_and_a_token_is_malformed() {
        for value in [
            &b"Bearer\ta.b.c"[..],
            b"bearer\ta.b.c",
            b"Bearer",
            b"bearer",
            b"Bearer ",
            b"Bearer\t",
            b" Bearer a.b.c",
            b"\tBearer a.b.c",
            b"Bearer \xff\xfe",
            b"Bearer a.b.\x80",
            b"",
            b"   ",
        ] {
            assert_eq!(get(vec![("authorization", value)], "/"), Err(DenyReason::Malformed), "{value:?}");
        }
        // What follows the exact prefix is the token as it is: spaces, quotes and foreign
        // characters then fail the strict JWS parse (tests/token_cases.rs: malformed_token).
        for (value, token) in [
            (&b"Bearer  a.b.c"[..], " a.b.c"),
            (b"bearer   a.b.c", "  a.b.c"),
            (b"Bearer a.b.c ", "a.b.c "),
            (b"Bearer a.b.c!!!!", "a.b.c!!!!"),
            (b"Bearer \"a.b.c\"", "\"a.b.c\""),
        ] {
            assert_eq!(get(vec![("authorization", value)], "/").unwrap().as_deref(), Some(token), "{value:?}");
        }
    }

    #[test]
    fn query_names_are_compared_percent_decoded() {
        for path in ["/?access%5Ftoken=a.b.c", "/?%61ccess_token=a.b.c", "/?ACCESS_TOKEN=x&access%5ftoken=a.b.c"] {
            assert_eq!(get(vec![], path).unwrap().as_deref(), Some("a.b.c"), "{path}");
        }
        assert_eq!(
            get(vec![("authorization", b"Bearer a.b.c")], "/?access%5Ftoken=d.e.f"),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(get(vec![], "/?access_token=a&access%5Ftoken=b"), Err(DenyReason::MultipleTokens));
        // A JWT needs no percent-encoding: an encoded value is refused, never decoded into a
        // token the upstream might read differently. A bare name is a credential too.
        for path in ["/?access_token=a%2Eb.c", "/?access_token=a+b", "/?access_token", "/?access_token="] {
            assert_eq!(get(vec![], path), Err(DenyReason::Malformed), "{path}");
        }
        // `;` separates parameters for some upstream frameworks.
        assert_eq!(get(vec![], "/?x=1;access_token=a.b.c").unwrap().as_deref(), Some("a.b.c"));
        // Malformed escapes never match a name.
        assert_eq!(get(vec![], "/?access%5token=a.b.c&%=1&%zz=2").unwrap(), None);
    }

    #[test]
    fn size_is_bounded_before_anything_else_is_looked_at() {
        let big = format!("Bearer {}", ".".repeat(1 << 20));
        let big: &'static [u8] = Box::leak(big.into_bytes().into_boxed_slice());
        let req = Req { headers: vec![("authorization", big)], path: "/" };
        assert_eq!(extract(&req, &sources(), 8192), Err(DenyReason::TokenTooLarge));
        // Even when the oversize value is not valid text or holds commas.
        let mut bin = vec![b'B', b'e', b'a', b'r', b'e', b'r', b' '];
        bin.extend(std::iter::repeat_n(0xffu8, 65536));
        let bin: &'static [u8] = Box::leak(bin.into_boxed_slice());
        let req = Req { headers: vec![("authorization", bin)], path: "/" };
        assert_eq!(extract(&req, &sources(), 8192), Err(DenyReason::TokenTooLarge));
    }

    #[test]
    fn more_than_one_credential_is_refused() {
        let two_headers = vec![("authorization", &b"Bearer a.b.c"[..]), ("authorization", b"Bearer d.e.f")];
        assert_eq!(get(two_headers, "/"), Err(DenyReason::MultipleTokens));
        let same_twice = vec![("authorization", &b"Bearer a.b.c"[..]), ("authorization", b"Bearer a.b.c")];
        assert_eq!(get(same_twice, "/"), Err(DenyReason::MultipleTokens));
        assert_eq!(get(vec![("authorization", b"Bearer a.b.c, Bearer d.e.f")], "/"), Err(DenyReason::MultipleTokens));
        assert_eq!(
            get(vec![("authorization", b"Bearer a.b.c")], "/?access_token=d.e.f"),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(get(vec![], "/?access_token=a&access_token=a"), Err(DenyReason::MultipleTokens));
        assert_eq!(get(vec![("cookie", b"access_token=a,access_token=b")], "/"), Err(DenyReason::MultipleTokens));
        // The same token offered by a header and a cookie is one credential.
        assert_eq!(
            get(vec![("authorization", b"Bearer a.b.c"), ("cookie", b"access_token=a.b.c")], "/").unwrap().as_deref(),
            Some("a.b.c")
        );
    }

    #[test]
    fn empty_or_binary_tokens_are_malformed() {
        assert_eq!(get(vec![("authorization", b"Bearer ")], "/"), Err(DenyReason::Malformed));
        assert_eq!(get(vec![("authorization", b"Bearer \xff\xfe")], "/"), Err(DenyReason::Malformed));
        assert_eq!(get(vec![("cookie", b"access_token=")], "/"), Err(DenyReason::Malformed));
    }
}
