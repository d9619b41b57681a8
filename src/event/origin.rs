//! [`Origin`]: where events come from when their payload names no registry host
//! (`[source.origin]` in the configuration file).
//!
//! Artifactory's webhooks carry a repository key (`docker-local`) and an image name, never
//! a host; a bridge's CloudEvent may name only `team/app`. Such a payload is placed by the
//! configured registry and repository templates, or refused: regrelay never takes the
//! first path segment for a host unless it looks like one (Docker's rule: it contains a
//! `.` or a `:`, or is `localhost`).
//!
//! Must never: invent a host. The host produced is still checked against the configured
//! registries by the pipeline before anything is contacted.

use super::{DecodeError, check_reference, invalid};

/// How to place an event whose payload names no registry host: a registry template and
/// a repository template over the payload's [`Origin::VARIABLES`]. The default places
/// nothing (such payloads are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    registry: Option<String>,
    repository: String,
}

impl Default for Origin {
    fn default() -> Origin {
        Origin::none()
    }
}

impl Origin {
    /// Placeholders the templates may use: `{repository}` (the repository path the
    /// payload names; for Artifactory its `image_name`), `{repo_key}` (Artifactory's
    /// repository key) and `{image_name}` (Artifactory's image name).
    pub const VARIABLES: [&'static str; 3] = ["repository", "repo_key", "image_name"];

    /// The default repository template.
    pub const DEFAULT_REPOSITORY: &'static str = "{repository}";

    /// No origin: payloads without a host are refused.
    pub fn none() -> Origin {
        Origin {
            registry: None,
            repository: Origin::DEFAULT_REPOSITORY.into(),
        }
    }

    /// Events without a host come from `registry` (a host, or a template such as
    /// `{repo_key}.acme.jfrog.io`), in the repository `repository` expands to (e.g.
    /// `{repo_key}/{image_name}`). The loader has checked both templates.
    pub fn new(registry: impl Into<String>, repository: impl Into<String>) -> Origin {
        Origin {
            registry: Some(registry.into()),
            repository: repository.into(),
        }
    }

    /// Place a host-less payload: the registry host and repository its variables expand
    /// to, checked to form a valid reference.
    pub(super) fn place(&self, what: &'static str, vars: &Vars<'_>) -> Result<(String, String), DecodeError> {
        let Some(registry) = &self.registry else {
            return Err(DecodeError::NoHost(what));
        };
        let registry = expand(registry, vars)?;
        let repository = expand(&self.repository, vars)?;
        check_reference("[source.origin]", &registry, &repository, None)?;
        Ok((registry, repository))
    }
}

/// What a host-less payload says about where its image lives.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Vars<'a> {
    /// The repository path the payload names.
    pub repository: &'a str,
    /// Artifactory's repository key.
    pub repo_key: Option<&'a str>,
    /// Artifactory's image name.
    pub image_name: Option<&'a str>,
}

/// Replace each `{var}` of `template` in one pass (values are never re-expanded). A
/// variable the payload does not carry is an error naming it.
fn expand(template: &str, vars: &Vars<'_>) -> Result<String, DecodeError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(invalid("[source.origin]", format!("unclosed brace in {template:?}")));
        };
        let value = match &after[..close] {
            "repository" => Some(vars.repository),
            "repo_key" => vars.repo_key,
            "image_name" => vars.image_name,
            other => {
                return Err(invalid(
                    "[source.origin]",
                    format!("unknown placeholder {{{other}}} in {template:?}"),
                ));
            }
        };
        let Some(value) = value else {
            return Err(invalid(
                "[source.origin]",
                format!(
                    "{template:?} uses {{{}}}, which this payload does not carry",
                    &after[..close]
                ),
            ));
        };
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Split `HOST/REST` when the first segment is a registry host by Docker's rule (it
/// contains `.` or `:`, or is `localhost`); `None` when the text names no host.
pub(super) fn split_host(text: &str) -> Option<(&str, &str)> {
    let (first, rest) = text.split_once('/')?;
    let is_host = first.contains(['.', ':']) || first == "localhost";
    is_host.then_some((first, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(repository: &'a str, repo_key: Option<&'a str>) -> Vars<'a> {
        Vars {
            repository,
            repo_key,
            image_name: repo_key.map(|_| repository),
        }
    }

    #[test]
    fn templates_place_repository_path_and_subdomain_forms() {
        let path = Origin::new("acme.jfrog.io", "{repo_key}/{image_name}");
        assert_eq!(
            path.place("x", &vars("team/app", Some("docker-local"))).unwrap(),
            ("acme.jfrog.io".into(), "docker-local/team/app".into())
        );
        let sub = Origin::new("{repo_key}.acme.jfrog.io", Origin::DEFAULT_REPOSITORY);
        assert_eq!(
            sub.place("x", &vars("team/app", Some("docker-local"))).unwrap(),
            ("docker-local.acme.jfrog.io".into(), "team/app".into())
        );
    }

    #[test]
    fn no_origin_missing_variables_and_invalid_results_are_refused() {
        let e = Origin::none().place("the event", &vars("team/app", None)).unwrap_err();
        assert_eq!(e, DecodeError::NoHost("the event"));
        assert!(e.to_string().contains("[source.origin]"), "{e}");
        let e = Origin::new("r.example", "{repo_key}/{repository}")
            .place("x", &vars("team/app", None))
            .unwrap_err();
        assert!(e.to_string().contains("{repo_key}"), "{e}");
        // A hostile repo key cannot escape into another path or host.
        for key in ["../etc", "a/b", "x/.."] {
            let o = Origin::new("{repo_key}.r.example", "{repository}");
            assert!(o.place("x", &vars("app", Some(key))).is_err(), "{key}");
        }
        for key in ["../x", "UPPER", "a//b"] {
            let o = Origin::new("r.example", "{repo_key}/{repository}");
            assert!(o.place("x", &vars("app", Some(key))).is_err(), "{key}");
        }
    }

    #[test]
    fn docker_host_rule() {
        assert_eq!(split_host("r.example/team/app"), Some(("r.example", "team/app")));
        assert_eq!(split_host("localhost:5000/app"), Some(("localhost:5000", "app")));
        assert_eq!(split_host("localhost/app"), Some(("localhost", "app")));
        assert_eq!(split_host("team/app"), None);
        assert_eq!(split_host("app"), None);
    }
}
