//! `/metrics` carries every documented metric family that exists, each with HELP and
//! TYPE, with consistent values, and passes `promtool check metrics`.

mod harness;

use std::time::{Duration, Instant};

use http::StatusCode;

use harness::metrics::{parse_samples, promtool_check};
use harness::upstream::closed_port;
use harness::{metric, Conf, Mode, Rg, Upstream};

/// The documented families and their Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    ("rollgate_requests_total", "counter"),
    ("rollgate_request_duration_seconds", "histogram"),
    ("rollgate_upstream_errors_total", "counter"),
    ("rollgate_inflight_requests", "gauge"),
    ("rollgate_route_weight_percent", "gauge"),
    ("rollgate_rollout_phase", "gauge"),
    ("rollgate_gate_status", "gauge"),
    ("rollgate_rollbacks_total", "counter"),
    ("rollgate_shed_requests_total", "counter"),
];

/// Families that only have series once a beacon arrived; checked when present.
const LATER_FAMILIES: &[(&str, &str)] = &[
    ("rollgate_beacon_events_total", "counter"),
    ("rollgate_beacon_rejected_total", "counter"),
];

fn has_family(text: &str, name: &str, kind: &str) -> Result<(), String> {
    let help = text.lines().any(|l| {
        l.strip_prefix("# HELP ")
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with(' ') && r.len() > 1)
    });
    let ty = text.lines().any(|l| l == format!("# TYPE {name} {kind}"));
    let samples = parse_samples(text).iter().any(|s| {
        s.name == name
            || (kind == "histogram"
                && s.name
                    .strip_prefix(name)
                    .is_some_and(|r| ["_bucket", "_sum", "_count"].contains(&r)))
    });
    match (help, ty, samples) {
        (true, true, true) => Ok(()),
        _ => Err(format!(
            "{name}: HELP {help}, TYPE {kind} {ty}, samples {samples}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_has_every_spec_family_and_passes_promtool() {
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let dead = closed_port().await;
    // A short tick so gates get evaluated while the test runs.
    let conf = Conf::new(v1.url(), format!("http://{dead}"))
        .rollout("auto_start = false\ntick = \"100ms\"\nwindow = \"1s\"")
        .section("[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n");
    let h = Rg::start(&conf).await;

    // Traffic: 30 searches on V1, then V2 (down) for one request.
    for i in 0..30 {
        let r = h
            .client
            .get(
                &h.proxy(&format!("/search?q={i}")),
                &[("x-user-id", "m-user")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    h.set_weight(100.0).await;
    let r = h
        .client
        .get(&h.proxy("/home"), &[("x-user-id", "m-user")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // A manual rollback, counted by reason.
    let auth = h.bearer();
    let r = h
        .client
        .post(
            &h.admin("/api/v1/rollout/rollback"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Wait (bounded) for a tick that evaluated gates after the rollback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = h.metrics().await;
        let ready = metric(&text, "rollgate_gate_status", &[]).is_some()
            && metric(&text, "rollgate_rollbacks_total", &[("reason", "manual")]).is_some();
        if ready {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no gate status / rollback series after 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let missing: Vec<String> = FAMILIES
        .iter()
        .filter_map(|(n, k)| has_family(&text, n, k).err())
        .collect();
    assert!(
        missing.is_empty(),
        "families missing or incomplete: {missing:#?}\n{text}"
    );
    for (n, k) in LATER_FAMILIES {
        if text.contains(n) {
            has_family(&text, n, k).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
    // Every rollgate family on the page has HELP and TYPE, once each.
    for s in parse_samples(&text)
        .iter()
        .filter(|s| s.name.starts_with("rollgate_"))
    {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                let base = s.name.strip_suffix(suf)?;
                text.contains(&format!("# TYPE {base} histogram"))
                    .then_some(base)
            })
            .unwrap_or(&s.name);
        for kind in ["HELP", "TYPE"] {
            let n = text
                .lines()
                .filter(|l| l.starts_with(&format!("# {kind} {family} ")))
                .count();
            assert_eq!(n, 1, "{family} has {n} {kind} lines");
        }
    }

    // Values agree with the traffic.
    let v = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}\n{text}"))
    };
    assert_eq!(
        v(
            "rollgate_requests_total",
            &[("journey", "search"), ("variant", "v1"), ("class", "2xx")]
        ),
        30.0
    );
    assert_eq!(
        v(
            "rollgate_requests_total",
            &[("journey", "other"), ("variant", "v2"), ("class", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "rollgate_requests_total",
            &[("journey", "search"), ("variant", "v2"), ("class", "2xx")]
        ),
        0.0
    );
    assert_eq!(
        v(
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "connect")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "timeout")]
        ),
        0.0
    );
    assert_eq!(v("rollgate_inflight_requests", &[("variant", "v1")]), 0.0);
    assert_eq!(v("rollgate_inflight_requests", &[("variant", "v2")]), 0.0);
    assert_eq!(v("rollgate_shed_requests_total", &[("variant", "v2")]), 0.0);
    assert_eq!(v("rollgate_rollbacks_total", &[("reason", "manual")]), 1.0);
    // Rolled back: all traffic on V1.
    assert_eq!(
        v("rollgate_route_weight_percent", &[("variant", "v2")]),
        0.0
    );
    assert_eq!(
        v("rollgate_route_weight_percent", &[("variant", "v1")]),
        100.0
    );
    assert!(parse_samples(&text)
        .iter()
        .any(|s| s.name == "rollgate_rollout_phase"));
    let gate = v("rollgate_gate_status", &[("gate", "error_rate")]);
    assert!([0.0, 1.0, 2.0].contains(&gate), "gate status {gate}");

    // The histogram: cumulative buckets ending in +Inf == _count.
    let labels = [("journey", "search"), ("variant", "v1")];
    let buckets: Vec<(f64, f64)> = parse_samples(&text)
        .into_iter()
        .filter(|s| {
            s.name == "rollgate_request_duration_seconds_bucket"
                && labels
                    .iter()
                    .all(|(k, val)| s.labels.get(*k).map(String::as_str) == Some(*val))
        })
        .map(|s| {
            let le = s.labels["le"].as_str();
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                s.value,
            )
        })
        .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "not cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 30.0));
    assert_eq!(v("rollgate_request_duration_seconds_count", &labels), 30.0);
    assert!(v("rollgate_request_duration_seconds_sum", &labels) > 0.0);
    for le in ["0.12", "0.13", "0.16"] {
        assert!(
            buckets
                .iter()
                .any(|(b, _)| *b == le.parse::<f64>().unwrap()),
            "no le={le} bucket (gate thresholds)"
        );
    }

    promtool_check(&text);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_an_idle_proxy_pass_promtool() {
    let (v1, v2) = Upstream::pair().await;
    let h = Rg::start(&Conf::new(v1.url(), v2.url())).await;
    // The controller exports its gauges on its first tick, right after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = h.metrics().await;
        if metric(&text, "rollgate_route_weight_percent", &[]).is_some() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no rollgate_route_weight_percent after 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (n, k) in FAMILIES
        .iter()
        .filter(|(n, _)| !n.contains("gate_status") && !n.contains("rollbacks"))
    {
        has_family(&text, n, k).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    promtool_check(&text);
    h.shutdown().await;
}
