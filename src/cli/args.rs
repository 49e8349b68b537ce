//! The command line of the admin subcommands (flattened into the binary's CLI).

use super::{Action, CliError};

/// Where `rollgate status` looks when neither `--admin` nor `ROLLGATE_ADMIN_URL` is given.
pub(crate) const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";

/// Where the admin API is and how to talk to it; on every admin subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long = "admin", env = "ROLLGATE_ADMIN_URL", default_value = DEFAULT_ADMIN_URL, value_name = "URL")]
    pub(crate) admin: String,
    /// Bearer token for the mutating calls.
    #[arg(
        long,
        env = "ROLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
    /// Print the server's JSON answer (for scripts) instead of the human view.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The admin subcommands of `rollgate` (flattened into the binary's CLI).
#[derive(clap::Subcommand, Clone, Debug)]
pub enum AdminCmd {
    /// Show the rollout: state, phase, weights, gate table, flags, approvals, incidents.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set V2's weight in percent (0-100, fractional ok); pauses the controller.
    Weights {
        #[arg(value_name = "PERCENT", allow_negative_numbers = true)]
        v2: f64,
        /// Change the weight even while the overnight freeze holds.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Record an approval for the phase that needs it (e.g. --role cfo).
    Approve {
        #[arg(long)]
        role: String,
        #[arg(long, value_name = "NAME")]
        by: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start a rollout (when not auto-started, or after a rollback or promotion).
    Start {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause the controller: weights stay, no step-up; safety triggers stay armed.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hand control back to the controller (after pause, a manual weight or a Sev-2 hold).
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Step up to the next phase now, without waiting for the hold.
    Promote {
        /// Step up even while the overnight freeze holds.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Roll back now: V2 weight 0 in one swap.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Post an incident: Sev-1 rolls back at once, two Sev-2 hold for a decision.
    Incident {
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        severity: u8,
        #[arg(long, value_name = "TEXT")]
        summary: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set start flags, e.g. `rollgate flags EVIDENCE_BUNDLE=1`.
    Flags {
        #[arg(required = true, value_name = "NAME=0|1")]
        flags: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift FREEZE_LOCK (set by the golden re-freeze after a promotion).
    Unfreeze {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List gate reports, or show one (`latest` for the newest).
    Report {
        /// Report id, e.g. 000006, or `latest`.
        id: Option<String>,
        /// Print the Markdown report (the newest one when no ID is given).
        #[arg(long)]
        md: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl AdminCmd {
    /// The action and the connection arguments.
    pub(crate) fn into_parts(self) -> Result<(Action, AdminArgs), CliError> {
        Ok(match self {
            AdminCmd::Status { admin } => (Action::Status, admin),
            AdminCmd::Weights { v2, force, admin } => (Action::Weights { v2, force }, admin),
            AdminCmd::Approve { role, by, admin } => (Action::Approve { role, by }, admin),
            AdminCmd::Start { admin } => (Action::Start, admin),
            AdminCmd::Pause { admin } => (Action::Pause, admin),
            AdminCmd::Resume { admin } => (Action::Resume, admin),
            AdminCmd::Promote { force, admin } => (Action::Promote { force }, admin),
            AdminCmd::Rollback { admin } => (Action::Rollback, admin),
            AdminCmd::Incident {
                severity,
                summary,
                admin,
            } => (Action::Incident { severity, summary }, admin),
            AdminCmd::Flags { flags, admin } => (
                Action::Flags(
                    flags
                        .iter()
                        .map(|f| parse_flag(f))
                        .collect::<Result<_, _>>()?,
                ),
                admin,
            ),
            AdminCmd::Unfreeze { admin } => (Action::Unfreeze, admin),
            AdminCmd::Report { id, md, admin } => (Action::Report { id, markdown: md }, admin),
        })
    }
}

/// Parses `NAME=0|1` for `rollgate flags`.
pub(crate) fn parse_flag(s: &str) -> Result<(String, i64), CliError> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("{s:?}: expected NAME=0 or NAME=1")))?;
    match value {
        "0" | "1" if !name.is_empty() => Ok((name.to_string(), i64::from(value == "1"))),
        _ => Err(CliError::Usage(format!("{s:?}: expected NAME=0 or NAME=1"))),
    }
}
