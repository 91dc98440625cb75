//! The configs inside the Kubernetes manifests: the Envoy sidecar config of the ConfigMap
//! passes `envoy --mode validate`, and every hopauth.yaml (base and overlays) is a valid
//! hopauth config that differs from the base only in its `revocation` section. The
//! manifests themselves are validated by k8s/validate.sh (`make k8s-validate`).

use hopauth_testkit as support;

use std::process::Command;

use hopauth::config::{Config, RevocationBackend};
use support::{envoy_bin, repo_root};

#[test]
fn kubernetes_envoy_config_is_valid() {
    let path = repo_root().join("k8s/base/envoy.yaml");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("envoy runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("OK"), "{}: {text}", path.display());
}

fn without_revocation(path: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    value.as_mapping_mut().unwrap().remove("revocation");
    value
}

#[test]
fn kubernetes_hopauth_configs_are_valid_and_differ_only_in_revocation() {
    let cases = [
        ("k8s/base/hopauth.yaml", RevocationBackend::Memory),
        ("k8s/overlays/redis/hopauth.yaml", RevocationBackend::Redis),
        ("k8s/overlays/redis-cluster/hopauth.yaml", RevocationBackend::Redis),
    ];
    let base = without_revocation(cases[0].0);
    for (path, backend) in cases {
        let file = repo_root().join(path);
        let text = std::fs::read_to_string(&file).unwrap();
        let config = Config::from_yaml(&text, &file).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(config.revocation.backend, backend, "{path}");
        assert_eq!(
            config.grpc_listen,
            hopauth::config::GrpcListen::Unix("/run/hopauth/grpc.sock".into()),
            "{path}: gRPC is the socket shared with Envoy in the pod"
        );
        assert_eq!(config.http_listen.port(), 9002, "{path}: probes and the ServiceMonitor use 9002");
        let admin = config.admin_listen.unwrap_or_else(|| panic!("{path}: admin_listen keeps /admin off 9002"));
        assert!(admin.ip().is_loopback(), "{path}: the admin API stays inside the pod");
        assert_eq!(without_revocation(path), base, "{path} drifted from k8s/base/hopauth.yaml outside `revocation`");
    }
}
