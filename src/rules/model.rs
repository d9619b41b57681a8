//! The rule model: the typed `[[rules]]` the loader builds, their patterns (globs and
//! anchored regexes over repositories and tags) and their `{...}` templates (target
//! repository and tag), with the checks the loader runs on templates.
//!
//! Role: the one home of matching and templating, shared by the planner ([`super::plan`]),
//! `sync` and the config loader (which compiles patterns and checks templates here).
//!
//! Must never: import anything from the crate but `oci` (the config loader, a leaf below
//! everything, builds these values), perform I/O, or panic on any pattern or template.

/// A string pattern: a glob (`*` within a path segment, `**` across segments) or a
/// regular expression (anchored at both ends), compiled at load time.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Compiled glob, with its source text.
    Glob(globset::GlobMatcher, String),
    /// Compiled anchored regex, with its source text.
    Regex(regex::Regex, String),
}

impl Matcher {
    /// Does `text` match?
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Matcher::Glob(g, _) => g.is_match(text),
            Matcher::Regex(r, _) => r.is_match(text),
        }
    }
    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Glob(_, s) | Matcher::Regex(_, s) => s,
        }
    }

    /// Compile a glob in which `*` and `?` stay within one `/`-separated segment and `**`
    /// crosses segments. The error is globset's reason, for the loader to place.
    pub fn try_glob(pattern: &str) -> Result<Matcher, String> {
        globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| Matcher::Glob(g.compile_matcher(), pattern.to_owned()))
            .map_err(|e| e.kind().to_string())
    }

    /// Compile a regular expression anchored at both ends (`^(?:pattern)$`).
    pub fn try_regex(pattern: &str) -> Result<Matcher, String> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map(|r| Matcher::Regex(r, pattern.to_owned()))
            .map_err(|e| e.to_string())
    }
}

/// What a rule does with events that name a digest but no tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untagged {
    /// Ignore them (default): the tagged event that usually follows does the work.
    Ignore,
    /// Copy the digest to the target, by digest only.
    Replicate,
}

/// One replication rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name for logs (`rules[N]` when not given).
    pub name: String,
    /// Source registry host this rule applies to (exact match, must be a configured
    /// registry).
    pub source_registry: String,
    /// Source repository pattern.
    pub repository: Matcher,
    /// The source repositories a sync or sweep visits for a pattern rule (config
    /// `repositories`); empty = a literal pattern's one name, else the registry's catalog.
    pub repositories: Vec<String>,
    /// Tags to replicate (empty = all tags).
    pub tags_include: Vec<Matcher>,
    /// Tags never replicated (checked after `tags_include`).
    pub tags_exclude: Vec<Matcher>,
    /// Replicate pushes.
    pub on_push: bool,
    /// Propagate deletes (off by default).
    pub on_delete: bool,
    /// Digest-only events.
    pub untagged: Untagged,
    /// Deletes of this rule are only logged (`Some(true)`) or carried out
    /// (`Some(false)`); `None` = `[pipeline] delete_dry_run`.
    pub delete_dry_run: Option<bool>,
    /// Where matching images go (at least one).
    pub targets: Vec<RuleTarget>,
    /// Names of `[gates.NAME]` the target digest must pass before a target tag is
    /// written (config `require`; empty = none).
    pub require: Vec<String>,
}

/// A target of a rule (serialized as a `[[rules.targets]]` table).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleTarget {
    /// Target registry host (must be a configured registry).
    pub registry: String,
    /// Repository template: `{repository}` (full source path), `{name}` (its last
    /// segment), `{registry}` (source host), and literal text. Example: `mirror/{repository}`.
    pub repository: String,
    /// Optional tag template: `{tag}` and literal text, e.g. `{tag}-mirror`. Default `{tag}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A leading path (ending with `/`) removed from the source repository before the
    /// template sees it: `strip_prefix = "my-project/docker/"` maps Artifact Registry's
    /// `my-project/docker/team/app` to `{repository}` = `team/app`. A source repository
    /// that does not start with it gets no route to this target (the reason is logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
}

#[cfg(test)]
impl Rule {
    /// A rule for unit tests: `repository` on `source_registry` to `targets`, every tag,
    /// pushes only, untagged pushes ignored, no gates; tests change what they exercise.
    pub(crate) fn for_tests(name: &str, source_registry: &str, repository: Matcher, targets: Vec<RuleTarget>) -> Rule {
        Rule {
            name: name.into(),
            source_registry: source_registry.into(),
            repository,
            repositories: Vec::new(),
            tags_include: Vec::new(),
            tags_exclude: Vec::new(),
            on_push: true,
            on_delete: false,
            untagged: Untagged::Ignore,
            delete_dry_run: None,
            targets,
            require: Vec::new(),
        }
    }
}

impl RuleTarget {
    /// The target repository for `repository` on `source_registry`: `{repository}`,
    /// `{name}` and `{registry}` replaced. A placeholder this version does not know is
    /// left as written (the loader rejects such templates), so the result may be an
    /// invalid name: callers validate it before use. With `strip_prefix`, `repository`
    /// is taken without it (callers check [`Self::strips`] first; a path without the
    /// prefix is used whole).
    pub fn expand_repository(&self, source_registry: &str, repository: &str) -> String {
        let repository = self
            .strip_prefix
            .as_deref()
            .and_then(|p| repository.strip_prefix(p))
            .unwrap_or(repository);
        let name = repository.rsplit('/').next().unwrap_or(repository);
        expand(
            &self.repository,
            &[
                ("repository", repository),
                ("name", name),
                ("registry", source_registry),
            ],
        )
    }

    /// Whether `repository` can be mapped: it starts with `strip_prefix` (and is longer),
    /// or there is none.
    pub fn strips(&self, repository: &str) -> bool {
        self.strip_prefix
            .as_deref()
            .is_none_or(|p| repository.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
    }

    /// The target tag for `tag`: the tag template with `{tag}` replaced, or `tag` itself
    /// when the target has no template. May be invalid; callers validate it.
    pub fn expand_tag(&self, tag: &str) -> String {
        match &self.tag {
            Some(template) => expand(template, &[("tag", tag)]),
            None => tag.to_owned(),
        }
    }
}

/// Replace each `{var}` of `template` in one pass (values are never re-expanded).
/// Unknown placeholders and unbalanced braces are copied through unchanged.
fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let var = &after[..close];
                match vars.iter().find(|(k, _)| *k == var) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Check `{…}` placeholders against `known`: every brace is closed, every name known.
/// The error says what is wrong, for the loader to place.
pub fn check_placeholders(template: &str, known: &[&str]) -> Result<(), String> {
    let list = known.iter().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ");
    let mut rest = template;
    loop {
        match (rest.find('{'), rest.find('}')) {
            (None, None) => return Ok(()),
            (Some(open), close) if close.is_none_or(|c| c > open) => {
                let after = &rest[open + 1..];
                let Some(end) = after.find('}') else {
                    return Err(format!("unclosed '{{' in template {template:?}"));
                };
                let var = &after[..end];
                if !known.contains(&var) {
                    return Err(format!(
                        "unknown template variable {{{var}}} in {template:?} (known: {list})"
                    ));
                }
                rest = &after[end + 1..];
            }
            _ => return Err(format!("unmatched '}}' in template {template:?}")),
        }
    }
}

/// `SRC/REPO:1.0 -> TARGET/MAPPED:TAG` for a source repository `rule` matches, built
/// from its pattern (`**` = `team/app`, `*` = `app`, under the target's `strip_prefix`);
/// `None` when no such sample matches (a regex, say) or the target refuses it.
pub fn example_mapping(rule: &Rule, t: &RuleTarget) -> Option<String> {
    let from_glob = match &rule.repository {
        Matcher::Glob(_, g) => Some(g.replace("**", "team/app").replace('*', "app")),
        Matcher::Regex(..) => None,
    };
    let prefix = t.strip_prefix.as_deref().unwrap_or_default();
    let repository = [
        from_glob,
        Some(format!("{prefix}team/app")),
        Some(format!("{prefix}app")),
    ]
    .into_iter()
    .flatten()
    .find(|r| rule.repository.is_match(r) && t.strips(r))?;
    let tag = t.expand_tag("1.0");
    Some(format!(
        "{}/{repository}:1.0 -> {}/{}:{tag}",
        rule.source_registry,
        t.registry,
        t.expand_repository(&rule.source_registry, &repository)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(repository: &str, tag: Option<&str>) -> RuleTarget {
        RuleTarget {
            registry: "dst.example".into(),
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            strip_prefix: None,
        }
    }

    #[test]
    fn strip_prefix_removes_the_leading_path_before_the_template_15() {
        let t = RuleTarget {
            strip_prefix: Some("my-project/docker/".into()),
            ..target("mirror/{repository}", None)
        };
        assert_eq!(
            t.expand_repository("europe-docker.pkg.dev", "my-project/docker/team/app"),
            "mirror/team/app"
        );
        assert!(t.strips("my-project/docker/team/app"));
        assert!(t.strips("my-project/docker/app"));
        // Not under the prefix, the prefix itself, or a lookalike segment: no mapping.
        assert!(!t.strips("other/docker/team/app"));
        assert!(!t.strips("my-project/docker/"));
        assert!(!t.strips("my-project/dockerx/app"));
        // `{name}` is unchanged by it; without strip_prefix everything maps.
        let n = RuleTarget {
            strip_prefix: Some("p/r/".into()),
            ..target("{name}", None)
        };
        assert_eq!(n.expand_repository("s", "p/r/team/app"), "app");
        assert!(target("{repository}", None).strips("anything/at/all"));
    }

    #[test]
    fn templates_expand_every_variable_once() {
        let t = target("mirror/{registry}/{repository}-{name}", Some("{tag}-m"));
        assert_eq!(
            t.expand_repository("src.example", "a/b/app"),
            "mirror/src.example/a/b/app-app"
        );
        assert_eq!(t.expand_tag("v1"), "v1-m");
        assert_eq!(target("{repository}", None).expand_tag("v1"), "v1");
        // Values are not re-expanded; unknown placeholders and stray braces pass through.
        assert_eq!(target("{repository}", None).expand_repository("r", "{name}"), "{name}");
        assert_eq!(target("x/{nope}/{", None).expand_repository("r", "a"), "x/{nope}/{");
        assert_eq!(target("}{}", None).expand_repository("r", "a"), "}{}");
    }

    #[test]
    fn globs_keep_single_stars_within_a_segment() {
        let m = Matcher::try_glob("proj/*").unwrap();
        assert!(m.is_match("proj/app"));
        assert!(!m.is_match("proj/team/app"));
        let m = Matcher::try_glob("proj/**").unwrap();
        assert!(m.is_match("proj/team/app"));
        assert!(Matcher::try_glob("a[").is_err());
        let r = Matcher::try_regex("v[0-9]+").unwrap();
        assert!(r.is_match("v12") && !r.is_match("xv12") && !r.is_match("v12x"));
        assert!(Matcher::try_regex("(").is_err());
        assert_eq!(r.as_str(), "v[0-9]+");
    }

    #[test]
    fn placeholder_checks() {
        assert!(check_placeholders("mirror/{repository}-{name}", &["repository", "name"]).is_ok());
        assert!(check_placeholders("x", &["tag"]).is_ok());
        assert!(check_placeholders("{tags}", &["tag"]).unwrap_err().contains("{tags}"));
        assert!(check_placeholders("{tag", &["tag"]).unwrap_err().contains("unclosed"));
        assert!(check_placeholders("tag}", &["tag"]).unwrap_err().contains("unmatched"));
        assert!(
            check_placeholders("{tag}}", &["tag"])
                .unwrap_err()
                .contains("unmatched")
        );
    }
}
