//! Blob upload sessions over HTTP: stream a blob into an open session (one streamed
//! `PATCH`, or buffered `PATCH` chunks once a registry refused a large body), commit it with
//! a closing `PUT ?digest=`, and cancel every session regrelay gives up.
//!
//! No request body is ever cut off by regrelay: distribution accepts a cancel only with
//! the upload state (`_state`) of the bytes it holds, and a body aborted half-way leaves it
//! holding bytes no state describes. So a streamed body *ends* when its source fails or
//! the copy is dropped, and the registry's answer carries the state to cancel with.
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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::{HttpRegistry, Limiter, MIN_CHUNK, Req, header_str, host_port, redact};
use crate::metrics;
use crate::oci::Digest;
use crate::registry::auth::{Authenticator, RepoScope, without_url};
use crate::registry::{ByteStream, Error, UploadSession};

/// Blobs up to this size (configs, small layers) are uploaded and committed with one
/// `PUT` carrying the verified bytes; larger ones stream through a `PATCH` (or chunks).
pub(super) const SMALL_BLOB: u64 = 1 << 20;

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
        let started = tokio::time::Instant::now();
        let sent = rb.send().await;
        metrics::global().registry_request(
            &self.host,
            "DELETE",
            sent.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
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
            let (location, repository) = (self.location.clone(), std::mem::take(&mut self.repository));
            // In a task of its own, so that a caller dropped meanwhile (a sibling transfer
            // failed first) does not cut the DELETE short.
            let task = c.background.spawn({
                let c = c.clone();
                async move { c.cancel(location, repository).await }
            });
            let _ = task.await;
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
        let chunked = self.cfg.chunk_size.is_some() || self.force_chunked.load(Ordering::Relaxed);
        let result = if !chunked && size <= SMALL_BLOB {
            // Committed by the same request.
            self.upload_small(&session, digest, size, body).await
        } else {
            let (s, sent) = if chunked {
                let mut session = session;
                let sent = self.upload_chunked(&mut session, digest, size, body).await;
                (session, sent)
            } else {
                self.upload_streamed(session, size, body).await
            };
            session = s;
            match sent {
                Ok(()) => self.commit(&session, digest).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => session.committed(),
            Err(_) => session.cancel().await,
        }
        result
    }

    /// The default upload: the whole blob in one streamed `PATCH` (no `Content-Length`,
    /// as `docker push` sends it), committed afterwards by [`HttpRegistry::commit`].
    ///
    /// Why not one `PUT` with the body: a request body cut off in the middle leaves the
    /// registry holding bytes that no upload state regrelay has describes, and
    /// distribution refuses a `DELETE` whose `_state` offset is not the stored size, so
    /// such a session could never be cancelled. Here the body is never cut by regrelay:
    /// when the source fails (a digest mismatch withheld by the verifier, a reset) or the
    /// copy is dropped, the body just ends, the registry answers 202 with a fresh
    /// location, and the cancel names exactly what it holds. The request runs in a task
    /// of its own so that it can finish after a drop (bounded by [`CANCEL_TIMEOUT`]).
    async fn upload_streamed(
        &self,
        mut session: UploadSession,
        size: u64,
        body: ByteStream,
    ) -> (UploadSession, Result<(), Error>) {
        let step = "upload blob";
        let url = session.location.clone();
        let scopes = [RepoScope::push(&session.repository)];
        let stop = CancellationToken::new();
        // Dropping this future (the copy was cancelled) ends the body cleanly.
        let _stop_on_drop = stop.clone().drop_guard();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let body = ends_cleanly(body, stop.clone(), failure.clone());
        let _permit = self.limiter.acquire().await;
        let rb = self
            .client
            .patch(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let rb = match self.authorize(rb, &url, &scopes).await {
            Ok(rb) => rb,
            Err(e) => return (session, Err(e)),
        };
        let host = self.cfg.host.clone();
        let task = self.canceller.background.spawn(async move {
            let started = tokio::time::Instant::now();
            let sent = tokio::select! {
                sent = rb.send() => sent,
                // Stopped: the body has ended; give the answer a bounded time to come.
                () = async { stop.cancelled().await; tokio::time::sleep(CANCEL_TIMEOUT).await } => {
                    return (session, None);
                }
            };
            metrics::global().registry_request(
                &host,
                "PATCH",
                sent.as_ref().ok().map(|r| r.status().as_u16()),
                started.elapsed(),
            );
            if let Ok(resp) = &sent
                && resp.status().as_u16() == 202
                && let Some(next) = header_str(resp.headers(), "location").and_then(|l| session.location.join(&l).ok())
            {
                session.location = next;
            }
            (session, Some(sent))
        });
        let (session, sent) = match task.await {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let resp = match sent {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => {
                let err = Error::Transport {
                    step,
                    url: redact(&url),
                    detail: without_url(&e),
                };
                return (session, Err(err));
            }
            None => unreachable!("the upload is stopped only when this future is dropped"),
        };
        let result = match resp.status().as_u16() {
            202 => {
                let failed = failure.lock().expect("failure slot poisoned").take();
                let received = header_str(resp.headers(), "range").and_then(|r| range_len(&r));
                match (failed, received) {
                    (Some(detail), _) => Err(Error::Transport {
                        step: "read source blob",
                        url: redact(&url),
                        detail,
                    }),
                    (None, Some(n)) if size > 0 && n != size => Err(Error::SizeMismatch {
                        what: format!("upload to {}", redact(&url)),
                        expected: size,
                        actual: n,
                    }),
                    (None, _) => Ok(()),
                }
            }
            413 => {
                self.force_chunked.store(true, Ordering::Relaxed);
                tracing::warn!(registry = %self.cfg.host, size, "upload refused as too large (413); using chunked uploads for this registry");
                Err(Error::UploadTooLarge {
                    url: redact(&url),
                    size,
                })
            }
            401 => {
                // The token expired while streaming: refresh it for the retry.
                let challenge = header_str(resp.headers(), "www-authenticate");
                self.auth.invalidate(&scopes);
                match self
                    .auth
                    .on_unauthorized(&self.client, challenge.as_deref(), &scopes)
                    .await
                {
                    Ok(_) => Err(Error::TokenExpired {
                        step,
                        url: redact(&url),
                    }),
                    Err(e) => Err(e.into()),
                }
            }
            _ => {
                let req = Req {
                    method: Method::PATCH,
                    url,
                    step,
                    scopes: &scopes,
                    headers: vec![],
                    body: None,
                    ok: &[],
                };
                Err(self.status_error(&req, resp).await)
            }
        };
        (session, result)
    }

    /// A small blob: read whole (through the verifier, so a mismatch fails here, before
    /// anything is sent), then one `PUT ?digest=` carrying it, which uploads and commits
    /// in one request. The body is in memory, so the request is replayable (retried at the
    /// request level) and never cut off mid-body; memory stays at [`SMALL_BLOB`] per
    /// transfer.
    async fn upload_small(
        &self,
        session: &UploadSession,
        digest: &Digest,
        size: u64,
        mut body: ByteStream,
    ) -> Result<(), Error> {
        let mut buf = BytesMut::with_capacity(size as usize);
        while let Some(next) = body.next().await {
            match next {
                Ok(b) if (buf.len() + b.len()) as u64 <= size => buf.extend_from_slice(&b),
                Ok(b) => {
                    return Err(Error::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: size,
                        actual: (buf.len() + b.len()) as u64,
                    });
                }
                Err(e) => {
                    return Err(Error::Transport {
                        step: "read source blob",
                        url: redact(&session.location),
                        detail: e.to_string(),
                    });
                }
            }
        }
        match self.close_upload(session, digest, "upload blob", buf.freeze()).await {
            Ok(()) => Ok(()),
            Err(e) if e.status() == Some(413) => {
                self.force_chunked.store(true, Ordering::Relaxed);
                tracing::warn!(registry = %self.cfg.host, size, "upload refused as too large (413); using chunked uploads for this registry");
                Err(Error::UploadTooLarge {
                    url: redact(&session.location),
                    size,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Close an upload whose bytes are all in: `PUT ?digest=` with an empty body.
    async fn commit(&self, session: &UploadSession, digest: &Digest) -> Result<(), Error> {
        self.close_upload(session, digest, "commit upload", Bytes::new()).await
    }

    /// `PUT ?digest=` on the session's location with `body` (the last bytes, or none).
    async fn close_upload(
        &self,
        session: &UploadSession,
        digest: &Digest,
        step: &'static str,
        body: Bytes,
    ) -> Result<(), Error> {
        let scopes = [RepoScope::push(&session.repository)];
        let mut url = session.location.clone();
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let headers = if body.is_empty() {
            vec![]
        } else {
            vec![(CONTENT_TYPE, "application/octet-stream".into())]
        };
        let req = Req {
            method: Method::PUT,
            url,
            step,
            scopes: &scopes,
            headers,
            body: Some(body),
            ok: &[201, 204],
        };
        self.execute(req).await?;
        Ok(())
    }

    /// Chunked upload (PATCHes with `Content-Range`), committed afterwards by
    /// [`HttpRegistry::commit`]. Chunks are buffered one at a time, so memory stays at one
    /// chunk; a failing source fails while a chunk is being filled, never mid-request. The
    /// session's location follows each answer, so a cancel names the latest state.
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
        Ok(())
    }
}

/// The body of a streamed upload: `body` until it ends, fails or `stop` fires. It never
/// fails itself: a source error is put in `failure` and the body just ends, so the
/// registry finishes the request and answers with the state of the session.
fn ends_cleanly(
    body: ByteStream,
    stop: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Some(body), move |body| {
        let (stop, failure) = (stop.clone(), failure.clone());
        async move {
            let mut body = body?;
            tokio::select! {
                biased;
                () = stop.cancelled() => None,
                next = body.next() => match next {
                    Some(Ok(bytes)) => Some((Ok(bytes), Some(body))),
                    Some(Err(e)) => {
                        *failure.lock().expect("failure slot poisoned") = Some(e.to_string());
                        None
                    }
                    None => None,
                },
            }
        }
    })
}

/// The number of bytes a `Range: 0-<last>` answer says the registry holds.
fn range_len(range: &str) -> Option<u64> {
    let (first, last) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    (first == 0).then_some(last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header() {
        assert_eq!(range_len("0-99"), Some(100));
        assert_eq!(range_len("bytes=0-0"), Some(1));
        assert_eq!(range_len("5-9"), None);
        assert_eq!(range_len("junk"), None);
    }

    #[tokio::test]
    async fn a_failing_body_ends_cleanly_and_keeps_the_cause() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("digest mismatch")),
            Ok(Bytes::from_static(b"never")),
        ];
        let failure = Arc::default();
        let out: Vec<_> = ends_cleanly(
            Box::pin(futures_util::stream::iter(chunks)),
            CancellationToken::new(),
            Arc::clone(&failure),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 1, "the bytes before the failure, then the end");
        assert_eq!(failure.lock().unwrap().as_deref(), Some("digest mismatch"));
    }

    #[tokio::test]
    async fn a_stopped_body_ends_while_the_source_waits() {
        let stop = CancellationToken::new();
        let failure = Arc::default();
        let body = ends_cleanly(
            Box::pin(futures_util::stream::pending()),
            stop.clone(),
            Arc::clone(&failure),
        );
        let collect = tokio::spawn(body.collect::<Vec<_>>());
        stop.cancel();
        assert!(collect.await.unwrap().is_empty());
        assert!(failure.lock().unwrap().is_none(), "a stop is not a source failure");
    }
}
