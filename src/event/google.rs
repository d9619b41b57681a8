//! Artifact Registry / Container Registry notifications (the `gcr` Pub/Sub topic):
//! `{action, digest?, tag?}` with full references.
//!
//! Must never: panic, or accept a reference without a valid host.

use serde_json::Value;

use super::{Action, DecodeError, Decoded, Event, invalid, reference_in, str_at};
use crate::oci::{Reference, valid_tag};

/// Artifact Registry / Container Registry message data: `{action, digest?, tag?}` where
/// `digest` is `HOST/REPO@sha256:…` and `tag` is `HOST/REPO:TAG` (or, in some third-party
/// fixtures, a bare tag).
pub(super) fn decode(v: &Value) -> Result<Decoded, DecodeError> {
    let action = str_at(v, &["action"]).unwrap_or_default();
    let by_digest = match str_at(v, &["digest"]) {
        Some(d) => {
            let r = reference_in("digest", d)?;
            if r.digest.is_none() {
                return Err(invalid("digest", "expected HOST/REPOSITORY@sha256:…"));
            }
            Some(r)
        }
        None => None,
    };
    let by_tag = match str_at(v, &["tag"]) {
        Some(t) if !t.contains('/') => {
            // A bare tag: it belongs to the repository named by `digest`.
            let base = by_digest
                .as_ref()
                .ok_or_else(|| invalid("tag", "a bare tag needs a digest reference"))?;
            if !valid_tag(t) {
                return Err(invalid("tag", "not a valid tag"));
            }
            Some(Reference {
                tag: Some(t.into()),
                digest: None,
                ..base.clone()
            })
        }
        Some(t) => {
            let r = reference_in("tag", t)?;
            if r.tag.is_none() {
                return Err(invalid("tag", "expected HOST/REPOSITORY:TAG"));
            }
            Some(r)
        }
        None => None,
    };
    if let (Some(d), Some(t)) = (&by_digest, &by_tag)
        && (d.registry != t.registry || d.repository != t.repository)
    {
        return Err(invalid("tag", "names another repository than digest"));
    }
    let base = by_digest
        .as_ref()
        .or(by_tag.as_ref())
        .ok_or_else(|| invalid("digest", "neither digest nor tag given"))?;
    let tag = by_tag.as_ref().and_then(|t| t.tag.clone());
    let digest = by_digest.as_ref().and_then(|d| d.digest.clone());
    let action = match (action, &digest) {
        // A tag-only INSERT is a push too: the daemon re-resolves the tag.
        ("INSERT", _) => Action::Push,
        ("DELETE", Some(_)) => Action::DeleteManifest,
        ("DELETE", None) => Action::DeleteTag,
        _ => return Err(invalid("action", "expected INSERT or DELETE")),
    };
    Ok(Decoded::one(Event {
        action,
        registry: base.registry.clone(),
        repository: base.repository.clone(),
        tag,
        digest,
        media_type: None,
        event_id: None,
    }))
}
