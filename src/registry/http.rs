//! [`HttpRegistry`]: the OCI distribution API over `reqwest`.
//!
//! Every request goes through one pipeline, [`HttpRegistry::execute`]: per-host limiter →
//! pre-emptive `Authorization` from the token cache → send → on 401 answer the challenge
//! once and resend → on a transient status or transport error, back off (exponential,
//! full jitter, at least the capped `Retry-After`) and try again, up to the policy's
//! attempts. Streaming uploads cannot be replayed, so they are sent once and their
//! failures are retried by the copy engine with a fresh source stream.
//!
//! Upload sessions (monolithic and chunked uploads, cancelling what is given up) live in
//! the `upload` submodule; reading the wire (`Retry-After`, OCI error bodies, `Link`
//! pagination, redacted URLs) in `wire`.
//!
//! Metrics: every request to the registry goes out through [`HttpRegistry::send`], which
//! counts its answer (or its absence) in `regrelay_registry_requests_total`; `execute`
//! counts each decided retry in `regrelay_registry_retries_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::auth::{Authenticator, RepoScope, read_capped, without_url};
use super::{
    BlobReader, ByteStream, DeleteManifest, Error, ManifestBytes, ManifestHead, Mount, PutManifest, Registry,
    UploadSession,
};
use crate::config::{self, RegistryConfig};
use crate::metrics;
use crate::oci::{self, Digest, Locator};
use crate::retry::Schedule;

pub(super) mod upload;
mod wire;

pub use wire::parse_retry_after;
pub(crate) use wire::redact;
use wire::{header_str, host_port, parse_oci_errors, strip_params};

/// Largest manifest regrelay reads (distribution's own default limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest error body read for its OCI codes.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Default chunk size once a registry has refused a monolithic upload.
const DEFAULT_CHUNK: u64 = 16 << 20;
/// Smallest chunk regrelay shrinks to after 413 answers.
const MIN_CHUNK: u64 = 256 << 10;

/// Shared per-host request limiter: a bound on concurrent requests and an optional rate.
#[derive(Debug)]
struct Limiter {
    in_flight: Arc<Semaphore>,
    rate: Option<(Duration, Mutex<Instant>)>,
}

impl Limiter {
    fn new(max_in_flight: usize, rps: Option<f64>) -> Limiter {
        Limiter {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            rate: rps.map(|r| (Duration::from_secs_f64(1.0 / r), Mutex::new(Instant::now()))),
        }
    }

    /// Wait for a slot. The permit covers sending the request and reading its headers;
    /// a streamed response body is not counted, so a same-host copy (GET body feeding a
    /// PUT) can never deadlock on its own permits.
    async fn acquire(&self) -> tokio::sync::OwnedSemaphorePermit {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("limiter semaphore is never closed");
        if let Some((interval, next)) = &self.rate {
            let slot = {
                let mut next = next.lock().await;
                let slot = (*next).max(Instant::now());
                *next = slot + *interval;
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
        permit
    }
}

/// One request in the pipeline. The body, when any, is replayable.
struct Req<'a> {
    method: Method,
    url: Url,
    step: &'static str,
    scopes: &'a [RepoScope],
    headers: Vec<(reqwest::header::HeaderName, String)>,
    body: Option<Bytes>,
    /// Statuses handed back to the caller instead of becoming errors.
    ok: &'a [u16],
}

/// A registry host spoken to over HTTP(S).
#[derive(Debug)]
pub struct HttpRegistry {
    cfg: RegistryConfig,
    base: Url,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    limiter: Arc<Limiter>,
    /// Cancels the upload sessions this client gives up (see `upload`).
    canceller: upload::Canceller,
    /// Set once the host refused a monolithic upload with 413.
    force_chunked: AtomicBool,
    /// Chunk size in use; halved each time the host refuses a chunk with 413.
    chunk_size: AtomicU64,
    /// Set once the host answered a referrers request with "no such API".
    no_referrers_api: AtomicBool,
    /// Since when every request to the host has failed to get any answer (`None` while
    /// it answers). Past `cfg.unreachable_after`, connection failures become Systemic.
    unreachable_since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl HttpRegistry {
    /// A client for one configured host. Fails only on an unusable host name.
    pub fn new(cfg: RegistryConfig) -> Result<HttpRegistry, config::Error> {
        let base =
            Url::parse(&format!("{}://{}/", cfg.scheme(), cfg.dial_host())).map_err(|e| config::Error::Invalid {
                field: format!("registries.{}", cfg.host),
                reason: format!("not a usable host: {e}"),
            })?;
        let origin_host = cfg.dial_host().to_string();
        // Blob GETs may redirect to storage. Follow at most 5 hops, and only to HTTPS or
        // back to the registry itself; reqwest drops `Authorization` on cross-host hops.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("too many redirects");
            }
            let u = attempt.url();
            let same = host_port(u).is_some_and(|h| h == origin_host);
            if u.scheme() == "https" || same {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let roots = cfg.ca_certificates().map_err(|reason| config::Error::Invalid {
            field: format!("registries.{}.ca_file", config::key_path(&cfg.host)),
            reason,
        })?;
        let client = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .user_agent(concat!("regrelay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(policy)
            .pool_max_idle_per_host(cfg.max_in_flight)
            // HTTP/1.1 with a pool of connections, never HTTP/2: over TLS a registry
            // offers h2, whose one connection per host carries every blob through one TLS
            // session and one set of flow-control windows. Measured (docs/benchmarks.md,
            // "TLS"): a 512 MiB image 2.77 s over h2 against 1.80 s over HTTP/1.1, a 1 GiB
            // layer 6.27 s against 3.79 s.
            .http1_only()
            .build()
            .map_err(|e| config::Error::Invalid {
                field: format!("registries.{}", cfg.host),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        let auth = Arc::new(Authenticator::new(&cfg.host, cfg.auth.clone()));
        let limiter = Arc::new(Limiter::new(cfg.max_in_flight, cfg.requests_per_second));
        Ok(HttpRegistry {
            canceller: upload::Canceller::new(&cfg.host, client.clone(), auth.clone(), limiter.clone()),
            auth,
            limiter,
            force_chunked: AtomicBool::new(false),
            chunk_size: AtomicU64::new(cfg.chunk_size.unwrap_or(DEFAULT_CHUNK)),
            no_referrers_api: AtomicBool::new(false),
            unreachable_since: std::sync::Mutex::new(None),
            base,
            client,
            cfg,
        })
    }

    /// Wait, at most `timeout`, for the cancels of dropped upload sessions that are still
    /// running in the background (for a clean exit after shutdown dropped copies).
    pub async fn wait_for_cancels(&self, timeout: Duration) {
        self.canceller.wait(timeout).await;
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid URL paths")
    }

    fn is_own_host(&self, url: &Url) -> bool {
        host_port(url).is_some_and(|h| h == self.cfg.dial_host())
    }

    async fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        url: &Url,
        scopes: &[RepoScope],
    ) -> Result<reqwest::RequestBuilder, Error> {
        // Credentials go only to the registry itself, never to a Location on another host.
        if !self.is_own_host(url) {
            return Ok(rb);
        }
        Ok(match self.auth.header_for(scopes).await? {
            Some(h) => rb.header(AUTHORIZATION, h),
            None => rb,
        })
    }

    /// Send a built request and count the answer, or the transport failure, in the
    /// registry metrics. Every request to the registry goes through here.
    async fn send(&self, rb: reqwest::RequestBuilder) -> reqwest::Result<Response> {
        let started = tokio::time::Instant::now();
        let (client, req) = rb.build_split();
        let method = req.as_ref().map(|r| r.method().as_str().to_owned()).unwrap_or_default();
        let sent = match req {
            Ok(req) => client.execute(req).await,
            Err(e) => Err(e),
        };
        metrics::global().registry_request(
            &self.cfg.host,
            &method,
            sent.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
        let mut since = self.unreachable_since.lock().expect("unreachable state poisoned");
        match &sent {
            // Any answer, even an error status, proves the host reachable.
            Ok(_) => *since = None,
            Err(_) => {
                since.get_or_insert_with(tokio::time::Instant::now);
            }
        }
        sent
    }

    /// A connection failure after the retries, escalated to [`Error::Unreachable`]
    /// (Systemic) once the host has given no answer for longer than `unreachable_after`.
    fn escalate(&self, err: Error) -> Error {
        if !matches!(err, Error::Transport { .. }) {
            return err;
        }
        let since = *self.unreachable_since.lock().expect("unreachable state poisoned");
        match since {
            Some(t) if t.elapsed() >= self.cfg.unreachable_after => Error::Unreachable {
                host: self.cfg.host.clone(),
                secs: t.elapsed().as_secs(),
                last: Box::new(err),
            },
            _ => err,
        }
    }

    /// Send one request through limiter, auth and retries.
    async fn execute(&self, req: Req<'_>) -> Result<Response, Error> {
        let policy = &self.cfg.retry;
        let mut backoff = Schedule::new(policy.min_delay, policy.max_delay)
            .attempts(policy.attempts)
            .start();
        let mut attempt: u32 = 1;
        let mut refreshed_auth = false;
        loop {
            let result = self.send_once(&req).await;
            let err = match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !refreshed_auth => {
                    refreshed_auth = true;
                    let challenge = header_str(resp.headers(), "www-authenticate");
                    if self
                        .auth
                        .on_unauthorized(&self.client, challenge.as_deref(), req.scopes)
                        .await?
                    {
                        continue;
                    }
                    self.status_error(&req, resp).await
                }
                Ok(resp) if req.ok.contains(&resp.status().as_u16()) || resp.status().is_success() => {
                    return Ok(resp);
                }
                Ok(resp) => self.status_error(&req, resp).await,
                Err(e) => e,
            };
            if err.class() != super::ErrorClass::Transient {
                return Err(err);
            }
            let Some(jittered) = backoff.next_delay() else {
                let err = self.escalate(err);
                return Err(if attempt > 1 {
                    Error::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(err),
                    }
                } else {
                    err
                });
            };
            metrics::global().registry_retry(&self.cfg.host, err.class().into());
            // Full jitter over the exponential step, but never sooner than the server asked.
            let wait = match err.retry_after() {
                Some(ra) => jittered.max(ra.min(policy.max_retry_after)),
                None => jittered,
            };
            tracing::warn!(
                registry = %self.cfg.host, step = req.step, attempt, error = %err,
                retry_in_ms = wait.as_millis() as u64, "request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, req: &Req<'_>) -> Result<Response, Error> {
        let _permit = self.limiter.acquire().await;
        let mut rb = self.client.request(req.method.clone(), req.url.clone());
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.header(CONTENT_LENGTH, b.len()).body(b.clone());
        }
        let rb = self.authorize(rb, &req.url, req.scopes).await?;
        self.send(rb).await.map_err(|e| Error::Transport {
            step: req.step,
            url: redact(&req.url),
            detail: without_url(&e),
        })
    }

    /// Turn a non-success answer into a typed error, reading at most 64 KiB of its body.
    async fn status_error(&self, req: &Req<'_>, resp: Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = header_str(resp.headers(), "retry-after").and_then(|v| parse_retry_after(&v));
        let url = redact(&req.url);
        if status == 401 || (status == 403 && req.url.path() != "/v2/") {
            let body = if req.method == Method::HEAD {
                Vec::new()
            } else {
                read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default()
            };
            let (codes, _) = parse_oci_errors(&body);
            if status == 401 || codes.is_empty() || codes.iter().any(|c| c == "DENIED" || c == "UNAUTHORIZED") {
                self.auth.invalidate(req.scopes);
                return Error::Unauthorized {
                    step: req.step,
                    url,
                    host: self.cfg.host.clone(),
                    status,
                };
            }
            return Error::Status {
                step: req.step,
                url,
                status,
                codes,
                message: String::new(),
                retry_after,
            };
        }
        let body = if req.method == Method::HEAD {
            Vec::new()
        } else {
            read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default()
        };
        let (codes, message) = parse_oci_errors(&body);
        Error::Status {
            step: req.step,
            url,
            status,
            codes,
            message,
            retry_after,
        }
    }

    fn manifest_url(&self, repository: &str, locator: &Locator) -> Url {
        self.url(&format!("v2/{repository}/manifests/{locator}"))
    }

    fn reference(&self, repository: &str, locator: &Locator) -> String {
        match locator {
            Locator::Tag(t) => format!("{}/{repository}:{t}", self.cfg.host),
            Locator::Digest(d) => format!("{}/{repository}@{d}", self.cfg.host),
        }
    }

    /// Follow a `Location` header relative to the request URL.
    fn location(&self, step: &'static str, req_url: &Url, headers: &HeaderMap) -> Result<Url, Error> {
        let loc = header_str(headers, "location").ok_or_else(|| Error::Protocol {
            step,
            url: redact(req_url),
            detail: "the answer has no Location header".into(),
        })?;
        req_url.join(&loc).map_err(|_| Error::Protocol {
            step,
            url: redact(req_url),
            detail: "the Location header is not a URL".into(),
        })
    }
}

impl Registry for HttpRegistry {
    fn host(&self) -> &str {
        &self.cfg.host
    }

    async fn get_manifest(&self, repository: &str, locator: &Locator) -> Result<ManifestBytes, Error> {
        let scopes = [RepoScope::pull(repository)];
        let url = self.manifest_url(repository, locator);
        let reference = self.reference(repository, locator);
        let req = Req {
            method: Method::GET,
            url,
            step: "get manifest",
            scopes: &scopes,
            headers: vec![(ACCEPT, oci::ACCEPTED_MANIFEST_TYPES.join(", "))],
            body: None,
            ok: &[200, 404],
        };
        let resp = self.execute(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestUnknown { reference });
        }
        let content_type = header_str(resp.headers(), "content-type")
            .map(|v| strip_params(&v))
            .unwrap_or_default();
        let header_digest = header_str(resp.headers(), "docker-content-digest").and_then(|v| v.parse::<Digest>().ok());
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
            return Err(Error::ManifestTooLarge {
                reference,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let body = read_capped(resp, MAX_MANIFEST_BYTES + 1)
            .await
            .map_err(|detail| Error::Transport {
                step: "read manifest",
                url: reference.clone(),
                detail,
            })?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(Error::ManifestTooLarge {
                reference,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        // Hash the exact bytes; headers are claims to check, not facts.
        let digest = match (locator, &header_digest) {
            (Locator::Digest(d), _) => d.clone(),
            (Locator::Tag(_), Some(h)) => h.clone(),
            (Locator::Tag(_), None) => Digest::sha256_of(&body),
        };
        let actual = digest.recompute(&body);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: digest,
                actual,
            });
        }
        if let Some(h) = header_digest.filter(|h| h.algorithm() == digest.algorithm() && *h != digest) {
            return Err(Error::DigestMismatch {
                what: format!("manifest {reference} (Docker-Content-Digest)"),
                expected: digest,
                actual: h,
            });
        }
        let media_type = if oci::is_manifest_type(&content_type) {
            content_type
        } else {
            oci::declared_media_type(&body).unwrap_or(content_type)
        };
        Ok(ManifestBytes {
            bytes: Bytes::from(body),
            media_type,
            digest,
        })
    }

    async fn head_manifest(&self, repository: &str, locator: &Locator) -> Result<Option<ManifestHead>, Error> {
        let scopes = [RepoScope::pull(repository)];
        let req = Req {
            method: Method::HEAD,
            url: self.manifest_url(repository, locator),
            step: "check manifest",
            scopes: &scopes,
            headers: vec![(ACCEPT, oci::ACCEPTED_MANIFEST_TYPES.join(", "))],
            body: None,
            ok: &[200, 404],
        };
        let resp = self.execute(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(ManifestHead {
            digest: header_str(resp.headers(), "docker-content-digest").and_then(|v| v.parse().ok()),
            media_type: header_str(resp.headers(), "content-type")
                .map(|v| strip_params(&v))
                .unwrap_or_default(),
            ratelimit: super::RateLimit::from_headers(resp.headers()),
        }))
    }

    async fn put_manifest(
        &self,
        repository: &str,
        locator: &Locator,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifest, Error> {
        let scopes = [RepoScope::push(repository)];
        let expected = Digest::sha256_of(&bytes);
        let reference = self.reference(repository, locator);
        let req = Req {
            method: Method::PUT,
            url: self.manifest_url(repository, locator),
            step: "put manifest",
            scopes: &scopes,
            headers: vec![(CONTENT_TYPE, media_type.into())],
            body: Some(bytes),
            ok: &[201],
        };
        let resp = self.execute(req).await?;
        if let Some(d) = header_str(resp.headers(), "docker-content-digest").and_then(|v| v.parse::<Digest>().ok())
            && d.algorithm() == expected.algorithm()
            && d != expected
        {
            return Err(Error::DigestMismatch {
                what: format!("stored manifest {reference}"),
                expected,
                actual: d,
            });
        }
        Ok(PutManifest {
            subject_indexed: resp.headers().contains_key("oci-subject"),
        })
    }

    async fn delete_manifest(&self, repository: &str, locator: &Locator) -> Result<DeleteManifest, Error> {
        let scopes = [RepoScope::delete(repository)];
        let req = Req {
            method: Method::DELETE,
            url: self.manifest_url(repository, locator),
            step: "delete manifest",
            scopes: &scopes,
            headers: vec![],
            body: None,
            ok: &[200, 202, 404],
        };
        match self.execute(req).await {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => Ok(DeleteManifest::NotFound),
            Ok(_) => Ok(DeleteManifest::Deleted),
            // distribution answers 405 UNSUPPORTED when deletes are disabled; some
            // registries use 400 with the same code.
            Err(Error::Status { status: 405, .. }) => Ok(DeleteManifest::Unsupported),
            Err(Error::Status { status: 400, codes, .. }) if codes.iter().any(|c| c == "UNSUPPORTED") => {
                Ok(DeleteManifest::Unsupported)
            }
            // A registry that deletes only by digest parses the tag as one: distribution
            // 2.x answers a DELETE by tag with 400 DIGEST_INVALID (the spec makes deleting
            // a tag optional).
            Err(Error::Status { status: 400, codes, .. })
                if matches!(locator, Locator::Tag(_)) && codes.iter().any(|c| c == "DIGEST_INVALID") =>
            {
                Ok(DeleteManifest::Unsupported)
            }
            Err(e) => Err(e),
        }
    }

    async fn head_blob(&self, repository: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        let scopes = [RepoScope::pull(repository)];
        let req = Req {
            method: Method::HEAD,
            url: self.url(&format!("v2/{repository}/blobs/{digest}")),
            step: "check blob",
            scopes: &scopes,
            headers: vec![],
            body: None,
            ok: &[200, 404],
        };
        let resp = self.execute(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // reqwest reports a HEAD body as empty, so read the header itself.
        Ok(Some(
            header_str(resp.headers(), "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }

    async fn get_blob(&self, repository: &str, digest: &Digest) -> Result<BlobReader, Error> {
        let scopes = [RepoScope::pull(repository)];
        let req = Req {
            method: Method::GET,
            url: self.url(&format!("v2/{repository}/blobs/{digest}")),
            step: "get blob",
            scopes: &scopes,
            headers: vec![],
            body: None,
            ok: &[200, 404],
        };
        let resp = self.execute(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::BlobUnknown {
                repository: format!("{}/{repository}", self.cfg.host),
                digest: digest.clone(),
            });
        }
        let size = resp.content_length();
        let stream = resp.bytes_stream().map_err(|e| std::io::Error::other(without_url(&e)));
        Ok(BlobReader {
            size,
            stream: Box::pin(stream),
        })
    }

    async fn mount_blob(&self, repository: &str, digest: &Digest, from: &str) -> Result<Mount, Error> {
        let scopes = [RepoScope::push(repository), RepoScope::pull(from)];
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let req = Req {
            method: Method::POST,
            url: url.clone(),
            step: "mount blob",
            scopes: &scopes,
            headers: vec![],
            body: Some(Bytes::new()),
            ok: &[201, 202],
        };
        let resp = self.execute(req).await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::NotMounted(self.session_from(
            "mount blob",
            repository,
            &url,
            &resp,
        )?))
    }

    async fn start_upload(&self, repository: &str) -> Result<UploadSession, Error> {
        let scopes = [RepoScope::push(repository)];
        let url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        let req = Req {
            method: Method::POST,
            url: url.clone(),
            step: "start upload",
            scopes: &scopes,
            headers: vec![],
            body: Some(Bytes::new()),
            ok: &[202],
        };
        let resp = self.execute(req).await?;
        self.session_from("start upload", repository, &url, &resp)
    }

    async fn upload_blob(
        &self,
        session: UploadSession,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), Error> {
        self.upload(session, digest, size, body).await
    }

    async fn cancel_upload(&self, session: UploadSession) {
        session.cancel().await;
    }

    async fn list_tags(&self, repository: &str) -> Result<Vec<String>, Error> {
        let scopes = [RepoScope::pull(repository)];
        let url = self.url(&format!("v2/{repository}/tags/list"));
        // A repository that does not exist has no tags.
        self.paginated(url, "list tags", &scopes, "tags", true).await
    }

    async fn list_repositories(&self) -> Result<Option<Vec<String>>, Error> {
        let scopes = [RepoScope::catalog()];
        let url = self.url("v2/_catalog");
        match self
            .paginated(url, "list repositories", &scopes, "repositories", false)
            .await
        {
            Ok(list) => Ok(Some(list)),
            // Many registries deny the catalog to everyone: not having one is an answer.
            Err(Error::Unauthorized { .. }) => Ok(None),
            Err(e) if matches!(e.status(), Some(404 | 405)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn referrers(&self, repository: &str, digest: &Digest) -> Result<Option<Bytes>, Error> {
        if self.no_referrers_api.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let scopes = [RepoScope::pull(repository)];
        let req = Req {
            method: Method::GET,
            url: self.url(&format!("v2/{repository}/referrers/{digest}")),
            step: "list referrers",
            scopes: &scopes,
            headers: vec![(ACCEPT, oci::OCI_INDEX.into())],
            body: None,
            ok: &[200, 400, 404, 405],
        };
        let resp = self.execute(req).await?;
        if resp.status() != StatusCode::OK {
            // A registry has the API or it does not: stop asking after the first "no".
            self.no_referrers_api.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let url = redact(resp.url());
        let body = read_capped(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|detail| Error::Transport {
                step: "list referrers",
                url,
                detail,
            })?;
        Ok(Some(Bytes::from(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests_by_rate() {
        let l = Limiter::new(8, Some(10.0));
        let start = Instant::now();
        for _ in 0..5 {
            drop(l.acquire().await);
        }
        // Five slots at 100 ms spacing: the fifth starts 400 ms after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_bounds_concurrency() {
        let l = Arc::new(Limiter::new(2, None));
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "third request must wait for a slot");
        drop(a);
        let _permit = waiter.await.unwrap();
    }
}
