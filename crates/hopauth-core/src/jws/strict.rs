//! JSON read strictly: no duplicate member names at any depth, nesting bounded by
//! `MAX_JSON_DEPTH`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::MAX_JSON_DEPTH;

/// A JSON value whose objects, at every depth, have no duplicate member names (RFC 8725
/// §3.7 / RFC 7515 §4: a downstream parser could otherwise read the other value), and
/// whose arrays and objects nest at most `MAX_JSON_DEPTH` deep.
pub(super) struct Strict(pub(super) Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor { depth: 0 })
    }
}

/// Reads one value `depth` containers deep; a container here would be at `depth + 1`.
#[derive(Clone, Copy)]
struct StrictVisitor {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for StrictVisitor {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(self)
    }
}

/// The error text `strict_object` recognises as "too deep".
pub(super) const TOO_DEEP: &str = "nesting deeper than MAX_JSON_DEPTH";

impl StrictVisitor {
    /// The visitor for the members of a container opened at this level; refused before
    /// any member is read when it would be too deep.
    fn inner<E: de::Error>(self) -> Result<StrictVisitor, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(StrictVisitor { depth: self.depth + 1 })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v).map(|n| Strict(Value::Number(n))).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value_seed(inner)?;
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            map.insert(key, value);
        }
        Ok(Strict(Value::Object(map)))
    }
}
