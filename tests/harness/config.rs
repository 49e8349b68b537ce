//! Config text for a test rollgate: a builder for the sections every test
//! sets (listeners, upstreams, routing, rollout) and the shared rollout
//! pieces kept as files in `tests/fixtures/`.

use std::net::SocketAddr;
use std::path::Path;

use super::TOKEN;

/// The smallest valid config: a proxy listener and two upstreams nobody
/// contacts, for `check` and the parser.
pub const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams]\nv1 = \"http://127.0.0.1:3001\"\nv2 = \"http://127.0.0.1:3002\"\n";

/// The pre-flight flags, all set.
pub const FLAGS: &str = include_str!("../fixtures/flags.toml");
/// A rollout that never moves by itself: no auto start, an hour-long tick, so
/// the controller leaves manual weights alone for the whole test.
pub const QUIET_ROLLOUT: &str = "auto_start = false\ntick = \"1h\"\nwindow = \"1h\"\n";

/// Two journeys: searches, and payments whose failures the request path counts.
pub const JOURNEYS: &str = include_str!("../fixtures/journeys.toml");

const SEED_PHASES: &str = include_str!("../fixtures/seed_phases.toml");
const SHORT_ROLLOUT: &str = include_str!("../fixtures/short_rollout.toml");
/// The whole `[rollout]` of the SIGKILL rounds.
pub const KILL_ROLLOUT: &str = include_str!("../fixtures/kill_rollout.toml");

/// The seed phases (canary-5, canary-25 with the CFO's approval, full) held
/// `hold` each; with `p95_ms`, every phase gets that latency limit.
pub fn seed_phases(hold: &str, p95_ms: Option<u32>) -> String {
    let text = SEED_PHASES.replace("{hold}", hold);
    match p95_ms {
        None => text,
        Some(ms) => text.replace(
            "[[rollout.phases]]\n",
            &format!("[[rollout.phases]]\np95_ms = {ms}\n"),
        ),
    }
}

/// A four-phase rollout that moves on every `hold` (loose latency limits,
/// a cooldown of a second), as a whole `[rollout]` and `[gates]` text.
pub fn short_rollout(hold: &str) -> String {
    SHORT_ROLLOUT.replace("{hold}", hold)
}

/// Two loopback ports picked by the kernel for a child process, whose config
/// needs fixed addresses.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            proxy: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }
}

/// A free loopback port: bound by the kernel, read, released.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A config: both listeners on loopback port 0 (or [`Ports`]), the one admin
/// [`TOKEN`], users keyed by `x-user-id` and a quiet rollout unless the test
/// says otherwise. Every setter adds lines to its section.
#[derive(Clone, Debug)]
pub struct Conf {
    listen: String,
    admin_listen: String,
    server: String,
    v1: String,
    v2: String,
    upstreams: String,
    routing: String,
    rollout: Option<String>,
    sections: String,
}

impl Conf {
    /// Upstream URLs (`http://…`).
    pub fn new(v1: impl Into<String>, v2: impl Into<String>) -> Conf {
        Conf {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            server: String::new(),
            v1: v1.into(),
            v2: v2.into(),
            upstreams: String::new(),
            routing: "sticky_header = \"x-user-id\"\n".into(),
            rollout: Some(QUIET_ROLLOUT.into()),
            sections: String::new(),
        }
    }

    /// Upstreams at these addresses.
    pub fn at(v1: SocketAddr, v2: SocketAddr) -> Conf {
        Conf::new(format!("http://{v1}"), format!("http://{v2}"))
    }

    /// Fixed listeners, for the real binary.
    pub fn ports(mut self, p: Ports) -> Conf {
        self.listen = p.proxy.to_string();
        self.admin_listen = p.admin.to_string();
        self
    }

    /// Lines of `[server]` (a trailing `[server.tls]` table is fine).
    pub fn server(mut self, lines: &str) -> Conf {
        push_lines(&mut self.server, lines);
        self
    }

    pub fn upstreams(mut self, lines: &str) -> Conf {
        push_lines(&mut self.upstreams, lines);
        self
    }

    pub fn routing(mut self, lines: &str) -> Conf {
        push_lines(&mut self.routing, lines);
        self
    }

    /// The body of `[rollout]` (it may end with sub-tables such as
    /// `[rollout.flags]` or `[[rollout.phases]]`), replacing the quiet one.
    pub fn rollout(mut self, body: &str) -> Conf {
        self.rollout = Some(body.into());
        self
    }

    /// No `[rollout]` table from the builder: the config's defaults, or one
    /// that a [`Conf::section`] brings.
    pub fn without_rollout(mut self) -> Conf {
        self.rollout = None;
        self
    }

    /// Whole tables appended verbatim (journeys, beacons, shadow, gates…).
    pub fn section(mut self, text: &str) -> Conf {
        push_lines(&mut self.sections, text);
        self
    }

    /// The search and payment [`JOURNEYS`], with an upstream timeout far
    /// from any demo app's latency: what the controller tests judge.
    pub fn with_journeys(self) -> Conf {
        self.upstreams("timeout = \"10s\"").section(JOURNEYS)
    }

    /// What the gate, beacon, shadow and replay tests share: salt `tests`,
    /// a 10 s upstream timeout and no `[rollout]` from the builder (the
    /// config's defaults, or the test's own table in a section).
    pub fn own_rollout(self) -> Conf {
        self.upstreams("timeout = \"10s\"")
            .routing("salt = \"tests\"")
            .without_rollout()
    }

    /// What an operator sees in the demo: its journeys, salt `ops-test`, a
    /// 2 s upstream timeout, and `rollout` as the whole `[rollout]` text (see
    /// [`short_rollout`]).
    pub fn demo(self, rollout: &str) -> Conf {
        self.upstreams("timeout = \"2s\"")
            .routing("salt = \"ops-test\"")
            .without_rollout()
            .section(rollgate::demo::JOURNEYS)
            .section(rollout)
    }

    pub fn text(&self, state_dir: &Path) -> String {
        let rollout = self
            .rollout
            .as_ref()
            .map_or(String::new(), |r| format!("[rollout]\n{r}\n"));
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nadmin_token = \"{TOKEN}\"\nstate_dir = {state:?}\n{server}\n\
             [upstreams]\nv1 = {v1:?}\nv2 = {v2:?}\n{upstreams}\n\
             [routing]\n{routing}\n\
             {rollout}\n{sections}",
            listen = self.listen,
            admin = self.admin_listen,
            state = state_dir.display().to_string(),
            server = self.server,
            v1 = self.v1,
            v2 = self.v2,
            upstreams = self.upstreams,
            routing = self.routing,
            sections = self.sections,
        )
    }

    /// The text, parsed as rollgate would (panics with the text when invalid).
    pub fn parse(&self, state_dir: &Path) -> rollgate::Config {
        let text = self.text(state_dir);
        rollgate::Config::parse(&text, "test.toml")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"))
    }

    /// Writes the text to `path` (for the real binary).
    pub fn write(&self, path: &Path, state_dir: &Path) {
        std::fs::write(path, self.text(state_dir)).expect("write the config file");
    }
}

fn push_lines(section: &mut String, lines: &str) {
    section.push_str(lines);
    if !lines.ends_with('\n') {
        section.push('\n');
    }
}
