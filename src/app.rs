//! Wiring: one process runs the proxy workers, the admin listener and the
//! control task, sharing the router and telemetry. In `per_core` mode each
//! proxy worker has a thread of its own and the caller's runtime runs only
//! the control plane; in `shared` mode everything is a task on that runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::{Config, RuntimeMode};
use crate::control::report::ReportStore;
use crate::control::state::StateError;
use crate::control::{ControlHandle, Controller};
use crate::edge::capacity::Capacity;
use crate::edge::forwarded::TrustedProxies;
use crate::edge::server::{self, ConnLimits, Limits};
use crate::edge::tls::Tls;
use crate::edge::Proxy;
use crate::routing::tripwire::PaymentTrip;
use crate::routing::{RouteTable, Router};
use crate::telemetry::prometheus::Metrics;
use crate::telemetry::{Layout, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (`{key}`): the address is already in use (another rollgate, or another server, is listening there)")]
    InUse { key: &'static str, addr: SocketAddr },
    #[error("`server.state_dir` {path}: cannot create or open the directory: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start proxy worker {index} (`server.workers`): {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
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
    /// Called first thing on each `per_core` proxy worker thread, with the
    /// worker's index: where an embedder pins the thread to a CPU or marks it
    /// (the allocation bench counts only on proxy threads).
    pub on_worker_start: Option<fn(usize)>,
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
    live: Arc<ArcSwap<Live>>,
    tls: Option<Tls>,
    secret: Vec<u8>,
    trip: Arc<PaymentTrip>,
    threads: Vec<std::thread::JoinHandle<()>>,
    workers: usize,
    shadow_task: Option<JoinHandle<()>>,
    shadow: Option<crate::edge::shadow::Shadow>,
    capacity: Arc<Capacity>,
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

pub(crate) use crate::edge::Live;

/// Proxy workers: one per core in `per_core` mode, one in `shared` mode.
fn worker_count(cfg: &Config) -> usize {
    match cfg.server.runtime {
        RuntimeMode::Shared => 1,
        RuntimeMode::PerCore if cfg.server.workers > 0 => cfg.server.workers,
        RuntimeMode::PerCore => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Fails when anything already listens on `addr`. The workers' listeners
/// use SO_REUSEPORT, which would let a second rollgate (of the same user)
/// join the first one's port silently and take half its connections; a
/// probe socket without it is refused by the kernel if anyone holds the
/// address. SO_REUSEADDR stays on, so a restart is not refused by the
/// previous process's connections in TIME_WAIT.
fn probe_free(key: &'static str, addr: SocketAddr) -> Result<(), StartError> {
    use socket2::{Domain, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let err = |source| StartError::Bind { key, addr, source };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    match s.bind(&addr.into()) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(StartError::InUse { key, addr }),
        Err(source) => Err(err(source)),
        Ok(()) => Ok(()),
    }
}

/// A listening socket with SO_REUSEPORT, so every worker can bind the same
/// port and the kernel spreads connections over them.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("`rollout.phases` changed ({0}); a running rollout cannot change its phase list: restart with a fresh state_dir to use it")]
    Phases(String),
    #[error("`server.tls` was {0}: switching TLS on or off needs a restart")]
    TlsToggle(&'static str),
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error("the controller is shutting down")]
    Gone,
}

impl App {
    pub async fn start(cfg: Config) -> Result<App, StartError> {
        Self::start_with(cfg, Options::default()).await
    }

    pub async fn start_with(cfg: Config, opts: Options) -> Result<App, StartError> {
        std::fs::create_dir_all(&cfg.server.state_dir).map_err(|source| StartError::StateDir {
            path: cfg.server.state_dir.clone(),
            source,
        })?;
        let tls = match &cfg.server.tls {
            Some(t) => Some(Tls::new(&t.cert, &t.key)?),
            None => None,
        };
        let cfg = Arc::new(cfg);
        let secret = cookie_secret(&cfg)?;
        let telemetry = Arc::new(Telemetry::with_layout(
            Layout::of(&cfg),
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

        let workers = worker_count(&cfg);
        probe_free("server.listen", cfg.server.listen)?;
        let proxy_std =
            reuseport_listener(cfg.server.listen).map_err(|source| StartError::Bind {
                key: "server.listen",
                addr: cfg.server.listen,
                source,
            })?;
        let admin_listener = bind("server.admin_listen", cfg.server.admin_listen).await?;
        let proxy_addr = proxy_std.local_addr().expect("bound");
        let admin_addr = admin_listener.local_addr().expect("bound");

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let limits = Limits {
            max_header_bytes: cfg.server.max_header_bytes,
            header_read_timeout: cfg.server.header_read_timeout,
            drain_timeout: cfg.server.drain_timeout,
            max_connections: cfg.server.max_connections,
            idle_timeout: cfg.server.idle_timeout,
            h2_keepalive_interval: cfg.server.h2_keepalive_interval,
            protocol: cfg.server.protocol,
        };
        // One set of caps for every worker, kept across reloads: the
        // connection caps and V2's reserved capacity count the process, not
        // a worker, and a reload must not forget what is still open.
        let conns = ConnLimits::new(
            cfg.server.max_connections,
            cfg.server.max_connections_per_client,
            TrustedProxies::new(&cfg.server.trusted_proxies),
        );
        let capacity = Capacity::new(cfg.upstreams.reserved_capacity);

        let (shadow, shadow_worker) =
            match crate::edge::shadow::Shadow::new(&cfg, telemetry.clone()) {
                Some((s, w)) => (Some(s), Some(w)),
                None => (None, None),
            };
        let proxies = (0..workers)
            .map(|_| {
                Arc::new(Proxy::new(
                    &cfg,
                    &secret,
                    router.clone(),
                    telemetry.clone(),
                    trip.clone(),
                    shadow.clone(),
                    tls.is_some(),
                    capacity.clone(),
                ))
            })
            .collect();
        let live = Arc::new(ArcSwap::from_pointee(Live {
            config: cfg.clone(),
            telemetry: telemetry.clone(),
            proxies,
        }));
        let admin = Arc::new(Admin {
            control: control.clone(),
            metrics,
            live: live.clone(),
            token: std::env::var("ROLLGATE_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| cfg.server.admin_token.clone()),
            reports: ReportStore::new(&cfg.server.state_dir),
            tick_ms: cfg.rollout.tick.as_millis() as u64,
        });
        if admin.token.is_none() {
            tracing::warn!("no admin token configured: every mutating admin call will be refused");
        }

        // In `per_core` mode every worker gets a thread with a current-thread
        // runtime and its own SO_REUSEPORT listener on the same port, and this
        // runtime keeps only the control plane (admin API, controller, shadow
        // queue). A gate evaluation, a state fsync or a report write then
        // never holds up a proxied request: on one shared thread they did,
        // for the whole tick, on every connection of that worker. In `shared`
        // mode the one worker is a task on this (multi-thread) runtime.
        let serve_here = cfg.server.runtime == RuntimeMode::Shared;
        let bind_err = |source| StartError::Bind {
            key: "server.listen",
            addr: proxy_addr,
            source,
        };
        let mut listeners = vec![proxy_std];
        for _ in 1..workers {
            listeners.push(reuseport_listener(proxy_addr).map_err(bind_err)?);
        }
        let mut threads = Vec::new();
        let mut tasks = Vec::new();
        for (i, std_listener) in listeners.into_iter().enumerate() {
            let (live, tls, rx, conns) = (
                live.clone(),
                tls.clone(),
                shutdown_rx.clone(),
                conns.clone(),
            );
            // One refcount increment per request buys a consistent view of
            // config, telemetry and upstream pool across a reload.
            let handler = move |req, peer| live.load_full().proxies[i].clone().handle(req, peer);
            let serve =
                move |listener| server::serve_tls(listener, tls, limits, conns, handler, stop(rx));
            if serve_here {
                let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
                tasks.push(tokio::spawn(serve(listener)));
                continue;
            }
            // Runtime and listener are set up here, not on the new thread, so
            // a failure is a start error instead of a worker silently missing.
            let worker_err = |source| StartError::Worker { index: i, source };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(worker_err)?;
            let listener = {
                let _in_rt = rt.enter();
                TcpListener::from_std(std_listener).map_err(worker_err)?
            };
            let on_start = opts.on_worker_start;
            let thread = std::thread::Builder::new()
                .name(format!("rollgate-proxy-{i}"))
                .spawn(move || {
                    if let Some(f) = on_start {
                        f(i);
                    }
                    rt.block_on(serve(listener));
                })
                .map_err(worker_err)?;
            threads.push(thread);
        }
        tasks.push(tokio::spawn(server::serve(
            admin_listener,
            limits,
            move |req, _| admin.clone().handle(req),
            stop(shutdown_rx.clone()),
        )));
        tasks.push(tokio::spawn(controller.run(rx, shutdown_rx)));
        // Mirrors in flight are not drained at shutdown: their answers are
        // discarded anyway, and a slow V2 must not delay the exit.
        let shadow_task = shadow_worker.map(|w| tokio::spawn(w.run()));
        tracing::info!(%proxy_addr, %admin_addr, tls = tls.is_some(), "rollgate started");
        Ok(App {
            proxy_addr,
            admin_addr,
            control,
            telemetry,
            router,
            shutdown,
            tasks,
            live,
            tls,
            secret,
            trip,
            threads,
            workers,
            shadow_task,
            shadow,
            capacity,
        })
    }

    /// Applies a new, already validated config without dropping connections:
    /// journeys, routing, upstreams, gate thresholds and the TLS certificate
    /// change atomically for the next request. Listen addresses, state_dir,
    /// workers and connection limits need a restart (logged, old values kept).
    /// On error nothing changes.
    pub async fn reload(&self, new: Config) -> Result<(), ReloadError> {
        let old = self.live.load_full();
        let names = |c: &Config| {
            c.rollout
                .phases
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        if names(&old.config) != names(&new) {
            return Err(ReloadError::Phases(format!(
                "{} -> {}",
                names(&old.config).join(","),
                names(&new).join(",")
            )));
        }
        match (&self.tls, &new.server.tls) {
            (Some(tls), Some(files)) => tls.reload(&files.cert, &files.key)?,
            (None, None) => {}
            (Some(_), None) => return Err(ReloadError::TlsToggle("removed")),
            (None, Some(_)) => return Err(ReloadError::TlsToggle("added")),
        }
        let mut new = new;
        let s = &old.config.server;
        if new.server.listen != s.listen
            || new.server.admin_listen != s.admin_listen
            || new.server.state_dir != s.state_dir
            || new.server.workers != s.workers
            || new.server.max_connections != s.max_connections
            || new.server.header_read_timeout != s.header_read_timeout
            || new.server.max_connections_per_client != s.max_connections_per_client
            || new.server.idle_timeout != s.idle_timeout
            || new.server.h2_keepalive_interval != s.h2_keepalive_interval
            || new.server.protocol != s.protocol
        {
            tracing::warn!("reload: listen addresses, state_dir, workers and connection limits only change on restart; keeping the running values");
        }
        new.server = s.clone();
        new.server.tls = new.server.tls.clone();
        // Counters survive a reload unless a journey, beacon name or region
        // changed: then every slot may mean another name, so telemetry starts
        // afresh (Prometheus sees a counter reset; the controller's window
        // refills).
        let layout = Layout::of(&new);
        let telemetry = if *old.telemetry.layout() == layout {
            old.telemetry.clone()
        } else {
            tracing::warn!(
                "reload: the journey, beacon or region list changed; telemetry windows restart"
            );
            Arc::new(Telemetry::with_layout(layout, new.server.telemetry))
        };
        self.trip
            .set_limit(new.rollout.consecutive_payment_failures);
        // The in-flight count carries over; only the limit changes.
        self.capacity.set_limit(new.upstreams.reserved_capacity);
        let config = Arc::new(new);
        self.control
            .reload(config.clone(), telemetry.clone())
            .await
            .map_err(|_| ReloadError::Gone)?;
        let proxies = (0..self.workers)
            .map(|_| {
                Arc::new(Proxy::new(
                    &config,
                    &self.secret,
                    self.router.clone(),
                    telemetry.clone(),
                    self.trip.clone(),
                    self.shadow.clone(),
                    self.tls.is_some(),
                    self.capacity.clone(),
                ))
            })
            .collect();
        self.live.store(Arc::new(Live {
            config,
            telemetry,
            proxies,
        }));
        tracing::info!("configuration reloaded");
        Ok(())
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
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_worker_and_every_reload_share_one_reserved_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let text = |cap: u32| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\n\
                 state_dir = {:?}\n[upstreams]\nv1 = \"http://127.0.0.1:1\"\nv2 = \"http://127.0.0.1:1\"\n\
                 reserved_capacity = {cap}\n",
                dir.path().display().to_string()
            )
        };
        let app = App::start(Config::parse(&text(2), "t.toml").unwrap())
            .await
            .unwrap();
        let first = app.live.load_full();
        let cap = &first.proxies[0].capacity;
        assert!(Arc::ptr_eq(cap, &first.proxies[1].capacity));
        let held = cap.admit().ok().flatten().expect("under the limit");
        app.reload(Config::parse(&text(1), "t.toml").unwrap())
            .await
            .unwrap();
        let after = app.live.load_full();
        assert!(Arc::ptr_eq(cap, &after.proxies[1].capacity));
        // The permit taken before the reload still counts against the new limit.
        assert!(after.proxies[0].capacity.admit().is_err());
        drop(held);
        assert!(after.proxies[1].capacity.admit().is_ok());
        app.shutdown().await;
    }
}
