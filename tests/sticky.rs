//! Sticky weighted routing through a real rollgate: the split matches the
//! documented rule user by user, a user keeps their variant, raising the
//! weight only moves users from V1 to V2, the signed `rg_bucket` cookie, and
//! a weight change seen by the very next request.

mod harness;

use std::collections::BTreeSet;
use std::sync::Arc;

use http::StatusCode;
use rollgate::edge::sticky::Sticky;

use harness::{expected_variant, Resp, Rg, SALT};

/// Sends one GET per key, `concurrency` at a time over keep-alive connections,
/// and returns each key's variant (in key order).
async fn variants(h: &Rg, keys: &[String], concurrency: usize) -> Vec<String> {
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
    let (_v1, _v2, h) = Rg::echo("").await;
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
    let keys: Vec<String> = (0..2_000).map(|i| format!("layout-{i}")).collect();
    for server in [
        "runtime = \"shared\"\nworkers = 2",
        "runtime = \"per_core\"\nworkers = 2",
    ] {
        let (_v1, _v2, h) = Rg::echo(server).await;
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
    let (_v1, _v2, h) = Rg::echo("").await;

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

/// The new `rg_bucket` a request with the cookie `rg_bucket=<value>` is given.
async fn replaced_cookie(h: &Rg, url: &str, value: &str) -> String {
    let r = h
        .client
        .get(url, &[("cookie", &format!("rg_bucket={value}"))])
        .await;
    bucket_cookie(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rg_bucket_cookie_is_set_kept_and_replaced_when_tampered() {
    let (_v1, _v2, h) = Rg::echo("").await;
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
        let replaced = replaced_cookie(&h, &url, &forged).await;
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
        let replaced = replaced_cookie(&h, &url, bad).await;
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
    let (_v1, _v2, h) = Rg::echo("").await;

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
