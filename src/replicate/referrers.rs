//! Referrers for the copy engine: the OCI referrers API (else the `sha256-<hex>` fallback
//! tag) and cosign's `.sig`/`.att`/`.sbom` tags of every subject a copy pushes, plus the
//! fallback indexes a target without the API needs.
//!
//! Must never: push a referrer before its own children, or rewrite a fallback index
//! without merging what the target already lists.

use super::*;

impl<S: Registries> Replicator<S> {
    /// The source repository's tags: the caller's list when it handed one over
    /// ([`Known::source_tags`]), else one listing per copy.
    async fn source_tags<'a>(&self, job: &'a Job<S::Registry>) -> Result<&'a Vec<String>, Error> {
        let tags = job
            .src_tags
            .get_or_try_init(|| async { job.src.list_tags(&job.src_repo).await.map(Arc::new).map_err(src_err) })
            .await?;
        Ok(tags)
    }

    /// The source's referrers index of `subject` (`None`: no referrers API), asked once per
    /// copy: the check before the root push and the copy after it share the answer.
    async fn referrers_index(&self, job: &Job<S::Registry>, subject: &Digest) -> Result<Option<Bytes>, Error> {
        if let Some(known) = job.referrers.lock().expect("referrers lock").get(subject) {
            return Ok(known.clone());
        }
        let index = job.src.referrers(&job.src_repo, subject).await.map_err(src_err)?;
        job.referrers
            .lock()
            .expect("referrers lock")
            .insert(subject.clone(), index.clone());
        Ok(index)
    }

    /// Does any of `subjects` have a referrer or a cosign tag at the source? Reads only
    /// what the copy of the referrers reads anyway (the tag list, the referrers API), so
    /// asking costs no extra request. A fallback or cosign tag counts without being read.
    pub(super) async fn has_referrers(&self, job: &Job<S::Registry>, subjects: &[Digest]) -> Result<bool, Error> {
        let tags = self.source_tags(job).await?;
        for subject in subjects {
            let base = subject.fallback_tag();
            if std::iter::once("")
                .chain(oci::COSIGN_TAG_SUFFIXES)
                .any(|suffix| tags.contains(&format!("{base}{suffix}")))
            {
                return Ok(true);
            }
            if let Some(index) = self.referrers_index(job, subject).await?
                && !matches!(Manifest::parse(oci::OCI_INDEX, &index), Ok(Manifest::Index { manifests, .. }) if manifests.is_empty())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copy the referrers of `subject` (API, else fallback tag) and its cosign tags.
    pub(super) fn copy_referrers<'a>(
        &'a self,
        job: &'a Job<S::Registry>,
        subject: &'a Digest,
        depth: u8,
    ) -> BoxFut<'a, Result<(), Error>> {
        Box::pin(async move {
            if depth > 2 {
                return Ok(());
            }
            // One tag listing per source repository serves both the fallback tag and
            // the cosign tags below.
            let tags = self.source_tags(job).await?;
            let mut found: Vec<Digest> = Vec::new();
            match self.referrers_index(job, subject).await? {
                Some(index) => {
                    if let Ok(Manifest::Index { manifests, .. }) = Manifest::parse(oci::OCI_INDEX, &index) {
                        found.extend(manifests.into_iter().map(|d| d.digest));
                    }
                }
                None => {
                    // No referrers API: the tag schema (`sha256-<hex>`) holds an index.
                    let tag = subject.fallback_tag();
                    let fallback = if tags.contains(&tag) {
                        self.get_optional(job, &Locator::Tag(tag.clone())).await?
                    } else {
                        None
                    };
                    if let Some(fallback) = fallback
                        && let Ok(Manifest::Index { manifests, .. }) =
                            Manifest::parse(&fallback.media_type, &fallback.bytes)
                    {
                        for d in &manifests {
                            if self.copy_manifest(job, d.digest.clone(), None, None).await? {
                                inc(&job.stats.referrers_copied);
                            }
                            self.copy_referrers(job, &d.digest, depth + 1).await?;
                        }
                        self.put_tag_if_changed(job, &tag, &fallback).await?;
                        job.copied_fallback
                            .lock()
                            .expect("fallback lock")
                            .insert(subject.clone());
                    }
                }
            }
            for d in found {
                if self.copy_manifest(job, d.clone(), None, None).await? {
                    inc(&job.stats.referrers_copied);
                }
                self.copy_referrers(job, &d, depth + 1).await?;
            }
            // cosign's tag conventions.
            let base = subject.fallback_tag();
            for suffix in oci::COSIGN_TAG_SUFFIXES {
                let tag = format!("{base}{suffix}");
                if !tags.contains(&tag) {
                    continue;
                }
                let Some(m) = self.get_optional(job, &Locator::Tag(tag.clone())).await? else {
                    continue;
                };
                if self.copy_manifest(job, m.digest.clone(), Some(m.clone()), None).await? {
                    inc(&job.stats.referrers_copied);
                }
                self.put_tag_if_changed(job, &tag, &m).await?;
            }
            Ok(())
        })
    }

    /// For referrers the target did not index (no `OCI-Subject`), maintain the
    /// `sha256-<hex>` fallback index at the target, merging with what is there.
    pub(super) async fn write_fallback_indexes(&self, job: &Job<S::Registry>) -> Result<(), Error> {
        let pending: Vec<(Digest, Vec<serde_json::Value>)> =
            job.pending_fallback.lock().expect("fallback lock").drain().collect();
        for (subject, descs) in pending {
            if job.copied_fallback.lock().expect("fallback lock").contains(&subject) {
                continue;
            }
            let tag = subject.fallback_tag();
            let loc = Locator::Tag(tag.clone());
            let existing = match job.dst.get_manifest(&job.dst_repo, &loc).await {
                Ok(m) => serde_json::from_slice::<serde_json::Value>(&m.bytes).ok(),
                Err(registry::Error::ManifestUnknown { .. }) => None,
                Err(e) => return Err(dst_err(e)),
            };
            let mut index = existing.unwrap_or_else(
                || serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": []}),
            );
            let list = index.get_mut("manifests").and_then(|m| m.as_array_mut());
            let Some(list) = list else { continue };
            let mut changed = false;
            for d in descs {
                if !list.iter().any(|e| e.get("digest") == d.get("digest")) {
                    list.push(d);
                    changed = true;
                }
            }
            if changed {
                let bytes = Bytes::from(serde_json::to_vec(&index).expect("a JSON value serialises"));
                let m = ManifestBytes {
                    digest: Digest::sha256_of(&bytes),
                    bytes,
                    media_type: oci::OCI_INDEX.into(),
                };
                self.put_manifest(&*job.dst, &job.dst_repo, &loc, &m, None)
                    .await
                    .map_err(dst_err)?;
                inc(&job.stats.tags_written);
            }
        }
        Ok(())
    }

    async fn get_optional(&self, job: &Job<S::Registry>, loc: &Locator) -> Result<Option<ManifestBytes>, Error> {
        match job.src.get_manifest(&job.src_repo, loc).await {
            Ok(m) => Ok(Some(m)),
            Err(registry::Error::ManifestUnknown { .. }) => Ok(None),
            Err(e) => Err(src_err(e)),
        }
    }

    async fn put_tag_if_changed(&self, job: &Job<S::Registry>, tag: &str, m: &ManifestBytes) -> Result<(), Error> {
        let loc = Locator::Tag(tag.into());
        let current = job.dst.head_manifest(&job.dst_repo, &loc).await.map_err(dst_err)?;
        if current.as_ref().and_then(|h| h.digest.as_ref()) != Some(&m.digest) {
            self.put_manifest(&*job.dst, &job.dst_repo, &loc, m, None)
                .await
                .map_err(dst_err)?;
            inc(&job.stats.tags_written);
        }
        Ok(())
    }
}

/// The descriptor of a referrer manifest, for a fallback index entry.
pub(super) fn referrer_descriptor(m: &ManifestBytes) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let artifact_type = v
        .get("artifactType")
        .cloned()
        .or_else(|| v.get("config").and_then(|c| c.get("mediaType")).cloned());
    let mut d = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest.to_string(),
        "size": m.bytes.len(),
    });
    if let Some(a) = artifact_type {
        d["artifactType"] = a;
    }
    if let Some(a) = v.get("annotations") {
        d["annotations"] = a.clone();
    }
    d
}
