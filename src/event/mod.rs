//! Pure decoders from registry event payloads to normalised [`Event`]s, one file per
//! payload family:
//!
//! | file | payloads |
//! |---|---|
//! | `google.rs` | Artifact Registry / Container Registry (`gcr` Pub/Sub topic) |
//! | `azure.rs` | ACR through Event Grid (Event Grid schema and CloudEvents 1.0) |
//! | `artifactory.rs` | JFrog Artifactory Docker webhooks (`domain = "docker"`) |
//! | `harbor.rs` | Harbor webhooks, default JSON and CloudEvents |
//! | `distribution.rs` | Docker distribution notification envelopes (`{"events": [...]}`) |
//! | `generic.rs` | generic JSON / CloudEvents for bridges from other registries |
//! | `envelope.rs` | Pub/Sub push envelopes (`{"message": {"data": …}}`) put on a queue by a bridge |
//! | `origin.rs` | [`Origin`]: the registry of payloads that name no registry host |
//!
//! Role: turn untrusted bytes into typed hints ("something changed at
//! host/repository\[:tag\]\[@digest\]"). The daemon re-reads the source registry before acting.
//! One payload may carry several events (a distribution envelope, an Event Grid batch, a
//! Harbor event with several resources); the pipeline acks the message only when all of
//! them are verified.
//!
//! Must never: panic on any input, perform I/O, guess a registry host (a payload without
//! one is placed only by the configured [`Origin`], else refused), or trust a host it has
//! not checked (the caller checks every host against its configuration before any
//! connection). Every failure is a [`DecodeError`], which the pipeline treats as Permanent.
//!
//! Invariants: a decoded [`Event`]'s registry, repository and tag form a valid reference;
//! envelopes are unwrapped at most one level deep.

use serde_json::Value;

use crate::oci::{Digest, Locator, Reference};

mod artifactory;
mod azure;
mod distribution;
mod envelope;
mod generic;
mod google;
mod harbor;
mod origin;

#[cfg(test)]
mod tests;

pub use origin::Origin;

/// Largest payload accepted; registry events are a few hundred bytes, a distribution
/// envelope a few kilobytes.
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

/// The result of decoding one payload: the events to act on and, for the parts of the
/// payload that ask for nothing (blob pushes, pulls, scans, ...), why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// The events to act on, in payload order. Empty when the whole payload is ignored.
    pub events: Vec<Event>,
    /// Why the other parts of the payload are not acted on (for logs).
    pub ignored: Vec<String>,
}

impl Decoded {
    /// One event.
    pub fn one(event: Event) -> Decoded {
        Decoded {
            events: vec![event],
            ignored: Vec::new(),
        }
    }

    /// A well-formed payload that asks for nothing, with the reason.
    pub fn ignored(reason: impl Into<String>) -> Decoded {
        Decoded {
            events: Vec::new(),
            ignored: vec![reason.into()],
        }
    }

    /// Append the events and reasons of `other`.
    fn extend(&mut self, other: Decoded) {
        self.events.extend(other.events);
        self.ignored.extend(other.ignored);
    }
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
    /// The payload names no registry host and the source configures no
    /// `[source.origin]` to place it.
    #[error(
        "{0} names no registry host; set [source.origin] registry (and repository) to say which registry such events come from"
    )]
    NoHost(&'static str),
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

/// Check that `registry/repository[:tag]` is a valid reference (hosts and paths from
/// payloads and templates alike go through this before they become an [`Event`]).
fn check_reference(
    field: &'static str,
    registry: &str,
    repository: &str,
    tag: Option<&str>,
) -> Result<(), DecodeError> {
    // Each part is checked as what it is (not re-parsed from text, where a '/' in a host
    // would shift into the path). Without a tag, "latest" stands in for validation only.
    let locator = Locator::Tag(tag.unwrap_or("latest").to_owned());
    Reference::new(registry, repository, locator)
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

/// The digest in `field`, when present.
fn digest_in(v: &Value, path: &[&str], field: &'static str) -> Result<Option<Digest>, DecodeError> {
    match str_at(v, path) {
        Some(d) => d.parse::<Digest>().map(Some).map_err(|e| invalid(field, e.to_string())),
        None => Ok(None),
    }
}

/// The non-empty string at `path`.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// At most this much of an untrusted string goes into an error or a reason.
fn shown(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Decode any supported payload, detecting its shape. Payloads that name no registry
/// host are placed by `origin` (`[source.origin]`), or refused when it is not set.
pub fn decode(payload: &[u8], origin: &Origin) -> Result<Decoded, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let v: Value = serde_json::from_slice(payload).map_err(|_| DecodeError::NotJson)?;
    decode_value(&v, origin, Nesting::Top)
}

/// Where a value sits: envelopes and arrays are unwrapped once, never recursively, so a
/// hostile payload cannot nest its way into deep recursion or a blow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// The payload itself.
    Top,
    /// The data of a Pub/Sub push envelope.
    InEnvelope,
    /// An element of a top-level (or enveloped) array.
    InArray,
}

fn decode_value(v: &Value, origin: &Origin, at: Nesting) -> Result<Decoded, DecodeError> {
    if let Value::Array(items) = v {
        // Event Grid delivers an array to webhooks (one object to Service Bus); CloudEvents
        // batch mode is an array too. Each element is one event.
        if at == Nesting::InArray {
            return Err(DecodeError::Unrecognised("an array inside an array of events".into()));
        }
        if items.is_empty() {
            return Err(DecodeError::Unrecognised("an empty array of events".into()));
        }
        let mut all = Decoded::default();
        for item in items {
            all.extend(decode_value(item, origin, Nesting::InArray)?);
        }
        return Ok(all);
    }
    if !v.is_object() {
        return Err(DecodeError::Unrecognised("not a JSON object".into()));
    }
    if envelope::is_push_envelope(v) {
        if at != Nesting::Top {
            return Err(DecodeError::Unrecognised(
                "a Pub/Sub push envelope inside another envelope or array; only one level is unwrapped".into(),
            ));
        }
        let inner = envelope::unwrap(v)?;
        return decode_value(&inner, origin, Nesting::InEnvelope);
    }
    if v.get("events").is_some_and(Value::is_array) {
        return distribution::decode(v, origin);
    }
    if v.get("domain").is_some_and(Value::is_string) && v.get("event_type").is_some() {
        return artifactory::decode(v, origin);
    }
    if v.get("event_data").is_some_and(Value::is_object) && v.get("type").is_some_and(Value::is_string) {
        return harbor::decode_default(v, origin);
    }
    let kind = str_at(v, &["eventType"])
        .or_else(|| str_at(v, &["type"]))
        .unwrap_or_default();
    if kind.contains("Microsoft.ContainerRegistry.") || kind.starts_with("Image") || kind.starts_with("Chart") {
        return azure::decode(v, kind);
    }
    if v.get("specversion").is_some() {
        let data = v
            .get("data")
            .ok_or_else(|| invalid("data", "a CloudEvent without data"))?;
        let id = str_at(v, &["id"]).map(str::to_owned);
        if harbor::is_cloudevent_type(kind) {
            return harbor::decode_cloudevent(data, kind, id, origin);
        }
        return generic::decode(data, Some(kind), id, origin);
    }
    match str_at(v, &["action"]) {
        Some("INSERT" | "DELETE") => google::decode(v),
        Some(_) => generic::decode(v, None, None, origin),
        None => Err(DecodeError::Unrecognised(
            "no action, eventType, specversion, events, domain or event_data field".into(),
        )),
    }
}
