//! docs/configuration.md documents every key of the real `Config`: a config that sets every
//! optional field is serialized, every dotted key path is collected, and each must appear
//! in the page inside backticks. A new config field without a doc row fails here.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use hopauth::config::Config;
use hopauth_testkit as support;
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
tracing: {{ otlp_endpoint: "http://127.0.0.1:4317", sample_ratio: 0.5, service_name: hopauth, export_timeout: 5s }}
"#,
        file = jwks_file.path().display().to_string()
    );
    let config = Config::from_yaml(&yaml, Path::new("x.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut keys = BTreeSet::new();
    collect(&serde_json::to_value(&config).expect("config serializes"), "", &mut keys);
    keys.extend(EXTRA_KEYS.iter().map(|k| k.to_string()));

    let doc = std::fs::read_to_string(support::repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md exists");
    let missing: Vec<&String> = keys.iter().filter(|k| !doc.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not document these config keys: {missing:?}");
}

/// Every file the repository tracks (`git ls-files`), or, without git, every file under
/// the root except build output and tool downloads.
fn repo_files(root: &Path) -> Vec<std::path::PathBuf> {
    let listed = std::process::Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output();
    if let Some(out) = listed.ok().filter(|o| o.status.success() && !o.stdout.is_empty()) {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable repo dir").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if ![".git", "target", ".tools"].contains(&name.to_string_lossy().as_ref()) {
                    dirs.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// GitHub's anchor for a Markdown heading: lowercase, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A user's clone has no team notes beside it: nothing tracked may read or cite the
/// notes outside the repo (docs/security.md replaces them inside the repo). `.ci/` is the machinery's.
#[test]
fn nothing_cites_files_outside_the_repo() {
    let root = &support::repo_root();
    // Built from pieces so this file does not match itself.
    let needles = [concat!("..", "/shared"), concat!("SECURITY", ".md")];
    let mut hits = Vec::new();
    for path in repo_files(root) {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if rel.starts_with(".ci") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                hits.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "cite docs/security.md instead of files outside the repo:\n{}", hits.join("\n"));
}

/// Every `security.md#anchor` cited anywhere in the repo (docs links, code comments, and
/// `#anchor` links inside docs/security.md) names a heading that exists.
#[test]
fn every_cited_security_anchor_exists() {
    let root = &support::repo_root();
    let page = std::fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md exists");
    let anchors: BTreeSet<String> =
        page.lines().filter_map(|l| l.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect();
    let anchor_at = |text: &str, at: usize| -> String {
        text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
    };
    let mut cited = Vec::new();
    for path in repo_files(root) {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        if rel == "crates/hopauth/tests/docs.rs" {
            continue; // the patterns below, not citations
        }
        for (at, _) in text.match_indices("security.md#") {
            cited.push((rel.clone(), anchor_at(&text, at + "security.md#".len())));
        }
        if rel == "docs/security.md" {
            for (at, _) in text.match_indices("](#") {
                cited.push((rel.clone(), anchor_at(&text, at + "](#".len())));
            }
        }
    }
    assert!(cited.iter().any(|(f, _)| f != "docs/security.md"), "nothing cites docs/security.md: is the scan broken?");
    let missing: Vec<String> =
        cited.iter().filter(|(_, a)| !anchors.contains(a)).map(|(f, a)| format!("{f}: #{a}")).collect();
    assert!(
        missing.is_empty(),
        "cited anchors missing from docs/security.md (headings: {anchors:?}):\n{}",
        missing.join("\n")
    );
}
