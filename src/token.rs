//! Finding the token in a request: a header with a scheme prefix, a cookie, or a query
//! parameter, in the configured order. One credential per request (CVE-2020-25017 class).

use crate::config::Source;
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

impl TokenSource {
    pub fn from_config(s: &Source) -> Self {
        match (&s.header, &s.cookie, &s.query) {
            (Some(h), _, _) => TokenSource::Header { name: h.clone(), prefix: s.prefix.clone().unwrap_or_default() },
            (_, Some(c), _) => TokenSource::Cookie(c.clone()),
            (_, _, Some(q)) => TokenSource::Query(q.clone()),
            // validate() guarantees one of the three.
            _ => TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
        }
    }
}

/// The token, if the request carries exactly one; `Err` when it carries several or one that
/// is not text.
pub fn extract<'r, R: RequestView>(req: &'r R, sources: &[TokenSource]) -> Result<Option<&'r str>, DenyReason> {
    let mut found: Option<&'r [u8]> = None;
    let mut take = |candidate: &'r [u8], same_source_seen: &mut bool| -> Result<(), DenyReason> {
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
                    let Some(token) = strip_scheme(value, prefix.as_bytes()) else { continue };
                    // Envoy joins repeated headers with ','; a JWT never contains one.
                    if token.contains(&b',') {
                        return Err(DenyReason::MultipleTokens);
                    }
                    take(token, &mut seen)?;
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
                    for pair in query.split('&') {
                        if let Some(v) = pair_value(pair.as_bytes(), name.as_bytes()) {
                            take(v, &mut seen)?;
                        }
                    }
                }
            }
        }
    }
    match found {
        None => Ok(None),
        Some([]) => Err(DenyReason::Malformed),
        Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| DenyReason::Malformed),
    }
}

/// The bytes after `prefix` when `value` starts with it, the scheme compared
/// case-insensitively (RFC 7235 §2.1); an empty prefix takes the whole value.
fn strip_scheme<'v>(value: &'v [u8], prefix: &[u8]) -> Option<&'v [u8]> {
    if value.len() < prefix.len() || !value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    Some(&value[prefix.len()..])
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
        extract(&req, &sources()).map(|t| t.map(str::to_owned))
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
    fn other_schemes_are_no_token() {
        assert_eq!(get(vec![("authorization", b"Basic dXNlcjpwYXNz")], "/").unwrap(), None);
        assert_eq!(get(vec![("cookie", b"access_tokens=x")], "/").unwrap(), None);
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
        // Two spaces: the token starts with a space and fails to parse later; it is found here.
        assert_eq!(get(vec![("authorization", b"Bearer  a.b.c")], "/").unwrap().as_deref(), Some(" a.b.c"));
    }
}
