//! `admin`: the bearer token that guards `/admin/*`.

use serde::{Deserialize, Serialize};

use super::Problems;

pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "HOPAUTH_ADMIN_TOKEN";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable that holds the bearer token for `/admin/*`; unset → admin off.
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { token_env: DEFAULT_ADMIN_TOKEN_ENV.to_string() }
    }
}

impl AdminConfig {
    pub(super) fn validate(&self, out: &mut Problems) {
        if self.token_env.is_empty() {
            out.add("admin.token_env", "must name an environment variable");
        }
    }
}
