//! The `hopauth` binary: `check-config` exit codes and messages, `--help`, and `serve`
//! refusing a bad config with the key and the file named.

use std::process::Command;

fn hopauth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopauth"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"
providers:
  - name: main
    issuer: https://issuer.example
    audiences: [orders]
    algorithms: [ES256]
    jwks: { uri: "http://127.0.0.1:1/jwks.json" }
"#;

#[test]
fn check_config_prints_the_resolved_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "good.yaml", GOOD);
    let out = hopauth().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("refresh_interval: 5m"), "defaults are filled in: {text}");
    assert!(text.contains("max_token_bytes: 8192"), "{text}");
}

#[test]
fn check_config_names_every_bad_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD.replace("audiences: [orders]", "audiences: []").replace("[ES256]", "[HS256]");
    let path = write(&dir, "bad.yaml", &bad);
    let out = hopauth().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("providers[0].audiences"), "{err}");
    assert!(err.contains("providers[0].algorithms"), "{err}");

    let typo = write(&dir, "typo.yaml", &format!("{GOOD}grpc_listn: 127.0.0.1:1\n"));
    let out = hopauth().arg("check-config").env("HOPAUTH_CONFIG", &typo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("typo.yaml") && err.contains("grpc_listn"), "{err}");

    let out = hopauth().arg("serve").arg("--config").arg(dir.path().join("missing.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn help_describes_the_commands() {
    let out = hopauth().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "check-config", "--log-format", "ext_authz"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}
