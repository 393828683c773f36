//! The vocabulary of incidents: their states, the actions a runbook takes, and the outcomes a step records.
//!
//! These names are part of the product's contract (SPEC section 3): they appear in the API, the store and the
//! email, always spelled as `as_str` spells them. This module holds no logic beyond that vocabulary.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(
    /// Where an incident is. The last five are final.
    State {
        Queued => "queued",
        Running => "running",
        Waiting => "waiting",
        AwaitingApproval => "awaiting_approval",
        Transient => "transient",
        Recovered => "recovered",
        Escalated => "escalated",
        Blocked => "blocked",
        Suppressed => "suppressed",
    }
);

impl State {
    pub fn is_final(self) -> bool {
        !matches!(self, State::Queued | State::Running | State::Waiting | State::AwaitingApproval)
    }
}

names!(
    /// One thing a runbook does; each stands for a PowerShell command (SPEC section 3).
    ActionKind {
        Probe => "probe",
        ServerHealth => "server_health",
        RecycleAppPool => "recycle_app_pool",
        IisReset => "iis_reset",
        DisableActivation => "disable_activation",
        CopyStatus => "copy_status",
        RestartServer => "restart_server",
        EnableActivation => "enable_activation",
        ComponentState => "component_state",
        RestartService => "restart_service",
        MaHistory => "ma_history",
        Approval => "approval",
        Wait => "wait",
    }
);

impl ActionKind {
    /// Whether an executor carries the action out with a script: every action but a wait (the engine keeps it) and
    /// an approval (a person gives it).
    pub fn runs_script(self) -> bool {
        !matches!(self, ActionKind::Wait | ActionKind::Approval)
    }

    /// Whether the action changes a server. Mutating actions are throttled, skipped in dry-run, and never repeated
    /// after a crash without verifying first.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            ActionKind::RecycleAppPool
                | ActionKind::IisReset
                | ActionKind::DisableActivation
                | ActionKind::RestartServer
                | ActionKind::EnableActivation
                | ActionKind::RestartService
        )
    }
}

names!(
    /// What a step came to.
    Outcome {
        Succeeded => "succeeded",
        Failed => "failed",
        Healthy => "healthy",
        Unhealthy => "unhealthy",
        Done => "done",
        Error => "error",
        DryRun => "dry_run",
        Throttled => "throttled",
        NoActiveCopies => "no_active_copies",
        ActiveCopies => "active_copies",
        Active => "active",
        Inactive => "inactive",
        Interrupted => "interrupted",
        Skipped => "skipped",
        NoneFound => "none",
        Found => "found",
        Requested => "requested",
        Approved => "approved",
        Denied => "denied",
        Expired => "expired",
    }
);

/// How a person should read an outcome: the page and the command line colour it by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sense {
    Good,
    Bad,
    /// Neither: something did not run, or was cut short.
    Pending,
}

impl Outcome {
    pub fn sense(self) -> Sense {
        match self {
            Outcome::Succeeded
            | Outcome::Healthy
            | Outcome::Done
            | Outcome::NoActiveCopies
            | Outcome::Active
            | Outcome::NoneFound
            | Outcome::Approved => Sense::Good,
            Outcome::Failed
            | Outcome::Unhealthy
            | Outcome::Error
            | Outcome::ActiveCopies
            | Outcome::Inactive
            | Outcome::Denied
            | Outcome::Expired => Sense::Bad,
            Outcome::DryRun
            | Outcome::Throttled
            | Outcome::Interrupted
            | Outcome::Skipped
            | Outcome::Found
            | Outcome::Requested => Sense::Pending,
        }
    }
}
