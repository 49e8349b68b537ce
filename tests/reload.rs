//! Live config reload: `App::reload` applies new journeys to the next
//! request, keeps counting beacons under their names, and refuses a changed
//! phase list (the old config keeps running);
//! SIGHUP to the real binary with an invalid file is logged and the old
//! config keeps serving.

mod harness;

use std::io::Read as _;

use http::StatusCode;

use harness::config::QUIET_ROLLOUT;
use harness::process::Proc;
use harness::upstream::fast;
use harness::{metric, series, Conf, HttpClient, Ports, Rg, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_journeys_and_refuses_a_changed_phase_list() {
    let (v1, v2) = Upstream::pair().await;
    let search = "[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n";
    let checkout = "[[journeys]]\nname = \"checkout\"\npath_prefix = \"/checkout\"\n";
    let conf = |journeys: &str, phases: &str| {
        Conf::new(v1.url(), v2.url())
            .rollout(&format!("{QUIET_ROLLOUT}{phases}"))
            .section(journeys)
    };
    let rg = Rg::start(&conf(search, "")).await;
    let app = &rg.app;
    let h = HttpClient::http1();
    let url = |p: &str| format!("http://{}{p}", app.proxy_addr);
    let metrics = || async {
        h.get(&format!("http://{}/metrics", app.admin_addr), &[])
            .await
            .text()
    };
    let count = |text: &str, journey: &str| {
        metric(
            text,
            "rollgate_requests_total",
            &[("journey", journey), ("variant", "v1"), ("class", "2xx")],
        )
    };

    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "other"), Some(1.0));

    let both = format!("{search}{checkout}");
    app.reload(conf(&both, "").parse(rg.state.path()))
        .await
        .expect("journey reload");
    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "checkout"), Some(1.0));

    let phases = "[[rollout.phases]]\nname = \"only\"\nweight = 50\n";
    let e = app
        .reload(conf(&both, phases).parse(rg.state.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rollout.phases"), "{e}");
    // Still serving with the previous journeys.
    assert_eq!(
        h.get(&url("/checkout"), &[("x-user-id", "a")]).await.status,
        200
    );
    assert_eq!(count(&metrics().await, "checkout"), Some(2.0));
    rg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_file_keeps_the_old_config_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = Upstream::pair().await;
    let ports = Ports::free();
    let conf = Conf::new(v1.url(), v2.url()).ports(ports);
    let path = dir.path().join("rollgate.toml");
    let state = dir.path().join("state");
    conf.write(&path, &state);
    let (mut child, mut stderr) = Proc::spawn_piped(&path, ports, &[]);
    child.wait_ready().await;
    conf.clone().upstreams("bogus_key = 1").write(&path, &state);
    child.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = child
        .client
        .get(&child.proxy("/"), &[("x-user-id", "z")])
        .await;
    assert_eq!(r.status, 200, "proxy stopped serving after a bad reload");
    child.signal("TERM");
    let status = child.wait_exit();
    assert!(
        status.success(),
        "SIGTERM should drain and exit 0: {status:?}"
    );
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        err.contains("reload refused") && err.contains("bogus_key"),
        "{err}"
    );
}

// ===== beacons across a reload =====

fn beacons(names: &str) -> String {
    format!("[beacons]\nnames = [{names}]\n")
}

fn events(page: &str, name: &str, variant: &str) -> f64 {
    series(
        page,
        &format!(
            "rollgate_beacon_events_total{{type=\"funnel\",name=\"{name}\",variant=\"{variant}\"}}"
        ),
    )
}

/// Posts one `page_view` as `user`; returns its variant.
async fn page_view(rig: &Rg, user: &str) -> String {
    let r = rig
        .beacon(
            &[("x-user-id", user)],
            r#"[{"type":"funnel","name":"page_view"}]"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    r.variant().to_string()
}

/// Start-up and reload must lay telemetry out the same way: after a reload
/// that changes the journeys, or only the order of the beacon names, every
/// beacon is counted, under its own name. Such a reload changes the counters'
/// layout, so they restart from zero (documented: Prometheus sees a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_are_counted_after_reloads_that_change_journeys_or_beacon_names() {
    let names = "\"page_view\", \"js_error\"";
    let rig = Rg::with_apps(fast("v1"), fast("v2"), |c| {
        c.own_rollout().section(&beacons(names))
    })
    .await;
    // Reloads the same config with these beacon names and a search journey.
    let reload = |names: &str| {
        let journey = "[[journeys]]\nname = \"search\"\npath_prefix = \"/search\"\n";
        let conf = Conf::at(rig.apps[0].addr, rig.apps[1].addr)
            .own_rollout()
            .section(&beacons(names))
            .section(journey);
        rig.app.reload(conf.parse(rig.state.path()))
    };
    let v = page_view(&rig, "u1").await;
    assert_eq!(events(&rig.metrics().await, "page_view", &v), 1.0);

    // A new journey: the counters restart, and beacons are still counted.
    reload(names).await.expect("reload with a new journey");
    let v = page_view(&rig, "u1").await;
    assert_eq!(events(&rig.metrics().await, "page_view", &v), 1.0);

    // Beacon names in another order: counted under the right name.
    reload("\"js_error\", \"page_view\"")
        .await
        .expect("reload with the beacon names swapped");
    let v = page_view(&rig, "u1").await;
    let page = rig.metrics().await;
    assert_eq!(events(&page, "page_view", &v), 1.0, "{page}");
    assert_eq!(events(&page, "js_error", &v), 0.0, "{page}");
    rig.shutdown().await;
}
