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
            let target = RevokeTarget { redis_url, config, jti, exp, sub, iss, before };
            match runtime.block_on(revoke(target)) {
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
            log_start(&path, &config);
            run_server(worker_threads, || async move {
                let mut running = hopauth::server::start(config).await?;
                running.reload_on_hangup(path)?;
                anyhow::Ok(running.background)
            })
        }
    }
}

/// The start-up line: what runs, from which file, trusting whom.
fn log_start(path: &std::path::Path, config: &Config) {
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            let jwks = match &p.jwks {
                Some(j) if j.uri.is_some() => "uri",
                Some(j) if j.file.is_some() => "file",
                Some(_) => "discovery",
                None => "none (HMAC only)",
            };
            format!("{} (issuer {}, jwks {jwks})", p.name, p.issuer)
        })
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        providers = %providers.join(", "),
        revocation = ?config.revocation.backend,
        tracing = config.tracing.is_some(),
        "hopauth starting"
    );
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

/// A revocation write error, in one line when the address answered but not as Redis (an
/// HTTP port, a database of another kind), instead of the client's repeated parse errors.
fn not_redis(url: &str, e: hopauth_core::revocation::RevocationError) -> anyhow::Error {
    let chain = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| e.source());
    let protocol = chain
        .filter_map(|e| e.downcast_ref::<redis::RedisError>())
        .any(|r| matches!(r.kind(), redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType))
        || e.to_string().contains("Parse error");
    if protocol {
        let shown = hopauth::config::redact_url(url);
        anyhow::anyhow!("{shown} answered, but not as Redis: check the host and port (an HTTP port, perhaps?)")
    } else {
        e.into()
    }
}

struct RevokeTarget {
    redis_url: Option<String>,
    config: Option<PathBuf>,
    jti: Option<String>,
    exp: Option<i64>,
    sub: Option<String>,
    iss: Option<String>,
    before: Option<i64>,
}

/// Writes one revocation through the Redis backend and says what it wrote.
async fn revoke(t: RevokeTarget) -> anyhow::Result<String> {
    use anyhow::Context;
    use hopauth::revocation::redis::{jti_key, subject_key, RedisSettings, RedisStore};
    use hopauth_core::revocation::RevocationStore;

    let defaults = hopauth::config::RevocationConfig::default();
    let (url, revocation, config) = match (&t.redis_url, &t.config) {
        (Some(url), _) => (url.clone(), defaults, None),
        (None, Some(path)) => {
            let c = Config::load(path)?;
            let url = c.revocation.resolved_redis_url().map_err(anyhow::Error::msg)?.with_context(|| {
                format!(
                    "{}: revocation.redis_url is not set (the memory backend cannot be written from outside)",
                    path.display()
                )
            })?;
            (url, c.revocation.clone(), Some(c))
        }
        (None, None) => anyhow::bail!("give --redis-url or --config"),
    };
    let settings = RedisSettings {
        max_staleness: revocation.max_staleness,
        max_token_lifetime: revocation.max_token_lifetime,
        connect_timeout: revocation.connect_timeout,
        command_timeout: revocation.command_timeout,
    };
    let store = RedisStore::new(&url, settings, hopauth::metrics::Metrics::standalone().revocation().clone())?;
    let now = hopauth_core::clock::unix_now();
    if let Some(jti) = &t.jti {
        let exp = t.exp.context("--jti needs --exp")?;
        store.revoke_jti(jti, exp).await.map_err(|e| not_redis(&url, e))?;
        Ok(format!("revoked jti {jti:?} until {exp}: SET {} 1 EX {}", jti_key(jti), exp - now))
    } else {
        let (iss, sub) = (t.iss.context("--sub needs --iss")?, t.sub.context("--iss needs --sub")?);
        // `iat` is the issuer's clock: cover the skew its provider allows (the default leeway
        // when no config says which).
        let skew = config
            .as_ref()
            .and_then(|c| c.providers.iter().find(|p| p.issuer == iss))
            .map_or(hopauth::config::DEFAULT_LEEWAY, |p| p.leeway);
        let before = t.before.unwrap_or(now + skew.as_secs() as i64);
        store.revoke_subject(&iss, &sub, before).await.map_err(|e| not_redis(&url, e))?;
        Ok(format!(
            "revoked every token of {sub:?} from {iss:?} issued at or before {before}: SET {} {before} EX {}",
            subject_key(&iss, &sub),
            revocation.max_token_lifetime.as_secs()
        ))
    }
}

/// Builds the runtime, starts a server, runs it until SIGINT/SIGTERM (or its own stop) and
/// shuts it down cleanly.
fn run_server<F, E>(worker_threads: Option<usize>, start: impl FnOnce() -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<hopauth_service::Background, E>>,
    E: std::fmt::Display,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match start().await {
            Ok(background) => {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutting down"),
                    _ = background.stopped() => {}
                }
                background.shutdown().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
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
