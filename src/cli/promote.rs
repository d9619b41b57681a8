//! `regrelay promote`: promote images as the Kubernetes image promoter's manifests say
//! (plain `--manifest FILE` or `--thin-manifest-dir DIR`), through the executor.
//!
//! Role: parse the manifests, gather the inventory of exactly the repositories they name,
//! plan every edge, print the plan (a table, or one JSON object per edge), and with
//! `--confirm` hand each edge that is not in error to `Execute::execute`. Gates a manifest
//! (`require:`, regrelay's extension) or `--require NAME` names, defined as `[gates.NAME]`
//! in `--config`, run in the executor against each destination digest before its tag is
//! written. `--lint` checks
//! the manifests offline (with `--snapshot FILE`, tag moves too). The caller maps
//! [`Report::exit_code`] to the process exit code: 0 in place or done, 1 on errors,
//! 2 with `--check` when work is pending.
//!
//! Must never: delete anything; contact a host the manifests do not name; let an edge in
//! error hold edges outside its scope unless `--fail-fast`; report an edge done before the
//! executor verified it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures_util::StreamExt as _;

use crate::config::{Auth, RegistryConfig, RetryPolicy};
use crate::engine::{Done, Execute, Executor, Memory, Outcome};
use crate::gates::GateSet;
use crate::promote::manifest::{self, Manifest};
use crate::promote::plan::{self, Action, Inventory, Planned, Unreadable};
use crate::promote::snapshot::Snapshot;
use crate::promote::{inventory, item};
use crate::registry::RegistrySet;
use crate::replicate::{Options, Replicator};

#[path = "promote_report.rs"]
mod report;

pub use report::{Report, Row, RowResult};

/// How the plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table, one line per edge.
    Table,
    /// One JSON object per line per edge.
    Json,
}

/// The arguments of `regrelay promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// A plain promoter manifest (cip's `registries` + `images`).
    #[arg(
        long,
        required_unless_present = "thin_manifest_dir",
        conflicts_with = "thin_manifest_dir"
    )]
    pub manifest: Option<PathBuf>,
    /// A thin manifest directory: `manifests/<x>/promoter-manifest.yaml` and
    /// `images/<x>/images.yaml`.
    #[arg(long)]
    pub thin_manifest_dir: Option<PathBuf>,
    /// Act: copy, tag and repair (without it, only the plan is printed).
    #[arg(long, conflicts_with_all = ["check", "lint"])]
    pub confirm: bool,
    /// Exit 2 when work is pending, 0 when everything is in place, 1 on errors.
    #[arg(long, conflicts_with = "lint")]
    pub check: bool,
    /// Check the manifests offline (schema, overlaps; tag moves with --snapshot).
    #[arg(long)]
    pub lint: bool,
    /// With --lint: a snapshot (images.yaml format) of the destination, to find tag moves
    /// offline.
    #[arg(long, requires = "lint")]
    pub snapshot: Option<PathBuf>,
    /// Let a destination tag that points at another digest be moved.
    #[arg(long)]
    pub allow_tag_moves: bool,
    /// Any error stops everything (cip's behaviour); by default an error fails only its
    /// image (plain manifest) or its thin-manifest directory.
    #[arg(long)]
    pub fail_fast: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// A regrelay configuration whose `[registries]` give hosts their credentials and
    /// settings; hosts it does not list use the docker config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Docker config file for credentials (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Talk plain HTTP to this registry host; repeatable. Loopback hosts always use HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// `HOST=FILE`: trust the PEM CA certificates in FILE for this registry host besides
    /// the system's roots (a private CA; reached over HTTPS, loopback too); repeatable.
    /// Ignored for hosts of `--config`, which set `ca_file` themselves.
    #[arg(long = "registry-ca", value_name = "HOST=FILE")]
    pub registry_ca: Vec<String>,
    /// Edges promoted at once.
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// A gate (`[gates.NAME]` of --config) every destination digest must pass before its
    /// tag is written, besides the manifests' `require:`; repeatable.
    #[arg(long = "require", value_name = "NAME")]
    pub require: Vec<String>,
}

/// What the binary knows about its surroundings that `promote` needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The docker config file used when `--authfile` is not given.
    pub docker_config: PathBuf,
}

/// Why `promote` did not start: bad usage (exit code 64); nothing was contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parse the manifests named by `args`; every error found, each naming file and line.
pub fn manifests(args: &PromoteArgs) -> Result<Vec<Manifest>, Vec<manifest::Error>> {
    match (&args.manifest, &args.thin_manifest_dir) {
        (Some(f), _) => manifest::parse_plain(f).map(|m| vec![m]).map_err(|e| vec![e]),
        (None, Some(d)) => manifest::parse_thin_dir(d),
        (None, None) => Ok(Vec::new()),
    }
}

/// Run `regrelay promote`; print the plan (stdout) and notes and errors (stderr).
pub async fn run(args: PromoteArgs, ctx: Context) -> Result<Report, UsageError> {
    if args.jobs == 0 {
        return Err(UsageError("--jobs must be at least 1".into()));
    }
    let mut err = std::io::stderr();
    let ms = match manifests(&args) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(err, "error: {e}");
            }
            return Ok(Report::invalid(errors.len()));
        }
    };
    if ms.iter().any(Manifest::has_service_accounts) {
        let _ = writeln!(
            err,
            "note: `service-account` entries are ignored; regrelay uses its own credentials (--config, the docker config)"
        );
    }
    let gate_set = match gates(&args, &ms)? {
        Ok(g) => g,
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(err, "error: {e}");
            }
            return Ok(Report::invalid(errors.len()));
        }
    };
    let edges = plan::edges(&ms);
    let planned = if args.lint {
        lint(&args, edges)?
    } else {
        let configs = registry_configs(&args, &ctx, &ms)?;
        let set = Arc::new(RegistrySet::from_configs(configs).map_err(|e| UsageError(e.to_string()))?);
        let (inv, unreadable) = inventory::gather(set.as_ref(), &edges).await;
        let planned = plan::plan(edges, &inv, &unreadable, args.allow_tag_moves, args.fail_fast);
        if args.confirm {
            let engine = Arc::new(Replicator::new(set, Options::default()));
            let executor = Executor::new(
                engine,
                Memory {
                    ttl: Duration::from_secs(600),
                    max_entries: 100_000,
                },
            )
            .with_gates(Arc::new(gate_set));
            let rows = execute(&executor, planned, (args.jobs, args.fail_fast), &args.require).await;
            return Ok(Report::print(
                rows,
                args.output,
                false,
                &mut std::io::stdout().lock(),
                &mut err,
            ));
        }
        planned
    };
    let rows = if args.lint {
        planned.into_iter().map(Row::linted).collect()
    } else {
        planned.into_iter().map(Row::planned).collect()
    };
    Ok(Report::print(
        rows,
        args.output,
        args.check,
        &mut std::io::stdout().lock(),
        &mut err,
    ))
}

/// The gates the promotion requires, from `--config`'s `[gates]`. An unknown name in a
/// manifest's `require:` is a manifest error (file, line, field); in `--require`, or a
/// gate that cannot be built, a usage error.
fn gates(args: &PromoteArgs, ms: &[Manifest]) -> Result<Result<GateSet, Vec<manifest::Error>>, UsageError> {
    if args.require.is_empty() && ms.iter().all(|m| m.require.is_empty()) {
        return Ok(Ok(GateSet::default()));
    }
    let defined = match &args.config {
        Some(p) => {
            crate::config::load(p)
                .map_err(|e| UsageError(e.to_string()))?
                .watch
                .gates
        }
        None => BTreeMap::new(),
    };
    let hint = match &args.config {
        Some(p) => format!("no [gates.NAME] of that name in {}", p.display()),
        None => "gates are defined as [gates.NAME] in a regrelay configuration: pass --config FILE".into(),
    };
    if let Some(n) = args.require.iter().find(|n| !defined.contains_key(*n)) {
        return Err(UsageError(format!("--require {n}: unknown gate ({hint})")));
    }
    let errors: Vec<manifest::Error> = ms
        .iter()
        .flat_map(|m| m.require.iter().enumerate().map(move |(i, n)| (m, i, n)))
        .filter(|(_, _, n)| !defined.contains_key(*n))
        .map(|(m, i, n)| manifest::Error {
            file: m.require_at.0.clone(),
            line: Some(m.require_at.1),
            field: Some(format!("require[{i}]")),
            message: format!("unknown gate {n:?} ({hint})"),
        })
        .collect();
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    GateSet::from_config(&defined)
        .map(Ok)
        .map_err(|e| UsageError(e.to_string()))
}

/// Plan offline: overlaps always; tag moves against `--snapshot` when given.
fn lint(args: &PromoteArgs, edges: Vec<plan::Edge>) -> Result<Vec<Planned>, UsageError> {
    let mut inv = Inventory::default();
    if let Some(path) = &args.snapshot {
        let images = manifest::parse_images(path).map_err(|e| UsageError(e.to_string()))?;
        let snap = Snapshot::from_images(&images);
        // The snapshot stands for every destination: the tags it shows are what they hold.
        for e in &edges {
            let key = (e.destination.host.clone(), e.destination_repository());
            inv.listed.insert(key.clone());
            for (d, tags) in snap.images.get(&e.image).into_iter().flatten() {
                inv.digests.insert((key.0.clone(), key.1.clone(), d.clone()), true);
                for t in tags {
                    inv.tags.insert((key.0.clone(), key.1.clone(), t.clone()), d.clone());
                }
            }
        }
    }
    let planned = plan::plan(edges, &inv, &Unreadable::new(), args.allow_tag_moves, args.fail_fast);
    // Offline without a snapshot, only overlaps are known (with one, the actions are
    // relative to it; the source is never asked, so nothing is `lost`).
    let mut planned = planned;
    if args.snapshot.is_none() {
        for p in &mut planned {
            if !matches!(p.action, Action::Overlap { .. }) {
                p.action = Action::Unchecked;
            }
        }
    }
    Ok(planned)
}

/// Execute every edge that is pending or in place (in place is verified and repaired: a
/// missing referrer or signature is copied) and not held; an edge failure holds the
/// edges of its scope not yet started (of the run, with `fail_fast`).
async fn execute<E: Execute>(
    executor: &E,
    planned: Vec<Planned>,
    (jobs, fail_fast): (usize, bool),
    require: &[String],
) -> Vec<Row> {
    let failed: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let any_failed = std::sync::atomic::AtomicBool::new(false);
    let mut rows: Vec<(usize, Row)> = futures_util::stream::iter(planned.into_iter().enumerate())
        .map(|(i, p)| {
            let failed = &failed;
            let any_failed = &any_failed;
            async move {
                if p.action.is_error() || p.held.is_some() {
                    return (i, Row::planned(p));
                }
                let scope_failed = failed.lock().expect("lock").contains(&p.edge.scope);
                if scope_failed || (fail_fast && any_failed.load(std::sync::atomic::Ordering::Relaxed)) {
                    let why = if scope_failed {
                        format!("held: an edge failed in {}", p.edge.scope)
                    } else {
                        "held: an edge failed and --fail-fast".to_string()
                    };
                    return (i, Row::with(p, RowResult::Held(why), 0, Duration::ZERO));
                }
                let started = tokio::time::Instant::now();
                let result = executor.execute(&item(&p.edge).requiring(require), "promote").await;
                let took = started.elapsed();
                let (r, bytes) = match result {
                    Ok(Outcome::Done(Done::Copied { bytes })) => (RowResult::Copied, bytes),
                    Ok(Outcome::Done(Done::TagWritten)) => (RowResult::Tagged, 0),
                    Ok(Outcome::Done(_)) => (RowResult::Verified, 0),
                    Ok(Outcome::Stale(why)) => (RowResult::Failed(why), 0),
                    Err(f) => (RowResult::Failed(f.message), 0),
                };
                if matches!(r, RowResult::Failed(_)) {
                    failed.lock().expect("lock").insert(p.edge.scope.clone());
                    any_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                (i, Row::with(p, r, bytes, took))
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// One registry config per host the manifests name: from `--config`'s `[registries]`
/// when listed there, else the docker config.
fn registry_configs(args: &PromoteArgs, ctx: &Context, ms: &[Manifest]) -> Result<Vec<RegistryConfig>, UsageError> {
    let from_file: Vec<RegistryConfig> = match &args.config {
        Some(p) => {
            crate::config::load(p)
                .map_err(|e| UsageError(e.to_string()))?
                .registries
        }
        None => Vec::new(),
    };
    let hosts: BTreeSet<String> = ms
        .iter()
        .flat_map(|m| m.registries.iter().map(|r| r.name.host.clone()))
        .collect();
    let docker = Auth::DockerConfig {
        path: args.authfile.clone().unwrap_or_else(|| ctx.docker_config.clone()),
    };
    let cas = super::registry_cas(&args.registry_ca).map_err(UsageError)?;
    Ok(hosts
        .into_iter()
        .map(|host| match from_file.iter().find(|c| c.host == host) {
            Some(c) => c.clone(),
            None => {
                let mut cfg = RegistryConfig::new(host.clone());
                cfg.insecure = args.insecure.contains(&host);
                cfg.ca_file = cas.iter().find(|(h, _)| *h == host).map(|(_, f)| f.clone());
                cfg.auth = docker.clone();
                cfg.retry = RetryPolicy::cli();
                cfg.max_in_flight = (args.jobs * 4).max(16);
                cfg
            }
        })
        .collect())
}
