//! `[source] kind = "servicebus"`: namespace, entity, receive knobs, reject mode and
//! credentials, checked into a [`ServiceBusConfig`].
//!
//! Must never: put a key or a connection string in a [`Problem`] (they name the key,
//! variable or file only), or accept plain HTTP to anything but loopback.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::{AuthKind, AuthTable, Problem, RawServiceBusReject, RawSource};
use super::entra::EntraUse;
use super::{Result, given_secret, invalid, ranged};
use crate::config::{
    RejectMode, SERVICEBUS_ENTRA_SCOPE as DEFAULT_SCOPE, Secret, ServiceBusAuth, ServiceBusConfig, ServiceBusEntity,
    is_loopback_host,
};

const NAMESPACE_HINT: &str = "use the full host name, e.g. \"example.servicebus.windows.net\" (Azure China: \
     \".servicebus.chinacloudapi.cn\", US Government: \".servicebus.usgovcloudapi.net\")";

/// The settlement of Permanent failures: `source.reject` if given, else `pipeline.reject`
/// (`ack` = complete, `nack` = abandon), else abandon. Both given must agree.
pub(super) fn reject_mode(
    source: Option<(RawServiceBusReject, Range<usize>)>,
    pipeline: Option<(RejectMode, Range<usize>)>,
) -> Result<RejectMode> {
    let from_pipeline = pipeline.as_ref().map(|(r, _)| *r);
    let Some((r, at)) = source else {
        return Ok(from_pipeline.unwrap_or(RejectMode::Nack));
    };
    let (mode, name, same) = match r {
        RawServiceBusReject::Abandon => (RejectMode::Nack, "abandon", "nack"),
        RawServiceBusReject::Complete => (RejectMode::Ack, "complete", "ack"),
    };
    if from_pipeline.is_some_and(|p| p != mode) {
        return invalid(
            at,
            "source.reject",
            format!("{name:?} contradicts pipeline.reject (which would have to be {same:?}); give only one"),
        );
    }
    Ok(mode)
}

/// Build the Service Bus settings from `[source]` (keys of other kinds already refused).
pub(super) fn source(s: RawSource, span: Range<usize>) -> Result<ServiceBusConfig> {
    let Some(ns) = s.namespace else {
        return invalid(
            span,
            "source.namespace",
            format!("required when kind = \"servicebus\": {NAMESPACE_HINT}"),
        );
    };
    if !valid_namespace(ns.get_ref()) {
        return invalid(
            ns.span(),
            "source.namespace",
            format!("{:?} is not a full host name: {NAMESPACE_HINT}", ns.get_ref()),
        );
    }
    let entity = match (s.queue, s.topic, s.subscription) {
        (Some(q), None, None) => ServiceBusEntity::Queue(entity_name(&q, "source.queue", true)?),
        (None, Some(t), Some(sub)) => ServiceBusEntity::Subscription {
            topic: entity_name(&t, "source.topic", true)?,
            subscription: entity_name(&sub, "source.subscription", false)?,
        },
        (Some(_), Some(t), _) => {
            return invalid(
                t.span(),
                "source.topic",
                "give either queue, or topic with subscription, not both",
            );
        }
        (Some(_), None, Some(sub)) => {
            return invalid(
                sub.span(),
                "source.subscription",
                "only applies with topic (a queue has no subscriptions)",
            );
        }
        (None, Some(t), None) => {
            return invalid(t.span(), "source.subscription", "required with topic");
        }
        (None, None, _) => {
            return invalid(
                span,
                "source.queue",
                "required when kind = \"servicebus\": give queue, or topic and subscription",
            );
        }
    };
    if let Some(e) = &s.endpoint {
        let url = e.get_ref();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.trim_end_matches('/'));
        let ok = match host {
            Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', '@']) && !h.contains(char::is_whitespace) => {
                url.starts_with("https://") || is_loopback_host(h)
            }
            _ => false,
        };
        if !ok {
            return invalid(
                e.span(),
                "source.endpoint",
                "must be https://HOST[:PORT] (http:// only for a loopback test server), without a path",
            );
        }
    }
    let receivers = ranged(&s.receivers, "source.receivers", 1, Some(64))?.unwrap_or(2);
    let wait = ranged(&s.wait_secs, "source.wait_secs", 1, Some(60))?.unwrap_or(30);
    let renew = ranged(&s.lock_renew_secs, "source.lock_renew_secs", 1, Some(300))?;
    let Some(auth) = s.auth else {
        return invalid(
            span,
            "source.auth",
            "required when kind = \"servicebus\": { kind = \"sas\", ... } or { kind = \"entra\" }",
        );
    };
    let auth = self::auth(auth, ns.get_ref(), &entity)?;
    Ok(ServiceBusConfig {
        namespace: ns.into_inner().to_ascii_lowercase(),
        entity,
        endpoint: s.endpoint.map(|e| e.into_inner().trim_end_matches('/').to_owned()),
        receivers,
        wait: Duration::from_secs(wait),
        lock_renew: renew.map(Duration::from_secs),
        auth,
    })
}

/// A DNS name with at least two labels, no scheme, port or path.
fn valid_namespace(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').count() >= 2
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A queue or topic path (`/` allowed inside, up to 260 characters) or a subscription
/// name (no `/`, up to 50): letters, digits, `.`, `-`, `_`.
fn entity_name(v: &Spanned<String>, field: &str, path: bool) -> Result<String> {
    let n = v.get_ref();
    let max = if path { 260 } else { 50 };
    let ok = !n.is_empty()
        && n.len() <= max
        && !n.starts_with(['/', '.', '-', '_'])
        && !n.ends_with(['/', '.', '-', '_'])
        && !n.contains("//")
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || (path && b == b'/'));
    if ok {
        return Ok(n.clone());
    }
    let allowed = if path {
        "letters, digits, '.', '-', '_' and '/'"
    } else {
        "letters, digits, '.', '-' and '_'"
    };
    invalid(
        v.span(),
        field,
        format!("{n:?} is not a Service Bus entity name ({allowed}, at most {max} characters)"),
    )
}

fn auth(a: Spanned<AuthTable>, namespace: &str, entity: &ServiceBusEntity) -> Result<ServiceBusAuth> {
    let span = a.span();
    let a = a.into_inner();
    let kind = super::auth::kind(&a, "source.auth", &[AuthKind::Sas, AuthKind::Entra])?;
    if kind == AuthKind::Entra {
        return entra(&a, span);
    }
    let conn = given_secret(
        "source.auth",
        "connection_string",
        [
            &a.connection_string_env,
            &a.connection_string_file,
            &a.connection_string,
        ],
    )?;
    let key = given_secret("source.auth", "key", [&a.key_env, &a.key_file, &a.key])?;
    match (conn, key, &a.key_name) {
        (Some((value, field, at)), None, None) => connection_string(value.expose(), namespace, entity)
            .map_err(|m| Problem::new(at, format!("source.auth.{field}"), m)),
        (Some(_), _, Some(n)) => invalid(
            n.span(),
            "source.auth.key_name",
            "give either a connection string or key_name with a key, not both",
        ),
        (Some(_), Some((_, field, at)), None) => invalid(
            at,
            format!("source.auth.{field}"),
            "give either a connection string or key_name with a key, not both",
        ),
        (None, Some((key, _, _)), Some(n)) if !n.get_ref().is_empty() => Ok(ServiceBusAuth::Sas {
            key_name: n.get_ref().clone(),
            key,
        }),
        (None, _, Some(n)) if n.get_ref().is_empty() => invalid(n.span(), "source.auth.key_name", "must not be empty"),
        (None, Some(_), _) => invalid(span, "source.auth.key_name", "required with key_env, key_file or key"),
        (None, None, _) => invalid(
            span,
            "source.auth.connection_string_env",
            "kind = \"sas\" needs a connection string (connection_string_env, connection_string_file or \
             connection_string) or key_name with key_env, key_file or key",
        ),
    }
}

/// `{ kind = "entra", credential = "...", ... }`: the keys of registry auth `acr_entra`,
/// with the tenant optional (workload identity reads `AZURE_TENANT_ID`, managed identity
/// needs none) and the Service Bus scope as the default.
fn entra(a: &AuthTable, span: Range<usize>) -> Result<ServiceBusAuth> {
    let of = EntraUse {
        path: "source.auth",
        kind: "entra",
        tenant_required: None,
        default_scope: DEFAULT_SCOPE,
    };
    let client_secret = || {
        let sources = [&a.client_secret_env, &a.client_secret_file, &a.client_secret];
        match given_secret("source.auth", "client_secret", sources)? {
            Some((secret, _, _)) => Ok(secret),
            None => invalid(
                span.clone(),
                "source.auth.client_secret_env",
                "credential = \"client_secret\" needs one of client_secret_env, client_secret_file or \
                 client_secret",
            ),
        }
    };
    let (entra, scope) = super::entra::entra(a, &of, span.clone(), client_secret)?;
    if !scope.starts_with("https://") || scope.len() <= "https://".len() || scope.contains(char::is_whitespace) {
        let at = a.scope.as_ref().map_or(span, Spanned::span);
        return invalid(
            at,
            "source.auth.scope",
            format!("must be an https:// scope such as {DEFAULT_SCOPE:?}"),
        );
    }
    Ok(ServiceBusAuth::Entra { entra, scope })
}

/// `Endpoint=sb://NAMESPACE/;SharedAccessKeyName=NAME;SharedAccessKey=KEY[;EntityPath=E]`,
/// checked against the configured namespace and entity. Errors never quote the string.
fn connection_string(
    text: &str,
    namespace: &str,
    entity: &ServiceBusEntity,
) -> std::result::Result<ServiceBusAuth, String> {
    let (mut endpoint, mut name, mut key, mut entity_path) = (None, None, None, None);
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err("the connection string is not a list of NAME=VALUE pairs separated by ';'".into());
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.trim()),
            "sharedaccesskeyname" => name = Some(v.trim()),
            "sharedaccesskey" => key = Some(v.trim()),
            "entitypath" => entity_path = Some(v.trim()),
            "sharedaccesssignature" => {
                return Err(
                    "a connection string with a fixed SharedAccessSignature is not supported: give one \
                     with SharedAccessKeyName and SharedAccessKey"
                        .into(),
                );
            }
            // Other documented keys (e.g. TransportType) do not matter over REST.
            _ => {}
        }
    }
    let (Some(endpoint), Some(name), Some(key)) = (endpoint, name, key) else {
        return Err("the connection string needs Endpoint, SharedAccessKeyName and SharedAccessKey".into());
    };
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    if !host.eq_ignore_ascii_case(namespace) {
        return Err(format!(
            "the connection string's Endpoint is {host:?}, not source.namespace {namespace:?}"
        ));
    }
    let top = match entity {
        ServiceBusEntity::Queue(q) => q,
        ServiceBusEntity::Subscription { topic, .. } => topic,
    };
    if let Some(p) = entity_path.filter(|p| !p.eq_ignore_ascii_case(top)) {
        return Err(format!(
            "the connection string is for entity {p:?}, not {top:?} (a key of another entity cannot sign for this one)"
        ));
    }
    if name.is_empty() || key.is_empty() {
        return Err("the connection string's SharedAccessKeyName and SharedAccessKey must not be empty".into());
    }
    Ok(ServiceBusAuth::Sas {
        key_name: name.to_owned(),
        key: Secret::new(key),
    })
}

#[cfg(test)]
mod tests;
