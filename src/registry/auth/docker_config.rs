//! Credentials from a docker `config.json`: inline `auths` entries, per-registry
//! `credHelpers` and the default `credsStore` helper.
//!
//! Role: turn the `docker_config` auth setting into [`Credentials`] for one host, the
//! way `docker login` stored them (Docker Hub under `https://index.docker.io/v1/`).
//!
//! Must never: put a credential, token or helper output in an error message or a log;
//! run a helper through a shell.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::{Credentials, Error};
use crate::config::Secret;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Strip scheme and path from a docker config key (`https://index.docker.io/v1/`).
fn normalize_key(key: &str) -> &str {
    let k = key.split_once("://").map_or(key, |(_, rest)| rest);
    k.split('/').next().unwrap_or(k)
}

/// A docker config key names `host`: the same host, or both are Docker Hub (`docker login`
/// stores Hub credentials under `https://index.docker.io/v1/`).
fn same_registry(key: &str, host: &str) -> bool {
    key == host || (is_hub(key) && is_hub(host))
}

fn is_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

pub(super) async fn from_docker_config(host: &str, path: &Path) -> Result<Credentials, Error> {
    let cred_err = |detail: String| Error::Credentials {
        host: host.into(),
        detail,
    };
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::Anonymous),
        Err(e) => return Err(cred_err(format!("reading {}: {e}", path.display()))),
    };
    let file: DockerConfigFile = serde_json::from_str(&text).map_err(|e| {
        cred_err(format!(
            "{} is not a docker config file: line {}",
            path.display(),
            e.line()
        ))
    })?;
    if let Some(helper) = file
        .cred_helpers
        .iter()
        .find(|(k, _)| same_registry(normalize_key(k), host))
        .map(|(_, v)| v)
    {
        return run_helper(host, helper).await;
    }
    if let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| same_registry(normalize_key(k), host))
        .map(|(_, v)| v)
    {
        return entry_credentials(host, entry);
    }
    match file.creds_store.as_deref() {
        Some(store) if !store.is_empty() => run_helper(host, store).await,
        _ => Ok(Credentials::Anonymous),
    }
}

fn entry_credentials(host: &str, e: &DockerAuthEntry) -> Result<Credentials, Error> {
    if let Some(t) = e.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::RegistryToken(Secret::new(t)));
    }
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken(Secret::new(t)));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Credentials::Basic {
            username: u.clone(),
            password: Secret::new(p.as_str()),
        });
    }
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = B64.decode(a.trim()).map_err(|_| Error::Credentials {
            host: host.into(),
            detail: "the `auth` field is not base64".into(),
        })?;
        let text = String::from_utf8(decoded).map_err(|_| Error::Credentials {
            host: host.into(),
            detail: "the `auth` field is not UTF-8".into(),
        })?;
        let (u, p) = text.split_once(':').ok_or_else(|| Error::Credentials {
            host: host.into(),
            detail: "the `auth` field is not user:password".into(),
        })?;
        return Ok(Credentials::Basic {
            username: u.into(),
            password: Secret::new(p),
        });
    }
    Ok(Credentials::Anonymous)
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Run `docker-credential-<name> get` with the host on stdin.
async fn run_helper(host: &str, name: &str) -> Result<Credentials, Error> {
    use tokio::io::AsyncWriteExt;
    let cred_err = |detail: String| Error::Credentials {
        host: host.into(),
        detail,
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(cred_err(format!("credential helper name {name:?} is not a plain name")));
    }
    let program = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| cred_err(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            // Helpers store Docker Hub under the server URL `docker login` uses.
            .write_all(
                if is_hub(host) {
                    "https://index.docker.io/v1/"
                } else {
                    host
                }
                .as_bytes(),
            )
            .await
            .map_err(|e| cred_err(format!("writing to {program}: {e}")))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| cred_err(format!("{program} did not answer within 30 s")))?
        .map_err(|e| cred_err(format!("{program}: {e}")))?;
    if !out.status.success() {
        // "credentials not found" is a normal answer: go anonymous.
        return Ok(Credentials::Anonymous);
    }
    let parsed: HelperOutput = serde_json::from_slice(&out.stdout)
        .map_err(|_| cred_err(format!("{program} printed something that is not credentials JSON")))?;
    if parsed.username == "<token>" {
        Ok(Credentials::IdentityToken(Secret::new(parsed.secret)))
    } else if parsed.username.is_empty() && parsed.secret.is_empty() {
        Ok(Credentials::Anonymous)
    } else {
        Ok(Credentials::Basic {
            username: parsed.username,
            password: Secret::new(parsed.secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries() {
        let auth = B64.encode("user:pa:ss");
        let file: DockerConfigFile = serde_json::from_str(&format!(
            r#"{{"auths":{{"https://reg.example/v1/":{{"auth":"{auth}"}},"acr.example":{{"auth":"x","identitytoken":"rt"}}}}}}"#
        ))
        .unwrap();
        let (k, e) = file
            .auths
            .iter()
            .find(|(k, _)| normalize_key(k) == "reg.example")
            .unwrap();
        assert_eq!(normalize_key(k), "reg.example");
        match entry_credentials("reg.example", e).unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "user");
                assert_eq!(password.expose(), "pa:ss");
            }
            other => panic!("{other:?}"),
        }
        let e = &file.auths["acr.example"];
        assert!(matches!(
            entry_credentials("acr.example", e).unwrap(),
            Credentials::IdentityToken(_)
        ));
    }

    #[tokio::test]
    async fn missing_docker_config_means_anonymous_and_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = from_docker_config("h", &dir.path().join("nope.json")).await.unwrap();
        assert_eq!(c, Credentials::Anonymous);
        let p = dir.path().join("config.json");
        std::fs::write(&p, r#"{"auths": {"h": {"auth": "c2VjcmV0LXZhbHVl"}}}"#).unwrap();
        let err = from_docker_config("h", &p).await.unwrap_err().to_string();
        assert!(err.contains("user:password"), "{err}");
        assert!(!err.contains("secret-value"), "{err}");
        std::fs::write(&p, "{not json").unwrap();
        assert!(from_docker_config("h", &p).await.is_err());
    }

    #[tokio::test]
    async fn docker_hub_credentials_are_found_under_the_index_server_url_issue_14() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = B64.encode("hubuser:hubpass");
        std::fs::write(
            &p,
            format!(r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        match from_docker_config("docker.io", &p).await.unwrap() {
            Credentials::Basic { username, .. } => assert_eq!(username, "hubuser"),
            other => panic!("expected basic credentials, got {other:?}"),
        }
        assert!(matches!(
            from_docker_config("quay.io", &p).await.unwrap(),
            Credentials::Anonymous
        ));
    }
}
