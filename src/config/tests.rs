//! Whole config texts through `Config::parse`: defaults, warnings, and errors
//! that name the file, the key and the reason.

use std::path::Path;
use std::time::Duration;

use chrono::NaiveTime;

use super::server::DEFAULT_ADMIN_LISTEN;
use super::*;

const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        [upstreams]
        v1 = "http://127.0.0.1:3001"
        v2 = "http://127.0.0.1:3002"
    "#;

fn err(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn phases_held_shorter_than_the_cooldown_are_warned_about() {
    let seed = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(seed.warnings(), Vec::<String>::new());
    let short = format!(
        "{MINIMAL}
            [gates]
            cooldown = \"1m\"
            [[rollout.phases]]
            name = \"canary-5\"
            weight = 5
            hold = \"10s\"
            [[rollout.phases]]
            name = \"full\"
            weight = 100
            hold = \"1m\"
            "
    );
    let w = Config::parse(&short, "t.toml").unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("rollout.phases[0].hold"), "{}", w[0]);
    assert!(w[0].contains("\"canary-5\""), "{}", w[0]);
    assert!(w[0].contains("10s") && w[0].contains("1m"), "{}", w[0]);
    assert!(w[0].contains("gates.cooldown"), "{}", w[0]);
}

#[test]
fn minimal_config_gets_seed_defaults() {
    let c = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(c.server.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.rollout.tick, Duration::from_secs(15));
    assert_eq!(c.rollout.phases.len(), 4);
    assert_eq!(c.rollout.phases[3].hold, Duration::from_secs(7200));
    assert_eq!(c.rollout.phases[0].headers[0].1, "test");
    assert!(c.rollout.phases.iter().all(|p| p.approval.is_none()));
    assert_eq!(c.journeys.len(), 1);
    assert_eq!(c.upstreams.v2.authority.as_str(), "127.0.0.1:3002");
}

#[test]
fn errors_name_file_key_and_reason() {
    let e = err(&MINIMAL.replace("127.0.0.1:8080", "nope"));
    assert!(e.starts_with("t.toml: key `server.listen`:"), "{e}");
    let e = err(&format!("{MINIMAL}\n[rollout]\ntick = \"soon\""));
    assert!(
        e.contains("t.toml") && e.contains("tick") && e.contains("invalid duration"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[rollout]\nerror_rate_max = 5.0"));
    assert!(e.contains("`rollout.error_rate_max`"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[[journeys]]\nname = \"x\"\npath_prefix = \"nope\""
    ));
    assert!(e.contains("`journeys[0].path_prefix`"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[[journeys]]\nname = \"x\"\npath_prefix = \"/x\"\nmethods = [\"FETCH\"]"
    ));
    assert!(e.contains("`journeys[0].methods[0]`"), "{e}");
    let e = err(&MINIMAL.replace("http://127.0.0.1:3002", "https://x"));
    assert!(e.contains("`upstreams.v2`"), "{e}");
    let e = err(&format!("{MINIMAL}\n[routing]\nstiky_header = \"x\""));
    assert!(e.contains("unknown field `stiky_header`"), "{e}");
    let e = err(&format!(
            "{MINIMAL}\n[[rollout.phases]]\nname = \"a\"\nweight = 50\nhold = \"1h\"\n[[rollout.phases]]\nname = \"b\"\nweight = 10"
        ));
    assert!(
        e.contains("`rollout.phases[1].weight`") && e.contains("decrease"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[rollout.flags]\nEVIDENCE_BUNDLE = 3"));
    assert!(e.contains("`rollout.flags.EVIDENCE_BUNDLE`"), "{e}");
    assert!(matches!(
        Config::load(Path::new("/nonexistent/rollgate.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn promotion_window_hours() {
    let c = Config::parse(
        &format!(
            "{MINIMAL}\n[rollout]\npromotion_window = {{ start = \"09:00\", end = \"18:00\" }}"
        ),
        "t",
    )
    .unwrap();
    let w = c.rollout.promotion_window;
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    assert!(w.contains(t(9, 0)) && w.contains(t(17, 59)));
    assert!(!w.contains(t(18, 0)) && !w.contains(t(8, 59)));
    let night = PromotionWindow::Hours {
        start: t(22, 0),
        end: t(6, 0),
    };
    assert!(night.contains(t(23, 0)) && night.contains(t(1, 0)) && !night.contains(t(12, 0)));
}

#[test]
fn shadow_keys_are_checked() {
    let base = format!(
            "{MINIMAL}\n[[journeys]]\nname = \"pay\"\npath_prefix = \"/pay\"\nkind = \"payment\"\n[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n"
        );
    let c = Config::parse(&base, "t").unwrap();
    assert_eq!(c.shadow.mirrored, vec![false, true, true]);
    let c = Config::parse(
        &format!("{base}[shadow]\nexclude_journeys = [\"other\"]"),
        "t",
    )
    .unwrap();
    assert_eq!(c.shadow.mirrored, vec![false, true, false]);
    let e = err(&format!("{base}[shadow]\nexclude_journeys = [\"nope\"]"));
    assert!(e.contains("`shadow.exclude_journeys[0]`"), "{e}");
    let e = err(&format!("{base}[shadow]\nqueue = 0"));
    assert!(e.contains("`shadow.queue`"), "{e}");
    let e = err(&format!("{base}[shadow]\ndiff_rate_max = 2"));
    assert!(e.contains("`shadow.diff_rate_max`"), "{e}");
}

#[test]
fn trusted_proxies_are_cidr_blocks_or_addresses() {
    let c = Config::parse(MINIMAL, "t.toml").unwrap();
    assert!(c.server.trusted_proxies.is_empty());
    let with = |list: &str| {
        MINIMAL.replace(
            "[upstreams]",
            &format!("trusted_proxies = {list}\n[upstreams]"),
        )
    };
    let c = Config::parse(
        &with(r#"["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]"#),
        "t.toml",
    )
    .unwrap();
    let got: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(got, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    for (bad, reason) in [
        (r#"["10.0.0.0/8", "lb.internal"]"#, "not a CIDR block"),
        (r#"["10.0.0.0/33"]"#, "not a CIDR block"),
        (
            r#"["10.0.0.1/8"]"#,
            "host bits set; the block is 10.0.0.0/8",
        ),
    ] {
        let e = err(&with(bad));
        assert!(e.starts_with("t.toml: key `server.trusted_proxies["), "{e}");
        assert!(e.contains(reason), "{e}");
    }
    assert!(err(&with("[\"lb\"]")).contains("`server.trusted_proxies[0]`"));
    assert!(err(&with("\"10.0.0.0/8\"")).contains("trusted_proxies"));
}

#[test]
fn phase_headers_go_to_the_canary_unless_the_phase_says_both() {
    let c = Config::parse(MINIMAL, "t.toml").unwrap();
    assert!(c
        .rollout
        .phases
        .iter()
        .all(|p| p.headers_to == HeadersTo::Canary));
    let phase = |to: &str| {
        format!(
            "{MINIMAL}\n[[rollout.phases]]\nname = \"full\"\nweight = 100\nheaders = {{ x-payment-mode = \"live\" }}\n{to}"
        )
    };
    let c = Config::parse(&phase("headers_to = \"both\""), "t.toml").unwrap();
    assert_eq!(c.rollout.phases[0].headers_to, HeadersTo::Both);
    let c = Config::parse(&phase("headers_to = \"canary\""), "t.toml").unwrap();
    assert_eq!(c.rollout.phases[0].headers_to, HeadersTo::Canary);
    let e = err(&phase("headers_to = \"v1\""));
    assert!(e.contains("headers_to") && e.contains("canary"), "{e}");
}

#[test]
fn connection_keys_have_defaults_and_are_checked() {
    let s = Config::parse(MINIMAL, "t.toml").unwrap().server;
    assert_eq!(s.max_connections_per_client, 0);
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.h2_keepalive_interval, Some(Duration::from_secs(20)));
    assert_eq!(s.protocol, Protocol::Auto);
    let with = |line: &str| MINIMAL.replacen("[upstreams]", &format!("{line}\n[upstreams]"), 1);
    let off = Config::parse(&with("h2_keepalive_interval = \"0s\""), "t.toml").unwrap();
    assert_eq!(off.server.h2_keepalive_interval, None);
    let h2c = Config::parse(&with("protocol = \"h2c\""), "t.toml").unwrap();
    assert_eq!(h2c.server.protocol, Protocol::H2c);
    let e = err(&with("idle_timeout = \"0s\""));
    assert!(
        e.contains("server.idle_timeout") && e.contains("above zero"),
        "{e}"
    );
    let e = err(&with("protocol = \"h3\""));
    assert!(e.contains("protocol"), "{e}");
    let e = err(&with(
        "protocol = \"h2c\"\n[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"",
    ));
    assert!(e.contains("server.protocol") && e.contains("ALPN"), "{e}");
}

#[test]
fn body_deadlines_default_to_30s_and_must_be_above_zero() {
    let c = Config::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(c.server.client_body_timeout, Duration::from_secs(30));
    assert_eq!(c.upstreams.body_idle_timeout, Duration::from_secs(30));
    let c = Config::parse(
        &MINIMAL
            .replace(
                "[upstreams]",
                "client_body_timeout = \"500ms\"\n[upstreams]",
            )
            .replace("v2 = ", "body_idle_timeout = \"2s\"\nv2 = "),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.server.client_body_timeout, Duration::from_millis(500));
    assert_eq!(c.upstreams.body_idle_timeout, Duration::from_secs(2));
    let e = err(&MINIMAL.replace("[upstreams]", "client_body_timeout = \"0s\"\n[upstreams]"));
    assert!(
        e.contains("server.client_body_timeout") && e.contains("above zero"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("v2 = ", "body_idle_timeout = \"0s\"\nv2 = "));
    assert!(
        e.contains("upstreams.body_idle_timeout") && e.contains("above zero"),
        "{e}"
    );
}

#[test]
fn business_days_and_holidays_name_the_bad_entry() {
    let e = err(&format!(
        "{MINIMAL}\n[rollout]\nholidays = [\"2026-12-24\", \"2026-12-32\"]"
    ));
    assert!(
        e.contains("`rollout.holidays[1]`") && e.contains("\"2026-12-32\""),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[rollout]\nbusiness_days = [\"mon\", \"fry\"]"
    ));
    assert!(
        e.contains("`rollout.business_days[1]`") && e.contains("\"fry\""),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[rollout]\nbusiness_days = [\"mon\", \"mon\"]"
    ));
    assert!(e.contains("listed twice"), "{e}");
    let e = err(&format!("{MINIMAL}\n[rollout]\nbusiness_days = []"));
    assert!(e.contains("`rollout.business_days`"), "{e}");
}
