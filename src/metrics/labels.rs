//! Label values of the metric families: closed enums whose `as_str()` is the only way a
//! value reaches a label, and the small mapping functions for HTTP methods and statuses.
//!
//! Must never: produce a label value from data (a repository, tag, digest, URL or error
//! text); every value here is a literal.

/// The `rule` or `target` label value of a copy whose rule or target host is not in the
/// configured sets ([`Metrics::configure_routes`](crate::metrics::Metrics::configure_routes)): work from a front end without rules,
/// or any value a bug might pass.
pub const OTHER: &str = "other";

/// The `method` label value of a registry request: the HTTP methods the client sends,
/// anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// How a message was settled (label `outcome` of `regrelay_messages_settled_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settle {
    /// Acknowledged after a verified outcome.
    Acked,
    /// Negatively acknowledged: the broker redelivers it.
    Nacked,
    /// Acknowledged without work: the event is not one regrelay acts on.
    Ignored,
    /// Rejected: dead-lettered, or acked and counted (Pub/Sub `reject_mode`).
    Rejected,
}

impl Settle {
    pub(super) const ALL: [Settle; 4] = [Settle::Acked, Settle::Nacked, Settle::Ignored, Settle::Rejected];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Settle::Acked => "acked",
            Settle::Nacked => "nacked",
            Settle::Ignored => "ignored",
            Settle::Rejected => "rejected",
        }
    }
}

/// The error class of a failure (label `error_class`), mirroring `registry::ErrorClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Worth retrying.
    Transient,
    /// Failing for this message only.
    Permanent,
    /// Failing for every message until an operator acts.
    Systemic,
}

impl Class {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Permanent => "permanent",
            Class::Systemic => "systemic",
        }
    }
}

/// How one copy ended (labels `outcome` and `error_class` of `regrelay_copies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyResult {
    /// Something was written and verified.
    Replicated,
    /// The target already held everything.
    AlreadyPresent,
    /// The copy failed with this class.
    Failed(Class),
}

impl CopyResult {
    pub(super) const ALL: [CopyResult; 5] = [
        CopyResult::Replicated,
        CopyResult::AlreadyPresent,
        CopyResult::Failed(Class::Transient),
        CopyResult::Failed(Class::Permanent),
        CopyResult::Failed(Class::Systemic),
    ];

    /// The `outcome` label value.
    pub fn outcome(self) -> &'static str {
        match self {
            CopyResult::Replicated => "replicated",
            CopyResult::AlreadyPresent => "already_present",
            CopyResult::Failed(_) => "failed",
        }
    }

    /// The `error_class` label value (`none` unless failed).
    pub fn error_class(self) -> &'static str {
        match self {
            CopyResult::Failed(c) => c.as_str(),
            _ => "none",
        }
    }
}

/// Why a duplicate was skipped (label `kind` of `regrelay_dedup_hits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DedupKind {
    /// The same image is being copied right now.
    InFlight,
    /// The same image was copied recently.
    Recent,
    /// The target tag already pointed at the source tag's current digest.
    InPlace,
}

impl DedupKind {
    pub(super) const ALL: [DedupKind; 3] = [DedupKind::InFlight, DedupKind::Recent, DedupKind::InPlace];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupKind::InFlight => "in_flight",
            DedupKind::Recent => "recent",
            DedupKind::InPlace => "in_place",
        }
    }
}

/// How one delete request ended (label `outcome` of `regrelay_deletes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteResult {
    /// The target manifest was deleted.
    Deleted,
    /// Dry run: it would have been deleted.
    DryRun,
    /// Not deleted on purpose (absent, moved to another digest, or not allowed by rules).
    Skipped,
    /// The target registry does not allow deletes.
    Unsupported,
    /// The delete failed.
    Failed,
}

impl DeleteResult {
    pub(super) const ALL: [DeleteResult; 5] = [
        DeleteResult::Deleted,
        DeleteResult::DryRun,
        DeleteResult::Skipped,
        DeleteResult::Unsupported,
        DeleteResult::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteResult::Deleted => "deleted",
            DeleteResult::DryRun => "dry_run",
            DeleteResult::Skipped => "skipped",
            DeleteResult::Unsupported => "unsupported",
            DeleteResult::Failed => "failed",
        }
    }
}

/// What happened to one blob of a copy (label `action` of `regrelay_blobs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobAction {
    /// Streamed from source to target.
    Uploaded,
    /// Mounted from another repository of the target registry.
    Mounted,
    /// Already present at the target.
    Skipped,
}

impl BlobAction {
    pub(super) const ALL: [BlobAction; 3] = [BlobAction::Uploaded, BlobAction::Mounted, BlobAction::Skipped];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::Uploaded => "uploaded",
            BlobAction::Mounted => "mounted",
            BlobAction::Skipped => "skipped",
        }
    }
}

/// The `status_class` label value of one registry answer: `1xx`..`5xx`, or `error` when
/// no HTTP answer came back (connect, reset, timeout) or the status is out of range.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status.map(|s| s / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        _ => "error",
    }
}
