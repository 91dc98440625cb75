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

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

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

/// One field of a message: its number and, for length-delimited fields, its bytes.
struct Field<'a> {
    number: u32,
    wire_type: u8,
    data: &'a [u8],
}

/// Iterates the fields of one message; scalar fields are skipped over.
struct Fields<'a> {
    rest: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(WireError::Malformed)
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], WireError> {
    let n = usize::try_from(n).map_err(|_| WireError::Malformed)?;
    if n > buf.len() {
        return Err(WireError::Malformed);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.rest)?;
            let number = u32::try_from(key >> 3).map_err(|_| WireError::Malformed)?;
            if number == 0 {
                return Err(WireError::Malformed);
            }
            let wire_type = (key & 7) as u8;
            let data = match wire_type {
                VARINT => {
                    varint(&mut self.rest)?;
                    &[][..]
                }
                FIXED64 => take(&mut self.rest, 8)?,
                LEN => {
                    let len = varint(&mut self.rest)?;
                    take(&mut self.rest, len)?
                }
                FIXED32 => take(&mut self.rest, 4)?,
                // Groups (3, 4) are not used by any of these messages; 6 and 7 do not exist.
                _ => return Err(WireError::Malformed),
            };
            Ok(Field { number, wire_type, data })
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

fn fields(data: &[u8]) -> Fields<'_> {
    Fields { rest: data }
}

/// The bytes of a length-delimited field, checking the wire type.
fn bytes_of<'a>(f: &Field<'a>) -> Result<&'a [u8], WireError> {
    if f.wire_type == LEN {
        Ok(f.data)
    } else {
        Err(WireError::WireType(f.number))
    }
}

/// Records a singular field's position, refusing a second occurrence.
fn once(slot: &mut Option<Range<usize>>, base: &[u8], f: &Field<'_>) -> Result<(), WireError> {
    let data = bytes_of(f)?;
    if slot.is_some() {
        return Err(WireError::Repeated(f.number));
    }
    let start = data.as_ptr() as usize - base.as_ptr() as usize;
    *slot = Some(start..start + data.len());
    Ok(())
}

/// The bytes of a recorded field position; none when the field was absent.
fn part_of<'b>(b: &'b [u8], range: &Option<Range<usize>>) -> &'b [u8] {
    range.as_ref().map_or(&[][..], |r| &b[r.clone()])
}

/// (key, value) of a `map<string, string>` entry; absent members are empty.
fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    for f in fields(entry) {
        let f = f?;
        match f.number {
            field::MAP_KEY => key = bytes_of(&f)?,
            field::MAP_VALUE => value = bytes_of(&f)?,
            _ => {}
        }
    }
    Ok((key, value))
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
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message;

    fn request(headers: &[(&str, &str)], raw: &[(&str, &[u8])], path: &str, ext: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer { principal: "spiffe://x/src".into(), ..Default::default() }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: path.into(),
                        host: "svc".into(),
                        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        header_map: (!raw.is_empty()).then(|| HeaderMap {
                            headers: raw
                                .iter()
                                .map(|(k, v)| HeaderValue {
                                    key: k.to_string(),
                                    raw_value: v.to_vec(),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
        }
    }

    fn view(r: &CheckRequest) -> CheckView {
        CheckView::parse(r.encode_to_vec().into()).unwrap()
    }

    fn values<'a>(v: &'a CheckView, name: &str) -> Vec<&'a [u8]> {
        v.header_values(name).collect()
    }

    #[test]
    fn reads_what_prost_encoded() {
        let r = request(
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
        let mut r = request(&[], &[("authorization", b"")], "/", &[]);
        let hv = &mut r.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
        hv.header_map.as_mut().unwrap().headers[0].value = "Bearer v".into();
        assert_eq!(values(&view(&r), "authorization"), vec![&b"Bearer v"[..]]);
    }

    #[test]
    fn refuses_what_prost_would_merge_or_reject() {
        let one = request(&[("authorization", "Bearer a")], &[], "/", &[]).encode_to_vec();
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
        let mut bad = request(&[], &[], "/ok", &[]).encode_to_vec();
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
            let r = request(&hs, &rs, &format!("/n/{n}"), &[("k", "v")]);
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
