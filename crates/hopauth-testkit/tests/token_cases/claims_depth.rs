//! Whatever the claims, every answer decodes under protobuf's default limits.

use super::*;

// ---- Hole 13: every answer hopauth gives decodes under protobuf's default limits.

/// The reference: serde_json → prost's own types.
fn to_pb(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(to_pb).collect() }),
        Value::Object(m) => {
            Kind::StructValue(Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect() })
        }
    };
    PbValue { kind: Some(kind) }
}

/// Containers deep, the value itself counting as 1 when it is an array or object.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A random JSON value at most `budget` containers deep, with a bias to go deep: each
/// container has one child that may use the whole budget and up to two shallow ones.
fn random_value(rng: &mut StdRng, budget: usize) -> Value {
    // Side branches (budget < 3) are anything; the deep path stays a container 19 times in 20.
    let pick = match budget {
        0 => rng.random_range(0..4),
        1..3 => rng.random_range(0..10),
        _ if rng.random_range(0..20) == 0 => rng.random_range(0..4),
        _ => rng.random_range(4..10),
    };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        // Quarters: exact in binary, so the JSON text round-trips to the same f64.
        2 => json!(f64::from(rng.random_range(-4_000_000..4_000_000)) / 4.0),
        3 => Value::String((0..rng.random_range(0..6)).map(|_| rng.random_range('a'..='z')).collect()),
        4..=6 => {
            let n = rng.random_range(0..3);
            let mut items: Vec<Value> = (0..n)
                .map(|_| {
                    let shallow = rng.random_range(0..budget.min(3));
                    random_value(rng, shallow)
                })
                .collect();
            items.push(random_value(rng, budget - 1));
            Value::Array(items)
        }
        _ => {
            let n = rng.random_range(0..3);
            let mut m = Map::new();
            for i in 0..n {
                let shallow = rng.random_range(0..budget.min(3));
                m.insert(format!("k{i}"), random_value(rng, shallow));
            }
            m.insert("deep".into(), random_value(rng, budget - 1));
            Value::Object(m)
        }
    }
}

/// A chain of `depth` objects or arrays around a string.
fn chain(depth: usize, objects: bool) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| if objects { json!({ "n": inner }) } else { json!([inner]) })
}

#[tokio::test]
async fn every_answer_decodes_under_default_protobuf_limits_whatever_the_claims() {
    let f = fixture("").await;
    let check = |claims: &Value| {
        let token = f.keys.es.sign_jwt(claims).unwrap();
        let request = check_request(&[("authorization", &bearer(&token))], &[], "/x", &[]).encode_to_vec();
        let view = CheckView::parse(request.into()).unwrap();
        let svc = &f.svc;
        async move { svc.check_wire(&view, clock::Instant::now()).await }
    };
    // Worst cases at and past the bound: chains of objects (3 protobuf levels each) and of
    // arrays (2 each). The claim's own nesting is the claims object's plus one.
    for objects in [true, false] {
        for claim_depth in [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 33, 49, 100] {
            let mut c = claims("alice");
            c["nested"] = chain(claim_depth, objects);
            let reply = check(&c).await;
            // prost's default recursion limit is 100, as is Envoy's (C++ protobuf).
            let r = CheckResponse::decode(reply.clone()).unwrap_or_else(|e| {
                panic!("{claim_depth} {}: undecodable answer: {e}", if objects { "objects" } else { "arrays" })
            });
            if claim_depth < MAX_JSON_DEPTH {
                assert_eq!(verdict(&r).0, 200, "{claim_depth}");
                let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
                let Some(Kind::StructValue(s)) = &meta.kind else { panic!("{meta:?}") };
                assert_eq!(s.fields["nested"], to_pb(&c["nested"]), "metadata holds the whole claim");
            } else {
                assert_eq!(verdict(&r), (401, "nesting_too_deep".into()), "{claim_depth}");
            }
        }
    }
    // Random shapes up to and past the bound: allowed exactly when within it, and every
    // answer decodes.
    let mut rng = StdRng::seed_from_u64(0x5eed_0013);
    let (mut allowed, mut refused) = (0, 0);
    for case in 0..300 {
        let mut c = claims("alice");
        // Concentrated around the bound, where it matters.
        let budget = rng.random_range(MAX_JSON_DEPTH / 2..MAX_JSON_DEPTH + 12);
        c["x"] = random_value(&mut rng, budget);
        let within = depth(&c) <= MAX_JSON_DEPTH;
        let reply = check(&c).await;
        let r = CheckResponse::decode(reply).unwrap_or_else(|e| panic!("case {case}: undecodable answer: {e}: {c}"));
        if within {
            assert_eq!(verdict(&r).0, 200, "case {case}: {c}");
            let meta = &r.dynamic_metadata.as_ref().unwrap().fields["hopauth"];
            assert_eq!(*meta, to_pb(&c), "case {case}");
            allowed += 1;
        } else {
            assert_eq!(verdict(&r), (401, "nesting_too_deep".into()), "case {case}");
            refused += 1;
        }
    }
    assert!(allowed > 50 && refused > 50, "the generator covers both sides: {allowed} allowed, {refused} refused");
}
