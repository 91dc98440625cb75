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

/// Every subcommand, as its argv prefix.
const SUBCOMMANDS: &[&[&str]] = &[
    &[],
    &["serve"],
    &["check-config"],
    &["revoke"],
    &["issuer"],
    &["issuer", "serve"],
    &["issuer", "check-config"],
    &["issuer", "hash-password"],
    &["issuer", "rotate-keys"],
];

#[test]
fn every_flag_of_every_subcommand_has_help() {
    for cmd in SUBCOMMANDS {
        let out = hopauth().args(*cmd).arg("-h").output().unwrap();
        assert!(out.status.success(), "{cmd:?} -h failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let options = text.split_once("Options:").map(|(_, o)| o).unwrap_or_else(|| panic!("{cmd:?}: {text}"));
        let mut flags = 0;
        let lines: Vec<&str> = options.lines().map(str::trim_start).collect();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.starts_with('-')) {
            flags += 1;
            // `-c, --config <CONFIG>  Help [env: …]`: help is what follows the flag and a gap
            // (or, when clap puts it there, the next line), once clap's annotations are dropped.
            let next = lines.get(i + 1).filter(|l| !l.starts_with('-')).copied().unwrap_or("");
            let help = line.split_once("  ").map(|(_, h)| h.trim()).unwrap_or(next);
            let help = help.split(" [").next().unwrap_or("").trim_start_matches('[');
            assert!(!help.is_empty() && !help.starts_with("env:"), "hopauth {cmd:?}: undocumented flag: {line:?}");
        }
        assert!(flags >= 1, "{cmd:?}: no flags parsed from {text}");
    }
}

/// The shipped example configs pass their own check-config.
#[test]
fn example_configs_are_valid() {
    let root = hopauth_testkit::repo_root().join("examples/config");
    let out = hopauth().arg("check-config").arg("--config").arg(root.join("hopauth.yaml")).output().unwrap();
    assert!(out.status.success(), "hopauth.yaml: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hopauth.yaml: valid"));
    let out = hopauth().args(["issuer", "check-config", "--config"]).arg(root.join("issuer.yaml")).output().unwrap();
    assert!(out.status.success(), "issuer.yaml: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 users in"), "users.yaml is read too");
}

#[test]
fn issuer_check_config_names_a_bad_users_file() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "users.yaml", "users:\n  - username: alice\n    password_hash: plain\n");
    let issuer = write(
        &dir,
        "issuer.yaml",
        "issuer: http://127.0.0.1:9100\naudiences: [orders]\nusers_file: users.yaml\nkeys: { dir: keys }\n\
         store: { backend: redis, redis_url: \"redis://127.0.0.1:6379/0\" }\n",
    );
    let out = hopauth().args(["issuer", "check-config", "--config"]).arg(&issuer).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("users.yaml"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `hopauth revoke` pointed at an HTTP port says so in one line.
#[test]
fn revoke_against_something_that_is_not_redis_says_so() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let out = hopauth()
        .args(["revoke", "--redis-url", &format!("redis://127.0.0.1:{port}"), "--jti", "a", "--exp", "99999999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("not as Redis"), "{err}");
}
