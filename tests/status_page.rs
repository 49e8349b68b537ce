//! The status page in a real browser: rollgate runs in-process with a short
//! rollout and synthetic users; `tests/browser/status_page.mjs` drives
//! Debian's headless chromium through playwright-core, waits for a phase
//! change without reload, checks weights and gate colours against
//! `/api/v1/status`, and saves `target/status-page.png`.
//!
//! Missing chromium or node_modules is a failure, not a skip: a skipped
//! browser test would let a broken page land. `scripts/test.sh` installs both.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use rollgate::control::Command as AdminCommand;

use harness::config::short_rollout;
use harness::Rg;

const SETUP_HINT: &str = "run scripts/test.sh (it installs chromium with apt-get and runs \
                          `npm ci --prefix tests/browser`)";

fn chromium() -> PathBuf {
    std::env::var_os("ROLLGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// Everything the browser run needs, or a failure that says how to get it.
fn check_prerequisites(browser_dir: &Path) {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} is missing: the status page test needs Debian's chromium; {SETUP_HINT}",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not on PATH: the status page test needs Node.js >= 20; {SETUP_HINT}"
    );
    let pw = browser_dir.join("node_modules/playwright-core/package.json");
    assert!(pw.exists(), "{} is missing: {SETUP_HINT}", pw.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    check_prerequisites(&browser_dir);

    let mut rg = Rg::demo(&short_rollout("4s")).await;
    rg.traffic(200, 250.0);
    // Something in every side panel: an approval and one Sev-2 (which alone does not hold).
    let control = rg.app.control.clone();
    let approve = AdminCommand::Approve {
        role: "cfo".into(),
        by: "dana (CFO)".into(),
    };
    control.command(approve, "test").await.expect("approval");
    let incident = AdminCommand::Incident {
        severity: 2,
        summary: "support queue longer than usual".into(),
    };
    control.command(incident, "test").await.expect("incident");

    // The page is served from the binary with a strict CSP and no external reference.
    let r = rg.client.get(&rg.admin("/"), &[]).await;
    let (code, html) = (r.status, r.text());
    assert_eq!(code, 200);
    assert!(
        html.contains("/api/v1/history"),
        "the page draws from the history endpoint"
    );
    // The SVG namespace is a name, not a fetch.
    let refs = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !refs.contains("http://") && !refs.contains("https://") && !refs.contains("//cdn"),
        "the status page must not reference external resources"
    );

    let screenshot = root.join("target/status-page.png");
    let _ = std::fs::create_dir_all(root.join("target"));
    let _ = std::fs::remove_file(&screenshot);
    let admin = rg.admin("");
    let shot = screenshot.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir.join("status_page.mjs"))
            .arg(&admin)
            .arg(&shot)
            .env("ROLLGATE_CHROMIUM", chromium())
            .output()
    })
    .await
    .expect("join")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");

    // The history endpoint served the charts; a sanity check from this side too.
    let r = rg.client.get(&rg.admin("/api/v1/history"), &[]).await;
    let (code, body) = (r.status, r.text());
    rg.shutdown().await;

    assert!(
        out.status.success(),
        "the browser check failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("history is JSON");
    let points = v["points"].as_array().expect("points");
    assert!(points.len() > 10, "one point per tick: {}", points.len());
    assert!(points[0]["journeys"]
        .as_array()
        .is_some_and(|j| !j.is_empty()));
}
