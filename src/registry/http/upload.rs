//! Blob upload sessions over HTTP: stream a blob into an open session (one monolithic
//! `PUT`, or `PATCH` chunks and a closing `PUT`) and cancel every session regrelay gives up.
//!
//! A session is armed from the moment the registry opens it (`POST …/blobs/uploads/`,
//! or a mount answered 202) until its closing `PUT` is answered 201. On every other way
//! out it is cancelled with `DELETE` on its latest location (OCI distribution spec,
//! "Canceling an upload"), so the target does not keep the partial data:
//! - an upload that fails (transport error, error status, a source stream that fails
//!   its digest check) is cancelled before the error is returned;
//! - a session dropped while armed (its copy was cancelled at shutdown, or its future
//!   dropped for any other reason) is cancelled by a task spawned on the current tokio
//!   runtime, tracked so that `regrelay run` waits for it before exiting.
//!
//! Must never: cancel a committed upload; block an error path or a shutdown for longer
//! than [`CANCEL_TIMEOUT`]; send credentials to a location on another host than the
//! registry's own; fail the copy because a cancel failed (it is best effort: a session
//! the `DELETE` could not reach, or one left by a process killed with `SIGKILL`, is
//! removed by the registry's own upload purging).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response};
use tokio_util::task::TaskTracker;
use url::Url;

use super::{HttpRegistry, Limiter, MIN_CHUNK, Req, header_str, host_port, redact};
use crate::metrics;
use crate::oci::Digest;
use crate::registry::auth::{Authenticator, RepoScope, without_url};
use crate::registry::{ByteStream, Error, UploadSession};

/// Longest a cancel may take, token, limiter slot and `DELETE` included.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a session needs to cancel itself, even after the copy that opened it is gone:
/// cheap clones of its registry client's parts.
#[derive(Debug, Clone)]
pub(in crate::registry) struct Canceller {
    host: String,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    limiter: Arc<Limiter>,
    /// Cancels running in the background, for [`Canceller::wait`].
    background: TaskTracker,
}

impl Canceller {
    pub(super) fn new(host: &str, client: reqwest::Client, auth: Arc<Authenticator>, limiter: Arc<Limiter>) -> Self {
        Canceller {
            host: host.to_owned(),
            client,
            auth,
            limiter,
            background: TaskTracker::new(),
        }
    }

    /// `DELETE` the session at `location`, within [`CANCEL_TIMEOUT`]. Never fails: the
    /// outcome is logged, and a session left behind is the registry's purging's to remove.
    async fn cancel(&self, location: Url, repository: String) {
        let url = redact(&location);
        match tokio::time::timeout(CANCEL_TIMEOUT, self.delete(location, &repository)).await {
            // 404: already gone (the registry cancels a session itself on some errors).
            Ok(Ok(status)) if (200..300).contains(&status) || status == 404 => {
                tracing::debug!(registry = %self.host, url, status, "upload session cancelled");
            }
            Ok(Ok(status)) => {
                tracing::warn!(registry = %self.host, url, status, "the registry refused to cancel an upload session; its upload purging will remove it");
            }
            Ok(Err(error)) => {
                tracing::warn!(registry = %self.host, url, %error, "could not cancel an upload session; the registry's upload purging will remove it");
            }
            Err(_) => {
                tracing::warn!(registry = %self.host, url, timeout_ms = CANCEL_TIMEOUT.as_millis() as u64, "cancelling an upload session timed out; the registry's upload purging will remove it");
            }
        }
    }

    async fn delete(&self, location: Url, repository: &str) -> Result<u16, String> {
        let _permit = self.limiter.acquire().await;
        let mut rb = self.client.delete(location.clone());
        // Credentials go only to the registry itself, never to a location on another host.
        if host_port(&location).is_some_and(|h| h == self.host) {
            let scopes = [RepoScope::push(repository)];
            if let Some(h) = self.auth.header_for(&scopes).await.map_err(|e| e.to_string())? {
                rb = rb.header(AUTHORIZATION, h);
            }
        }
        let sent = rb.send().await;
        metrics::global().registry_request(&self.host, sent.as_ref().ok().map(|r| r.status().as_u16()));
        sent.map(|r| r.status().as_u16()).map_err(|e| without_url(&e))
    }

    /// Cancel in a task of the current runtime, for a session dropped while armed. Without
    /// a runtime (dropped outside one) nothing can be sent; the registry purges it later.
    fn cancel_in_background(&self, location: Url, repository: String) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let this = self.clone();
                self.background
                    .spawn_on(async move { this.cancel(location, repository).await }, &rt);
            }
            Err(_) => tracing::warn!(
                registry = %self.host, url = redact(&location),
                "upload session dropped outside the runtime; the registry's upload purging will remove it"
            ),
        }
    }

    /// Wait (at most `timeout`) for the background cancels started so far.
    pub(super) async fn wait(&self, timeout: Duration) {
        self.background.close();
        let _ = tokio::time::timeout(timeout, self.background.wait()).await;
        self.background.reopen();
    }
}

impl UploadSession {
    /// Cancel the session now (bounded by [`CANCEL_TIMEOUT`]); a no-op once committed.
    pub(in crate::registry) async fn cancel(mut self) {
        if let Some(c) = self.canceller.take() {
            c.cancel(self.location.clone(), self.repository.clone()).await;
        }
    }

    /// The registry committed the blob: nothing is left to cancel.
    fn committed(mut self) {
        self.canceller = None;
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        if let Some(c) = self.canceller.take() {
            c.cancel_in_background(self.location.clone(), std::mem::take(&mut self.repository));
        }
    }
}

impl HttpRegistry {
    /// An armed session from a 202 answer's `Location` (relative to the request URL).
    pub(super) fn session_from(
        &self,
        step: &'static str,
        repository: &str,
        req_url: &Url,
        resp: &Response,
    ) -> Result<UploadSession, Error> {
        Ok(UploadSession {
            location: self.location(step, req_url, resp.headers())?,
            min_chunk: header_str(resp.headers(), "oci-chunk-min-length").and_then(|v| v.parse().ok()),
            repository: repository.into(),
            canceller: Some(self.canceller.clone()),
        })
    }

    /// Upload and commit, or cancel the session and return why not. A drop while this
    /// runs cancels the session in the background (see [`UploadSession`]'s `Drop`).
    pub(super) async fn upload(
        &self,
        mut session: UploadSession,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), Error> {
        let result = if self.cfg.chunk_size.is_some() || self.force_chunked.load(Ordering::Relaxed) {
            self.upload_chunked(&mut session, digest, size, body).await
        } else {
            self.upload_monolithic(&session, digest, size, body).await
        };
        match result {
            Ok(()) => session.committed(),
            Err(_) => session.cancel().await,
        }
        result
    }

    async fn upload_monolithic(
        &self,
        session: &UploadSession,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), Error> {
        let step = "upload blob";
        let mut url = session.location.clone();
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let scopes = [RepoScope::push(&session.repository)];
        let _permit = self.limiter.acquire().await;
        let rb = self
            .client
            .put(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        let rb = self.authorize(rb, &url, &scopes).await?;
        let resp = self.send(rb).await.map_err(|e| Error::Transport {
            step,
            url: redact(&url),
            detail: without_url(&e),
        })?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            413 => {
                self.force_chunked.store(true, Ordering::Relaxed);
                tracing::warn!(registry = %self.cfg.host, size, "monolithic upload refused (413); using chunked uploads for this registry");
                Err(Error::UploadTooLarge {
                    url: redact(&url),
                    size,
                })
            }
            401 => {
                // The token expired while streaming: refresh it for the retry.
                let challenge = header_str(resp.headers(), "www-authenticate");
                self.auth.invalidate(&scopes);
                self.auth
                    .on_unauthorized(&self.client, challenge.as_deref(), &scopes)
                    .await?;
                Err(Error::TokenExpired {
                    step,
                    url: redact(&url),
                })
            }
            _ => {
                let req = Req {
                    method: Method::PUT,
                    url,
                    step,
                    scopes: &scopes,
                    headers: vec![],
                    body: None,
                    ok: &[],
                };
                Err(self.status_error(&req, resp).await)
            }
        }
    }

    /// Chunked upload (PATCH with `Content-Range`), then a closing PUT with the digest.
    /// Chunks are buffered one at a time, so memory stays at one chunk. The session's
    /// location follows each answer, so a cancel names the session's latest state.
    async fn upload_chunked(
        &self,
        session: &mut UploadSession,
        digest: &Digest,
        size: u64,
        mut body: ByteStream,
    ) -> Result<(), Error> {
        let min_chunk = session.min_chunk.unwrap_or(0);
        let mut chunk = self.chunk_size.load(Ordering::Relaxed).max(min_chunk) as usize;
        // After a 413, chunks shrink, but not below MIN_CHUNK or the registry's minimum.
        let shrink_floor = min_chunk.max(MIN_CHUNK);
        let scopes = [RepoScope::push(&session.repository)];
        let mut offset: u64 = 0;
        let mut buf = BytesMut::new();
        let mut eof = false;
        loop {
            while !eof && buf.len() < chunk {
                match body.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => {
                        return Err(Error::Transport {
                            step: "read source blob",
                            url: redact(&session.location),
                            detail: e.to_string(),
                        });
                    }
                    None => eof = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            let part = buf.split_to(buf.len().min(chunk)).freeze();
            let end = offset + part.len() as u64 - 1;
            let req = Req {
                method: Method::PATCH,
                url: session.location.clone(),
                step: "upload blob chunk",
                scopes: &scopes,
                headers: vec![
                    (CONTENT_TYPE, "application/octet-stream".into()),
                    (reqwest::header::CONTENT_RANGE, format!("{offset}-{end}")),
                ],
                body: Some(part.clone()),
                ok: &[202],
            };
            match self.execute(req).await {
                Ok(resp) => {
                    session.location = self.location("upload blob chunk", &session.location, resp.headers())?;
                    offset = end + 1;
                }
                // The chunk is still in memory: shrink and send it again in smaller parts.
                Err(e) if e.status() == Some(413) && chunk as u64 / 2 >= shrink_floor => {
                    chunk /= 2;
                    self.chunk_size.store(chunk as u64, Ordering::Relaxed);
                    tracing::warn!(registry = %self.cfg.host, chunk, "chunk refused (413); using smaller chunks");
                    let mut again = BytesMut::from(&part[..]);
                    again.extend_from_slice(&buf);
                    buf = again;
                }
                Err(e) => return Err(e),
            }
        }
        if offset != size {
            return Err(Error::SizeMismatch {
                what: format!("blob {digest}"),
                expected: size,
                actual: offset,
            });
        }
        let mut url = session.location.clone();
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let req = Req {
            method: Method::PUT,
            url,
            step: "commit chunked upload",
            scopes: &scopes,
            headers: vec![],
            body: Some(Bytes::new()),
            ok: &[201, 204],
        };
        self.execute(req).await?;
        Ok(())
    }
}
