//! A rollout recorded by the real controller, replayed with a stricter P95:
//! the step-ups it recorded become holds, and `rollgate replay` says so.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;

use rollgate::control::replay;
use rollgate::control::state::{Action, StateName};

use harness::process::BIN;
use harness::upstream::healthy;
use harness::{Conf, Rg};

/// The config that recorded the rollout, with another P95 limit.
fn conf(v1: SocketAddr, v2: SocketAddr, p95_ms: u32) -> Conf {
    Conf::at(v1, v2).own_rollout().section(&rollout(p95_ms))
}

fn rollout(p95_ms: u32) -> String {
    format!(
        r#"
[[journeys]]
name = "search"
path_prefix = "/search"
[rollout]
tick = "100ms"
window = "1s"
min_samples = 10
# Far from anything CPU contention on a busy test machine could reach:
# this test is about replay, not about the emergency brake.
p95_rollback_ms = 10000
flags = {{ SHADOW_PASS_24H = 1, A2_V26_COMPLIANT = 1, EVIDENCE_BUNDLE = 1 }}
[[rollout.phases]]
name = "canary-50"
weight = 50
hold = "1s"
p95_ms = {p95_ms}
[[rollout.phases]]
name = "full"
weight = 100
hold = "1s"
p95_ms = {p95_ms}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_rollout_replayed_with_a_stricter_p95_flips_its_step_ups() {
    let (v1, v2) = (healthy("v1", 60.0, 60.0), healthy("v2", 60.0, 60.0));
    let rig = Arc::new(Rg::with_apps(v1, v2, |c| c.own_rollout().section(&rollout(5_000))).await);
    // Users until the rollout is promoted.
    let loops: Vec<_> = (0..8)
        .map(|l| {
            let rig = rig.clone();
            tokio::spawn(async move {
                for i in 0..2_000 {
                    if rig.app.control.status().state == StateName::Promoted {
                        return;
                    }
                    let u = format!("user-{l}-{i}");
                    rig.get("/search", &[("x-user-id", &u)]).await;
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(rig.app.control.status().state, StateName::Promoted);
    let rig = Arc::try_unwrap(rig).ok().unwrap();
    let (a1, a2) = (rig.apps[0].addr, rig.apps[1].addr);
    let state = rig.shutdown().await;
    let dir = state.path().to_path_buf();

    let records = replay::load(&dir).unwrap();
    let recorded_gos: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "tick")
        .filter(|r| r.decision.as_ref().is_some_and(|d| d.action == Action::Go))
        .map(|r| r.at)
        .collect();
    assert_eq!(recorded_gos.len(), 2, "start and 50 -> 100");
    let cfg = |p95| conf(a1, a2, p95).parse(&dir);
    // The recording config reproduces every decision.
    let same = replay::replay(&cfg(5_000), &records, None);
    assert!(same.differences.is_empty(), "{}", same.text());
    // P95 <= 40 ms: the step-up to 100 % would have been a hold.
    let strict = replay::replay(&cfg(40), &records, None);
    let d = strict
        .differences
        .iter()
        .find(|d| d.at == recorded_gos[1])
        .unwrap_or_else(|| panic!("{}", strict.text()));
    assert_eq!(d.recorded, Action::Go);
    assert_eq!(d.replayed, Action::Hold, "{d:?}");
    assert!(d.replayed_reason.contains("latency_p95"), "{d:?}");

    // The same through the CLI.
    let new_toml = dir.join("new.toml");
    conf(a1, a2, 40).write(&new_toml, &dir);
    let out = std::process::Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&new_toml)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recorded GO"), "{stdout}");
    assert!(stdout.contains("-> would be NO-GO"), "{stdout}");
    // The sequential judge (the default) speaks of the phase's evidence...
    assert!(stdout.contains("over the phase"), "{stdout}");

    // ...and `--method window` re-judges the same recording under the
    // fixed-window test: the step-up is still a hold, in that judge's words.
    let out = std::process::Command::new(BIN)
        .args(["replay", "--method", "window", "--json", "--config"])
        .arg(&new_toml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flipped = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["recorded"] == "GO" && d["replayed"] == "HOLD")
        .unwrap_or_else(|| panic!("{report:#}"));
    let reason = flipped["replayed_reason"].as_str().unwrap();
    assert!(reason.contains("breaches <= 40.0"), "{reason}");
    assert!(!reason.contains("over the phase"), "{reason}");
    // A judge that is not one is refused by name.
    let out = std::process::Command::new(BIN)
        .args(["replay", "--method", "kayenta", "--config"])
        .arg(&new_toml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"sequential\" or \"window\""), "{stderr}");
}
