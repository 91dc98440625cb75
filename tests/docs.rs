//! docs/configuration.md documents every key of the real `Config`: a config that sets every
//! optional field is serialized, every dotted key path is collected, and each must appear
//! in the page inside backticks. A new config field without a doc row fails here.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use hopauth::config::Config;
use serde_json::Value;

/// Maps whose keys are user data (claim names), not config keys: documented as one key.
const LEAF_MAPS: &[&str] = &["claims_to_headers"];
/// Keys the YAML below cannot set without outside state (an env var with a 32-byte secret).
const EXTRA_KEYS: &[&str] = &["providers[].hmac_secret_env"];

fn collect(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if LEAF_MAPS.contains(&key.as_str()) {
                    out.insert(p);
                } else {
                    collect(v, &p, out);
                }
            }
        }
        // Arrays of objects are walked as `name[]`; arrays of scalars are one key.
        Value::Array(items) if items.iter().any(Value::is_object) => {
            items.iter().for_each(|v| collect(v, &format!("{path}[]"), out));
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

#[test]
fn every_config_key_is_documented() {
    // `jwks.uri`, `jwks.file` and `jwks.discovery` are exclusive: two providers cover them,
    // and validation wants the file to exist.
    let mut jwks_file = tempfile::NamedTempFile::new().expect("temp file");
    jwks_file.write_all(br#"{"keys":[]}"#).expect("write temp file");
    let yaml = format!(
        r#"
grpc_listen: 127.0.0.1:19001
http_listen: 127.0.0.1:19002
sources: [{{ header: authorization, prefix: "Bearer " }}, {{ cookie: access_token }}, {{ query: access_token }}]
providers:
  - name: main
    issuer: https://issuer.example
    audiences: [orders]
    algorithms: [ES256, RS256]
    jwks: {{ uri: "http://127.0.0.1:8080/jwks.json", refresh_interval: 5m, max_stale: 24h, timeout: 5s,
            max_bytes: 65536, kid_refetch_interval: 30s, kid_refetch_wait: 100ms }}
    leeway: 30s
    claims_to_headers: {{ sub: x-jwt-sub }}
    payload_header: x-jwt-payload
    typ: at+jwt
    max_token_age: 10m
  - {{ name: partner, issuer: https://partner.example, audiences: [orders], algorithms: [EdDSA],
      jwks: {{ file: {file:?} }} }}
revocation: {{ backend: redis, redis_url: "redis://127.0.0.1:6379/0", max_staleness: 5s,
              failure_mode: deny, max_token_lifetime: 24h }}
admin: {{ token_env: HOPAUTH_ADMIN_TOKEN }}
max_token_bytes: 8192
max_queue_delay: 50ms
verify_cache: {{ max_entries: 1000 }}
"#,
        file = jwks_file.path().display().to_string()
    );
    let config = Config::from_yaml(&yaml, Path::new("x.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut keys = BTreeSet::new();
    collect(&serde_json::to_value(&config).expect("config serializes"), "", &mut keys);
    keys.extend(EXTRA_KEYS.iter().map(|k| k.to_string()));

    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"))
        .expect("docs/configuration.md exists");
    let missing: Vec<&String> = keys.iter().filter(|k| !doc.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not document these config keys: {missing:?}");
}
