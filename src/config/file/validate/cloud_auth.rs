//! Registry auth `kind = "google"` and `kind = "acr_entra"`: their keys, defaults and
//! checks, into [`Auth::Google`] and [`Auth::AcrEntra`].
//!
//! Must never: put a secret or a credentials file's content in a [`Problem`], or accept an
//! `http://` authority host that is not loopback. Nothing is contacted here; a static
//! token file may not exist yet at startup (whatever keeps it current may start later).

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::super::{RawAuth, RawEntraCredential};
use super::{Result, invalid};
use crate::config::{
    ACR_ENTRA_SCOPE, Auth, ENTRA_AUTHORITY_HOST, EntraConfig, EntraCredential, Error, GoogleAuth, Secret,
};

/// `{ kind = "google", credentials_file = "..." }`; the file, when given, must be a
/// readable credentials JSON of a supported type.
pub(super) fn google(a: &RawAuth, path: &str) -> Result<Auth> {
    let field = format!("{path}.credentials_file");
    let g = match &a.credentials_file {
        None => GoogleAuth::default(),
        Some(f) if f.get_ref().is_empty() => return invalid(f.span(), field, "must not be empty"),
        Some(f) => {
            let g = GoogleAuth {
                credentials_file: Some(PathBuf::from(f.get_ref())),
            };
            if let Err(e) = g.validate() {
                return invalid(f.span(), field, e.to_string());
            }
            g
        }
    };
    Ok(Auth::Google(g))
}

/// `{ kind = "acr_entra", tenant, credential, ... }`. `client_secret` resolves the
/// client secret's source; it is called only for `credential = "client_secret"`, after
/// every key has been checked.
pub(super) fn acr_entra(
    a: &RawAuth,
    span: Range<usize>,
    path: &str,
    client_secret: impl FnOnce() -> Result<Secret>,
) -> Result<Auth> {
    use RawEntraCredential::{ClientSecret, ManagedIdentity, StaticTokenFile, WorkloadIdentity};
    let field = |k: &str| format!("{path}.{k}");
    let Some(credential) = &a.credential else {
        return invalid(
            span,
            field("credential"),
            "required when kind = \"acr_entra\": \"workload_identity\", \"managed_identity\", \
             \"client_secret\" or \"static_token_file\"",
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
        ("client_id", &a.client_id),
        ("client_secret_env", &a.client_secret_env),
        ("client_secret_file", &a.client_secret_file),
        ("client_secret", &a.client_secret),
        ("federated_token_file", &a.federated_token_file),
        ("token_file", &a.token_file),
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
    let Some(tenant) = text(&a.tenant, "tenant")? else {
        return invalid(
            span,
            field("tenant"),
            "required when kind = \"acr_entra\" (the directory ID sent to the registry's /oauth2/exchange)",
        );
    };
    let client_id = text(&a.client_id, "client_id")?;
    let entra_credential = match credential.get_ref() {
        WorkloadIdentity => EntraCredential::WorkloadIdentity {
            client_id,
            token_file: text(&a.federated_token_file, "federated_token_file")?.map(PathBuf::from),
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
        StaticTokenFile => match text(&a.token_file, "token_file")? {
            Some(f) => EntraCredential::StaticTokenFile { path: PathBuf::from(f) },
            None => {
                return invalid(
                    span,
                    field("token_file"),
                    "required when credential = \"static_token_file\"",
                );
            }
        },
    };
    let authority_host = text(&a.authority_host, "authority_host")?.map_or_else(
        || ENTRA_AUTHORITY_HOST.to_owned(),
        |h| h.trim_end_matches('/').to_owned(),
    );
    let scope = text(&a.scope, "scope")?.unwrap_or_else(|| ACR_ENTRA_SCOPE.to_owned());
    let entra = EntraConfig {
        tenant: Some(tenant.clone()),
        credential: entra_credential,
        authority_host,
    };
    if let Err(e) = entra.validate() {
        let (key, reason) = match e {
            Error::Invalid { field, reason } => (field, reason),
            other => ("credential".to_owned(), other.to_string()),
        };
        let at = match key.as_str() {
            "authority_host" => a.authority_host.as_ref(),
            "tenant" => a.tenant.as_ref(),
            "client_id" => a.client_id.as_ref(),
            _ => None,
        }
        .map_or(span, Spanned::span);
        return invalid(at, field(&key), reason);
    }
    Ok(Auth::AcrEntra { tenant, entra, scope })
}
