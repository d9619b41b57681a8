//! Rules: which copies or deletions one registry event asks for, and the rule model
//! itself (patterns and templates, in `model`).
//!
//! Role: given the configured [`Rule`]s and a decoded [`Event`], produce a [`Plan`]: either
//! the list of [`Route`]s (target registry, repository, tag) to act on, or the reason the
//! event asks for nothing, for an info log. The pipeline executes the routes.
//!
//! Must never: perform I/O, panic, or return a route whose repository or tag is not a
//! valid OCI name (a template that expands to one drops that route, with the reason).
//!
//! Invariants: a route's target registry is one the rule names (the loader has checked it
//! is configured); routes are deduplicated by destination, so one event never copies the
//! same image to the same place twice (the first rule in file order names the route);
//! [`Plan::Work`] is never empty.

use crate::event::{Action, Event};
use crate::oci::{Locator, Reference, valid_tag};

mod model;

pub use model::{Matcher, Rule, RuleTarget, Untagged, check_placeholders, example_mapping};

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do; the reason is meant for an info log.
    Ignore(String),
    /// At least one route to act on, in rule and target order.
    Work(Vec<Route>),
}

/// One thing to do at one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name of the rule that produced it (for logs).
    pub rule: String,
    /// Copy or delete.
    pub kind: RouteKind,
    /// Target registry host.
    pub target_registry: String,
    /// Target repository (template applied, valid).
    pub target_repository: String,
    /// Target tag (template applied, valid); `None` = by digest only.
    pub target_tag: Option<String>,
    /// The rule's own `delete_dry_run`; `None` = the pipeline's.
    pub delete_dry_run: Option<bool>,
    /// The rule's `require`: gates the target digest must pass before a tag is written.
    pub require: Vec<String>,
}

/// What to do at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Copy the event's image (by tag, or by digest when `target_tag` is `None`).
    Push,
    /// Delete the tag, or the manifest when `target_tag` is `None`.
    Delete,
}

/// What `event` asks of the rules. The caller has already checked event.registry is configured.
pub fn plan(rules: &[Rule], event: &Event) -> Plan {
    let on_registry: Vec<&Rule> = rules.iter().filter(|r| r.source_registry == event.registry).collect();
    if on_registry.is_empty() {
        return Plan::Ignore(format!("no rule for registry {}", event.registry));
    }
    let matching: Vec<&Rule> = on_registry
        .into_iter()
        .filter(|r| r.repository.is_match(&event.repository))
        .collect();
    if matching.is_empty() {
        return Plan::Ignore(format!(
            "repository {} matches no rule for registry {}",
            event.repository, event.registry
        ));
    }
    let mut routes: Vec<Route> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for rule in matching {
        match rule_routes(rule, event) {
            Ok(found) => {
                for (route, dropped) in found {
                    match route {
                        Some(route) if !routes.iter().any(|r| same_destination(r, &route)) => routes.push(route),
                        Some(_) => {}
                        None => reasons.extend(dropped),
                    }
                }
            }
            Err(reason) => reasons.push(reason),
        }
    }
    if routes.is_empty() {
        Plan::Ignore(reasons.join("; "))
    } else {
        Plan::Work(routes)
    }
}

impl Route {
    /// The target reference `route` writes or deletes for `event`: `registry/repository:tag`,
    /// or `@digest` for digest-only work.
    pub fn target_reference(&self, event: &Event) -> String {
        let repo = format!("{}/{}", self.target_registry, self.target_repository);
        match (&self.target_tag, &event.digest) {
            (Some(t), _) => format!("{repo}:{t}"),
            (None, Some(d)) => format!("{repo}@{d}"),
            (None, None) => repo,
        }
    }

    /// What carrying out this route for `event` does, in one line (for `regrelay explain`
    /// and `regrelay run --dry-run`); `default_delete_dry_run` is `[pipeline]
    /// delete_dry_run`, which the rule's own setting overrides.
    pub fn describe(&self, event: &Event, default_delete_dry_run: bool) -> String {
        let source = format!("{}/{}", event.registry, event.repository);
        let target = self.target_reference(event);
        match self.kind {
            RouteKind::Push => {
                let gates = if self.require.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; gates {} must pass on the target digest before a tag is written",
                        self.require.join(", ")
                    )
                };
                match (&event.tag, &self.target_tag, &event.digest) {
                    (Some(tag), Some(_), _) => format!(
                        "copy {source}:{tag} to {target} (the source tag is resolved again when the message is handled){gates}"
                    ),
                    (_, _, Some(d)) => format!("copy {source}@{d} to {target} by digest{gates}"),
                    _ => "nothing: the event names neither a tag nor a digest (rejected)".into(),
                }
            }
            RouteKind::Delete => {
                let dry = if self.delete_dry_run.unwrap_or(default_delete_dry_run) {
                    " (dry run: only logged)"
                } else {
                    ""
                };
                match (event.action, &event.tag, &event.digest) {
                    (Action::DeleteTag, Some(tag), _) => {
                        format!("delete tag {target}, unless {source}:{tag} exists again at the source{dry}")
                    }
                    (Action::DeleteManifest, _, Some(d)) => format!(
                        "delete manifest {target} if it is still {d}, unless {source}@{d} exists again at the source{dry}"
                    ),
                    _ => "nothing: the delete event lacks the tag or digest it needs (rejected)".into(),
                }
            }
        }
    }
}

fn same_destination(a: &Route, b: &Route) -> bool {
    a.kind == b.kind
        && a.target_registry == b.target_registry
        && a.target_repository == b.target_repository
        && a.target_tag == b.target_tag
}

/// One route attempt per target: `(Some(route), None)`, or `(None, Some(why dropped))`.
type Attempt = (Option<Route>, Option<String>);

/// The routes `rule` contributes, or why it contributes none.
fn rule_routes(rule: &Rule, event: &Event) -> Result<Vec<Attempt>, String> {
    let name = &rule.name;
    let (kind, tag) = match event.action {
        Action::Push => {
            if !rule.on_push {
                return Err(format!("push replication is off for rule {name}"));
            }
            match (&event.tag, rule.untagged) {
                (Some(tag), _) => (RouteKind::Push, Some(tag.as_str())),
                (None, Untagged::Replicate) => (RouteKind::Push, None),
                (None, Untagged::Ignore) => {
                    return Err(format!("digest-only push ignored by rule {name} (untagged = ignore)"));
                }
            }
        }
        Action::DeleteTag | Action::DeleteManifest if !rule.on_delete => {
            return Err(format!("delete propagation is off for rule {name}"));
        }
        Action::DeleteTag => match &event.tag {
            Some(tag) => (RouteKind::Delete, Some(tag.as_str())),
            None => return Err(format!("tag deletion without a tag; nothing to do for rule {name}")),
        },
        Action::DeleteManifest => (RouteKind::Delete, None),
    };
    if let Some(tag) = tag {
        tag_passes(rule, tag)?;
    }
    Ok(rule
        .targets
        .iter()
        .map(|t| match route(rule, t, kind, event, tag) {
            Ok(r) => (Some(r), None),
            Err(why) => (None, Some(why)),
        })
        .collect())
}

/// Include filters (any of; none = every tag), then exclude filters; the reason when
/// `tag` does not pass. Shared with `sync`, so both front ends filter tags alike.
pub fn tag_passes(rule: &Rule, tag: &str) -> Result<(), String> {
    let name = &rule.name;
    if !rule.tags_include.is_empty() && !rule.tags_include.iter().any(|m| m.is_match(tag)) {
        return Err(format!(
            "tag {tag} is not included by rule {name} (tags: {})",
            patterns(&rule.tags_include)
        ));
    }
    if let Some(m) = rule.tags_exclude.iter().find(|m| m.is_match(tag)) {
        return Err(format!("tag {tag} excluded by rule {name} (pattern {:?})", m.as_str()));
    }
    if !rule.require.is_empty() && crate::oci::is_cosign_tag(tag) {
        return Err(format!(
            "tag {tag} is a cosign signature, attestation or SBOM tag: rule {name} requires gates, \
             so it travels with the image it belongs to and is not gated as an image of its own"
        ));
    }
    Ok(())
}

fn patterns(list: &[Matcher]) -> String {
    list.iter()
        .map(|m| format!("{:?}", m.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Apply `target`'s templates; an invalid result drops the route, with the reason.
fn route(rule: &Rule, target: &RuleTarget, kind: RouteKind, event: &Event, tag: Option<&str>) -> Result<Route, String> {
    if !target.strips(&event.repository) {
        return Err(format!(
            "rule {} target {}: repository {} does not start with strip_prefix {:?}; route dropped",
            rule.name,
            target.registry,
            event.repository,
            target.strip_prefix.as_deref().unwrap_or_default()
        ));
    }
    let repository = target.expand_repository(&event.registry, &event.repository);
    let target_tag = tag.map(|t| target.expand_tag(t));
    let dropped = |what: &str| {
        format!(
            "rule {} maps {}/{} to an invalid {what} for target {}; route dropped",
            rule.name, event.registry, event.repository, target.registry
        )
    };
    if let Some(t) = target_tag.as_deref().filter(|t| !valid_tag(t)) {
        let template = target.tag.as_deref().unwrap_or("{tag}");
        return Err(dropped(&format!("tag {t:?} (template {template:?})")));
    }
    // Reference::new checks the repository grammar and length (and the host).
    let locator = Locator::Tag("latest".into());
    if Reference::new(&target.registry, &repository, locator).is_err() {
        return Err(dropped(&format!(
            "repository {repository:?} (template {:?})",
            target.repository
        )));
    }
    Ok(Route {
        rule: rule.name.clone(),
        kind,
        target_registry: target.registry.clone(),
        target_repository: repository,
        target_tag,
        delete_dry_run: rule.delete_dry_run,
        require: rule.require.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn glob(p: &str) -> Matcher {
        Matcher::try_glob(p).unwrap()
    }

    fn target(registry: &str, repository: &str, tag: Option<&str>) -> RuleTarget {
        RuleTarget {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            strip_prefix: None,
        }
    }

    fn rule(name: &str, repository: &str, targets: Vec<RuleTarget>) -> Rule {
        Rule::for_tests(name, "src.example", glob(repository), targets)
    }

    fn mirror(name: &str, repository: &str) -> Rule {
        rule(
            name,
            repository,
            vec![target("dst.example", "mirror/{repository}", None)],
        )
    }

    fn event(action: Action, repository: &str, tag: Option<&str>) -> Event {
        Event {
            action,
            registry: "src.example".into(),
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            digest: Some(Digest::sha256_of(b"x")),
            media_type: None,
            event_id: None,
        }
    }

    fn push(repository: &str, tag: &str) -> Event {
        event(Action::Push, repository, Some(tag))
    }

    fn work(p: Plan) -> Vec<Route> {
        match p {
            Plan::Work(r) => r,
            Plan::Ignore(why) => panic!("expected work, got ignore: {why}"),
        }
    }

    fn ignored(p: Plan) -> String {
        match p {
            Plan::Ignore(why) => why,
            Plan::Work(r) => panic!("expected ignore, got {r:?}"),
        }
    }

    #[test]
    fn tagged_push_routes_to_the_expanded_target() {
        let routes = work(plan(&[mirror("r", "team/**")], &push("team/a/app", "v1")));
        assert_eq!(
            routes,
            vec![Route {
                rule: "r".into(),
                kind: RouteKind::Push,
                target_registry: "dst.example".into(),
                target_repository: "mirror/team/a/app".into(),
                target_tag: Some("v1".into()),
                delete_dry_run: None,
                require: Vec::new(),
            }]
        );
    }

    #[test]
    fn other_registry_or_repository_is_ignored_with_a_reason() {
        let rules = [mirror("r", "team/*")];
        let mut e = push("team/app", "v1");
        e.registry = "elsewhere.example".into();
        assert_eq!(ignored(plan(&rules, &e)), "no rule for registry elsewhere.example");
        let why = ignored(plan(&rules, &push("team/a/app", "v1")));
        assert!(why.contains("repository team/a/app matches no rule"), "{why}");
        assert_eq!(ignored(plan(&[], &push("a", "v1"))), "no rule for registry src.example");
    }

    #[test]
    fn a_gated_rule_leaves_cosign_artifact_tags_to_the_image_they_belong_to() {
        let sig = format!("sha256-{}.sig", "ab".repeat(32));
        let att = format!("sha256-{}.att", "0f".repeat(32));
        let mut r = mirror("gated", "**");
        // Without gates a signature tag is an ordinary tag.
        assert_eq!(work(plan(std::slice::from_ref(&r), &push("app", &sig))).len(), 1);
        r.require = vec!["signed".into()];
        for tag in [&sig, &att] {
            let why = ignored(plan(std::slice::from_ref(&r), &push("app", tag)));
            assert!(why.contains("cosign signature, attestation or SBOM tag"), "{why}");
            assert!(tag_passes(&r, tag).is_err());
        }
        // Only the exact convention: other tags still go through the gates.
        for tag in [
            "v1",
            "sha256-abc.sig",
            &format!("sha256-{}.sig", "AB".repeat(32)),
            &format!("sha256-{}.txt", "ab".repeat(32)),
        ] {
            assert!(tag_passes(&r, tag).is_ok(), "{tag}");
        }
    }

    #[test]
    fn tag_filters_include_then_exclude() {
        let mut r = mirror("app", "**");
        r.tags_include = vec![glob("v*"), Matcher::try_regex("latest|stable").unwrap()];
        r.tags_exclude = vec![glob("*-dev")];
        let rules = [r];
        assert_eq!(work(plan(&rules, &push("a", "v1"))).len(), 1);
        assert_eq!(work(plan(&rules, &push("a", "stable"))).len(), 1);
        assert_eq!(
            ignored(plan(&rules, &push("a", "v1-dev"))),
            "tag v1-dev excluded by rule app (pattern \"*-dev\")"
        );
        let why = ignored(plan(&rules, &push("a", "nightly")));
        assert!(why.contains("tag nightly is not included by rule app"), "{why}");
    }

    #[test]
    fn tag_template_rewrites_the_tag() {
        let r = rule("r", "**", vec![target("dst.example", "{name}", Some("{tag}-mirror"))]);
        let routes = work(plan(&[r], &push("team/app", "v1")));
        assert_eq!(routes[0].target_repository, "app");
        assert_eq!(routes[0].target_tag.as_deref(), Some("v1-mirror"));
    }

    #[test]
    fn digest_only_push_follows_untagged() {
        let e = event(Action::Push, "a", None);
        let mut r = mirror("r", "**");
        assert_eq!(
            ignored(plan(std::slice::from_ref(&r), &e)),
            "digest-only push ignored by rule r (untagged = ignore)"
        );
        r.untagged = Untagged::Replicate;
        let routes = work(plan(&[r], &e));
        assert_eq!(
            (routes[0].kind, routes[0].target_tag.as_deref()),
            (RouteKind::Push, None)
        );
    }

    #[test]
    fn push_off_is_ignored() {
        let mut r = mirror("r", "**");
        r.on_push = false;
        r.on_delete = true;
        assert_eq!(
            ignored(plan(&[r], &push("a", "v1"))),
            "push replication is off for rule r"
        );
    }

    #[test]
    fn deletes_need_on_delete_and_map_tags() {
        let mut r = rule(
            "r",
            "**",
            vec![target("dst.example", "m/{repository}", Some("{tag}-x"))],
        );
        let del_tag = event(Action::DeleteTag, "a", Some("v1"));
        let del_manifest = event(Action::DeleteManifest, "a", None);
        let rules = [r.clone()];
        assert_eq!(ignored(plan(&rules, &del_tag)), "delete propagation is off for rule r");
        assert_eq!(
            ignored(plan(&rules, &del_manifest)),
            "delete propagation is off for rule r"
        );
        r.on_delete = true;
        r.tags_exclude = vec![glob("keep-*")];
        let rules = [r];
        let routes = work(plan(&rules, &del_tag));
        assert_eq!(routes[0].kind, RouteKind::Delete);
        assert_eq!(routes[0].target_repository, "m/a");
        assert_eq!(routes[0].target_tag.as_deref(), Some("v1-x"));
        let routes = work(plan(&rules, &del_manifest));
        assert_eq!(
            (routes[0].kind, routes[0].target_tag.as_deref()),
            (RouteKind::Delete, None)
        );
        let why = ignored(plan(&rules, &event(Action::DeleteTag, "a", Some("keep-1"))));
        assert!(why.contains("excluded"), "{why}");
        // A manifest delete with a tag in the event still deletes by digest.
        let routes = work(plan(&rules, &event(Action::DeleteManifest, "a", Some("keep-1"))));
        assert_eq!(routes[0].target_tag, None);
    }

    #[test]
    fn strip_prefix_maps_or_drops_the_route_with_the_reason_15() {
        let mut t = target("dst.example", "acr/{repository}", None);
        t.strip_prefix = Some("my-project/docker/".into());
        let rules = [rule("ar", "**", vec![t])];
        let routes = work(plan(&rules, &push("my-project/docker/team/app", "v1")));
        assert_eq!(routes[0].target_repository, "acr/team/app");
        let why = ignored(plan(&rules, &push("other/docker/app", "v1")));
        assert_eq!(
            why,
            "rule ar target dst.example: repository other/docker/app does not start with strip_prefix \"my-project/docker/\"; route dropped"
        );
    }

    #[test]
    fn routes_describe_what_they_would_do_15() {
        let d = Digest::sha256_of(b"x");
        let mut r = rule(
            "r",
            "**",
            vec![target("dst.example", "m/{repository}", Some("{tag}-x"))],
        );
        r.on_delete = true;
        let rules = [r.clone()];
        let ev = push("team/app", "v1");
        let route = &work(plan(&rules, &ev))[0];
        assert_eq!(route.target_reference(&ev), "dst.example/m/team/app:v1-x");
        assert_eq!(
            route.describe(&ev, false),
            "copy src.example/team/app:v1 to dst.example/m/team/app:v1-x (the source tag is resolved again when the message is handled)"
        );
        let mut untagged = ev.clone();
        untagged.tag = None;
        r.untagged = Untagged::Replicate;
        let route = &work(plan(std::slice::from_ref(&r), &untagged))[0];
        assert_eq!(route.target_reference(&untagged), format!("dst.example/m/team/app@{d}"));
        assert!(route.describe(&untagged, false).ends_with("by digest"));
        let del = event(Action::DeleteTag, "team/app", Some("v1"));
        let route = &work(plan(&rules, &del))[0];
        let text = route.describe(&del, false);
        assert!(
            text.starts_with("delete tag dst.example/m/team/app:v1-x, unless src.example/team/app:v1 exists again"),
            "{text}"
        );
        assert!(!text.contains("dry run"));
        assert!(route.describe(&del, true).ends_with("(dry run: only logged)"));
        // The rule's own delete_dry_run overrides the pipeline's.
        r.delete_dry_run = Some(false);
        let route = &work(plan(std::slice::from_ref(&r), &del))[0];
        assert!(!route.describe(&del, true).contains("dry run"));
        let gone = event(Action::DeleteManifest, "team/app", None);
        let route = &work(plan(&rules, &gone))[0];
        assert!(route.describe(&gone, false).starts_with(&format!(
            "delete manifest dst.example/m/team/app@{d} if it is still {d}"
        )));
        // A gated rule says which gates stand between the copy and the tag; deletes are
        // not gated.
        r.require = vec!["signed".into(), "smoke".into()];
        let route = &work(plan(std::slice::from_ref(&r), &ev))[0];
        assert!(
            route
                .describe(&ev, false)
                .ends_with("; gates signed, smoke must pass on the target digest before a tag is written"),
            "{}",
            route.describe(&ev, false)
        );
        let route = &work(plan(std::slice::from_ref(&r), &del))[0];
        assert!(!route.describe(&del, false).contains("gates"));
    }

    #[test]
    fn several_rules_contribute_and_identical_routes_are_deduplicated() {
        let a = mirror("a", "team/**");
        let b = mirror("b", "**");
        let c = rule("c", "**", vec![target("other.example", "{repository}", None)]);
        let routes = work(plan(&[a, b, c], &push("team/app", "v1")));
        let names: Vec<_> = routes
            .iter()
            .map(|r| (r.rule.as_str(), r.target_registry.as_str()))
            .collect();
        assert_eq!(names, [("a", "dst.example"), ("c", "other.example")]);
        // Two targets of one rule that expand to the same place also collapse.
        let twice = rule(
            "t",
            "**",
            vec![
                target("dst.example", "{repository}", None),
                target("dst.example", "{repository}", Some("{tag}")),
            ],
        );
        assert_eq!(work(plan(&[twice], &push("x", "v1"))).len(), 1);
    }

    #[test]
    fn one_rule_ignoring_does_not_hide_another_rules_routes() {
        let mut strict = mirror("strict", "**");
        strict.tags_include = vec![glob("v*")];
        let all = rule("all", "**", vec![target("other.example", "{repository}", None)]);
        let routes = work(plan(&[strict, all], &push("a", "latest")));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].rule, "all");
    }

    #[test]
    fn invalid_expansions_drop_the_route_and_say_so() {
        // {registry} with a port cannot be part of a repository name.
        let bad_repo = rule("r", "**", vec![target("dst.example", "{registry}/{repository}", None)]);
        let mut e = push("a", "v1");
        e.registry = "src.example:5000".into();
        let mut bad_repo = bad_repo;
        bad_repo.source_registry = "src.example:5000".into();
        let why = ignored(plan(std::slice::from_ref(&bad_repo), &e));
        assert!(
            why.contains("invalid repository") && why.contains("route dropped"),
            "{why}"
        );
        // A tag suffix that makes a 128-character tag too long.
        let long = "v".repeat(128);
        let bad_tag = rule(
            "t",
            "**",
            vec![target("dst.example", "m/{repository}", Some("{tag}-x"))],
        );
        let why = ignored(plan(std::slice::from_ref(&bad_tag), &push("a", &long)));
        assert!(why.contains("invalid tag"), "{why}");
        // A repository that grows past 255 characters.
        let deep = format!("{}/app", "a".repeat(250));
        let why = ignored(plan(&[mirror("m", "**")], &push(&deep, "v1")));
        assert!(why.contains("invalid repository"), "{why}");
        // Other targets of the same rule still route.
        let mixed = rule(
            "mixed",
            "**",
            vec![
                target("dst.example", "{repository}", Some("{tag}-x")),
                target("dst.example", "m/{repository}", None),
            ],
        );
        let routes = work(plan(&[mixed], &push("a", &long)));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].target_tag.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn reasons_from_several_rules_are_joined() {
        let mut a = mirror("a", "**");
        a.tags_exclude = vec![glob("*")];
        let mut b = mirror("b", "**");
        b.on_push = false;
        let why = ignored(plan(&[a, b], &push("x", "v1")));
        assert_eq!(
            why,
            "tag v1 excluded by rule a (pattern \"*\"); push replication is off for rule b"
        );
    }

    #[test]
    fn hand_built_nonsense_never_panics() {
        let weird = rule(
            "w",
            "**",
            vec![
                target("dst.example", "{", None),
                target("dst.example", "}{unknown}", Some("{")),
                target("bad host/", "{repository}", None),
                target("dst.example", "", Some("")),
            ],
        );
        let mut r2 = weird.clone();
        r2.on_delete = true;
        r2.untagged = Untagged::Replicate;
        for action in [Action::Push, Action::DeleteTag, Action::DeleteManifest] {
            for tag in [None, Some(""), Some("ünï"), Some("v1")] {
                for repo in ["", "a", "A/B", "a//b"] {
                    let _ = plan(&[weird.clone(), r2.clone()], &event(action, repo, tag));
                }
            }
        }
    }
}
