//! Parsers under attack, as properties:
//! - config parsing never panics on arbitrary TOML-ish text, and every error
//!   names a key (in backticks) or a parse position (`line N`);
//! - the sticky cookie check never panics and accepts exactly the values it
//!   signed, byte for byte;
//! - journey matching never panics on arbitrary paths and agrees with a
//!   reference model of the documented rules (unmatched -> `other`);
//! - admin JSON bodies never panic the admin API: a running server answers
//!   every generated body with a documented status.
//!
//! Beacon bodies are `beacons.rs`'s. Case counts are proptest's defaults unless
//! `PROPTEST_CASES` says otherwise.

mod harness;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use rollgate::edge::sticky::Sticky;
use rollgate::routing::journeys::{method_bit, Journey, JourneyKind, Journeys, PathMatch};
use rollgate::Config;
use serde_json::Value;

use harness::config::MINIMAL;

// ===== config =====

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"127.0.0.1:8080\"".to_string()),
        Just("\"15s\"".to_string()),
        Just("\"http://127.0.0.1:1\"".to_string()),
        Just("\"always\"".to_string()),
        Just("true".to_string()),
        Just("[\"GET\", \"POST\"]".to_string()),
        Just("{ start = \"09:00\", end = \"18:00\" }".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        "[a-z0-9_./:\\[\\]{}=\" ,-]{0,16}",
    ]
}

fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "listen",
            "admin_listen",
            "admin_token",
            "state_dir",
            "max_header_bytes",
            "workers",
            "runtime",
            "header_read_timeout",
            "max_connections",
            "drain_timeout",
            "v1",
            "v2",
            "timeout",
            "connect_timeout",
            "sticky_header",
            "salt",
            "cookie_secret",
            "name",
            "path_prefix",
            "path_pattern",
            "methods",
            "kind",
            "p95_ms",
            "success_min",
            "tick",
            "window",
            "min_samples",
            "error_rate_max",
            "weight",
            "hold",
            "approval",
            "promotion_window",
            "full_sustain",
            "EVIDENCE_BUNDLE",
            "mode",
            "headers",
            "cert",
            "key",
        ])
        .prop_map(String::from),
        "[a-zA-Z_][a-zA-Z0-9_-]{0,10}",
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (toml_key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(vec![
            "[server]", "[upstreams]", "[routing]", "[rollout]", "[rollout.flags]",
            "[[journeys]]", "[[rollout.phases]]", "[server.tls]", "[nope]", "[[server]]",
            "[rollout", "]]", "= 1", "#comment", "",
        ])
        .prop_map(String::from),
        1 => "[ -~\t]{0,24}",
    ]
}

fn toml_text() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(toml_line(), 0..14)).prop_map(|(base, lines)| {
        let mut s = if base {
            MINIMAL.to_string()
        } else {
            String::new()
        };
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
        s
    })
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, "prop.toml") {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("prop.toml: "), "no file name: {msg}");
            prop_assert!(
                msg.contains('`') || msg.contains("line "),
                "the error names neither a key nor a position: {msg}\n--- input ---\n{text}"
            );
            Ok(())
        }
    }
}

proptest! {
    #[test]
    fn config_parsing_never_panics_and_errors_are_located(text in toml_text()) {
        check_config(&text)?;
    }

    #[test]
    fn config_parsing_survives_arbitrary_text(text in "\\PC{0,200}") {
        check_config(&text)?;
    }
}

// ===== sticky cookie =====

fn sticky() -> Sticky {
    Sticky::new("prop-salt", b"prop-secret-0123456789", None, None)
}

/// Strings shaped like cookie values, most of them near-misses.
fn cookie_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F]{16}\\.[0-9a-fA-F]{16}",
        "[0-9a-f]{14,18}\\.[0-9a-f]{14,18}",
        "[0-9a-f.]{0,40}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #[test]
    fn cookie_verify_accepts_only_what_it_signed(value in cookie_like()) {
        let s = sticky();
        if let Some(id) = s.verify(&value) {
            let n = u64::from_str_radix(id, 16).expect("the id is hex");
            prop_assert_eq!(s.cookie_value(n), value.clone(), "accepted an unsigned spelling");
        }
    }

    #[test]
    fn signed_values_verify_and_every_one_byte_change_is_refused(
        id in any::<u64>(),
        pos in 0usize..33,
        byte in any::<u8>(),
    ) {
        let s = sticky();
        let good = s.cookie_value(id);
        let want = format!("{id:016x}");
        prop_assert_eq!(s.verify(&good), Some(want.as_str()));
        let mut bytes = good.clone().into_bytes();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        if let Ok(tampered) = String::from_utf8(bytes) {
            prop_assert_eq!(s.verify(&tampered), None, "tampered {:?} accepted", tampered);
        }
        // Signed with another secret: refused.
        let other = Sticky::new("prop-salt", b"another-secret-0123456", None, None);
        let foreign = other.cookie_value(id);
        prop_assert_eq!(s.verify(&foreign), None);
    }

    #[test]
    fn another_spelling_of_a_signed_value_is_refused(id in any::<u64>(), pos in 0usize..33) {
        let s = sticky();
        let good = s.cookie_value(id);
        let c = good.as_bytes()[pos];
        prop_assume!(c.is_ascii_alphabetic());
        let mut bytes = good.into_bytes();
        bytes[pos] = c.to_ascii_uppercase();
        let upper = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(s.verify(&upper), None, "accepted {:?}", upper);
    }

    #[test]
    fn cookie_headers_never_panic_the_resolver(header in "[ -~]{0,120}", extra in "\\PC{0,40}") {
        let s = Sticky::new("prop-salt", b"k", Some(http::HeaderName::from_static("x-user-id")), Some("uid".into()));
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&header) {
            h.append(COOKIE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("rg_bucket={extra}")) {
            h.append(COOKIE, v);
        }
        let r = s.resolve(&h);
        prop_assert!(r.bucket < 10_000);
    }
}

// ===== journeys =====

const SEGS: [&str; 6] = ["api", "pay", "search", "x", "a-b", "v1"];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SEGS.to_vec()).prop_map(String::from),
        1 => Just(String::new()),
        1 => "[a-z%.~]{1,4}",
    ]
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(SEGS.to_vec()), 0..3).prop_flat_map(|segs| {
            let p = format!("/{}", segs.join("/"));
            prop_oneof![
                Just(PathMatch::Prefix(p.clone())),
                Just(PathMatch::Prefix(format!("{p}/")))
            ]
        }),
        (
            prop::collection::vec(
                prop_oneof![
                    3 => prop::sample::select(SEGS.to_vec()).prop_map(String::from),
                    1 => Just("*".to_string()),
                ],
                1..4
            ),
            any::<bool>()
        )
            .prop_map(|(mut segs, rest)| {
                if rest {
                    segs.push("**".into());
                }
                PathMatch::Pattern(segs)
            }),
    ]
}

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

fn journeys() -> impl Strategy<Value = Vec<Journey>> {
    prop::collection::vec((path_match(), prop::collection::vec(0usize..6, 0..3)), 0..6).prop_map(
        |list| {
            list.into_iter()
                .enumerate()
                .map(|(i, (path, ms))| Journey {
                    name: format!("j{i}"),
                    path,
                    methods: ms.iter().fold(0, |acc, m| acc | method_bit(&METHODS[*m])),
                    kind: JourneyKind::Normal,
                })
                .collect()
        },
    )
}

/// The documented rules (src/routing/journeys.rs), written independently.
fn model_matches(j: &Journey, method: &Method, path: &str) -> bool {
    if j.methods != 0 && j.methods & method_bit(method) == 0 {
        return false;
    }
    match &j.path {
        PathMatch::Prefix(p) => {
            let p = p.trim_end_matches('/');
            p.is_empty() || path == p || (path.starts_with(p) && path[p.len()..].starts_with('/'))
        }
        PathMatch::Pattern(segs) => {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (fixed, rest) = match segs.last().map(String::as_str) {
                Some("**") => (&segs[..segs.len() - 1], true),
                _ => (&segs[..], false),
            };
            if parts.len() < fixed.len() || (!rest && parts.len() != fixed.len()) {
                return false;
            }
            fixed
                .iter()
                .zip(&parts)
                .all(|(s, p)| if s == "*" { !p.is_empty() } else { s == p })
        }
    }
}

/// The path the rules are applied to, written plainly: escapes of unreserved
/// characters decoded, then `.` and empty segments dropped and `..` taking
/// the segment before it, a trailing slash kept.
fn model_normalise(path: &str) -> String {
    let mut decoded = String::new();
    let mut i = 0;
    while i < path.len() {
        let escape = path
            .get(i + 1..i + 3)
            .filter(|h| path.as_bytes()[i] == b'%' && h.bytes().all(|c| c.is_ascii_hexdigit()))
            .map(|h| u8::from_str_radix(h, 16).unwrap() as char)
            .filter(|c| c.is_ascii_alphanumeric() || "-._~".contains(*c));
        match escape {
            Some(c) => {
                decoded.push(c);
                i += 3;
            }
            None => {
                let c = path[i..].chars().next().unwrap();
                decoded.push(c);
                i += c.len_utf8();
            }
        }
    }
    let segs: Vec<&str> = decoded[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::new();
    for s in &segs {
        match *s {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let trailing = matches!(segs.last(), Some(&("" | "." | ".."))) && !kept.is_empty();
    format!("/{}{}", kept.join("/"), if trailing { "/" } else { "" })
}

proptest! {
    #[test]
    fn journey_matching_follows_the_rules_and_unmatched_is_other(
        list in journeys(),
        segs in prop::collection::vec(segment(), 0..5),
        trailing in any::<bool>(),
        m in 0usize..6,
    ) {
        let js = Journeys::new(list.clone());
        let mut path = format!("/{}", segs.join("/"));
        if trailing {
            path.push('/');
        }
        let method = &METHODS[m];
        let got = js.classify(method, &path);
        let normal = model_normalise(&path);
        let want = list.iter().position(|j| model_matches(j, method, &normal));
        match want {
            Some(i) => prop_assert_eq!(js.name(got), list[i].name.as_str(), "path {}", path),
            None => {
                prop_assert_eq!(got, js.other(), "path {}", path);
                prop_assert_eq!(js.name(got), "other");
            }
        }
    }

    #[test]
    fn journey_matching_never_panics_on_arbitrary_paths(list in journeys(), path in "\\PC{0,80}", m in 0usize..6) {
        let js = Journeys::new(list);
        let id = js.classify(&METHODS[m], &path);
        prop_assert!(id.index() < js.len());
        // Metric labels come from config only, never from the request.
        let name = js.name(id);
        prop_assert!(name == "other" || name.starts_with('j'));
    }
}

// ===== admin JSON bodies =====

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0u8..=3).prop_map(Value::from),
        (-1.0f64..101.0).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["cfo", "ceo", "", "  "]).prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "v2",
                        "v1",
                        "role",
                        "by",
                        "severity",
                        "summary",
                        "SHADOW_PASS_24H",
                        "EVIDENCE_BUNDLE",
                    ])
                    .prop_map(String::from),
                    "\\PC{0,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn admin_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn admin_json_bodies_never_panic_the_admin_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (v1, v2, rg) = rt.block_on(async { harness::Rg::echo("").await });
    let endpoints: Vec<(Method, &str)> = rollgate::admin::ROUTES
        .iter()
        .filter(|r| r.mutating)
        .map(|r| (Method::from_bytes(r.method.as_bytes()).unwrap(), r.path))
        .collect();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (0..endpoints.len(), admin_body());
    runner
        .run(&strategy, |(e, body)| {
            let (method, path) = endpoints[e].clone();
            let r = rt.block_on(rg.call(method.clone(), path, body.clone()));
            prop_assert!(
                matches!(
                    r.status,
                    StatusCode::OK
                        | StatusCode::BAD_REQUEST
                        | StatusCode::CONFLICT
                        | StatusCode::LOCKED
                ),
                "{} {} {:?}: {} {}",
                method,
                path,
                String::from_utf8_lossy(&body),
                r.status,
                r.text()
            );
            let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
                TestCaseError::fail(format!("{method} {path}: answer is not JSON: {e}"))
            })?;
            if r.status != StatusCode::OK {
                prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", v);
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        rg.assert_serving("generated admin bodies").await;
        rg.shutdown().await;
    });
    drop((v1, v2));
}
