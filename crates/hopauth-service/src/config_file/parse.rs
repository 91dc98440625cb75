//! YAML to a typed section with every problem found, not only the first: each problem is
//! recorded under its full key (`providers[0].jwks.refresh_interval`), the offending entry
//! is taken out, and the rest is read again, until nothing more is wrong. Serde stops at
//! the first error; this loop is what lets one run of check-config list them all.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;

use super::Problem;

/// Enough for any real config; a file with more problems gets the first this many.
const MAX_PROBLEMS: usize = 100;

/// Why YAML text is not a `T`.
pub(super) enum ParseError {
    /// Not YAML at all: there is nothing to walk, so one error with its line.
    Syntax(serde_yaml_ng::Error),
    /// YAML, but not this shape: every problem, in document order.
    Problems(Vec<Problem>),
}

/// Parses `text` as a `T`, or finds every problem with its key.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    // The common case, a good file, reads once and straight from the text.
    let first = match serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let value: Value = serde_yaml_ng::from_str(text).map_err(ParseError::Syntax)?;
    let mut walk = Walk::new(value);
    // The first problem keeps the line the direct read found it on.
    let line = first.inner().location().map(|l| format!(" (line {} column {})", l.line(), l.column()));
    let first_path = first.path().to_string();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(walk.value.clone()) {
            Ok(t) if walk.problems.is_empty() => return Ok(t),
            Ok(_) => break,
            Err(e) => e,
        };
        let at = error.path().iter().cloned().collect::<Vec<_>>();
        let is_first = walk.problems.is_empty() && error.path().to_string() == first_path;
        if !walk.record(at, error.into_inner().to_string()) || walk.problems.len() >= MAX_PROBLEMS {
            break;
        }
        if let (true, Some(line), Some(p)) = (is_first, &line, walk.problems.first_mut()) {
            p.message.push_str(line);
        }
    }
    Err(ParseError::Problems(walk.problems))
}

/// The document being repaired, and what was taken out of it.
struct Walk {
    value: Value,
    problems: Vec<Problem>,
    /// Per list (by its key as written), the indices taken out, so later keys still name
    /// the entry as the file numbers it.
    removed_items: HashMap<String, Vec<usize>>,
    /// Fields taken out (`parent key`, field): their "missing field" is no new problem.
    removed_fields: HashSet<(String, String)>,
}

impl Walk {
    fn new(value: Value) -> Self {
        Walk { value, problems: Vec::new(), removed_items: HashMap::new(), removed_fields: HashSet::new() }
    }

    /// Records the error at `at` and takes out what caused it; false when nothing can be
    /// taken out (the document itself is the wrong shape), so the walk must stop.
    fn record(&mut self, mut at: Vec<Segment>, message: String) -> bool {
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // The path may end at the map that holds it or at the field itself.
            if !matches!(at.last(), Some(Segment::Map { key }) if *key == field) {
                at.push(Segment::Map { key: field });
            }
            self.problems.push(Problem { key: self.key(&at), message });
            return self.remove(&at);
        }
        if let Some(field) = quoted_after(&message, "missing field `") {
            let parent = self.key(&at);
            if !self.removed_fields.contains(&(parent, field.clone())) {
                at.push(Segment::Map { key: field });
                self.problems.push(Problem { key: self.key(&at), message: "required".into() });
                at.pop();
            }
            // The map cannot be read without it: take the whole map out.
            return self.remove(&at);
        }
        self.problems.push(Problem { key: self.key(&at), message });
        self.remove(&at)
    }

    /// The key of `at` (in the document as it is now) as the file numbers it.
    fn key(&self, at: &[Segment]) -> String {
        let mut key = String::new();
        for segment in at {
            match segment {
                Segment::Seq { index } => {
                    let removed = self.removed_items.get(&key).map_or(&[][..], Vec::as_slice);
                    key.push_str(&format!("[{}]", original_index(*index, removed)));
                }
                Segment::Map { key: k } | Segment::Enum { variant: k } => {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                }
                Segment::Unknown => key.push_str(".?"),
            }
        }
        if key.is_empty() {
            "(top level)".into()
        } else {
            key
        }
    }

    /// Takes the entry at `at` out of the document; false if `at` is the document itself
    /// or cannot be found.
    fn remove(&mut self, at: &[Segment]) -> bool {
        let Some((last, parent)) = at.split_last() else { return false };
        let parent_key = self.key(parent);
        let item_key = self.key(at);
        let Some(container) = lookup(&mut self.value, parent) else { return false };
        match (last, container) {
            (Segment::Map { key }, Value::Mapping(m)) => {
                // `shift_remove` keeps document order, so problems stay in the order of the file.
                let removed = m.shift_remove(key.as_str()).is_some();
                self.removed_fields.insert((parent_key, key.clone()));
                removed
            }
            (Segment::Seq { index }, Value::Sequence(items)) if *index < items.len() => {
                items.remove(*index);
                // `item_key` ends in `[n]`, n as the file numbers it.
                let n = item_key.rsplit('[').next().and_then(|n| n.trim_end_matches(']').parse::<usize>().ok());
                let list_key = if parent.is_empty() { String::new() } else { parent_key };
                let removed = self.removed_items.entry(list_key).or_default();
                removed.extend(n);
                removed.sort_unstable();
                true
            }
            _ => false,
        }
    }
}

/// The entry at `at`, following maps by key and lists by index.
fn lookup<'v>(value: &'v mut Value, at: &[Segment]) -> Option<&'v mut Value> {
    at.iter().try_fold(value, |v, segment| match (segment, v) {
        (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
        (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index),
        _ => None,
    })
}

/// The index in the file of what is now item `index`, given the file indices taken out.
fn original_index(index: usize, removed: &[usize]) -> usize {
    let mut original = index;
    for r in removed {
        if *r <= original {
            original += 1;
        }
    }
    original
}

/// The text between `prefix` and the next backtick, if `message` starts with `prefix`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_name_the_entry_as_the_file_numbers_it() {
        assert_eq!(original_index(0, &[]), 0);
        assert_eq!(original_index(0, &[0]), 1);
        assert_eq!(original_index(1, &[0, 2]), 3);
        assert_eq!(original_index(1, &[0, 1]), 3);
        assert_eq!(original_index(0, &[1]), 0);
    }
}
