//! The keys of an auth table (`registries."HOST".auth`, `source.auth`): which `kind`s the
//! table may have, and which keys each kind takes. One list for both tables, so that a key
//! and the kinds it belongs to are written once.
//!
//! Must never: put a key's value in a [`Problem`] (the table may hold a secret).

use std::ops::Range;

use toml::Spanned;

use super::super::{AuthKind, AuthTable};
use super::{Result, invalid};

impl AuthKind {
    /// The kind as the file writes it.
    pub(in crate::config::file) fn name(self) -> &'static str {
        match self {
            AuthKind::Anonymous => "anonymous",
            AuthKind::Basic => "basic",
            AuthKind::DockerConfig => "docker_config",
            AuthKind::IdentityToken => "identity_token",
            AuthKind::Google => "google",
            AuthKind::AcrEntra => "acr_entra",
            AuthKind::Sas => "sas",
            AuthKind::Entra => "entra",
        }
    }
}

/// A key of an auth table besides `kind`: its name, its span if given, the kinds it
/// applies to (the Entra kinds' keys are checked further against `credential`).
type Key = (&'static str, Option<Range<usize>>, &'static [AuthKind]);

/// Every key of an auth table besides `kind`.
fn keys(a: &AuthTable) -> [Key; 25] {
    use AuthKind::{AcrEntra, Basic, DockerConfig, Entra, Google, IdentityToken, Sas};
    fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
        v.as_ref().map(Spanned::span)
    }
    const ENTRA: &[AuthKind] = &[AcrEntra, Entra];
    [
        ("credential", at(&a.credential), ENTRA),
        ("username", at(&a.username), &[Basic]),
        ("password_env", at(&a.password_env), &[Basic]),
        ("password_file", at(&a.password_file), &[Basic]),
        ("password", at(&a.password), &[Basic]),
        ("path", at(&a.path), &[DockerConfig]),
        ("token_env", at(&a.token_env), &[IdentityToken]),
        ("token_file", at(&a.token_file), &[IdentityToken, AcrEntra, Entra]),
        ("token", at(&a.token), &[IdentityToken]),
        ("credentials_file", at(&a.credentials_file), &[Google]),
        ("tenant", at(&a.tenant), ENTRA),
        ("client_id", at(&a.client_id), ENTRA),
        ("client_secret_env", at(&a.client_secret_env), ENTRA),
        ("client_secret_file", at(&a.client_secret_file), ENTRA),
        ("client_secret", at(&a.client_secret), ENTRA),
        ("federated_token_file", at(&a.federated_token_file), ENTRA),
        ("authority_host", at(&a.authority_host), ENTRA),
        ("scope", at(&a.scope), ENTRA),
        ("connection_string_env", at(&a.connection_string_env), &[Sas]),
        ("connection_string_file", at(&a.connection_string_file), &[Sas]),
        ("connection_string", at(&a.connection_string), &[Sas]),
        ("key_name", at(&a.key_name), &[Sas]),
        ("key_env", at(&a.key_env), &[Sas]),
        ("key_file", at(&a.key_file), &[Sas]),
        ("key", at(&a.key), &[Sas]),
    ]
}

/// The table's kind, if it is one of `kinds` (the kinds of the table at `path`) and every
/// key given applies to it.
pub(super) fn kind(a: &AuthTable, path: &str, kinds: &[AuthKind]) -> Result<AuthKind> {
    let Some(kind) = kinds.iter().copied().find(|k| k.name() == a.kind.get_ref()) else {
        // Worded as serde words an unknown variant.
        let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.name())).collect();
        let expected = match names.as_slice() {
            [one] => format!("expected {one}"),
            [a, b] => format!("expected {a} or {b}"),
            _ => format!("expected one of {}", names.join(", ")),
        };
        return invalid(
            a.kind.span(),
            format!("{path}.kind"),
            format!("unknown variant `{}`, {expected}", a.kind.get_ref()),
        );
    };
    for (key, at, applies) in keys(a) {
        if let Some(at) = at.filter(|_| !applies.contains(&kind)) {
            return invalid(
                at,
                format!("{path}.{key}"),
                format!("does not apply to kind = {:?}", kind.name()),
            );
        }
    }
    Ok(kind)
}
