//! Collecting what is wrong with a config file as the sections validate: every problem
//! found, each a dotted key (`providers[0].jwks.refresh_interval`) and a message, returned
//! at once as `ConfigError::Invalid`.

use std::path::Path;

use super::{ConfigError, Problem};

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
