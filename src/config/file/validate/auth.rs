//! The keys of an auth table (`registries."HOST".auth`, `source.auth`): which `kind`s the
//! table may have, and which keys each kind takes. One list for both tables, so that a key
//! and the kinds it belongs to are written once.
//!
//! Must never: put a key's value in a [`Problem`] (the table may hold a secret).

use super::super::{AuthKind, AuthTable};
use super::{KindKey, Result, foreign_key, given, invalid};

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

/// Every key of an auth table besides `kind`, with the kinds it applies to (the Entra
/// kinds' keys are checked further against `credential`).
fn keys(a: &AuthTable) -> [KindKey<AuthKind>; 25] {
    use AuthKind::{AcrEntra, Basic, DockerConfig, Entra, Google, IdentityToken, Sas};
    const ENTRA: &[AuthKind] = &[AcrEntra, Entra];
    [
        ("credential", given(&a.credential), ENTRA),
        ("username", given(&a.username), &[Basic]),
        ("password_env", given(&a.password_env), &[Basic]),
        ("password_file", given(&a.password_file), &[Basic]),
        ("password", given(&a.password), &[Basic]),
        ("path", given(&a.path), &[DockerConfig]),
        ("token_env", given(&a.token_env), &[IdentityToken]),
        ("token_file", given(&a.token_file), &[IdentityToken, AcrEntra, Entra]),
        ("token", given(&a.token), &[IdentityToken]),
        ("credentials_file", given(&a.credentials_file), &[Google]),
        ("tenant", given(&a.tenant), ENTRA),
        ("client_id", given(&a.client_id), ENTRA),
        ("client_secret_env", given(&a.client_secret_env), ENTRA),
        ("client_secret_file", given(&a.client_secret_file), ENTRA),
        ("client_secret", given(&a.client_secret), ENTRA),
        ("federated_token_file", given(&a.federated_token_file), ENTRA),
        ("authority_host", given(&a.authority_host), ENTRA),
        ("scope", given(&a.scope), ENTRA),
        ("connection_string_env", given(&a.connection_string_env), &[Sas]),
        ("connection_string_file", given(&a.connection_string_file), &[Sas]),
        ("connection_string", given(&a.connection_string), &[Sas]),
        ("key_name", given(&a.key_name), &[Sas]),
        ("key_env", given(&a.key_env), &[Sas]),
        ("key_file", given(&a.key_file), &[Sas]),
        ("key", given(&a.key), &[Sas]),
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
    foreign_key(path, &kind, &keys(a), |_| {
        format!("does not apply to kind = {:?}", kind.name())
    })?;
    Ok(kind)
}
