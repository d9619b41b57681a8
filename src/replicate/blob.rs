//! Blob copying for the copy engine: mount (from a repository this process saw holding
//! the blob, or the source repository on the same registry; tried without a HEAD first),
//! else skip (HEAD), else stream through the verifier, with blob-level retries for failures the request level cannot replay.
//!
//! Must never: upload a blob whose bytes have not passed the verifier, leave an upload
//! session it gave up open, or retry an error that already used its request's attempts.

use super::*;

impl<S: Registries> Replicator<S> {
    pub(super) fn remember(&self, host: &str, digest: &Digest, repo: &str) {
        let mut map = self.locations.lock().expect("locations lock");
        if map.len() >= MAX_KNOWN_LOCATIONS {
            map.clear();
        }
        let repos = map.entry((host.to_owned(), digest.clone())).or_default();
        if !repos.iter().any(|r| r == repo) {
            repos.push(repo.to_owned());
            if repos.len() > 8 {
                repos.remove(0);
            }
        }
    }

    fn known_in(&self, host: &str, digest: &Digest, repo: &str) -> bool {
        let map = self.locations.lock().expect("locations lock");
        map.get(&(host.to_owned(), digest.clone()))
            .is_some_and(|repos| repos.iter().any(|r| r == repo))
    }

    fn known_location(&self, host: &str, digest: &Digest, not: &str) -> Option<String> {
        let map = self.locations.lock().expect("locations lock");
        map.get(&(host.to_owned(), digest.clone()))?
            .iter()
            .rev()
            .find(|r| *r != not)
            .cloned()
    }

    /// Copy one blob: skip, mount, or stream (single-flight per target host and digest).
    pub(super) async fn copy_blob(&self, job: &Job<S::Registry>, desc: &Descriptor) -> Result<(), Error> {
        let digest = &desc.digest;
        let dst_host = job.dst.host().to_owned();
        self.remember(job.src.host(), digest, &job.src_repo);
        let lock = {
            let mut map = self.inflight.lock().expect("inflight lock");
            map.entry((dst_host.clone(), digest.clone())).or_default().clone()
        };
        let result = {
            let _turn = lock.lock().await;
            self.copy_blob_locked(job, desc).await
        };
        {
            // Drop the single-flight entry when nobody else waits on it.
            let mut map = self.inflight.lock().expect("inflight lock");
            if Arc::strong_count(&lock) == 2 {
                map.remove(&(dst_host, digest.clone()));
            }
        }
        if result.is_ok() {
            self.progress.blobs_done.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn copy_blob_locked(&self, job: &Job<S::Registry>, desc: &Descriptor) -> Result<(), Error> {
        let digest = &desc.digest;
        let dst_host = job.dst.host().to_owned();
        // A mount needs a repository on the *target* registry that holds the blob: one we
        // wrote or saw there, or the source repository when both are on the same host.
        // With one, the mount is tried directly (a HEAD first would only add a request),
        // unless this process put or saw the blob in the target repository itself: then
        // the HEAD (which almost always finds it) comes first, because a mount of a blob
        // the repository holds rewrites its link, and distribution's filesystem driver
        // rewrites a link in place, so a manifest PUT in that repository at the same time
        // can read it empty and fail with MANIFEST_BLOB_UNKNOWN.
        let from = if self.known_in(&dst_host, digest, &job.dst_repo) {
            None
        } else {
            self.known_location(&dst_host, digest, &job.dst_repo)
        };
        if from.is_none()
            && job
                .dst
                .head_blob(&job.dst_repo, digest)
                .await
                .map_err(dst_err)?
                .is_some()
        {
            inc(&job.stats.blobs_skipped);
            self.remember(&dst_host, digest, &job.dst_repo);
            return Ok(());
        }
        let mut session = None;
        if let Some(from) = from {
            match job.dst.mount_blob(&job.dst_repo, digest, &from).await {
                Ok(Mount::Mounted) => {
                    inc(&job.stats.blobs_mounted);
                    self.remember(&dst_host, digest, &job.dst_repo);
                    tracing::debug!(%digest, from = %from, "blob mounted");
                    return Ok(());
                }
                Ok(Mount::NotMounted(s)) => session = Some(s),
                // A refused mount is not fatal: fall back to a plain upload.
                Err(e) if e.class() != ErrorClass::Systemic => {
                    tracing::debug!(%digest, error = %e, "mount failed; uploading")
                }
                Err(e) => return Err(dst_err(e)),
            }
            // Not mounted (the registry does not mount, or the other repository lost the
            // blob): the HEAD skipped above decides whether an upload is needed after all.
            let present = match job.dst.head_blob(&job.dst_repo, digest).await {
                Ok(p) => p.is_some(),
                Err(e) => {
                    if let Some(s) = session.take() {
                        job.dst.cancel_upload(s).await;
                    }
                    return Err(dst_err(e));
                }
            };
            if present {
                if let Some(s) = session.take() {
                    job.dst.cancel_upload(s).await;
                }
                inc(&job.stats.blobs_skipped);
                self.remember(&dst_host, digest, &job.dst_repo);
                return Ok(());
            }
        }
        // Blob-level retries only for failures the request level could not retry (a stream
        // cut mid-body, a digest mismatch in transit, a token expiring mid-upload): an
        // error that already used up its request's attempts is not retried again on top.
        let mut backoff = Schedule::new(self.opts.blob_retry_delay, Duration::from_secs(30))
            .attempts(self.opts.blob_attempts.max(1))
            .start();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.transfer(job, desc, session.take()).await {
                Ok(bytes) => {
                    job.stats.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
                    inc(&job.stats.blobs_uploaded);
                    self.remember(&dst_host, digest, &job.dst_repo);
                    return Ok(());
                }
                Err(e)
                    if e.class() == ErrorClass::Transient
                        && !e.registry_error().is_some_and(registry::Error::retried) =>
                {
                    let Some(delay) = backoff.next_delay() else {
                        return Err(e);
                    };
                    inc(&job.stats.blob_retries);
                    let wait = delay.max(
                        e.registry_error()
                            .and_then(registry::Error::retry_after)
                            .unwrap_or_default(),
                    );
                    tracing::warn!(%digest, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "blob transfer failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stream one blob from source to target through the verifier. Returns bytes moved.
    ///
    /// Upload sessions are never left open on the target: `upload_blob` cancels its
    /// session when it fails, a session this function gives up before uploading is
    /// cancelled here, and one dropped with this future cancels itself (issue 9).
    async fn transfer(
        &self,
        job: &Job<S::Registry>,
        desc: &Descriptor,
        session: Option<registry::UploadSession>,
    ) -> Result<u64, Error> {
        let _slot = self
            .transfers
            .acquire()
            .await
            .expect("transfer semaphore is never closed");
        let reader = match job.src.get_blob(&job.src_repo, &desc.digest).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(s) = session {
                    job.dst.cancel_upload(s).await;
                }
                return Err(src_err(e));
            }
        };
        let session = match session {
            Some(s) => s,
            None => job.dst.start_upload(&job.dst_repo).await.map_err(dst_err)?,
        };
        let moved = Arc::new(AtomicU64::new(0));
        let (stream, verdict) = verify::VerifyStream::new(reader.stream, desc.digest.clone(), desc.size, moved.clone());
        let counted = CountInto {
            inner: Box::pin(stream),
            total: self.progress.bytes.clone(),
        };
        let result = job
            .dst
            .upload_blob(session, &desc.digest, desc.size, Box::pin(counted))
            .await;
        // A mismatch caught by the verifier is the real cause, whatever the upload says
        // (the verifier fails the stream before its last chunk, so nothing was committed
        // and `upload_blob` has cancelled the session).
        let what = format!("blob {}/{}@{}", job.src.host(), job.src_repo, desc.digest);
        match (verdict.mismatch(), result) {
            (Some(m), _) => Err(src_err(match m {
                verify::Mismatch::Digest { actual } => registry::Error::DigestMismatch {
                    what,
                    expected: desc.digest.clone(),
                    actual,
                },
                verify::Mismatch::Size { actual } => registry::Error::SizeMismatch {
                    what,
                    expected: desc.size,
                    actual,
                },
            })),
            (None, Ok(())) => Ok(moved.load(Ordering::Relaxed)),
            (None, Err(e)) => Err(dst_err(e)),
        }
    }
}

/// Adds released bytes to a shared progress counter.
struct CountInto {
    inner: registry::ByteStream,
    total: Arc<AtomicU64>,
}

impl futures_util::Stream for CountInto {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        let p = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(b))) = &p {
            self.total.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        p
    }
}
