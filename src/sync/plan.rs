//! The sync planner: pure decisions, no I/O. Which source repositories a rule visits,
//! which tags it wants, where each goes, whether a target tag has drifted, which target
//! tags a prune may remove, and the executor [`Item`] that repairs each [`Drift`].
//!
//! Must never: do I/O, or decide anything replication policy owns (how to copy, verify,
//! lock or guard a delete): a drift becomes an [`Item`] and the executor does the rest.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Matcher, Rule, RuleTarget, TagDeleteFallback};
use crate::engine::{Hint, Item, Repo};
use crate::oci::{Digest, Locator, Reference, valid_tag};

/// Where a rule's source repositories come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repositories {
    /// These names: the rule's `repositories` list, or its literal pattern.
    Named(Vec<String>),
    /// The source registry's `_catalog`, filtered by the rule's pattern.
    Catalog,
}

/// The repositories `rule` visits: its `repositories` list when given, the pattern itself
/// when it is a glob without wildcards, else the catalog.
pub fn repositories(rule: &Rule) -> Repositories {
    if !rule.repositories.is_empty() {
        return Repositories::Named(rule.repositories.clone());
    }
    match &rule.repository {
        Matcher::Glob(_, p) if !p.contains(['*', '?', '[', '{', '\\']) => Repositories::Named(vec![p.clone()]),
        _ => Repositories::Catalog,
    }
}

/// Does `rule` want `tag` (its include and exclude patterns, exactly as for events)?
pub fn wants(rule: &Rule, tag: &str) -> bool {
    crate::rules::tag_passes(rule, tag).is_ok()
}

/// The target repository of `repository` under `target`, when the template gives a valid
/// name (an invalid one is skipped, as the event path drops such a route).
pub fn target_repo(rule: &Rule, target: &RuleTarget, repository: &str) -> Option<Repo> {
    let name = target.expand_repository(&rule.source_registry, repository);
    Reference::new(&target.registry, &name, Locator::Tag("latest".into())).ok()?;
    Some(Repo::new(&target.registry, name))
}

/// The target tag of source `tag`, when valid.
pub fn target_tag(target: &RuleTarget, tag: &str) -> Option<String> {
    Some(target.expand_tag(tag)).filter(|t| valid_tag(t))
}

/// The source tag whose target tag is `target_tag`, when the tag template can be inverted
/// (one `{tag}` between literal text; no template = the same tag). A template without
/// `{tag}` maps every tag to one name and cannot be pruned.
pub fn source_tag(target: &RuleTarget, target_tag: &str) -> Option<String> {
    let Some(template) = &target.tag else {
        return Some(target_tag.to_owned());
    };
    let (prefix, suffix) = template.split_once("{tag}")?;
    if suffix.contains("{tag}") {
        return None;
    }
    let tag = target_tag.strip_prefix(prefix)?.strip_suffix(suffix)?;
    // Check the round trip: literal braces or placeholders the loader kept must agree.
    (!tag.is_empty() && target.expand_tag(tag) == target_tag).then(|| tag.to_owned())
}

/// How a target tag differs from what the rule wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The target has no such tag: copy the image and write the tag.
    Missing,
    /// The target tag points at another digest: point it back (copying if needed).
    Moved,
    /// The target tag's source tag is gone (only with `--prune` on a delete rule).
    Gone,
}

impl Kind {
    /// `missing`, `moved`, `gone` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Moved => "moved",
            Kind::Gone => "gone",
        }
    }
}

/// The drift of one target tag whose source tag points at `source`: `None` when in sync.
pub fn classify(source: &Digest, target: Option<&Digest>) -> Option<Kind> {
    match target {
        None => Some(Kind::Missing),
        Some(t) if t != source => Some(Kind::Moved),
        Some(_) => None,
    }
}

/// The target tags a prune may remove: listed at the target, mapping back to a source
/// tag the rule wants, and that source tag not in `source_tags` (the full, unfiltered
/// source list). Pairs of (source tag, target tag), in target-list order.
pub fn prunable(
    rule: &Rule,
    target: &RuleTarget,
    source_tags: &HashSet<String>,
    target_tags: &[String],
) -> Vec<(String, String)> {
    target_tags
        .iter()
        .filter_map(|t| {
            let s = source_tag(target, t)?;
            (wants(rule, &s) && !source_tags.contains(&s)).then(|| (s, t.clone()))
        })
        .collect()
}

/// One target tag that differs from what a rule wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The rule that wants it.
    pub rule: String,
    /// How it differs.
    pub kind: Kind,
    /// The source repository.
    pub source: Repo,
    /// The source tag.
    pub source_tag: String,
    /// What the source tag points at (`None` for [`Kind::Gone`], and for a
    /// [`Kind::Missing`] tag that a repairing sync did not resolve because no target
    /// lists it: the executor resolves it under its tag lock).
    pub digest: Option<Digest>,
    /// The target repository.
    pub target: Repo,
    /// The target tag.
    pub tag: String,
    /// What the target tag points at (`None` for [`Kind::Missing`]).
    pub target_digest: Option<Digest>,
}

/// How deletes are carried out (the pipeline's settings, shared with event deletes).
#[derive(Debug, Clone, Copy)]
pub struct DeletePolicy {
    /// Log instead of deleting.
    pub dry_run: bool,
    /// What a tag delete does at a target that cannot delete tags.
    pub fallback: TagDeleteFallback,
}

impl Drift {
    /// The executor item that repairs this drift: a tag item (re-resolved under the
    /// executor's tag lock, copied once per digest), or a guarded delete that only
    /// removes the tag while the source lacks it and the target still points where the
    /// sync saw it. A tag item carries what the sync has just read as its [`Hint`]: the
    /// target tag (from the target's tag list or its HEAD) and `source_tags`, the source
    /// repository's tag list.
    pub fn item(&self, deletes: DeletePolicy, source_tags: Option<Arc<Vec<String>>>) -> Item {
        match self.kind {
            Kind::Missing | Kind::Moved => Item::Tag {
                source: self.source.clone(),
                source_tag: self.source_tag.clone(),
                seen: self.digest.clone(),
                target: self.target.clone(),
                tag: self.tag.clone(),
                require: Vec::new(),
                hint: Hint {
                    target: Some(self.target_digest.clone()),
                    source_tags,
                },
            },
            Kind::Gone => Item::Delete {
                source: self.source.clone(),
                source_locator: Locator::Tag(self.source_tag.clone()),
                target: self.target.clone(),
                locator: Locator::Tag(self.tag.clone()),
                expected: self.target_digest.clone(),
                dry_run: deletes.dry_run,
                fallback: deletes.fallback,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: Matcher) -> Rule {
        Rule {
            on_delete: true,
            ..Rule::for_tests("r", "src.example", pattern, vec![target(None)])
        }
    }

    fn glob(p: &str) -> Matcher {
        Matcher::try_glob(p).unwrap()
    }

    fn target(tag: Option<&str>) -> RuleTarget {
        RuleTarget {
            registry: "dst.example".into(),
            repository: "mirror/{repository}".into(),
            tag: tag.map(str::to_owned),
            strip_prefix: None,
        }
    }

    #[test]
    fn literal_patterns_and_lists_name_repositories_and_wildcards_need_the_catalog() {
        assert_eq!(
            repositories(&rule(glob("team/app"))),
            Repositories::Named(vec!["team/app".into()])
        );
        assert_eq!(repositories(&rule(glob("team/*"))), Repositories::Catalog);
        assert_eq!(repositories(&rule(glob("team/ap?"))), Repositories::Catalog);
        assert_eq!(
            repositories(&rule(Matcher::try_regex("team/app").unwrap())),
            Repositories::Catalog
        );
        let mut listed = rule(glob("team/*"));
        listed.repositories = vec!["team/a".into(), "team/b".into()];
        assert_eq!(
            repositories(&listed),
            Repositories::Named(vec!["team/a".into(), "team/b".into()])
        );
    }

    #[test]
    fn tag_templates_invert_only_when_unambiguous() {
        assert_eq!(source_tag(&target(None), "v1").as_deref(), Some("v1"));
        let t = target(Some("{tag}-mirror"));
        assert_eq!(target_tag(&t, "v1").as_deref(), Some("v1-mirror"));
        assert_eq!(source_tag(&t, "v1-mirror").as_deref(), Some("v1"));
        assert_eq!(source_tag(&t, "v1"), None);
        assert_eq!(source_tag(&t, "-mirror"), None);
        let p = target(Some("x-{tag}"));
        assert_eq!(source_tag(&p, "x-v1").as_deref(), Some("v1"));
        assert_eq!(source_tag(&target(Some("fixed")), "fixed"), None);
        assert_eq!(source_tag(&target(Some("{tag}-{tag}")), "a-a"), None);
        assert_eq!(target_tag(&target(Some("{tag}-x")), &"v".repeat(128)), None);
    }

    #[test]
    fn drift_is_missing_or_moved() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        assert_eq!(classify(&a, None), Some(Kind::Missing));
        assert_eq!(classify(&a, Some(&b)), Some(Kind::Moved));
        assert_eq!(classify(&a, Some(&a)), None);
    }

    #[test]
    fn prune_takes_only_wanted_tags_gone_at_the_source() {
        let mut r = rule(glob("**"));
        r.tags_exclude = vec![glob("keep-*")];
        let t = target(Some("{tag}-m"));
        let source: HashSet<String> = ["v1".to_string()].into();
        let listed: Vec<String> = ["v1-m", "v2-m", "keep-1-m", "other"].map(String::from).to_vec();
        assert_eq!(prunable(&r, &t, &source, &listed), vec![("v2".into(), "v2-m".into())]);
    }

    #[test]
    fn items_carry_the_seen_and_expected_digests() {
        let d = Digest::sha256_of(b"d");
        let mut drift = Drift {
            rule: "r".into(),
            kind: Kind::Missing,
            source: Repo::new("src.example", "a"),
            source_tag: "v1".into(),
            digest: Some(d.clone()),
            target: Repo::new("dst.example", "mirror/a"),
            tag: "v1".into(),
            target_digest: None,
        };
        let policy = DeletePolicy {
            dry_run: true,
            fallback: TagDeleteFallback::Off,
        };
        let tags = Arc::new(vec!["v1".to_string()]);
        match drift.item(policy, Some(tags.clone())) {
            Item::Tag { seen, hint, .. } => {
                assert_eq!(seen, Some(d.clone()));
                // The sync saw the target tag absent, and hands on the source's tag list.
                assert_eq!(hint.target, Some(None));
                assert_eq!(hint.source_tags, Some(tags));
            }
            other => panic!("{other:?}"),
        }
        drift.kind = Kind::Gone;
        drift.digest = None;
        drift.target_digest = Some(d.clone());
        match drift.item(policy, None) {
            Item::Delete {
                expected,
                dry_run,
                locator,
                ..
            } => {
                assert_eq!(expected, Some(d));
                assert!(dry_run);
                assert_eq!(locator, Locator::Tag("v1".into()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            target_repo(&rule(glob("**")), &target(None), "a").map(|r| r.to_string()),
            Some("dst.example/mirror/a".into())
        );
    }
}
