//! End-to-end tests of the data path (issue 2, SPEC §3 and §7): a real
//! rollgate on loopback port 0 in front of two tiny upstreams, spoken to over
//! HTTP/1.1, h2c and raw TCP.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use rollgate::routing::{Variant, WeightBp};
use rollgate::sticky::Sticky;
use tokio::sync::RwLock;

use common::*;

/// The memory test measures the whole process, so it runs alone: every other
/// test holds this lock shared, the memory test holds it exclusively.
static SERIAL: RwLock<()> = RwLock::const_new(());

/// Salt of the test configs (the default one).
const SALT: &str = "rollgate";

/// The variant the SPEC §3 rule gives a user key: V2 iff
/// xxh3(key, salt) mod 10000 < weight in basis points.
fn expected_variant(key: &str, pct: f64) -> &'static str {
    let sticky = Sticky::new(SALT, b"unused-for-buckets", None, None);
    match WeightBp::from_percent(pct)
        .unwrap()
        .pick(sticky.bucket(key.as_bytes()))
    {
        Variant::V1 => "v1",
        Variant::V2 => "v2",
    }
}

/// Sends one GET per key, `concurrency` at a time over keep-alive connections,
/// and returns each key's variant (in key order).
async fn variants(h: &Harness, keys: &[String], concurrency: usize) -> Vec<String> {
    let keys: Arc<Vec<String>> = Arc::new(keys.to_vec());
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let keys = keys.clone();
        let client = h.client.clone();
        let url = h.proxy("/split");
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (w..keys.len()).step_by(concurrency) {
                let r = client.get(&url, &[("x-user-id", &keys[i])]).await;
                assert_eq!(r.status, StatusCode::OK, "{}: {}", keys[i], r.text());
                let v = r.variant().to_string();
                assert_eq!(
                    r.header("x-upstream"),
                    Some(v.as_str()),
                    "variant header disagrees with the upstream"
                );
                out.push((i, v));
            }
            out
        }));
    }
    let mut all = vec![String::new(); keys.len()];
    for t in tasks {
        for (i, v) in t.await.expect("worker") {
            all[i] = v;
        }
    }
    all
}

fn count_v2(vs: &[String]) -> usize {
    vs.iter().filter(|v| *v == "v2").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_accuracy_at_0_10_and_100_percent() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();

    h.set_weight(10.0).await;
    let got = variants(&h, &keys, 32).await;
    let share = count_v2(&got) as f64 / keys.len() as f64;
    println!(
        "split: {} of {} users on V2 at 10% = {:.2}%",
        count_v2(&got),
        keys.len(),
        share * 100.0
    );
    assert!(
        (0.09..=0.11).contains(&share),
        "V2 share {share} outside 9-11%"
    );
    // Not just close: every user is where the documented rule puts them.
    for (k, v) in keys.iter().zip(&got) {
        assert_eq!(v, expected_variant(k, 10.0), "user {k}");
    }

    h.set_weight(0.0).await;
    let got = variants(&h, &keys[..2_000], 32).await;
    assert_eq!(count_v2(&got), 0, "nobody may reach V2 at 0%");

    h.set_weight(100.0).await;
    let got = variants(&h, &keys[..2_000], 32).await;
    assert_eq!(count_v2(&got), got.len(), "everybody reaches V2 at 100%");
    h.shutdown().await;
}

/// Both runtime layouts route by the same rule: `shared` (one worker, a task
/// on the caller's runtime) and `per_core` with two worker threads (each its
/// own SO_REUSEPORT listener, the control plane on the caller's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_and_multi_worker_per_core_runtimes_route_by_the_same_rule() {
    let _serial = SERIAL.read().await;
    let keys: Vec<String> = (0..2_000).map(|i| format!("layout-{i}")).collect();
    for server in [
        "runtime = \"shared\"\nworkers = 2",
        "runtime = \"per_core\"\nworkers = 2",
    ] {
        let (_v1, _v2, setup) = Setup::echo_pair().await;
        let h = setup.server(server).start().await;
        h.set_weight(50.0).await;
        // 16 connections, so the kernel spreads them over both listeners.
        let got = variants(&h, &keys, 16).await;
        for (k, v) in keys.iter().zip(&got) {
            assert_eq!(v, expected_variant(k, 50.0), "{server}: user {k}");
        }
        let v2 = count_v2(&got);
        assert!(v2 > 0 && v2 < keys.len(), "{server}: {v2} on V2");
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_variant_and_raising_the_weight_is_forward_only() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;

    // Stickiness: 10 users, 100 requests each, at 50%.
    h.set_weight(50.0).await;
    let mut seen = BTreeSet::new();
    for u in 0..10 {
        let key = format!("sticky-{u}");
        let first = h.variant_of(&key, "/").await;
        for _ in 1..100 {
            assert_eq!(
                h.variant_of(&key, "/").await,
                first,
                "user {key} changed variant"
            );
        }
        seen.insert(first);
    }
    assert_eq!(
        seen.len(),
        2,
        "10 users at 50% should land on both variants: {seen:?}"
    );

    // Forward only: 5% -> 25% -> 50% never moves a V2 user back.
    let keys: Vec<String> = (0..4_000).map(|i| format!("fwd-{i}")).collect();
    let on_v2 = |vs: &[String]| -> BTreeSet<String> {
        keys.iter()
            .zip(vs)
            .filter(|(_, v)| *v == "v2")
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut previous: BTreeSet<String> = BTreeSet::new();
    for pct in [5.0, 25.0, 50.0] {
        h.set_weight(pct).await;
        let now = on_v2(&variants(&h, &keys, 32).await);
        println!(
            "forward-only: {} of {} users on V2 at {pct}%",
            now.len(),
            keys.len()
        );
        let moved_back: Vec<_> = previous.difference(&now).collect();
        assert!(
            moved_back.is_empty(),
            "users moved back to V1 at {pct}%: {moved_back:?}"
        );
        assert!(
            now.len() > previous.len(),
            "raising to {pct}% added no V2 user"
        );
        previous = now;
    }
    h.shutdown().await;
}

/// The `rg_bucket=<value>` a response sets, checking the fixed attributes.
fn bucket_cookie(r: &Resp) -> String {
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "expected one Set-Cookie, got {cookies:?}");
    let c = &cookies[0];
    let value = c
        .strip_prefix("rg_bucket=")
        .and_then(|rest| rest.strip_suffix("; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000"))
        .unwrap_or_else(|| panic!("unexpected Set-Cookie {c:?}"));
    assert!(!value.contains(';') && !value.is_empty(), "{c:?}");
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rg_bucket_cookie_is_set_kept_and_replaced_when_tampered() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    h.set_weight(50.0).await;
    let url = h.proxy("/page");

    let mut variants_seen = BTreeSet::new();
    let mut values = BTreeSet::new();
    for _ in 0..40 {
        // A new client: no key, no cookie.
        let r = h.client.get(&url, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        let value = bucket_cookie(&r);
        let variant = r.variant().to_string();
        assert!(
            values.insert(value.clone()),
            "two new clients got the same cookie {value}"
        );

        // Sending it back keeps the variant and sets nothing new.
        let cookie = format!("theme=dark; rg_bucket={value}");
        for _ in 0..10 {
            let again = h.client.get(&url, &[("cookie", &cookie)]).await;
            assert_eq!(again.variant(), variant, "cookie {value} changed variant");
            assert_eq!(
                again.set_cookies(),
                Vec::<String>::new(),
                "a valid cookie must not be replaced"
            );
        }

        // A tampered signature is ignored and replaced.
        let mut forged = value.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        let r = h
            .client
            .get(&url, &[("cookie", &format!("rg_bucket={forged}"))])
            .await;
        let replaced = bucket_cookie(&r);
        assert_ne!(replaced, forged);
        assert_ne!(replaced, value);
        variants_seen.insert(variant);
    }
    assert_eq!(
        variants_seen.len(),
        2,
        "40 new clients at 50% should see both variants"
    );

    // Malformed values are replaced too.
    for bad in [
        "",
        "garbage",
        "0123456789abcdef",
        "0123456789abcdef.zz",
        "a.b.c",
    ] {
        let r = h
            .client
            .get(&url, &[("cookie", &format!("rg_bucket={bad}"))])
            .await;
        let replaced = bucket_cookie(&r);
        assert_ne!(replaced, bad);
    }

    // A user key wins: no cookie is ever set, with or without an old cookie.
    let r = h.client.get(&url, &[("x-user-id", "alice")]).await;
    assert_eq!(r.set_cookies(), Vec::<String>::new());
    let r = h
        .client
        .get(
            &url,
            &[
                ("x-user-id", "alice"),
                ("cookie", "rg_bucket=tampered.value"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies(), Vec::<String>::new());
    assert_eq!(r.variant(), expected_variant("alice", 50.0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_weight_change_is_seen_by_the_next_request() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;

    // A user in the middle of the population: V1 below its bucket, V2 above.
    let key = "switch-user";
    let bucket = Sticky::new(SALT, b"x", None, None).bucket(key.as_bytes()) as f64;
    let below = (bucket / 100.0 - 0.01).max(0.0);
    let above = bucket / 100.0 + 0.01;
    for round in 0..20 {
        h.set_weight(above).await;
        assert_eq!(
            h.variant_of(key, "/").await,
            "v2",
            "round {round}: weight {above}%"
        );
        if bucket > 0.0 {
            h.set_weight(below).await;
            assert_eq!(
                h.variant_of(key, "/").await,
                "v1",
                "round {round}: weight {below}%"
            );
        }
        h.set_weight(0.0).await;
        assert_eq!(
            h.variant_of(key, "/").await,
            "v1",
            "round {round}: weight 0"
        );
        h.set_weight(100.0).await;
        assert_eq!(
            h.variant_of(key, "/").await,
            "v2",
            "round {round}: weight 100"
        );
    }
    let s = h.status().await;
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["weights"]["v2"].as_f64(), Some(100.0), "{s}");
    assert_eq!(s["weights"]["v1"].as_f64(), Some(0.0), "{s}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutating_admin_calls_need_the_token() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
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
    for field in [
        "state",
        "weights",
        "flags",
        "approvals",
        "incidents",
        "frozen",
    ] {
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
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2c_requests_are_proxied() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    h.set_weight(100.0).await;
    let h2 = HttpClient::h2c();

    let r = h2
        .get(&h.proxy("/h2/page?q=1"), &[("x-user-id", "h2-user")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.variant(), "v2");
    let echo = r.json();
    assert_eq!(echo["upstream"], "v2");
    assert_eq!(echo["path"], "/h2/page");
    // The upstream hears HTTP/1.1 with the Host the client asked for.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], h.app.proxy_addr.to_string());
    assert_eq!(echo["headers"]["x-rollgate-variant"][0], "v2");

    // A request body over h2c, several streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let h2 = h2.clone();
        let url = h.proxy("/h2/upload");
        tasks.push(tokio::spawn(async move {
            let body = vec![b'a'; (1000 * i) as usize];
            let r = h2.post(&url, &[("x-user-id", "h2-user")], body).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["body_bytes"], 1000 * i);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_headers_are_added_and_request_ids_kept_or_made() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    h.set_weight(50.0).await;

    let r = h
        .client
        .get(
            &h.proxy("/fwd"),
            &[
                ("x-user-id", "fwd-user"),
                ("x-request-id", "req-abc-123"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-app", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let variant = r.variant().to_string();
    assert_eq!(variant, expected_variant("fwd-user", 50.0));
    let echo = r.json();
    let hdr = |n: &str| echo["headers"][n].clone();
    assert_eq!(echo["upstream"], variant.as_str());
    // The client is not a trusted proxy: its own claim is replaced.
    assert_eq!(hdr("x-forwarded-for"), serde_json::json!(["127.0.0.1"]));
    assert_eq!(hdr("x-forwarded-proto"), serde_json::json!(["http"]));
    assert_eq!(hdr("x-request-id"), serde_json::json!(["req-abc-123"]));
    assert_eq!(hdr("x-rollgate-variant"), serde_json::json!([variant]));
    assert_eq!(hdr("x-app"), serde_json::json!(["kept"]));
    assert_eq!(hdr("x-user-id"), serde_json::json!(["fwd-user"]));

    // Without a client id: a generated one, different per request.
    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let r = h
            .client
            .get(&h.proxy("/fwd"), &[("x-user-id", "fwd-user")])
            .await;
        let echo = r.json();
        assert_eq!(
            echo["headers"]["x-forwarded-for"],
            serde_json::json!(["127.0.0.1"])
        );
        let ids_here = echo["headers"]["x-request-id"]
            .as_array()
            .expect("x-request-id generated")
            .clone();
        assert_eq!(ids_here.len(), 1);
        let id = ids_here[0].as_str().unwrap().to_string();
        assert!(
            id.len() >= 16 && id.bytes().all(|b| b.is_ascii_graphic()),
            "request id {id:?}"
        );
        assert!(ids.insert(id.clone()), "request id {id} generated twice");
    }

    // A client-chosen variant header is not honoured (override is off by default)
    // and is replaced by the real one upstream.
    let other = if variant == "v1" { "v2" } else { "v1" };
    let r = h
        .client
        .get(
            &h.proxy("/fwd"),
            &[("x-user-id", "fwd-user"), ("x-rollgate-variant", other)],
        )
        .await;
    assert_eq!(r.variant(), variant);
    assert_eq!(
        r.json()["headers"]["x-rollgate-variant"],
        serde_json::json!([variant])
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;

    // Raw bytes, so no client library adds or drops anything.
    let req = "GET /hop HTTP/1.1\r\n\
               Host: example.test\r\n\
               x-user-id: hop-user\r\n\
               Connection: close, x-hop-secret, X-Other-Hop\r\n\
               x-hop-secret: 1\r\n\
               x-other-hop: 2\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: trailers\r\n\
               Upgrade: websocket\r\n\
               Proxy-Authorization: Basic c2VjcmV0\r\n\
               Proxy-Connection: keep-alive\r\n\
               x-end-to-end: stays\r\n\
               \r\n";
    let answer = raw_exchange(h.app.proxy_addr, req.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nx-rollgate-variant: v1"),
        "response lacks x-rollgate-variant: {head}"
    );
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let headers = echo["headers"].as_object().expect("echoed headers");
    for gone in [
        "x-hop-secret",
        "x-other-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {headers:?}"
        );
    }
    // `connection` may be set by the proxy's own client, but never to the client's list.
    if let Some(c) = headers.get("connection") {
        assert!(
            !c.to_string().contains("x-hop-secret"),
            "client Connection forwarded: {c}"
        );
    }
    assert_eq!(
        echo["headers"]["x-end-to-end"],
        serde_json::json!(["stays"])
    );
    assert_eq!(echo["headers"]["host"], serde_json::json!(["example.test"]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_megabyte_bodies_stream_both_ways_with_flat_memory() {
    // Alone in the process, so RSS is ours to read.
    let _serial = SERIAL.write().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    const SIZE: u64 = 50 * 1024 * 1024;
    const MB: f64 = 1024.0 * 1024.0;

    let upload = |len: u64| {
        Request::builder()
            .method(Method::POST)
            .uri(h.proxy("/upload"))
            .header("x-user-id", "big-user")
            .body(http_body_util::BodyExt::boxed(Repeat::new(len)))
            .unwrap()
    };
    let download = |len: u64| {
        Request::builder()
            .uri(h.proxy(&format!("{STREAM_PREFIX}{len}")))
            .header("x-user-id", "big-user")
            .body(empty())
            .unwrap()
    };
    // Warm up pools, buffers and allocator arenas with 1 MB each way.
    let r = h.client.send(upload(1 << 20)).await;
    assert_eq!(r.status(), StatusCode::OK);
    drain(r.into_body()).await;
    let r = h.client.send(download(1 << 20)).await;
    assert_eq!(drain(r.into_body()).await, 1 << 20);

    let base = proc_status_bytes("VmRSS");
    // Reset the peak-RSS counter when the kernel lets us (Linux >= 4.0).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_bytes("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // 50 MB up: the upstream counts what arrives, frame by frame.
    let r = h.client.send(upload(SIZE)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let variant = r.headers()["x-rollgate-variant"]
        .to_str()
        .unwrap()
        .to_string();
    let echo: serde_json::Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(echo["body_bytes"], SIZE, "request body truncated");
    assert_eq!(echo["upstream"], variant.as_str());

    // 50 MB down, read frame by frame.
    let r = h.client.send(download(SIZE)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(drain(r.into_body()).await, SIZE, "response body truncated");

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut top = peak.load(Ordering::Relaxed);
    if hwm_reset {
        top = top.max(proc_status_bytes("VmHWM"));
    }
    let growth = top.saturating_sub(base);
    println!(
        "streaming: RSS before {:.1} MB, peak during 2 x 50 MB {:.1} MB, growth {:.1} MB (VmHWM reset: {hwm_reset})",
        base as f64 / MB,
        top as f64 / MB,
        growth as f64 / MB
    );
    assert!(
        growth < 25 * 1024 * 1024,
        "RSS grew by {:.1} MB while streaming 50 MB bodies: the proxy buffers them",
        growth as f64 / MB
    );
    h.shutdown().await;
}

/// `x-user-id` keys that the SPEC §3 rule puts on each variant at `pct`.
fn keys_on(pct: f64, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for i in 0.. {
        let k = format!("u-{i}");
        match expected_variant(&k, pct) {
            "v1" if v1.len() < n => v1.push(k),
            "v2" if v2.len() < n => v2.push(k),
            _ => {}
        }
        if v1.len() == n && v2.len() == n {
            break;
        }
    }
    (v1, v2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_down_is_502_counted_as_connect_and_v1_users_are_unaffected() {
    let _serial = SERIAL.read().await;
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let dead = closed_port().await;
    let h = Setup::new(v1.url(), format!("http://{dead}"))
        .routing("sticky_header = \"x-user-id\"")
        .start()
        .await;
    h.set_weight(50.0).await;
    let (v1_keys, v2_keys) = keys_on(50.0, 20);
    let connect_errors = |m: &str| {
        metric(
            m,
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "connect")],
        )
    };
    assert_eq!(connect_errors(&h.metrics().await), Some(0.0));

    for (a, b) in v1_keys.iter().zip(&v2_keys) {
        let r = h.client.get(&h.proxy("/x"), &[("x-user-id", b)]).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "V2 user {b}: {}",
            r.text()
        );
        assert_eq!(r.variant(), "v2");
        let r = h.client.get(&h.proxy("/x"), &[("x-user-id", a)]).await;
        assert_eq!(r.status, StatusCode::OK, "V1 user {a}: {}", r.text());
        assert_eq!(r.json()["upstream"], "v1");
    }
    let m = h.metrics().await;
    assert_eq!(connect_errors(&m), Some(v2_keys.len() as f64), "{m}");
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v1"), ("kind", "connect")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "rollgate_requests_total",
            &[("journey", "other"), ("variant", "v2"), ("class", "5xx")]
        ),
        Some(v2_keys.len() as f64)
    );
    assert_eq!(
        metric(
            &m,
            "rollgate_requests_total",
            &[("journey", "other"), ("variant", "v1"), ("class", "2xx")]
        ),
        Some(v1_keys.len() as f64)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_slower_than_the_timeout_is_504_counted_as_timeout_and_v1_users_are_unaffected() {
    let _serial = SERIAL.read().await;
    let v1 = Upstream::start("v1", Mode::Echo).await;
    let v2 = Upstream::start("v2", Mode::Slow(Duration::from_secs(5))).await;
    let h = Setup::new(v1.url(), v2.url())
        .routing("sticky_header = \"x-user-id\"")
        .upstreams("timeout = \"300ms\"")
        .start()
        .await;
    h.set_weight(50.0).await;
    let (v1_keys, v2_keys) = keys_on(50.0, 8);

    // V2 users wait concurrently; V1 users are served meanwhile.
    let slow: Vec<_> = v2_keys
        .iter()
        .map(|k| {
            let (client, url, k) = (h.client.clone(), h.proxy("/slow"), k.clone());
            tokio::spawn(async move { client.get(&url, &[("x-user-id", &k)]).await })
        })
        .collect();
    for k in &v1_keys {
        let r = h.client.get(&h.proxy("/fast"), &[("x-user-id", k)]).await;
        assert_eq!(r.status, StatusCode::OK, "V1 user {k}: {}", r.text());
        assert_eq!(r.variant(), "v1");
    }
    for t in slow {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
        assert_eq!(r.variant(), "v2");
    }
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v2"), ("kind", "timeout")]
        ),
        Some(v2_keys.len() as f64),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "rollgate_upstream_errors_total",
            &[("variant", "v1"), ("kind", "timeout")]
        ),
        Some(0.0)
    );
    // Still fine for V1 afterwards.
    assert_eq!(h.variant_of(&v1_keys[0], "/after").await, "v1");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_headers_are_431_malformed_requests_400_and_service_continues() {
    let _serial = SERIAL.read().await;
    let (_v1, _v2, setup) = Setup::echo_pair().await;
    let h = setup.start().await;
    let addr = h.app.proxy_addr;

    // One header of 40 KiB, then many small ones adding up to 40 KiB.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..400)
            .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(100)))
            .collect::<String>()
    );
    for req in [&big, &many] {
        let answer = raw_exchange(addr, req.as_bytes()).await;
        assert_eq!(
            raw_status(&answer),
            431,
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // Just under the limit is fine.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fits: {}\r\n\r\n",
        "c".repeat(16 * 1024)
    );
    assert_eq!(raw_status(&raw_exchange(addr, fits.as_bytes()).await), 200);

    for bad in [
        "NOT A VALID REQUEST LINE\r\n\r\n",
        "GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    ] {
        let answer = raw_exchange(addr, bad.as_bytes()).await;
        assert_eq!(raw_status(&answer), 400, "{bad:?} -> {answer:?}");
    }

    // The proxy is still serving.
    let r = h
        .client
        .get(&h.proxy("/still-up"), &[("x-user-id", "ok")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/still-up");
    let r = HttpClient::h2c().get(&h.proxy("/still-up"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_carry_the_variant_header_unless_disabled() {
    let _serial = SERIAL.read().await;
    let (v1, v2, _) = Setup::echo_pair().await;
    let h = Setup::new(v1.url(), v2.url())
        .routing("sticky_header = \"x-user-id\"\nexpose_variant_header = false")
        .start()
        .await;
    let r = h
        .client
        .get(&h.proxy("/"), &[("x-user-id", "hidden")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rollgate-variant"), None);
    // The upstream still learns its variant.
    assert_eq!(
        r.json()["headers"]["x-rollgate-variant"],
        serde_json::json!(["v1"])
    );
    h.shutdown().await;
}
