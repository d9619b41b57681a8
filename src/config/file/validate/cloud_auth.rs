//! Registry auth `kind = "google"` and `kind = "acr_entra"`: their keys, defaults and
//! checks, into [`Auth::Google`] and [`Auth::AcrEntra`].
//!
//! Must never: put a secret or a credentials file's content in a [`Problem`]. The Entra
//! keys are checked in [`super::entra`].

use std::ops::Range;
use std::path::PathBuf;

use super::super::AuthTable;
use super::entra::{EntraUse, entra};
use super::{Result, invalid};
use crate::config::{ACR_ENTRA_SCOPE, Auth, GoogleAuth, Secret};

/// `{ kind = "google", credentials_file = "..." }`; the file, when given, must be a
/// readable credentials JSON of a supported type.
pub(super) fn google(a: &AuthTable, path: &str) -> Result<Auth> {
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

/// `{ kind = "acr_entra", tenant, credential, ... }`: the shared Entra keys with the
/// tenant required and the registry scope as the default. `client_secret` resolves the
/// client secret's source; it is called only for `credential = "client_secret"`.
pub(super) fn acr_entra(
    a: &AuthTable,
    span: Range<usize>,
    path: &str,
    client_secret: impl FnOnce() -> Result<Secret>,
) -> Result<Auth> {
    let of = EntraUse {
        path,
        kind: "acr_entra",
        tenant_required: Some("the directory ID sent to the registry's /oauth2/exchange"),
        default_scope: ACR_ENTRA_SCOPE,
    };
    let (entra, scope) = entra(a, &of, span, client_secret)?;
    // Always given: `entra` refuses a missing tenant for acr_entra.
    let tenant = entra.tenant.clone().unwrap_or_default();
    Ok(Auth::AcrEntra { tenant, entra, scope })
}
