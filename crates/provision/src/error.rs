//! What can go wrong while reconciling, and what an apply or delete did.

use std::fmt;

use crate::validate::ValidationErrors;

/// Why a reconcile step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired state is wrong; the user fixes the resources.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The resource conflicts with what the database holds (an address owned elsewhere, a
    /// domain not applied yet, a bucket taken).
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("blob store: {0}")]
    Blob(#[from] mail_blobstore::BlobError),
}

impl Error {
    pub(crate) fn invalid(message: String) -> Self {
        Error::Invalid(ValidationErrors(vec![message]))
    }
}

/// What applying or deleting one resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    /// Deleted rows, or marked them deleted under `reclaimPolicy: Retain`.
    Removed,
    /// A delete found nothing to remove.
    Absent,
}

impl Outcome {
    /// From an upsert that returns `(xmax = 0)` only when it wrote: `true` for an insert,
    /// `false` for an update, no row when the conditional update found nothing to change.
    pub(crate) fn of_upsert(inserted: Option<bool>) -> Self {
        match inserted {
            Some(true) => Outcome::Created,
            Some(false) => Outcome::Updated,
            None => Outcome::Unchanged,
        }
    }
}

/// Counts of outcomes for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Removed => self.removed += 1,
            Outcome::Absent => {}
        }
    }

    /// Whether anything was written.
    pub fn changed(&self) -> bool {
        self.created + self.updated + self.removed > 0
    }
}

/// What a sync did, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub domains: Counts,
    pub mailboxes: Counts,
    pub dkim_keys: Counts,
}

impl Report {
    pub fn changed(&self) -> bool {
        self.domains.changed() || self.mailboxes.changed() || self.dkim_keys.changed()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            ("MailDomain", &self.domains),
            ("Mailbox", &self.mailboxes),
            ("DkimKey", &self.dkim_keys),
        ];
        for (i, (kind, c)) in kinds.into_iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{kind}: {} created, {} updated, {} unchanged, {} removed",
                c.created, c.updated, c.unchanged, c.removed
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_prints() {
        let mut report = Report::default();
        assert!(!report.changed());
        for outcome in [Outcome::Created, Outcome::Unchanged, Outcome::Absent] {
            report.mailboxes.add(outcome);
        }
        report.domains.add(Outcome::Removed);
        assert!(report.changed());
        assert_eq!(
            report.to_string(),
            "MailDomain: 0 created, 0 updated, 0 unchanged, 1 removed; \
             Mailbox: 1 created, 0 updated, 1 unchanged, 0 removed; \
             DkimKey: 0 created, 0 updated, 0 unchanged, 0 removed"
        );
        let mut unchanged = Report::default();
        unchanged.dkim_keys.add(Outcome::Unchanged);
        assert!(!unchanged.changed());
    }
}
