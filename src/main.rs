use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use rollgate::config::RuntimeMode;
use rollgate::{App, Config};

#[derive(Parser)]
#[command(
    name = "rollgate",
    version,
    about = "Canary edge proxy with an automatic rollout controller"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve: proxy, admin API and controller.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-evaluate the recorded evaluations (state_dir/evaluations.jsonl)
    /// under another config and print where the decisions would differ.
    Replay {
        /// The config to try (its gates, thresholds, bands and window).
        #[arg(long)]
        config: PathBuf,
        /// Only ticks at or after this time (RFC 3339, e.g. 2026-11-23T09:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Where the records are; default: the config's `server.state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print the differences as JSON.
        #[arg(long)]
        json: bool,
        /// Judge under this method (`sequential` or `window`) whatever the
        /// config says: the same recording, both judges.
        #[arg(long)]
        method: Option<rollgate::config::Method>,
    },
    /// Self-contained showcase: demo apps, synthetic users and a compressed rollout.
    Demo {
        /// Make V2 misbehave; the run must then end rolled back by the matching trigger.
        #[arg(long, value_enum)]
        canary_fault: Option<rollgate::demo::Fault>,
        /// Synthetic users.
        #[arg(long, default_value_t = 800)]
        users: usize,
        /// Total request rate of the users, per second.
        #[arg(long, default_value_t = 700.0)]
        rate: f64,
    },
    /// Admin API commands (status, weights, approve, pause, ...): see src/cli/.
    #[command(flatten)]
    Admin(rollgate::cli::AdminCmd),
}

fn init_logs(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Warnings clients can cause inside h2/hyper/rustls: one per site per 10 s.
    let quiet = rollgate::edge::log_limit::LibraryWarnings;
    match format {
        LogFormat::Human => b.finish().with(quiet).init(),
        LogFormat::Json => b.json().finish().with(quiet).init(),
    }
}

/// Loads a config for `run` or a SIGHUP reload; its warnings
/// ([`Config::warnings`]) go to the log and the config is used anyway.
fn load_logging_warnings(path: &std::path::Path) -> Result<Config, rollgate::config::ConfigError> {
    let cfg = Config::load(path)?;
    for w in cfg.warnings() {
        tracing::warn!(config = %path.display(), "{w}");
    }
    Ok(cfg)
}

/// The main runtime. In `per_core` mode it is single-threaded and hosts only
/// the control plane (admin API, controller, shadow queue): every proxy
/// worker brings its own thread and runtime.
fn runtime(mode: RuntimeMode, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match mode {
        RuntimeMode::PerCore => tokio::runtime::Builder::new_current_thread(),
        RuntimeMode::Shared => tokio::runtime::Builder::new_multi_thread(),
    };
    if mode == RuntimeMode::Shared && workers > 0 {
        b.worker_threads(workers);
    }
    b.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story on stdout; keep the logs for problems.
    let level = if matches!(cli.cmd, Cmd::Demo { .. } | Cmd::Admin(_)) {
        "warn"
    } else {
        "info"
    };
    init_logs(cli.log_format, level);
    match cli.cmd {
        Cmd::Admin(cmd) => ExitCode::from(rollgate::cli::run(cmd)),
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {}: {w}", config.display());
                }
                println!(
                    "{}: ok ({} journeys, {} phases)",
                    config.display(),
                    c.journeys.len() - 1,
                    c.rollout.phases.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Demo {
            canary_fault,
            users,
            rate,
        } => {
            let rt = match runtime(RuntimeMode::Shared, 0) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = rollgate::demo::DemoOptions {
                fault: canary_fault,
                users,
                rate,
                ..Default::default()
            };
            match rt.block_on(rollgate::demo::run(opts)) {
                Ok(ending) => {
                    println!("{ending}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Replay {
            config,
            from,
            state_dir,
            json,
            method,
        } => replay(&config, from.as_deref(), state_dir, json, method),
        Cmd::Run { config } => {
            let cfg = match load_logging_warnings(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match runtime(cfg.server.runtime, cfg.server.workers) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                let app = match App::start(cfg).await {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                serve_until_terminated(&app, &config).await;
                tracing::info!("shutting down: draining connections");
                app.shutdown().await;
                ExitCode::SUCCESS
            })
        }
    }
}

fn replay(
    config: &std::path::Path,
    from: Option<&str>,
    dir: Option<PathBuf>,
    json: bool,
    method: Option<rollgate::config::Method>,
) -> ExitCode {
    let mut cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let from = match from.map(chrono::DateTime::parse_from_rfc3339).transpose() {
        Ok(t) => t.map(|t| t.with_timezone(&chrono::Utc)),
        Err(e) => {
            eprintln!("error: --from: {e} (use RFC 3339, e.g. 2026-11-23T09:00:00Z)");
            return ExitCode::from(2);
        }
    };
    if let Some(m) = method {
        cfg.gates.method = m;
    }
    let dir = dir.unwrap_or_else(|| cfg.server.state_dir.clone());
    let records = match rollgate::control::replay::load(&dir) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => {
            eprintln!(
                "error: no evaluation records in {}",
                dir.join(rollgate::control::replay::EVALUATIONS_FILE)
                    .display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let report = rollgate::control::replay::replay(&cfg, &records, from);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        print!("{}", report.text());
    }
    ExitCode::SUCCESS
}

/// Waits for SIGTERM/SIGINT; on SIGHUP re-reads and validates the config file
/// and applies it, keeping the running config when the new one is invalid.
async fn serve_until_terminated(app: &App, path: &std::path::Path) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => match load_logging_warnings(path) {
                    Err(e) => tracing::error!(error = %e, "reload refused: invalid config, keeping the running one"),
                    Ok(cfg) => {
                        if let Err(e) = app.reload(cfg).await {
                            tracing::error!(error = %e, "reload refused, keeping the running config");
                        }
                    }
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (app, path);
        let _ = tokio::signal::ctrl_c().await;
    }
}
