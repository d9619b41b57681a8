//! Registry auth through cloud identities: `kind = "google"` and `kind = "acr_entra"`
//! (issue 4): defaults, per-credential keys, errors with line and field, rendering.

use super::{BASE, expect, ok, render};
use crate::config::{ACR_ENTRA_SCOPE, Auth, ENTRA_AUTHORITY_HOST, EntraCredential};

/// BASE with `auth` on registry b.example.
fn with_auth(auth: &str) -> String {
    BASE.replace(
        "[registries.\"b.example\"]",
        &format!("[registries.\"b.example\"]\nauth = {auth}"),
    )
}

fn field(f: &str) -> String {
    format!("registries.\"b.example\".auth.{f}")
}

fn b_auth(text: &str) -> Auth {
    ok(text)
        .registries
        .into_iter()
        .find(|r| r.host == "b.example")
        .unwrap()
        .auth
}

#[test]
fn google_uses_adc_or_a_checked_credentials_file() {
    assert!(matches!(b_auth(&with_auth("{ kind = \"google\" }")), Auth::Google(g) if g.credentials_file.is_none()));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("adc.json");
    std::fs::write(
        &key,
        r#"{"type": "authorized_user", "client_id": "c", "client_secret": "CLIENT-SECRET", "refresh_token": "r"}"#,
    )
    .unwrap();
    let text = with_auth(&format!(
        "{{ kind = \"google\", credentials_file = \"{}\" }}",
        key.display()
    ));
    assert!(matches!(b_auth(&text), Auth::Google(g) if g.credentials_file.as_deref() == Some(key.as_path())));

    std::fs::write(&key, r#"{"type": "api_key", "key": "CLIENT-SECRET"}"#).unwrap();
    let e = expect(&text, "auth", &field("credentials_file"), "not supported");
    assert!(!e.to_string().contains("CLIENT-SECRET"), "{e}");
    let missing = with_auth("{ kind = \"google\", credentials_file = \"/nonexistent/adc.json\" }");
    expect(&missing, "auth", &field("credentials_file"), "/nonexistent/adc.json");
    let wrong = with_auth("{ kind = \"basic\", username = \"u\", password = \"p\", credentials_file = \"x\" }");
    expect(
        &wrong,
        "auth",
        &field("credentials_file"),
        "does not apply to kind = \"basic\"",
    );
}

#[test]
fn acr_entra_defaults_and_credentials() {
    let wi = b_auth(&with_auth(
        "{ kind = \"acr_entra\", tenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\", credential = \"workload_identity\" }",
    ));
    let Auth::AcrEntra { tenant, entra, scope } = wi else {
        panic!("acr_entra expected, got {wi:?}")
    };
    assert_eq!(tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
    assert_eq!(entra.tenant.as_deref(), Some(tenant.as_str()));
    assert_eq!(scope, ACR_ENTRA_SCOPE);
    assert_eq!(entra.authority_host, ENTRA_AUTHORITY_HOST);
    assert_eq!(
        entra.credential,
        EntraCredential::WorkloadIdentity {
            client_id: None,
            token_file: None
        }
    );

    let cs = b_auth(&with_auth(
        "{ kind = \"acr_entra\", tenant = \"t\", credential = \"client_secret\", client_id = \"app\", \
         client_secret_env = \"PATH\", authority_host = \"https://login.microsoftonline.us/\", scope = \"s/.default\" }",
    ));
    let Auth::AcrEntra { entra, scope, .. } = cs else {
        panic!("acr_entra expected")
    };
    assert_eq!(entra.authority_host, "https://login.microsoftonline.us");
    assert_eq!(scope, "s/.default");
    match entra.credential {
        EntraCredential::ClientSecret { client_id, secret } => {
            assert_eq!(client_id, "app");
            assert_eq!(secret.expose(), std::env::var("PATH").unwrap());
        }
        other => panic!("client secret expected, got {other:?}"),
    }

    let mi = b_auth(&with_auth(
        "{ kind = \"acr_entra\", tenant = \"t\", credential = \"managed_identity\", client_id = \"uami\" }",
    ));
    assert!(matches!(mi, Auth::AcrEntra { entra, .. }
        if entra.credential == EntraCredential::ManagedIdentity { client_id: Some("uami".into()) }));
    let st = b_auth(&with_auth(
        "{ kind = \"acr_entra\", tenant = \"t\", credential = \"static_token_file\", token_file = \"/run/entra\" }",
    ));
    assert!(matches!(st, Auth::AcrEntra { entra, .. }
        if entra.credential == EntraCredential::StaticTokenFile { path: "/run/entra".into() }));
}

#[test]
fn acr_entra_errors_name_the_key() {
    let t = with_auth("{ kind = \"acr_entra\", credential = \"managed_identity\" }");
    expect(&t, "auth", &field("tenant"), "required");
    let t = with_auth("{ kind = \"acr_entra\", tenant = \"t\" }");
    expect(&t, "auth", &field("credential"), "required");
    let t = with_auth("{ kind = \"acr_entra\", tenant = \"t\", credential = \"oidc\" }");
    expect(&t, "auth", &field("credential"), "unknown variant");
    let t =
        with_auth("{ kind = \"acr_entra\", tenant = \"t\", credential = \"client_secret\", client_secret = \"x\" }");
    expect(
        &t,
        "auth",
        &field("client_id"),
        "required when credential = \"client_secret\"",
    );
    let t = with_auth(
        "{ kind = \"acr_entra\", tenant = \"t\", credential = \"client_secret\", client_id = \"a\", \
         client_secret_env = \"REGRELAY_TEST_SURELY_UNSET_VAR\" }",
    );
    expect(
        &t,
        "auth",
        &field("client_secret_env"),
        "REGRELAY_TEST_SURELY_UNSET_VAR",
    );
    let t =
        with_auth("{ kind = \"acr_entra\", tenant = \"t\", credential = \"managed_identity\", token_file = \"/x\" }");
    expect(
        &t,
        "auth",
        &field("token_file"),
        "does not apply to credential = \"managed_identity\"",
    );
    let t = with_auth(
        "{ kind = \"acr_entra\", tenant = \"t\", credential = \"managed_identity\", authority_host = \"http://login.example\" }",
    );
    expect(&t, "auth", &field("authority_host"), "https://");
    let t = with_auth("{ kind = \"acr_entra\", tenant = \"bad tenant\", credential = \"managed_identity\" }");
    expect(&t, "auth", &field("tenant"), "tenant ID");
    let t = with_auth("{ kind = \"basic\", username = \"u\", password = \"p\", credential = \"managed_identity\" }");
    expect(&t, "auth", &field("credential"), "does not apply to kind = \"basic\"");
    let t = with_auth("{ kind = \"google\", tenant = \"t\" }");
    expect(&t, "auth", &field("tenant"), "does not apply to kind = \"google\"");
}

#[test]
fn cloud_auth_renders_without_secrets_and_reloads() {
    let text = format!(
        "{BASE}\n[registries.\"c.example\"]\nauth = {{ kind = \"google\" }}\n\
         [registries.\"d.example\"]\nauth = {{ kind = \"acr_entra\", tenant = \"t\", credential = \"client_secret\", \
         client_id = \"app\", client_secret = \"hunter2-entra\" }}\n\
         [registries.\"e.example\"]\nauth = {{ kind = \"acr_entra\", tenant = \"t\", credential = \"workload_identity\", \
         client_id = \"c\", federated_token_file = \"/var/run/secrets/azure/tokens/azure-identity-token\" }}\n\
         [registries.\"f.example\"]\nauth = {{ kind = \"acr_entra\", tenant = \"t\", credential = \"static_token_file\", \
         token_file = \"/run/t\", authority_host = \"http://127.0.0.1:9\" }}\n"
    );
    let out = render(&ok(&text));
    assert!(!out.contains("hunter2"), "{out}");
    for line in [
        "[registries.\"c.example\".auth]\nkind = \"google\"\n\n",
        "tenant = \"t\"\ncredential = \"client_secret\"\nclient_id = \"app\"\nclient_secret = \"***\"\n",
        "federated_token_file = \"/var/run/secrets/azure/tokens/azure-identity-token\"",
        "token_file = \"/run/t\"\nauthority_host = \"http://127.0.0.1:9\"\n",
        "scope = \"https://containerregistry.azure.net/.default\"",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
    assert_eq!(render(&ok(&out)), out, "the rendering reloads to itself");
}
