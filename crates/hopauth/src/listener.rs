//! Binding the gRPC listener: a TCP address or a Unix domain socket (`grpc_listen: unix:/path`).
//! A socket file is ours for the life of the process: a stale one left by a crash is removed
//! at start, the mode is set to `SOCKET_MODE`, and the file is removed at shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::config::GrpcListen;

/// Mode of the gRPC socket file: owner and group may connect (Envoy runs in the same pod
/// with a shared group, or as the same user), others may not.
pub const SOCKET_MODE: u32 = 0o660;

/// A bound gRPC listener.
pub enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A bound Unix domain socket; `path` is removed by `UnixSocket::remove` at shutdown.
pub struct UnixSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
}

/// Why the gRPC listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("grpc_listen: cannot bind {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc_listen: {0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
}

impl GrpcListener {
    /// Binds `listen`; for a Unix socket removes a stale socket file first and sets `SOCKET_MODE`.
    pub async fn bind(listen: &GrpcListen) -> Result<Self, BindError> {
        let io = |source| BindError::Io { addr: listen.to_string(), source };
        match listen {
            GrpcListen::Tcp(addr) => Ok(GrpcListener::Tcp(TcpListener::bind(addr).await.map_err(io)?)),
            GrpcListen::Unix(path) => {
                remove_stale(path)?;
                let listener = UnixListener::bind(path).map_err(io)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io)?;
                Ok(GrpcListener::Unix(UnixSocket { listener, path: path.clone() }))
            }
        }
    }

    /// What was bound (the real port when `grpc_listen` asked for port 0).
    pub fn local(&self) -> std::io::Result<GrpcListen> {
        Ok(match self {
            GrpcListener::Tcp(l) => GrpcListen::Tcp(l.local_addr()?),
            GrpcListener::Unix(u) => GrpcListen::Unix(u.path.clone()),
        })
    }

    /// The TCP address, or the unspecified `0.0.0.0:0` for a Unix socket.
    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            GrpcListener::Tcp(l) => l.local_addr(),
            GrpcListener::Unix(_) => Ok(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}

impl UnixSocket {
    /// Removes the socket file (after the server stopped accepting).
    pub fn remove(path: &Path) {
        if let Err(error) = std::fs::remove_file(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "cannot remove the gRPC socket file");
            }
        }
    }
}

/// A socket file left by a previous run would make `bind` fail with "address in use".
fn remove_stale(path: &Path) -> Result<(), BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| BindError::Io { addr: path.display().to_string(), source })
        }
        Ok(_) => Err(BindError::NotASocket(path.to_owned())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grpc.sock");
        let listen = GrpcListen::Unix(path.clone());
        // A socket file left by a crashed run: bind succeeds anyway, with the documented mode.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let bound = GrpcListener::bind(&listen).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE, "{mode:o}");
        assert_eq!(bound.local().unwrap(), listen);
        drop(bound);
        UnixSocket::remove(&path);
        assert!(!path.exists());
        // Not a socket: never deleted.
        std::fs::write(&path, "data").unwrap();
        let error = GrpcListener::bind(&listen).await.err().expect("refused");
        assert!(matches!(error, BindError::NotASocket(_)), "{error}");
        assert!(error.to_string().starts_with("grpc_listen: "), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
