//! A service of the token-propagation chain (client → gateway → A → B → C, each service
//! behind its own Envoy sidecar consulting hopauth).
//!
//! ```sh
//! cargo run --example chain_service -- --name C --listen 127.0.0.1:8083
//! cargo run --example chain_service -- --name B --listen 127.0.0.1:8082 \
//!     --next http://127.0.0.1:10011/chain      # B's sidecar outbound listener → C
//! ```
//!
//! Every flag can also come from the environment: `CHAIN_NAME`, `CHAIN_LISTEN`,
//! `CHAIN_NEXT`. The service listens on loopback behind its sidecar; on GET it calls
//! `--next` (if given) with the incoming `Authorization` header and answers JSON with its
//! name, the identity headers its sidecar set, and the next service's answer nested.
//! `tests/chain.rs` builds the whole chain from the same code (`chain/service.rs`).

use hopauth_testkit::chain_service as service;

use std::process::ExitCode;

use service::ChainConfig;

const USAGE: &str = "usage: chain_service --name NAME [--listen ADDR] [--next URL]";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[tokio::main]
async fn main() -> ExitCode {
    let mut name = std::env::var("CHAIN_NAME").ok();
    let mut listen = std::env::var("CHAIN_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_string());
    let mut next = std::env::var("CHAIN_NEXT").ok().filter(|n| !n.is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--name", Some(v)) => name = Some(v),
            ("--listen", Some(v)) => listen = v,
            ("--next", Some(v)) => next = Some(v),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("{name} listening on {listen}, next: {}", next.as_deref().unwrap_or("(end of chain)"));
    match service::serve(listener, ChainConfig { name, next }).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("server error: {error}");
            ExitCode::FAILURE
        }
    }
}
