//! Wiring: one process runs the proxy listener, the admin listener and the
//! control task on one tokio runtime, sharing the router and telemetry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::Config;
use crate::control::report::ReportStore;
use crate::control::state::StateError;
use crate::control::tripwire::PaymentTrip;
use crate::control::{ControlHandle, Controller};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::routing::{RouteTable, Router};
use crate::server::{self, Limits};
use crate::stats::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cookie secret {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Knobs that are not config: how the process presents itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Print every gate report to stdout (the demo does).
    pub echo_reports: bool,
}

/// A running rollgate.
pub struct App {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub control: ControlHandle,
    pub telemetry: Arc<Telemetry>,
    pub router: Arc<Router>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shadow_task: Option<JoinHandle<()>>,
}

const SECRET_FILE: &str = "cookie_secret";

/// The configured `rg_bucket` key, or one generated once and kept in `state_dir`
/// so cookies stay valid across restarts.
fn cookie_secret(cfg: &Config) -> Result<Vec<u8>, StartError> {
    if let Some(s) = &cfg.routing.cookie_secret {
        return Ok(s.clone());
    }
    let path = cfg.server.state_dir.join(SECRET_FILE);
    let err = |source| StartError::Secret {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(err(std::io::Error::other(
                "file is shorter than 32 characters",
            )))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, secret.as_bytes()).map_err(err)?;
    Ok(secret.into_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

impl App {
    pub async fn start(cfg: Config) -> Result<App, StartError> {
        Self::start_with(cfg, Options::default()).await
    }

    pub async fn start_with(cfg: Config, opts: Options) -> Result<App, StartError> {
        std::fs::create_dir_all(&cfg.server.state_dir).map_err(|source| StateError::Io {
            path: cfg.server.state_dir.clone(),
            source,
        })?;
        let cfg = Arc::new(cfg);
        let secret = cookie_secret(&cfg)?;
        let telemetry = Arc::new(Telemetry::with_layout(
            cfg.journeys.len(),
            cfg.beacons.names.len(),
            cfg.routing.region_labels.len(),
            cfg.server.telemetry,
        ));
        let router = Arc::new(Router::new(RouteTable::default()));
        let trip = Arc::new(PaymentTrip::new(
            cfg.rollout.consecutive_payment_failures,
            router.clone(),
        ));
        let metrics = Arc::new(Metrics::new());
        let (mut controller, control, rx) = Controller::new(
            cfg.clone(),
            telemetry.clone(),
            router.clone(),
            trip.clone(),
            metrics.clone(),
        )?;
        controller.echo_reports = opts.echo_reports;

        let proxy_listener = bind("server.listen", cfg.server.listen).await?;
        let admin_listener = bind("server.admin_listen", cfg.server.admin_listen).await?;
        let proxy_addr = proxy_listener.local_addr().expect("bound");
        let admin_addr = admin_listener.local_addr().expect("bound");

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let limits = Limits {
            max_header_bytes: cfg.server.max_header_bytes,
            ..Limits::default()
        };

        let (shadow, shadow_worker) =
            match crate::proxy::shadow::Shadow::new(&cfg, telemetry.clone()) {
                Some((s, w)) => (Some(s), Some(w)),
                None => (None, None),
            };
        let proxy = Arc::new(Proxy::new(
            &cfg,
            &secret,
            router.clone(),
            telemetry.clone(),
            trip,
            shadow,
            false,
        ));
        let admin = Arc::new(Admin {
            control: control.clone(),
            metrics,
            telemetry: telemetry.clone(),
            journeys: cfg.journeys.clone(),
            beacon_names: cfg.beacons.names.clone(),
            token: std::env::var("ROLLGATE_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| cfg.server.admin_token.clone()),
            reports: ReportStore::new(&cfg.server.state_dir),
        });
        if admin.token.is_none() {
            tracing::warn!("no admin token configured: every mutating admin call will be refused");
        }

        let tasks = vec![
            tokio::spawn(server::serve(
                proxy_listener,
                limits,
                move |req, peer| proxy.clone().handle(req, peer),
                stop(shutdown_rx.clone()),
            )),
            tokio::spawn(server::serve(
                admin_listener,
                limits,
                move |req, _| admin.clone().handle(req),
                stop(shutdown_rx.clone()),
            )),
            tokio::spawn(controller.run(rx, shutdown_rx)),
        ];
        // Mirrors in flight are not drained at shutdown: their answers are
        // discarded anyway, and a slow V2 must not delay the exit.
        let shadow_task = shadow_worker.map(|w| tokio::spawn(w.run()));
        tracing::info!(%proxy_addr, %admin_addr, "rollgate started");
        Ok(App {
            proxy_addr,
            admin_addr,
            control,
            telemetry,
            router,
            shutdown,
            tasks,
            shadow_task,
        })
    }

    /// Stops accepting, drains in-flight requests, persists state.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(t) = self.shadow_task {
            t.abort();
        }
    }
}
