//! What Managed Availability had already done, as the email tells it: the recovery actions the responder found in
//! a server's `RecoveryActionResults` log before its first remedy there, and the remedies it therefore skipped.
//! The person taking over should know what Exchange itself tried, and that those actions count toward the throttles.

use super::{line, Note, Tone};
use crate::store::StepView;

/// One note per server where Managed Availability had acted, listing its actions, and one naming what was skipped.
pub(super) fn notes(steps: &[StepView]) -> Vec<Note> {
    let mut notes = Vec::new();
    for step in steps.iter().filter(|s| !s.managed_availability.is_empty()) {
        let actions: Vec<String> =
            step.managed_availability.iter().map(|a| line(&a.describe())).collect();
        notes.push(Note::new(
            Tone::Plain,
            format!(
                "Managed Availability had already acted on {} before automation did ({} recovery action(s), counted toward the throttles): {}.",
                line(&step.server),
                actions.len(),
                actions.join("; ")
            ),
            None,
        ));
    }
    let skipped: Vec<String> = steps
        .iter()
        .filter(|s| s.outcome.as_deref() == Some("skipped"))
        .map(|s| format!("{} on {}", line(&s.action), line(&s.server)))
        .collect();
    if !skipped.is_empty() {
        notes.push(Note::new(
            Tone::Plain,
            format!(
                "Not repeated, since Managed Availability had just done it: {}.",
                skipped.join(", ")
            ),
            None,
        ));
    }
    notes
}
