//! Sync: converge targets on the state of their sources without events, the front end
//! behind `regrelay sync` and the daemon's reconcile sweep.
//!
//! Role: for each rule, enumerate its source repositories ([`plan::repositories`]), list
//! their tags (paginated), keep the ones the rule wants, resolve each with one HEAD,
//! compare with each target (its tag list, then one HEAD per listed tag) and hand every
//! difference ([`Drift`]) to the executor as an [`Item`](crate::engine::Item), or only report it when
//! planning. With `prune`, target tags whose source tag is gone become guarded deletes
//! (rules with the delete action only).
//!
//! Cost when everything is in sync: the tag-list pages of each source and target
//! repository plus at most two manifest HEADs per tag (one per side); a target tag
//! missing from the target's list costs no HEAD. A repairing run (not `--check` or
//! `--dry-run`) lists the targets first and does not HEAD a source tag that no target
//! lists: the executor's GET of it under the tag lock resolves and reads it at once. Memory: one repository at a time (its
//! tag lists and their digests), never the whole registry.
//!
//! Must never: change a target other than through [`Execute::execute`] (the executor owns
//! replication policy: locks, one copy per digest, verification, guarded deletes),
//! contact a host that is not configured, or settle messages or touch the pipeline.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Rule, RuleTarget};
use crate::engine::{Done, Execute, ItemResult, Outcome, Repo};
use crate::health::Health;
use crate::oci::{Digest, Reference};
use crate::registry::{Registries, Registry as _};
use crate::replicate::{ErrorClass, Replicator};

pub mod plan;
pub mod sweep;

pub use plan::{DeletePolicy, Drift, Kind};

/// What a run does with the differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Send each difference to the executor (`false`: only report it, for `--dry-run`
    /// and `--check`).
    pub apply: bool,
    /// Also remove target tags whose source tag is gone (rules with the delete action).
    pub prune: bool,
}

/// Something a sync could not look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The rule.
    pub rule: String,
    /// The repository (source or target), when the problem is about one.
    pub repository: Option<String>,
    /// How to treat it.
    pub class: ErrorClass,
    /// What failed (registry errors are already redacted).
    pub message: String,
    /// The configuration must change: a pattern rule whose registry refuses to list its
    /// repositories and that has no `repositories` list.
    pub needs_config: bool,
}

/// One line of a sync's report, handed to the caller's sink as it happens.
#[derive(Debug)]
pub enum Entry<'a> {
    /// A difference, and what the executor made of it (`None` when only planning).
    Drift(&'a Drift, Option<&'a ItemResult>),
    /// Something could not be checked.
    Problem(&'a Problem),
}

/// Totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Source repositories visited.
    pub repositories: u64,
    /// Source tags the rules want, resolved and compared (once per rule).
    pub tags_checked: u64,
    /// Differences found, by [`Kind`] (missing, moved, gone).
    pub found: [u64; 3],
    /// Differences repaired (copied, tag written, deleted), by [`Kind`].
    pub repaired: [u64; 3],
    /// Differences the executor found already repaired, or stale (source moved on, a
    /// dry-run delete).
    pub settled: u64,
    /// Differences the executor failed to repair.
    pub failed: u64,
    /// Problems (listing or resolving failed).
    pub problems: u64,
    /// At least one problem needs a configuration change.
    pub needs_config: bool,
    /// The run was stopped before it finished.
    pub cancelled: bool,
}

impl Report {
    /// All differences found.
    pub fn drift(&self) -> u64 {
        self.found.iter().sum()
    }

    fn add(&mut self, o: &Report) {
        self.repositories += o.repositories;
        self.tags_checked += o.tags_checked;
        for i in 0..3 {
            self.found[i] += o.found[i];
            self.repaired[i] += o.repaired[i];
        }
        self.settled += o.settled;
        self.failed += o.failed;
        self.problems += o.problems;
        self.needs_config |= o.needs_config;
        self.cancelled |= o.cancelled;
    }
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Missing => 0,
        Kind::Moved => 1,
        Kind::Gone => 2,
    }
}

/// A read (list or HEAD) and its failure's class and text.
type Read<T> = Result<T, (ErrorClass, String)>;

/// One wanted tag to compare at one target.
struct Check {
    /// The source repository's tags (handed to the executor with a repair).
    source_tags: Arc<Vec<String>>,
    tag: String,
    /// `None`: not resolved, because no target lists the tag (a repair only).
    digest: Option<Digest>,
    target_tag: String,
    listed: bool,
}

/// Where each line of the report goes (printed by the CLI, counted by the sweep).
pub type Sink<'a> = &'a (dyn Fn(Entry<'_>) + Send + Sync);

/// The sync runner: reads through the copy engine's registry clients (so limits and
/// credentials are shared) and changes targets only through `executor`.
pub struct Syncer<S: Registries, E: Execute> {
    replicator: Arc<Replicator<S>>,
    executor: Arc<E>,
    deletes: DeletePolicy,
    jobs: usize,
    health: Option<Arc<Health>>,
}

impl<S: Registries, E: Execute> std::fmt::Debug for Syncer<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl<S: Registries, E: Execute> Syncer<S, E> {
    /// A runner reading through `replicator`'s registries, repairing through `executor`,
    /// with at most `jobs` HEADs or items in flight at once.
    pub fn new(replicator: Arc<Replicator<S>>, executor: Arc<E>, deletes: DeletePolicy, jobs: usize) -> Self {
        Syncer {
            replicator,
            executor,
            deletes,
            jobs: jobs.max(1),
            health: None,
        }
    }

    /// Leave registries that `health` marks unhealthy alone (their reads too, as the
    /// guarded executor does for their writes) until their backoff ends: a problem each.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// `Err` (Systemic, not contacted) while `host` is unhealthy.
    fn healthy(&self, host: &str) -> Read<()> {
        match &self.health {
            Some(h) => h.check(host).map_err(|u| (ErrorClass::Systemic, u.to_string())),
            None => Ok(()),
        }
    }

    /// Check (and with `opts.apply`, repair) every rule in `rules`, one repository at a
    /// time, until done or `stop` is cancelled (the repository in progress is dropped).
    pub async fn run(&self, rules: &[Rule], opts: Options, stop: &CancellationToken, sink: Sink<'_>) -> Report {
        let mut report = Report::default();
        for rule in rules {
            // A delete-only rule has nothing to compare unless pruning.
            if !(rule.on_push || (opts.prune && rule.on_delete)) {
                continue;
            }
            let repositories = match self.repositories(rule).await {
                Ok(r) => r,
                Err(p) => {
                    report.problems += 1;
                    report.needs_config |= p.needs_config;
                    sink(Entry::Problem(&p));
                    continue;
                }
            };
            for repository in repositories {
                if stop.is_cancelled() {
                    report.cancelled = true;
                    return report;
                }
                tokio::select! {
                    r = self.repository(rule, &repository, opts, sink) => report.add(&r),
                    () = stop.cancelled() => {
                        report.cancelled = true;
                        return report;
                    }
                }
            }
        }
        report
    }

    /// The source repositories of `rule`.
    async fn repositories(&self, rule: &Rule) -> Result<Vec<String>, Problem> {
        let names = match plan::repositories(rule) {
            plan::Repositories::Named(n) => return Ok(n),
            plan::Repositories::Catalog => self.catalog(&rule.source_registry).await,
        };
        match names {
            Ok(mut n) => {
                n.retain(|r| rule.repository.is_match(r));
                Ok(n)
            }
            Err((class, message)) => {
                // Refused (no catalog, no permission): only the configuration can help.
                let needs_config = class != ErrorClass::Transient;
                let message = if needs_config {
                    format!(
                        "rule {}: pattern {:?} needs the catalog of {}, which refused it ({message}); \
                         list the repositories with `repositories = [...]` on the rule",
                        rule.name,
                        rule.repository.as_str(),
                        rule.source_registry
                    )
                } else {
                    format!(
                        "rule {}: cannot list the repositories of {}: {message}",
                        rule.name, rule.source_registry
                    )
                };
                Err(Problem {
                    rule: rule.name.clone(),
                    repository: None,
                    class,
                    message,
                    needs_config,
                })
            }
        }
    }

    async fn catalog(&self, host: &str) -> Read<Vec<String>> {
        let registry = self
            .replicator
            .registries()
            .get(host)
            .map_err(|e| (e.class(), e.to_string()))?;
        match registry.list_repositories().await {
            Ok(Some(list)) => Ok(list),
            // No catalog: a Permanent refusal, which makes sync ask for `repositories`.
            Ok(None) => Err((
                ErrorClass::Permanent,
                format!("{host} offers no repository catalog (GET /v2/_catalog refused or absent)"),
            )),
            Err(e) => Err((e.class(), e.to_string())),
        }
    }

    async fn list_tags(&self, repo: &Repo) -> Read<Vec<String>> {
        let registry = self
            .replicator
            .registries()
            .get(&repo.registry)
            .map_err(|e| (e.class(), e.to_string()))?;
        registry
            .list_tags(&repo.repository)
            .await
            .map_err(|e| (e.class(), e.to_string()))
    }

    /// One HEAD (a GET only where the registry sends no digest header).
    async fn resolve(&self, repo: &Repo, tag: &str) -> Read<Option<Digest>> {
        let reference = Reference {
            registry: repo.registry.clone(),
            repository: repo.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        };
        self.replicator
            .resolve(&reference)
            .await
            .map_err(|e| (e.class(), e.to_string()))
    }

    /// Report a problem with `repo` (a listing or a HEAD failed).
    fn problem(rule: &Rule, report: &mut Report, repo: &Repo, (class, message): (ErrorClass, String), sink: Sink<'_>) {
        report.problems += 1;
        let p = Problem {
            rule: rule.name.clone(),
            repository: Some(repo.to_string()),
            class,
            message,
            needs_config: false,
        };
        sink(Entry::Problem(&p));
    }

    /// Check one source repository against every target of `rule`.
    ///
    /// Streams take owned items (no closure over a borrowed argument), so the future
    /// stays `Send` for any lifetime and the sweep can be spawned.
    async fn repository(&self, rule: &Rule, repository: &str, opts: Options, sink: Sink<'_>) -> Report {
        let mut report = Report {
            repositories: 1,
            ..Report::default()
        };
        let source = Repo::new(&rule.source_registry, repository);
        let all = match self.healthy(&source.registry) {
            Err(e) => Err(e),
            Ok(()) => self.list_tags(&source).await,
        };
        let all = match all {
            Ok(t) => t,
            Err(e) => {
                Self::problem(rule, &mut report, &source, e, sink);
                return report;
            }
        };
        let wanted: Vec<String> = if rule.on_push {
            all.iter().filter(|t| plan::wants(rule, t)).cloned().collect()
        } else {
            Vec::new()
        };
        report.tags_checked = wanted.len() as u64;
        // The targets' tag lists first: a repair needs no source HEAD for a tag that no
        // target lists (it is missing everywhere; the executor's GET resolves it). A
        // check or a dry run reports every digest, so it resolves every wanted tag.
        let mut targets: Vec<(&RuleTarget, Repo, Vec<String>)> = Vec::with_capacity(rule.targets.len());
        for target in &rule.targets {
            let Some(dst) = plan::target_repo(rule, target, repository) else {
                tracing::warn!(rule = %rule.name, repository, target = %target.registry, "the target repository template gives an invalid name; skipped");
                continue;
            };
            let listed = match self.healthy(&dst.registry) {
                Err(e) => Err(e),
                Ok(()) => self.list_tags(&dst).await,
            };
            match listed {
                Ok(t) => targets.push((target, dst, t)),
                Err(e) => Self::problem(rule, &mut report, &dst, e, sink),
            }
        }
        let listed_sets: Vec<HashSet<&str>> = targets
            .iter()
            .map(|(_, _, listed)| listed.iter().map(String::as_str).collect())
            .collect();
        let needs_head = |tag: &str| {
            !opts.apply
                || targets.iter().zip(&listed_sets).any(|((target, _, _), set)| {
                    plan::target_tag(target, tag).is_some_and(|t| set.contains(t.as_str()))
                })
        };
        let (to_resolve, unresolved): (Vec<String>, Vec<String>) = wanted.into_iter().partition(|t| needs_head(t));
        let resolved: Vec<(String, Read<Option<Digest>>)> = futures_util::stream::iter(to_resolve)
            .map(|t: String| {
                let source = &source;
                async move {
                    let r = self.resolve(source, &t).await;
                    (t, r)
                }
            })
            .buffer_unordered(self.jobs)
            .collect()
            .await;
        let mut digests: Vec<(String, Option<Digest>)> = Vec::with_capacity(resolved.len() + unresolved.len());
        for (tag, r) in resolved {
            match r {
                Ok(Some(d)) => digests.push((tag, Some(d))),
                // Deleted since the list: nothing to copy (a prune may see it next time).
                Ok(None) => {}
                Err(e) => Self::problem(rule, &mut report, &source, e, sink),
            }
        }
        digests.extend(unresolved.into_iter().map(|t| (t, None)));
        let prune = opts.prune && rule.on_delete;
        let all_set: HashSet<String> = if prune {
            all.iter().cloned().collect()
        } else {
            HashSet::new()
        };
        let all = Arc::new(all);
        for ((target, dst, listed), listed_set) in targets.iter().zip(&listed_sets) {
            let checks: Vec<Check> = digests
                .iter()
                .filter_map(|(tag, digest)| {
                    let ttag = plan::target_tag(target, tag)?;
                    let listed = listed_set.contains(ttag.as_str());
                    Some(Check {
                        source_tags: all.clone(),
                        tag: tag.clone(),
                        digest: digest.clone(),
                        target_tag: ttag,
                        listed,
                    })
                })
                .collect();
            let results: Vec<Report> = futures_util::stream::iter(checks)
                .map(|c: Check| self.check(rule, &source, dst, c, opts, sink))
                .buffer_unordered(self.jobs)
                .collect()
                .await;
            for r in &results {
                report.add(r);
            }
            if prune {
                let gone = plan::prunable(rule, target, &all_set, listed);
                let results: Vec<Report> = futures_util::stream::iter(gone)
                    .map(|(stag, ttag): (String, String)| self.gone(rule, &source, dst, stag, ttag, opts, sink))
                    .buffer_unordered(self.jobs)
                    .collect()
                    .await;
                for r in &results {
                    report.add(r);
                }
            }
        }
        report
    }

    /// Compare one wanted tag with its target tag (a HEAD only when the target lists it).
    async fn check(&self, rule: &Rule, source: &Repo, dst: &Repo, c: Check, opts: Options, sink: Sink<'_>) -> Report {
        let mut r = Report::default();
        let current = if c.listed {
            match self.resolve(dst, &c.target_tag).await {
                Ok(d) => d,
                Err(e) => {
                    Self::problem(rule, &mut r, dst, e, sink);
                    return r;
                }
            }
        } else {
            None
        };
        // An unresolved tag is listed by no target: missing, whatever it points at.
        let kind = match &c.digest {
            Some(d) => plan::classify(d, current.as_ref()),
            None => Some(Kind::Missing),
        };
        if let Some(kind) = kind {
            let drift = Drift {
                rule: rule.name.clone(),
                kind,
                source: source.clone(),
                source_tag: c.tag,
                digest: c.digest,
                target: dst.clone(),
                tag: c.target_tag,
                target_digest: current,
            };
            self.handle(rule, &drift, opts, &mut r, sink, Some(c.source_tags)).await;
        }
        r
    }

    /// A target tag whose source tag is gone: resolve what it points at (the digest the
    /// guarded delete must still find) and hand it on.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them (issue 13)"
    )]
    async fn gone(
        &self,
        rule: &Rule,
        source: &Repo,
        dst: &Repo,
        source_tag: String,
        tag: String,
        opts: Options,
        sink: Sink<'_>,
    ) -> Report {
        let mut r = Report::default();
        let expected = match self.resolve(dst, &tag).await {
            Ok(Some(d)) => d,
            Ok(None) => return r,
            Err(e) => {
                Self::problem(rule, &mut r, dst, e, sink);
                return r;
            }
        };
        let drift = Drift {
            rule: rule.name.clone(),
            kind: Kind::Gone,
            source: source.clone(),
            source_tag,
            digest: None,
            target: dst.clone(),
            tag,
            target_digest: Some(expected),
        };
        self.handle(rule, &drift, opts, &mut r, sink, None).await;
        r
    }

    /// Count `drift`, repair it when applying, and report it. `source_tags`: the source
    /// repository's tag list, for the executor's hint.
    async fn handle(
        &self,
        rule: &Rule,
        drift: &Drift,
        opts: Options,
        report: &mut Report,
        sink: Sink<'_>,
        source_tags: Option<Arc<Vec<String>>>,
    ) {
        report.found[index(drift.kind)] += 1;
        if !opts.apply {
            sink(Entry::Drift(drift, None));
            return;
        }
        // A rule's own `delete_dry_run` wins over the pipeline's.
        let deletes = DeletePolicy {
            dry_run: rule.delete_dry_run.unwrap_or(self.deletes.dry_run),
            ..self.deletes
        };
        let item = drift.item(deletes, source_tags).requiring(&rule.require);
        let result = self.executor.execute(&item, &drift.rule).await;
        match &result {
            Ok(Outcome::Done(Done::Copied { .. } | Done::TagWritten | Done::Deleted)) => {
                report.repaired[index(drift.kind)] += 1;
            }
            Ok(_) => report.settled += 1,
            Err(_) => report.failed += 1,
        }
        sink(Entry::Drift(drift, Some(&result)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::config::{Matcher, RegistryConfig, RuleTarget};
    use crate::engine::Item;
    use crate::registry::RegistrySet;
    use crate::replicate::Options as CopyOptions;

    /// An executor that must never be reached.
    struct Unreachable;

    impl Execute for Unreachable {
        async fn execute(&self, item: &Item, _rule: &str) -> ItemResult {
            panic!("executor reached with {item:?}")
        }
    }

    #[tokio::test]
    async fn unhealthy_registries_are_reported_not_contacted() {
        // Nothing listens on the discard port: a contact would be a Transient transport error.
        let (src, dst) = ("127.0.0.1:9", "127.0.0.1:7");
        let set = RegistrySet::from_configs([RegistryConfig::new(src), RegistryConfig::new(dst)]).unwrap();
        let replicator = Arc::new(Replicator::new(Arc::new(set), CopyOptions::default()));
        let health = Arc::new(Health::new(
            [src.to_string(), dst.to_string()],
            vec![(src.to_string(), vec![dst.to_string()])],
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        health.failed(src, "credentials rejected");
        let policy = DeletePolicy {
            dry_run: false,
            fallback: crate::config::TagDeleteFallback::Off,
        };
        let syncer = Syncer::new(replicator, Arc::new(Unreachable), policy, 2).with_health(health);
        let rule = Rule::for_tests(
            "r",
            src,
            Matcher::try_glob("app").unwrap(),
            vec![RuleTarget {
                registry: dst.into(),
                repository: "{repository}".into(),
                tag: None,
                strip_prefix: None,
            }],
        );
        let seen = Mutex::new(Vec::new());
        let sink = |e: Entry<'_>| {
            if let Entry::Problem(p) = e {
                seen.lock().unwrap().push(p.clone());
            }
        };
        let opts = Options {
            apply: true,
            prune: false,
        };
        let report = syncer.run(&[rule], opts, &CancellationToken::new(), &sink).await;
        assert_eq!((report.problems, report.tags_checked), (1, 0));
        let problems = seen.into_inner().unwrap();
        assert_eq!(problems[0].class, ErrorClass::Systemic);
        assert!(problems[0].message.contains("not contacted"), "{problems:?}");
    }
}
