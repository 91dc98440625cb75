//! `sources`: where the token is looked for (a header with an optional scheme prefix, a
//! cookie, or a query parameter), in order; and the header-name rules the identity headers
//! share.

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Scheme before the token, e.g. `"Bearer "`; matched case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Source {
    /// The default `sources`: `Authorization: Bearer <token>`.
    pub fn defaults() -> Vec<Source> {
        vec![Source { header: Some("authorization".into()), prefix: Some("Bearer ".into()), ..Source::default() }]
    }
}

pub(super) fn validate(sources: &[Source], out: &mut Problems) {
    if sources.is_empty() {
        out.add("sources", "at least one token source is required");
    }
    for (i, s) in sources.iter().enumerate() {
        let key = format!("sources[{i}]");
        let set = [s.header.is_some(), s.cookie.is_some(), s.query.is_some()].iter().filter(|b| **b).count();
        if set != 1 {
            out.add(key.clone(), "set exactly one of `header`, `cookie`, `query`");
        }
        if s.prefix.is_some() && s.header.is_none() {
            out.add(format!("{key}.prefix"), "`prefix` only applies to a `header` source");
        }
        for (name, v) in [("header", &s.header), ("cookie", &s.cookie), ("query", &s.query)] {
            if let Some(v) = v {
                if v.is_empty() {
                    out.add(format!("{key}.{name}"), "must not be empty");
                } else if name == "header" && !is_header_name(v) {
                    out.add(format!("{key}.{name}"), format!("{v:?} is not a lowercase header name"));
                }
            }
        }
    }
}

/// Lowercase RFC 7230 token characters: Envoy sends header names lowercased.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers an identity header must never replace.
pub(super) fn is_reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || matches!(name, "authorization" | "cookie" | "host" | "content-length" | "transfer-encoding")
        || name.starts_with("x-envoy-")
}
