//! `Config::from_yaml` on arbitrary text.
//!
//! Properties: never a panic; every error names the file, and every validation problem
//! names a dotted key rooted at a real top-level key; a config that validates serializes
//! to YAML that parses and validates again to the same YAML (what `hopauth config` prints
//! is a config hopauth accepts).
#![no_main]

use std::path::Path;

use hopauth::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";
/// The top-level keys of the config file (docs/configuration.md).
const ROOTS: [&str; 9] = [
    "grpc_listen",
    "http_listen",
    "sources",
    "providers",
    "revocation",
    "admin",
    "max_token_bytes",
    "verify_cache",
    "max_queue_delay",
];

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
                        unknown || !named || ROOTS.contains(&root),
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
