//! What is wrong with a config file: every problem found, each as a dotted key and a
//! message, and the error that carries them (also the issuer's and the users file's).

use std::path::{Path, PathBuf};

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML at all (a syntax error); problems of structure and of values are `Invalid`.
    #[error("{file}: {source}")]
    Parse {
        file: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{}", format_invalid(file, problems))]
    Invalid { file: PathBuf, problems: Vec<Problem> },
}

/// One problem: the dotted key (`providers[0].jwks.refresh_interval`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Problems collected by the sections' `validate`, in the order found.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.0.extend(problems);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// `Ok(value)` when nothing was found, else every problem as `ConfigError::Invalid`.
    pub fn into_result<T>(self, value: T, file: &Path) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid { file: file.to_owned(), problems: self.0 })
        }
    }
}

fn format_invalid(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!("{}: {} problem(s)", file.display(), problems.len());
    for p in problems {
        out.push_str(&format!("\n  {}: {}: {}", file.display(), p.key, p.message));
    }
    out
}
