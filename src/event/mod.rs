//! Pure decoders from registry event payloads to one normalised [`Event`]:
//! Artifact Registry / Container Registry (`gcr` Pub/Sub topic), ACR through Event Grid
//! (Event Grid schema and CloudEvents 1.0), and a generic JSON / CloudEvents form for
//! bridges from other registries.
//!
//! Role: turn untrusted bytes into a typed hint ("something changed at
//! host/repository[:tag][@digest]"). The daemon re-reads the source registry before acting.
//!
//! Must never: panic on any input, perform I/O, or trust a host it has not checked
//! (the caller checks the host against its configuration before any connection).
//! Every failure is a [`DecodeError`], which the pipeline treats as Permanent.

use serde_json::Value;

use crate::oci::{Digest, Reference, valid_tag};

/// Largest payload accepted; registry events are a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A manifest was pushed or a tag was added.
    Push,
    /// A tag was removed (the manifest may remain).
    DeleteTag,
    /// A manifest was deleted.
    DeleteManifest,
}

/// A normalised registry event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// Registry host, as in references.
    pub registry: String,
    /// Repository path on that host.
    pub repository: String,
    /// Tag, when the event names one.
    pub tag: Option<String>,
    /// Digest, when the event names one.
    pub digest: Option<Digest>,
    /// Manifest media type, when the event says.
    pub media_type: Option<String>,
    /// The event's own id, when it has one (for logs and dedup).
    pub event_id: Option<String>,
}

/// The result of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event to act on.
    Event(Event),
    /// A well-formed event that regrelay does not act on, with the reason.
    Ignored(&'static str),
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON.
    #[error("payload is not JSON")]
    NotJson,
    /// JSON, but not a known event shape.
    #[error("unrecognised event: {0}")]
    Unrecognised(String),
    /// A known shape with a missing or invalid field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Parse an image reference found in `field`.
fn reference_in(field: &'static str, text: &str) -> Result<Reference, DecodeError> {
    text.parse()
        .map_err(|e: crate::oci::Error| invalid(field, e.to_string()))
}

/// Decode any supported payload, detecting its shape.
pub fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let v: Value = serde_json::from_slice(payload).map_err(|_| DecodeError::NotJson)?;
    // Event Grid delivers one object to Service Bus, an array to webhooks: accept both.
    let v = match v {
        Value::Array(mut items) if items.len() == 1 => items.remove(0),
        Value::Array(items) => {
            return Err(DecodeError::Unrecognised(format!(
                "an array of {} events; expected one",
                items.len()
            )));
        }
        other => other,
    };
    let kind = str_at(&v, &["eventType"])
        .or_else(|| str_at(&v, &["type"]))
        .unwrap_or_default();
    if kind.contains("Microsoft.ContainerRegistry.") || kind.starts_with("Image") || kind.starts_with("Chart") {
        return decode_acr(&v, kind);
    }
    if v.get("specversion").is_some() {
        let data = v
            .get("data")
            .ok_or_else(|| invalid("data", "a CloudEvent without data"))?;
        let id = str_at(&v, &["id"]).map(str::to_owned);
        return decode_generic(data, Some(kind), id);
    }
    match str_at(&v, &["action"]) {
        Some("INSERT" | "DELETE") => decode_gcr(&v),
        Some(_) => decode_generic(&v, None, None),
        None => Err(DecodeError::Unrecognised(
            "no action, eventType or specversion field".into(),
        )),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// Artifact Registry / Container Registry message data: `{action, digest?, tag?}` where
/// `digest` is `HOST/REPO@sha256:…` and `tag` is `HOST/REPO:TAG` (or, in some third-party
/// fixtures, a bare tag).
fn decode_gcr(v: &Value) -> Result<Decoded, DecodeError> {
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
    Ok(Decoded::Event(Event {
        action,
        registry: base.registry.clone(),
        repository: base.repository.clone(),
        tag,
        digest,
        media_type: None,
        event_id: None,
    }))
}

/// ACR events, Event Grid or CloudEvents schema (same `data`).
fn decode_acr(v: &Value, kind: &str) -> Result<Decoded, DecodeError> {
    let suffix = kind.rsplit('.').next().unwrap_or(kind);
    let action = match suffix {
        "ImagePushed" => Action::Push,
        "ImageDeleted" => Action::DeleteManifest,
        "ChartPushed" | "ChartDeleted" => return Ok(Decoded::Ignored("legacy ACR Helm chart repository event")),
        _ => {
            return Err(DecodeError::Unrecognised(format!(
                "ACR event type {:?}",
                kind.chars().take(100).collect::<String>()
            )));
        }
    };
    let data = v.get("data").ok_or_else(|| invalid("data", "missing"))?;
    let host = str_at(data, &["request", "host"]).ok_or_else(|| invalid("data.request.host", "missing"))?;
    let repository =
        str_at(data, &["target", "repository"]).ok_or_else(|| invalid("data.target.repository", "missing"))?;
    let digest = match str_at(data, &["target", "digest"]) {
        Some(d) => Some(
            d.parse::<Digest>()
                .map_err(|e| invalid("data.target.digest", e.to_string()))?,
        ),
        None => None,
    };
    let tag = str_at(data, &["target", "tag"]).map(str::to_owned);
    if digest.is_none() && tag.is_none() {
        return Err(invalid("data.target", "neither digest nor tag given"));
    }
    let check = Reference {
        registry: host.into(),
        repository: repository.into(),
        tag: tag.clone(),
        digest: None,
    };
    let check: Result<Reference, _> = check.to_string().parse();
    check.map_err(|e| invalid("data.target", e.to_string()))?;
    Ok(Decoded::Event(Event {
        action,
        registry: host.into(),
        repository: repository.into(),
        tag,
        digest,
        media_type: str_at(data, &["target", "mediaType"]).map(str::to_owned),
        event_id: str_at(v, &["id"]).map(str::to_owned),
    }))
}

/// Generic form for bridges: `{action, repository | ref, digest?, tag?}` where
/// `repository` is `HOST/REPO` and `ref` a full reference. `action` is `push`/`insert`
/// or `delete` (case-insensitive); a CloudEvent's type suffix (`.pushed`, `.deleted`)
/// also works.
fn decode_generic(v: &Value, ce_type: Option<&str>, event_id: Option<String>) -> Result<Decoded, DecodeError> {
    let action_text = str_at(v, &["action"])
        .map(str::to_ascii_lowercase)
        .or_else(|| ce_type.map(|t| t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase()))
        .ok_or_else(|| invalid("action", "missing"))?;
    let base: Reference = match (str_at(v, &["ref"]), str_at(v, &["repository"])) {
        (Some(r), _) => reference_in("ref", r)?,
        (None, Some(repo)) => reference_in("repository", repo)?,
        (None, None) => return Err(invalid("repository", "missing (or give ref)")),
    };
    let digest = match str_at(v, &["digest"]) {
        Some(d) => Some(d.parse::<Digest>().map_err(|e| invalid("digest", e.to_string()))?),
        None => base.digest.clone(),
    };
    // Harbor puts the digest in `tag` for digest-only pushes.
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
        "pull" | "pulled" | "mount" => return Ok(Decoded::Ignored("a read, not a change")),
        _ => return Err(invalid("action", "expected push or delete")),
    };
    if digest.is_none() && tag.is_none() {
        return Err(invalid("digest", "neither digest nor tag given"));
    }
    Ok(Decoded::Event(Event {
        action,
        registry: base.registry,
        repository: base.repository,
        tag,
        digest,
        media_type: str_at(v, &["mediaType"]).map(str::to_owned),
        event_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2c983205795bbf038b585fa925adeb03a8d47c4d2729ea7a4a6fdba32d9ef752";

    fn event(p: &str) -> Event {
        match decode(p.as_bytes()).unwrap() {
            Decoded::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn artifact_registry_insert_with_tag() {
        let e = event(&format!(
            r#"{{"action":"INSERT","digest":"us-west1-docker.pkg.dev/proj/repo/team/app@{D}","tag":"us-west1-docker.pkg.dev/proj/repo/team/app:1.1"}}"#
        ));
        assert_eq!(e.action, Action::Push);
        assert_eq!(e.registry, "us-west1-docker.pkg.dev");
        assert_eq!(e.repository, "proj/repo/team/app");
        assert_eq!(e.tag.as_deref(), Some("1.1"));
        assert_eq!(e.digest.unwrap().to_string(), D);
    }

    #[test]
    fn gcr_digest_only_insert_tag_only_delete_and_digest_delete() {
        let e = event(&format!(r#"{{"action":"INSERT","digest":"gcr.io/proj/app@{D}"}}"#));
        assert_eq!((e.action, e.tag), (Action::Push, None));
        let e = event(r#"{"action":"DELETE","tag":"us-docker.pkg.dev/p/r/app:old"}"#);
        assert_eq!(e.action, Action::DeleteTag);
        assert_eq!(e.tag.as_deref(), Some("old"));
        let e = event(&format!(r#"{{"action":"DELETE","digest":"gcr.io/proj/app@{D}"}}"#));
        assert_eq!(e.action, Action::DeleteManifest);
    }

    #[test]
    fn bare_tag_belongs_to_the_digest_repository_and_ports_are_not_tags() {
        let e = event(&format!(
            r#"{{"action":"INSERT","digest":"localhost:5000/app@{D}","tag":"v1.0.0"}}"#
        ));
        assert_eq!((e.registry.as_str(), e.repository.as_str()), ("localhost:5000", "app"));
        assert_eq!(e.tag.as_deref(), Some("v1.0.0"));
        let e = event(r#"{"action":"DELETE","tag":"localhost:5000/team/app:v2"}"#);
        assert_eq!(e.registry, "localhost:5000");
        assert_eq!(e.repository, "team/app");
    }

    #[test]
    fn acr_event_grid_and_cloudevents_schemas() {
        let data = format!(
            r#"{{"id":"1","action":"push","target":{{"mediaType":"application/vnd.oci.image.index.v1+json","size":1609,"digest":"{D}","repository":"team/app","tag":"1.4.2"}},"request":{{"host":"exampleregistry.azurecr.io"}}}}"#
        );
        let eg = format!(
            r#"{{"id":"e1","eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{data},"dataVersion":"2.0"}}"#
        );
        let ce = format!(
            r#"{{"specversion":"1.0","id":"e1","type":"Microsoft.ContainerRegistry.ImagePushed","source":"/subscriptions/x","data":{data}}}"#
        );
        for p in [eg.clone(), ce, format!("[{eg}]")] {
            let e = event(&p);
            assert_eq!(e.action, Action::Push);
            assert_eq!(e.registry, "exampleregistry.azurecr.io");
            assert_eq!(e.repository, "team/app");
            assert_eq!(e.tag.as_deref(), Some("1.4.2"));
            assert_eq!(e.event_id.as_deref(), Some("e1"));
        }
        let del = format!(
            r#"{{"eventType":"Microsoft.ContainerRegistry.ImageDeleted","data":{{"target":{{"digest":"{D}","repository":"team/app"}},"request":{{"host":"exampleregistry.azurecr.io"}}}}}}"#
        );
        assert_eq!(event(&del).action, Action::DeleteManifest);
        let chart = r#"{"eventType":"Microsoft.ContainerRegistry.ChartPushed","data":{"target":{"repository":"c"}}}"#;
        assert!(matches!(decode(chart.as_bytes()).unwrap(), Decoded::Ignored(_)));
    }

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
            r#"{{"specversion":"1.0","id":"x","type":"harbor.artifact.deleted","data":{{"repository":"reg.example/app","digest":"{D}"}}}}"#
        );
        let e = event(&ce);
        assert_eq!(e.action, Action::DeleteManifest);
        assert_eq!(e.event_id.as_deref(), Some("x"));
        assert!(matches!(
            decode(br#"{"action":"pull","ref":"r.example/a:1"}"#).unwrap(),
            Decoded::Ignored(_)
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_never_panics() {
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(decode(&huge), Err(DecodeError::TooLarge(MAX_PAYLOAD_BYTES + 1)));
        let cases: Vec<String> = vec![
            "not json".into(),
            "{}".into(),
            "[]".into(),
            "[{},{}]".into(),
            "42".into(),
            r#"{"action":"INSERT"}"#.into(),
            r#"{"action":"INSERT","digest":"gcr.io/p/app:latest"}"#.into(),
            r#"{"action":"INSERT","digest":"gcr.io/p/app@sha256:abc"}"#.into(),
            format!(r#"{{"action":"INSERT","digest":"gcr.io/p/a@{D}","tag":"gcr.io/p/b:1"}}"#),
            r#"{"action":"UPSERT","tag":"gcr.io/p/a:1"}"#.into(),
            r#"{"action":"DELETE","tag":"../../etc:1"}"#.into(),
            r#"{"eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{}}"#.into(),
            r#"{"eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{"target":{"repository":"Bad Repo","tag":"1"},"request":{"host":"r.azurecr.io"}}}"#.into(),
            r#"{"eventType":"Microsoft.ContainerRegistry.Something","data":{}}"#.into(),
            r#"{"specversion":"1.0","type":"x"}"#.into(),
            r#"{"action":"push","repository":"noslash"}"#.into(),
            r#"{"action":["push"]}"#.into(),
        ];
        for c in cases {
            assert!(decode(c.as_bytes()).is_err(), "{c} should not decode");
        }
        // Arbitrary bytes: no panic.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(0..200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = decode(&bytes);
        }
    }
}
