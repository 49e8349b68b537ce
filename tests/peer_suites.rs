//! Peer suites nobody on this project wrote, run against rollgate's real
//! listeners on loopback: h2spec (HTTP/2 conformance, every case) over TLS,
//! on the auto-detecting plain port and on an h2c-only one, and smuggler (HTTP/1.1 request-smuggling desync, the exhaustive
//! mutation set) against the plain listener. Any h2spec failure or any
//! smuggler finding fails the test.
//!
//! The tools live outside the repository (`../shared/tools/`, or the folder
//! named by `ROLLGATE_PEER_TOOLS`). Without them the tests fail under CI
//! (`CI` set) and are skipped with a message elsewhere, so a checkout without
//! the sibling folder can still run the rest of the suite.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use harness::client::Cert;
use harness::process::finish;
use harness::{Conf, Rg, Upstream};

/// The h2spec case that an auto-detecting plain port fails by design: an
/// HTTP/1.1 peer that sends a line which is not the h2 preface gets an
/// HTTP/1.1 `400`, as HTTP/1.1 requires, where h2spec wants a GOAWAY.
const AUTO_PORT_PREFACE_CASE: &str = "http2/3.5 Sends invalid connection preface";

fn tools() -> Option<PathBuf> {
    let dir = std::env::var_os("ROLLGATE_PEER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools"));
    if dir.join("h2spec/h2spec").is_file() && dir.join("smuggler/smuggler.py").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "peer suites not found in {} (set ROLLGATE_PEER_TOOLS)",
        dir.display()
    );
    eprintln!(
        "skipped: peer suites not found in {} (set ROLLGATE_PEER_TOOLS)",
        dir.display()
    );
    None
}

/// Runs a tool off the runtime's threads (rollgate is served by this
/// process); fails past `limit`.
async fn run(cmd: Command, limit: Duration) -> Output {
    let out = tokio::task::spawn_blocking(move || finish(cmd, limit))
        .await
        .unwrap();
    Output {
        status: out.status,
        stdout: out.stdout.into_bytes(),
        stderr: out.stderr.into_bytes(),
    }
}

/// The failed cases of an h2spec JUnit report, as `package classname`
/// (`http2/3.5 Sends invalid connection preface`).
fn failed_cases(junit: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for case in junit.split("<testcase").skip(1) {
        let case = case.split("</testcase>").next().unwrap_or(case);
        if !case.contains("<failure") && !case.contains("<error") {
            continue;
        }
        let attr = |name: &str| {
            case.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("?")
                .to_string()
        };
        failed.push(format!("{} {}", attr("package"), attr("classname")));
    }
    failed
}

/// Runs every h2spec case against `port` and returns the failed ones; also
/// checks that the suite really ran (a summary with a case count).
async fn h2spec(tools: &Path, port: u16, tls: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("h2spec.xml");
    let mut cmd = Command::new(tools.join("h2spec/h2spec"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "2", "-j"])
        .arg(&junit);
    if tls {
        cmd.args(["-t", "-k"]);
    }
    let out = run(cmd, Duration::from_secs(300)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = std::fs::read_to_string(&junit)
        .unwrap_or_else(|e| panic!("h2spec wrote no report ({e}); stdout:\n{stdout}"));
    let cases = report.matches("<testcase").count();
    assert!(
        cases >= 140,
        "h2spec ran {cases} cases, expected its 146; stdout:\n{stdout}"
    );
    failed_cases(&report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_every_case_over_tls() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cert = Cert::new(dir.path(), "peer");
    let (v1, v2) = Upstream::pair().await;
    let rg = Rg::start(&Conf::new(v1.url(), v2.url()).server(&cert.server_tls())).await;
    let failed = h2spec(&tools, rg.app.proxy_addr.port(), true).await;
    assert!(failed.is_empty(), "h2spec over TLS failed: {failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_on_the_auto_detecting_plain_port_fails_only_the_preface_case() {
    let Some(tools) = tools() else { return };
    let (v1, v2) = Upstream::pair().await;
    let rg = Rg::start(&Conf::new(v1.url(), v2.url())).await;
    let failed = h2spec(&tools, rg.app.proxy_addr.port(), false).await;
    assert!(
        failed.iter().all(|f| f == AUTO_PORT_PREFACE_CASE),
        "h2spec over h2c (auto port) failed: {failed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_every_case_on_an_h2c_only_plain_port() {
    let Some(tools) = tools() else { return };
    let (v1, v2) = Upstream::pair().await;
    let rg = Rg::start(&Conf::new(v1.url(), v2.url()).server("protocol = \"h2c\"")).await;
    let failed = h2spec(&tools, rg.app.proxy_addr.port(), false).await;
    assert!(
        failed.is_empty(),
        "h2spec on the h2c-only port failed: {failed:#?}"
    );
}

/// The smuggler log lines that report a desync.
fn findings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("Issue Found") || l.contains("CRITICAL"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggler_finds_no_desync_on_the_plain_listener() {
    let Some(tools) = tools() else { return };
    let (v1, v2) = Upstream::pair().await;
    let rg = Rg::start(&Conf::new(v1.url(), v2.url())).await;

    // A private copy: smuggler writes the payloads of its findings next to
    // itself, and the shared folder is read-only in CI.
    let work = tempfile::tempdir().unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(tools.join("smuggler"))
        .arg(work.path())
        .status()
        .unwrap();
    assert!(copy.success(), "copying smuggler failed");
    let smuggler = work.path().join("smuggler");
    let log = work.path().join("smuggler.log");
    let mut cmd = Command::new("python3");
    cmd.current_dir(&smuggler)
        .arg("smuggler.py")
        .args([
            "-u",
            &format!("http://127.0.0.1:{}/", rg.app.proxy_addr.port()),
        ])
        .args(["-c", "exhaustive.py", "--no-color", "-t", "3", "-l"])
        .arg(&log);
    let out = run(cmd, Duration::from_secs(900)).await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smuggler exited with {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // One log line per mutation; the exhaustive set has several hundred.
    let checked = log.lines().filter(|l| l.contains(": OK (")).count();
    assert!(
        checked >= 500,
        "smuggler checked only {checked} mutations; stdout:\n{stdout}"
    );
    let found = findings(&log);
    assert!(found.is_empty(), "smuggler findings: {found:#?}");
    let payloads: Vec<_> = std::fs::read_dir(smuggler.join("payloads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "README.md")
        .map(|e| e.file_name())
        .collect();
    assert!(payloads.is_empty(), "smuggler wrote payloads: {payloads:?}");
}
