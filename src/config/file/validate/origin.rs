//! `[source.origin]`: the registry and repository templates that place events whose
//! payload names no registry host.
//!
//! Must never: accept a registry that can never be a configured host (every event would
//! then be rejected), or a template that can never expand to a valid name.

use std::collections::HashSet;

use toml::Spanned;

use super::super::RawOrigin;
use super::{Result, configured, invalid};
use crate::config::OriginConfig;
use crate::oci::{valid_host, valid_repository};
use crate::rules::check_placeholders;

/// Placeholders of `registry`.
const REGISTRY_VARS: [&str; 1] = ["repo_key"];
/// Placeholders of `repository` (the event decoder's variables).
const REPOSITORY_VARS: [&str; 3] = ["repository", "repo_key", "image_name"];

/// Check `[source.origin]` against the configured `hosts`.
pub(super) fn origin(o: Spanned<RawOrigin>, hosts: &HashSet<&str>) -> Result<OriginConfig> {
    let o = o.into_inner();
    let field = |k: &str| format!("source.origin.{k}");
    let registry = &o.registry;
    check_placeholders(registry.get_ref(), &REGISTRY_VARS)
        .map_err(|e| super::Problem::new(registry.span(), field("registry"), e))?;
    let registry = if registry.get_ref().contains('{') {
        // A template: it must be able to give a valid host, and at least one configured
        // registry must be of its form (else every event would be refused).
        let sample = registry.get_ref().replace("{repo_key}", "a");
        if !valid_host(&sample) {
            return invalid(
                registry.span(),
                field("registry"),
                format!(
                    "{:?} never expands to a valid host (e.g. {sample:?})",
                    registry.get_ref()
                ),
            );
        }
        if !hosts.iter().any(|h| fits(registry.get_ref(), h)) {
            return invalid(
                registry.span(),
                field("registry"),
                format!(
                    "no configured registry has the form {:?}; add a [registries] table for each host it yields",
                    registry.get_ref()
                ),
            );
        }
        registry.get_ref().clone()
    } else {
        configured(registry, &field("registry"), hosts)?
    };
    let repository = match &o.repository {
        Some(r) => {
            check_placeholders(r.get_ref(), &REPOSITORY_VARS)
                .map_err(|e| super::Problem::new(r.span(), field("repository"), e))?;
            let sample = REPOSITORY_VARS
                .iter()
                .fold(r.get_ref().clone(), |t, v| t.replace(&format!("{{{v}}}"), "a"));
            if !valid_repository(&sample) {
                return invalid(
                    r.span(),
                    field("repository"),
                    format!(
                        "{:?} never expands to a valid repository name (e.g. {sample:?}); names are lowercase [a-z0-9] segments joined by '/', '.', '_', '__' or '-'",
                        r.get_ref()
                    ),
                );
            }
            r.get_ref().clone()
        }
        None => "{repository}".to_owned(),
    };
    Ok(OriginConfig { registry, repository })
}

/// Could `host` be what `template` (over `{repo_key}`) expands to?
fn fits(template: &str, host: &str) -> bool {
    let pattern = template
        .split("{repo_key}")
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join("[A-Za-z0-9._-]+");
    regex::Regex::new(&format!("^{pattern}$")).is_ok_and(|r| r.is_match(host))
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn templates_fit_the_hosts_of_their_form() {
        assert!(fits("{repo_key}.acme.jfrog.io", "docker-local.acme.jfrog.io"));
        assert!(!fits("{repo_key}.acme.jfrog.io", "acme.jfrog.io"));
        assert!(!fits("{repo_key}.acme.jfrog.io", "x.acme.jfrog.io.evil"));
        assert!(fits("acme-{repo_key}.example:8443", "acme-docker.example:8443"));
    }
}
