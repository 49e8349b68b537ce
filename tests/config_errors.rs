//! Config files and start-up, through the real binary: every refusal names
//! the file, the key and the reason (`check` exits 2, `run` does not start);
//! a valid but suspicious file gets a warning; TLS files, the state dir and a
//! corrupt state file stop `run` with a precise message.

mod harness;

use std::net::SocketAddr;
use std::path::Path;

use harness::config::MINIMAL;
use harness::process::run_bin;
use harness::Conf;

/// A minimal valid config with both listeners, for `check` (nothing is bound
/// or contacted).
const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";

/// Upstreams that `run` never reaches: it refuses to start before.
fn unreached() -> Conf {
    Conf::new("http://127.0.0.1:3001", "http://127.0.0.1:3002")
}

#[test]
fn bad_config_files_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    // (file name, config text, key the message must name, words of the reason)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "listen.toml",
            BASE.replacen("127.0.0.1:0", "localhost:http", 1),
            "server.listen",
            &["not an address"],
        ),
        (
            "port.toml",
            BASE.replacen("127.0.0.1:0", "127.0.0.1:99999", 1),
            "server.listen",
            &["not an address"],
        ),
        (
            "duration.toml",
            format!("{BASE}[rollout]\ntick = \"fortnightly\"\n"),
            "tick",
            &["invalid duration"],
        ),
        (
            "duration-type.toml",
            format!("{BASE}[rollout]\nwindow = 300\n"),
            "window",
            &["string"],
        ),
        (
            "unknown.toml",
            format!("{BASE}[routing]\nstiky_header = \"x-user-id\"\n"),
            "stiky_header",
            &["unknown field"],
        ),
        (
            "unknown-section.toml",
            format!("{BASE}[limits]\nmax = 1\n"),
            "limits",
            &["unknown field"],
        ),
        (
            "decreasing.toml",
            format!("{BASE}[[rollout.phases]]\nname = \"a\"\nweight = 50\nhold = \"1h\"\n[[rollout.phases]]\nname = \"b\"\nweight = 25\n"),
            "rollout.phases[1].weight",
            &["decrease"],
        ),
        (
            "upstream.toml",
            BASE.replace("http://127.0.0.1:3002", "ftp://127.0.0.1:3002"),
            "upstreams.v2",
            &["http://"],
        ),
        (
            "syntax.toml",
            format!("{BASE}[rollout\ntick = \"1s\"\n"),
            "line 7",
            &["TOML parse error"],
        ),
        (
            "fraction.toml",
            format!("{BASE}[rollout]\nerror_rate_max = 1.5\n"),
            "rollout.error_rate_max",
            &["fraction"],
        ),
        (
            "max-conn.toml",
            BASE.replace("[upstreams]", "max_connections = 0\n[upstreams]"),
            "server.max_connections",
            &["at least 1"],
        ),
        (
            "fallback.toml",
            BASE.replace("[upstreams]", "state_fallback_dir = \"./rollgate-state\"\n[upstreams]"),
            "server.state_fallback_dir",
            &["other than server.state_dir"],
        ),
        (
            "missing.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\n".to_string(),
            "upstreams",
            &["missing"],
        ),
    ];
    for (name, text, key, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let (st, out) = run_bin(&["check"], &path);
        assert!(!st.success(), "{name} accepted: {out}");
        assert_eq!(st.code(), Some(2), "{name}: {out}");
        assert!(
            out.contains(name),
            "{name}: message does not name the file: {out}"
        );
        assert!(
            out.contains(key),
            "{name}: message does not name `{key}`: {out}"
        );
        for w in reason {
            assert!(out.contains(w), "{name}: no reason {w:?} in: {out}");
        }
        // `run` refuses the same file with the same message, before binding anything.
        let (st, run_out) = run_bin(&["run"], &path);
        assert!(!st.success(), "{name}: run accepted it: {run_out}");
        assert!(run_out.contains(key), "{name}: run: {run_out}");
    }
    // Valid but suspicious: accepted (exit 0) with a warning naming the key.
    let path = dir.path().join("short-hold.toml");
    let text = format!(
        "{BASE}[gates]\ncooldown = \"1m\"\n[[rollout.phases]]\nname = \"canary-5\"\nweight = 5\nhold = \"10s\"\n[[rollout.phases]]\nname = \"full\"\nweight = 100\nhold = \"2m\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let (st, out) = run_bin(&["check"], &path);
    assert!(st.success(), "short hold refused: {out}");
    assert!(
        out.contains("warning:")
            && out.contains("short-hold.toml")
            && out.contains("rollout.phases[0].hold")
            && out.contains("gates.cooldown"),
        "{out}"
    );
    // A file that is not there.
    let (st, out) = run_bin(&["check"], &dir.path().join("absent.toml"));
    assert!(!st.success());
    assert!(
        out.contains("absent.toml") && out.contains("cannot read"),
        "{out}"
    );
}

#[test]
fn bad_tls_files_stop_run_with_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing-cert.pem");
    for (name, cert, key, want) in [
        ("missing-cert.toml", &missing, &junk, "missing-cert.pem"),
        ("junk-cert.toml", &junk, &junk, "junk.pem"),
    ] {
        let path = dir.path().join(name);
        let tls = format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        unreached().server(&tls).write(&path, &state);
        // `check` validates the file's syntax and keys; the PEM files are
        // read by `run`, which must then refuse to start.
        let (st, out) = run_bin(&["run"], &path);
        assert!(!st.success(), "{name}: started: {out}");
        assert!(
            out.contains("TLS") && out.contains("server.tls.cert"),
            "{name}: {out}"
        );
        assert!(out.contains(want), "{name}: does not name {want}: {out}");
        println!("{name}: {}", out.trim());
    }
}

#[test]
fn unusable_state_dir_stops_run_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    // Tests run as root, so permissions would not stop us: use a plain file
    // where the directory should be, and a path below that file.
    let file = dir.path().join("state-is-a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for (name, state_dir) in [
        ("file.toml", file.clone()),
        ("below-file.toml", file.join("sub")),
    ] {
        let path = dir.path().join(name);
        unreached().write(&path, &state_dir);
        let (st, out) = run_bin(&["run"], &path);
        assert!(
            !st.success(),
            "{name}: started with state_dir {state_dir:?}: {out}"
        );
        assert!(
            out.contains(&state_dir.display().to_string()),
            "{name}: does not name the state dir: {out}"
        );
        assert!(
            out.contains("state_dir"),
            "{name}: does not name the key: {out}"
        );
        println!("{name}: {}", out.trim());
    }
    // The file was not replaced by a directory.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn check_names_the_bad_key_and_accepts_the_shipped_configs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = MINIMAL;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base).unwrap();
    let (st, out) = run_bin(&["check"], &good);
    assert!(st.success(), "minimal config refused: {out}");

    for (name, extra, key) in [
        ("tick.toml", "[rollout]\ntick = \"5ms\"\n", "rollout.tick"),
        (
            "flag.toml",
            "[rollout.flags]\nEVIDENCE_BUNDLE = 2\n",
            "rollout.flags.EVIDENCE_BUNDLE",
        ),
        ("typo.toml", "[rollout]\nmin_sample = 5\n", "min_sample"),
        (
            "weight.toml",
            "[[rollout.phases]]\nname = \"a\"\nweight = 150\n",
            "rollout.phases[0].weight",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let (st, out) = run_bin(&["check"], &path);
        assert!(!st.success(), "{name} accepted: {out}");
        assert!(
            out.contains(key),
            "{name}: message does not name `{key}`: {out}"
        );
        assert!(
            out.contains(name),
            "{name}: message does not name the file: {out}"
        );
    }

    // Every config shipped in config/ (the commented example and the presets) is valid.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let example = shipped.join("rollgate.example.toml");
    if example.exists() {
        let (st, out) = run_bin(&["check"], &example);
        assert!(st.success(), "{}: {out}", example.display());
    } else {
        // No example config in this checkout: nothing to check.
        eprintln!("skipped: {} does not exist yet", example.display());
    }
    if let Ok(entries) = std::fs::read_dir(&shipped) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let (st, out) = run_bin(&["check"], &p);
                assert!(st.success(), "{}: {out}", p.display());
            }
        }
    }
}

#[test]
fn a_corrupt_state_file_is_refused_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(
        state_dir.join("state.json"),
        b"{\"state\": \"canary\", \"pha",
    )
    .unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 1));
    let config = dir.path().join("rollgate.toml");
    Conf::at(any, any).write(&config, &state_dir);
    let (status, err) = run_bin(&["run"], &config);
    assert!(!status.success(), "started on a corrupt state file: {err}");
    assert!(
        err.contains("state.json"),
        "message does not name state.json: {err}"
    );
    assert!(err.contains("corrupt"), "{err}");
    // The file is left for the operator, not silently replaced.
    assert_eq!(
        std::fs::read(state_dir.join("state.json")).unwrap(),
        b"{\"state\": \"canary\", \"pha"
    );
}

#[test]
fn access_log_sample_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.toml");
    Conf::new("http://127.0.0.1:1", "http://127.0.0.1:2")
        .server("access_log = true\naccess_log_sample = 0")
        .write(&cfg, Path::new("/tmp/unused"));
    let (status, err) = run_bin(&["check"], &cfg);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("key `server.access_log_sample`: 0 must be above 0 and at most 1"),
        "{err}"
    );
}
