//! OIDC discovery for an `https` issuer (a real TLS server on loopback): a certificate no
//! trusted CA signed, and a discovery document that moves `jwks_uri` to `http://`, are each
//! refused and counted as a failed refresh, and the last good keys stay; the http endpoint
//! is never fetched. A binary of its own: it
//! points `SSL_CERT_FILE` at the test CA (crates/hopauth/tests/fixtures/tls) before any thread runs.

use hopauth_testkit as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopauth_core::alg::Alg;
use hopauth_core::sign::SigningKey;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A tiny HTTPS server: discovery naming `jwks_uri`, and the JWKS (500 while `failing`);
/// it presents an untrusted certificate while `bad_cert`.
struct TlsIdp {
    issuer: String,
    jwks_uri: Arc<Mutex<String>>,
    failing: Arc<AtomicBool>,
    bad_cert: Arc<AtomicBool>,
}

/// A TLS acceptor presenting `tests/fixtures/tls/<name>.pem` and its key.
fn acceptor(name: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = repo_root().join("crates/hopauth/tests/fixtures/tls");
    let certs = vec![CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn start_tls_idp(jwks: serde_json::Value) -> TlsIdp {
    let (trusted, untrusted) = (acceptor("leaf"), acceptor("untrusted"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let idp = TlsIdp {
        issuer: issuer.clone(),
        jwks_uri: Arc::new(Mutex::new(format!("{issuer}/jwks.json"))),
        failing: Arc::new(AtomicBool::new(false)),
        bad_cert: Arc::new(AtomicBool::new(false)),
    };
    let (jwks_uri, failing, bad_cert) = (idp.jwks_uri.clone(), idp.failing.clone(), idp.bad_cert.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = if bad_cert.load(Ordering::SeqCst) { untrusted.clone() } else { trusted.clone() };
            let (jwks, jwks_uri, failing, issuer) = (jwks.clone(), jwks_uri.clone(), failing.clone(), issuer.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body) = match path.as_str() {
                    "/.well-known/openid-configuration" => {
                        let uri = jwks_uri.lock().unwrap().clone();
                        ("200 OK", json!({"issuer": issuer, "jwks_uri": uri}).to_string())
                    }
                    "/jwks.json" if failing.load(Ordering::SeqCst) => ("500 Internal Server Error", "down".into()),
                    "/jwks.json" => ("200 OK", jwks.to_string()),
                    _ => ("404 Not Found", String::new()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    idp
}

fn errors(running: &hopauth::server::Running) -> u64 {
    let want = r#"hopauth_jwks_refresh_total{provider="tls",result="error"} "#;
    running.metrics.render().lines().find_map(|l| l.strip_prefix(want)?.parse().ok()).unwrap_or(0)
}

#[test]
fn an_https_issuer_refuses_an_untrusted_cert_and_a_downgraded_jwks_uri() {
    // Set while this is the only thread: nothing can read the environment concurrently.
    std::env::set_var("SSL_CERT_FILE", repo_root().join("crates/hopauth/tests/fixtures/tls/ca.pem"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let good = SigningKey::generate(Alg::ES256, "k-1").unwrap();
        let idp = start_tls_idp(jwks_of(&[&good])).await;
        // The attacker on the path serves its own key under the same kid, over plain http.
        let evil = SigningKey::generate(Alg::ES256, "k-1").unwrap();
        let attacker = JwksServer::start(jwks_of(&[&evil]), &idp.issuer).await;

        let main = JwksServer::start(Keys::generate().jwks(), ISSUER).await;
        let extra = format!(
            "  - name: tls\n    issuer: {}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    jwks: {{ discovery: true, refresh_interval: 1s }}\n",
            idp.issuer
        );
        let running = start_hopauth(&config_yaml(&main.url(), &extra, "")).await;
        wait_ready(&running).await;
        let token = |key: &SigningKey| {
            let mut c = claims("alice");
            c["iss"] = idp.issuer.clone().into();
            key.sign_jwt(&c).unwrap()
        };
        let verifier = running.authorizer.verifier();
        assert!(verifier.verify_uncached(&token(&good), now(), None).await.is_ok(), "keys over TLS");

        // A certificate no trusted CA signed: a failed refresh, the last good keys stay.
        idp.bad_cert.store(true, Ordering::SeqCst);
        let (client, url) = (hopauth::jwks::http_client(), format!("{}/jwks.json", idp.issuer));
        let direct = hopauth::jwks::fetch(&client, &url, Duration::from_secs(2), 64 * 1024);
        let err = direct.await.unwrap_err();
        let cause = hopauth::jwks::ErrorChain(&err).to_string();
        assert!(cause.contains("certificate"), "the root cause is named: {cause}");
        let before = errors(&running);
        wait_until("a refused certificate", Duration::from_secs(10), || async { errors(&running) >= before + 2 }).await;
        assert!(verifier.verify_uncached(&token(&good), now(), None).await.is_ok(), "last good keys kept");
        idp.bad_cert.store(false, Ordering::SeqCst);

        // The JWKS fails once (so discovery runs again) and the document now says http://.
        *idp.jwks_uri.lock().unwrap() = attacker.url();
        idp.failing.store(true, Ordering::SeqCst);
        let before = errors(&running);
        wait_until("a failed refresh", Duration::from_secs(10), || async { errors(&running) > before }).await;
        idp.failing.store(false, Ordering::SeqCst);
        let failed = errors(&running);
        wait_until("the downgraded discovery to be refused", Duration::from_secs(10), || async {
            errors(&running) >= failed + 2
        })
        .await;
        assert_eq!(attacker.hits(), 0, "the http jwks_uri was fetched");
        assert!(verifier.verify_uncached(&token(&evil), now(), None).await.is_err(), "the injected key verifies");
        assert!(verifier.verify_uncached(&token(&good), now(), None).await.is_ok(), "last good keys kept");
    });
}
