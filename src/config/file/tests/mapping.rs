//! Repository mapping (`strip_prefix` on a target), a rule's own `delete_dry_run`, and the
//! example mapping `check-config` prints for each target (issue 15).

use super::{BASE, FILE, expect, ok};
use crate::config::render;

fn with_target(extra: &str) -> String {
    BASE.replace(
        "registry = \"b.example\"",
        &format!("registry = \"b.example\"\n{extra}"),
    )
}

#[test]
fn strip_prefix_is_loaded_and_maps_artifact_registry_paths() {
    let c = ok(&with_target(
        "repository = \"mirror/{repository}\"\nstrip_prefix = \"my-project/docker/\"",
    ));
    let t = &c.rules[0].targets[0];
    assert_eq!(t.strip_prefix.as_deref(), Some("my-project/docker/"));
    assert_eq!(
        t.expand_repository("a.example", "my-project/docker/team/app"),
        "mirror/team/app"
    );
    let shown = render(&c);
    assert!(shown.contains("strip_prefix = \"my-project/docker/\""), "{shown}");
    // The rendered configuration loads again to the same mapping.
    let again = ok(&shown);
    assert_eq!(again.rules[0].targets[0].strip_prefix, t.strip_prefix);
}

#[test]
fn strip_prefix_is_validated() {
    expect(
        &with_target("strip_prefix = \"my-project/docker\""),
        "strip_prefix",
        "rules[0].targets[0].strip_prefix",
        "must end with '/'",
    );
    expect(
        &with_target("strip_prefix = \"My-Project/\""),
        "strip_prefix",
        "rules[0].targets[0].strip_prefix",
        "is not a repository path",
    );
    expect(
        &with_target("strip_prefix = \"/\""),
        "strip_prefix",
        "rules[0].targets[0].strip_prefix",
        "is not a repository path",
    );
    let e = expect(
        &with_target("strip_prefix = \"\""),
        "strip_prefix",
        "rules[0].targets[0].strip_prefix",
        "must end with '/'",
    );
    assert!(e.to_string().starts_with(FILE));
}

#[test]
fn strip_prefix_on_the_source_registry_is_not_a_loop() {
    let text = BASE.replace(
        "registry = \"b.example\"",
        "registry = \"a.example\"\nstrip_prefix = \"staging/\"",
    );
    ok(&text);
}

#[test]
fn a_rule_may_set_its_own_delete_dry_run() {
    let c = ok(&BASE.replace(
        "repository = \"**\"",
        "repository = \"**\"\nactions = [\"push\", \"delete\"]\ndelete_dry_run = false",
    ));
    assert_eq!(c.rules[0].delete_dry_run, Some(false));
    assert!(render(&c).contains("delete_dry_run = false"));
    assert_eq!(ok(BASE).rules[0].delete_dry_run, None);
}

#[test]
fn check_config_shows_an_example_mapping_per_target() {
    let c = ok(&with_target("repository = \"eu/{repository}\"\ntag = \"{tag}-dr\""));
    let shown = render(&c);
    assert!(
        shown.contains("# example: a.example/team/app:1.0 -> b.example/eu/team/app:1.0-dr"),
        "{shown}"
    );
    let c = ok(
        &with_target("repository = \"mirror/{repository}\"\nstrip_prefix = \"p/docker/\"")
            .replace("repository = \"**\"", "repository = \"p/docker/**\""),
    );
    let shown = render(&c);
    assert!(
        shown.contains("# example: a.example/p/docker/team/app:1.0 -> b.example/mirror/team/app:1.0"),
        "{shown}"
    );
}
