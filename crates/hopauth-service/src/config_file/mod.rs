//! Config-file plumbing both services use: `ConfigError` with every `Problem` found, the
//! serde forms of durations (`30s`, `5m`, `1h 30m`, `250ms`), and password-free URLs for
//! logs and `Debug`. [`from_yaml`] reads a typed config reporting every problem of shape
//! (`parse`); [`Problems`] collects what the services' `validate` find.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

mod parse;
mod problems;

pub use problems::Problems;

/// YAML text to a `T`, or every problem of shape with its key: an unknown key, a missing
/// one, a value of the wrong type or form (a duration error names its own key,
/// `providers[0].jwks.refresh_interval`). Text that is not YAML at all is one `Parse`
/// error with its line. `file` only names the source in errors.
pub fn from_yaml<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    match parse::parse::<T>(text) {
        Ok(t) => Ok(t),
        Err(parse::ParseError::Syntax(source)) => Err(ConfigError::Parse { file: file.to_owned(), source }),
        Err(parse::ParseError::Problems(problems)) => Err(ConfigError::Invalid { file: file.to_owned(), problems }),
    }
}

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{}", format_invalid(file, problems))]
    Invalid { file: PathBuf, problems: Vec<Problem> },
}

/// One validation problem: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

fn format_invalid(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!("{}: {} problem(s)", file.display(), problems.len());
    for p in problems {
        out.push_str(&format!("\n  {}: {}: {}", file.display(), p.key, p.message));
    }
    out
}

/// `redis://user:secret@host` → `redis://user:***@host`: never print a password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// Durations written as `30s`, `5m`, `1h 30m`, `250ms` (`#[serde(with = "duration")]`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. 30s, 5m, 1h")))
    }
}

/// An optional duration in the same form; absent means "not set".
pub mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}
