//! `CheckView::parse` on arbitrary bytes, checked against prost's decode of the same bytes.
//!
//! Properties: when both accept, every header prost sees (the `headers` map and each
//! `header_map` entry, `raw_value` before `value`) is among the view's values for that
//! name (the view may yield more: each of duplicate map keys, where prost keeps the last,
//! so a smuggled second credential is seen, never hidden); the path and each context
//! extension agree. When prost accepts and the view refuses, it is for a reason the view
//! documents (a repeated singular field, a group). Re-encoding what prost decoded gives a
//! message the view reads the same way.
#![no_main]

use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use hopauth::grpc::wire::{CheckView, WireError};
use hopauth_core::token::RequestView;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Context extensions hopauth reads, plus one it does not.
const EXTENSIONS: [&str; 4] = ["hopauth.providers", "hopauth.require_scopes", "hopauth.anonymous", "other"];

fuzz_target!(|data: &[u8]| {
    let view = CheckView::parse(Bytes::copy_from_slice(data));
    let decoded = CheckRequest::decode(data);
    match (&view, &decoded) {
        (Ok(v), Ok(r)) => agree(v, r),
        (Err(e), Ok(_)) => {
            assert!(
                matches!(e, WireError::Repeated(_) | WireError::Malformed),
                "prost decodes what the view refuses with {e:?}"
            );
        }
        (Ok(v), Err(_)) => {
            // The view skips fields it does not read; it must still answer without a panic.
            let _ = (v.header_values("authorization").count(), v.path(), v.context_extension("hopauth.anonymous"));
        }
        (Err(_), Err(_)) => {}
    }
    if let Ok(r) = decoded {
        // What prost holds, re-encoded, has no repeated singular fields: the view reads it.
        let again = CheckView::parse(r.encode_to_vec().into()).expect("the view reads prost's encoding");
        agree(&again, &r);
    }
});

fn agree(v: &CheckView, r: &CheckRequest) {
    let attrs = r.attributes.as_ref();
    let http = attrs.and_then(|a| a.request.as_ref()).and_then(|q| q.http.as_ref());
    assert_eq!(v.path(), http.map_or("", |h| h.path.as_str()), "path");
    for key in EXTENSIONS {
        assert_eq!(
            v.context_extension(key),
            attrs.and_then(|a| a.context_extensions.get(key)).map(String::as_str),
            "context extension {key}"
        );
    }
    let Some(http) = http else {
        assert_eq!(v.header_values("authorization").count(), 0);
        return;
    };
    // Every name either side knows, lowercased as hopauth asks for it.
    let mut names: Vec<String> = http.headers.keys().cloned().collect();
    names.extend(http.header_map.iter().flat_map(|m| &m.headers).map(|h| h.key.to_ascii_lowercase()));
    names.push("authorization".into());
    for name in names {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            continue; // hopauth only asks for lowercase names
        }
        let got: Vec<&[u8]> = v.header_values(&name).collect();
        let mut want: Vec<&[u8]> = Vec::new();
        // prost keeps the last of duplicate map keys; the view yields each entry.
        if let Some(value) = http.headers.get(&name) {
            want.push(value.as_bytes());
            assert!(got.contains(&value.as_bytes()), "{name}: map value {value:?} not in {got:?}");
        }
        for h in http.header_map.iter().flat_map(|m| &m.headers).filter(|h| h.key.eq_ignore_ascii_case(&name)) {
            let value = if h.raw_value.is_empty() { h.value.as_bytes() } else { &h.raw_value[..] };
            want.push(value);
            assert!(got.contains(&value), "{name}: header_map value {value:?} not in {got:?}");
        }
        // The view may see more (duplicate map keys prost merged away), never fewer.
        assert!(got.len() >= want.len(), "{name}: {got:?} vs {want:?}");
    }
}
