//! `regrelay sync`: converge every target of the configured rules on its source once,
//! without events (backfill after a lost event, a new rule, an outage), or with
//! `--dry-run`/`--check` only say what differs.
//!
//! Role: parse the flags, load and validate the configuration, pick the rules, build the
//! sync runner through the composition root ([`crate::app::syncer`]: the engine and
//! guarded executor `regrelay run` uses), print one line (or JSON object) per difference
//! on stdout and a summary on stderr, and return the [`Exit`] the binary maps to a code.
//!
//! Must never: change a target when planning (`--dry-run`, `--check`), contact a host that
//! is not configured, or print a secret.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{self, Rule};
use crate::engine::{Done, ItemResult, Outcome};
use crate::sync::{Drift, Entry, Options, Problem, Report};

/// The arguments of `regrelay sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The TOML configuration file (the daemon's).
    #[arg(long, short = 'c', env = "REGRELAY_CONFIG")]
    pub config: PathBuf,
    /// Only this rule (by name); repeatable. Default: every rule.
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Print what differs; change nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Like --dry-run, and exit 2 when something differs (0 when in sync, 1 on errors).
    #[arg(long)]
    pub check: bool,
    /// Also delete target tags whose source tag is gone, for rules with the delete action
    /// (guarded like event deletes; logged only when `delete_dry_run` is set).
    #[arg(long)]
    pub prune: bool,
    /// Output: `text` (one line per difference) or `json` (one object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Manifest HEADs and repairs in flight at once (per-registry limits still apply).
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
}

/// How a sync ended; the binary maps each to its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything checked is in sync, or every difference was repaired (0).
    Clean,
    /// Something failed: a repair, a listing, a HEAD (1).
    Failed,
    /// `--check` found differences (2).
    Drift,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::Failed => 1,
            Exit::Drift => 2,
        }
    }
}

/// Why a sync did not run or could not cover its rules: bad usage or configuration,
/// exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Run `regrelay sync` until done or SIGTERM/SIGINT (which stops it; exit 1).
pub async fn run(args: SyncArgs) -> Result<Exit, UsageError> {
    let cfg = config::load(&args.config).map_err(|e| UsageError(e.to_string()))?;
    let rules = select(&cfg.rules, &args.rules)?;
    let syncer = app::syncer(&cfg, args.jobs).map_err(|e| UsageError(e.to_string()))?;
    let stop = CancellationToken::new();
    if let Err(e) = crate::shutdown::on_signal(stop.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return Ok(Exit::Failed);
    }
    let planning = args.dry_run || args.check;
    let opts = Options {
        apply: !planning,
        prune: args.prune,
    };
    let json = args.output == "json";
    let sink = move |entry: Entry<'_>| {
        let line = match (&entry, json) {
            (Entry::Drift(d, r), true) => drift_json(d, *r).to_string(),
            (Entry::Drift(d, r), false) => drift_text(d, *r),
            (Entry::Problem(p), true) => problem_json(p).to_string(),
            (Entry::Problem(p), false) => {
                eprintln!("error: {}", problem_text(p));
                return;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    };
    let report = syncer.run(&rules, opts, &stop, &sink).await;
    eprintln!("{}", summary(&report, planning));
    let needs_config = report.needs_config;
    if needs_config {
        return Err(UsageError(
            "a pattern rule cannot be enumerated: list its repositories with `repositories = [...]`".into(),
        ));
    }
    Ok(exit(&report, args.check))
}

/// The rules named by `--rule` (all when none), in file order; an unknown name is a
/// usage error naming it.
fn select(rules: &[Rule], names: &[String]) -> Result<Vec<Rule>, UsageError> {
    if let Some(unknown) = names.iter().find(|n| !rules.iter().any(|r| &r.name == *n)) {
        let known: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        return Err(UsageError(format!(
            "--rule {unknown:?}: no such rule (rules: {})",
            known.join(", ")
        )));
    }
    Ok(rules
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .cloned()
        .collect())
}

/// The exit of a finished run (configuration problems are handled before).
fn exit(report: &Report, check: bool) -> Exit {
    if report.failed > 0 || report.problems > 0 || report.cancelled {
        Exit::Failed
    } else if check && report.drift() > 0 {
        Exit::Drift
    } else {
        Exit::Clean
    }
}

fn summary(r: &Report, planning: bool) -> String {
    let [missing, moved, gone] = r.found;
    let mut s = format!(
        "{} tags checked in {} repositories: {missing} missing, {moved} moved, {gone} gone",
        r.tags_checked, r.repositories
    );
    if !planning {
        let repaired: u64 = r.repaired.iter().sum();
        s.push_str(&format!(
            "; {repaired} repaired, {} already settled, {} failed",
            r.settled, r.failed
        ));
    }
    if r.problems > 0 {
        s.push_str(&format!("; {} errors", r.problems));
    }
    if r.cancelled {
        s.push_str("; stopped before the end");
    }
    s
}

fn result_text(r: &ItemResult) -> String {
    match r {
        Ok(Outcome::Done(Done::Copied { bytes })) => format!("copied ({bytes} bytes)"),
        Ok(Outcome::Done(Done::TagWritten)) => "tag written".into(),
        Ok(Outcome::Done(Done::InPlace)) => "already in place".into(),
        Ok(Outcome::Done(Done::Deleted)) => "deleted".into(),
        Ok(Outcome::Done(Done::DryRun)) => "dry run: not deleted (delete_dry_run)".into(),
        Ok(Outcome::Stale(why)) => format!("skipped: {why}"),
        Err(f) => format!("failed ({}): {}", f.class.as_str(), f.message),
    }
}

fn result_json(r: &ItemResult) -> (&'static str, Option<String>) {
    match r {
        Ok(Outcome::Done(Done::Copied { .. })) => ("copied", None),
        Ok(Outcome::Done(Done::TagWritten)) => ("tag_written", None),
        Ok(Outcome::Done(Done::InPlace)) => ("in_place", None),
        Ok(Outcome::Done(Done::Deleted)) => ("deleted", None),
        Ok(Outcome::Done(Done::DryRun)) => ("dry_run", None),
        Ok(Outcome::Stale(why)) => ("skipped", Some(why.clone())),
        Err(f) => ("failed", Some(f.message.clone())),
    }
}

/// `missing  src/team/app:v1@sha256:… -> dst/mirror/team/app:v1 [rule r]: copied (…)`
fn drift_text(d: &Drift, result: Option<&ItemResult>) -> String {
    let source = match &d.digest {
        Some(digest) => format!("{}:{}@{digest}", d.source, d.source_tag),
        None => format!("{}:{}", d.source, d.source_tag),
    };
    let target = match &d.target_digest {
        Some(digest) => format!("{}:{}@{digest}", d.target, d.tag),
        None => format!("{}:{}", d.target, d.tag),
    };
    let arrow = if d.kind == crate::sync::Kind::Gone {
        "gone, delete"
    } else {
        "->"
    };
    let mut line = format!("{:<7} {source} {arrow} {target} [rule {}]", d.kind.as_str(), d.rule);
    if let Some(r) = result {
        line.push_str(": ");
        line.push_str(&result_text(r));
    }
    line
}

fn drift_json(d: &Drift, result: Option<&ItemResult>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "rule": d.rule,
        "kind": d.kind.as_str(),
        "source": d.source.to_string(),
        "source_tag": d.source_tag,
        "digest": d.digest.as_ref().map(ToString::to_string),
        "target": d.target.to_string(),
        "tag": d.tag,
        "target_digest": d.target_digest.as_ref().map(ToString::to_string),
    });
    if let Some(r) = result {
        let (outcome, detail) = result_json(r);
        v["result"] = outcome.into();
        if let Some(detail) = detail {
            v["detail"] = detail.into();
        }
    }
    v
}

fn problem_text(p: &Problem) -> String {
    match &p.repository {
        Some(r) if !p.message.starts_with("rule ") => format!("rule {}: {r}: {}", p.rule, p.message),
        _ => p.message.clone(),
    }
}

fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({
        "rule": p.rule,
        "kind": "error",
        "repository": p.repository,
        "class": p.class.as_str(),
        "error": p.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Failure, Repo};
    use crate::oci::Digest;
    use crate::replicate::ErrorClass;
    use crate::sync::Kind;

    fn drift(kind: Kind) -> Drift {
        Drift {
            rule: "mirror".into(),
            kind,
            source: Repo::new("src.example", "team/app"),
            source_tag: "v1".into(),
            digest: Some(Digest::sha256_of(b"a")),
            target: Repo::new("dst.example", "m/team/app"),
            tag: "v1".into(),
            target_digest: (kind == Kind::Moved).then(|| Digest::sha256_of(b"b")),
        }
    }

    #[test]
    fn exit_codes_follow_failures_then_drift() {
        let mut r = Report::default();
        assert_eq!(exit(&r, true), Exit::Clean);
        r.found[0] = 1;
        assert_eq!(exit(&r, true), Exit::Drift);
        assert_eq!(exit(&r, false), Exit::Clean);
        r.problems = 1;
        assert_eq!(exit(&r, true), Exit::Failed);
        assert_eq!([Exit::Clean, Exit::Failed, Exit::Drift].map(Exit::code), [0, 1, 2]);
    }

    #[test]
    fn lines_name_both_sides_and_the_result() {
        let d = drift(Kind::Moved);
        let line = drift_text(&d, None);
        assert!(line.starts_with("moved   src.example/team/app:v1@sha256:"), "{line}");
        assert!(line.contains(" -> dst.example/m/team/app:v1@sha256:"), "{line}");
        assert!(line.ends_with("[rule mirror]"), "{line}");
        let failed: ItemResult = Err(Failure::permanent("gone"));
        assert!(drift_text(&d, Some(&failed)).ends_with(": failed (permanent): gone"));
        let v = drift_json(
            &drift(Kind::Missing),
            Some(&Ok(Outcome::Done(Done::Copied { bytes: 3 }))),
        );
        assert_eq!(v["kind"], "missing");
        assert_eq!(v["result"], "copied");
        assert_eq!(v["target_digest"], serde_json::Value::Null);
        let p = Problem {
            rule: "mirror".into(),
            repository: Some("src.example/x".into()),
            class: ErrorClass::Transient,
            message: "list tags failed".into(),
            needs_config: false,
        };
        assert_eq!(problem_text(&p), "rule mirror: src.example/x: list tags failed");
        assert_eq!(problem_json(&p)["class"], "transient");
    }

    #[test]
    fn unknown_rule_names_are_usage_errors() {
        let e = select(&[], &["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("--rule \"nope\": no such rule"), "{e}");
        assert!(select(&[], &[]).unwrap().is_empty());
    }
}
