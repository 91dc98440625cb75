//! The `hopauth` binary: command-line parsing and start-up only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hopauth::config::Config;
use hopauth_service::background::run_server;

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
        /// Async runtime worker threads (default: one per CPU). As a sidecar next to Envoy,
        /// 1 often gives the most Checks per CPU second; see docs/performance.md.
        #[arg(long, env = "HOPAUTH_WORKER_THREADS")]
        worker_threads: Option<usize>,
    },
    /// Validate a config file and print it with every default filled in; exit 1 on errors.
    CheckConfig {
        /// Config file (YAML) to check.
        #[arg(long, short, env = "HOPAUTH_CONFIG")]
        config: PathBuf,
    },
    /// Write a revocation to Redis directly (every hopauth on that Redis enforces it).
    ///
    /// One token: `--jti ID --exp UNIX_SECONDS`. Every token of a subject issued at or
    /// before a time: `--iss ISSUER --sub SUBJECT [--before UNIX_SECONDS]` (default: now plus
    /// the issuer's `leeway`, 30 s without a config, to cover clock skew).
    Revoke {
        /// Redis URL (`redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://`).
        #[arg(long, env = "HOPAUTH_REDIS_URL", required_unless_present = "config")]
        redis_url: Option<String>,
        /// Take `revocation.redis_url` and `max_token_lifetime` from this config.
        #[arg(long, short, env = "HOPAUTH_CONFIG")]
        config: Option<PathBuf>,
        /// Revoke the one token with this `jti` (needs `--exp`).
        #[arg(long, requires = "exp", conflicts_with_all = ["sub", "iss", "before"])]
        jti: Option<String>,
        /// The token's `exp`: the revocation lasts until then.
        #[arg(long)]
        exp: Option<i64>,
        /// Revoke every token of this subject (`sub`) issued at or before `--before` (needs `--iss`).
        #[arg(long, requires = "iss", required_unless_present = "jti")]
        sub: Option<String>,
        /// The subject's issuer (`iss`), exactly as in its tokens.
        #[arg(long, requires = "sub")]
        iss: Option<String>,
        /// Unix seconds: tokens of the subject with `iat` at or before it are refused
        /// (default: now plus the issuer's leeway).
        #[arg(long)]
        before: Option<i64>,
    },
    /// The reference authentication service: login, rotating refresh tokens, logout, JWKS.
    ///
    /// `hopauth issuer --config issuer.yaml` is `hopauth issuer serve --config issuer.yaml`.
    /// See docs/issuer.md.
    #[command(args_conflicts_with_subcommands = true)]
    Issuer {
        /// Issuer config file (YAML); serves when no subcommand is given.
        #[arg(long, short, env = "HOPAUTH_ISSUER_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<IssuerCommand>,
    },
}

#[derive(Subcommand)]
enum IssuerCommand {
    /// Serve the token, revocation, logout, JWKS and discovery endpoints.
    Serve {
        /// Issuer config file (YAML).
        #[arg(long, short, env = "HOPAUTH_ISSUER_CONFIG")]
        config: PathBuf,
    },
    /// Validate an issuer config and its users file; exit 1 on errors.
    CheckConfig {
        /// Issuer config file (YAML) to check.
        #[arg(long, short, env = "HOPAUTH_ISSUER_CONFIG")]
        config: PathBuf,
    },
    /// Read a password from stdin (first line) and print its argon2id PHC string.
    HashPassword {
        /// Read without a prompt, even from a terminal (scripts: `echo -n pw | …`).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Rotate the signing keys: next becomes active, active retiring, a new next is made.
    /// A running issuer picks it up within `keys.reload_interval`.
    RotateKeys {
        /// Issuer config file (YAML) whose `keys.dir` is rotated.
        #[arg(long, short, env = "HOPAUTH_ISSUER_CONFIG")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, not in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Issuer { config, command } => issuer(config, command),
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                use std::io::Write;
                let text =
                    format!("# {}: valid\n{}", config.display(), serde_yaml_ng::to_string(&c).unwrap_or_default());
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = std::io::stdout().write_all(text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Revoke { redis_url, config, jti, exp, sub, iss, before } => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let request = hopauth::revoke::RevokeRequest { redis_url, config, jti, exp, sub, iss, before };
            match runtime.block_on(hopauth::revoke::revoke(request)) {
                Ok(done) => {
                    println!("{done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hopauth revoke: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config: path, worker_threads } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            hopauth::server::log_start(&path, &config);
            run_server(worker_threads, || async move {
                let mut running = hopauth::server::start(config).await?;
                running.reload_on_hangup(path)?;
                anyhow::Ok(running.background)
            })
        }
    }
}

fn issuer(config: Option<PathBuf>, command: Option<IssuerCommand>) -> ExitCode {
    use hopauth_issuer::config::IssuerConfig;
    let load = |path: &std::path::Path| IssuerConfig::load(path).map_err(|e| eprintln!("{e}")).ok();
    match (command, config) {
        (Some(IssuerCommand::HashPassword { password_stdin }), _) => {
            use std::io::{BufRead, IsTerminal};
            if !password_stdin && std::io::stdin().is_terminal() {
                eprint!("password (echoed): ");
            }
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("cannot read the password from stdin: {e}");
                return ExitCode::FAILURE;
            }
            match hopauth_issuer::users::hash_password(line.trim_end_matches(['\r', '\n'])) {
                Ok(phc) => {
                    println!("{phc}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hopauth issuer hash-password: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(IssuerCommand::RotateKeys { config }), _) => {
            let Some(c) = load(&config) else { return ExitCode::FAILURE };
            match hopauth_issuer::rotate_keys(&c) {
                Ok(r) => {
                    println!(
                        "active {} (signing), next {} (published), retiring {:?}, removed {:?}",
                        r.active, r.next, r.retiring, r.removed
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hopauth issuer rotate-keys: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(IssuerCommand::CheckConfig { config }), _) => {
            let Some(c) = load(&config) else { return ExitCode::FAILURE };
            match hopauth_issuer::users::UserDb::load(&c.users_file) {
                Ok(users) => {
                    println!("# {}: valid ({} users in {})", config.display(), users.len(), c.users_file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(IssuerCommand::Serve { config }), _) | (None, Some(config)) => {
            let Some(c) = load(&config) else { return ExitCode::FAILURE };
            run_server(None, || async move { hopauth_issuer::start(c).await.map(|r| r.background) })
        }
        (None, None) => {
            eprintln!(
                "hopauth issuer: give --config FILE (or a subcommand: serve, check-config, hash-password, rotate-keys)"
            );
            ExitCode::FAILURE
        }
    }
}
