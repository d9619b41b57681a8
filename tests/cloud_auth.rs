//! Registry auth through cloud identities (issue 4), end to end against a real
//! `docker-registry` with `auth: token` whose token server also plays the cloud parts:
//! ACR's `/oauth2/exchange`, an Entra token endpoint, and a Google OAuth2 endpoint.
//!
//! Every registry config here is loaded from TOML, so the config keys are exercised too.
//! What is not covered: managed identity (IMDS is a fixed link-local address) and Google
//! ADC discovery from the environment or the metadata server.

mod support;

use std::path::Path;
use std::time::Duration;

use regrelay::config::RegistryConfig;
use regrelay::registry::ErrorClass;
use regrelay::replicate::{Options, Outcome};
use support::image::{self, task, test_retry};
use support::{TestRegistry, TokenRequest, TokenServer};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";

/// Registry configs for an anonymous `src` and a `dst` with `auth`, through the TOML loader.
fn registries(src: &TestRegistry, dst: &TestRegistry, auth: &str) -> Vec<RegistryConfig> {
    let (s, d) = (src.host(), dst.host());
    let text = format!(
        "[source]\nkind = \"file\"\n[registries.\"{s}\"]\n[registries.\"{d}\"]\nauth = {auth}\n\
         [[rules]]\nsource_registry = \"{s}\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"{d}\"\n"
    );
    let config = regrelay::config::load_str(&text, Path::new("cloud_auth.toml")).unwrap_or_else(|e| panic!("{e}"));
    config
        .registries
        .into_iter()
        .map(|mut r| {
            r.retry = test_retry();
            r.read_timeout = Duration::from_secs(20);
            r
        })
        .collect()
}

fn count(requests: &[TokenRequest], path: &str, valid: bool) -> usize {
    requests
        .iter()
        .filter(|r| r.path_and_query == path && r.credentials_valid == valid)
        .count()
}

/// Refresh-token grants at `/token` that were refused (a stale ACR refresh token).
fn refused_refresh_grants(tokens: &TokenServer) -> usize {
    tokens
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && !r.credentials_valid)
        .count()
}

/// No secret the cloud endpoints issued (nor `extra`) appears in `text`.
fn assert_no_secrets(tokens: &TokenServer, text: &str, extra: &[&str]) {
    for t in tokens
        .issued_cloud_secrets()
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        assert!(!text.contains(t), "a secret leaked into: {text}");
    }
}

async fn seed(src: &TestRegistry, repos: &[&str]) {
    let s = image::client(&src.host(), regrelay::config::Auth::Anonymous);
    for (i, repo) in repos.iter().enumerate() {
        image::push_simple(&s, repo, "v1", 20_000, 400 + i as u64).await;
    }
}

#[tokio::test]
async fn acr_entra_exchanges_once_and_buys_per_repository_tokens() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[]).await;
    tokens.enable_acr_exchange(TENANT);
    tokens.accept_entra_token("entra-static-token");
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start_token(&tokens).await);
    let repos = ["app1", "app2", "team/app3"];
    seed(&src, &repos).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("entra-token");
    std::fs::write(&token_file, "entra-static-token\n").unwrap();
    let auth = format!(
        "{{ kind = \"acr_entra\", tenant = \"{TENANT}\", credential = \"static_token_file\", token_file = \"{}\" }}",
        token_file.display()
    );
    let engine = image::engine(registries(&src, &dst, &auth), Options::default());
    for repo in repos {
        let out = engine
            .replicate(&task(
                &format!("{}/{repo}:v1", src.host()),
                &format!("{}/{repo}", dst.host()),
            ))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Replicated { .. }), "{out:?}");
    }
    let cloud = tokens.cloud_requests();
    assert_eq!(
        count(&cloud, "/oauth2/exchange", true),
        1,
        "one exchange for every repository: {cloud:?}"
    );
    assert_eq!(count(&cloud, "/oauth2/exchange", false), 0);
    // Registry tokens come from the refresh-token grant, one repository per token.
    let grants: Vec<TokenRequest> = tokens.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert!(grants.iter().all(|r| r.credentials_valid), "{grants:?}");
    for repo in repos {
        let own = format!("repository:{repo}:");
        assert!(
            grants.iter().any(|r| r.scopes.iter().all(|s| s.starts_with(&own))),
            "a token scoped to {repo} alone: {grants:?}"
        );
    }
    assert!(grants.iter().all(|r| r.scopes.len() == 1), "{grants:?}");

    // The ACR refresh token expires (or is revoked) server-side: one refused grant, one
    // new exchange, and the copy goes through.
    tokens.revoke_refresh_tokens();
    let before = refused_refresh_grants(&tokens);
    engine
        .replicate(&task(
            &format!("{}/app1:v1", src.host()),
            &format!("{}/app4", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(refused_refresh_grants(&tokens), before + 1);
    assert_eq!(count(&tokens.cloud_requests(), "/oauth2/exchange", true), 2);

    // A refresh token whose `exp` is near is exchanged again before anything refuses it.
    tokens.set_acr_refresh_ttl(2);
    let engine = image::engine(registries(&src, &dst, &auth), Options::default());
    engine
        .replicate(&task(
            &format!("{}/app2:v1", src.host()),
            &format!("{}/app5", dst.host()),
        ))
        .await
        .unwrap();
    let exchanges = count(&tokens.cloud_requests(), "/oauth2/exchange", true);
    let refused = refused_refresh_grants(&tokens);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    engine
        .replicate(&task(
            &format!("{}/app2:v1", src.host()),
            &format!("{}/app6", dst.host()),
        ))
        .await
        .unwrap();
    assert!(count(&tokens.cloud_requests(), "/oauth2/exchange", true) > exchanges);
    assert_eq!(refused_refresh_grants(&tokens), refused, "renewed before it expired");
}

#[tokio::test]
async fn a_rejected_entra_token_is_systemic_after_one_fresh_attempt() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[]).await;
    tokens.enable_acr_exchange(TENANT);
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start_token(&tokens).await);
    seed(&src, &["app"]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("entra-token");
    std::fs::write(&token_file, "entra-token-nobody-accepts").unwrap();
    let auth = format!(
        "{{ kind = \"acr_entra\", tenant = \"{TENANT}\", credential = \"static_token_file\", token_file = \"{}\" }}",
        token_file.display()
    );
    let engine = image::engine(registries(&src, &dst, &auth), Options::default());
    let err = engine
        .replicate(&task(&format!("{}/app:v1", src.host()), &format!("{}/app", dst.host())))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Systemic, "{err}");
    let cloud = tokens.cloud_requests();
    assert_eq!(
        count(&cloud, "/oauth2/exchange", false),
        2,
        "the file is read again once after the refusal: {cloud:?}"
    );
    assert_no_secrets(&tokens, &format!("{err} {err:?}"), &["entra-token-nobody-accepts"]);
}

#[tokio::test]
async fn client_secret_and_workload_identity_through_azure_identity() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[]).await;
    tokens.enable_acr_exchange(TENANT);
    tokens.enable_entra_sts(
        TENANT,
        "app-id-1",
        Some("sp-secret-value-1"),
        Some("k8s-projected-sa-jwt"),
    );
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start_token(&tokens).await);
    seed(&src, &["app"]).await;
    let sts = format!("/{TENANT}/oauth2/v2.0/token");
    let copy = |auth: String, to: &'static str| {
        let engine = image::engine(registries(&src, &dst, &auth), Options::default());
        let t = task(&format!("{}/app:v1", src.host()), &format!("{}/{to}", dst.host()));
        async move { engine.replicate(&t).await }
    };

    // A service principal with a client secret, against the authority host override.
    let client_secret = |secret: &str| {
        format!(
            "{{ kind = \"acr_entra\", tenant = \"{TENANT}\", credential = \"client_secret\", client_id = \"app-id-1\", \
             client_secret = \"{secret}\", authority_host = \"{}\" }}",
            tokens.url()
        )
    };
    copy(client_secret("sp-secret-value-1"), "by-secret").await.unwrap();
    let cloud = tokens.cloud_requests();
    assert_eq!(count(&cloud, &sts, true), 1, "{cloud:?}");
    let asked = cloud.iter().find(|r| r.path_and_query == sts).unwrap();
    assert_eq!(asked.scopes, [ACR_SCOPE]);
    assert_eq!(count(&cloud, "/oauth2/exchange", true), 1);

    // AKS workload identity: the projected token file is the client assertion.
    let dir = tempfile::tempdir().unwrap();
    let projected = dir.path().join("azure-identity-token");
    std::fs::write(&projected, "k8s-projected-sa-jwt").unwrap();
    let workload = format!(
        "{{ kind = \"acr_entra\", tenant = \"{TENANT}\", credential = \"workload_identity\", client_id = \"app-id-1\", \
         federated_token_file = \"{}\", authority_host = \"{}\" }}",
        projected.display(),
        tokens.url()
    );
    copy(workload, "by-workload-identity").await.unwrap();
    assert_eq!(count(&tokens.cloud_requests(), &sts, true), 2);
    assert_eq!(count(&tokens.cloud_requests(), "/oauth2/exchange", true), 2);

    // A wrong secret: Entra refuses it, which an operator has to fix.
    let err = copy(client_secret("wrong-secret-value-2"), "refused")
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Systemic, "{err}");
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert_no_secrets(
        &tokens,
        &format!("{err} {err:?}"),
        &["wrong-secret-value-2", "sp-secret-value-1", "k8s-projected-sa-jwt"],
    );
}

#[tokio::test]
async fn google_access_tokens_are_sent_as_oauth2accesstoken_and_refreshed_once() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[]).await;
    tokens.enable_google(
        "gclient.apps.googleusercontent.com",
        "g-client-secret",
        "g-refresh-token",
    );
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start_token(&tokens).await);
    seed(&src, &["app"]).await;
    // gcloud's `application_default_credentials.json` shape, pointed at the local endpoint.
    let dir = tempfile::tempdir().unwrap();
    let adc = dir.path().join("application_default_credentials.json");
    let file = serde_json::json!({
        "type": "authorized_user",
        "client_id": "gclient.apps.googleusercontent.com",
        "client_secret": "g-client-secret",
        "refresh_token": "g-refresh-token",
        "token_uri": tokens.google_token_uri(),
    });
    std::fs::write(&adc, file.to_string()).unwrap();
    let auth = format!("{{ kind = \"google\", credentials_file = \"{}\" }}", adc.display());
    let engine = image::engine(registries(&src, &dst, &auth), Options::default());
    for to in ["one", "two"] {
        engine
            .replicate(&task(
                &format!("{}/app:v1", src.host()),
                &format!("{}/{to}", dst.host()),
            ))
            .await
            .unwrap();
    }
    let google = |valid| count(&tokens.cloud_requests(), "/google/token", valid);
    assert_eq!(google(true), 1, "the access token is cached across repositories");
    let asked = tokens
        .cloud_requests()
        .into_iter()
        .find(|r| r.path_and_query == "/google/token")
        .unwrap();
    assert_eq!(asked.scopes, ["https://www.googleapis.com/auth/cloud-platform"]);
    let gets: Vec<TokenRequest> = tokens.requests().into_iter().filter(|r| r.method == "GET").collect();
    assert!(!gets.is_empty() && gets.iter().all(|r| r.credentials_valid), "{gets:?}");

    // The account loses access: the refused token is replaced once, then it is Systemic.
    tokens.revoke_google();
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/three", dst.host()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Systemic, "{err}");
    assert_eq!(google(true), 2, "exactly one fresh Google token was tried");
    assert_no_secrets(
        &tokens,
        &format!("{err} {err:?}"),
        &["g-client-secret", "g-refresh-token"],
    );
}
