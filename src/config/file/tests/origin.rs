//! `[source.origin]` (issue 10): the registry and repository templates of events that
//! name no registry host; errors with line and field; rendering.

use super::{BASE, expect, ok, render};
use crate::config::OriginConfig;

/// BASE with `[source.origin]` holding `body`, plus registry `acme.jfrog.io`.
fn with_origin(body: &str) -> String {
    BASE.replace(
        "[registries.\"a.example\"]",
        &format!("[source.origin]\n{body}\n\n[registries.\"a.example\"]\n[registries.\"acme.jfrog.io\"]\n[registries.\"docker-local.acme.jfrog.io\"]"),
    )
}

#[test]
fn absent_by_default_and_repository_defaults_to_the_payload_path() {
    assert_eq!(ok(BASE).origin, None);
    let c = ok(&with_origin("registry = \"acme.jfrog.io\""));
    assert_eq!(
        c.origin,
        Some(OriginConfig {
            registry: "acme.jfrog.io".into(),
            repository: "{repository}".into(),
        })
    );
    let c = ok(&with_origin(
        "registry = \"acme.jfrog.io\"\nrepository = \"{repo_key}/{image_name}\"",
    ));
    assert_eq!(c.origin.unwrap().repository, "{repo_key}/{image_name}");
    let c = ok(&with_origin("registry = \"{repo_key}.acme.jfrog.io\""));
    assert_eq!(c.origin.unwrap().registry, "{repo_key}.acme.jfrog.io");
}

#[test]
fn errors_name_file_line_and_field() {
    expect(
        &with_origin("registry = \"other.example\""),
        "registry = \"other.example\"",
        "source.origin.registry",
        "not a configured registry",
    );
    expect(
        &with_origin("registry = \"{repo_key}.nowhere.example\""),
        "registry = \"{repo_key}",
        "source.origin.registry",
        "no configured registry has the form",
    );
    expect(
        &with_origin("registry = \"{image_name}.acme.jfrog.io\""),
        "registry = \"{image_name}",
        "source.origin.registry",
        "{image_name}",
    );
    expect(
        &with_origin("registry = \"{repo_key}/x\""),
        "registry = \"{repo_key}/x\"",
        "source.origin.registry",
        "never expands to a valid host",
    );
    expect(
        &with_origin("registry = \"acme.jfrog.io\"\nrepository = \"{tag}/{repository}\""),
        "repository = \"{tag}",
        "source.origin.repository",
        "{tag}",
    );
    expect(
        &with_origin("registry = \"acme.jfrog.io\"\nrepository = \"Mirror/{repository}\""),
        "repository = \"Mirror",
        "source.origin.repository",
        "never expands to a valid repository name",
    );
    expect(
        &with_origin("registry = \"acme.jfrog.io\"\nhost = \"x\""),
        "host = \"x\"",
        "source.origin.host",
        "unknown field",
    );
    expect(
        &with_origin("repository = \"{repository}\""),
        "[source.origin]",
        "source.origin",
        "registry",
    );
}

#[test]
fn check_config_renders_the_origin_and_the_rendering_reloads() {
    let text = with_origin("registry = \"acme.jfrog.io\"\nrepository = \"{repo_key}/{image_name}\"");
    let out = render(&ok(&text));
    assert!(
        out.contains("[source.origin]\nregistry = \"acme.jfrog.io\"\nrepository = \"{repo_key}/{image_name}\"\n"),
        "{out}"
    );
    assert_eq!(ok(&out).origin, ok(&text).origin);
    assert_eq!(render(&ok(&out)), out);
    assert!(!render(&ok(BASE)).contains("origin"));
}
