//! A CheckRequest read in place: the protobuf bytes tonic received, walked for the few
//! fields hopauth uses (request headers, path, context extensions) without decoding the
//! rest into owned strings and maps. Envoy sends addresses, peers, metadata and every
//! allowed header; a full prost decode allocated for each of them on every Check.
//!
//! The reader is strict where prost would merge: a singular field that appears twice
//! (`attributes`, `request`, `http`, `path`, `header_map`) makes the request invalid. Any
//! wire-format error is answered with a 400 deny inside a normal CheckResponse (see
//! `grpc::AuthorizationService::check_unreadable`), never a gRPC error.

use std::ops::Range;

use bytes::Bytes;

use hopauth_core::token::RequestView;

mod proto;

use self::proto::{bytes_of, fields, map_entry, once, part_of};

/// Field numbers, from envoy/service/auth/v3/{external_auth,attribute_context}.proto and
/// envoy/config/core/v3/base.proto.
mod field {
    pub(super) const CHECK_ATTRIBUTES: u32 = 1;
    pub(super) const ATTR_REQUEST: u32 = 4;
    pub(super) const ATTR_CONTEXT_EXTENSIONS: u32 = 10;
    pub(super) const REQUEST_HTTP: u32 = 2;
    pub(super) const HTTP_HEADERS: u32 = 3;
    pub(super) const HTTP_PATH: u32 = 4;
    pub(super) const HTTP_HEADER_MAP: u32 = 13;
    pub(super) const HEADER_MAP_HEADERS: u32 = 1;
    pub(super) const HEADER_VALUE_KEY: u32 = 1;
    pub(super) const HEADER_VALUE_VALUE: u32 = 2;
    pub(super) const HEADER_VALUE_RAW: u32 = 3;
    pub(super) const MAP_KEY: u32 = 1;
    pub(super) const MAP_VALUE: u32 = 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("field {0} has the wrong wire type")]
    WireType(u32),
    #[error("singular field {0} appears more than once")]
    Repeated(u32),
    #[error("field {0} is not valid UTF-8")]
    Utf8(u32),
    /// tonic refused the message before it reached this reader (larger than the receive
    /// limit, or compressed without compression configured).
    #[error("the gRPC layer refused the message: {0}")]
    Refused(tonic::Code),
}

/// A CheckRequest in its received bytes, with the positions of the parts hopauth reads.
#[derive(Debug, Clone)]
pub struct CheckView {
    bytes: Bytes,
    /// The `AttributeContext` message, for `context_extensions`.
    attributes: Option<Range<usize>>,
    /// The `HttpRequest` message, for `headers` and `header_map`.
    http: Option<Range<usize>>,
    path: Option<Range<usize>>,
    header_map: Option<Range<usize>>,
}

impl CheckView {
    /// Walks the message once: finds the parts, checks the structure and the UTF-8 of
    /// the strings hopauth reads as text. Header values stay bytes (raw headers may not be
    /// text); the token taken from them is checked when it is extracted.
    pub fn parse(bytes: Bytes) -> Result<CheckView, WireError> {
        let b = &bytes[..];
        let mut view = CheckView { bytes: Bytes::new(), attributes: None, http: None, path: None, header_map: None };
        for f in fields(b) {
            let f = f?;
            if f.number == field::CHECK_ATTRIBUTES {
                once(&mut view.attributes, b, &f)?;
            }
        }
        let mut request = None;
        for f in fields(part_of(b, &view.attributes)) {
            let f = f?;
            match f.number {
                field::ATTR_REQUEST => once(&mut request, b, &f)?,
                field::ATTR_CONTEXT_EXTENSIONS => {
                    let (k, v) = map_entry(bytes_of(&f)?)?;
                    if std::str::from_utf8(k).is_err() || std::str::from_utf8(v).is_err() {
                        return Err(WireError::Utf8(f.number));
                    }
                }
                _ => {}
            }
        }
        for f in fields(part_of(b, &request)) {
            let f = f?;
            if f.number == field::REQUEST_HTTP {
                once(&mut view.http, b, &f)?;
            }
        }
        for f in fields(part_of(b, &view.http)) {
            let f = f?;
            match f.number {
                field::HTTP_PATH => once(&mut view.path, b, &f)?,
                field::HTTP_HEADER_MAP => once(&mut view.header_map, b, &f)?,
                field::HTTP_HEADERS => {
                    map_entry(bytes_of(&f)?)?;
                }
                _ => {}
            }
        }
        if std::str::from_utf8(part_of(b, &view.path)).is_err() {
            return Err(WireError::Utf8(field::HTTP_PATH));
        }
        for f in fields(part_of(b, &view.header_map)) {
            let f = f?;
            if f.number == field::HEADER_MAP_HEADERS {
                header_value(bytes_of(&f)?)?;
            }
        }
        view.bytes = bytes;
        Ok(view)
    }

    fn part(&self, range: &Option<Range<usize>>) -> &[u8] {
        part_of(&self.bytes, range)
    }

    /// A `context_extensions` value (the route's per-filter config); the last entry wins,
    /// as in a decoded map.
    pub fn context_extension(&self, key: &str) -> Option<&str> {
        let mut found = None;
        // parse() validated every entry: structure and UTF-8.
        for f in fields(self.part(&self.attributes)).flatten() {
            if f.number == field::ATTR_CONTEXT_EXTENSIONS {
                if let Ok((k, v)) = map_entry(f.data) {
                    if k == key.as_bytes() {
                        found = std::str::from_utf8(v).ok();
                    }
                }
            }
        }
        found
    }
}

/// (key, value) of a `HeaderValue`: `raw_value` when set, else `value`.
fn header_value(data: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value, mut raw) = (&[][..], &[][..], &[][..]);
    for f in fields(data) {
        let f = f?;
        match f.number {
            field::HEADER_VALUE_KEY => key = bytes_of(&f)?,
            field::HEADER_VALUE_VALUE => value = bytes_of(&f)?,
            field::HEADER_VALUE_RAW => raw = bytes_of(&f)?,
            _ => {}
        }
    }
    Ok((key, if raw.is_empty() { value } else { raw }))
}

impl RequestView for CheckView {
    /// Values from the `headers` map (keys as Envoy lowercased them) and then from
    /// `header_map` (keys compared case-insensitively), in wire order.
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        let name = name.as_bytes();
        let map = fields(self.part(&self.http))
            .flatten()
            .filter(|f| f.number == field::HTTP_HEADERS)
            .filter_map(|f| map_entry(f.data).ok())
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v);
        let raw = fields(self.part(&self.header_map))
            .flatten()
            .filter(|f| f.number == field::HEADER_MAP_HEADERS)
            .filter_map(|f| header_value(f.data).ok())
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        map.chain(raw)
    }

    fn path(&self) -> &str {
        // parse() checked it is UTF-8.
        std::str::from_utf8(self.part(&self.path)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use hopauth_testkit::check_request::check_request;
    use prost::Message;

    fn view(r: &CheckRequest) -> CheckView {
        CheckView::parse(r.encode_to_vec().into()).unwrap()
    }

    fn values<'a>(v: &'a CheckView, name: &str) -> Vec<&'a [u8]> {
        v.header_values(name).collect()
    }

    #[test]
    fn reads_what_prost_encoded() {
        let r = check_request(
            &[("authorization", "Bearer a"), ("cookie", "c=1")],
            &[("X-Raw", b"\xffbytes"), ("x-raw", b"two")],
            "/p?q=1",
            &[("hopauth.scopes", "read"), ("other", "x")],
        );
        let v = view(&r);
        assert_eq!(values(&v, "authorization"), vec![&b"Bearer a"[..]]);
        assert_eq!(values(&v, "cookie"), vec![&b"c=1"[..]]);
        assert_eq!(values(&v, "x-raw"), vec![&b"\xffbytes"[..], &b"two"[..]]);
        assert!(values(&v, "absent").is_empty());
        assert_eq!(v.path(), "/p?q=1");
        assert_eq!(v.context_extension("hopauth.scopes"), Some("read"));
        assert_eq!(v.context_extension("other"), Some("x"));
        assert_eq!(v.context_extension("missing"), None);
    }

    #[test]
    fn empty_and_partial_requests_have_no_headers() {
        let v = CheckView::parse(Bytes::new()).unwrap();
        assert!(values(&v, "authorization").is_empty());
        assert_eq!(v.path(), "");
        let v = view(&CheckRequest { attributes: Some(AttributeContext::default()) });
        assert!(values(&v, "authorization").is_empty());
    }

    #[test]
    fn header_value_falls_back_to_value_when_raw_is_empty() {
        let mut r = check_request(&[], &[("authorization", b"")], "/", &[]);
        let hv = &mut r.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
        hv.header_map.as_mut().unwrap().headers[0].value = "Bearer v".into();
        assert_eq!(values(&view(&r), "authorization"), vec![&b"Bearer v"[..]]);
    }

    #[test]
    fn refuses_what_prost_would_merge_or_reject() {
        let one = check_request(&[("authorization", "Bearer a")], &[], "/", &[]).encode_to_vec();
        // The same `attributes` field twice: prost merges, hopauth refuses.
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(CheckView::parse(twice.into()).unwrap_err(), WireError::Repeated(1));
        // Every truncation of a valid message is refused or read without a panic; cutting
        // the last byte leaves `attributes` shorter than its length prefix: refused.
        let mut refused = 0;
        for cut in 0..one.len() {
            match CheckView::parse(Bytes::copy_from_slice(&one[..cut])) {
                Ok(v) => {
                    let _ = (v.header_values("authorization").count(), v.path());
                }
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 0);
        assert!(CheckView::parse(Bytes::copy_from_slice(&one[..one.len() - 1])).is_err());
        assert_eq!(CheckView::parse(Bytes::from_static(&[0x0a, 0x05, 0x01])).unwrap_err(), WireError::Malformed);
        // attributes as a varint.
        assert_eq!(CheckView::parse(Bytes::from_static(&[0x08, 0x01])).unwrap_err(), WireError::WireType(1));
        // A path that is not UTF-8.
        let mut bad = check_request(&[], &[], "/ok", &[]).encode_to_vec();
        let at = bad.windows(3).position(|w| w == b"/ok").unwrap();
        bad[at + 1] = 0xff;
        assert_eq!(CheckView::parse(bad.into()).unwrap_err(), WireError::Utf8(4));
        // An over-long varint.
        assert_eq!(CheckView::parse(Bytes::from_static(&[0xff; 11])).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn agrees_with_prost_on_generated_requests() {
        // Deterministic variety: header counts, both encodings, unknown fields around.
        for n in 0..64u32 {
            let headers: Vec<(String, String)> = (0..n % 7).map(|i| (format!("h{i}"), format!("v{n}-{i}"))).collect();
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let raws: Vec<(String, Vec<u8>)> =
                (0..n % 5).map(|i| (format!("R{i}"), vec![b'a' + i as u8; i as usize])).collect();
            let rs: Vec<(&str, &[u8])> = raws.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let r = check_request(&hs, &rs, &format!("/n/{n}"), &[("k", "v")]);
            let v = view(&r);
            let decoded = CheckRequest::decode(&r.encode_to_vec()[..]).unwrap();
            let http = decoded.attributes.unwrap().request.unwrap().http.unwrap();
            for (k, val) in &http.headers {
                assert_eq!(values(&v, k), vec![val.as_bytes()]);
            }
            for hv in http.header_map.iter().flat_map(|m| &m.headers) {
                let want = if hv.raw_value.is_empty() { hv.value.as_bytes() } else { &hv.raw_value[..] };
                assert!(values(&v, &hv.key.to_lowercase()).contains(&want));
            }
            assert_eq!(v.path(), http.path);
        }
    }
}
