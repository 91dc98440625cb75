//! The issuer's signing keys: PKCS#8 DER files in `keys.dir` and a small `state.json`
//! naming each key's status. `next` is published but not used, `active` signs, `retiring`
//! is published until every token it signed has expired. Rotation (`rotate`) promotes
//! next → active → retiring and makes a new next, so every key is in the JWKS before its
//! first token and after its last one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use hopauth_core::alg::Alg;
use hopauth_core::keys::VerifyKey;
use hopauth_core::sign::{SignError, SigningKey};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a key state file: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("key {kid}: {source}")]
    Key {
        kid: String,
        #[source]
        source: SignError,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Next,
    Active,
    Retiring,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Next => "next",
            KeyStatus::Active => "active",
            KeyStatus::Retiring => "retiring",
        }
    }
}

/// One key in `state.json`; its private key is `<kid>.pk8` next to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: String,
    pub alg: Alg,
    pub status: KeyStatus,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    pub keys: Vec<KeyEntry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pk8"))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never half.
fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), KeyError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let mut f = options.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn new_kid() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    super::users::hex(&b)
}

/// Generates a key, writes its file, and returns its state entry.
fn generate(dir: &Path, alg: Alg, status: KeyStatus, now: i64) -> Result<KeyEntry, KeyError> {
    let kid = new_kid();
    let key = SigningKey::generate(alg, &kid).map_err(|source| KeyError::Key { kid: kid.clone(), source })?;
    write_atomic(&key_path(dir, &kid), key.pkcs8_der(), true)?;
    let activated_at = (status == KeyStatus::Active).then_some(now);
    Ok(KeyEntry { kid, alg, status, created_at: now, activated_at, retired_at: None })
}

pub fn read_state(dir: &Path) -> Result<Option<KeyState>, KeyError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| KeyError::State { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::Io { path, source: e }),
    }
}

fn write_state(dir: &Path, state: &KeyState) -> Result<(), KeyError> {
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomic(&dir.join(STATE_FILE), &bytes, false)
}

/// The state in `dir`, creating the directory, an active and a next key at first start.
pub fn init(dir: &Path, alg: Alg, now: i64) -> Result<KeyState, KeyError> {
    if let Some(state) = read_state(dir)? {
        return Ok(state);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let state =
        KeyState { keys: vec![generate(dir, alg, KeyStatus::Active, now)?, generate(dir, alg, KeyStatus::Next, now)?] };
    write_state(dir, &state)?;
    tracing::info!(dir = %dir.display(), %alg, "generated the first signing keys");
    Ok(state)
}

/// What one rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub active: String,
    pub next: String,
    pub retiring: Vec<String>,
    pub removed: Vec<String>,
}

/// Promotes next → active and active → retiring, makes a new next, and removes retiring
/// keys older than `retention` (their tokens have all expired). The new key file is
/// written before the state that names it, and the state is replaced atomically, so a
/// running issuer reading it at any moment sees a complete set.
pub fn rotate(dir: &Path, alg: Alg, retention: Duration, now: i64) -> Result<Rotation, KeyError> {
    let mut state = init(dir, alg, now)?;
    let mut removed = Vec::new();
    state.keys.retain(|k| {
        let expired = k.status == KeyStatus::Retiring && k.retired_at.unwrap_or(0) + retention.as_secs() as i64 <= now;
        if expired {
            removed.push(k.kid.clone());
        }
        !expired
    });
    let had_next = state.keys.iter().any(|k| k.status == KeyStatus::Next);
    for k in &mut state.keys {
        match k.status {
            KeyStatus::Active if had_next => {
                k.status = KeyStatus::Retiring;
                k.retired_at = Some(now);
            }
            KeyStatus::Next => {
                k.status = KeyStatus::Active;
                k.activated_at = Some(now);
            }
            _ => {}
        }
    }
    let next = generate(dir, alg, KeyStatus::Next, now)?;
    state.keys.push(next);
    write_state(dir, &state)?;
    for kid in &removed {
        let _ = std::fs::remove_file(key_path(dir, kid));
    }
    let of = |s: KeyStatus| state.keys.iter().filter(|k| k.status == s).map(|k| k.kid.clone()).collect::<Vec<_>>();
    let rotation = Rotation {
        active: of(KeyStatus::Active).pop().unwrap_or_default(),
        next: of(KeyStatus::Next).pop().unwrap_or_default(),
        retiring: of(KeyStatus::Retiring),
        removed,
    };
    tracing::info!(active = %rotation.active, next = %rotation.next, removed = rotation.removed.len(), "keys rotated");
    Ok(rotation)
}

/// The keys loaded from one state: the signer, the published JWKS, and verification keys
/// for the issuer's own tokens (revoke, logout).
pub struct KeySet {
    pub active: Arc<SigningKey>,
    pub jwks: Value,
    pub verify: Vec<VerifyKey>,
    pub entries: Vec<KeyEntry>,
    /// When the next retiring key falls out of the JWKS (unix seconds).
    drops_at: Option<i64>,
}

impl KeySet {
    pub fn load(dir: &Path, state: &KeyState, retention: Duration, now: i64) -> Result<Self, KeyError> {
        let state_path = dir.join(STATE_FILE);
        let invalid = |what: String| KeyError::Invalid { path: state_path.clone(), what };
        let retention = retention.as_secs() as i64;
        let mut active = None;
        let mut published = Vec::new();
        let mut verify = Vec::new();
        let mut entries = Vec::new();
        let mut drops_at: Option<i64> = None;
        for entry in &state.keys {
            if entry.status == KeyStatus::Retiring {
                let until = entry.retired_at.unwrap_or(0) + retention;
                if until <= now {
                    continue;
                }
                drops_at = Some(drops_at.map_or(until, |d| d.min(until)));
            }
            let path = key_path(dir, &entry.kid);
            let der = std::fs::read(&path).map_err(io(&path))?;
            let key = SigningKey::from_pkcs8(entry.alg, &entry.kid, &der)
                .map_err(|source| KeyError::Key { kid: entry.kid.clone(), source })?;
            let jwk = key.public_jwk();
            let parsed: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(jwk.clone()).map_err(|e| invalid(format!("key {}: {e}", entry.kid)))?;
            verify.extend(
                hopauth_core::keys::keys_from_jwk(&parsed, &[entry.alg])
                    .map_err(|r| invalid(format!("key {}: {}", entry.kid, r.as_str())))?,
            );
            published.push(jwk);
            entries.push(entry.clone());
            if entry.status == KeyStatus::Active {
                if active.is_some() {
                    return Err(invalid("more than one active key".into()));
                }
                active = Some(Arc::new(key));
            }
        }
        let active = active.ok_or_else(|| invalid("no active key".into()))?;
        Ok(KeySet { active, jwks: json!({ "keys": published }), verify, entries, drops_at })
    }

    pub fn count(&self, status: KeyStatus) -> usize {
        self.entries.iter().filter(|e| e.status == status).count()
    }
}

/// The current `KeySet`, swapped whole when the state on disk changes.
pub struct KeyStore {
    dir: PathBuf,
    retention: Duration,
    current: ArcSwap<KeySet>,
    last_state: Mutex<KeyState>,
}

impl KeyStore {
    /// Loads the keys in `dir`, generating them at first start.
    pub fn open(dir: &Path, alg: Alg, retention: Duration, now: i64) -> Result<Self, KeyError> {
        let state = init(dir, alg, now)?;
        let set = KeySet::load(dir, &state, retention, now)?;
        Ok(KeyStore {
            dir: dir.to_owned(),
            retention,
            current: ArcSwap::from_pointee(set),
            last_state: Mutex::new(state),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Re-reads the state; `Ok(true)` when the key set changed (a rotation, or a retiring
    /// key whose time is up). On error the current keys stay in use.
    pub fn reload(&self, now: i64) -> Result<bool, KeyError> {
        let Some(state) = read_state(&self.dir)? else {
            return Err(KeyError::Invalid { path: self.dir.join(STATE_FILE), what: "missing".into() });
        };
        let changed = *self.last_state.lock().unwrap_or_else(|e| e.into_inner()) != state;
        let expired = self.current.load().drops_at.is_some_and(|t| t <= now);
        if !changed && !expired {
            return Ok(false);
        }
        let set = KeySet::load(&self.dir, &state, self.retention, now)?;
        tracing::info!(active = %set.active.kid, published = set.entries.len(), "signing keys reloaded");
        self.current.store(Arc::new(set));
        *self.last_state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETAIN: Duration = Duration::from_secs(100);

    fn kids(set: &KeySet) -> Vec<String> {
        set.jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn first_start_publishes_active_and_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), Alg::ES256, RETAIN, 1000).unwrap();
        let set = store.current();
        assert_eq!((set.count(KeyStatus::Active), set.count(KeyStatus::Next)), (1, 1));
        assert_eq!(kids(&set).len(), 2);
        // Opening again loads the same keys rather than making new ones.
        let again = KeyStore::open(dir.path(), Alg::ES256, RETAIN, 1001).unwrap();
        assert_eq!(again.current().active.kid, set.active.kid);
    }

    #[test]
    fn rotation_publishes_before_signing_and_keeps_the_old_key_for_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), Alg::EdDSA, RETAIN, 1000).unwrap();
        let before = store.current();
        let next = before.entries.iter().find(|e| e.status == KeyStatus::Next).unwrap().kid.clone();

        let r = rotate(dir.path(), Alg::EdDSA, RETAIN, 1010).unwrap();
        assert_eq!(r.active, next, "the published next key is the one that starts signing");
        assert_eq!(r.retiring, vec![before.active.kid.clone()]);
        assert!(store.reload(1010).unwrap(), "the rotation is picked up");
        let after = store.current();
        assert_eq!(after.active.kid, next);
        let published = kids(&after);
        assert!(published.contains(&before.active.kid) && published.contains(&r.next), "{published:?}");
        assert!(!store.reload(1011).unwrap(), "nothing changed");

        // The retiring key drops out of the JWKS once its tokens have expired...
        assert!(store.reload(1010 + 100).unwrap());
        assert!(!kids(&store.current()).contains(&before.active.kid));
        // ...and the next rotation deletes its file.
        let r2 = rotate(dir.path(), Alg::EdDSA, RETAIN, 1200).unwrap();
        assert_eq!(r2.removed, vec![before.active.kid.clone()]);
        assert!(!key_path(dir.path(), &before.active.kid).exists());
        assert_eq!(r2.retiring, vec![next]);
    }

    #[test]
    fn tokens_signed_by_the_active_key_verify_against_the_published_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), Alg::ES256, RETAIN, 1000).unwrap();
        let set = store.current();
        let token = set.active.sign_jwt(&json!({"sub": "a"})).unwrap();
        let parsed = hopauth_core::jws::parse(&token).unwrap();
        assert!(set.verify.iter().any(|k| k.kid.as_deref() == parsed.header.kid.as_deref()
            && k.verify(parsed.signing_input.as_bytes(), &parsed.signature)));
    }

    #[test]
    fn a_broken_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = KeyStore::open(dir.path(), Alg::ES256, RETAIN, 1).err().unwrap().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
