//! Raw file structs to the typed [`Config`]: defaults, ranges, cross-references between
//! rules and registries, template checks and secret resolution.
//!
//! Must never: connect anywhere, or put a secret value in a [`Problem`]. The first
//! problem found is returned, with the span of the offending key, value or table.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::rules::check_placeholders;

use super::{
    AuthKind, AuthTable, Problem, RawAction, RawAdmin, RawConfig, RawRule, RawSource, RawTarget, RawUntagged,
    SourceKind, key_path,
};
use crate::config::{
    Auth, Config, FileSourceConfig, Matcher, PipelineConfig, PubSubConfig, RegistryConfig, Rule, RuleTarget, Secret,
    SecretSource, SourceConfig, Untagged,
};

pub(super) mod auth;
mod cloud_auth;
mod entra;
mod origin;
mod servicebus;
pub(super) mod watch;

type Result<T> = std::result::Result<T, Problem>;

/// Where the file writes a field (by its path in errors), if it does: sections
/// deserialized straight into their typed structs carry no spans of their own.
pub(super) type Written<'a> = &'a dyn Fn(&str) -> Option<Range<usize>>;

/// Check `raw` and build the typed configuration.
pub(super) fn config(raw: RawConfig, written: Written<'_>) -> Result<Config> {
    let registries = raw
        .registries
        .into_iter()
        .map(|(host, reg)| registry(host, reg))
        .collect::<Result<Vec<_>>>()?;
    let hosts: HashSet<&str> = registries.iter().map(|r| r.host.as_str()).collect();
    // `source.reject` (servicebus) and `pipeline.reject` name one setting; keep both spans.
    let pipeline_reject = written("pipeline.reject").map(|at| (raw.pipeline.reject_mode, at));
    let source_reject = raw
        .source
        .as_ref()
        .and_then(|s| s.get_ref().reject.as_ref())
        .map(|r| (*r.get_ref(), r.span()));
    let retry_max_span = written("pipeline.retry_delay_max_secs").unwrap_or(0..0);
    let mut pipeline = pipeline(raw.pipeline, written)?;
    let watch = watch::settings(
        watch::RawWatchSections {
            watch: raw.watch,
            gates: raw.gates,
            notify: raw.notify,
            watcher: raw.watcher,
        },
        &hosts,
        written,
    )?;
    let mut raw_source = raw.source;
    let origin = match raw_source.as_mut().and_then(|s| s.get_mut().origin.take()) {
        Some(o) => Some(origin::origin(o, &hosts)?),
        None => None,
    };
    let source = match raw_source {
        Some(s) => source(s, pipeline.workers)?,
        // A file with only `[[watch]]` blocks needs no event source.
        None if !watch.watches.is_empty() => SourceConfig::None,
        None => return Err(Problem::new(0..0, "source", "missing: add a [source] table")),
    };
    // A held message must come back by our nack, not by its lease running out.
    if let SourceConfig::PubSub(ps) = &source
        && pipeline.retry_delay_max.mul_f64(1.2) >= ps.max_lease
    {
        return invalid(
            retry_max_span,
            "pipeline.retry_delay_max_secs",
            format!(
                "the longest retry delay (plus 20 % jitter) must stay below source.max_lease_secs ({})",
                ps.max_lease.as_secs()
            ),
        );
    }
    if matches!(source, SourceConfig::ServiceBus(_)) {
        pipeline.reject_mode = servicebus::reject_mode(source_reject, pipeline_reject)?;
    }
    let admin_listen = admin(raw.admin)?;
    let reconcile = raw.reconcile;
    if reconcile.jobs == 0 {
        return Err(Problem::at("reconcile.jobs", "must be at least 1"));
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let path = format!("rules[{i}]");
        if let Some(name) = &r.get_ref().name {
            if let Some(first) = names.get(name.get_ref()) {
                return Err(Problem::new(
                    name.span(),
                    format!("{path}.name"),
                    format!("duplicate rule name {:?} (also rules[{first}])", name.get_ref()),
                ));
            }
            names.insert(name.get_ref().clone(), i);
        }
        rules.push(rule(r, &path, &hosts, &watch.gates)?);
    }
    Ok(Config {
        source,
        origin,
        registries,
        rules,
        pipeline,
        admin_listen,
        watch,
        reconcile,
    })
}

fn invalid<T>(span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(Problem::new(span, field, message))
}

/// `x`, the value of `field`, checked against `min..=max`.
fn bounded<T: PartialOrd + Copy + std::fmt::Display>(x: T, field: &str, min: T, max: Option<T>) -> Result<T> {
    if x < min {
        return Err(Problem::at(field, format!("must be at least {min}, got {x}")));
    }
    if let Some(max) = max.filter(|m| x > *m) {
        return Err(Problem::at(field, format!("must be at most {max}, got {x}")));
    }
    Ok(x)
}

/// `Some(value)` of an optional spanned number, checked against `min..=max`.
fn ranged<T: PartialOrd + Copy + std::fmt::Display>(
    v: &Option<Spanned<T>>,
    field: &str,
    min: T,
    max: Option<T>,
) -> Result<Option<T>> {
    let Some(v) = v else { return Ok(None) };
    bounded(*v.get_ref(), field, min, max).map(Some).map_err(|p| Problem {
        span: Some(v.span()),
        ..p
    })
}

/// The span of an optional raw key, if the file gives it.
fn given<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// A key of a table whose `kind` says which keys apply: its name, its span if given, the
/// kinds it belongs to.
type KindKey<K> = (&'static str, Option<Range<usize>>, &'static [K]);

/// A key that does not belong to `kind` is an error, not silently ignored: the first one
/// `keys` gives, as a problem of the table at `path` worded by `why` (given the kinds the
/// key belongs to).
fn foreign_key<K: PartialEq>(path: &str, kind: &K, keys: &[KindKey<K>], why: impl Fn(&[K]) -> String) -> Result<()> {
    for (key, at, kinds) in keys {
        if let Some(at) = at.clone().filter(|_| !kinds.contains(kind)) {
            return invalid(at, format!("{path}.{key}"), why(kinds));
        }
    }
    Ok(())
}

fn source(s: Spanned<RawSource>, workers: usize) -> Result<SourceConfig> {
    let span = s.span();
    let s = s.into_inner();
    foreign_key("source", s.kind.get_ref(), &source_keys(&s), |kinds| {
        let names: Vec<String> = kinds.iter().map(|k| format!("{:?}", kind_name(*k))).collect();
        format!("only applies to kind = {}", names.join(" or "))
    })?;
    match s.kind.get_ref() {
        SourceKind::Servicebus => servicebus::source(s, span).map(SourceConfig::ServiceBus),
        SourceKind::File => {
            let path = s.path.map(Spanned::into_inner).filter(|p| p != "-").map(PathBuf::from);
            Ok(SourceConfig::File(FileSourceConfig { path }))
        }
        SourceKind::Pubsub => {
            let Some(sub) = s.subscription else {
                return invalid(span, "source.subscription", "required when kind = \"pubsub\"");
            };
            if !valid_subscription(sub.get_ref()) {
                return invalid(
                    sub.span(),
                    "source.subscription",
                    format!(
                        "{:?} is not of the form projects/PROJECT/subscriptions/NAME",
                        sub.get_ref()
                    ),
                );
            }
            if let Some(e) = &s.endpoint {
                let rest = e
                    .get_ref()
                    .strip_prefix("http://")
                    .or_else(|| e.get_ref().strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace)) {
                    return invalid(
                        e.span(),
                        "source.endpoint",
                        "must be an http:// or https:// URL with a host",
                    );
                }
            }
            let max_outstanding = ranged(&s.max_outstanding_messages, "source.max_outstanding_messages", 1, None)?
                .unwrap_or_else(|| i64::try_from(workers.saturating_mul(2)).unwrap_or(i64::MAX));
            let lease = ranged(&s.lease_extension_secs, "source.lease_extension_secs", 10, Some(600))?.unwrap_or(60);
            let max_lease = ranged(&s.max_lease_secs, "source.max_lease_secs", lease, None)?.unwrap_or(3600);
            Ok(SourceConfig::PubSub(PubSubConfig {
                subscription: sub.into_inner(),
                endpoint: s.endpoint.map(Spanned::into_inner),
                max_outstanding_messages: max_outstanding,
                lease_extension: Duration::from_secs(lease),
                max_lease: Duration::from_secs(max_lease),
            }))
        }
    }
}

/// Every optional key of `[source]`.
fn source_keys(s: &RawSource) -> [KindKey<SourceKind>; 14] {
    use SourceKind::{File, Pubsub, Servicebus};
    [
        ("subscription", given(&s.subscription), &[Pubsub, Servicebus]),
        ("endpoint", given(&s.endpoint), &[Pubsub, Servicebus]),
        (
            "max_outstanding_messages",
            given(&s.max_outstanding_messages),
            &[Pubsub],
        ),
        ("lease_extension_secs", given(&s.lease_extension_secs), &[Pubsub]),
        ("max_lease_secs", given(&s.max_lease_secs), &[Pubsub]),
        ("path", given(&s.path), &[File]),
        ("namespace", given(&s.namespace), &[Servicebus]),
        ("queue", given(&s.queue), &[Servicebus]),
        ("topic", given(&s.topic), &[Servicebus]),
        ("receivers", given(&s.receivers), &[Servicebus]),
        ("wait_secs", given(&s.wait_secs), &[Servicebus]),
        ("lock_renew_secs", given(&s.lock_renew_secs), &[Servicebus]),
        ("reject", given(&s.reject), &[Servicebus]),
        ("auth", given(&s.auth), &[Servicebus]),
    ]
}

/// `source.kind` as written in the file.
fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Pubsub => "pubsub",
        SourceKind::File => "file",
        SourceKind::Servicebus => "servicebus",
    }
}

/// `projects/PROJECT/subscriptions/NAME` with Pub/Sub's name rules: a NAME of 3 to 255
/// characters starting with a letter, no `goog` prefix.
fn valid_subscription(s: &str) -> bool {
    let Some((project, name)) = s
        .strip_prefix("projects/")
        .and_then(|r| r.split_once("/subscriptions/"))
    else {
        return false;
    };
    let project_ok = !project.is_empty()
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    let name_ok = (3..=255).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.starts_with("goog")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+%".contains(&b));
    project_ok && name_ok
}

/// Check the ranges of `[pipeline]`, whose values are typed already.
fn pipeline(p: PipelineConfig, written: Written<'_>) -> Result<PipelineConfig> {
    let secs = |d: Duration| d.as_secs();
    bounded(p.workers, "pipeline.workers", 1, None)?;
    bounded(p.blob_jobs, "pipeline.blob_jobs", 1, None)?;
    bounded(secs(p.pause_min), "pipeline.pause_min_secs", 1, None)?;
    // A bound given by another key is reported at the key the file writes.
    let (min, max) = ("pipeline.pause_min_secs", "pipeline.pause_max_secs");
    if written(max).is_some() {
        bounded(secs(p.pause_max), max, secs(p.pause_min), None)?;
    } else if p.pause_max < p.pause_min {
        return Err(Problem::at(min, format!("must not exceed {max}")));
    }
    let (min, max) = ("pipeline.retry_delay_min_secs", "pipeline.retry_delay_max_secs");
    bounded(secs(p.retry_delay_min), min, 0, Some(3600))?;
    if written(max).is_some() {
        bounded(secs(p.retry_delay_max), max, secs(p.retry_delay_min), Some(3600))?;
    } else if p.retry_delay_max < p.retry_delay_min {
        return Err(Problem::at(min, format!("must not exceed {max}")));
    }
    bounded(p.max_waiting, "pipeline.max_waiting", 1, None)?;
    Ok(p)
}

fn admin(a: Option<Spanned<RawAdmin>>) -> Result<Option<SocketAddr>> {
    let default = SocketAddr::from(([0, 0, 0, 0], 9090));
    let Some(a) = a else { return Ok(Some(default)) };
    let RawAdmin { listen, enabled } = a.into_inner();
    let enabled_explicitly = enabled.as_ref().is_some_and(|e| *e.get_ref());
    if enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
        return Ok(None);
    }
    let Some(listen) = listen else { return Ok(Some(default)) };
    if listen.get_ref().is_empty() {
        if enabled_explicitly {
            return invalid(
                listen.span(),
                "admin.listen",
                "is empty (disabled) but admin.enabled = true",
            );
        }
        return Ok(None);
    }
    match listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Ok(Some(addr)),
        Err(_) => invalid(
            listen.span(),
            "admin.listen",
            format!("{:?} is not an IP:PORT address (use \"\" to disable)", listen.get_ref()),
        ),
    }
}

/// `[registries."HOST"]`: its settings are typed already ([`RegistryConfig`] holds their
/// definitions and [`RegistryConfig::validate`] their ranges); here the key is checked, the
/// CA bundle read and the `auth` table resolved.
fn registry(host: Spanned<String>, r: Spanned<RegistryConfig>) -> Result<RegistryConfig> {
    let path = format!("registries.{}", key_path(host.get_ref()));
    if !crate::oci::valid_host(host.get_ref()) {
        return invalid(
            host.span(),
            &path,
            "the key must be a registry host[:port] as written in image references (no scheme, no path)",
        );
    }
    let mut c = r.into_inner();
    c.host = host.into_inner();
    c.validate().map_err(|e| match e {
        crate::config::Error::Invalid { field, reason } => Problem::at(field, reason),
        other => Problem::at(&path, other.to_string()),
    })?;
    c.ca_certificates()
        .map_err(|e| Problem::at(format!("{path}.ca_file"), e))?;
    if let Some(auth) = c.auth_table.take() {
        c.auth = self::auth(auth, &format!("{path}.auth"))?;
    }
    Ok(c)
}

fn auth(a: Spanned<AuthTable>, path: &str) -> Result<Auth> {
    use AuthKind::*;
    let span = a.span();
    let a = a.into_inner();
    let kind = auth::kind(
        &a,
        path,
        &[Anonymous, Basic, DockerConfig, IdentityToken, Google, AcrEntra],
    )?;
    // Exactly one of the secret's sources.
    let secret = |what: &str, sources: [&Option<Spanned<String>>; 3]| match given_secret(path, what, sources)? {
        Some((secret, _, _)) => Ok(secret),
        None => invalid(
            span.clone(),
            format!("{path}.{what}_env"),
            format!(
                "kind = {:?} needs one of {what}_env, {what}_file or {what}",
                kind.name()
            ),
        ),
    };
    Ok(match kind {
        Anonymous => Auth::Anonymous,
        Basic => {
            let username = match a.username {
                Some(u) if !u.get_ref().is_empty() => u.into_inner(),
                Some(u) => return invalid(u.span(), format!("{path}.username"), "must not be empty"),
                None => return invalid(span, format!("{path}.username"), "required when kind = \"basic\""),
            };
            let password = secret("password", [&a.password_env, &a.password_file, &a.password])?;
            Auth::Basic { username, password }
        }
        DockerConfig => match a.path {
            Some(p) if !p.get_ref().is_empty() => Auth::DockerConfig {
                path: PathBuf::from(p.into_inner()),
            },
            Some(p) => return invalid(p.span(), format!("{path}.path"), "must not be empty"),
            None => return invalid(span, format!("{path}.path"), "required when kind = \"docker_config\""),
        },
        IdentityToken => Auth::IdentityToken {
            token: secret("token", [&a.token_env, &a.token_file, &a.token])?,
        },
        Google => cloud_auth::google(&a, path)?,
        AcrEntra => cloud_auth::acr_entra(&a, span.clone(), path, || {
            secret(
                "client_secret",
                [&a.client_secret_env, &a.client_secret_file, &a.client_secret],
            )
        })?,
        Sas | Entra => unreachable!("auth::kind allows registry kinds only"),
    })
}

/// The secret given by at most one of `WHAT_env`, `WHAT_file` and `WHAT` (`sources`, in
/// that order) of the table at `path`, resolved now so a bad name fails at startup, with
/// the key it came from and that key's span; `None` if none is given.
fn given_secret(
    path: &str,
    what: &str,
    sources: [&Option<Spanned<String>>; 3],
) -> Result<Option<(Secret, String, Range<usize>)>> {
    let keys = [format!("{what}_env"), format!("{what}_file"), what.to_owned()];
    let mut given = keys
        .into_iter()
        .zip(sources)
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)));
    let Some((key, value)) = given.next() else {
        return Ok(None);
    };
    if let Some((other, v)) = given.next() {
        return invalid(
            v.span(),
            format!("{path}.{other}"),
            format!("give only one of {what}_env, {what}_file and {what}"),
        );
    }
    let field = format!("{path}.{key}");
    let source = if key == what {
        SecretSource::Inline(Secret::new(value.get_ref()))
    } else if value.get_ref().is_empty() {
        return invalid(value.span(), field, "must not be empty");
    } else if key.ends_with("_env") {
        SecretSource::Env(value.get_ref().clone())
    } else {
        SecretSource::File(PathBuf::from(value.get_ref()))
    };
    let resolved = source
        .resolve(&format!("{path}.{what}"))
        .map_err(|e| Problem::new(value.span(), &field, e.to_string()))?;
    if resolved.is_empty() {
        return invalid(value.span(), field, format!("the {what} is empty"));
    }
    Ok(Some((resolved, key, value.span())))
}

fn rule(
    r: Spanned<RawRule>,
    path: &str,
    hosts: &HashSet<&str>,
    gates: &std::collections::BTreeMap<String, crate::config::watch::GateConfig>,
) -> Result<Rule> {
    let span = r.span();
    let r = r.into_inner();
    let field = |f: &str| format!("{path}.{f}");
    let name = r.name.as_ref().map_or_else(|| path.to_owned(), |n| n.get_ref().clone());
    if name.is_empty() {
        let at = r.name.as_ref().map_or(span.clone(), Spanned::span);
        return invalid(at, field("name"), "must not be empty");
    }
    let source_registry = configured(&r.source_registry, &field("source_registry"), hosts)?;
    let repository = match (&r.repository, &r.repository_regex) {
        (Some(g), None) => pattern(g, &field("repository"), Matcher::try_glob)?,
        (None, Some(re)) => pattern(re, &field("repository_regex"), Matcher::try_regex)?,
        (Some(_), Some(re)) => {
            return invalid(
                re.span(),
                field("repository_regex"),
                "give either repository or repository_regex, not both",
            );
        }
        (None, None) => return invalid(span, field("repository"), "required (a glob), or give repository_regex"),
    };
    let mut repositories = Vec::new();
    for (i, name) in r.repositories.iter().flatten().enumerate() {
        let f = field(&format!("repositories[{i}]"));
        let n = name.get_ref();
        if crate::oci::Reference::new("registry.invalid", n, crate::oci::Locator::Tag("latest".into())).is_err() {
            return invalid(name.span(), f, format!("{n:?} is not a valid repository name"));
        }
        if !repository.is_match(n) {
            return invalid(
                name.span(),
                f,
                format!("{n:?} does not match the rule's pattern {:?}", repository.as_str()),
            );
        }
        repositories.push(n.clone());
    }
    let patterns =
        |globs: &Option<Vec<Spanned<String>>>, gkey: &str, regexes: &Option<Vec<Spanned<String>>>, rkey: &str| {
            let mut out = Vec::new();
            for (i, g) in globs.iter().flatten().enumerate() {
                out.push(pattern(g, &field(&format!("{gkey}[{i}]")), Matcher::try_glob)?);
            }
            for (i, re) in regexes.iter().flatten().enumerate() {
                out.push(pattern(re, &field(&format!("{rkey}[{i}]")), Matcher::try_regex)?);
            }
            Ok(out)
        };
    let tags_include = patterns(&r.tags, "tags", &r.tags_regex, "tags_regex")?;
    let tags_exclude = patterns(
        &r.exclude_tags,
        "exclude_tags",
        &r.exclude_tags_regex,
        "exclude_tags_regex",
    )?;
    let (on_push, on_delete) = match &r.actions {
        None => (true, false),
        Some(a) if a.get_ref().is_empty() => {
            return invalid(
                a.span(),
                field("actions"),
                "must name at least one of \"push\", \"delete\"",
            );
        }
        Some(a) => (
            a.get_ref().contains(&RawAction::Push),
            a.get_ref().contains(&RawAction::Delete),
        ),
    };
    let untagged = match r.untagged {
        Some(RawUntagged::Replicate) => Untagged::Replicate,
        Some(RawUntagged::Ignore) | None => Untagged::Ignore,
    };
    let raw_targets = r.targets.unwrap_or_default();
    if raw_targets.is_empty() {
        return invalid(span, field("targets"), "a rule needs at least one [[rules.targets]]");
    }
    let targets = raw_targets
        .into_iter()
        .enumerate()
        .map(|(i, t)| target(t, &field(&format!("targets[{i}]")), &source_registry, hosts))
        .collect::<Result<Vec<_>>>()?;
    let mut require = Vec::new();
    for (i, g) in r.require.iter().enumerate() {
        if !gates.contains_key(g.get_ref()) {
            return invalid(
                g.span(),
                field(&format!("require[{i}]")),
                format!(
                    "unknown gate {:?} (add a [gates.{}] table)",
                    g.get_ref(),
                    key_path(g.get_ref())
                ),
            );
        }
        if !require.contains(g.get_ref()) {
            require.push(g.get_ref().clone());
        }
    }
    Ok(Rule {
        name,
        source_registry,
        repository,
        repositories,
        tags_include,
        tags_exclude,
        on_push,
        on_delete,
        untagged,
        delete_dry_run: r.delete_dry_run,
        targets,
        require,
    })
}

fn configured(host: &Spanned<String>, field: &str, hosts: &HashSet<&str>) -> Result<String> {
    if hosts.contains(host.get_ref().as_str()) {
        return Ok(host.get_ref().clone());
    }
    invalid(
        host.span(),
        field,
        format!(
            "{:?} is not a configured registry (add a [registries.{}] table)",
            host.get_ref(),
            key_path(host.get_ref())
        ),
    )
}

fn pattern(
    p: &Spanned<String>,
    field: &str,
    compile: fn(&str) -> std::result::Result<Matcher, String>,
) -> Result<Matcher> {
    if p.get_ref().is_empty() {
        return invalid(p.span(), field, "pattern must not be empty");
    }
    compile(p.get_ref()).map_err(|e| Problem::new(p.span(), field, format!("invalid pattern {:?}: {e}", p.get_ref())))
}

fn target(t: Spanned<RawTarget>, path: &str, source_registry: &str, hosts: &HashSet<&str>) -> Result<RuleTarget> {
    let t = t.into_inner();
    let field = |f: &str| format!("{path}.{f}");
    let registry = configured(&t.registry, &field("registry"), hosts)?;
    let repo_template = t.repository.as_ref().map_or("{repository}", |r| r.get_ref());
    let repo_span = t.repository.as_ref().map_or(t.registry.span(), Spanned::span);
    check_placeholders(repo_template, &["repository", "name", "registry"])
        .map_err(|e| Problem::new(repo_span.clone(), field("repository"), e))?;
    if let Some(tag) = &t.tag {
        check_placeholders(tag.get_ref(), &["tag"]).map_err(|e| Problem::new(tag.span(), field("tag"), e))?;
    }
    if let Some(p) = &t.strip_prefix {
        let prefix = p.get_ref();
        let Some(path) = prefix.strip_suffix('/') else {
            return invalid(
                p.span(),
                field("strip_prefix"),
                format!("{prefix:?} must end with '/' (whole path segments are removed), e.g. \"{prefix}/\""),
            );
        };
        if !crate::oci::valid_repository(path) {
            return invalid(
                p.span(),
                field("strip_prefix"),
                format!(
                    "{prefix:?} is not a repository path followed by '/' (lowercase [a-z0-9] segments joined by '/', '.', '_', '__' or '-')"
                ),
            );
        }
    }
    let target = RuleTarget {
        registry,
        repository: repo_template.to_owned(),
        tag: t.tag.as_ref().map(|t| t.get_ref().clone()),
        strip_prefix: t.strip_prefix.as_ref().map(|p| p.get_ref().clone()),
    };
    // A valid source path starts and ends with [a-z0-9], so expanding with "a" shows
    // whether the template's literal text can ever give a valid name.
    let sample = target.expand_repository(
        source_registry,
        &format!("{}a", target.strip_prefix.as_deref().unwrap_or_default()),
    );
    if !crate::oci::valid_repository(&sample) {
        return invalid(
            repo_span,
            field("repository"),
            format!(
                "{repo_template:?} never expands to a valid repository name (e.g. {sample:?}); names are lowercase [a-z0-9] segments joined by '/', '.', '_', '__' or '-'"
            ),
        );
    }
    if let Some(tag) = &t.tag {
        let sample = target.expand_tag("a");
        if !crate::oci::valid_tag(&sample) {
            return invalid(
                tag.span(),
                field("tag"),
                format!(
                    "{:?} never expands to a valid tag (e.g. {sample:?}); tags match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}",
                    tag.get_ref()
                ),
            );
        }
    }
    let same_tag = target.tag.as_deref().is_none_or(|t| t == "{tag}");
    if target.registry == source_registry
        && target.repository == "{repository}"
        && target.strip_prefix.is_none()
        && same_tag
    {
        return invalid(
            t.registry.span(),
            field("registry"),
            "replicates every image onto itself (same registry, repository \"{repository}\", same tag): a loop",
        );
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_helpers() {
        assert!(valid_subscription("projects/p-1/subscriptions/gcr-sub"));
        assert!(valid_subscription("projects/example.com:proj/subscriptions/abc"));
        assert!(!valid_subscription("projects/p/topics/x") && !valid_subscription("projects/p/subscriptions/ab"));
        assert!(
            !valid_subscription("projects/p/subscriptions/googx") && !valid_subscription("projects//subscriptions/abc")
        );
        assert!(!valid_subscription("projects/p/subscriptions/a/b"));
    }
}
