//! Writes the committed seed corpora, fuzz/seeds/<target>/, from the project's own test
//! material: the Wycheproof vectors (crates/hopauth-core/tests/vectors/wycheproof), the cases of the unit
//! tests, the YAML examples in the docs, and CheckRequests built with envoy-types/prost
//! carrying tokens signed by the fixture's keys. Run it from the repository root when the
//! targets' input formats change (docs/fuzzing.md):
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//!
//! Files named `regress-*` are inputs that once failed; this tool never touches them.

// The deps are built with the fuzz flags (SanitizerCoverage): libFuzzer provides the hooks.
use libfuzzer_sys as _;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use hopauth_fuzz::{fixture_config, signing_keys, AUDIENCE, ISSUER, REVOKED_JTI, REVOKED_SUB, SEED_EXP};
use hopauth_testkit::check_request::check_request;
use prost::Message;
use serde_json::{json, Value};

struct Seeds {
    dir: PathBuf,
    n: usize,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        // Regenerate: drop generated seeds, keep regression inputs.
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_str().is_some_and(|n| n.starts_with("seed-")) {
                std::fs::remove_file(p).unwrap();
            }
        }
        Seeds { dir, n: 0 }
    }
    fn add(&mut self, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.dir.join(format!("seed-{:04}", self.n)), bytes.as_ref()).unwrap();
        self.n += 1;
    }
    /// A seed for a target whose first byte picks a mode.
    fn add_mode(&mut self, mode: u8, bytes: impl AsRef<[u8]>) {
        let mut v = vec![mode];
        v.extend_from_slice(bytes.as_ref());
        self.add(v);
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let root = repo.join("fuzz/seeds");
    let vectors = repo.join("crates/hopauth-core/tests/vectors/wycheproof");
    let jws_vectors: Value =
        serde_json::from_slice(&std::fs::read(vectors.join("json_web_signature_test.json")).unwrap()).unwrap();
    let jwk_vectors: Value =
        serde_json::from_slice(&std::fs::read(vectors.join("json_web_key_test.json")).unwrap()).unwrap();
    let (ed, hs) = signing_keys();
    let es = SigningKey::generate(Alg::ES256, "es").unwrap();
    let rs = SigningKey::generate(Alg::RS256, "rs").unwrap();

    let claims = |sub: &str| {
        json!({"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": SEED_EXP, "iat": 1_700_000_000,
               "jti": format!("jti-{sub}"), "scope": "read write"})
    };
    let tokens: Vec<String> = vec![
        ed.sign_jwt(&claims("alice")).unwrap(),
        hs.sign_jwt(&claims("bob")).unwrap(),
        es.sign_jwt(&claims("carol")).unwrap(),
        rs.sign_jwt(&claims("dave")).unwrap(),
        ed.sign_jwt(&json!({"iss": ISSUER, "sub": "x", "aud": [AUDIENCE, "other"], "exp": SEED_EXP,
                             "scp": ["read"], "nested": {"a": [1, 2.5, null, true]}}))
            .unwrap(),
        ed.sign_jwt(&json!({"iss": ISSUER, "sub": REVOKED_SUB, "aud": AUDIENCE, "exp": SEED_EXP})).unwrap(),
        hs.sign_jwt(&json!({"iss": ISSUER, "sub": "e", "aud": AUDIENCE, "exp": SEED_EXP, "jti": REVOKED_JTI})).unwrap(),
        ed.sign_jwt(&json!({"iss": ISSUER, "sub": "old", "aud": AUDIENCE, "exp": 1_000_000_000})).unwrap(),
    ];
    let wycheproof_jws: Vec<String> = jws_vectors["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap())
        .filter_map(|t| t["jws"].as_str().map(str::to_owned))
        .collect();

    // jws: raw tokens (mode 0) and header/claims/signature triples (mode 1).
    let mut s = Seeds::new(&root, "jws");
    for t in tokens.iter().chain(&wycheproof_jws) {
        s.add_mode(0, t);
    }
    for (h, p) in [
        (
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"i","sub":"s","aud":"a","exp":2000000000,"scope":"a b","scp":["c"]}"#,
        ),
        (r#"{"alg":"HS256","alg":"RS256"}"#, r#"{"exp":1}"#),
        (r#"{"alg":"ES256","crit":["x"],"x":1}"#, r#"{"exp":1}"#),
        (r#"{"alg":"ES256","cty":"JWT"}"#, r#"{"exp":1}"#),
        (r#"{"alg":"none"}"#, r#"{"exp":1}"#),
        (r#"{"alg":"RS256","jku":"http://evil"}"#, r#"{"exp":1}"#),
        (r#"{"alg":"EdDSA","typ":"JWT"}"#, r#"{"exp":2000000000.5,"nbf":0,"iat":1e9,"aud":["a","b"]}"#),
        (r#"{"alg":"ES256"}"#, r#"{"sub":"u","sub":"admin","exp":1}"#),
        (r#"{"alg":"ES256"}"#, r#"{"exp":1,"x":{"a":1,"a":2}}"#),
        (r#"{"alg":"ES256"}"#, r#"{"exp":"9999999999","aud":123,"scope":["a"]}"#),
        (r#"{"alg":"ES256"}"#, r#"{"exp":1e400}"#),
    ] {
        s.add_mode(1, [h.as_bytes(), b"\0", p.as_bytes(), b"\0", b"sig"].concat());
    }

    // token: pick byte (all sources), then path line and header lines.
    let mut s = Seeds::new(&root, "token");
    for req in [
        "/\nauthorization:Bearer a.b.c".to_string(),
        "/\nAuthorization:bEaReR a.b.c\nauthorization:Bearer d.e.f".into(),
        "/\nauthorization:Bearer a.b.c, Bearer d.e.f".into(),
        "/\ncookie:x=1; access_token=a.b.c\ncookie:session=z".into(),
        "/p?x=1&access_token=a.b.c&t=q#frag\nx-token:raw".into(),
        "/?access_token=a&access_token=a".into(),
        "/\nauthorization:Bearer \nauthorization:Basic dXNlcjpwYXNz".into(),
        "/\nauthorization:Bearer \u{ff}\u{fe}".into(),
        format!("/\nauthorization:Bearer {}\ncookie:access_token={}", tokens[0], tokens[0]),
    ] {
        s.add_mode(0xff, req);
    }

    // check_view: CheckRequests as Envoy sends them, both header encodings.
    let mut s = Seeds::new(&root, "check_view");
    let auth = format!("Bearer {}", tokens[0]);
    for r in [
        check_request(
            &[("authorization", &auth), ("cookie", "c=1")],
            &[],
            "/p?q=1",
            &[("hopauth.require_scopes", "read")],
        ),
        check_request(&[], &[("Authorization", auth.as_bytes()), ("x-raw", b"\xffbytes")], "/", &[]),
        check_request(&[("x", "y")], &[], "/", &[("hopauth.anonymous", "allow"), ("hopauth.providers", "a,b")]),
        CheckRequest { attributes: Some(AttributeContext::default()) },
        CheckRequest::default(),
    ] {
        s.add(r.encode_to_vec());
    }
    let one = check_request(&[("authorization", "Bearer a")], &[], "/", &[]).encode_to_vec();
    s.add([one.clone(), one].concat());

    // jwks: allowed-algorithm bits (all), then a document.
    let mut s = Seeds::new(&root, "jwks");
    let all = [0xff, 0x0f];
    // The public half of a vector's key (an `oct` key keeps `k`: it must be refused).
    let public = |mut jwk: Value| {
        if let Some(o) = jwk.as_object_mut() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                o.remove(private);
            }
        }
        jwk
    };
    s.add(
        [&all[..], json!({"keys": [ed.public_jwk(), es.public_jwk(), rs.public_jwk()]}).to_string().as_bytes()]
            .concat(),
    );
    for g in jwk_vectors["testGroups"].as_array().unwrap().iter().chain(jws_vectors["testGroups"].as_array().unwrap()) {
        for which in ["public", "private"] {
            let Some(k) = g.get(which) else { continue };
            let doc = if k.get("keys").is_some() {
                json!({"keys": k["keys"].as_array().unwrap().iter().cloned().map(public).collect::<Vec<_>>()})
            } else {
                json!({"keys": [public(k.clone())]})
            };
            s.add([&all[..], doc.to_string().as_bytes()].concat());
        }
    }
    for hostile in [
        r#"{"keys":[{"kty":"RSA","n":"","e":"AQAB"}]}"#,
        r#"{"keys":[{"kty":"RSA","n":"AA","e":"AQAB"}]}"#,
        r#"{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}"#,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#,
        r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#,
        r#"{"keys":[{"kty":"RSA","kid":"a","use":"enc","n":"AQAB","e":"AQAB"},{"kid":"a"}]}"#,
        r#"{"keys":[]}"#,
        r#"{"keys":"x"}"#,
    ] {
        s.add([&all[..], hostile.as_bytes()].concat());
    }

    // config: the YAML examples in the docs, the tests' config and the fixture's.
    let mut s = Seeds::new(&root, "config");
    for doc in ["README.md", "docs/configuration.md", "docs/deploy.md", "docs/issuer.md", "docs/revocation.md"] {
        let Ok(text) = std::fs::read_to_string(repo.join(doc)) else { continue };
        for block in yaml_blocks(&text) {
            if block.contains("providers:") {
                s.add(block);
            }
        }
    }
    s.add(fixture_config(Path::new("/dev/null")));
    s.add(
        "providers:\n  - name: a\n    issuer: https://a\n    audiences: [x]\n    algorithms: [ES256]\n    jwks:\n      \
         discovery: true\nrevocation:\n  backend: redis\n  redis_url: redis+sentinel://:pw@h1:26379,h2:26379/m/2\n",
    );
    s.add("providers: []\nsources: []\nmax_token_bytes: 1\nmax_queue_delay: 0s\n");

    // redis_target: every URL form.
    let mut s = Seeds::new(&root, "redis_target");
    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://user:s3cretpw@h:6380",
        "redis://:pw@[::1]:6379/3?protocol=resp3",
        "redis+sentinel://:s3cretpw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2",
        "rediss+sentinel://h:1/m",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        "rediss+cluster://u:p4ssw0rd@h:7000",
        "redis+unix:///tmp/redis.sock",
        "http://h",
    ] {
        s.add(url);
    }

    // cluster_nodes: the reply shapes Redis writes.
    let mut s = Seeds::new(&root, "cluster_nodes");
    s.add(
        "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
         b 127.0.0.1:7001@17001 master,fail - 0 0 2 connected 5461-10922\n\
         c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383 [5000->-x]\n\
         d 127.0.0.1:7003@17003 slave a 0 0 1 connected\n",
    );
    s.add("a :7000@17000 master - 0 0 1 connected 0-16383\nb h:1 master,noaddr - 0 0 1 connected 7\n");
    s.add("a h.example:7000@17000,h.example master - 0 0 1 connected 0 1 2 100-200 [3-<-b]\n");

    // check: CheckRequests carrying the fixture's tokens (mode 0), and header/claims
    // pairs the target signs with the fixture's HS256 key (mode 1).
    let mut s = Seeds::new(&root, "check");
    for t in &tokens {
        let bearer = format!("Bearer {t}");
        s.add_mode(0, check_request(&[("authorization", &bearer)], &[], "/x", &[]).encode_to_vec());
    }
    let bearer = format!("Bearer {}", tokens[0]);
    for (headers, raw, path, ext) in [
        (vec![], vec![("Authorization", bearer.as_bytes())], "/raw", vec![]),
        (
            vec![("cookie", format!("access_token={}", tokens[1]))],
            vec![],
            "/c",
            vec![("hopauth.require_scopes", "read")],
        ),
        (vec![], vec![], "/anon", vec![("hopauth.anonymous", "allow")]),
        (vec![("x-jwt-sub", "forged".to_string())], vec![], "/anon", vec![("hopauth.anonymous", "allow")]),
        (vec![("authorization", bearer.clone())], vec![], "/p", vec![("hopauth.providers", "other")]),
        (vec![("authorization", bearer.clone())], vec![], "/s", vec![("hopauth.require_scopes", "admin")]),
        (vec![], vec![], &*format!("/q?access_token={}", tokens[1]), vec![]),
        (vec![("authorization", "Bearer a.b.c".into())], vec![], "/", vec![]),
    ] {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        s.add_mode(0, check_request(&hs, &raw, path, &ext).encode_to_vec());
    }
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    for (flags, claims) in [
        (0u8, claims("m1")),
        (1, claims("m2")),
        (2, json!({"iss": ISSUER, "aud": [AUDIENCE], "exp": SEED_EXP, "sub": "m3", "scp": ["read"]})),
        (3 | 16, json!({"iss": ISSUER, "aud": AUDIENCE, "exp": SEED_EXP, "scope": "read"})),
        (4 | 8, claims("m4")),
        (32 | 64, json!({"iss": ISSUER, "aud": AUDIENCE, "exp": SEED_EXP, "nbf": SEED_EXP})),
        (0, json!({"iss": ISSUER, "aud": AUDIENCE, "exp": SEED_EXP, "deep": {"a": {"b": {"c": [[[1]]]}}}})),
        (0, json!({"iss": ISSUER, "aud": AUDIENCE, "exp": SEED_EXP, "jti": REVOKED_JTI})),
    ] {
        let body = [&[flags][..], header.as_bytes(), b"\0", claims.to_string().as_bytes(), b"\0", b"/signed"].concat();
        s.add_mode(1, body);
    }

    let total: u64 = walk(&root).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    println!("seeds written under {}: {} files, {} bytes", root.display(), walk(&root).len(), total);
}

/// The bodies of the ```yaml blocks in a Markdown text.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
