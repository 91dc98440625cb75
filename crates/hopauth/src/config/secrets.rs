//! Secrets in config text: `${VAR}` taken from the environment, so a password can come
//! from a Kubernetes Secret (printing a URL without its password is `redact_url`).

use super::redact_url;

/// Replaces `${NAME}` with the environment variable `NAME` (`$${` stays a literal `${`).
/// An unset variable or an unclosed `${` is an error that names it.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in {:?}", redact_url(text)))?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{name}}}` is not an environment variable name"));
            }
            let value = std::env::var(name).map_err(|_| format!("environment variable ${name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_expanded_and_bad_ones_named() {
        std::env::set_var("HOPAUTH_TEST_SECRETS_VAR", "s3cr3t-+");
        assert_eq!(expand_env("a${HOPAUTH_TEST_SECRETS_VAR}b").unwrap(), "as3cr3t-+b");
        assert_eq!(expand_env("no vars, $5 and $${literal}").unwrap(), "no vars, $5 and ${literal}");
        assert!(expand_env("${HOPAUTH_TEST_UNSET_VARIABLE}").unwrap_err().contains("HOPAUTH_TEST_UNSET_VARIABLE"));
        assert!(expand_env("${oops").is_err());
        assert!(expand_env("${a-b}").is_err());
    }
}
