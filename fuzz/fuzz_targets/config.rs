//! `Config::from_yaml` on arbitrary text.
//!
//! Properties: never a panic; every error names the file, and every validation problem
//! names a dotted key rooted at a real top-level key; a config that validates serializes
//! to YAML that parses and validates again to the same YAML (what `hopauth config` prints
//! is a config hopauth accepts).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use hopauth::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

/// The top-level keys of the config file, as the schema itself lists them: serde's
/// "unknown field `x`, expected one of `a`, `b`, ..." for a key no config has (a copy of
/// the list here went stale when keys were added).
fn roots() -> &'static [String] {
    static ROOTS: OnceLock<Vec<String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let probe = "fuzz_probe_no_such_key: 1\n";
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(probe, Path::new(FILE)) else {
            panic!("an unknown top-level key must be refused");
        };
        let message = &problems[0].message;
        let listed = message.split_once("expected one of ").map(|(_, l)| l).unwrap_or_default();
        let roots: Vec<String> = listed.split(", ").map(|k| k.trim_matches('`').to_string()).collect();
        assert!(
            roots.iter().any(|k| k == "providers") && roots.iter().any(|k| k == "grpc_listen"),
            "cannot read the top-level keys from {message:?}"
        );
        roots
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_yaml(text, Path::new(FILE)) {
        Ok(config) => {
            let yaml = serde_yaml_ng::to_string(&config).expect("a valid config serializes");
            let again = Config::from_yaml(&yaml, Path::new(FILE))
                .unwrap_or_else(|e| panic!("serialized config does not load: {e}\n{yaml}"));
            assert_eq!(serde_yaml_ng::to_string(&again).unwrap(), yaml, "serialization is not stable");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(FILE), "error does not name the file: {message}");
            if let ConfigError::Invalid { problems, .. } = &e {
                assert!(!problems.is_empty(), "invalid with no problem");
                for p in problems {
                    let root = p.key.split(['.', '[']).next().unwrap_or_default();
                    // A key the schema lacks is reported under the name the file gave it; a
                    // document that is not a mapping, or a mapping key that is not a string,
                    // under a path that is no identifier ("(top level)", ".?"). Only a key
                    // named like a config key must be one.
                    let unknown = p.message.contains("unknown field");
                    let named = !root.is_empty() && root.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    assert!(
                        unknown || !named || roots().iter().any(|r| r == root),
                        "problem key {:?} is not a config key: {}",
                        p.key,
                        p.message
                    );
                    assert!(!p.message.is_empty(), "problem {:?} without a message", p.key);
                }
            }
        }
    }
});
