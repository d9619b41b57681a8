//! Small single-manifest operations the pipeline needs besides a full copy: resolve (or
//! read) a source reference, check presence at a target, point a tag at a present digest, and
//! delete at a target guarded by the digest the caller expects.
//!
//! Tag deletes on registries that cannot delete a tag (`DELETE /v2/NAME/manifests/TAG`
//! is optional in the distribution spec; distribution 2.x answers `400 DIGEST_INVALID`,
//! others `405 UNSUPPORTED`): with [`TagDeleteFallback::Manifest`] the manifest the tag
//! points at is deleted by digest instead, which removes the manifest itself, and only
//! when no other tag of the repository points at it or at an index listing it (at most
//! [`MAX_OTHER_TAGS`] other tags are checked, [`TAG_CHECKS_IN_FLIGHT`] at a time).
//!
//! Must never: contact a host the [`Registries`] set does not hold (every operation looks
//! the host up first, so an unknown host fails before any I/O); write a tag that would
//! point at bytes that do not hash to the requested digest; delete when the locator no
//! longer resolves to the expected digest; delete a manifest for a tag delete while
//! another tag still uses it; settle or know about messages.
//!
//! Invariants: errors are [`Error::Registry`] with [`Side::Source`] for [`resolve`] and
//! [`Side::Target`] for everything else, so `class()` works as for copies. Digests come
//! from `Docker-Content-Digest` only when the registry sends one in the algorithm being
//! compared; otherwise the manifest is read and its exact bytes are hashed.
//!
//! [`resolve`]: Replicator::resolve

use std::fmt;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use super::{Error, Replicator, Side, dst_err, src_err};
use crate::config::TagDeleteFallback;
use crate::oci::{self, Digest, Locator, Manifest, Reference};
use crate::registry::{self, DeleteManifest, ManifestBytes, Registries, Registry};

/// Most other tags of a repository checked before a tag delete falls back to deleting
/// the manifest by digest; with more, the manifest is kept ([`Kept::TooManyTags`]). Each
/// costs a manifest HEAD (and a GET when it names an index).
pub const MAX_OTHER_TAGS: usize = 1000;

/// Other tags checked at a time during that check.
pub const TAG_CHECKS_IN_FLIGHT: usize = 8;

/// What [`Replicator::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The manifest (digest locator) or the tag (tag locator) was deleted.
    Deleted,
    /// The target cannot delete a tag, so the manifest it pointed at, which no other tag
    /// used, was deleted by digest: the manifest is gone, not only the tag.
    ManifestDeleted {
        /// The deleted manifest.
        digest: Digest,
    },
    /// Dry run: it resolved to the expected digest and would have been deleted.
    DryRun,
    /// Nothing to delete: the locator does not resolve at the target.
    Absent,
    /// The locator resolves to another digest than expected; nothing was deleted.
    Mismatch {
        /// What the locator resolves to now.
        actual: Digest,
    },
    /// The target cannot do this delete; nothing was deleted.
    Unsupported(Kept),
}

/// Why an unsupported delete left the target as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The registry refuses deletes, by tag and by digest (405, or 400 `UNSUPPORTED`).
    DeletesRefused,
    /// The registry cannot delete a tag and `tag_delete_fallback = "off"`.
    FallbackOff,
    /// The registry cannot delete a tag, and another tag points at the same manifest:
    /// deleting the manifest would remove that tag too.
    SharedWith {
        /// That other tag.
        tag: String,
    },
    /// The registry cannot delete a tag, and another tag names an index listing the
    /// manifest: deleting it would break that index.
    ListedBy {
        /// The index's tag.
        tag: String,
    },
    /// The registry cannot delete a tag, and the repository has more other tags than
    /// regrelay checks ([`MAX_OTHER_TAGS`]) before deleting a manifest.
    TooManyTags {
        /// How many other tags there are.
        tags: usize,
    },
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NO_TAG: &str = "the target registry cannot delete a tag";
        match self {
            Kept::DeletesRefused => write!(f, "the target registry refuses deletes"),
            Kept::FallbackOff => write!(f, "{NO_TAG}, and tag_delete_fallback = \"off\" keeps its manifest"),
            Kept::SharedWith { tag } => write!(
                f,
                "{NO_TAG}, and deleting its manifest by digest would also remove tag {tag}, which points at it; kept"
            ),
            Kept::ListedBy { tag } => write!(
                f,
                "{NO_TAG}, and deleting its manifest by digest would break the index tagged {tag}, which lists it; kept"
            ),
            Kept::TooManyTags { tags } => write!(
                f,
                "{NO_TAG}, and the repository has {tags} other tags, more than the {MAX_OTHER_TAGS} checked before a manifest is deleted by digest; kept"
            ),
        }
    }
}

/// How another tag uses a manifest.
enum Use {
    /// It points at it.
    Points,
    /// It points at an index that lists it.
    Lists,
}

/// Does `tag` in `repository` point at `digest`, or at an index listing it? One HEAD;
/// a GET when the HEAD names an index, an unknown type, or no digest in `digest`'s
/// algorithm. `None` when the tag is gone.
async fn tag_use<'a, R: Registry>(
    reg: &R,
    repository: &str,
    tag: &'a str,
    digest: &Digest,
) -> (&'a str, Result<Option<Use>, registry::Error>) {
    (tag, tag_use_inner(reg, repository, tag, digest).await)
}

async fn tag_use_inner<R: Registry>(
    reg: &R,
    repository: &str,
    tag: &str,
    digest: &Digest,
) -> Result<Option<Use>, registry::Error> {
    let loc = Locator::Tag(tag.to_owned());
    let Some(head) = reg.head_manifest(repository, &loc).await? else {
        return Ok(None);
    };
    if let Some(d) = &head.digest
        && d.algorithm() == digest.algorithm()
    {
        if d == digest {
            return Ok(Some(Use::Points));
        }
        if head.media_type == oci::OCI_MANIFEST || head.media_type == oci::DOCKER_MANIFEST {
            return Ok(None);
        }
    }
    // An index (it may list the manifest), another type, or no usable header: read it.
    let m = match reg.get_manifest(repository, &loc).await {
        Ok(m) => m,
        Err(registry::Error::ManifestUnknown { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if digest.matches(&m.bytes) {
        return Ok(Some(Use::Points));
    }
    Ok(match Manifest::parse(&m.media_type, &m.bytes) {
        Ok(Manifest::Index { manifests, .. }) if manifests.iter().any(|c| &c.digest == digest) => Some(Use::Lists),
        _ => None,
    })
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

    /// The digest `tag` points at in the target `registry`/`repository` (one manifest
    /// HEAD); `None` when the tag is absent. Errors are the target's.
    pub async fn target_tag(&self, registry: &str, repository: &str, tag: &str) -> Result<Option<Digest>, Error> {
        let dst = self.registries.get(registry).map_err(dst_err)?;
        current_digest(&*dst, repository, &Locator::Tag(tag.to_owned()), None)
            .await
            .map_err(dst_err)
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

    /// The source manifest `reference` names, read whole (one GET; the registry client
    /// checks the bytes against their digest): re-resolves a tag and reads what a copy
    /// needs in one request. `None` when it does not exist.
    pub async fn read_source(&self, reference: &Reference) -> Result<Option<ManifestBytes>, Error> {
        let src = self.registries.get(&reference.registry).map_err(src_err)?;
        let locator = reference
            .locator()
            .ok_or_else(|| Error::NoLocator(reference.to_string()))?;
        match src.get_manifest(&reference.repository, &locator).await {
            Ok(m) => Ok(Some(m)),
            Err(registry::Error::ManifestUnknown { .. }) => Ok(None),
            Err(e) => Err(src_err(e)),
        }
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
        self.ensure_tag_observed(registry, repository, tag, digest, None).await
    }

    /// [`ensure_tag`](Self::ensure_tag), where `observed` is what the caller has just
    /// read the tag as (`Some(None)`: absent), so it is not read again before the write.
    pub async fn ensure_tag_observed(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &Digest,
        observed: Option<Option<Digest>>,
    ) -> Result<bool, Error> {
        let dst = self.registries.get(registry).map_err(dst_err)?;
        let loc = Locator::Tag(tag.to_owned());
        let current = match observed {
            Some(seen) => seen,
            None => current_digest(&*dst, repository, &loc, Some(digest))
                .await
                .map_err(dst_err)?,
        };
        if current.as_ref() == Some(digest) {
            return Ok(false);
        }
        // A root this engine verified there moments ago is PUT from its bytes; else the
        // GET fails with ManifestUnknown (permanent) when the digest is not at the target:
        // a tag is never written before what it points at (STYLE.md 7.5). (A registry
        // refuses a manifest whose references it does not hold, so neither way can a tag
        // point at an incomplete graph.)
        let m = match self
            .manifests
            .root(&super::manifests::key(dst.host(), repository, digest))
        {
            Some(m) => m,
            None => dst
                .get_manifest(repository, &Locator::Digest(digest.clone()))
                .await
                .map_err(dst_err)?,
        };
        // put_manifest checks the digest the registry reports for the stored bytes.
        self.put_manifest(&*dst, repository, &loc, &m, None)
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
    /// given. With `dry_run`, check everything but send no DELETE.
    ///
    /// A digest locator deletes the manifest and every tag pointing at it. A tag locator
    /// untags where the registry supports it; for a tag the check and the delete are two
    /// requests, so a tag moved in between is deleted at its new digest; callers that
    /// must not race delete by digest.
    ///
    /// Where the registry cannot delete a tag, `fallback` decides:
    /// [`TagDeleteFallback::Manifest`] deletes the manifest by digest
    /// ([`Deletion::ManifestDeleted`]) when no other tag uses it, else keeps it
    /// ([`Deletion::Unsupported`], saying why); [`TagDeleteFallback::Off`] keeps it.
    pub async fn delete(
        &self,
        registry: &str,
        repository: &str,
        locator: &Locator,
        expected: Option<&Digest>,
        dry_run: bool,
        fallback: TagDeleteFallback,
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
        let outcome = match (
            dst.delete_manifest(repository, locator).await.map_err(dst_err)?,
            locator,
        ) {
            (DeleteManifest::Deleted, _) => {
                self.forget_manifest(dst.host(), repository, &actual);
                Deletion::Deleted
            }
            (DeleteManifest::NotFound, _) => Deletion::Absent,
            (DeleteManifest::Unsupported, Locator::Digest(_)) => Deletion::Unsupported(Kept::DeletesRefused),
            (DeleteManifest::Unsupported, Locator::Tag(_)) if fallback == TagDeleteFallback::Off => {
                Deletion::Unsupported(Kept::FallbackOff)
            }
            (DeleteManifest::Unsupported, Locator::Tag(tag)) => {
                self.delete_tag_by_manifest(&*dst, registry, repository, tag, &actual)
                    .await?
            }
        };
        tracing::info!(%target_ref, locator = %locator, digest = %actual, outcome = ?outcome, "delete");
        Ok(outcome)
    }

    /// The fallback for a registry that cannot delete `tag`, which points at `digest`:
    /// delete the manifest by digest, unless another tag (of at most [`MAX_OTHER_TAGS`])
    /// points at it or at an index listing it. The tag is resolved again right before the
    /// DELETE; a tag or index written between that check and the DELETE is the one race
    /// left (the registry offers no conditional delete).
    async fn delete_tag_by_manifest(
        &self,
        dst: &S::Registry,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<Deletion, Error> {
        let target_ref = format!("{registry}/{repository}:{tag}");
        let tags = dst.list_tags(repository).await.map_err(dst_err)?;
        let others: Vec<&String> = tags.iter().filter(|t| *t != tag).collect();
        if others.len() > MAX_OTHER_TAGS {
            return Ok(Deletion::Unsupported(Kept::TooManyTags { tags: others.len() }));
        }
        tracing::info!(
            %target_ref, %digest, other_tags = others.len(),
            "the target cannot delete a tag; checking that no other tag uses its manifest before deleting the manifest by digest"
        );
        // A FuturesUnordered refilled by hand, not `buffer_unordered` over a closure: the
        // closure's borrowed futures trip rustc's "Send is not general enough" limitation.
        let mut pending = others.into_iter();
        let mut checks = FuturesUnordered::new();
        loop {
            while checks.len() < TAG_CHECKS_IN_FLIGHT
                && let Some(other) = pending.next()
            {
                checks.push(tag_use(dst, repository, other, digest));
            }
            let Some((other, used)) = checks.next().await else {
                break;
            };
            match used.map_err(dst_err)? {
                Some(Use::Points) => return Ok(Deletion::Unsupported(Kept::SharedWith { tag: other.to_owned() })),
                Some(Use::Lists) => return Ok(Deletion::Unsupported(Kept::ListedBy { tag: other.to_owned() })),
                None => {}
            }
        }
        // The tag may have moved (or gone) while the other tags were checked.
        let loc = Locator::Tag(tag.to_owned());
        match current_digest(dst, repository, &loc, Some(digest))
            .await
            .map_err(dst_err)?
        {
            None => return Ok(Deletion::Absent),
            Some(now) if &now != digest => return Ok(Deletion::Mismatch { actual: now }),
            Some(_) => {}
        }
        tracing::info!(
            %target_ref, %digest,
            "no other tag uses the manifest; deleting it by digest (this removes the manifest, not only the tag)"
        );
        Ok(
            match dst
                .delete_manifest(repository, &Locator::Digest(digest.clone()))
                .await
                .map_err(dst_err)?
            {
                DeleteManifest::Deleted => {
                    self.forget_manifest(dst.host(), repository, digest);
                    Deletion::ManifestDeleted { digest: digest.clone() }
                }
                DeleteManifest::NotFound => Deletion::Absent,
                DeleteManifest::Unsupported => Deletion::Unsupported(Kept::DeletesRefused),
            },
        )
    }
}
