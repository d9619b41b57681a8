//! Harbor webhooks, in Harbor's default JSON (`{type: "PUSH_ARTIFACT", occur_at,
//! operator, event_data: {resources: [...], repository: {...}}}`) and in its CloudEvents
//! form (`type: "harbor.artifact.pushed"`, `data` = the same `{resources, repository}`).
//!
//! Source: goharbor/website "Configure Webhooks" (default payloads) and the goharbor
//! community CloudEvents proposal (type names; releases use `harbor.artifact.*`, the
//! proposal `io.goharbor.artifact.*`: both are accepted). `resources` may hold several
//! artifacts: each becomes one event. The host is only in `resource_url`
//! (`harbor.example.com/team/app:1.4.2`); a `tag` holding a digest means "no tag".
//!
//! Must never: panic, act on scans, quotas, pulls or replication reports, or guess a
//! host (a `resource_url` without one is placed by [`Origin`], else refused).

use serde_json::Value;

use super::origin::{Vars, split_host};
use super::{Action, DecodeError, Decoded, Event, Origin, check_reference, digest_in, invalid, shown, str_at};
use crate::oci::valid_tag;

/// Is `kind` a Harbor CloudEvents type?
pub(super) fn is_cloudevent_type(kind: &str) -> bool {
    kind.starts_with("harbor.") || kind.starts_with("io.goharbor.")
}

/// Harbor's default format.
pub(super) fn decode_default(v: &Value, origin: &Origin) -> Result<Decoded, DecodeError> {
    let kind = str_at(v, &["type"]).unwrap_or_default();
    let action = match kind {
        "PUSH_ARTIFACT" => Action::Push,
        "DELETE_ARTIFACT" => Action::DeleteManifest,
        "PULL_ARTIFACT" => return Ok(Decoded::ignored("Harbor PULL_ARTIFACT: a read, not a change")),
        other => {
            return Ok(Decoded::ignored(format!(
                "Harbor {:?} event: not an image change",
                shown(other)
            )));
        }
    };
    let data = v.get("event_data").unwrap_or(&Value::Null);
    resources(data, action, None, origin)
}

/// Harbor's CloudEvents format (`data` of the CloudEvent, its `type` and `id`).
pub(super) fn decode_cloudevent(
    data: &Value,
    kind: &str,
    id: Option<String>,
    origin: &Origin,
) -> Result<Decoded, DecodeError> {
    let action = match kind
        .strip_prefix("io.goharbor.")
        .or_else(|| kind.strip_prefix("harbor."))
    {
        Some("artifact.pushed") => Action::Push,
        Some("artifact.deleted") => Action::DeleteManifest,
        Some("artifact.pulled") => return Ok(Decoded::ignored("Harbor artifact.pulled: a read, not a change")),
        _ => {
            return Ok(Decoded::ignored(format!(
                "Harbor {:?} event: not an image change",
                shown(kind)
            )));
        }
    };
    resources(data, action, id, origin)
}

/// One event per entry of `data.resources`.
fn resources(data: &Value, action: Action, id: Option<String>, origin: &Origin) -> Result<Decoded, DecodeError> {
    let list = data
        .get("resources")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| invalid("resources", "missing or empty"))?;
    let full_name = str_at(data, &["repository", "repo_full_name"]);
    let mut out = Decoded::default();
    for r in list {
        let digest = digest_in(r, &["digest"], "resources[].digest")?;
        let tag = match str_at(r, &["tag"]) {
            // On a digest-only push the tag field holds the digest.
            Some(t) if t.starts_with("sha256:") => None,
            Some(t) if valid_tag(t) => Some(t.to_owned()),
            Some(_) => return Err(invalid("resources[].tag", "not a valid tag")),
            None => None,
        };
        if digest.is_none() && tag.is_none() {
            return Err(invalid("resources[]", "neither digest nor tag given"));
        }
        let url = str_at(r, &["resource_url"]).ok_or_else(|| invalid("resources[].resource_url", "missing"))?;
        // `HOST/REPO:TAG` or `HOST/REPO@DIGEST`: the repository is what precedes them.
        let path = url.split_once('@').map_or(url, |(p, _)| p);
        let path = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => p,
            _ => path,
        };
        let (host, url_repo) = match split_host(path) {
            Some((host, repo)) => (Some(host), repo),
            None => (None, path),
        };
        if let Some(name) = full_name
            && url_repo != name
        {
            return Err(invalid(
                "resources[].resource_url",
                format!(
                    "names repository {:?}, not repo_full_name {:?}",
                    shown(url_repo),
                    shown(name)
                ),
            ));
        }
        let (registry, repository) = match host {
            Some(host) => (host.to_owned(), url_repo.to_owned()),
            None => origin.place(
                "a Harbor resource_url",
                &Vars {
                    repository: url_repo,
                    ..Vars::default()
                },
            )?,
        };
        check_reference("resources[].resource_url", &registry, &repository, tag.as_deref())?;
        let action = match (action, &digest) {
            (Action::DeleteManifest, None) => Action::DeleteTag,
            (a, _) => a,
        };
        out.events.push(Event {
            action,
            registry,
            repository,
            tag,
            digest,
            media_type: None,
            event_id: id.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;
    use crate::event::tests::{D, fixture, none};

    #[test]
    fn default_and_cloudevents_pushes_decode_alike() {
        for name in ["harbor-push.json", "harbor-push-cloudevents.json"] {
            let d = decode(&fixture(name), &none()).unwrap();
            let [e] = &d.events[..] else { panic!("{name}: {d:?}") };
            assert_eq!(e.action, Action::Push, "{name}");
            assert_eq!(e.registry, "harbor.example.com", "{name}");
            assert_eq!(e.repository, "team/app", "{name}");
            assert_eq!(e.tag.as_deref(), Some("1.4.2"), "{name}");
            assert_eq!(e.digest.as_ref().map(ToString::to_string).as_deref(), Some(D), "{name}");
        }
        let e = &decode(&fixture("harbor-push-cloudevents.json"), &none())
            .unwrap()
            .events[0];
        assert!(e.event_id.is_some());
    }

    #[test]
    fn several_resources_digest_tags_deletes_and_non_image_events() {
        let d = decode(&fixture("harbor-delete-two-artifacts.json"), &none()).unwrap();
        assert_eq!(d.events.len(), 2);
        assert!(d.events.iter().all(|e| e.action == Action::DeleteManifest));
        assert_eq!(d.events[1].tag, None, "a digest in the tag field means no tag");
        let scan = br#"{"type":"SCANNING_COMPLETED","occur_at":1,"event_data":{"resources":[]}}"#;
        let d = decode(scan, &none()).unwrap();
        assert!(d.events.is_empty() && d.ignored[0].contains("SCANNING_COMPLETED"));
        let pulled = br#"{"specversion":"1.0","id":"1","source":"/projects/1/webhook/policies/1","type":"harbor.artifact.pulled","data":{}}"#;
        assert!(decode(pulled, &none()).unwrap().events.is_empty());
    }

    #[test]
    fn mismatched_or_host_less_resource_urls() {
        let bad = format!(
            r#"{{"type":"PUSH_ARTIFACT","event_data":{{"resources":[{{"digest":"{D}","tag":"1","resource_url":"harbor.example.com/other/app:1"}}],"repository":{{"repo_full_name":"team/app"}}}}}}"#
        );
        assert!(decode(bad.as_bytes(), &none()).is_err());
        let hostless = format!(
            r#"{{"type":"PUSH_ARTIFACT","event_data":{{"resources":[{{"digest":"{D}","tag":"1","resource_url":"team/app:1"}}],"repository":{{"repo_full_name":"team/app"}}}}}}"#
        );
        assert!(matches!(
            decode(hostless.as_bytes(), &none()),
            Err(DecodeError::NoHost(_))
        ));
        let origin = Origin::new("harbor.internal:8443", "{repository}");
        let e = &decode(hostless.as_bytes(), &origin).unwrap().events[0];
        assert_eq!(
            (e.registry.as_str(), e.repository.as_str()),
            ("harbor.internal:8443", "team/app")
        );
    }
}
