//! A verified token's claims as dynamic metadata namespace `hopauth`, built once per token
//! and applied on every cache hit with the fewest Envoy calls that keep every type: string
//! claims in one batch, numbers and booleans one call each, and only objects, lists and
//! nulls as a serialized `google.protobuf.Struct` (which Envoy must parse). The result is
//! the Struct the ext_authz allow carries (`render::claims_struct`); the tests hold the two
//! to the same fields.
//!
//! Why not one Struct for everything: counted with callgrind through Envoy 1.40 (eight
//! claims, five of them strings), the Struct call costs ~18k instructions per request and
//! these calls ~15.5k; the parse is what the batch saves. The rest is Envoy's own merge.
use hopauth::render::{self, METADATA_NAMESPACE};
use serde_json::{Map, Value};

use crate::ffi::RequestContext;

/// The claims as Envoy metadata calls; empty for an anonymous allow (no metadata).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimsMetadata {
    strings: Box<[(Box<str>, Box<str>)]>,
    /// As the Struct encoding has them: every JSON number as an `f64`.
    numbers: Box<[(Box<str>, f64)]>,
    bools: Box<[(Box<str>, bool)]>,
    /// The objects, lists and nulls, as a serialized Struct; empty if there are none.
    nested: Box<[u8]>,
}

impl ClaimsMetadata {
    /// The calls that put `claims` into the namespace.
    pub fn of(claims: &Map<String, Value>) -> Self {
        let (mut strings, mut numbers, mut bools) = (Vec::new(), Vec::new(), Vec::new());
        let mut nested = Map::new();
        for (name, value) in claims {
            let key = || Box::from(name.as_str());
            match value {
                Value::String(s) => strings.push((key(), Box::from(s.as_str()))),
                Value::Number(n) => numbers.push((key(), n.as_f64().unwrap_or(0.0))),
                Value::Bool(b) => bools.push((key(), *b)),
                Value::Null | Value::Array(_) | Value::Object(_) => {
                    nested.insert(name.clone(), value.clone());
                }
            }
        }
        let nested = if nested.is_empty() { Box::default() } else { render::claims_struct(&nested).into() };
        Self { strings: strings.into(), numbers: numbers.into(), bools: bools.into(), nested }
    }

    /// Whether there is nothing to set.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.numbers.is_empty() && self.bools.is_empty() && self.nested.is_empty()
    }

    /// Heap bytes held (the verified-token cache weighs entries by them).
    pub fn heap_bytes(&self) -> usize {
        fn named<T>(entries: &[(Box<str>, T)]) -> usize {
            entries.iter().map(|(k, _)| k.len() + size_of::<(Box<str>, T)>()).sum()
        }
        named(&self.strings)
            + self.strings.iter().map(|(_, v)| v.len()).sum::<usize>()
            + named(&self.numbers)
            + named(&self.bools)
            + self.nested.len()
    }

    /// Merges the claims into namespace `hopauth` of the stream on `ctx`.
    pub fn apply(&self, ctx: &mut RequestContext<'_>) {
        if !self.strings.is_empty() {
            ctx.set_metadata_strings(METADATA_NAMESPACE, &self.strings);
        }
        for (key, value) in &self.numbers {
            ctx.set_metadata_number(METADATA_NAMESPACE, key, *value);
        }
        for (key, value) in &self.bools {
            ctx.set_metadata_bool(METADATA_NAMESPACE, key, *value);
        }
        if !self.nested.is_empty() {
            ctx.set_metadata_struct(METADATA_NAMESPACE, &self.nested);
        }
    }

    /// The namespace's fields once applied, as Envoy holds them (tests).
    #[cfg(test)]
    pub fn to_struct(&self) -> envoy_types::pb::google::protobuf::Struct {
        use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
        let mut merged: Struct =
            if self.nested.is_empty() { Struct::default() } else { prost::Message::decode(&*self.nested).unwrap() };
        let mut put = |key: &str, kind: Kind| merged.fields.insert(key.to_string(), PbValue { kind: Some(kind) });
        for (k, v) in &self.strings {
            put(k, Kind::StringValue(v.to_string()));
        }
        for (k, v) in &self.numbers {
            put(k, Kind::NumberValue(*v));
        }
        for (k, v) in &self.bools {
            put(k, Kind::BoolValue(*v));
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_claim_goes_to_the_cheapest_call_that_keeps_its_type() {
        let claims = json!({"sub": "alice", "exp": 5, "admin": true, "aud": ["a", "b"], "o": {"k": 1}, "n": null});
        let m = ClaimsMetadata::of(claims.as_object().unwrap());
        assert_eq!(&*m.strings, [(Box::from("sub"), Box::from("alice"))]);
        assert_eq!(&*m.numbers, [(Box::from("exp"), 5.0)]);
        assert_eq!(&*m.bools, [(Box::from("admin"), true)]);
        let nested: envoy_types::pb::google::protobuf::Struct = prost::Message::decode(&*m.nested).unwrap();
        let mut keys: Vec<_> = nested.fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "n", "o"], "only objects, lists and nulls are parsed by Envoy");
        assert!(m.heap_bytes() > m.nested.len());
    }

    #[test]
    fn flat_claims_need_no_struct_and_no_claims_need_nothing() {
        let m = ClaimsMetadata::of(json!({"sub": "s", "iat": 1}).as_object().unwrap());
        assert!(m.nested.is_empty() && !m.is_empty());
        let none = ClaimsMetadata::of(&Map::new());
        assert!(none.is_empty());
        assert_eq!(none, ClaimsMetadata::default());
    }
}
