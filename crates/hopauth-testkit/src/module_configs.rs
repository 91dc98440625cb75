//! Envoy configs for in-process mode (the dynamic module), rendered from the shipped files:
//! - [`module_filter`]: the `hopauth` HTTP filter exactly as `envoy/module.yaml` declares
//!   it, reading a given `hopauth.yaml` (the bench puts it in its own listener);
//! - [`to_module_mode`]: an ext_authz config (`envoy/gateway.yaml`, `envoy/sidecar.yaml`)
//!   with its ext_authz filter swapped for that filter: per-route `context_extensions`
//!   become the module's per-route JSON, `disabled` becomes Envoy's generic per-route
//!   `FilterConfig`, claims are read from metadata namespace `hopauth` (access logs, RBAC),
//!   and the `hopauth` cluster no longer carries Checks: it points at the module's side port
//!   (`http_listen`) and Envoy health-checks `GET /readyz` through it, so whoever starts the
//!   Envoy waits for the module to be ready exactly as for an ext_authz hopauth; and the
//!   bootstrap gains module.yaml's `stats_config` (the tags that label the module's counters).
//!
//! Envoy finds `libhopauth_envoy.so` through [`SEARCH_PATH_ENV`], set to [`module_dir`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

/// The variable Envoy searches for `lib<name>.so`.
pub const SEARCH_PATH_ENV: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const FILTER_NAME: &str = "hopauth";
const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// `<target>/release`, holding the `libhopauth_envoy.so` built by `make module`, for the
/// running binary (a bench, an example or a test under `<target>/<profile>/…`). Panics
/// saying how to build it when it is missing.
pub fn module_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let target = exe
        .ancestors()
        .find(|d| d.join("release").is_dir() && d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let dir = target.join("release");
    assert!(
        dir.join("libhopauth_envoy.so").is_file(),
        "no libhopauth_envoy.so in {}: run `make module` (cargo build --release -p hopauth-envoy)",
        dir.display()
    );
    dir
}

fn module_yaml() -> Value {
    let path = crate::repo_root().join("envoy/module.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every mapping in `v`, depth first (parents before children).
fn visit_mut(v: &mut Value, f: &mut impl FnMut(&mut Mapping)) {
    match v {
        Value::Mapping(m) => {
            f(m);
            for (_, child) in m.iter_mut() {
                visit_mut(child, f);
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(|c| visit_mut(c, f)),
        _ => {}
    }
}

fn strings_mut(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, c)| strings_mut(c, f)),
        Value::Sequence(s) => s.iter_mut().for_each(|c| strings_mut(c, f)),
        _ => {}
    }
}

fn key(m: &Mapping, k: &str) -> Option<Value> {
    m.get(k).cloned()
}

/// The `hopauth` entry of `envoy/module.yaml`'s `http_filters`, its `filter_config`
/// pointing at `hopauth_yaml`.
pub fn module_filter(hopauth_yaml: &Path) -> Value {
    filter_of(&module_yaml(), hopauth_yaml)
}

/// The `hopauth` http filter of `module` (envoy/module.yaml, parsed), reading `hopauth_yaml`.
fn filter_of(module: &Value, hopauth_yaml: &Path) -> Value {
    let mut doc = module.clone();
    let mut found = None;
    visit_mut(&mut doc, &mut |m| {
        if let Some(Value::Sequence(filters)) = m.get("http_filters") {
            found = found.take().or_else(|| filters.iter().find(|f| f["name"] == FILTER_NAME).cloned());
        }
    });
    let mut filter = found.expect("envoy/module.yaml has no `hopauth` http filter");
    filter["typed_config"]["filter_config"]["value"] = Value::String(hopauth_yaml.display().to_string());
    filter
}

/// [`module_filter`] as one YAML list item, every line indented by `indent` spaces.
pub fn module_filter_yaml(hopauth_yaml: &Path, indent: usize) -> String {
    let text = serde_yaml_ng::to_string(&Value::Sequence(vec![module_filter(hopauth_yaml)])).unwrap();
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect::<String>().trim_end().to_string()
}

/// The per-route config of the module carrying `json` (`envoy/module.yaml`'s shape).
fn per_route(json: String) -> Value {
    let mut filter_config = Mapping::new();
    filter_config.insert("@type".into(), "type.googleapis.com/google.protobuf.StringValue".into());
    filter_config.insert("value".into(), json.into());
    let mut dm = Mapping::new();
    dm.insert("name".into(), "hopauth_envoy".into());
    let mut m = Mapping::new();
    m.insert("@type".into(), PER_ROUTE_TYPE.into());
    m.insert("dynamic_module_config".into(), dm.into());
    m.insert("filter_config".into(), filter_config.into());
    m.into()
}

/// An ext_authz per-route config in module terms: `disabled` → Envoy's `FilterConfig`,
/// `check_settings.context_extensions` → the module's JSON with the same keys.
fn per_route_from_ext_authz(ext: &Value) -> Value {
    if ext["disabled"] == Value::Bool(true) {
        let mut m = Mapping::new();
        m.insert("@type".into(), FILTER_CONFIG_TYPE.into());
        m.insert("disabled".into(), true.into());
        return m.into();
    }
    let ctx = ext["check_settings"]["context_extensions"].as_mapping().cloned().unwrap_or_default();
    let json: serde_json::Map<String, serde_json::Value> = ctx
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), serde_json::Value::String(v.as_str()?.to_string()))))
        .collect();
    per_route(serde_json::Value::Object(json).to_string())
}

/// `text` (an ext_authz Envoy config) using the module reading `hopauth_yaml` instead,
/// whose side port is `side`; see the module header for what changes.
pub fn to_module_mode(text: &str, hopauth_yaml: &Path, side: SocketAddr) -> String {
    let mut doc: Value = serde_yaml_ng::from_str(text).expect("an Envoy YAML config");
    let module = module_yaml();
    // The module's counters get their labels from module.yaml's `stats_tags`.
    if let (Value::Mapping(root), Some(stats)) = (&mut doc, module.get("stats_config").cloned()) {
        root.entry("stats_config".into()).or_insert(stats);
    }
    let filter = filter_of(&module, hopauth_yaml);
    visit_mut(&mut doc, &mut |m| {
        if let Some(Value::Sequence(filters)) = m.get_mut("http_filters") {
            for f in filters.iter_mut().filter(|f| f["name"] == EXT_AUTHZ) {
                *f = filter.clone();
            }
        }
        if let Some(Value::Mapping(per)) = m.get_mut("typed_per_filter_config") {
            if let Some(ext) = per.remove(EXT_AUTHZ) {
                per.insert(FILTER_NAME.into(), per_route_from_ext_authz(&ext));
            }
        }
        // RBAC and other metadata readers: ext_authz's `hopauth` Struct → namespace `hopauth`.
        if key(m, "filter") == Some(EXT_AUTHZ.into()) {
            if let Some(Value::Sequence(path)) = m.get_mut("path") {
                if path.first().is_some_and(|p| p["key"] == FILTER_NAME) {
                    path.remove(0);
                    m.insert("filter".into(), FILTER_NAME.into());
                }
            }
        }
        if m.get("name") == Some(&Value::from(FILTER_NAME)) && m.contains_key("health_checks") {
            readiness_cluster(m, side);
        }
    });
    strings_mut(&mut doc, &mut |s| {
        *s = s.replace(&format!("%DYNAMIC_METADATA({EXT_AUTHZ}:hopauth:"), "%DYNAMIC_METADATA(hopauth:");
    });
    serde_yaml_ng::to_string(&doc).unwrap()
}

/// The `hopauth` cluster pointed at the module's side port `side`, health-checked over
/// HTTP/1.1 with `GET /readyz` instead of gRPC health.
fn readiness_cluster(cluster: &mut Mapping, side: SocketAddr) {
    cluster.remove("typed_extension_protocol_options");
    let endpoint = format!(
        "{{ cluster_name: hopauth, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: \
         {{ address: \"{}\", port_value: {} }} }} }} }} ] }} ] }}",
        side.ip(),
        side.port()
    );
    cluster.insert("load_assignment".into(), serde_yaml_ng::from_str(&endpoint).unwrap());
    if let Some(Value::Sequence(checks)) = cluster.get_mut("health_checks") {
        for c in checks.iter_mut().filter_map(Value::as_mapping_mut) {
            c.remove("grpc_health_check");
            let mut http = Mapping::new();
            http.insert("path".into(), "/readyz".into());
            c.insert("http_health_check".into(), http.into());
        }
    }
}

/// `envoy/<file>` in module mode ([`to_module_mode`]), written to `dir/<file>`; the
/// absolute path (which `Envoy::start_with` accepts in place of a file name).
pub fn render_to(file: &str, hopauth_yaml: &Path, side: SocketAddr, dir: &Path) -> PathBuf {
    let src = crate::repo_root().join("envoy").join(file);
    let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = dir.join(file);
    std::fs::write(&out, to_module_mode(&text, hopauth_yaml, side)).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(file: &str) -> String {
        let text = std::fs::read_to_string(crate::repo_root().join("envoy").join(file)).unwrap();
        to_module_mode(&text, Path::new("/tmp/h.yaml"), "127.0.0.1:7777".parse().unwrap())
    }

    #[test]
    fn the_gateway_in_module_mode_keeps_its_policy_and_asks_no_ext_authz() {
        let out = rendered("gateway.yaml");
        assert!(!out.contains(EXT_AUTHZ), "{out}");
        assert!(out.contains("value: /tmp/h.yaml"), "{out}");
        assert!(out.contains(r#"'{"hopauth.require_scopes":"admin"}'"#), "{out}");
        assert!(out.contains(r#"'{"hopauth.anonymous":"allow"}'"#), "{out}");
        assert!(out.contains(FILTER_CONFIG_TYPE) && out.contains("disabled: true"), "{out}");
        assert!(out.contains("%DYNAMIC_METADATA(hopauth:sub)%"), "{out}");
        assert!(out.contains("path: /readyz") && out.contains("port_value: 7777"), "{out}");
        assert!(!out.contains("grpc_health_check"), "{out}");
        assert!(out.contains("tag_name: decision") && out.contains("tag_name: reason"), "{out}");
    }

    #[test]
    fn the_sidecar_in_module_mode_reads_claims_from_namespace_hopauth() {
        let out = rendered("sidecar.yaml");
        assert!(!out.contains(EXT_AUTHZ), "{out}");
        assert!(!out.contains("/run/hopauth/grpc.sock"), "{out}");
        assert!(out.contains("filter: hopauth"), "{out}");
        assert!(out.contains(r#"'{"hopauth.require_scopes":"orders:read"}'"#), "{out}");
    }
}
