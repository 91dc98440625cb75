//! The version coupling: the pinned Envoy version line, every declared callback exported by
//! that Envoy, every hook it looks up exported by the module, and the ABI version string.

use super::*;

fn nm(args: &[&str], file: &Path) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().expect("run nm (binutils): apt-get install binutils");
    assert!(out.status.success(), "nm failed on {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

/// The NUL-terminated identifiers starting with `prefix` in `bytes` (like `strings | grep`).
fn symbol_strings(bytes: &[u8], prefix: &[u8]) -> Vec<String> {
    identifiers(bytes, prefix, true)
}

/// Identifiers starting with `prefix`; with `c_strings`, only NUL-terminated ones.
fn identifiers(bytes: &[u8], prefix: &[u8], c_strings: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], prefix) {
        let start = at + i;
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(bytes.len(), |e| start + e);
        // Only whole C strings: NUL-terminated and not glued to the next name (Envoy's
        // binary also has packed, unterminated copies of these names).
        let name = &bytes[start..end];
        let preceded = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let terminated = !c_strings || bytes.get(end) == Some(&0);
        if terminated && preceded && find(&name[1..], prefix).is_none() {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        at = end;
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn envoy_is_the_pinned_version_line() {
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION"))
        .and_then(|l| l.split('=').nth(1))
        .map(str::trim)
        .expect("ENVOY_VERSION in the Makefile");
    assert!(
        pinned.starts_with(&format!("{ENVOY_VERSION_LINE}.")),
        "the Makefile pins Envoy {pinned}, but this module is built for {ENVOY_VERSION_LINE}.x"
    );
    assert!(version.contains(&format!("/{pinned}/")), "{} is not Envoy {pinned}: {version}", envoy_bin().display());
}

#[test]
fn every_declared_callback_is_exported_by_envoy() {
    let exported = nm(&["-D", "--defined-only"], &envoy_bin());
    let exported: std::collections::HashSet<&str> = exported.iter().map(String::as_str).collect();
    // The callbacks the source declares…
    let src = std::fs::read_to_string(manifest_dir().join("src/ffi/decl.rs")).unwrap();
    let declared = identifiers(src.as_bytes(), b"envoy_dynamic_module_callback_", false);
    assert!(declared.len() >= 14, "found only {declared:?} in ffi/decl.rs");
    // …and those the built module actually imports.
    let imported = nm(&["-D", "--undefined-only"], &module_dir().join("libhopauth_envoy.so"));
    let imported: Vec<&String> = imported.iter().filter(|s| s.starts_with("envoy_")).collect();
    assert!(!imported.is_empty());
    for sym in declared.iter().chain(imported.iter().copied()) {
        assert!(exported.contains(sym.as_str()), "Envoy does not export {sym}");
    }
}

#[test]
fn the_module_exports_every_http_filter_hook_envoy_looks_up() {
    let envoy = std::fs::read(envoy_bin()).unwrap();
    let wanted = symbol_strings(&envoy, b"envoy_dynamic_module_on_http_filter_");
    assert!(wanted.len() >= 20, "only {wanted:?} in the Envoy binary");
    let ours = nm(&["-D", "--defined-only"], &module_dir().join("libhopauth_envoy.so"));
    for hook in wanted.iter().map(String::as_str).chain(["envoy_dynamic_module_on_program_init"]) {
        assert!(ours.iter().any(|s| s == hook), "the module does not export {hook}");
    }
}

#[test]
fn the_abi_version_string_is_the_one_in_envoy() {
    let envoy = std::fs::read(envoy_bin()).unwrap();
    let mut needle = ABI_VERSION.as_bytes().to_vec();
    needle.push(0);
    assert!(
        find(&envoy, &needle).is_some(),
        "Envoy does not contain the ABI version {ABI_VERSION:?} this module returns"
    );
    // And the module returns exactly that string from on_program_init.
    let module = std::fs::read(module_dir().join("libhopauth_envoy.so")).unwrap();
    assert!(find(&module, &needle).is_some(), "the module does not carry {ABI_VERSION:?}");
}
