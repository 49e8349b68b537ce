//! The Prometheus ecosystem files in `config/`: `promtool` accepts the scrape
//! config and the alert rules, and every `rollgate_*` metric the rules and the
//! Grafana dashboard query exists in a real `/metrics` scrape of a running
//! instance after some traffic and one manual rollback.
//!
//! One allowance, and only one: the client-beacon families
//! (`rollgate_beacon_*`) may be missing from the scrape, because no beacon
//! counter has a series before its first event and this test sends none. Every other name must be scraped, so a typo or a renamed metric
//! fails here rather than in an empty Grafana panel.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollgate::control::Command as AdminCommand;

use harness::config::short_rollout;
use harness::Rg;

/// Beacon families, which have no series before the first beacon event.
const BEACON_FAMILIES: [&str; 2] = [
    "rollgate_beacon_events_total",
    "rollgate_beacon_rejected_total",
];

fn config_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool").args(args).output().unwrap_or_else(|e| {
        panic!("promtool is not runnable ({e}): run scripts/test.sh, which installs it (Debian package prometheus)")
    });
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_rules_and_config() {
    let rules = config_file("prometheus-alerts.yml");
    let config = config_file("prometheus.yml");
    promtool(&["check", "rules", &rules.display().to_string()]);
    // Also checks the rule files it names, resolved next to it.
    promtool(&["check", "config", &config.display().to_string()]);
}

/// Metric family names in a text: `rollgate_` words, histogram suffixes stripped.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("rollgate_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(family(&text[start..end]).to_string());
        }
        i = end;
    }
    names
}

fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Family names that have at least one sample in a scrape.
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| family(n).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_referenced_metric_is_scraped() {
    let dashboard =
        std::fs::read_to_string(config_file("grafana-dashboard.json")).expect("dashboard");
    let rules = std::fs::read_to_string(config_file("prometheus-alerts.yml")).expect("rules");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 10));
    assert!(
        dashboard.contains("histogram_quantile(0.95")
            && dashboard.contains("histogram_quantile(0.99")
    );
    let mut wanted = referenced_names(&dashboard);
    wanted.extend(referenced_names(&rules));
    assert!(wanted.len() >= 10, "{wanted:?}");

    let mut rg = Rg::demo(&short_rollout("1h")).await;
    rg.traffic(60, 120.0);
    // Wait for traffic in the window and evaluated gates, then roll back once.
    let control = rg.app.control.clone();
    for _ in 0..80 {
        if !control.status().gates.is_empty() && control.status().evaluation.v2.requests > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!control.status().gates.is_empty(), "gates were evaluated");
    control
        .command(AdminCommand::Rollback, "test")
        .await
        .expect("manual rollback");
    let r = rg.client.get(&rg.admin("/metrics"), &[]).await;
    let (code, scrape) = (r.status, r.text());
    rg.shutdown().await;
    assert_eq!(code, 200);
    let have = scraped_names(&scrape);

    let mut missing = Vec::new();
    let mut allowed = Vec::new();
    for name in &wanted {
        if have.contains(name) {
            continue;
        }
        if BEACON_FAMILIES.contains(&name.as_str()) {
            allowed.push(name.clone());
        } else {
            missing.push(name.clone());
        }
    }
    if !allowed.is_empty() {
        eprintln!("note: beacon families not rendered yet (no beacon event yet): {allowed:?}");
    }
    assert!(
        missing.is_empty(),
        "metrics referenced by config/grafana-dashboard.json or config/prometheus-alerts.yml \
         but absent from /metrics: {missing:?}\nscraped: {have:?}"
    );
    assert!(
        scrape.contains("rollgate_rollbacks_total{reason=\"manual\"} 1"),
        "{scrape}"
    );
}

#[test]
fn name_extraction() {
    let names = referenced_names(
        "histogram_quantile(0.95, rate(rollgate_request_duration_seconds_bucket[5m])) / x_rollgate_not \
         rollgate_requests_total{class=\"5xx\"}",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "rollgate_request_duration_seconds",
            "rollgate_requests_total"
        ]
    );
}
