//! The issuer's command line and config errors: password hashing, key names, weak hashes.

use super::*;

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "hash-password", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    let yaml = format!("users:\n  - {{ username: u, password_hash: \"{phc}\" }}\n");
    let db = hopauth_issuer::users::UserDb::from_yaml(&yaml, std::path::Path::new("u.yaml")).unwrap();
    assert!(db.authenticate("u", "correct horse").is_some());
    assert!(db.authenticate("u", "correct horse\n").is_none());
}

#[test]
fn issuer_config_errors_name_every_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.yaml");
    std::fs::write(&path, "issuer: https://a/\naudiences: []\nusers_file: nope.yaml\nkeys: { dir: k }\nlistn: x\n")
        .unwrap();
    let run = || std::process::Command::new(env!("CARGO_BIN_EXE_hopauth")).arg("issuer").output().unwrap();
    assert_eq!(run().status.code(), Some(1), "no config, no subcommand");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer.yaml") && err.contains("listn"), "unknown key named: {err}");
    std::fs::write(&path, "issuer: https://a/\naudiences: []\nusers_file: nope.yaml\nkeys: { dir: k }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopauth"))
        .args(["issuer", "rotate-keys", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["issuer.yaml: issuer:", "issuer.yaml: audiences:", "issuer.yaml: users_file:"] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}

#[test]
fn weak_argon2_hashes_are_refused_naming_the_user_and_the_file() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let hash = |m: u32, t: u32| {
        let params = argon2::Params::new(m, t, 1, None).unwrap();
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
        argon.hash_password(b"pw", &salt).unwrap().to_string()
    };
    let yaml = format!(
        "users:\n  - {{ username: alice, password_hash: \"{}\" }}\n  - {{ username: mallory, password_hash: \"{}\" }}\n  - {{ username: oscar, password_hash: \"{}\" }}\n",
        issuer_stack::user_hash("pw"),
        hash(1024, 2),
        hash(19 * 1024, 1),
    );
    let err = hopauth_issuer::users::UserDb::from_yaml(&yaml, std::path::Path::new("users.yaml"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    for want in ["users.yaml", "users[1].password_hash", "mallory", "users[2].password_hash", "oscar"] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
    assert!(!err.contains("users[0]"), "alice's hash is strong enough: {err}");
}
