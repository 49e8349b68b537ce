//! A rollout recorded by the real controller, replayed with a stricter P95:
//! the step-ups it recorded become holds, and `rollgate replay` says so.

mod rig;

use std::sync::Arc;

use rig::{spawn_upstream, Extra, Rig};
use rollgate::control::replay;
use rollgate::control::state::{Action, StateName};
use rollgate::demo::upstream::{Latency, Profile};
use rollgate::Config;
use tokio::sync::watch;

fn app(name: &'static str) -> Profile {
    Profile::healthy(
        name,
        Latency {
            median_ms: 60.0,
            p95_ms: 60.0,
        },
    )
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
    let (stop, _) = watch::channel(false);
    let v1 = spawn_upstream(app("v1"), &stop).await;
    let v2 = spawn_upstream(app("v2"), &stop).await;
    let text = rollout(5_000);
    let rig = Arc::new(
        Rig::start_at(
            v1,
            v2,
            stop,
            Extra {
                rest: &text,
                ..Extra::default()
            },
        )
        .await,
    );
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
    let dir = rig.state_dir.path().to_path_buf();
    let (a1, a2) = (rig.v1, rig.v2);
    rig.app.shutdown().await;

    let records = replay::load(&dir).unwrap();
    let recorded_gos: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "tick")
        .filter(|r| r.decision.as_ref().is_some_and(|d| d.action == Action::Go))
        .map(|r| r.at)
        .collect();
    assert_eq!(recorded_gos.len(), 2, "start and 50 -> 100");
    let cfg = |p95| {
        let t = rig::config_text(
            a1,
            a2,
            &dir.display().to_string(),
            Extra {
                rest: &rollout(p95),
                ..Extra::default()
            },
        );
        Config::parse(&t, "new.toml").unwrap()
    };
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
    std::fs::write(
        &new_toml,
        rig::config_text(
            a1,
            a2,
            &dir.display().to_string(),
            Extra {
                rest: &rollout(40),
                ..Extra::default()
            },
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
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
}
