//! `make up`: the system kept running, with its URLs, a fresh token and ready-made `curl`s
//! printed, until Ctrl-C; the in-process services log to a file.

use hopauth_testkit::ADMIN_TOKEN;

use crate::checks::revoke_body;
use crate::output::{bold, dim, green};
use crate::system::System;
use crate::Mode;

/// The log file of the in-process hopauths and issuer under `make up`.
fn up_log_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hopauth-up-{}.log", std::process::id()))
}

/// Sends the in-process services' logs to `up_log_path()` (`make up` keeps the terminal for
/// the instructions). Failing that, they are not written, and the path says so.
pub(crate) fn log_to_file() -> Option<std::path::PathBuf> {
    let path = up_log_path();
    let file = std::fs::File::create(&path).ok()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .ok()?;
    Some(path)
}

pub(crate) async fn run_up(sys: System, log: Option<std::path::PathBuf>) -> i32 {
    let login = sys.login("alice", "alice-pw").await;
    println!();
    println!("{}", green(bold("The system is up. Explore it; Ctrl-C stops everything.")));
    if login.status == 200 {
        let gw = sys.chain.gateway_url("/chain");
        println!();
        println!("  {}", bold("A fresh token for alice (5 minutes) and a call through A → B → C:"));
        println!("    export TOKEN={}", login.access());
        println!("    export RT={}", login.refresh());
        println!("    curl -s {gw} -H \"authorization: Bearer $TOKEN\"");
        println!(
            "    curl -s {} -H \"authorization: Bearer $TOKEN\"   {}",
            sys.chain.gateway_url("/admin"),
            dim("# 403")
        );
        println!(
            "    curl -s {} -H \"authorization: Bearer $TOKEN\"   {}",
            sys.chain.hops[1].url("/chain"),
            dim("# B directly")
        );
    }
    let iss = sys.issuer_url("");
    println!();
    println!("  {}", bold("Issuer (users alice, bob, carol, dave, erin, frank, mallory; password <name>-pw):"));
    println!("    curl -s {iss}/token -d grant_type=password -d username=alice -d password=alice-pw");
    println!("    curl -s {iss}/token -d grant_type=refresh_token -d refresh_token=\"$RT\"");
    println!("    curl -s {iss}/revoke -d token=\"$TOKEN\"");
    println!("    curl -s -X POST {iss}/logout -H \"authorization: Bearer $TOKEN\"");
    println!("    curl -s {iss}/.well-known/openid-configuration");
    println!("  {}", bold("hopauth admin API:"));
    println!("    export HOPAUTH_ADMIN_TOKEN={ADMIN_TOKEN}");
    println!(
        "    curl -s -X POST http://{}/admin/revoke -H \"authorization: Bearer $HOPAUTH_ADMIN_TOKEN\" -H 'content-type: application/json' -d '{}'   {}",
        sys.hopauth_of(0).http_addr(),
        revoke_body(login.access()),
        dim("# revokes $TOKEN")
    );
    println!("  {}", bold("Logs (tail -f):"));
    let logged = match sys.mode {
        Mode::ExtAuthz => "# hopauth x4 and the issuer (HOPAUTH_LOG=debug for more)",
        Mode::Module => "# the issuer (each module logs to its Envoy's own log)",
    };
    match &log {
        Some(p) => println!("    {}   {}", p.display(), dim(logged)),
        None => println!("    {}", dim("hopauth and issuer logs could not be opened")),
    }
    println!("    {}   {}", sys.chain.gateway_log.display(), dim("# gateway access log"));
    for hop in &sys.chain.hops {
        println!("    {}   {}", hop.access_log.display(), dim(format!("# {} sidecar access log", hop.name)));
    }
    println!("    {}   {}", sys.chain.gateway.log_path().display(), dim("# gateway Envoy's own log"));
    let code = match tokio::signal::ctrl_c().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot wait for Ctrl-C: {e}");
            1
        }
    };
    println!();
    println!("{}", dim("stopping every process…"));
    sys.shutdown().await;
    println!("{}", green("stopped"));
    code
}
