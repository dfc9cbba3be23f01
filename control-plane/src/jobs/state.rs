//! The sync job state machine.
//!
//! ```text
//!   pending ──claim──▶ in_progress ──agent done──▶ completed
//!      │  ▲                │   │  └──agent failed / too many rejects──▶ error
//!      │  └─lease lost─────┘   └──CancelSyncJob──▶ canceling ──agent stopped──▶ canceled
//!      └──CancelSyncJob──▶ canceled
//! ```
//!
//! `pending` again after `in_progress` is a resume: the agent's session or
//! lease was lost and the job keeps its checkpoint for the next attempt.
//! `completed`, `canceled` and `error` are terminal. Every write of a status
//! goes through [`JobStatus::can_move_to`] under optimistic concurrency, so
//! two control planes never both claim or finish one job.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[default]
    Pending,
    InProgress,
    Canceling,
    Canceled,
    Suspended,
    Completed,
    Error,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Canceled | JobStatus::Error)
    }

    pub fn can_move_to(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Pending, InProgress | Canceled | Error)
                | (InProgress, Completed | Error | Canceling | Pending | Suspended)
                | (Canceling, Canceled | Error | Completed)
                | (Suspended, Pending | InProgress | Canceled | Error)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::InProgress => "in_progress",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
            JobStatus::Suspended => "suspended",
            JobStatus::Completed => "completed",
            JobStatus::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;

    #[test]
    fn terminal_states_never_move() {
        for from in [Completed, Canceled, Error] {
            for to in [Pending, InProgress, Canceling, Canceled, Suspended, Completed, Error] {
                assert!(!from.can_move_to(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_resume_are_allowed() {
        assert!(Pending.can_move_to(InProgress));
        assert!(InProgress.can_move_to(Completed));
        assert!(InProgress.can_move_to(Pending));
        assert!(InProgress.can_move_to(Canceling));
        assert!(Canceling.can_move_to(Canceled));
        assert!(!Pending.can_move_to(Completed));
    }
}
