//! Pub/Sub push envelopes, put onto a queue (Service Bus, a file) by a bridge that
//! received Pub/Sub's push delivery: `{"message": {"data": BASE64, "attributes": {...},
//! "messageId": ..., "publishTime": ...}, "subscription": "projects/P/subscriptions/S"}`.
//!
//! Source: Google Cloud Pub/Sub "Push subscriptions" (the JSON body of a push request;
//! `data` is base64, the ID and time appear in camelCase and snake_case).
//!
//! Must never: panic, or unwrap more than one level (the caller refuses an envelope
//! inside an envelope).

use base64::Engine as _;
use serde_json::Value;

use super::{DecodeError, invalid};

/// Does `v` look like a push envelope: `message` an object with a `data` field, and a
/// `subscription` (or a message id)?
pub(super) fn is_push_envelope(v: &Value) -> bool {
    let Some(m) = v.get("message").filter(|m| m.is_object()) else {
        return false;
    };
    m.get("data").is_some()
        && (v.get("subscription").is_some() || m.get("messageId").is_some() || m.get("message_id").is_some())
}

/// The JSON inside the envelope's base64 `message.data`.
pub(super) fn unwrap(v: &Value) -> Result<Value, DecodeError> {
    let data = v
        .get("message")
        .and_then(|m| m.get("data"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid("message.data", "a push envelope without data"))?;
    // Pub/Sub writes standard base64 with padding; accept URL-safe and unpadded too.
    let bytes = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .find_map(|engine| engine.decode(data.trim()).ok())
    .ok_or_else(|| invalid("message.data", "not base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid("message.data", "the decoded data is not JSON"))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use crate::event::decode;
    use crate::event::tests::{fixture, none};
    use crate::event::{Action, DecodeError, Origin};

    fn wrap(inner: &[u8]) -> Vec<u8> {
        let data = base64::engine::general_purpose::STANDARD.encode(inner);
        serde_json::to_vec(&serde_json::json!({
            "message": {"data": data, "attributes": {"origin": "bridge"}, "messageId": "1", "message_id": "1",
                        "publishTime": "2026-05-04T10:15:30.123Z", "publish_time": "2026-05-04T10:15:30.123Z"},
            "subscription": "projects/example-project/subscriptions/replicator-push"
        }))
        .unwrap()
    }

    #[test]
    fn the_documented_envelope_fixture_unwraps_to_the_ar_insert() {
        let d = decode(&fixture("pubsub-push-envelope-ar-insert.json"), &none()).unwrap();
        assert_eq!(d, decode(&fixture("ar-insert.json"), &none()).unwrap());
        assert_eq!(d.events[0].action, Action::Push);
    }

    #[test]
    fn an_envelope_wraps_every_other_shape_alike() {
        // `{repository}` places both host-less shapes (Artifactory, the generic CloudEvent).
        let origin = Origin::new("acme.jfrog.io", "{repository}");
        for name in crate::event::tests::FIXTURES {
            if name.starts_with("pubsub-push") {
                continue;
            }
            let bare = decode(&fixture(name), &origin);
            let wrapped = decode(&wrap(&fixture(name)), &origin);
            assert_eq!(bare, wrapped, "{name}");
            assert!(
                wrapped.is_ok_and(|d| !d.events.is_empty() || !d.ignored.is_empty()),
                "{name}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded_and_bad_data_refused() {
        let twice = wrap(&wrap(&fixture("ar-insert.json")));
        let err = decode(&twice, &none()).unwrap_err();
        assert!(err.to_string().contains("only one level"), "{err}");
        let in_array = format!("[{}]", String::from_utf8(wrap(&fixture("ar-insert.json"))).unwrap());
        assert!(decode(in_array.as_bytes(), &none()).is_err());
        for data in ["", "!!!not base64", "bm90IGpzb24="] {
            let p = serde_json::json!({"message": {"data": data}, "subscription": "projects/p/subscriptions/s"});
            let err = decode(&serde_json::to_vec(&p).unwrap(), &none()).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Invalid {
                        field: "message.data",
                        ..
                    }
                ),
                "{data}: {err}"
            );
        }
    }
}
