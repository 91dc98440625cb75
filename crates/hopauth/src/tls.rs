//! TLS (and mTLS) on the gRPC listener with rustls, with certificates reloaded from disk.
//! tonic's built-in TLS cannot swap certificates, so the listener accepts TCP itself and
//! hands each connection to a `tokio_rustls` acceptor built from the current
//! `ServerConfig`, which `watch` replaces when the files change (cert-manager rotating a
//! Secret) or on SIGHUP. Connections already open keep the config they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// How often the certificate files are re-read to notice a rotation.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to take them.
const ACCEPT_QUEUE: usize = 64;

/// A certificate file that cannot be used; `key` is the config key that names it.
/// `grpc_tls`: the server certificate, and with `client_ca_file` mTLS (every client must
/// present a certificate that CA signed). The files are re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {}: {source}", file.display())]
    Read {
        key: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {} holds no PEM {what}", file.display())]
    Empty { key: &'static str, file: PathBuf, what: &'static str },
    #[error("{key}: {} is not valid PEM: {source}", file.display())]
    Pem {
        key: &'static str,
        file: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key}: {source}")]
    Rustls {
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("grpc_tls.client_ca_file: {0}")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
}

impl TlsError {
    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::Empty { key, .. } | TlsError::Pem { key, .. } => key,
            TlsError::Rustls { key, .. } => key,
            TlsError::ClientCa(_) => "grpc_tls.client_ca_file",
        }
    }
}

/// The bytes of the configured files, to notice a change.
#[derive(PartialEq, Eq)]
struct Files(Vec<u8>, Vec<u8>, Option<Vec<u8>>);

fn read(key: &'static str, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read { key, file: file.to_owned(), source })
}

fn read_files(tls: &GrpcTlsConfig) -> Result<Files, TlsError> {
    Ok(Files(
        read("grpc_tls.cert_file", &tls.cert_file)?,
        read("grpc_tls.key_file", &tls.key_file)?,
        tls.client_ca_file.as_deref().map(|f| read("grpc_tls.client_ca_file", f)).transpose()?,
    ))
}

fn certs(key: &'static str, file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|source| TlsError::Pem {
        key,
        file: file.to_owned(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { key, file: file.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

fn build(tls: &GrpcTlsConfig, files: &Files) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs("grpc_tls.cert_file", &tls.cert_file, &files.0)?;
    let key = PrivateKeyDer::from_pem_slice(&files.1).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { key: "grpc_tls.key_file", file: tls.key_file.clone(), what: "private key" }
        }
        source => TlsError::Pem { key: "grpc_tls.key_file", file: tls.key_file.clone(), source },
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { key: "grpc_tls", source })?;
    let builder = match (&tls.client_ca_file, &files.2) {
        (Some(file), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("grpc_tls.client_ca_file", file, pem)? {
                roots.add(cert).map_err(|source| TlsError::Rustls { key: "grpc_tls.client_ca_file", source })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(TlsError::ClientCa)?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    // `with_single_cert` also checks that the key belongs to the certificate.
    let mut config =
        builder.with_single_cert(chain, key).map_err(|source| TlsError::Rustls { key: "grpc_tls.key_file", source })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Reads and checks the configured files (config validation and start-up).
pub fn server_config(tls: &GrpcTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    build(tls, &read_files(tls)?)
}

/// The current TLS config of the gRPC listener, replaced on rotation.
pub struct Certificates {
    metrics: Metrics,
    tls: GrpcTlsConfig,
    current: ArcSwap<ServerConfig>,
    files: std::sync::Mutex<Files>,
}

impl Certificates {
    /// The certificates `tls` names; their later reloads are counted in `metrics`.
    pub fn load(tls: &GrpcTlsConfig, metrics: &Metrics) -> Result<Arc<Self>, TlsError> {
        let files = read_files(tls)?;
        let config = build(tls, &files)?;
        Ok(Arc::new(Certificates {
            metrics: metrics.clone(),
            tls: tls.clone(),
            current: ArcSwap::new(config),
            files: std::sync::Mutex::new(files),
        }))
    }

    /// Re-reads the files; a changed, valid set becomes the config for new connections. An
    /// invalid one is logged (naming the key) and the previous certificates keep serving.
    pub fn reload(&self) {
        let files = match read_files(&self.tls) {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(key = error.key(), %error, "TLS files unreadable; keeping the current certificates");
                self.metrics.tls_reload(false);
                return;
            }
        };
        let mut last = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if *last == files {
            return;
        }
        match build(&self.tls, &files) {
            Ok(config) => {
                self.current.store(config);
                *last = files;
                tracing::info!(cert_file = %self.tls.cert_file.display(), "TLS certificates reloaded");
                self.metrics.tls_reload(true);
            }
            Err(error) => {
                tracing::warn!(key = error.key(), %error, "new TLS files refused; keeping the current certificates");
                self.metrics.tls_reload(false);
            }
        }
    }

    /// Reloads every `TLS_RELOAD_INTERVAL` and on SIGHUP, until dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TLS_RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {}
            }
            self.reload();
        }
    }

    /// Accepts TCP connections and completes each TLS handshake in its own task (a slow
    /// client never holds up the others), yielding the established streams.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(error) => {
                            tracing::warn!(%error, "gRPC accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let _ = stream.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(error)) => tracing::info!(%peer, %error, "gRPC TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "gRPC TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}
