//! Test certificates made by the `openssl` command in a temp dir: self-signed CAs and leaf
//! certificates they sign, for servers (with subject alternative names, and a chosen key type)
//! and clients.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install it: apt-get install openssl"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate's key type: EC P-256 unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    P256,
    Rsa2048,
}

impl Key {
    /// `openssl req` arguments for a new key of this type.
    fn args(self) -> &'static [&'static str] {
        match self {
            Key::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
        }
    }
}

/// A directory of PEM files `<name>.crt` / `<name>.key`, removed when dropped.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A self-signed CA `name`.
    pub fn ca(&self, name: &str) {
        let (crt, key, subj) = (format!("{name}.crt"), format!("{name}.key"), format!("/CN={name}"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "1", "-keyout", &key, "-out", &crt, "-subj", &subj];
        args.extend(Key::P256.args());
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        openssl(self.dir(), &args);
    }

    /// A server certificate `name` signed by CA `issuer`, valid for `sans`
    /// (`DNS:host` or `IP:addr`).
    pub fn server(&self, name: &str, issuer: &str, sans: &[&str]) {
        self.server_with_key(name, issuer, sans, Key::P256);
    }

    /// `server` with a `key` of the type given: a peer tells such certificates apart by the
    /// signature algorithm of the handshake.
    pub fn server_with_key(&self, name: &str, issuer: &str, sans: &[&str], key: Key) {
        let extensions = format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", sans.join(","));
        self.leaf(name, issuer, &extensions, key);
    }

    /// A client certificate `name` signed by CA `issuer`.
    pub fn client(&self, name: &str, issuer: &str) {
        self.leaf(name, issuer, "extendedKeyUsage=clientAuth\n", Key::P256);
    }

    fn leaf(&self, name: &str, issuer: &str, extensions: &str, key_type: Key) {
        let (crt, key, csr, extf) =
            (format!("{name}.crt"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        std::fs::write(self.path(&extf), extensions).unwrap();
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj];
        args.extend(key_type.args());
        openssl(self.dir(), &args);
        let (ca_crt, ca_key) = (format!("{issuer}.crt"), format!("{issuer}.key"));
        let mut args = vec!["x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key, "-CAcreateserial"];
        args.extend(["-days", "1", "-out", &crt, "-extfile", &extf]);
        openssl(self.dir(), &args);
    }

    /// Copies `<from>.crt` / `<from>.key` to `<dir>/tls.crt` / `<dir>/tls.key` and CA
    /// `ca` to `<dir>/ca.crt`: the layout of a cert-manager Secret mounted as a volume.
    pub fn secret_dir(&self, dir: &str, from: &str, ca: &str) -> PathBuf {
        let out = self.path(dir);
        std::fs::create_dir_all(&out).unwrap();
        for (src, dst) in
            [(format!("{from}.crt"), "tls.crt"), (format!("{from}.key"), "tls.key"), (format!("{ca}.crt"), "ca.crt")]
        {
            std::fs::copy(self.path(&src), out.join(dst)).unwrap();
        }
        out
    }
}
