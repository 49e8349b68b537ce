//! The real binary (`env!("CARGO_BIN_EXE_rollgate")`): one-shot commands run
//! to completion, and `rollgate run` as a child that is SIGKILLed when
//! dropped, so a failing test leaks nothing.

use std::io::Read as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use super::api::Api;
use super::client::Lenient;
use super::config::Ports;
use super::{DEADLINE, TOKEN};

pub const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

/// A command that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with piped output to its end; kills it and fails after `limit`.
/// Both pipes are read on threads, so a chatty child never blocks on a full one.
pub fn finish(mut cmd: Command, limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `rollgate <args> --config <config>` to completion (bounded by
/// [`DEADLINE`]): the status and stdout followed by stderr.
pub fn run_bin(args: &[&str], config: &Path) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("ROLLGATE_ADMIN_TOKEN");
    let f = finish(cmd, DEADLINE);
    (f.status, f.stdout + &f.stderr)
}

/// A `rollgate run` child on fixed [`Ports`]. Derefs to its [`Api`].
pub struct Proc {
    pub child: Child,
    /// Where its stderr goes, when it goes to a file.
    pub stderr: Option<PathBuf>,
    api: Api,
}

impl Proc {
    fn command(config: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(config)
            .env_remove("ROLLGATE_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// `rollgate run` logging at WARN into the file `stderr`.
    pub fn spawn(config: &Path, ports: Ports, stderr: PathBuf) -> Proc {
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let child = Proc::command(config)
            .env("ROLLGATE_LOG", "warn")
            .stderr(err)
            .spawn()
            .expect("spawn rollgate run");
        Proc::new(child, ports, Some(stderr))
    }

    /// `rollgate run <args>` with its stderr on a pipe for the test to read.
    pub fn spawn_piped(config: &Path, ports: Ports, args: &[&str]) -> (Proc, ChildStderr) {
        let mut child = Proc::command(config)
            .args(args)
            .env_remove("ROLLGATE_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollgate run");
        let stderr = child.stderr.take().expect("stderr");
        (Proc::new(child, ports, None), stderr)
    }

    fn new(child: Child, ports: Ports, stderr: Option<PathBuf>) -> Proc {
        Proc {
            child,
            stderr,
            api: Api::new(ports.proxy, ports.admin, TOKEN.to_string()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to its stderr file so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Sends `signal` (`HUP`, `TERM`…) with kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGKILL and reap: no drain, no final persist.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit by itself (after a SIGTERM, say); kills it and
    /// fails after [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("rollgate did not exit within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `GET /healthz` on the admin port; fails early with its
    /// stderr if it exits.
    pub async fn wait_ready(&mut self) {
        let client = Lenient::new();
        let url = self.admin("/healthz");
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("rollgate exited early ({st}): {}", self.stderr());
            }
            if let Ok(r) = client.get(&url, &[]).await {
                if r.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "rollgate not ready within {DEADLINE:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Deref for Proc {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
