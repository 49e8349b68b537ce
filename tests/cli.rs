//! Every `rollgate` admin subcommand, run as the real binary against a
//! rollgate started in-process: human and `--json` output, `--admin` and
//! `ROLLGATE_ADMIN_URL`, `--token` and `ROLLGATE_ADMIN_TOKEN`, and the
//! messages and exit codes for 400, 401, 404, 409, 423 and an unreachable API.

mod harness;

use std::process::{Command, Output};

use serde_json::Value;

use harness::config::{free_port, seed_phases, FLAGS};
use harness::process::BIN;
use harness::{Rg, TOKEN};

/// A rollout that only moves when told to: not auto-started, holds of an
/// hour, and automatic triggers out of reach of a loaded test machine.
fn manual_rollout() -> String {
    format!(
        "[rollout]\ntick = \"250ms\"\nwindow = \"3s\"\nmin_samples = 5\nauto_start = false\n\
         p95_rollback_ms = 5000\nred_rollback_after = \"1h\"\n\n{FLAGS}\n{}",
        seed_phases("1h", Some(1000))
    )
}

/// Exit codes documented in `rollgate::cli::exit`.
const REFUSED: i32 = 1;
const USAGE: i32 = 2;
const UNREACHABLE: i32 = 3;
const UNAUTHORIZED: i32 = 4;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails(self, code: i32, message: &str) -> Run {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "stderr should contain {message:?}: {}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout starts with `text`.
    fn starts(&self, text: &str) -> &Run {
        assert!(self.stdout.starts_with(text), "{}", self.stdout);
        self
    }

    /// Asserts that stdout contains `text`.
    fn shows(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "{}", self.stdout);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `rollgate ARGS` with a clean environment plus `env`.
async fn rollgate(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ROLLGATE_ADMIN_URL")
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command() {
    let mut rg = Rg::demo(&manual_rollout()).await;
    rg.traffic(40, 80.0);
    let admin = rg.admin("");
    let a = ["--admin", admin.as_str()];
    let t = ["--token", TOKEN];
    let args = |extra: &[&'static str], token: bool| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(a.iter().map(|s| s.to_string()));
        if token {
            v.extend(t.iter().map(|s| s.to_string()));
        }
        v
    };
    macro_rules! rg {
        ($extra:expr, token) => {{
            let v = args(&$extra, true);
            rollgate(&v.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await
        }};
        ($extra:expr) => {{
            let v = args(&$extra, false);
            rollgate(&v.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await
        }};
    }

    // status: human and JSON; the URL from the environment works too.
    let s = rg!(["status"]).ok();
    s.starts("rollgate  waiting  phase -  V1 100% / V2 0%");
    s.shows("phases: canary-5 5% → canary-25 25% → full 100%");
    s.shows("freeze lock: off");
    let j = rg!(["status", "--json"]).ok().json();
    assert_eq!(j["state"], "waiting");
    let env = rollgate(
        &["status", "--json"],
        &[("ROLLGATE_ADMIN_URL", admin.as_str())],
    )
    .await
    .ok()
    .json();
    assert_eq!(env["state"], "waiting");

    // 401: no token, then a wrong one.
    rg!(["pause"]).fails(
        UNAUTHORIZED,
        "wrong or missing token: set --token or ROLLGATE_ADMIN_TOKEN",
    );
    rg!(["start", "--token", "nope"]).fails(UNAUTHORIZED, "wrong or missing token");

    // start, with the token from the environment.
    let s = rollgate(
        &["start", "--admin", &admin],
        &[("ROLLGATE_ADMIN_TOKEN", TOKEN)],
    )
    .await
    .ok();
    s.starts("ok: started\nnow: canary  phase canary-5 (1/3)  V1 95% / V2 5%");
    // 409: already running.
    rg!(["start"], token).fails(
        REFUSED,
        "refused (HTTP 409): cannot start while the rollout is canary",
    );

    // flags
    let s = rg!(["flags", "EVIDENCE_BUNDLE=1", "A2_V26_COMPLIANT=1"], token).ok();
    s.shows("ok: flags set: EVIDENCE_BUNDLE=1 A2_V26_COMPLIANT=1");
    rg!(["flags", "EVIDENCE_BUNDLE"], token).fails(USAGE, "expected NAME=0 or NAME=1");

    // weights: 400 with the server's message, then a fractional weight.
    rg!(["weights", "150"], token).fails(
        REFUSED,
        "invalid request (HTTP 400): field `v2`: 150 is outside 0-100",
    );
    let s = rg!(["weights", "12.5"], token).ok();
    s.shows("ok: V2 weight set to 12.5%");
    s.shows("now: paused  phase canary-5 (1/3)  V1 87.5% / V2 12.5%");
    let j = rg!(["weights", "12.5", "--json"], token).ok().json();
    assert_eq!(j["weights"]["v2"], 12.5);

    // resume, pause, resume.
    let s = rg!(["resume"], token).ok();
    s.shows("ok: resumed\nnow: canary  phase canary-5 (1/3)  V1 95% / V2 5%");
    let s = rg!(["pause"], token).ok();
    s.shows("now: paused");
    rg!(["pause"], token).fails(REFUSED, "HTTP 409");
    rg!(["resume"], token).ok();

    // approve, then promote into the phase that needed it.
    let s = rg!(["approve", "--role", "cfo", "--by", "dana"], token).ok();
    s.shows("ok: approval recorded: role cfo by dana");
    let s = rg!(["promote"], token).ok();
    s.shows("now: canary  phase canary-25 (2/3)  V1 75% / V2 25%");
    s.shows("last decision: GO at");

    // incident (Sev-2: recorded, no hold with one).
    let s = rg!(
        [
            "incident",
            "--severity",
            "2",
            "--summary",
            "support queue is long"
        ],
        token
    )
    .ok();
    s.shows("ok: Sev-2 incident recorded: support queue is long");
    rg!(["incident", "--severity", "3", "--summary", "x"], token).fails(USAGE, "3");

    // status shows it all; wait for the gate table to fill from the traffic.
    let mut status = String::new();
    // The global error_rate gate is listed from the first tick; the
    // per-journey gates only once traffic has reached the window.
    for _ in 0..120 {
        status = rg!(["status"]).ok().stdout;
        if status.contains("STATUS  GATE") && status.contains("latency_p95") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(status.contains("STATUS  GATE"), "a gate table: {status}");
    assert!(status.contains("latency_p95"), "{status}");
    assert!(status.contains("approvals: cfo by dana at 20"), "{status}");
    assert!(
        status.contains("incidents: #1 Sev-2 support queue is long"),
        "{status}"
    );
    assert!(
        status.contains("flags: A2_V26_COMPLIANT=1 EVIDENCE_BUNDLE=1 SHADOW_PASS_24H=1"),
        "{status}"
    );

    // rollback, twice (409 the second time).
    let s = rg!(["rollback"], token).ok();
    s.shows("ok: rolled back: V2 weight 0\nnow: rolled_back");
    s.shows("V2 0%");
    rg!(["rollback"], token).fails(REFUSED, "cannot roll back while the rollout is rolled_back");

    // reports: list, latest, by id, Markdown, JSON, unknown id.
    let list = rg!(["report"]).ok().stdout;
    assert!(list.contains("ID      AT"), "{list}");
    assert!(list.contains("ROLLBACK"), "{list}");
    let reports = rg!(["report", "--json"]).ok().json();
    let ids: Vec<String> = reports["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        ids.len() >= 3,
        "start, promote and rollback wrote reports: {ids:?}"
    );
    let last = ids.last().expect("a report").clone();
    let s = rg!(["report", "latest"]).ok();
    s.starts(&format!("report {last}  ROLLBACK"));
    s.shows("trigger manual");
    let first = ids[0].clone();
    let s = rollgate(&["report", &first, "--admin", &admin], &[])
        .await
        .ok();
    s.starts(&format!("report {first}"));
    let md = rollgate(&["report", &last, "--md", "--admin", &admin], &[])
        .await
        .ok();
    md.starts(&format!("# Gate report {last}"));
    let md_latest = rg!(["report", "--md"]).ok();
    assert_eq!(md_latest.stdout, md.stdout);
    let j = rollgate(&["report", &last, "--json", "--admin", &admin], &[])
        .await
        .ok()
        .json();
    assert_eq!(j["id"], last.as_str());
    assert_eq!(j["decision"]["action"], "ROLLBACK");
    rg!(["report", "999999"]).fails(REFUSED, "not found (HTTP 404)");
    rg!(["report", "../etc"]).fails(USAGE, "is not a report id");

    // 423: promote through to the end (golden re-freeze), then a weight change is refused.
    rg!(["start"], token).ok();
    // A new rollout: canary-25 needs the CFO again, also for a manual promote.
    rg!(["approve", "--role", "cfo", "--by", "dana"], token).ok();
    rg!(["promote"], token).ok();
    rg!(["promote"], token).ok();
    let s = rg!(["promote"], token).ok();
    s.shows("now: promoted  phase full (3/3)  V1 0% / V2 100%  FREEZE_LOCK");
    rg!(["weights", "10"], token).fails(REFUSED, "frozen (HTTP 423): FREEZE_LOCK is set");
    let s = rg!(["status"]).ok();
    s.shows("freeze lock: FREEZE_LOCK on");
    let s = rg!(["unfreeze"], token).ok();
    s.shows("ok: FREEZE_LOCK cleared");
    rg!(["weights", "0"], token).ok();

    // Bad URL and an admin port nobody listens on.
    rollgate(&["status", "--admin", "localhost:9901"], &[])
        .await
        .fails(USAGE, "invalid admin URL");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    rollgate(&["status", "--admin", &url], &[]).await.fails(
        UNREACHABLE,
        &format!("cannot reach the admin API at {url}: is rollgate running?"),
    );
    rollgate(&["pause", "--admin", &url, "--token", TOKEN], &[])
        .await
        .fails(UNREACHABLE, "is rollgate running?");

    rg.shutdown().await;
}
