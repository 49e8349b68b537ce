//! The real binary killed with SIGKILL: mid-phase and restarted, it resumes
//! the same rollout with the same users on the same variants; at twenty
//! random points during a rollout (live traffic and an operator clicking
//! around), `state.json` always parses (never a partial write), the audit log
//! reads to its last complete line and never loses one, and the restarted
//! process resumes exactly the phase, weights, approvals, flags, incidents
//! and freeze lock that `state.json` held. Once, a torn line is appended by
//! hand: it is skipped with a warning, never a crash, and the entries written
//! after it are intact.
//!
//! Randomness is seeded (`ROLLGATE_CRASH_SEED`, default below) so a failing
//! round can be replayed. Ports: the kernel picks them, the test writes them
//! into the config (the binary needs fixed addresses in its file). No timing
//! assertions: the only clock is the random time each process is allowed to live.

mod harness;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rollgate::control::audit::{self, AuditEntry, AUDIT_FILE};
use rollgate::control::state::{self, Approval, Incident, RolloutState, StateName};
use serde_json::{json, Value};

use harness::config::{seed_phases, FLAGS, KILL_ROLLOUT};
use harness::process::Proc;
use harness::upstream::{fast, healthy};
use harness::{audit_lines, Conf, DemoApp, Lenient, Ports, Resp, DEADLINE, TOKEN};

const ROUNDS: usize = 20;
const DEFAULT_SEED: u64 = 0x5eed_2026;
/// The round after whose kill a torn line is appended by hand.
const TORN_ROUND: usize = 7;
/// Half a JSON line, as a crash mid-append would leave it.
const TORN: &str = r#"{"at":"2026-01-01T00:00:00Z","kind":"admin","act"#;

// ===== one SIGKILL mid-phase =====

/// A rollout that waits an hour in each phase: it moves only when told to.
fn resume_conf(v1: SocketAddr, v2: SocketAddr, ports: Ports) -> Conf {
    let rollout = format!(
        "auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\n{FLAGS}\n{}",
        seed_phases("1h", None)
    );
    Conf::at(v1, v2)
        .ports(ports)
        .section("[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n")
        .rollout(&rollout)
}

/// An admin call that must succeed.
async fn call_ok(p: &Proc, method: Method, path: &str, body: Value) -> Resp {
    let r = p.call_json(method.clone(), path, body).await;
    assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.text());
    r
}

/// The parts of the status that must survive a restart.
fn durable(s: &Value) -> Value {
    json!({
        "state": s["state"],
        "phase": s["phase"],
        "phase_index": s["phase_index"],
        "weights": s["weights"],
        "approvals": s["approvals"],
        "flags": s["flags"],
        "incidents": s["incidents"],
        "frozen": s["frozen"],
        "phase_started_at": s["phase_started_at"],
        "last_decision": s["last_decision"],
    })
}

/// Two fast apps and a `resume_conf` config in a temp dir, not started.
struct Resumable {
    v1: DemoApp,
    v2: DemoApp,
    dir: tempfile::TempDir,
    state_dir: std::path::PathBuf,
    ports: Ports,
    config: std::path::PathBuf,
}

impl Resumable {
    async fn new() -> Resumable {
        Resumable::with(|c| c).await
    }

    /// With `conf` applied to the config before it is written.
    async fn with(conf: impl FnOnce(Conf) -> Conf) -> Resumable {
        let (v1, v2) = (
            DemoApp::start(fast("v1")).await,
            DemoApp::start(fast("v2")).await,
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = dir.path().join("state");
        let ports = Ports::free();
        let config = dir.path().join("rollgate.toml");
        conf(resume_conf(v1.addr, v2.addr, ports)).write(&config, &state_dir);
        Resumable {
            v1,
            v2,
            dir,
            state_dir,
            ports,
            config,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_phase_then_restart_resumes_the_same_rollout() {
    let r = Resumable::new().await;
    let (dir, state_dir, ports, config) = (&r.dir, &r.state_dir, r.ports, &r.config);

    // First life: the start tick enters canary-5; the CFO approves; the
    // operator promotes to canary-25, then sets a manual weight (paused).
    let mut p = Proc::spawn(config, ports, dir.path().join("stderr-1.log"));
    p.wait_ready().await;
    let s = p.wait_for("canary", |s| s["state"] == "canary").await;
    assert_eq!(s["phase"], "canary-5");
    call_ok(
        &p,
        Method::POST,
        "/api/v1/approvals",
        json!({"role": "cfo", "by": "dana (CFO)"}),
    )
    .await;
    call_ok(&p, Method::PUT, "/api/v1/flags", json!({"EXTRA_CHECK": 1})).await;
    let s = call_ok(&p, Method::POST, "/api/v1/rollout/promote", Value::Null)
        .await
        .json();
    assert_eq!(
        (s["state"].as_str(), s["phase"].as_str()),
        (Some("canary"), Some("canary-25")),
        "{s}"
    );
    let s = call_ok(&p, Method::PUT, "/api/v1/weights", json!({"v2": 30.5}))
        .await
        .json();
    assert_eq!(s["state"], "paused");
    let before = p.status().await;
    assert_eq!(before["phase_index"], 1);
    assert_eq!(before["weights"]["v2"].as_f64(), Some(30.5));
    assert_eq!(before["approvals"][0]["by"], "dana (CFO)");
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let mut variants = Vec::new();
    for u in &users {
        variants.push(p.variant_of(u, "/search").await);
    }
    assert!(
        variants.iter().any(|v| v == "v2") && variants.iter().any(|v| v == "v1"),
        "{variants:?}"
    );
    let audit_before = audit_lines(state_dir).len();
    p.kill9();

    // Second life, same config and state dir.
    let mut p = Proc::spawn(config, ports, dir.path().join("stderr-2.log"));
    p.wait_ready().await;
    // The start tick runs at once after a restart too; it must change nothing
    // while paused (its verdict shows in `detail`).
    let start = Instant::now();
    let after = loop {
        let s = p.status().await;
        if s["detail"] == "paused by operator" {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "no tick after the restart: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        durable(&after),
        durable(&before),
        "status changed across the restart"
    );
    let mut again = Vec::new();
    for u in &users {
        again.push(p.variant_of(u, "/search").await);
    }
    assert_eq!(again, variants, "users moved variant across the restart");

    // The audit log kept everything written before the kill, all complete lines.
    let audit = audit_lines(state_dir);
    assert!(
        audit.len() >= audit_before,
        "audit log lost entries: {} < {audit_before}",
        audit.len()
    );
    let admin_actions: Vec<&str> = audit
        .iter()
        .filter(|e| e["kind"] == "admin")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        admin_actions,
        ["approve", "flags", "promote", "weights"],
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "decision" && e["action"] == "GO"),
        "no GO decision in {audit:?}"
    );
    p.kill9();
}

// ===== a rollback the state file cannot take =====

/// The state dir's path turned into a regular file (and the directory put
/// aside), or put back. Every write under it then fails with ENOTDIR, also
/// for root, whom permissions would not stop (the tests run as root).
fn break_state_dir(state_dir: &Path, aside: &Path, broken: bool) {
    if broken {
        std::fs::rename(state_dir, aside).expect("move the state dir aside");
        std::fs::write(state_dir, b"not a directory\n").expect("a file in its place");
    } else {
        std::fs::remove_file(state_dir).expect("remove the file");
        std::fs::rename(aside, state_dir).expect("put the state dir back");
    }
}

fn degraded_gauge(metrics: &str) -> Option<f64> {
    harness::metric(metrics, "rollgate_state_persist_degraded", &[])
}

/// Starts rollgate again and checks it resumed rolled back: V2 at 0 %, the
/// state file current, users on V1.
async fn restart_rolled_back(config: &Path, ports: Ports, stderr: std::path::PathBuf) -> Proc {
    let mut p = Proc::spawn(config, ports, stderr);
    p.wait_ready().await;
    let s = p.status().await;
    assert_eq!(
        (s["state"].as_str(), s["weights"]["v2"].as_f64()),
        (Some("rolled_back"), Some(0.0)),
        "{s}"
    );
    assert_eq!(s["state_persist_degraded"], false);
    for i in 0..20 {
        assert_eq!(p.variant_of(&format!("user-{i}"), "/search").await, "v1");
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_the_state_file_cannot_take_is_degraded_until_written_and_never_undone() {
    let r = Resumable::new().await;
    let (dir, state_dir, ports, config) = (&r.dir, &r.state_dir, r.ports, &r.config);
    let (v1, v2) = (&r.v1, &r.v2);
    let aside = dir.path().join("state.aside");
    let mut p = Proc::spawn(config, ports, dir.path().join("stderr-1.log"));
    p.wait_ready().await;
    p.wait_for("canary", |s| s["state"] == "canary").await;
    assert_eq!(p.status().await["state_persist_degraded"], false);
    assert_eq!(degraded_gauge(&p.metrics().await), Some(0.0));

    // The state dir goes away; then a Sev-1 rolls back.
    break_state_dir(state_dir, &aside, true);
    let s = call_ok(
        &p,
        Method::POST,
        "/api/v1/incidents",
        json!({"severity": 1, "summary": "checkout down"}),
    )
    .await
    .json();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    assert_eq!(s["state_persist_degraded"], true, "{s}");
    assert_eq!(degraded_gauge(&p.metrics().await), Some(1.0));
    let page = p.call(Method::GET, "/", "").await.text();
    assert!(
        page.contains("persist-degraded"),
        "no degraded marker on the status page"
    );
    // Routing follows the rollback at once, written or not.
    for i in 0..40 {
        assert_eq!(p.variant_of(&format!("user-{i}"), "/search").await, "v1");
    }
    // On disk, the state before the rollback: still the canary.
    let on_disk = state::load(&aside).unwrap().expect("state file");
    assert_eq!(on_disk.state, StateName::Canary);

    // A second process started on it now refuses to start: it never serves
    // the canary's weight from the stale file.
    let other = Ports::free();
    let other_config = dir.path().join("other.toml");
    resume_conf(v1.addr, v2.addr, other).write(&other_config, state_dir);
    let mut q = Proc::spawn(&other_config, other, dir.path().join("stderr-2.log"));
    let exit = q.wait_exit();
    assert!(!exit.success(), "started on an unwritable state dir");
    let err = q.stderr();
    assert!(err.contains("state"), "{err}");

    // Still degraded while it lasts; the retries do not flood the log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(p.status().await["state_persist_degraded"], true);
    let errors = p
        .stderr()
        .lines()
        .filter(|l| l.contains("could not persist the rollout state"))
        .count();
    assert!((1..=6).contains(&errors), "{errors} error lines in 3 s");

    // Writable again: the retry lands, degraded clears, the file has the rollback.
    break_state_dir(state_dir, &aside, false);
    p.wait_for("the state written", |s| {
        s["state_persist_degraded"] == false
    })
    .await;
    assert_eq!(degraded_gauge(&p.metrics().await), Some(0.0));
    let on_disk = state::load(state_dir).unwrap().expect("state file");
    assert_eq!(on_disk.state, StateName::RolledBack);
    assert_eq!(on_disk.weight_v2, 0.0);
    p.kill9();

    // And a restart resumes the rollback, not the canary.
    let mut p = restart_rolled_back(config, ports, dir.path().join("stderr-3.log")).await;

    // A graceful stop while a write is failing says so before it exits.
    break_state_dir(state_dir, &aside, true);
    let s = call_ok(&p, Method::POST, "/api/v1/rollout/start", Value::Null)
        .await
        .json();
    assert_eq!(s["state_persist_degraded"], true, "{s}");
    p.signal("TERM");
    p.wait_exit();
    assert!(
        p.stderr()
            .contains("exiting with the rollout state not on disk"),
        "{}",
        p.stderr()
    );
    break_state_dir(state_dir, &aside, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fallback_dir_a_rollback_killed_while_degraded_is_resumed_after_the_repair() {
    let fallback = tempfile::tempdir().expect("temp dir");
    let fallback = fallback.path().join("fallback");
    let line = format!("state_fallback_dir = {:?}", fallback.display().to_string());
    let r = Resumable::with(|c| c.server(&line)).await;
    let (dir, state_dir, ports, config) = (&r.dir, &r.state_dir, r.ports, &r.config);
    let aside = dir.path().join("state.aside");
    let mut p = Proc::spawn(config, ports, dir.path().join("stderr-1.log"));
    p.wait_ready().await;
    p.wait_for("canary", |s| s["state"] == "canary").await;

    break_state_dir(state_dir, &aside, true);
    let s = call_ok(&p, Method::POST, "/api/v1/rollout/rollback", Value::Null)
        .await
        .json();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert_eq!(
        s["state_persist_degraded"], true,
        "the state file is behind: {s}"
    );
    let copy = state::load(&fallback).unwrap().expect("the fallback copy");
    assert_eq!((copy.state, copy.weight_v2), (StateName::RolledBack, 0.0));
    // Killed before the state dir comes back, restarted after.
    p.kill9();
    break_state_dir(state_dir, &aside, false);
    assert_eq!(
        state::load(state_dir).unwrap().expect("state file").state,
        StateName::Canary,
        "the state file missed the rollback"
    );
    let p = restart_rolled_back(config, ports, dir.path().join("stderr-2.log")).await;
    // The state file has it now, and the copy is gone.
    let on_disk = state::load(state_dir).unwrap().expect("state file");
    assert_eq!(on_disk.state, StateName::RolledBack);
    assert_eq!(state::load(&fallback).unwrap(), None);
    p.kill9();
}

// ===== twenty SIGKILLs at random points =====

/// Users and an operator, until stopped: steady traffic through the proxy and
/// random admin calls (approvals, flags, promote, pause/resume, unfreeze,
/// manual weights). Failures are expected while the process is dead.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    admin_calls: Arc<AtomicU64>,
}

impl Load {
    fn start(proxy: SocketAddr, admin: SocketAddr, round: usize, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let admin_calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let client = Lenient::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = format!("u{w}-{}", i % 500);
                    let _ = client
                        .get(&format!("http://{proxy}/search"), &[("x-user-id", &user)])
                        .await;
                }
            }));
        }
        let (stop2, calls) = (stop.clone(), admin_calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (round as u64) << 32);
            let client = Lenient::new();
            let auth = format!("Bearer {TOKEN}");
            let mut n = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
                n += 1;
                let (method, path, body) = match rng.random_range(0..100) {
                    0..=19 => (
                        Method::POST,
                        "/api/v1/approvals",
                        format!(
                            r#"{{"role": "{}", "by": "round-{round}-{n}"}}"#,
                            if rng.random_bool(0.5) { "cfo" } else { "ceo" }
                        ),
                    ),
                    20..=39 => (
                        Method::PUT,
                        "/api/v1/flags",
                        format!(
                            r#"{{"EXTRA_{}": {}}}"#,
                            rng.random_range(0..4),
                            rng.random_range(0..2)
                        ),
                    ),
                    40..=54 => (Method::POST, "/api/v1/rollout/promote", String::new()),
                    55..=64 => (Method::POST, "/api/v1/rollout/pause", String::new()),
                    65..=79 => (Method::POST, "/api/v1/rollout/resume", String::new()),
                    80..=86 => (Method::POST, "/api/v1/unfreeze", String::new()),
                    87..=92 => (
                        Method::PUT,
                        "/api/v1/weights",
                        format!(r#"{{"v2": {}}}"#, rng.random_range(0..=1000) as f64 / 10.0),
                    ),
                    _ => (Method::POST, "/api/v1/rollout/start", String::new()),
                };
                let url = format!("http://{admin}{path}");
                let r = client
                    .send(method, &url, &[("authorization", &auth)], body)
                    .await;
                if r.is_ok() {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Load {
            stop,
            tasks,
            admin_calls,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.admin_calls.load(Ordering::Relaxed)
    }
}

/// After a kill: the state file is whole and the audit log reads cleanly
/// and kept every line it had before.
fn check_files(
    dir: &Path,
    round: usize,
    audit_before: usize,
    torn_allowed: usize,
) -> (Option<RolloutState>, Vec<AuditEntry>) {
    let st =
        state::load(dir).unwrap_or_else(|e| panic!("round {round}: state.json after SIGKILL: {e}"));
    let (entries, skipped) =
        audit::read(dir).unwrap_or_else(|e| panic!("round {round}: audit log: {e}"));
    assert_eq!(
        skipped, torn_allowed,
        "round {round}: torn or invalid audit lines"
    );
    assert!(
        entries.len() >= audit_before,
        "round {round}: the audit log lost entries: {} < {audit_before}",
        entries.len()
    );
    (st, entries)
}

/// The restarted process shows what `state.json` held before the restart.
async fn check_resumed(admin: SocketAddr, expected: &RolloutState, round: usize, phases: &[f64]) {
    let client = Lenient::new();
    let r = client
        .get(&format!("http://{admin}/api/v1/status"), &[])
        .await
        .unwrap_or_else(|e| panic!("round {round}: status: {e}"));
    let (status, body) = (r.status, r.body);
    assert_eq!(status, StatusCode::OK);
    let s: Value = serde_json::from_slice(&body).expect("status JSON");
    let ctx = || {
        format!("round {round}: resumed status differs from state.json\nstate.json: {expected:?}\nstatus: {s}")
    };
    let approvals: Vec<Approval> =
        serde_json::from_value(s["approvals"].clone()).expect("approvals");
    let incidents: Vec<Incident> =
        serde_json::from_value(s["incidents"].clone()).expect("incidents");
    let flags: std::collections::BTreeMap<String, i64> =
        serde_json::from_value(s["flags"].clone()).expect("flags");
    assert_eq!(approvals, expected.approvals, "{}", ctx());
    assert_eq!(incidents, expected.incidents, "{}", ctx());
    assert_eq!(flags, expected.flags, "{}", ctx());
    assert_eq!(s["frozen"].as_bool(), Some(expected.frozen), "{}", ctx());
    let phase = s["phase_index"].as_u64().map(|p| p as usize);
    let v2 = s["weights"]["v2"].as_f64().expect("weights.v2");
    let state = s["state"].as_str().unwrap_or("?");
    if expected.state == StateName::Waiting {
        // The start tick runs at once after a restart and may begin the rollout.
        assert!(
            (phase.is_none() && v2 == expected.weight_v2) || (phase == Some(0) && v2 == phases[0]),
            "{}",
            ctx()
        );
    } else {
        assert_eq!(phase, expected.phase_index, "{}", ctx());
        assert_eq!(v2, expected.weight_v2, "{}", ctx());
        // A live phase may flip between canary and holding on the first tick
        // (an empty window is "insufficient data"); anything else must match.
        let same = state == expected.state.as_str()
            || matches!(
                (expected.state, state),
                (StateName::Canary, "holding") | (StateName::Holding, "canary")
            );
        assert!(same, "{}", ctx());
    }
}

/// A `tracing` subscriber writing into a buffer, to see the torn-line warning.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sigkills_at_random_points_never_lose_or_tear_the_rollout_state() {
    let seed = std::env::var("ROLLGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("seed {seed} (replay with ROLLGATE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let v1 = DemoApp::start(healthy("v1", 1.0, 3.0)).await;
    let v2 = DemoApp::start(healthy("v2", 1.0, 3.0)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let config = tmp.path().join("rollgate.toml");
    let phases = [5.0, 25.0, 50.0, 100.0];

    let mut audit_count = 0usize;
    let mut torn = 0usize;
    let mut seen_states = std::collections::BTreeSet::new();
    let mut admin_calls = 0u64;
    for round in 0..ROUNDS {
        let ports = Ports::free();
        let (proxy, admin) = (ports.proxy, ports.admin);
        Conf::at(v1.addr, v2.addr)
            .ports(ports)
            .server("workers = 1")
            .upstreams("timeout = \"2s\"")
            .without_rollout()
            .section(KILL_ROLLOUT)
            .write(&config, &dir);
        let expected = state::load(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));

        // Every fourth round also dies during start-up, before it is ready.
        if round % 4 == 3 {
            let early = Proc::spawn(
                &config,
                ports,
                tmp.path().join(format!("stderr-{round}-early.log")),
            );
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..80))).await;
            early.kill9();
            let (st, entries) = check_files(&dir, round, audit_count, torn);
            audit_count = entries.len();
            // Start-up alone never changes the durable rollout.
            if let (Some(before), Some(after)) = (&expected, &st) {
                assert_eq!(
                    before.approvals, after.approvals,
                    "round {round}: start-up changed approvals"
                );
                assert_eq!(before.flags, after.flags, "round {round}");
            }
        }

        let expected = state::load(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let mut p = Proc::spawn(
            &config,
            ports,
            tmp.path().join(format!("stderr-{round}.log")),
        );
        p.wait_ready().await;
        if let Some(expected) = &expected {
            check_resumed(admin, expected, round, &phases).await;
        }
        if round == TORN_ROUND + 1 {
            // The first append after the torn line must be a complete entry.
            let r = Lenient::new()
                .send(
                    Method::POST,
                    &format!("http://{admin}/api/v1/approvals"),
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                    r#"{"role": "cfo", "by": "after-the-torn-line"}"#,
                )
                .await
                .expect("approval after the torn line");
            assert_eq!(r.status, StatusCode::OK);
            let (entries, skipped) = audit::read(&dir).unwrap();
            assert_eq!(skipped, 1, "the torn line and nothing else is skipped");
            let raw = std::fs::read_to_string(dir.join(AUDIT_FILE)).unwrap();
            assert!(
                raw.contains(&format!("{TORN}\n")),
                "the next entry was glued to the torn line (and lost)"
            );
            assert!(
                entries
                    .iter()
                    .any(|e| e.detail["args"]["by"] == "after-the-torn-line"),
                "the entry appended after a torn line was lost (glued to it)"
            );
        }

        let load = Load::start(proxy, admin, round, seed);
        let life = rng.random_range(100..=1500);
        tokio::time::sleep(Duration::from_millis(life)).await;
        let pid = p.pid();
        p.kill9();
        admin_calls += load.stop().await;

        let (st, entries) = check_files(&dir, round, audit_count, torn);
        audit_count = entries.len();
        let st = st.unwrap_or_else(|| panic!("round {round}: no state.json after {life} ms"));
        seen_states.insert(format!("{}@{:?}", st.state.as_str(), st.phase_index));
        if st.state == StateName::Promoted {
            assert_eq!(
                st.weight_v2, 100.0,
                "round {round}: promoted below 100 %: {st:?}"
            );
        }
        println!(
            "round {round:2}: pid {pid} killed after {life:4} ms: {} phase {:?} v2 {}% approvals {} flags {} frozen {} audit {}",
            st.state.as_str(),
            st.phase_index,
            st.weight_v2,
            st.approvals.len(),
            st.flags.len(),
            st.frozen,
            entries.len()
        );

        if round == TORN_ROUND {
            // A crash mid-append, simulated: half a JSON line with no newline.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join(AUDIT_FILE))
                .unwrap();
            f.write_all(TORN.as_bytes()).unwrap();
            drop(f);
            let logs = Captured::default();
            let sub = tracing_subscriber::fmt()
                .with_writer({
                    let logs = logs.clone();
                    move || logs.clone()
                })
                .with_ansi(false)
                .finish();
            let (entries, skipped) =
                tracing::subscriber::with_default(sub, || audit::read(&dir)).unwrap();
            assert_eq!(skipped, 1);
            assert_eq!(
                entries.len(),
                audit_count,
                "complete lines before the torn one are kept"
            );
            let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
            assert!(
                logs.contains("WARN") && logs.contains("torn"),
                "no warning: {logs:?}"
            );
            torn = 1;
        }
    }
    println!(
        "{ROUNDS} rounds survived; states seen: {seen_states:?}; {audit_count} audit entries; {admin_calls} admin calls answered"
    );
    assert!(
        seen_states.len() >= 2,
        "the rollout never moved: {seen_states:?}"
    );
}
