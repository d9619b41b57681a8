//! JFrog Artifactory Docker webhooks, as a bridge (an HTTP-to-Pub/Sub function, say)
//! forwards them: `{"domain": "docker", "event_type": "pushed" | "deleted" | "promoted",
//! "data": {repo_key, path, name, sha256, size, image_name, tag, platforms}, ...}`.
//!
//! Source: JFrog Platform Administration, Webhooks, "Domain: Docker" (the `data` object)
//! and "Event Types" (the `{domain, event_type, data, subscription_key, jpd_origin,
//! source}` envelope). `sha256` is bare hex: the checksum of the stored `manifest.json`,
//! or of `list.manifest.json` for a multi-arch push (the list manifest's digest). It is a
//! hint only; the pipeline re-resolves the tag at the source.
//!
//! The payload names a repository key, never a host: every event is placed by the
//! configured [`Origin`] (`{repo_key}`, `{image_name}`, `{repository}` = `image_name`).
//!
//! A promoted event (a tag copied or moved into another repository) is a push into the
//! target repository. JFrog's published sample does not show the target key's field; this
//! reads `target_repo_key`, else `target_repo_path` (the name Artifactory's artifact
//! `moved` / `copied` events use), and refuses the event when neither is present rather
//! than replicate from the wrong repository.
//!
//! Must never: panic, act on another domain's events, or guess a host.

use serde_json::Value;

use super::origin::Vars;
use super::{Action, DecodeError, Decoded, Event, Origin, invalid, shown, str_at};
use crate::oci::{Digest, valid_tag};

pub(super) fn decode(v: &Value, origin: &Origin) -> Result<Decoded, DecodeError> {
    let domain = str_at(v, &["domain"]).unwrap_or_default();
    if domain != "docker" {
        return Ok(Decoded::ignored(format!(
            "Artifactory {:?} event; only the docker domain (tag pushed / deleted / promoted) is acted on",
            shown(domain)
        )));
    }
    let kind = str_at(v, &["event_type"]).ok_or_else(|| invalid("event_type", "missing"))?;
    let data = v
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| invalid("data", "missing"))?;
    let repo_key = str_at(data, &["repo_key"]).ok_or_else(|| invalid("data.repo_key", "missing"))?;
    let (action, repo_key) = match kind {
        "pushed" => (Action::Push, repo_key),
        "deleted" => (Action::DeleteTag, repo_key),
        "promoted" => {
            let target = str_at(data, &["target_repo_key"])
                .or_else(|| str_at(data, &["target_repo_path"]))
                .ok_or_else(|| {
                    invalid(
                        "data.target_repo_key",
                        "a promoted event without its target repository key (target_repo_key or target_repo_path)",
                    )
                })?;
            (Action::Push, target)
        }
        other => {
            return Err(invalid(
                "event_type",
                format!("{:?}: expected pushed, deleted or promoted", shown(other)),
            ));
        }
    };
    let image_name = str_at(data, &["image_name"]).ok_or_else(|| invalid("data.image_name", "missing"))?;
    let tag = str_at(data, &["tag"]).ok_or_else(|| invalid("data.tag", "missing"))?;
    if !valid_tag(tag) {
        return Err(invalid("data.tag", "not a valid tag"));
    }
    let digest = match str_at(data, &["sha256"]) {
        Some(hex) => Some(
            format!("sha256:{hex}")
                .parse::<Digest>()
                .map_err(|_| invalid("data.sha256", "expected 64 lowercase hex digits"))?,
        ),
        None => None,
    };
    let vars = Vars {
        repository: image_name,
        repo_key: Some(repo_key),
        image_name: Some(image_name),
    };
    let (registry, repository) = origin.place("an Artifactory event", &vars)?;
    super::check_reference("data", &registry, &repository, Some(tag))?;
    Ok(Decoded::one(Event {
        action,
        registry,
        repository,
        tag: Some(tag.to_owned()),
        digest,
        media_type: None,
        event_id: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;
    use crate::event::tests::{D, HEX, fixture};

    fn jfrog() -> Origin {
        Origin::new("acme.jfrog.io", "{repo_key}/{image_name}")
    }

    #[test]
    fn pushed_multi_arch_is_a_push_of_the_list_manifest_with_the_configured_mapping() {
        let d = decode(&fixture("artifactory-docker-tag-pushed.json"), &jfrog()).unwrap();
        let [e] = &d.events[..] else { panic!("{d:?}") };
        assert_eq!(e.action, Action::Push);
        assert_eq!(e.registry, "acme.jfrog.io");
        assert_eq!(e.repository, "docker-local/team/app");
        assert_eq!(e.tag.as_deref(), Some("1.4.2"));
        assert_eq!(e.digest.as_ref().map(ToString::to_string).as_deref(), Some(D));
        // Subdomain method: the key names the host.
        let sub = Origin::new("{repo_key}.acme.jfrog.io", Origin::DEFAULT_REPOSITORY);
        let e = &decode(&fixture("artifactory-docker-tag-pushed.json"), &sub)
            .unwrap()
            .events[0];
        assert_eq!(
            (e.registry.as_str(), e.repository.as_str()),
            ("docker-local.acme.jfrog.io", "team/app")
        );
    }

    #[test]
    fn without_an_origin_the_event_is_refused_never_guessed() {
        let err = decode(&fixture("artifactory-docker-tag-pushed.json"), &Origin::none()).unwrap_err();
        assert_eq!(err, DecodeError::NoHost("an Artifactory event"));
    }

    #[test]
    fn deleted_is_a_tag_delete_and_promoted_a_push_into_the_target_key() {
        let e = &decode(&fixture("artifactory-docker-tag-deleted.json"), &jfrog())
            .unwrap()
            .events[0];
        assert_eq!(e.action, Action::DeleteTag);
        assert_eq!(
            (e.repository.as_str(), e.tag.as_deref()),
            ("docker-local/team/app", Some("1.4.1"))
        );
        let e = &decode(&fixture("artifactory-docker-tag-promoted.json"), &jfrog())
            .unwrap()
            .events[0];
        assert_eq!(e.action, Action::Push);
        assert_eq!(e.repository, "docker-prod/team/app");
        let no_target = format!(
            r#"{{"domain":"docker","event_type":"promoted","data":{{"repo_key":"docker-local","image_name":"app","tag":"1","sha256":"{HEX}"}}}}"#
        );
        let err = decode(no_target.as_bytes(), &jfrog()).unwrap_err();
        assert!(err.to_string().contains("target repository key"), "{err}");
    }

    #[test]
    fn other_domains_are_ignored_and_dummy_checksums_refused() {
        let d = decode(
            br#"{"domain":"artifact","event_type":"deployed","data":{"repo_key":"r","path":"a/b","name":"b","sha256":"x","size":0}}"#,
            &jfrog(),
        )
        .unwrap();
        assert!(d.events.is_empty() && d.ignored[0].contains("artifact"), "{d:?}");
        // JFrog's documented "deleted" sample (what the UI's Test button sends).
        let sample = br#"{"domain":"docker","event_type":"deleted","data":{"repo_key":"sample_repo","event_type":"deleted","path":"path/sample.txt","name":"sample.txt","sha256":"sample_checksum","size":0,"image_name":"sample_arch","tag":"sample_image","platforms":[{"architecture":"sample_os","os":"sample_tag"}]}}"#;
        let err = decode(sample, &jfrog()).unwrap_err();
        assert!(err.to_string().contains("data.sha256"), "{err}");
    }
}
