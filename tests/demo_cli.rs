//! `rollgate demo` as a user runs it: the healthy run and each
//! `--canary-fault` end with the documented final line and exit 0.
//!
//! The runs are serialized (one lock): each demo drives ~700 requests/s of
//! synthetic users, and four at once on a small machine would measure the
//! machine, not V2.

mod harness;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::process::{finish, BIN};
/// The demo ends itself within 90 s; this only stops a hung child.
const KILL_AFTER: Duration = Duration::from_secs(150);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn demo(args: &[&str], expected_last_line: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.arg("demo").args(args);
    let done = finish(cmd, KILL_AFTER);
    let (status, stdout, stderr) = (done.status, done.stdout, done.stderr);
    let elapsed = started.elapsed();
    let tail: Vec<&str> = stdout
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let context = format!(
        "--- stdout (tail) ---\n{}\n--- stderr ---\n{stderr}",
        tail.join("\n")
    );
    println!(
        "rollgate demo {args:?}: {status} in {:.1} s",
        elapsed.as_secs_f64()
    );

    assert!(
        status.success(),
        "demo {args:?} exited with {status}\n{context}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(
        last, expected_last_line,
        "demo {args:?}: wrong final line\n{context}"
    );
    assert!(
        stdout.ends_with(&format!("{expected_last_line}\n")),
        "the final line is not last\n{context}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("status page: http://")),
        "demo {args:?} printed no status page URL\n{context}"
    );
    // Each decision's gate report is printed.
    assert!(
        stdout.contains("Gate report"),
        "no gate report printed\n{context}"
    );
    // The population's payers post revenue: the reports show it per user.
    assert!(
        stdout.contains("Revenue per user (credits_bought): V1 "),
        "no revenue line in the gate reports\n{context}"
    );
}

#[test]
fn demo_healthy_is_promoted() {
    demo(&[], "final decision: PROMOTED");
}

#[test]
fn demo_latency_fault_rolls_back_by_p95_hard() {
    demo(
        &["--canary-fault", "latency"],
        "final decision: ROLLED_BACK (trigger: p95_hard)",
    );
}

#[test]
fn demo_errors_fault_rolls_back_by_gate_red_sustained() {
    demo(
        &["--canary-fault", "errors"],
        "final decision: ROLLED_BACK (trigger: gate_red_sustained)",
    );
}

#[test]
fn demo_payments_fault_rolls_back_by_payment_failures() {
    demo(
        &["--canary-fault", "payments"],
        "final decision: ROLLED_BACK (trigger: payment_failures)",
    );
}
