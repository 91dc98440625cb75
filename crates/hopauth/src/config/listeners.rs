//! The listeners: `grpc_listen` (TCP or a Unix socket), `grpc_tls` (its type is
//! `crate::tls`'s, which loads it), `http_listen` and `admin_listen`, and the checks that
//! they do not collide.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Config, Problems};

/// gRPC listener for ext_authz and health.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9001";
/// HTTP side port: metrics, health, admin.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9002";
/// The prefix that selects a Unix domain socket in `grpc_listen`.
pub const UNIX_PREFIX: &str = "unix:";

/// The `http_listen` default.
pub(super) fn default_http_listen() -> SocketAddr {
    DEFAULT_HTTP_LISTEN.parse().expect("valid constant")
}

/// Where the gRPC listener binds: a TCP address, or a Unix domain socket (`unix:/path`),
/// which Envoy in the same pod reaches with a `pipe: { path: ... }` cluster address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Default for GrpcListen {
    fn default() -> Self {
        DEFAULT_GRPC_LISTEN.parse().expect("valid constant")
    }
}

impl std::str::FromStr for GrpcListen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: the socket path must be absolute, e.g. unix:/run/hopauth/grpc.sock"));
            }
            return Ok(GrpcListen::Unix(PathBuf::from(path)));
        }
        text.parse().map(GrpcListen::Tcp).map_err(|_| {
            format!("{text:?} is not IP:port or unix:/path; use e.g. 127.0.0.1:9001 or [::1]:9001 or unix:/run/hopauth/grpc.sock (host names are not resolved)")
        })
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcListen::Tcp(a) => a.fmt(f),
            GrpcListen::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl Serialize for GrpcListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GrpcListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `grpc_tls` is usable (its files load) and the listeners do not share an address.
pub(super) fn validate(c: &Config, out: &mut Problems) {
    if let Some(tls) = &c.grpc_tls {
        if let GrpcListen::Unix(_) = c.grpc_listen {
            out.add("grpc_tls", "TLS is for a TCP grpc_listen; a Unix socket is already local to the pod");
        }
        if let Err(e) = crate::tls::server_config(tls) {
            out.add(e.key(), e.to_string().trim_start_matches(e.key()).trim_start_matches(": "));
        }
    }
    if let Some(admin) = c.admin_listen {
        if admin.port() != 0 && (admin == c.http_listen || c.grpc_listen == GrpcListen::Tcp(admin)) {
            out.add("admin_listen", "must differ from http_listen and grpc_listen");
        }
    }
    if c.grpc_listen == GrpcListen::Tcp(c.http_listen) && c.http_listen.port() != 0 {
        out.add("http_listen", "must differ from grpc_listen");
    }
}
