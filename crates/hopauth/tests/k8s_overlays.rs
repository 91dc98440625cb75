//! The overlays that run the whole system: the quick start's hopauth and issuer configs
//! (k8s/overlays/quickstart) load with the real loaders and agree with each other, the
//! Sentinel overlay's hopauth config takes its Redis password from the environment and
//! names all three sentinels, and every Dockerfile builds targets that exist: each
//! `-p`, `--bin` and `--example` names a package or target of `cargo metadata`, and each
//! `COPY --from=build` copies the file that build produces; every hopauth container's
//! command line is one the `hopauth` binary accepts. (The images themselves are
//! built by `docker build`, not here; the rendered manifests are checked by
//! `make k8s-validate`.)

use hopauth_testkit as support;

use std::collections::BTreeSet;
use std::process::Command;

use hopauth::config::{Config, RevocationBackend};
use hopauth::revocation::redis::RedisTarget;
use hopauth_issuer::config::IssuerConfig;
use serde_json::Value;
use support::repo_root;

fn load(path: &str) -> Config {
    let file = repo_root().join(path);
    let text = std::fs::read_to_string(&file).unwrap();
    Config::from_yaml(&text, &file).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_without(path: &str, keys: &[&str]) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    for key in keys {
        value.as_mapping_mut().unwrap().remove(*key);
    }
    value
}

#[test]
fn quickstart_hopauth_trusts_the_quickstart_issuer() {
    let hopauth = load("k8s/overlays/quickstart/hopauth.yaml");
    let issuer_path = repo_root().join("k8s/overlays/quickstart/issuer/issuer.yaml");
    let issuer = IssuerConfig::load(&issuer_path).unwrap_or_else(|e| panic!("{}: {e}", issuer_path.display()));
    let [provider] = &hopauth.providers[..] else { panic!("one provider: {:?}", hopauth.providers) };
    assert_eq!(provider.issuer, issuer.issuer, "hopauth must expect the issuer's `iss` byte for byte");
    assert!(
        issuer.audiences.iter().any(|a| provider.audiences.contains(a)),
        "the issuer's audiences {:?} must include one hopauth accepts {:?}",
        issuer.audiences,
        provider.audiences
    );
    let jwks = format!("{provider:?}");
    assert!(jwks.contains(&format!("{}/.well-known/jwks.json", issuer.issuer)), "JWKS from the issuer: {jwks}");
    assert_eq!(issuer.listen.port(), 9100, "the issuer Service targets 9100");
    assert_eq!(issuer.admin_listen.port(), 9101, "the issuer's probes use 9101");
    assert!(issuer.listen.ip().is_unspecified() && issuer.admin_listen.ip().is_unspecified(), "reachable in the pod");
    // The issuer writes revocations where hopauth reads them.
    assert_eq!(hopauth.revocation.backend, RevocationBackend::Redis);
    let store = format!("{:?}", issuer.store);
    let redis = hopauth.revocation.redis_url.as_deref().unwrap();
    assert!(store.contains(redis), "issuer store {store} vs hopauth {redis}");
    assert_eq!(
        yaml_without("k8s/overlays/quickstart/hopauth.yaml", &["providers", "revocation"]),
        yaml_without("k8s/base/hopauth.yaml", &["providers", "revocation"]),
        "the quick start's hopauth.yaml drifted from k8s/base/hopauth.yaml outside `providers` and `revocation`"
    );
}

#[test]
fn sentinel_overlay_reads_the_password_from_the_environment_and_asks_three_sentinels() {
    let path = "k8s/overlays/redis-sentinel/hopauth.yaml";
    // The Deployment sets REDIS_PASSWORD from Secret "redis-auth"; without it the config is
    // refused naming the variable.
    std::env::remove_var("REDIS_PASSWORD");
    let file = repo_root().join(path);
    let text = std::fs::read_to_string(&file).unwrap();
    let err = Config::from_yaml(&text, &file).unwrap_err().to_string();
    assert!(err.contains("revocation.redis_url") && err.contains("REDIS_PASSWORD"), "{err}");
    std::env::set_var("REDIS_PASSWORD", "0123456789abcdef0123456789abcdef0123456789abcdef");
    let config = load(path);
    let written = config.revocation.redis_url.as_deref().unwrap();
    assert!(written.contains("${REDIS_PASSWORD}"), "the ConfigMap holds no password: {written}");
    let url = config.revocation.resolved_redis_url().unwrap().unwrap();
    assert!(url.starts_with("redis+sentinel://:0123456789abcdef"), "{url}");
    let target = RedisTarget::parse(&url).unwrap();
    assert_eq!(format!("{target:?}"), "Sentinel(mymaster via 3 sentinels)");
    for i in 0..3 {
        assert!(url.contains(&format!("sentinel-{i}.sentinel-headless.")), "{url}");
    }
    assert_eq!(yaml_without(path, &["revocation"]), yaml_without("k8s/base/hopauth.yaml", &["revocation"]));
}

/// Packages, and their bin and example targets, of the workspace (or the one package).
fn cargo_targets() -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut packages, mut targets) = (BTreeSet::new(), BTreeSet::new());
    for package in meta["packages"].as_array().unwrap() {
        packages.insert(package["name"].as_str().unwrap().to_string());
        for target in package["targets"].as_array().unwrap() {
            for kind in target["kind"].as_array().unwrap() {
                targets.insert((kind.as_str().unwrap().to_string(), target["name"].as_str().unwrap().to_string()));
            }
        }
    }
    (packages, targets)
}

/// The value after `flag` in a shell line (`--bin hopauth` -> `hopauth`).
fn flag_values<'a>(text: &'a str, flag: &str) -> Vec<&'a str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == flag).map(|w| w[1]).collect()
}

#[test]
fn every_dockerfile_builds_targets_that_exist() {
    let (packages, targets) = cargo_targets();
    let root = repo_root();
    let mut files = vec![root.join("Dockerfile")];
    files.extend(
        std::fs::read_dir(root.join("docker"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile")),
    );
    assert!(files.len() >= 2, "{files:?}");
    let mut images = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.display();
        // Build from the repository root with the whole workspace as context.
        assert!(text.contains("\nCOPY . .\n"), "{name}: copies the whole workspace");
        let build: Vec<&str> = text.lines().filter(|l| l.contains("cargo build")).collect();
        assert_eq!(build.len(), 1, "{name}: one cargo build");
        let build = build[0];
        assert!(build.contains("--release") && build.contains("--locked"), "{name}: {build}");
        for p in flag_values(build, "-p") {
            assert!(packages.contains(p), "{name}: -p {p} is not a package of the workspace ({packages:?})");
        }
        let bins = flag_values(build, "--bin");
        let examples = flag_values(build, "--example");
        assert_eq!(bins.len() + examples.len(), 1, "{name}: one binary per image: {build}");
        let (kind, target, artifact) = match (bins.first(), examples.first()) {
            (Some(b), _) => ("bin", *b, format!("/src/target/release/{b}")),
            (_, Some(e)) => ("example", *e, format!("/src/target/release/examples/{e}")),
            _ => unreachable!(),
        };
        assert!(targets.contains(&(kind.to_string(), target.to_string())), "{name}: no {kind} target {target:?}");
        let copy = text.lines().find(|l| l.starts_with("COPY --from=build")).unwrap_or_else(|| panic!("{name}"));
        assert!(copy.contains(&format!(" {artifact} ")), "{name}: copies {artifact}: {copy}");
        // Runtime: distroless, non-root.
        assert!(text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"), "{name}");
        assert!(text.contains("\nUSER nonroot:nonroot\n"), "{name}");
        for tag in flag_values(&text, "-t") {
            images.insert(tag.to_string());
        }
    }
    // Every image of ours the quick start runs is one a Dockerfile's documented build makes.
    let mut ours = BTreeSet::new();
    for path in ["k8s/base/deployment.yaml", "k8s/overlays/quickstart/issuer.yaml"] {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        for image in flag_values(&text, "image:") {
            if image.starts_with("ghcr.io/hopauth/") {
                ours.insert(image.to_string());
            }
        }
    }
    let kustomization = std::fs::read_to_string(root.join("k8s/overlays/quickstart/kustomization.yaml")).unwrap();
    let app = flag_values(&kustomization, "newName:");
    let tag = flag_values(&kustomization, "newTag:");
    assert_eq!((app.len(), tag.len()), (1, 1), "the quick start renames the app image once");
    ours.insert(format!("{}:{}", app[0], tag[0]));
    assert!(!ours.is_empty());
    for image in &ours {
        assert!(images.contains(image), "{image} is run by k8s/ but no Dockerfile documents building it ({images:?})");
    }
}

/// The hopauth containers of a manifest file (every document): their `args`.
fn hopauth_args(path: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        let spec = &doc["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                if c["image"].as_str().is_some_and(|i| i.starts_with("ghcr.io/hopauth/hopauth:")) {
                    let args = c["args"].as_array().unwrap_or_else(|| panic!("{path}: {c}"));
                    out.push(args.iter().map(|a| a.as_str().unwrap().to_string()).collect());
                }
            }
        }
    }
    out
}

#[test]
fn every_hopauth_container_runs_a_command_line_hopauth_accepts() {
    let bin = env!("CARGO_BIN_EXE_hopauth");
    let mut seen = Vec::new();
    for path in ["k8s/base/deployment.yaml", "k8s/overlays/quickstart/issuer.yaml"] {
        for args in hopauth_args(path) {
            // `--help` after the real arguments: clap rejects an unknown subcommand or flag
            // before it gets there.
            let out = Command::new(bin).args(&args).arg("--help").output().unwrap();
            assert!(out.status.success(), "{path}: hopauth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            seen.push(args[..2].join(" "));
        }
    }
    assert_eq!(seen, ["serve --config", "issuer serve"], "the sidecar and the issuer");
    // The issuer config the quick start mounts passes the issuer's own check.
    let out = Command::new(bin)
        .args(["issuer", "check-config", "--config"])
        .arg(repo_root().join("k8s/overlays/quickstart/issuer/issuer.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
