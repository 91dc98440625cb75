//! The `hopauth` binary: command-line parsing and start-up only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hopauth::config::Config;

#[derive(Parser)]
#[command(
    name = "hopauth",
    version,
    about = "Envoy ext_authz server: verifies the caller's JWT on every hop",
    long_about = "Envoy ext_authz server: verifies the caller's JWT on every hop.\n\n\
    Envoy's ext_authz filter calls hopauth over gRPC for each request; hopauth checks the bearer token \
    against cached JWKS keys and a revocation store and answers allow (with identity headers) or deny \
    (RFC 6750). See docs/configuration.md for every config key."
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC server and the HTTP side port.
    Serve {
        /// Config file (YAML).
        #[arg(long, short, env = "HOPAUTH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print it with every default filled in; exit 1 on errors.
    CheckConfig {
        #[arg(long, short, env = "HOPAUTH_CONFIG")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!("# {}: valid", config.display());
                print!("{}", serde_yaml_ng::to_string(&c).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                match hopauth::server::start(config).await {
                    Ok(running) => {
                        tokio::select! {
                            _ = shutdown_signal() => tracing::info!("shutting down"),
                            _ = running.stopped() => {}
                        }
                        running.shutdown().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
