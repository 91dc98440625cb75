//! Users from a YAML file (username, argon2id PHC hash, roles, scopes) and password checks
//! whose failure paths take the same time: an unknown user is checked against a dummy hash
//! made with the parameters most of the real ones use. Hashes weaker than the OWASP
//! minimum for argon2id are refused when the file is read.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use hopauth_service::config_file::Problem;

/// Weakest argon2id memory cost accepted, in KiB (19 MiB: OWASP's minimum, and what
/// `hash-password` uses).
pub const MIN_ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Weakest argon2id time cost (iterations) accepted, with `MIN_ARGON2_MEMORY_KIB`.
pub const MIN_ARGON2_ITERATIONS: u32 = 2;
/// Weakest argon2id parallelism accepted.
pub const MIN_ARGON2_PARALLELISM: u32 = 1;

/// Errors reading the users file: the same shape as the config's, key and file named.
pub type UsersError = hopauth_service::config_file::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the password is empty")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<User>,
}

/// One user as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Becomes the token's `sub`.
    pub username: String,
    /// argon2id PHC string, from `hopauth issuer hash-password`.
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes this user may be granted; a login asks for a subset or gets them all.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Every user, and the dummy hash that unknown usernames are checked against.
pub struct UserDb {
    users: HashMap<String, User>,
    dummy_hash: String,
}

impl std::fmt::Debug for UserDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDb").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

/// A PHC string for `password` with argon2id and the crate's default (OWASP) parameters.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    hash_with(password, &Argon2::default())
}

fn hash_with(password: &str, argon: &Argon2<'_>) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| HashError::Hash(argon2::password_hash::Error::Crypto))?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Hash)?;
    Ok(argon.hash_password(password.as_bytes(), &salt).map_err(HashError::Hash)?.to_string())
}

impl UserDb {
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| UsersError::Read { file: path.to_owned(), source })?;
        Self::from_yaml(&text, path)
    }

    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, UsersError> {
        let parsed: UsersFile =
            serde_yaml_ng::from_str(text).map_err(|source| UsersError::Parse { file: file.to_owned(), source })?;
        let mut problems = Vec::new();
        let mut users = HashMap::new();
        // How many users hash with each parameter set: the dummy takes the commonest.
        let mut param_sets: Vec<(argon2::Params, usize)> = Vec::new();
        for (i, user) in parsed.users.into_iter().enumerate() {
            let key = format!("users[{i}]");
            if user.username.is_empty() || user.username.chars().any(|c| c.is_control() || c == '|') {
                problems.push(Problem {
                    key: format!("{key}.username"),
                    message: "must be non-empty, without control characters or `|`".into(),
                });
            }
            let parsed = PasswordHash::new(&user.password_hash)
                .ok()
                .filter(|h| h.algorithm == argon2::Algorithm::Argon2id.ident())
                .and_then(|h| Some((h.version, argon2::Params::try_from(&h).ok()?)));
            match parsed {
                Some((version, params)) => {
                    if let Err(why) = strong_enough(version, &params) {
                        problems.push(Problem {
                            key: format!("{key}.password_hash"),
                            message: format!(
                                "user {:?}: {why}; the minimum is argon2id v=19, m={MIN_ARGON2_MEMORY_KIB}, \
                                 t={MIN_ARGON2_ITERATIONS}, p={MIN_ARGON2_PARALLELISM}: hash the password \
                                 again with `hopauth issuer hash-password`",
                                user.username
                            ),
                        });
                    }
                    match param_sets.iter_mut().find(|(p, _)| *p == params) {
                        Some((_, n)) => *n += 1,
                        None => param_sets.push((params, 1)),
                    }
                }
                None => problems.push(Problem {
                    key: format!("{key}.password_hash"),
                    message: "not an argon2id PHC string; make one with `hopauth issuer hash-password`".into(),
                }),
            }
            for scope in &user.scopes {
                if scope.is_empty() || scope.contains(' ') || scope.chars().any(|c| c.is_control()) {
                    problems.push(Problem {
                        key: format!("{key}.scopes"),
                        message: format!("{scope:?} is not a scope token (RFC 6749 §3.3)"),
                    });
                }
            }
            let name = user.username.clone();
            if users.insert(name.clone(), user).is_some() {
                problems.push(Problem { key: format!("{key}.username"), message: format!("{name:?} is listed twice") });
            }
        }
        if !problems.is_empty() {
            return Err(UsersError::Invalid { file: file.to_owned(), problems });
        }
        // The dummy costs what a real check costs, so "no such user" cannot be timed apart:
        // with the parameters most users have (ties: the costliest), so that a username
        // probe looks like most real users.
        let params = param_sets.into_iter().max_by_key(|(p, n)| (*n, cost(p))).map(|(p, _)| p).unwrap_or_default();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut random = [0u8; 16];
        aws_lc_rs::rand::fill(&mut random).expect("system randomness");
        let dummy_hash = hash_with(&hex(&random), &argon).expect("hashing a random password");
        Ok(UserDb { users, dummy_hash })
    }

    pub fn get(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user if `password` is theirs. CPU-heavy (argon2): call it off the async threads.
    /// Unknown users cost one argon2 verification too.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<&User> {
        let (user, hash) = match self.users.get(username) {
            Some(u) => (Some(u), u.password_hash.as_str()),
            None => (None, self.dummy_hash.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        if ok {
            user
        } else {
            None
        }
    }
}

/// Work of one verification with `p`, for ordering parameter sets: memory × passes.
fn cost(p: &argon2::Params) -> u64 {
    u64::from(p.m_cost()) * u64::from(p.t_cost()) * u64::from(p.p_cost())
}

/// `Err(what is too weak)` below the `MIN_ARGON2_*` constants.
fn strong_enough(version: Option<argon2::password_hash::Decimal>, p: &argon2::Params) -> Result<(), String> {
    if version.is_some_and(|v| v != argon2::Version::V0x13 as u32) {
        return Err("argon2 version 0x10 is obsolete".into());
    }
    let mut weak = Vec::new();
    if p.m_cost() < MIN_ARGON2_MEMORY_KIB {
        weak.push(format!("m={}", p.m_cost()));
    }
    if p.t_cost() < MIN_ARGON2_ITERATIONS {
        weak.push(format!("t={}", p.t_cost()));
    }
    if p.p_cost() < MIN_ARGON2_PARALLELISM {
        weak.push(format!("p={}", p.p_cost()));
    }
    if weak.is_empty() {
        Ok(())
    } else {
        Err(format!("the hash is too weak ({})", weak.join(", ")))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weakest parameters a users file accepts (the defaults of `hash_password`).
    fn quick_hash(password: &str) -> String {
        let params = argon2::Params::new(MIN_ARGON2_MEMORY_KIB, MIN_ARGON2_ITERATIONS, 1, None).unwrap();
        hash_with(password, &Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)).unwrap()
    }

    #[test]
    fn authenticates_known_users_only() {
        let yaml = format!(
            "users:\n  - {{ username: alice, password_hash: \"{}\", roles: [admin], scopes: [orders:read] }}\n",
            quick_hash("wonderland")
        );
        let db = UserDb::from_yaml(&yaml, Path::new("users.yaml")).unwrap();
        assert_eq!(db.authenticate("alice", "wonderland").map(|u| u.roles.clone()), Some(vec!["admin".into()]));
        assert!(db.authenticate("alice", "wrong").is_none());
        assert!(db.authenticate("bob", "wonderland").is_none());
        assert!(db.dummy_hash.contains("m=19456,t=2,p=1"), "dummy uses the users' parameters: {}", db.dummy_hash);
    }

    fn hash_t(password: &str, t: u32) -> String {
        let params = argon2::Params::new(19 * 1024, t, 1, None).unwrap();
        hash_with(password, &Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)).unwrap()
    }

    #[test]
    fn the_dummy_costs_what_most_users_cost() {
        // The first user is the odd one out: the dummy follows the other two.
        let yaml = format!(
            "users:\n  - {{ username: carol, password_hash: \"{}\" }}\n  - {{ username: alice, password_hash: \"{}\" }}\n  - {{ username: bob, password_hash: \"{}\" }}\n",
            hash_t("c", 3),
            hash_t("a", 2),
            hash_t("b", 2)
        );
        let db = UserDb::from_yaml(&yaml, Path::new("users.yaml")).unwrap();
        assert!(db.dummy_hash.contains("m=19456,t=2,p=1"), "{}", db.dummy_hash);
    }

    #[test]
    fn default_hash_is_argon2id_phc() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(hash_password("").is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        let yaml = "users:\n  - { username: \"\", password_hash: \"$2b$12$abc\", scopes: [\"a b\"] }\n";
        let err = UserDb::from_yaml(yaml, Path::new("users.yaml")).unwrap_err().to_string();
        for k in ["users[0].username", "users[0].password_hash", "users[0].scopes", "users.yaml"] {
            assert!(err.contains(k), "{k} missing: {err}");
        }
        let err = UserDb::from_yaml("users: []\nextra: 1\n", Path::new("u.yaml")).unwrap_err().to_string();
        assert!(err.contains("extra"), "{err}");
    }
}
