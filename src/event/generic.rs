//! The generic form for bridges from other registries, bare JSON or a CloudEvent's
//! `data`: `{action, repository | ref, digest?, tag?, mediaType?}`.
//!
//! `ref` is a full reference (`HOST/REPO[:TAG][@DIGEST]`); `repository` is `HOST/REPO`,
//! or just `REPO` when the bridge knows no host (then [`Origin`] places it). `action` is
//! `push`/`insert` or `delete` (case-insensitive); a CloudEvent's type suffix (`.pushed`,
//! `.deleted`) works too.
//!
//! Must never: panic, or take a path segment for a host (Docker's rule decides, see
//! [`super::origin::split_host`]).

use serde_json::Value;

use super::origin::{Vars, split_host};
use super::{Action, DecodeError, Decoded, Event, Origin, check_reference, invalid, reference_in, shown, str_at};
use crate::oci::{Digest, Reference, valid_tag};

pub(super) fn decode(
    v: &Value,
    ce_type: Option<&str>,
    event_id: Option<String>,
    origin: &Origin,
) -> Result<Decoded, DecodeError> {
    let action_text = str_at(v, &["action"])
        .map(str::to_ascii_lowercase)
        .or_else(|| ce_type.map(|t| t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase()))
        .ok_or_else(|| invalid("action", "missing"))?;
    let base: Reference = match (str_at(v, &["ref"]), str_at(v, &["repository"])) {
        (Some(r), _) => locate("ref", r, origin)?,
        (None, Some(repo)) => locate("repository", repo, origin)?,
        (None, None) => return Err(invalid("repository", "missing (or give ref)")),
    };
    let digest = match str_at(v, &["digest"]) {
        Some(d) => Some(d.parse::<Digest>().map_err(|e| invalid("digest", e.to_string()))?),
        None => base.digest.clone(),
    };
    // Harbor-style bridges put the digest in `tag` for digest-only pushes.
    let tag = match str_at(v, &["tag"]) {
        Some(t) if t.starts_with("sha256:") => None,
        Some(t) if valid_tag(t) => Some(t.to_owned()),
        Some(_) => return Err(invalid("tag", "not a valid tag")),
        None => base.tag.clone(),
    };
    let action = match action_text.as_str() {
        "push" | "pushed" | "insert" => Action::Push,
        "delete" | "deleted" if digest.is_some() => Action::DeleteManifest,
        "delete" | "deleted" => Action::DeleteTag,
        "pull" | "pulled" | "mount" => return Ok(Decoded::ignored("a read, not a change")),
        other => {
            return Err(invalid(
                "action",
                format!("{:?}: expected push or delete", shown(other)),
            ));
        }
    };
    if digest.is_none() && tag.is_none() {
        return Err(invalid("digest", "neither digest nor tag given"));
    }
    Ok(Decoded::one(Event {
        action,
        registry: base.registry,
        repository: base.repository,
        tag,
        digest,
        media_type: str_at(v, &["mediaType"]).map(str::to_owned),
        event_id,
    }))
}

/// The reference in `field`: `HOST/REPO[:TAG][@DIGEST]`, or `REPO[:TAG][@DIGEST]` placed
/// by `origin` when its first segment is not a host.
fn locate(field: &'static str, text: &str, origin: &Origin) -> Result<Reference, DecodeError> {
    if split_host(text).is_some() {
        return reference_in(field, text);
    }
    let (path, digest) = match text.rsplit_once('@') {
        Some((p, d)) => (p, Some(d.parse::<Digest>().map_err(|e| invalid(field, e.to_string()))?)),
        None => (text, None),
    };
    let (repository, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
        _ => (path, None),
    };
    let vars = Vars {
        repository,
        ..Vars::default()
    };
    let (registry, repository) = origin.place("the event's repository", &vars)?;
    check_reference(field, &registry, &repository, tag.as_deref())?;
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{D, event, none};

    #[test]
    fn generic_and_harbor_style_forms() {
        let e = event(&format!(
            r#"{{"action":"push","ref":"harbor.example.com/team/app:1.0","digest":"{D}"}}"#
        ));
        assert_eq!((e.action, e.tag.as_deref()), (Action::Push, Some("1.0")));
        let e = event(&format!(
            r#"{{"action":"push","repository":"reg.example/app","tag":"{D}","digest":"{D}"}}"#
        ));
        assert_eq!(e.tag, None, "a digest in the tag field means no tag");
        let ce = format!(
            r#"{{"specversion":"1.0","id":"x","type":"com.example.artifact.deleted","data":{{"repository":"reg.example/app","digest":"{D}"}}}}"#
        );
        let e = event(&ce);
        assert_eq!(e.action, Action::DeleteManifest);
        assert_eq!(e.event_id.as_deref(), Some("x"));
        let read = crate::event::decode(br#"{"action":"pull","ref":"r.example/a:1"}"#, &none()).unwrap();
        assert!(read.events.is_empty() && read.ignored.len() == 1);
    }

    #[test]
    fn a_path_without_a_host_is_placed_by_the_origin_or_refused() {
        let p = format!(r#"{{"action":"push","repository":"team/app","tag":"1.0","digest":"{D}"}}"#);
        let err = crate::event::decode(p.as_bytes(), &none()).unwrap_err();
        assert!(matches!(err, DecodeError::NoHost(_)), "{err}");
        let origin = Origin::new("registry.example.com", "mirror/{repository}");
        let d = crate::event::decode(p.as_bytes(), &origin).unwrap();
        assert_eq!(d.events[0].registry, "registry.example.com");
        assert_eq!(d.events[0].repository, "mirror/team/app");
        // The `ref` form: tag and digest in the text.
        let p = format!(r#"{{"action":"push","ref":"team/app:2.0@{D}"}}"#);
        let e = &crate::event::decode(p.as_bytes(), &origin).unwrap().events[0];
        assert_eq!(
            (e.tag.as_deref(), e.digest.as_ref().map(ToString::to_string)),
            (Some("2.0"), Some(D.into()))
        );
        // A host is never taken from a configured origin when the payload names one.
        let p = r#"{"action":"push","ref":"other.example/app:1"}"#;
        assert_eq!(
            crate::event::decode(p.as_bytes(), &origin).unwrap().events[0].registry,
            "other.example"
        );
    }
}
