//! ACR events through Event Grid, in the Event Grid schema or CloudEvents 1.0 (same
//! `data`): `ImagePushed` / `ImageDeleted`, host from `data.request.host`.
//!
//! Must never: panic, or accept an event whose host and repository do not form a valid
//! reference.

use serde_json::Value;

use super::{Action, DecodeError, Decoded, Event, check_reference, digest_in, invalid, shown, str_at};

/// ACR events, Event Grid or CloudEvents schema (same `data`).
pub(super) fn decode(v: &Value, kind: &str) -> Result<Decoded, DecodeError> {
    let suffix = kind.rsplit('.').next().unwrap_or(kind);
    let action = match suffix {
        "ImagePushed" => Action::Push,
        "ImageDeleted" => Action::DeleteManifest,
        "ChartPushed" | "ChartDeleted" => return Ok(Decoded::ignored("legacy ACR Helm chart repository event")),
        _ => {
            return Err(DecodeError::Unrecognised(format!("ACR event type {:?}", shown(kind))));
        }
    };
    let data = v.get("data").ok_or_else(|| invalid("data", "missing"))?;
    let host = str_at(data, &["request", "host"]).ok_or_else(|| invalid("data.request.host", "missing"))?;
    let repository =
        str_at(data, &["target", "repository"]).ok_or_else(|| invalid("data.target.repository", "missing"))?;
    let digest = digest_in(data, &["target", "digest"], "data.target.digest")?;
    let tag = str_at(data, &["target", "tag"]).map(str::to_owned);
    if digest.is_none() && tag.is_none() {
        return Err(invalid("data.target", "neither digest nor tag given"));
    }
    check_reference("data.target", host, repository, tag.as_deref())?;
    Ok(Decoded::one(Event {
        action,
        registry: host.into(),
        repository: repository.into(),
        tag,
        digest,
        media_type: str_at(data, &["target", "mediaType"]).map(str::to_owned),
        event_id: str_at(v, &["id"]).map(str::to_owned),
    }))
}
