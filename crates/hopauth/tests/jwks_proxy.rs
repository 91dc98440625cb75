//! The JWKS client never goes through a proxy named by the environment (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY`): a proxy between hopauth and its IdP could hand it any key.
//! A binary of its own: it sets process-wide environment variables, before any thread runs.

use hopauth_testkit as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

#[test]
fn the_jwks_client_ignores_proxy_environment_variables() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    // Set while this is the only thread: nothing can read the environment concurrently.
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(var, &proxy_url);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(var);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        proxy.set_nonblocking(true).unwrap();
        let proxy = tokio::net::TcpListener::from_std(proxy).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = proxy.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });

        let keys = Keys::generate();
        let jwks = JwksServer::start(keys.jwks(), ISSUER).await;
        let client = hopauth::jwks::http_client();
        let t = Duration::from_secs(2);
        let fetched = hopauth::jwks::fetch(&client, &jwks.url(), t, 64 * 1024).await;
        assert!(fetched.is_ok(), "fetched directly, not through {proxy_url}: {:?}", fetched.err());
        // An https URL (the server speaks plain HTTP, so this fails), and not via CONNECT.
        let https = format!("https://{}/jwks.json", jwks.addr);
        assert!(hopauth::jwks::fetch(&client, &https, t, 64 * 1024).await.is_err());

        // hopauth itself gets its keys directly.
        let running = start_hopauth(&config_yaml(&jwks.url(), "", "")).await;
        wait_ready(&running).await;
        assert_eq!(connections.load(Ordering::SeqCst), 0, "a request went through the proxy");
        assert!(jwks.hits() >= 2);
    });
}
