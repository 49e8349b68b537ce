//! rollgate started in this process (`rollgate::App`) on loopback port 0,
//! with a fresh state dir, optionally in front of demo apps it owns and with
//! synthetic users walking the demo journeys.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rollgate::control::StatusView;
use rollgate::demo::population::{self, Counters};
use rollgate::demo::upstream::Profile;

use super::api::{effective_token, Api};
use super::config::Conf;
use super::upstream::{healthy, DemoApp, Upstream};
use super::DEADLINE;

/// A running in-process rollgate. Derefs to its [`Api`].
pub struct Rg {
    pub app: rollgate::App,
    pub state: tempfile::TempDir,
    api: Api,
    /// The demo apps started with it (see [`Rg::with_apps`]), stopped after it.
    pub apps: Vec<DemoApp>,
    users: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
}

impl Rg {
    /// Starts rollgate on `conf` with a fresh state dir.
    pub async fn start(conf: &Conf) -> Rg {
        let state = tempfile::tempdir().expect("temp state dir");
        let app = rollgate::App::start(conf.parse(state.path()))
            .await
            .expect("rollgate starts");
        let api = Api::new(app.proxy_addr, app.admin_addr, effective_token());
        Rg {
            app,
            state,
            api,
            apps: Vec::new(),
            users: None,
        }
    }

    /// Two echo upstreams and rollgate in front of them, with extra
    /// `[server]` lines.
    pub async fn echo(server: &str) -> (Upstream, Upstream, Rg) {
        let (v1, v2) = Upstream::pair().await;
        let rg = Rg::start(&Conf::new(v1.url(), v2.url()).server(server)).await;
        (v1, v2, rg)
    }

    /// Starts demo apps serving `v1` and `v2`, then rollgate in front of them
    /// on `conf(Conf::at(v1, v2))`.
    pub async fn with_apps(v1: Profile, v2: Profile, conf: impl FnOnce(Conf) -> Conf) -> Rg {
        let (a1, a2) = (DemoApp::start(v1).await, DemoApp::start(v2).await);
        let mut rg = Rg::start(&conf(Conf::at(a1.addr, a2.addr))).await;
        rg.apps = vec![a1, a2];
        rg
    }

    /// rollgate in front of the two demo apps as an operator sees them (V2 a
    /// little faster than V1), on [`Conf::demo`] with `rollout`.
    pub async fn demo(rollout: &str) -> Rg {
        Rg::with_apps(demo_v1(), demo_v2(), |c| c.demo(rollout)).await
    }

    /// The controller's status (no HTTP).
    pub fn control_status(&self) -> Arc<StatusView> {
        self.app.control.status()
    }

    /// Polls the controller's status until `f` holds; fails with the gates
    /// after a minute.
    pub async fn until(&self, what: &str, f: impl Fn(&StatusView) -> bool) -> Arc<StatusView> {
        let f = &f;
        super::eventually_within(
            what,
            2 * DEADLINE,
            Duration::from_millis(50),
            move || async move {
                let s = self.control_status();
                if f(&s) {
                    Ok(s)
                } else {
                    Err(format!("{s:#?}"))
                }
            },
        )
        .await
    }

    /// Synthetic users walking the demo journeys through the proxy.
    pub fn traffic(&mut self, users: usize, rate: f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(population::run(
            self.proxy(""),
            users,
            rate,
            stop.clone(),
            Arc::new(Counters::default()),
        ));
        self.users = Some((stop, task));
    }

    pub async fn stop_traffic(&mut self) {
        if let Some((stop, task)) = self.users.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = task.await;
        }
    }

    /// Stops the users, then rollgate; returns the state dir for a look at
    /// what it left (the demo apps stop when it goes).
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        self.stop_traffic().await;
        self.app.shutdown().await;
        self.state
    }
}

/// The demo's V1 as the operator-facing tests run it.
pub fn demo_v1() -> Profile {
    healthy("v1", 30.0, 70.0)
}

/// The demo's V2, a little faster than V1.
pub fn demo_v2() -> Profile {
    healthy("v2", 25.0, 60.0)
}

impl Deref for Rg {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}
