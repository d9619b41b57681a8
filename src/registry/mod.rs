//! The registry client: the [`Registry`] trait the copy engine is written against, its
//! HTTP implementation ([`HttpRegistry`], in `http.rs`), typed errors and their
//! classification into [`ErrorClass`].
//!
//! Role: speak the OCI distribution API to one host: manifests as raw bytes, blobs as
//! streams, uploads, mounts, tags, referrers and manifest deletes, with authentication,
//! retries that honour `Retry-After`, and a per-host limiter shared by every copy. Every
//! request and retry is counted in `crate::metrics` under the configured host.
//!
//! Must never: know about queues, messages or acknowledgements (a unit test in `lib.rs`
//! enforces the import direction); contact a host that is not in its [`RegistrySet`];
//! buffer a whole blob; put a credential or a full response body in an error.

pub mod auth;
mod http;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::config::{self, RegistryConfig};
use crate::metrics;
use crate::oci::{self, Digest, Locator};

pub use http::HttpRegistry;
pub use http::upload::CANCEL_TIMEOUT;

/// A stream of blob bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// How the pipeline should treat a failure (see STYLE.md, "Error classification").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Worth retrying: network trouble, throttling, 5xx, a digest mismatch in transit.
    Transient,
    /// Failing for this image only: it is gone, invalid, or refused by policy.
    Permanent,
    /// Failing for every image until an operator acts: credentials rejected.
    Systemic,
}

impl ErrorClass {
    /// Lowercase name, for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Systemic => "systemic",
        }
    }
}

impl From<ErrorClass> for metrics::Class {
    fn from(c: ErrorClass) -> metrics::Class {
        match c {
            ErrorClass::Transient => metrics::Class::Transient,
            ErrorClass::Permanent => metrics::Class::Permanent,
            ErrorClass::Systemic => metrics::Class::Systemic,
        }
    }
}

/// Errors from registry operations. Every message names the step and the (redacted)
/// URL or reference, never a credential or a whole response body.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed, was reset, or timed out.
    #[error("{step} {url}: connection failed: {detail}")]
    Transport {
        /// What was being done.
        step: &'static str,
        /// Redacted URL.
        url: String,
        /// The transport error text (URLs removed).
        detail: String,
    },
    /// The host has not answered at all for longer than its `unreachable_after`: every
    /// message needing it would fail the same way, so this is Systemic.
    #[error("{host} unreachable for {secs} s; last failure: {last}")]
    Unreachable {
        /// The host.
        host: String,
        /// For how long it has not answered.
        secs: u64,
        /// The last connection failure.
        #[source]
        last: Box<Error>,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("{step} {url}: HTTP {status}{}", fmt_codes(codes, message))]
    Status {
        /// What was being done.
        step: &'static str,
        /// Redacted URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// OCI error codes from the body, if any.
        codes: Vec<String>,
        /// The first error message from the body, truncated.
        message: String,
        /// Server-requested delay, if any.
        retry_after: Option<Duration>,
    },
    /// The manifest (or its repository) does not exist.
    #[error("manifest not found: {reference}")]
    ManifestUnknown {
        /// The reference that was asked for.
        reference: String,
    },
    /// A blob does not exist in the source repository.
    #[error("blob not found: {repository}@{digest}")]
    BlobUnknown {
        /// Repository (host/path).
        repository: String,
        /// Blob digest.
        digest: Digest,
    },
    /// Authentication failed even after a fresh token.
    #[error("{step} {url}: {host} rejected our credentials (HTTP {status})")]
    Unauthorized {
        /// What was being done.
        step: &'static str,
        /// Redacted URL.
        url: String,
        /// Registry host.
        host: String,
        /// 401 or 403.
        status: u16,
    },
    /// A token expired while a request body was streaming; a retry gets a fresh one.
    #[error("{step} {url}: token expired during the request")]
    TokenExpired {
        /// What was being done.
        step: &'static str,
        /// Redacted URL.
        url: String,
    },
    /// Authentication machinery failed (token endpoint, credential helper).
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// Content did not hash to the expected digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: Digest,
        /// Computed or reported digest.
        actual: Digest,
    },
    /// Content had the wrong length.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A manifest is larger than regrelay accepts.
    #[error("manifest {reference} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The reference.
        reference: String,
        /// The limit.
        limit: usize,
    },
    /// The manifest body is not a manifest regrelay understands.
    #[error("invalid manifest {reference}: {source}")]
    InvalidManifest {
        /// The reference.
        reference: String,
        /// The parse error.
        #[source]
        source: oci::Error,
    },
    /// The registry refused a monolithic upload as too large; the next attempt is chunked.
    #[error("{url}: the registry refused a {size}-byte upload in one request (HTTP 413); switching to chunked uploads")]
    UploadTooLarge {
        /// Redacted URL.
        url: String,
        /// Blob size.
        size: u64,
    },
    /// The registry's answer broke the protocol (missing `Location`, bad header...).
    #[error("{step} {url}: {detail}")]
    Protocol {
        /// What was being done.
        step: &'static str,
        /// Redacted URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The host is not in the configuration, so regrelay will not contact it.
    #[error("registry {host} is not configured; refusing to contact it")]
    HostNotAllowed {
        /// The host.
        host: String,
    },
}

fn fmt_codes(codes: &[String], message: &str) -> String {
    match (codes.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!(" ({message})"),
        (false, true) => format!(" {}", codes.join(",")),
        (false, false) => format!(" {}: {message}", codes.join(",")),
    }
}

/// OCI error codes that mean "try again" when every code in a response is one of them.
const TRANSIENT_CODES: [&str; 4] = ["TOOMANYREQUESTS", "UNAVAILABLE", "UNKNOWN", "BLOB_UPLOAD_INVALID"];

impl Error {
    /// Classify this error for the pipeline's settle policy.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Transport { .. }
            | Error::TokenExpired { .. }
            | Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::UploadTooLarge { .. }
            | Error::Protocol { .. } => ErrorClass::Transient,
            Error::Status { status, codes, .. } => classify_status(*status, codes),
            Error::ManifestUnknown { .. }
            | Error::BlobUnknown { .. }
            | Error::ManifestTooLarge { .. }
            | Error::InvalidManifest { .. }
            | Error::HostNotAllowed { .. } => ErrorClass::Permanent,
            Error::Unauthorized { .. } | Error::Unreachable { .. } => ErrorClass::Systemic,
            Error::Auth(e) => match e {
                auth::Error::TokenUnavailable { .. } => ErrorClass::Transient,
                auth::Error::TokenRefused { .. }
                | auth::Error::TokenInvalid { .. }
                | auth::Error::Credentials { .. } => ErrorClass::Systemic,
            },
        }
    }

    /// The server-requested delay, when the error carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the error is an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Unauthorized { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Classify an HTTP status plus the OCI codes in its body.
pub fn classify_status(status: u16, codes: &[String]) -> ErrorClass {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
        401 | 403 => ErrorClass::Systemic,
        _ if !codes.is_empty() && codes.iter().all(|c| TRANSIENT_CODES.contains(&c.as_str())) => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone)]
pub struct ManifestBytes {
    /// The raw bytes; never re-serialised.
    pub bytes: Bytes,
    /// The media type (from `Content-Type`, else the body's `mediaType`).
    pub media_type: String,
    /// The digest of `bytes` (verified against the request and the registry's header).
    pub digest: Digest,
}

/// What a manifest HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<Digest>,
    /// `Content-Type`, parameters stripped.
    pub media_type: String,
}

/// What a manifest PUT said back.
#[derive(Debug, Clone, Default)]
pub struct PutManifest {
    /// The registry sent `OCI-Subject`: it indexed the manifest's subject itself.
    pub subject_indexed: bool,
}

/// What a manifest DELETE said back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteManifest {
    /// 202 (or 200): the manifest is gone.
    Deleted,
    /// 404: there was nothing to delete (manifest or repository unknown).
    NotFound,
    /// 405, or 400 with code `UNSUPPORTED`: the registry does not allow deletes
    /// (distribution with `storage.delete.enabled: false`, pull-through caches). For a
    /// tag locator also 400 `DIGEST_INVALID`: the registry deletes only by digest
    /// (distribution 2.x with deletes enabled).
    Unsupported,
}

/// An open upload session, armed until the registry commits it: a session given up in
/// any way (an upload error, [`Registry::cancel_upload`], or simply being dropped, e.g.
/// with a copy cancelled at shutdown) is cancelled on the registry with a `DELETE`,
/// best effort and bounded in time. Neither `Clone` nor `Copy`: one owner decides.
#[derive(Debug)]
pub struct UploadSession {
    /// Where to send the data (absolute; opaque query parameters preserved). Chunked
    /// uploads move it along with each answer.
    pub location: url::Url,
    /// `OCI-Chunk-Min-Length`, if the registry asked for one.
    pub min_chunk: Option<u64>,
    /// Repository the session belongs to.
    pub repository: String,
    /// Cancels the session unless it was committed; `None` once settled.
    canceller: Option<http::upload::Canceller>,
}

/// Result of a cross-repository mount attempt.
#[derive(Debug)]
pub enum Mount {
    /// 201: the blob is now in the repository.
    Mounted,
    /// 202: not mounted; the registry opened this upload session instead.
    NotMounted(UploadSession),
}

/// A blob being read.
pub struct BlobReader {
    /// `Content-Length`, if sent (not trusted: the verifier counts).
    pub size: Option<u64>,
    /// The bytes.
    pub stream: ByteStream,
}

/// The operations the copy engine needs from one registry host.
///
/// Repository arguments are paths on this host (`team/app`). Methods return futures that
/// are `Send` so that copies can run on any worker thread.
pub trait Registry: Send + Sync + 'static {
    /// The host this client talks to.
    fn host(&self) -> &str;

    /// GET a manifest; the bytes are verified against `locator` when it is a digest and
    /// against the registry's `Docker-Content-Digest` header when it sends one.
    fn get_manifest(
        &self,
        repository: &str,
        locator: &Locator,
    ) -> impl Future<Output = Result<ManifestBytes, Error>> + Send;

    /// HEAD a manifest; `None` when it does not exist.
    fn head_manifest(
        &self,
        repository: &str,
        locator: &Locator,
    ) -> impl Future<Output = Result<Option<ManifestHead>, Error>> + Send;

    /// PUT manifest bytes under a tag or digest.
    fn put_manifest(
        &self,
        repository: &str,
        locator: &Locator,
        media_type: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<PutManifest, Error>> + Send;

    /// DELETE a manifest by digest (or, where the registry supports it, untag by tag).
    /// Deleting by digest removes the manifest and every tag pointing at it.
    fn delete_manifest(
        &self,
        repository: &str,
        locator: &Locator,
    ) -> impl Future<Output = Result<DeleteManifest, Error>> + Send;

    /// HEAD a blob; its size when present.
    fn head_blob(&self, repository: &str, digest: &Digest) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// GET a blob as a stream (redirects to storage followed, without credentials).
    fn get_blob(&self, repository: &str, digest: &Digest) -> impl Future<Output = Result<BlobReader, Error>> + Send;

    /// Try a cross-repository mount of `digest` from `from` into `repository`.
    fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> impl Future<Output = Result<Mount, Error>> + Send;

    /// Open an upload session.
    fn start_upload(&self, repository: &str) -> impl Future<Output = Result<UploadSession, Error>> + Send;

    /// Stream `size` bytes into the session and commit them as `digest`. The registry
    /// commits only if the whole body arrives; the caller's stream fails before its last
    /// chunk when the content does not verify, so a bad blob is never committed. On any
    /// error the session is cancelled before the error is returned.
    fn upload_blob(
        &self,
        session: UploadSession,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Abandon an upload session: `DELETE` it on the registry (best effort, bounded).
    fn cancel_upload(&self, session: UploadSession) -> impl Future<Output = ()> + Send;

    /// All tags of a repository (paginated); empty when the repository does not exist.
    fn list_tags(&self, repository: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Every repository the registry lists at `GET /v2/_catalog` (paginated, `n=1000` and
    /// the `Link` header). A registry without a catalog (or credentials without the
    /// `registry:catalog:*` scope) answers with an error, returned as is.
    fn list_repositories(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// The referrers index for `digest`, or `None` when the registry has no referrers API.
    fn referrers(&self, repository: &str, digest: &Digest)
    -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;
}

/// Looks up the client for a host. Implementations refuse hosts they were not given.
pub trait Registries: Send + Sync + 'static {
    /// The client type.
    type Registry: Registry;
    /// The client for `host`, or [`Error::HostNotAllowed`].
    fn get(&self, host: &str) -> Result<Arc<Self::Registry>, Error>;
}

/// The configured registries, one shared [`HttpRegistry`] per host.
#[derive(Debug, Default)]
pub struct RegistrySet {
    by_host: HashMap<String, Arc<HttpRegistry>>,
}

impl RegistrySet {
    /// Validate the configs and build one client per host.
    pub fn from_configs(configs: impl IntoIterator<Item = RegistryConfig>) -> Result<RegistrySet, config::Error> {
        let mut by_host = HashMap::new();
        for c in configs {
            c.validate()?;
            let host = c.host.clone();
            if by_host.contains_key(&host) {
                return Err(config::Error::Invalid {
                    field: format!("registries.{host}"),
                    reason: "configured twice".into(),
                });
            }
            by_host.insert(host, Arc::new(HttpRegistry::new(c)?));
        }
        Ok(RegistrySet { by_host })
    }

    /// The configured hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    /// Wait, at most `timeout` in all, for the upload cancels still running in the
    /// background on every host (sessions dropped with their copies at shutdown).
    pub async fn wait_for_cancels(&self, timeout: Duration) {
        let waits = self.by_host.values().map(|r| r.wait_for_cancels(timeout));
        futures_util::future::join_all(waits).await;
    }
}

impl Registries for RegistrySet {
    type Registry = HttpRegistry;
    fn get(&self, host: &str) -> Result<Arc<HttpRegistry>, Error> {
        self.by_host
            .get(host)
            .cloned()
            .ok_or_else(|| Error::HostNotAllowed { host: host.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn status_classification_table() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s, &[]), ErrorClass::Transient, "{s}");
        }
        assert_eq!(classify_status(401, &[]), ErrorClass::Systemic);
        assert_eq!(classify_status(403, &codes(&["DENIED"])), ErrorClass::Systemic);
        assert_eq!(
            classify_status(404, &codes(&["MANIFEST_UNKNOWN"])),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify_status(400, &codes(&["MANIFEST_INVALID"])),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify_status(400, &codes(&["BLOB_UPLOAD_INVALID"])),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_status(400, &codes(&["TOOMANYREQUESTS", "UNKNOWN"])),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_status(400, &codes(&["UNKNOWN", "MANIFEST_INVALID"])),
            ErrorClass::Permanent,
            "only when every code is transient"
        );
        assert_eq!(classify_status(405, &[]), ErrorClass::Permanent);
    }

    #[test]
    fn error_classes() {
        let d = Digest::sha256_of(b"x");
        let e = Error::DigestMismatch {
            what: "blob".into(),
            expected: d.clone(),
            actual: d.clone(),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(
            Error::ManifestUnknown { reference: "r".into() }.class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            Error::HostNotAllowed { host: "h".into() }.class(),
            ErrorClass::Permanent
        );
        let e = Error::Unauthorized {
            step: "s",
            url: "u".into(),
            host: "h".into(),
            status: 401,
        };
        assert_eq!(e.class(), ErrorClass::Systemic);
        let e = Error::Auth(auth::Error::TokenRefused {
            host: "h".into(),
            realm_host: "a".into(),
            status: 401,
        });
        assert_eq!(e.class(), ErrorClass::Systemic);
    }

    #[test]
    fn error_classes_map_to_metric_classes() {
        assert_eq!(metrics::Class::from(ErrorClass::Transient), metrics::Class::Transient);
        assert_eq!(metrics::Class::from(ErrorClass::Permanent), metrics::Class::Permanent);
        assert_eq!(metrics::Class::from(ErrorClass::Systemic), metrics::Class::Systemic);
    }

    #[test]
    fn status_error_text() {
        let e = Error::Status {
            step: "get manifest",
            url: "https://r/v2/a/manifests/v1".into(),
            status: 429,
            codes: codes(&["TOOMANYREQUESTS"]),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(
            e.to_string(),
            "get manifest https://r/v2/a/manifests/v1: HTTP 429 TOOMANYREQUESTS: slow down"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn unknown_hosts_are_refused() {
        let set = RegistrySet::from_configs([RegistryConfig::new("127.0.0.1:5000")]).unwrap();
        assert!(set.get("127.0.0.1:5000").is_ok());
        let err = set.get("evil.example").unwrap_err();
        assert!(matches!(err, Error::HostNotAllowed { .. }));
        assert!(RegistrySet::from_configs([RegistryConfig::new("a"), RegistryConfig::new("a")]).is_err());
    }
}
