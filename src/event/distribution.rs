//! Docker distribution (`registry:2`, distribution v3) notifications: an envelope
//! `{"events": [...]}` holding one or more events, not necessarily related.
//!
//! Source: distribution/distribution `docs/content/about/notifications.md` and
//! `notifications/bridge.go`. Each event has `id`, `action` (`push`, `pull`, `mount`,
//! `delete`), `target` (`mediaType`, `digest`, `size`, `repository`, `url`, `tag`) and
//! `request.host` (the Host header the client used: the registry's name in references).
//!
//! What counts: a manifest push (`target.mediaType` a manifest or index type, with
//! `target.tag` when pushed by tag), a delete by digest (distribution sends
//! `{repository, digest}` for manifest and blob deletes alike, so it is taken for a
//! manifest delete: the pipeline finds nothing to delete for a blob), and a tag delete
//! (`{repository, tag}`). Blob pushes, pulls, mounts and repository deletes are ignored,
//! each with its reason.
//!
//! Must never: panic, or guess a host (an event without `request.host` is placed by
//! [`Origin`], else refused).

use serde_json::Value;

use super::origin::Vars;
use super::{Action, DecodeError, Decoded, Event, Origin, check_reference, digest_in, invalid, shown, str_at};
use crate::oci::{is_manifest_type, valid_tag};

/// Media types of schema 1 manifests, which regrelay does not copy.
const SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

pub(super) fn decode(v: &Value, origin: &Origin) -> Result<Decoded, DecodeError> {
    let events = v.get("events").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if events.is_empty() {
        return Ok(Decoded::ignored("an empty distribution notification envelope"));
    }
    let mut out = Decoded::default();
    for (i, e) in events.iter().enumerate() {
        match one(e, origin)? {
            Ok(event) => out.events.push(event),
            Err(reason) => out.ignored.push(format!("events[{i}]: {reason}")),
        }
    }
    Ok(out)
}

/// One event of the envelope: an [`Event`], or the reason it asks for nothing.
fn one(e: &Value, origin: &Origin) -> Result<Result<Event, String>, DecodeError> {
    let action = str_at(e, &["action"]).ok_or_else(|| invalid("events[].action", "missing"))?;
    let target = e
        .get("target")
        .filter(|t| t.is_object())
        .ok_or_else(|| invalid("events[].target", "missing"))?;
    let media_type = str_at(target, &["mediaType"]);
    let digest = digest_in(target, &["digest"], "events[].target.digest")?;
    let tag = str_at(target, &["tag"]);
    let action = match action {
        "pull" => return Ok(Err("a pull, not a change".into())),
        "mount" => return Ok(Err("a blob mount".into())),
        "push" => match media_type {
            Some(m) if is_manifest_type(m) => Action::Push,
            Some(m) if SCHEMA1.contains(&m) => {
                return Ok(Err("a schema 1 manifest push, which regrelay does not copy".into()));
            }
            Some(m) => return Ok(Err(format!("a blob push ({})", shown(m)))),
            None => return Ok(Err("a push without a media type (a blob)".into())),
        },
        "delete" => match (&digest, tag) {
            (Some(_), _) => Action::DeleteManifest,
            (None, Some(_)) => Action::DeleteTag,
            (None, None) => {
                return Ok(Err(
                    "a repository delete; regrelay does not delete whole repositories".into()
                ));
            }
        },
        other => {
            return Err(invalid(
                "events[].action",
                format!("{:?}: expected push, pull, mount or delete", shown(other)),
            ));
        }
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(invalid("events[].target.tag", "not a valid tag"));
    }
    if action == Action::Push && digest.is_none() {
        return Err(invalid("events[].target.digest", "a manifest push without its digest"));
    }
    let path = str_at(target, &["repository"]).ok_or_else(|| invalid("events[].target.repository", "missing"))?;
    let (registry, repository) = match str_at(e, &["request", "host"]) {
        Some(host) => (host.to_owned(), path.to_owned()),
        None => origin.place(
            "a distribution event without request.host",
            &Vars {
                repository: path,
                ..Vars::default()
            },
        )?,
    };
    check_reference("events[].target", &registry, &repository, tag)?;
    Ok(Ok(Event {
        action,
        registry,
        repository,
        tag: tag.map(str::to_owned),
        digest,
        media_type: media_type.map(str::to_owned),
        event_id: str_at(e, &["id"]).map(str::to_owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;
    use crate::event::tests::{D, fixture, none};

    #[test]
    fn envelope_with_manifest_push_blob_push_and_tag_delete() {
        let d = decode(&fixture("distribution-notification.json"), &none()).unwrap();
        assert_eq!(d.events.len(), 2, "{d:?}");
        let push = &d.events[0];
        assert_eq!(push.action, Action::Push);
        assert_eq!(push.registry, "registry.example.com:5000");
        assert_eq!(push.repository, "team/app");
        assert_eq!(push.tag.as_deref(), Some("1.4.2"));
        assert_eq!(push.digest.as_ref().map(ToString::to_string).as_deref(), Some(D));
        assert!(push.event_id.is_some());
        let untag = &d.events[1];
        assert_eq!((untag.action, untag.tag.as_deref()), (Action::DeleteTag, Some("old")));
        assert_eq!(d.ignored.len(), 1);
        assert!(d.ignored[0].starts_with("events[1]: a blob push"), "{:?}", d.ignored);
    }

    #[test]
    fn two_image_pushes_a_manifest_delete_and_ignored_reads() {
        let d = decode(&fixture("distribution-two-images.json"), &none()).unwrap();
        let kinds: Vec<_> = d.events.iter().map(|e| (e.action, e.repository.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (Action::Push, "team/a"),
                (Action::Push, "team/b"),
                (Action::DeleteManifest, "team/old")
            ]
        );
        assert_eq!(d.ignored.len(), 3, "{:?}", d.ignored);
        assert!(d.ignored.iter().any(|r| r.contains("pull")));
        assert!(d.ignored.iter().any(|r| r.contains("mount")));
        assert!(d.ignored.iter().any(|r| r.contains("repository delete")));
    }

    #[test]
    fn only_blob_events_are_ignored_and_bad_events_refuse_the_envelope() {
        let blobs = br#"{"events":[{"id":"1","action":"push","target":{"mediaType":"application/octet-stream","digest":"sha256:2c983205795bbf038b585fa925adeb03a8d47c4d2729ea7a4a6fdba32d9ef752","repository":"a"},"request":{"host":"r.example"}}]}"#;
        let d = decode(blobs, &none()).unwrap();
        assert!(d.events.is_empty() && d.ignored.len() == 1);
        let no_host = format!(
            r#"{{"events":[{{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"a","tag":"1"}}}}]}}"#
        );
        assert!(matches!(
            decode(no_host.as_bytes(), &none()),
            Err(DecodeError::NoHost(_))
        ));
        let placed = decode(no_host.as_bytes(), &Origin::new("r.example", "{repository}")).unwrap();
        assert_eq!(placed.events[0].registry, "r.example");
        let bad_host = format!(
            r#"{{"events":[{{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"a"}},"request":{{"host":"evil/x"}}}}]}}"#
        );
        assert!(decode(bad_host.as_bytes(), &none()).is_err());
    }
}
