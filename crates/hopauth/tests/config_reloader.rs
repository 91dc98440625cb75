//! The config-reload component's reloader (k8s/components/config-reload) against a real
//! `hopauth serve`: its shell loop, taken from the manifest, watches a directory laid out as
//! kubelet writes a ConfigMap volume (`..data` pointing at a timestamped directory, the file
//! a link through it); when kubelet's swap of `..data` is replayed, the loop sends SIGHUP
//! and the changed config is in force. No cluster: only the loop and the process are real.
//! Three things of the manifest are changed to run it here, each checked to be there: the
//! directory, the 5 s poll (0.2 s), and the process name (a name only this test's hopauth
//! has, so that no other hopauth on the machine is signalled).

use hopauth_testkit as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::process::{grpc_status, ServeProcess};
use support::*;

/// The reloader's script, as the component ships it.
fn shipped_script() -> String {
    let path = repo_root().join("k8s/components/config-reload/deployment-patch.yaml");
    let patch: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &patch["spec"]["template"]["spec"];
    assert_eq!(spec["shareProcessNamespace"].as_bool(), Some(true));
    let reloader = spec["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("config-reloader"))
        .expect("the component's config-reloader container");
    assert_eq!(reloader["command"][0].as_str(), Some("/bin/sh"));
    reloader["args"][0].as_str().unwrap().to_string()
}

/// `text` with `from` (which must occur exactly once) replaced.
fn replace_one(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "the reloader script changed: {from:?} not found once in\n{text}");
    text.replace(from, to)
}

/// A ConfigMap volume as kubelet writes it: `<dir>/..<version>/hopauth.yaml`, `..data` a
/// symlink to the version, `hopauth.yaml` a symlink to `..data/hopauth.yaml`.
struct ConfigMapVolume {
    dir: PathBuf,
}

impl ConfigMapVolume {
    fn new(dir: PathBuf, text: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let volume = ConfigMapVolume { dir };
        volume.update("..2026_12_01_00_00_00.1", text);
        std::os::unix::fs::symlink("..data/hopauth.yaml", volume.dir.join("hopauth.yaml")).unwrap();
        volume
    }

    /// Kubelet's update: a new version directory, then `..data` swapped to it in one rename.
    fn update(&self, version: &str, text: &str) {
        std::fs::create_dir(self.dir.join(version)).unwrap();
        std::fs::write(self.dir.join(version).join("hopauth.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// The reloader loop, killed when dropped.
struct Reloader {
    child: Child,
    log: PathBuf,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reloader {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The hopauth binary under a name only this test's process has (`pkill -x` matches the
/// process name, at most 15 characters).
fn uniquely_named_hopauth() -> (PathBuf, String) {
    let name = format!("hopauthrl{}", std::process::id() % 1_000_000);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
    let _ = std::fs::remove_file(&path);
    let bin = Path::new(env!("CARGO_BIN_EXE_hopauth"));
    if std::fs::hard_link(bin, &path).is_err() {
        std::fs::copy(bin, &path).unwrap();
    }
    (path, name)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_reloader_gets_a_configmap_update_to_a_running_hopauth() {
    let keys = Keys::generate();
    let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
    let tmp = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let config = |audiences: &str| {
        config_yaml(&jwks.url(), "", "")
            .replace("grpc_listen: 127.0.0.1:0", &format!("grpc_listen: {grpc}"))
            .replace("http_listen: 127.0.0.1:0", &format!("http_listen: {http}"))
            .replace(&format!("audiences: [{AUDIENCE}]"), &format!("audiences: [{audiences}]"))
    };
    let volume = ConfigMapVolume::new(tmp.path().join("etc-hopauth"), &config(AUDIENCE));
    let (bin, name) = uniquely_named_hopauth();
    let mut hopauth =
        ServeProcess::spawn(&bin, &volume.dir.join("hopauth.yaml"), tmp.path().join("hopauth.log"), grpc, http);
    hopauth.wait_ready().await;

    let script = shipped_script();
    let script = replace_one(&script, "dir=/etc/hopauth", &format!("dir={}", volume.dir.display()));
    let script = replace_one(&script, "sleep 5", "sleep 0.2");
    let script = replace_one(&script, "pkill -HUP -x hopauth", &format!("pkill -HUP -x {name}"));
    let log = tmp.path().join("reloader.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run sh");
    let reloader = Reloader { child, log };
    wait_until("the reloader to watch the volume", Duration::from_secs(5), || async {
        reloader.log_text().contains("config-reloader: watching")
    })
    .await;

    let mut c = claims("bob");
    c["aud"] = json!("billing");
    let billing = keys.es.sign_jwt(&c).unwrap();
    let channel = hopauth.channel().await;
    assert_eq!(grpc_status(&channel, &billing).await, Ok(401), "billing is not an audience yet");

    volume.update("..2026_12_01_00_05_00.2", &config(&format!("{AUDIENCE}, billing")));
    wait_until("the billing token to be allowed", Duration::from_secs(15), || async {
        grpc_status(&channel, &billing).await == Ok(200)
    })
    .await;
    hopauth.wait_log("config reloaded", Duration::from_secs(5)).await;
    let said = reloader.log_text();
    assert!(said.contains("sent SIGHUP to hopauth"), "{said}");
    assert_eq!(said.matches("sent SIGHUP").count(), 1, "one update, one signal: {said}");
    assert_eq!(hopauth.log_text().matches("hopauth serving").count(), 1, "one process, never restarted");
    drop(reloader);
    let _ = std::fs::remove_file(&bin);
}
