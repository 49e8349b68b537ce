//! Live config reload: `App::reload` applies new journeys to the next
//! request and refuses a changed phase list (the old config keeps running);
//! SIGHUP to the real binary with an invalid file is logged and the old
//! config keeps serving.

mod harness;

use std::io::Read as _;

use harness::config::QUIET_ROLLOUT;
use harness::process::Proc;
use harness::{metric, Conf, HttpClient, Ports, Rg, Upstream};

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
