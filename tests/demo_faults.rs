//! `rollgate demo --canary-fault funnel|js-errors`: the synthetic population
//! reacts to a broken V2 (no submit step / scripts that throw) through the
//! requests and beacons it sends, and the rollout is rolled back by the
//! matching gate.

use rollgate::control::state::Trigger;
use rollgate::demo::{self, DemoOptions, Ending, Fault};

async fn run(fault: Fault) -> (Ending, String) {
    demo::run_detailed(DemoOptions {
        fault: Some(fault),
        ..DemoOptions::for_tests()
    })
    .await
    .unwrap_or_else(|e| panic!("{fault:?}: {e}"))
}

// One test, the two demos one after the other: two demos at once would
// compete for the same cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_and_js_error_faults_are_rolled_back_by_their_gates() {
    let (ending, reason) = run(Fault::Funnel).await;
    assert_eq!(
        ending,
        Ending::RolledBack(Some(Trigger::GateRedSustained)),
        "{reason}"
    );
    assert!(
        reason.contains("gate funnel/application_conversion RED"),
        "{reason}"
    );

    let (ending, reason) = run(Fault::JsErrors).await;
    assert_eq!(
        ending,
        Ending::RolledBack(Some(Trigger::GateRedSustained)),
        "{reason}"
    );
    assert!(reason.contains("gate js_errors RED"), "{reason}");
}
