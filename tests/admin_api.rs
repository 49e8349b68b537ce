//! The admin API: the token on every mutating endpoint, bad bodies (not
//! JSON, too large, wrong types, out of range), unknown paths and wrong
//! methods, the freeze lock, and the semantics of approvals, incidents and
//! conflicting commands. Every refused call changes nothing.

mod harness;

use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use harness::api::{reason_of, state_of};
use harness::config::{seed_phases, FLAGS};
use harness::upstream::healthy;
use harness::{HttpClient, Rg, DEADLINE};

/// The parts of the status no refused call may change.
const DURABLE: [&str; 6] = [
    "state",
    "weights",
    "flags",
    "approvals",
    "incidents",
    "frozen",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutating_admin_calls_need_the_token() {
    let (_v1, _v2, h) = Rg::echo("").await;
    h.set_weight(7.0).await;
    let before = h.status().await;

    let wrong = format!("Bearer {}x", h.token);
    let lower = format!("bearer {}", h.token);
    let basic = format!("Basic {}", h.token);
    let bad_auth: [&[(&str, &str)]; 6] = [
        &[],
        &[("authorization", "Bearer wrong")],
        &[("authorization", &wrong)],
        &[("authorization", "Bearer ")],
        &[("authorization", &lower)],
        &[("authorization", &basic)],
    ];
    let mutating: Vec<_> = rollgate::admin::ROUTES
        .iter()
        .filter(|r| r.mutating)
        .collect();
    assert!(
        mutating.len() >= 10,
        "ROUTES lists the mutating endpoints: {mutating:?}"
    );
    for route in &mutating {
        assert!(
            !route.path.contains('{'),
            "parametrised mutating route {}",
            route.path
        );
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let body = match route.path {
            "/api/v1/weights" => r#"{"v2": 50}"#,
            "/api/v1/flags" => r#"{"SHADOW_PASS_24H": 1}"#,
            "/api/v1/approvals" => r#"{"role": "cfo", "by": "mallory"}"#,
            "/api/v1/incidents" => r#"{"severity": 1, "summary": "fake"}"#,
            _ => "",
        };
        for headers in bad_auth {
            let mut hs = headers.to_vec();
            hs.push(("content-type", "application/json"));
            let r = h
                .client
                .request(method.clone(), &h.admin(route.path), &hs, body)
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{} {} with {headers:?}: {}",
                route.method,
                route.path,
                r.text()
            );
        }
    }
    // Nothing changed: same weights, flags, approvals, incidents, state.
    let after = h.status().await;
    for field in DURABLE {
        assert_eq!(
            before[field], after[field],
            "{field} changed by an unauthorized call"
        );
    }

    // Reads need no token.
    for route in rollgate::admin::ROUTES
        .iter()
        .filter(|r| !r.mutating && !r.path.contains('{'))
    {
        let r = h.client.get(&h.admin(route.path), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "GET {}", route.path);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_weight_requests_are_400_naming_the_field() {
    let (_v1, _v2, h) = Rg::echo("").await;
    h.set_weight(12.5).await;
    let auth = h.bearer();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let url = h.admin("/api/v1/weights");

    for body in ["{not json", "", "[1,", "v2=10"] {
        let r = h.client.put(&url, &headers, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "body {body:?}: {}",
            r.text()
        );
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            r.text()
        );
    }
    for body in [
        r#"{"v2": 100.5}"#,
        r#"{"v2": -1}"#,
        r#"{"v2": 1000}"#,
        r#"{"v2": "ten"}"#,
        r#"{"v2": null}"#,
        r#"{"v1": 10}"#,
        r#"{}"#,
        r#"[10]"#,
    ] {
        let r = h.client.put(&url, &headers, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "body {body}: {}",
            r.text()
        );
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains("v2"),
            "the error must name the field `v2`: {err:?} (body {body})"
        );
    }
    // None of them changed the weight.
    assert_eq!(h.status().await["weights"]["v2"].as_f64(), Some(12.5));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bad_json_wrong_types_ranges_paths_and_methods() {
    let (_v1, _v2, rg) = Rg::echo("").await;
    let weights = rg
        .call(Method::PUT, "/api/v1/weights", r#"{"v2": 12.5}"#)
        .await;
    assert_eq!(weights.status, StatusCode::OK, "{}", weights.text());
    let before = rg.status().await;

    // Not JSON at all, on every endpoint that reads a body.
    for path in [
        "/api/v1/weights",
        "/api/v1/flags",
        "/api/v1/approvals",
        "/api/v1/incidents",
    ] {
        let method = if path.ends_with("weights") || path.ends_with("flags") {
            Method::PUT
        } else {
            Method::POST
        };
        for body in [
            &b"{not json"[..],
            b"",
            b"[1,",
            b"v2=10",
            b"\xff\xfe\x00",
            b"{\"v2\": NaN}",
            b"{\"v2\": 1}{\"v2\": 2}",
        ] {
            let r = rg
                .call(method.clone(), path, Bytes::copy_from_slice(body))
                .await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path} {body:?}: {}",
                r.text()
            );
            assert!(
                r.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("JSON")),
                "{path}: {}",
                r.text()
            );
        }
        // Over the 64 KiB body limit.
        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
        let r = rg.call(method.clone(), path, huge).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text()
        );
    }

    // Valid JSON, wrong types or out of range: 400 naming the field.
    let cases: &[(Method, &str, Value, &str)] = &[
        (Method::PUT, "/api/v1/weights", json!({"v2": "ten"}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": true}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": [5]}), "v2"),
        (
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": {"pct": 5}}),
            "v2",
        ),
        (Method::PUT, "/api/v1/weights", json!({"v2": null}), "v2"),
        (
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": 100.0001}),
            "v2",
        ),
        (Method::PUT, "/api/v1/weights", json!({"v2": -0.5}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": 1e308}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v1": 10}), "v2"),
        (Method::PUT, "/api/v1/weights", json!(42), "v2"),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": "1"}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": 2}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"SHADOW_PASS_24H": 0.5}),
            "SHADOW_PASS_24H",
        ),
        (
            Method::PUT,
            "/api/v1/flags",
            json!({"EVIDENCE_BUNDLE": -1}),
            "EVIDENCE_BUNDLE",
        ),
        (Method::PUT, "/api/v1/flags", json!({}), "flags"),
        (
            Method::PUT,
            "/api/v1/flags",
            json!(["SHADOW_PASS_24H"]),
            "flags",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": 5, "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "cfo"}),
            "by",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "  ", "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "cfo", "by": ["x"]}),
            "by",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "x".repeat(2000), "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 3, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 0, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": "1", "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 1.5, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2}),
            "summary",
        ),
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 2, "summary": 7}),
            "summary",
        ),
    ];
    for (method, path, body, field) in cases {
        rg.assert_bad_field(method.clone(), path, body, field).await;
    }

    // Unknown paths are 404, known paths with another method 405 + Allow.
    for path in [
        "/api/v1/nope",
        "/api/v1/weights/extra",
        "/API/V1/STATUS",
        "/api/v2/status",
        "/api/v1/reports/",
        "/api/v1/reports/a/b",
        "/%2e%2e/etc/passwd",
    ] {
        let r = rg.client.get(&rg.admin(path), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {path}: {}", r.text());
    }
    for id in ["..", "..%2Fstate", "nope", "1;rm", "%00"] {
        let r = rg
            .client
            .get(&rg.admin(&format!("/api/v1/reports/{id}")), &[])
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "report {id:?}: {}",
            r.text()
        );
    }
    for (method, path, allow) in [
        (Method::GET, "/api/v1/weights", "PUT"),
        (Method::POST, "/api/v1/weights", "PUT"),
        (Method::DELETE, "/api/v1/status", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::GET, "/api/v1/rollout/rollback", "POST"),
        (Method::PATCH, "/api/v1/flags", "PUT"),
    ] {
        let r = rg.call(method.clone(), path, "{}").await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.text()
        );
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }

    // Nothing above changed the rollout.
    let after = rg.status().await;
    for field in DURABLE {
        assert_eq!(
            before[field], after[field],
            "{field} changed by a refused call"
        );
    }
    rg.assert_serving("bad admin input").await;
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_weights_are_423_until_unfrozen() {
    // A one-phase rollout straight to 100 % with a one-second sustain: it
    // promotes and re-freezes (FREEZE_LOCK) after a few seconds of traffic.
    let rollout = format!(
        "auto_start = true\ntick = \"100ms\"\nwindow = \"1s\"\nmin_samples = 5\nfull_sustain = \"1s\"\n\
         {FLAGS}[[rollout.phases]]\nname = \"full\"\nweight = 100\n"
    );
    let (v1, v2) = (healthy("v1", 2.0, 5.0), healthy("v2", 2.0, 5.0));
    let rg = Rg::with_apps(v1, v2, |c| c.rollout(&rollout)).await;
    let client = HttpClient::http1();
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        let s = rg.status().await;
        if s["state"] == "promoted" && s["frozen"] == true {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not promoted and frozen: {s}");
        for _ in 0..10 {
            i += 1;
            let _ = client
                .get(&rg.proxy("/search"), &[("x-user-id", &format!("u{i}"))])
                .await;
        }
    }
    for (method, path, body) in [
        (Method::PUT, "/api/v1/weights", json!({"v2": 30})),
        (Method::PUT, "/api/v1/weights", json!({"v2": 0})),
        (Method::POST, "/api/v1/rollout/start", Value::Null),
    ] {
        let r = rg.call(method.clone(), path, body.to_string()).await;
        assert_eq!(
            r.status,
            StatusCode::LOCKED,
            "{method} {path}: {}",
            r.text()
        );
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let s = rg.status().await;
    assert_eq!(s["weights"]["v2"].as_f64(), Some(100.0), "{s}");
    assert_eq!(s["frozen"], true);
    rg.assert_serving("refused weight changes while frozen")
        .await;
    let r = rg.call(Method::POST, "/api/v1/unfreeze", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = rg
        .call(
            Method::PUT,
            "/api/v1/weights",
            json!({"v2": 30}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    rg.shutdown().await;
}

/// `POST /api/v1/incidents`; panics unless 200.
async fn incident(rig: &Rg, severity: u8, summary: &str) -> harness::Resp {
    let body = json!({"severity": severity, "summary": summary});
    let r = rig.call_json(Method::POST, "/api/v1/incidents", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_approvals_incidents_validation_and_conflicts() {
    let rollout = format!(
        "auto_start = true\ntick = \"1h\"\nwindow = \"1h\"\n{FLAGS}\n{}",
        seed_phases("1h", None)
    );
    let rig = Rg::with_apps(healthy("v1", 3.0, 8.0), healthy("v2", 3.0, 8.0), |c| {
        c.with_journeys().rollout(&rollout)
    })
    .await;
    rig.wait_for("in canary-5", |s| state_of(s) == "canary")
        .await;

    // Approvals are recorded with role and who.
    let no_token = rig
        .client
        .post(
            &rig.admin("/api/v1/approvals"),
            &[],
            json!({"role": "cfo", "by": "x"}).to_string(),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let r = rig
        .call_json(
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "cfo", "by": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let approvals = rig.status().await["approvals"].clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
    assert_eq!(approvals[0]["role"], "cfo");
    assert_eq!(approvals[0]["by"], "x");
    assert!(approvals[0]["at"].is_string());

    // Invalid bodies: 400 naming the field, and nothing changes.
    for (method, path, body, field) in [
        (
            Method::POST,
            "/api/v1/incidents",
            json!({"severity": 3, "summary": "s"}),
            "severity",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": 5, "by": "x"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v1/approvals",
            json!({"role": "ceo"}),
            "by",
        ),
        (Method::PUT, "/api/v1/flags", json!({"X": 2}), "X"),
        (Method::PUT, "/api/v1/weights", json!({"v2": 101}), "v2"),
        (Method::PUT, "/api/v1/weights", json!({"v2": "ten"}), "v2"),
    ] {
        rig.assert_bad_field(method, path, &body, field).await;
    }
    let auth = format!("Bearer {}", rig.token);
    let r = rig
        .client
        .put(
            &rig.admin("/api/v1/flags"),
            &[("authorization", auth.as_str())],
            "{not json",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let s = rig.status().await;
    assert_eq!(state_of(&s), "canary");
    assert_eq!(s["approvals"].as_array().map(Vec::len), Some(1));
    assert!(s["flags"].get("X").is_none(), "{}", s["flags"]);

    // Starting a rollout that is running is a conflict.
    let r = rig
        .call_json(Method::POST, "/api/v1/rollout/start", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // One Sev-2 is noted; the second holds for a manual decision.
    let r = incident(&rig, 2, "slow search").await;
    assert_eq!(state_of(&r.json()), "canary");
    let r = incident(&rig, 2, "slow detail").await;
    let s = r.json();
    assert_eq!(state_of(&s), "holding", "{s}");
    assert_eq!(s["last_decision"]["action"], "HOLD");
    assert!(reason_of(&s).starts_with("incidents"), "{}", reason_of(&s));
    assert_eq!(s["weights"]["v2"].as_f64(), Some(5.0));

    // A Sev-1 rolls back at once: the answer to the POST already shows it.
    let r = incident(&rig, 1, "payments down").await;
    let s = r.json();
    assert_eq!(state_of(&s), "rolled_back", "{s}");
    assert_eq!(s["last_decision"]["action"], "ROLLBACK");
    assert_eq!(s["last_decision"]["trigger"], "sev1_incident");
    assert!(
        reason_of(&s).starts_with("sev1_incident"),
        "{}",
        reason_of(&s)
    );
    assert_eq!(s["weights"]["v2"].as_f64(), Some(0.0));
    let incidents = s["incidents"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        incidents
            .iter()
            .map(|i| i["severity"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 2, 1]
    );
    for i in 0..30 {
        assert_eq!(rig.variant_of(&format!("u{i}"), "/search").await, "v1");
    }
    // A rolled-back rollout cannot be rolled back again.
    let r = rig
        .call_json(Method::POST, "/api/v1/rollout/rollback", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    rig.shutdown().await;
}
