//! Small single-manifest operations the pipeline needs besides a full copy: resolve a
//! source reference, check presence at a target, point a tag at a present digest, and
//! delete at a target guarded by the digest the caller expects.
//!
//! Must never: contact a host the [`Registries`] set does not hold (every operation looks
//! the host up first, so an unknown host fails before any I/O); write a tag that would
//! point at bytes that do not hash to the requested digest; delete when the locator no
//! longer resolves to the expected digest; settle or know about messages.
//!
//! Invariants: errors are [`Error::Registry`] with [`Side::Source`] for [`resolve`] and
//! [`Side::Target`] for everything else, so `class()` works as for copies. Digests come
//! from `Docker-Content-Digest` only when the registry sends one in the algorithm being
//! compared; otherwise the manifest is read and its exact bytes are hashed.
//!
//! [`resolve`]: Replicator::resolve

use super::{Error, Replicator, Side, dst_err, src_err};
use crate::oci::{Digest, Locator, Reference};
use crate::registry::{self, DeleteManifest, Registries, Registry};

/// What [`Replicator::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The manifest was deleted.
    Deleted,
    /// Dry run: it resolved to the expected digest and would have been deleted.
    DryRun,
    /// Nothing to delete: the locator does not resolve at the target.
    Absent,
    /// The locator resolves to another digest than expected; nothing was deleted.
    Mismatch {
        /// What the locator resolves to now.
        actual: Digest,
    },
    /// The target registry does not allow deletes.
    Unsupported,
}

/// What `locator` resolves to in `repository`, or `None` when it does not exist.
///
/// Uses HEAD's `Docker-Content-Digest` when it is in the algorithm of `want` (any, when
/// `want` is `None`); otherwise GETs the manifest and hashes its exact bytes, in `want`'s
/// algorithm when given.
async fn current_digest<R: Registry>(
    reg: &R,
    repository: &str,
    locator: &Locator,
    want: Option<&Digest>,
) -> Result<Option<Digest>, registry::Error> {
    let Some(head) = reg.head_manifest(repository, locator).await? else {
        return Ok(None);
    };
    if let Some(d) = head.digest
        && want.is_none_or(|w| w.algorithm() == d.algorithm())
    {
        return Ok(Some(d));
    }
    // No usable header: read the manifest (get_manifest verifies it) and hash the bytes.
    match reg.get_manifest(repository, locator).await {
        Ok(m) => Ok(Some(match want {
            Some(w) => w.recompute(&m.bytes),
            None => m.digest,
        })),
        // Deleted between the HEAD and the GET.
        Err(registry::Error::ManifestUnknown { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl<S: Registries> Replicator<S> {
    /// The digest a tag or digest reference currently resolves to at the source (HEAD;
    /// GET when the registry sends no `Docker-Content-Digest`). `None` when it does not
    /// exist. A reference naming no tag or digest is [`Error::NoLocator`].
    pub async fn resolve(&self, reference: &Reference) -> Result<Option<Digest>, Error> {
        let src = self.registries.get(&reference.registry).map_err(src_err)?;
        let locator = reference
            .locator()
            .ok_or_else(|| Error::NoLocator(reference.to_string()))?;
        let want = match &locator {
            Locator::Digest(d) => Some(d),
            Locator::Tag(_) => None,
        };
        current_digest(&*src, &reference.repository, &locator, want)
            .await
            .map_err(src_err)
    }

    /// Is `digest` present in `registry`/`repository`? (one manifest HEAD)
    pub async fn present(&self, registry: &str, repository: &str, digest: &Digest) -> Result<bool, Error> {
        let dst = self.registries.get(registry).map_err(dst_err)?;
        let head = dst
            .head_manifest(repository, &Locator::Digest(digest.clone()))
            .await
            .map_err(dst_err)?;
        Ok(head.is_some())
    }

    /// Point `tag` at `digest` in the target, given that `digest` is already present
    /// there. Returns `Ok(false)` when the tag already points there, `Ok(true)` after
    /// writing it. The manifest bytes are read back from the target by digest (so they
    /// are verified), PUT under the tag, and the tag is resolved again: anything but
    /// `digest` is [`Error::VerifyFailed`].
    pub async fn ensure_tag(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<bool, Error> {
        let dst = self.registries.get(registry).map_err(dst_err)?;
        let loc = Locator::Tag(tag.to_owned());
        let current = current_digest(&*dst, repository, &loc, Some(digest))
            .await
            .map_err(dst_err)?;
        if current.as_ref() == Some(digest) {
            return Ok(false);
        }
        // Fails with ManifestUnknown (permanent) when the digest is not at the target:
        // a tag is never written before what it points at (STYLE.md 7.5).
        let m = dst
            .get_manifest(repository, &Locator::Digest(digest.clone()))
            .await
            .map_err(dst_err)?;
        // put_manifest checks the digest the registry reports for the stored bytes.
        dst.put_manifest(repository, &loc, &m.media_type, m.bytes.clone())
            .await
            .map_err(dst_err)?;
        let reference = format!("{registry}/{repository}:{tag}");
        match current_digest(&*dst, repository, &loc, Some(digest))
            .await
            .map_err(dst_err)?
        {
            Some(d) if &d == digest => {
                tracing::info!(target_ref = %reference, %digest, "tag written");
                Ok(true)
            }
            Some(actual) => Err(Error::VerifyFailed {
                reference,
                expected: digest.clone(),
                actual,
            }),
            // The registry accepted the PUT but does not serve the tag.
            None => Err(Error::Registry {
                side: Side::Target,
                source: registry::Error::ManifestUnknown { reference },
            }),
        }
    }

    /// Delete `locator` at the target, only if it currently resolves to `expected` when
    /// given. With `dry_run`, check everything but do not delete.
    ///
    /// A digest locator deletes the manifest and every tag pointing at it. A tag locator
    /// untags where the registry supports it (distribution 2.8 does not); for a tag the
    /// check and the delete are two requests, so a tag moved in between is deleted at its
    /// new digest; callers that must not race delete by digest.
    pub async fn delete(
        &self,
        registry: &str,
        repository: &str,
        locator: &Locator,
        expected: Option<&Digest>,
        dry_run: bool,
    ) -> Result<Deletion, Error> {
        let dst = self.registries.get(registry).map_err(dst_err)?;
        let want = expected.or(match locator {
            Locator::Digest(d) => Some(d),
            Locator::Tag(_) => None,
        });
        let Some(actual) = current_digest(&*dst, repository, locator, want)
            .await
            .map_err(dst_err)?
        else {
            return Ok(Deletion::Absent);
        };
        if let Some(e) = expected
            && &actual != e
        {
            return Ok(Deletion::Mismatch { actual });
        }
        let target_ref = format!("{registry}/{repository}");
        if dry_run {
            tracing::info!(%target_ref, locator = %locator, digest = %actual, "dry run: would delete");
            return Ok(Deletion::DryRun);
        }
        let outcome = match dst.delete_manifest(repository, locator).await.map_err(dst_err)? {
            DeleteManifest::Deleted => Deletion::Deleted,
            DeleteManifest::NotFound => Deletion::Absent,
            DeleteManifest::Unsupported => Deletion::Unsupported,
        };
        tracing::info!(%target_ref, locator = %locator, digest = %actual, outcome = ?outcome, "delete");
        Ok(outcome)
    }
}
