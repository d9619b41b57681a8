//! The Entra ID credential keys shared by registry auth `kind = "acr_entra"` and
//! `source.auth` `kind = "entra"` (Service Bus): `credential` and the keys it allows,
//! `tenant`, `authority_host` and `scope`, checked into an [`EntraConfig`].
//!
//! Must never: put a secret in a [`Problem`](super::super::Problem), or accept an
//! `http://` authority host that is not loopback. Nothing is contacted here; a token
//! file may not exist yet at startup (whatever keeps it current may start later).

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::super::{AuthTable, RawEntraCredential};
use super::{Result, invalid};
use crate::config::{ENTRA_AUTHORITY_HOST, EntraConfig, EntraCredential, Error, Secret};

/// What differs between the auth tables that hold Entra keys (`acr_entra`, `entra`).
pub(super) struct EntraUse<'a> {
    /// The table's field path, e.g. `source.auth`.
    pub path: &'a str,
    /// Its `kind` as written, for messages.
    pub kind: &'a str,
    /// `Some(why)` if `tenant` is required whatever the credential.
    pub tenant_required: Option<&'a str>,
    /// The scope when `scope` is not given.
    pub default_scope: &'a str,
}

/// Check the Entra keys of `keys` (table at `span`) into the Entra settings and the token scope (trimmed,
/// not checked further). `client_secret` resolves the client secret's source; it is
/// called only for `credential = "client_secret"`, after the client ID is known.
pub(super) fn entra(
    keys: &AuthTable,
    of: &EntraUse<'_>,
    span: Range<usize>,
    client_secret: impl FnOnce() -> Result<Secret>,
) -> Result<(EntraConfig, String)> {
    use RawEntraCredential::{ClientSecret, ManagedIdentity, StaticTokenFile, WorkloadIdentity};
    let field = |k: &str| format!("{}.{k}", of.path);
    let Some(credential) = &keys.credential else {
        return invalid(
            span,
            field("credential"),
            format!(
                "required when kind = {:?}: \"workload_identity\", \"managed_identity\", \"client_secret\" \
                 or \"static_token_file\"",
                of.kind
            ),
        );
    };
    let (name, allowed): (&str, &[&str]) = match credential.get_ref() {
        WorkloadIdentity => ("workload_identity", &["client_id", "federated_token_file"]),
        ManagedIdentity => ("managed_identity", &["client_id"]),
        ClientSecret => (
            "client_secret",
            &["client_id", "client_secret_env", "client_secret_file", "client_secret"],
        ),
        StaticTokenFile => ("static_token_file", &["token_file"]),
    };
    let specific = [
        ("client_id", &keys.client_id),
        ("client_secret_env", &keys.client_secret_env),
        ("client_secret_file", &keys.client_secret_file),
        ("client_secret", &keys.client_secret),
        ("federated_token_file", &keys.federated_token_file),
        ("token_file", &keys.token_file),
    ];
    for (key, value) in specific {
        if let Some(v) = value.as_ref().filter(|_| !allowed.contains(&key)) {
            return invalid(v.span(), field(key), format!("does not apply to credential = {name:?}"));
        }
    }
    let text = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>> {
        match v {
            Some(s) if s.get_ref().trim().is_empty() => invalid(s.span(), field(key), "must not be empty"),
            Some(s) => Ok(Some(s.get_ref().trim().to_owned())),
            None => Ok(None),
        }
    };
    // A required tenant is checked before anything that depends on the credential.
    if let Some(why) = of.tenant_required
        && text(&keys.tenant, "tenant")?.is_none()
    {
        return invalid(
            span,
            field("tenant"),
            format!("required when kind = {:?} ({why})", of.kind),
        );
    }
    let client_id = text(&keys.client_id, "client_id")?;
    let credential = match credential.get_ref() {
        WorkloadIdentity => EntraCredential::WorkloadIdentity {
            client_id,
            token_file: text(&keys.federated_token_file, "federated_token_file")?.map(PathBuf::from),
        },
        ManagedIdentity => EntraCredential::ManagedIdentity { client_id },
        ClientSecret => {
            let Some(client_id) = client_id else {
                return invalid(span, field("client_id"), "required when credential = \"client_secret\"");
            };
            EntraCredential::ClientSecret {
                client_id,
                secret: client_secret()?,
            }
        }
        StaticTokenFile => match text(&keys.token_file, "token_file")? {
            Some(p) => EntraCredential::StaticTokenFile { path: PathBuf::from(p) },
            None => {
                return invalid(
                    span,
                    field("token_file"),
                    "required when credential = \"static_token_file\"",
                );
            }
        },
    };
    let entra = EntraConfig {
        tenant: text(&keys.tenant, "tenant")?,
        credential,
        authority_host: text(&keys.authority_host, "authority_host")?.map_or_else(
            || ENTRA_AUTHORITY_HOST.to_owned(),
            |h| h.trim_end_matches('/').to_owned(),
        ),
    };
    let scope = text(&keys.scope, "scope")?.unwrap_or_else(|| of.default_scope.to_owned());
    if let Err(e) = entra.validate() {
        let (key, reason) = match e {
            Error::Invalid { field, reason } => (field, reason),
            other => ("credential".to_owned(), other.to_string()),
        };
        let at = match key.as_str() {
            "authority_host" => keys.authority_host.as_ref(),
            "tenant" => keys.tenant.as_ref(),
            "client_id" => keys.client_id.as_ref(),
            _ => None,
        };
        return invalid(at.map_or(span, Spanned::span), field(&key), reason);
    }
    Ok((entra, scope))
}
