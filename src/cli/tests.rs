use super::args::parse_flag;
use super::client::decode;
use super::render::fmt_pct;
use super::*;
use crate::api::tests::{sample_report, sample_status};

#[test]
fn cli_status_view_is_compact_and_complete() {
    let s = render_status(&sample_status(), false);
    assert!(
        s.starts_with("rollgate  canary  phase canary-25 (2/3)  V1 75% / V2 25%"),
        "{s}"
    );
    assert!(
        s.contains("phases: canary-5 5% ✓ → [canary-25 25%] → full 100%"),
        "{s}"
    );
    assert!(s.contains("GREEN   error_rate   all"), "{s}");
    assert!(s.contains("YELLOW  latency_p95  search   -"), "{s}");
    assert!(s.contains("flags: EVIDENCE_BUNDLE=1"), "{s}");
    assert!(
        s.contains("approvals: cfo by dana at 2025-01-01 00:00:00Z"),
        "{s}"
    );
    assert!(s.contains("incidents: #1 Sev-2 checkout slow"), "{s}");
    assert!(
        s.contains("last decision: NO-GO at 2025-01-01 00:00:00Z: gate"),
        "{s}"
    );
    assert!(s.contains("now: waiting for samples"), "{s}");
    assert!(s.contains("freeze lock: off"), "{s}");
    assert!(!s.contains('\x1b'), "no colour unless asked");
    assert!(render_status(&sample_status(), true).contains("\x1b[1;32mGREEN\x1b[0m"));
}

#[test]
fn cli_status_view_when_empty() {
    let mut v = sample_status();
    v.gates.clear();
    v.flags.clear();
    v.approvals.clear();
    v.incidents.clear();
    v.last_decision = None;
    v.frozen = true;
    let s = render_status(&v, false);
    assert!(
        s.contains("gates: none yet (no traffic in the window)"),
        "{s}"
    );
    assert!(
        s.contains("flags: none\napprovals: none\nincidents: none"),
        "{s}"
    );
    assert!(s.contains("V2 25%  FREEZE_LOCK"), "{s}");
    assert!(!s.contains("STATE_NOT_SAVED"), "{s}");
    v.state_persist_degraded = true;
    let degraded = render_status(&v, false);
    assert!(
        degraded.contains("FREEZE_LOCK  STATE_NOT_SAVED"),
        "{degraded}"
    );
    v.state_persist_degraded = false;
    assert!(!s.contains("last decision"), "{s}");
    let ack = render_ack("paused", &v, false);
    assert_eq!(
        ack,
        "ok: paused\nnow: canary  phase canary-25 (2/3)  V1 75% / V2 25%  FREEZE_LOCK"
    );
}

#[test]
fn cli_report_views() {
    let r = sample_report();
    let s = render_report(&r, false);
    assert!(
        s.starts_with(
            "report 000006  ROLLBACK  phase canary-25  V2 25%  at 2025-01-01 00:00:00Z\noperator rollback\n"
        ),
        "{s}"
    );
    assert!(s.contains("STATUS  GATE "), "{s}");
    assert!(
        s.contains("trigger manual             FIRED  operator"),
        "{s}"
    );
    assert!(s.contains("trigger p95_hard           no     "), "{s}");
    let list = render_report_list(&ReportList {
        reports: vec![r.index()],
    });
    assert!(list.contains("ID      AT"), "{list}");
    assert!(
        list.contains("000006  2025-01-01 00:00:00Z  ROLLBACK  canary-25"),
        "{list}"
    );
    assert_eq!(
        render_report_list(&ReportList { reports: vec![] }),
        "no gate reports yet"
    );
}

#[test]
fn cli_refuses_an_answer_it_does_not_understand() {
    // A renamed field is an error, not an empty cell.
    let mut v = serde_json::to_value(sample_status()).expect("serialises");
    let gate = v["gates"][0].as_object_mut().expect("a gate");
    let name = gate.remove("name").expect("named");
    gate.insert("gate".into(), name);
    let e = decode::<StatusView>(v.to_string().as_bytes()).expect_err("refused");
    assert!(
        matches!(e, CliError::BadAnswer(ref m) if m.contains("name")),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::REFUSED);
}

#[test]
fn cli_flags_parse() {
    assert_eq!(
        parse_flag("EVIDENCE_BUNDLE=1").ok(),
        Some(("EVIDENCE_BUNDLE".into(), 1))
    );
    assert_eq!(parse_flag("X=0").ok(), Some(("X".into(), 0)));
    assert!(parse_flag("X=2").is_err());
    assert!(parse_flag("X").is_err());
    assert!(parse_flag("=1").is_err());
}

#[test]
fn cli_admin_urls() {
    assert!(AdminClient::new("http://127.0.0.1:9901/", None).is_ok());
    for bad in [
        "127.0.0.1:9901",
        "https://x:1",
        "http://x:1/admin",
        "ftp://x",
        "",
    ] {
        let e = AdminClient::new(bad, None).err().map(|e| e.exit_code());
        assert_eq!(e, Some(exit::USAGE), "{bad}");
    }
}

#[test]
fn cli_percent_format() {
    assert_eq!(fmt_pct(25.0), "25");
    assert_eq!(fmt_pct(12.5), "12.5");
    assert_eq!(fmt_pct(33.333333), "33.33");
}
