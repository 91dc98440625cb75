//! No top-level module of any workspace crate imports, through `crate::` (or `super::` out of
//! its own tree), a module that imports it back: the layers inside each crate form no
//! cycle. Read from the sources (`crates/*/src`), so it needs no build of the crates it
//! checks. A cycle fails the test with the import lines that make it.
//!
//! A cycle listed in `KNOWN_CYCLES` is printed without failing (any other cycle, or one of
//! those grown, fails); when one is broken the test says "no longer a cycle", and its entry
//! goes. None is listed now.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (crate, the modules of the cycle): reported, not (yet) a failure.
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

/// An import of top-level module `to`, at `file:line`.
struct Edge {
    to: String,
    at: String,
}

/// One crate root (lib.rs or main.rs): its top-level modules and their imports of each other.
struct Root {
    name: String,
    modules: BTreeSet<String>,
    /// Names the root re-exports (`pub use x::Name`) → the module they come from.
    reexports: BTreeMap<String, String>,
    edges: BTreeMap<String, Vec<Edge>>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line: no `//` comment (doc comments included) and no string literal, so
/// neither a comment nor a message mentioning `crate::x` counts as an import.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path a `prefix::` introduces on a line: `crate::a::b` → a,
/// `crate::{a::b, c}` → a, c (one level of braces, as rustfmt writes `use` lists).
fn first_segments(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(list) = rest.strip_prefix('{') {
            out.extend(
                top_level_items(list).into_iter().map(|p| ident_at(p.trim()).to_string()).filter(|p| !p.is_empty()),
            );
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

/// The comma-separated items of a brace list (after its `{`), up to its `}`; nested lists
/// stay inside their item.
fn top_level_items(list: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&list[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
}

/// Joins lines of a multi-line `use` so that a brace list is on one line.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let code = code_of(line);
        if let Some((_, acc)) = pending.as_mut() {
            acc.push_str(code.trim());
            if code.contains(';') {
                out.push(pending.take().unwrap());
            }
            continue;
        }
        let starts_use = code.trim_start().starts_with("use ")
            || code.trim_start().starts_with("pub use ")
            || code.contains(" use ");
        if starts_use && !code.contains(';') {
            pending = Some((n + 1, code.trim().to_string()));
            continue;
        }
        out.push((n + 1, code));
    }
    out.extend(pending);
    out
}

/// The top-level modules a root declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_modules(root_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in root_text.lines() {
        let code = code_of(line);
        let code = code.trim();
        let Some(i) = code.find("mod ") else { continue };
        let head = &code[..i];
        if !(head.is_empty() || head.starts_with("pub")) || !code.ends_with(';') {
            continue;
        }
        let name = ident_at(&code[i + 4..]);
        if !name.is_empty() {
            out.insert(name.to_string());
        }
    }
    out
}

/// `pub use self::x::Name;` / `pub use x::{A, B};` at the root: Name → x.
fn root_reexports(root_text: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (_, code) in statements(root_text) {
        let code = code.trim();
        let Some(i) = code.find("use ") else { continue };
        if !code[..i].trim().starts_with("pub") {
            continue;
        }
        let path = code[i + 4..].trim_end_matches(';').trim();
        let path = path.strip_prefix("self::").or_else(|| path.strip_prefix("crate::")).unwrap_or(path);
        let module = ident_at(path);
        if !modules.contains(module) {
            continue;
        }
        let tail = &path[module.len()..];
        let names: Vec<&str> = match tail.find('{') {
            Some(b) => top_level_items(&tail[b + 1..]),
            None => tail.rsplit("::").next().into_iter().collect(),
        };
        for name in names {
            let name = name.trim().rsplit(" as ").next().unwrap_or("").trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            if !name.is_empty() && name != "*" && name != "self" {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}

/// The top-level module a file belongs to and its depth below the root (src/x.rs and
/// src/x/mod.rs: 1; src/x/y.rs: 2 …); none for the root itself.
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src).unwrap();
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let first = parts[0].trim_end_matches(".rs").to_string();
    if parts.len() == 1 && (first == "lib" || first == "main") {
        return None;
    }
    let last = parts.last().unwrap();
    let depth = if last == "mod.rs" { parts.len() - 1 } else { parts.len() };
    Some((first, depth))
}

fn scan(crate_dir: &Path, root_file: &str) -> Option<Root> {
    let src = crate_dir.join("src");
    let root_text = std::fs::read_to_string(src.join(root_file)).ok()?;
    let modules = declared_modules(&root_text);
    let reexports = root_reexports(&root_text, &modules);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for file in files {
        let Some((from, depth)) = module_of(&src, &file) else { continue };
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // `super::` `depth` times from a file reaches the root.
        let to_root = "super::".repeat(depth);
        for (n, code) in statements(&text) {
            let mut targets = first_segments(&code, "crate::");
            targets.extend(first_segments(&code, &to_root).into_iter().filter(|_| depth > 0));
            for t in targets {
                let to = if modules.contains(&t) {
                    t
                } else if let Some(m) = reexports.get(&t) {
                    m.clone()
                } else {
                    continue;
                };
                if to != from {
                    let at = format!("{}:{n}", file.strip_prefix(workspace()).unwrap().display());
                    edges.entry(from.clone()).or_default().push(Edge { to, at });
                }
            }
        }
    }
    let name = format!("{} ({root_file})", crate_dir.file_name().unwrap().to_string_lossy());
    Some(Root { name, modules, reexports, edges })
}

/// Sets of modules that reach each other (each set a cycle), with the edges inside them.
fn cycles(root: &Root) -> Vec<(BTreeSet<String>, Vec<String>)> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(m) = todo.pop() {
            for e in root.edges.get(&m).into_iter().flatten() {
                if seen.insert(e.to.clone()) {
                    todo.push(e.to.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = root.modules.iter().map(|m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in &root.modules {
        if done.contains(m) || !reaches[m].contains(m) {
            continue;
        }
        let set: BTreeSet<String> =
            root.modules.iter().filter(|n| reaches[m].contains(*n) && reaches[*n].contains(m)).cloned().collect();
        let mut lines = Vec::new();
        for from in &set {
            for e in root.edges.get(from).into_iter().flatten().filter(|e| set.contains(&e.to)) {
                lines.push(format!("    {from} → {} ({})", e.to, e.at));
            }
        }
        done.extend(set.iter().cloned());
        out.push((set, lines));
    }
    out
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let mut crate_dirs: Vec<PathBuf> = std::fs::read_dir(workspace())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crate_dirs.sort();
    assert!(crate_dirs.len() >= 6, "expected the workspace crates under {}", workspace().display());
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in &crate_dirs {
        let crate_name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for root_file in ["lib.rs", "main.rs"] {
            let Some(root) = scan(dir, root_file) else { continue };
            checked += 1;
            let found = cycles(&root);
            let edge_count: usize = root.edges.values().map(Vec::len).sum();
            println!(
                "{}: {} top-level modules, {edge_count} cross-module imports ({} root re-exports followed), {} cycle(s)",
                root.name,
                root.modules.len(),
                root.reexports.len(),
                found.len()
            );
            for (set, lines) in &found {
                let report = format!("{}: cycle among {set:?}:\n{}", root.name, lines.join("\n"));
                let known = KNOWN_CYCLES.iter().any(|(c, mods)| {
                    *c == crate_name && mods.iter().map(|m| m.to_string()).collect::<BTreeSet<_>>() == *set
                });
                if known {
                    println!("known, not yet enforced: {report}");
                } else {
                    failures.push(report);
                }
            }
            for (_, mods) in KNOWN_CYCLES.iter().filter(|(c, _)| *c == crate_name && root_file == "lib.rs") {
                let set: BTreeSet<String> = mods.iter().map(|m| m.to_string()).collect();
                if !found.iter().any(|(s, _)| *s == set) {
                    println!("{}: {set:?} is no longer a cycle: delete it from KNOWN_CYCLES", root.name);
                }
            }
        }
    }
    assert!(checked >= 6, "only {checked} crate roots found");
    assert!(failures.is_empty(), "module cycles:\n{}", failures.join("\n"));
}

/// The parser finds what the check relies on: brace lists, `super::` out of a module, and
/// neither comments nor strings.
#[test]
fn the_import_parser_reads_use_lists_and_skips_comments_and_strings() {
    assert_eq!(first_segments("use crate::{a::b, c, d::{e, f}};", "crate::"), ["a", "c", "d"]);
    assert_eq!(first_segments("let x = crate::metrics::Metrics::new();", "crate::"), ["metrics"]);
    assert_eq!(first_segments(&code_of("// crate::x"), "crate::"), Vec::<String>::new());
    assert_eq!(first_segments(&code_of(r#"panic!("crate::x")"#), "crate::"), Vec::<String>::new());
    assert_eq!(first_segments("use hopauth_crate::x;", "crate::"), Vec::<String>::new());
    let s = statements("use crate::{\n    a,\n    b::C,\n};\nfn f() {}\n");
    assert_eq!(first_segments(&s[0].1, "crate::"), ["a", "b"]);
    assert_eq!(
        declared_modules("pub mod a;\nmod b;\npub(crate) mod c;\nmod tests {\n"),
        ["a", "b", "c"].map(String::from).into()
    );
}
