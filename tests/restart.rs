//! The real binary: `rollgate run` killed with SIGKILL mid-phase and started
//! again resumes the same rollout; a corrupt state file is refused; `check`
//! validates configs.
//!
//! Ports: the test binds 127.0.0.1:0, reads the port the kernel chose, drops
//! the listener and writes the port into the config (the binary needs fixed
//! addresses in its file).

mod common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rollgate::demo::upstream::{self, Latency, Profile};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use common::{HttpClient, Resp};

const BIN: &str = env!("CARGO_BIN_EXE_rollgate");
const TOKEN: &str = "restart-token";
const DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `rollgate run` child, killed when dropped (a failing test leaks nothing).
struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(config: &Path, stderr: PathBuf) -> Proc {
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("ROLLGATE_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn rollgate run");
        Proc { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: no drain, no final persist.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child that must exit by itself; kills it after [`DEADLINE`].
fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("rollgate did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Binary {
    admin: SocketAddr,
    proxy: SocketAddr,
    client: HttpClient,
}

impl Binary {
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Waits for `/healthz`, failing early with the child's stderr if it exits.
    async fn wait_ready(&self, p: &mut Proc) {
        let start = Instant::now();
        loop {
            if let Some(st) = p.child.try_wait().expect("try_wait") {
                panic!("rollgate exited early ({st}): {}", p.stderr());
            }
            let ok = tokio::time::timeout(Duration::from_secs(2), async {
                let s = tokio::net::TcpStream::connect(self.admin).await.ok()?;
                drop(s);
                Some(())
            })
            .await
            .ok()
            .flatten()
            .is_some();
            if ok
                && self
                    .client
                    .get(&self.admin_url("/healthz"), &[])
                    .await
                    .status
                    == StatusCode::OK
            {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!("rollgate not ready within {DEADLINE:?}: {}", p.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self) -> Value {
        let r = self
            .client
            .get(&self.admin_url("/api/v1/status"), &[])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let r = self
            .client
            .request(
                method.clone(),
                &self.admin_url(path),
                &[("authorization", auth.as_str())],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.text());
        r
    }

    async fn wait_state(&self, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if s["state"] == state {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "not {state} within {DEADLINE:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn variant_of(&self, user: &str) -> String {
        let url = format!("http://{}/search", self.proxy);
        let r = self.client.get(&url, &[("x-user-id", user)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.variant().to_string()
    }
}

fn config_text(
    proxy: SocketAddr,
    admin: SocketAddr,
    v1: SocketAddr,
    v2: SocketAddr,
    state_dir: &Path,
) -> String {
    format!(
        r#"[server]
listen = "{proxy}"
admin_listen = "{admin}"
admin_token = "{TOKEN}"
state_dir = {dir:?}

[upstreams]
v1 = "http://{v1}"
v2 = "http://{v2}"

[routing]
sticky_header = "x-user-id"

[[journeys]]
name = "search"
path_prefix = "/search"

[rollout]
auto_start = true
tick = "1h"
window = "1h"

[rollout.flags]
SHADOW_PASS_24H = 1
A2_V26_COMPLIANT = 1
EVIDENCE_BUNDLE = 1

[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "1h"

[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "1h"
approval = "cfo"

[[rollout.phases]]
name = "full"
weight = 100
"#,
        dir = state_dir.display().to_string()
    )
}

async fn demo_app(name: &'static str, stop: &watch::Receiver<bool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut rx = stop.clone();
    let profile = Profile::healthy(name, Latency::ZERO);
    tokio::spawn(upstream::serve(l, profile, async move {
        let _ = rx.wait_for(|v| *v).await;
    }));
    addr
}

/// Every line of `audit.jsonl` is complete JSON (no torn tail after SIGKILL).
fn audit_entries(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit.jsonl");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn last line in audit.jsonl"
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit.jsonl line {}: {e}: {l}", i + 1))
        })
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_phase_then_restart_resumes_the_same_rollout() {
    let (stop_apps, stop_rx) = watch::channel(false);
    let v1 = demo_app("v1", &stop_rx).await;
    let v2 = demo_app("v2", &stop_rx).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    let bin = Binary {
        proxy: SocketAddr::from(([127, 0, 0, 1], free_port())),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        client: HttpClient::http1(),
    };
    let config = dir.path().join("rollgate.toml");
    std::fs::write(
        &config,
        config_text(bin.proxy, bin.admin, v1, v2, &state_dir),
    )
    .unwrap();

    // First life: the start tick enters canary-5; the CFO approves; the
    // operator promotes to canary-25, then sets a manual weight (paused).
    let mut p = Proc::spawn(&config, dir.path().join("stderr-1.log"));
    bin.wait_ready(&mut p).await;
    let s = bin.wait_state("canary").await;
    assert_eq!(s["phase"], "canary-5");
    bin.call(
        Method::POST,
        "/api/v1/approvals",
        json!({"role": "cfo", "by": "dana (CFO)"}),
    )
    .await;
    bin.call(Method::PUT, "/api/v1/flags", json!({"EXTRA_CHECK": 1}))
        .await;
    let s = bin
        .call(Method::POST, "/api/v1/rollout/promote", Value::Null)
        .await
        .json();
    assert_eq!(
        (s["state"].as_str(), s["phase"].as_str()),
        (Some("canary"), Some("canary-25")),
        "{s}"
    );
    let s = bin
        .call(Method::PUT, "/api/v1/weights", json!({"v2": 30.5}))
        .await
        .json();
    assert_eq!(s["state"], "paused");
    let before = bin.status().await;
    assert_eq!(before["phase_index"], 1);
    assert_eq!(before["weights"]["v2"].as_f64(), Some(30.5));
    assert_eq!(before["approvals"][0]["by"], "dana (CFO)");
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let mut variants = Vec::new();
    for u in &users {
        variants.push(bin.variant_of(u).await);
    }
    assert!(
        variants.iter().any(|v| v == "v2") && variants.iter().any(|v| v == "v1"),
        "{variants:?}"
    );
    let audit_before = audit_entries(&state_dir).len();
    p.kill();

    // Second life, same config and state dir.
    let mut p = Proc::spawn(&config, dir.path().join("stderr-2.log"));
    bin.wait_ready(&mut p).await;
    // The start tick runs at once after a restart too; it must change nothing
    // while paused (its verdict shows in `detail`).
    let start = Instant::now();
    let after = loop {
        let s = bin.status().await;
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
        again.push(bin.variant_of(u).await);
    }
    assert_eq!(again, variants, "users moved variant across the restart");

    // The audit log kept everything written before the kill, all complete lines.
    let audit = audit_entries(&state_dir);
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
    p.kill();
    let _ = stop_apps.send(true);
}

#[test]
fn a_corrupt_state_file_is_refused_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(
        state_dir.join("state.json"),
        b"{\"state\": \"canary\", \"pha",
    )
    .unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 1));
    let config = dir.path().join("rollgate.toml");
    let text = config_text(
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        any,
        any,
        &state_dir,
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "started on a corrupt state file: {err}");
    assert!(
        err.contains("state.json"),
        "message does not name state.json: {err}"
    );
    assert!(err.contains("corrupt"), "{err}");
    // The file is left for the operator, not silently replaced.
    assert_eq!(
        std::fs::read(state_dir.join("state.json")).unwrap(),
        b"{\"state\": \"canary\", \"pha"
    );
}

fn check(path: &Path) -> (ExitStatus, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run rollgate check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[test]
fn check_names_the_bad_key_and_accepts_the_shipped_configs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = "[server]\nlisten = \"127.0.0.1:8080\"\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base).unwrap();
    let (st, out) = check(&good);
    assert!(st.success(), "minimal config refused: {out}");

    for (name, extra, key) in [
        ("tick.toml", "[rollout]\ntick = \"5ms\"\n", "rollout.tick"),
        (
            "flag.toml",
            "[rollout.flags]\nEVIDENCE_BUNDLE = 2\n",
            "rollout.flags.EVIDENCE_BUNDLE",
        ),
        ("typo.toml", "[rollout]\nmin_sample = 5\n", "min_sample"),
        (
            "weight.toml",
            "[[rollout.phases]]\nname = \"a\"\nweight = 150\n",
            "rollout.phases[0].weight",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let (st, out) = check(&path);
        assert!(!st.success(), "{name} accepted: {out}");
        assert!(
            out.contains(key),
            "{name}: message does not name `{key}`: {out}"
        );
        assert!(
            out.contains(name),
            "{name}: message does not name the file: {out}"
        );
    }

    // Every config shipped in config/ (the commented example and the presets) is valid.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let example = shipped.join("rollgate.example.toml");
    if example.exists() {
        let (st, out) = check(&example);
        assert!(st.success(), "{}: {out}", example.display());
    } else {
        // Not written yet (another issue ships config/): nothing to check.
        eprintln!("skipped: {} does not exist yet", example.display());
    }
    if let Ok(entries) = std::fs::read_dir(&shipped) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let (st, out) = check(&p);
                assert!(st.success(), "{}: {out}", p.display());
            }
        }
    }
}
