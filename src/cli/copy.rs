//! `regrelay copy`: copy images given on the command line (or as `SRC DST` pairs in a file)
//! and verify each target, with a progress line on a terminal.
//!
//! Role: parse the pairs and the credential flags into registry configurations, build the
//! copy engine through the composition root shared with `regrelay run`
//! ([`crate::app::replicator`]), run the copies with bounded concurrency, print one line
//! per image (stdout) or per failure (stderr), and return a [`Summary`].
//!
//! Must never: contact a host that is not named in a pair (the engine's registry set holds
//! exactly those hosts), print a password, or report an image as copied before the engine
//! verified it at the target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt as _;

use crate::app;
use crate::config::{Auth, RegistryConfig, RetryPolicy, Secret, SecretSource};
use crate::oci::Reference;
use crate::registry::Registries;
use crate::replicate::{self, Options, Outcome, Replicator, Task};

/// The arguments of `regrelay copy`.
#[derive(Debug, Args)]
// The field docs are `--help` text for a terminal, not rustdoc links.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct CopyArgs {
    /// Source reference: HOST/REPOSITORY[:TAG][@DIGEST].
    #[arg(required_unless_present = "from_file")]
    pub source: Option<String>,
    /// Target reference: HOST/REPOSITORY[:TAG]. Without a tag, the source tag is used.
    #[arg(required_unless_present = "from_file")]
    pub dest: Option<String>,
    /// Copy many images: a file with one `SRC DST` pair per line (`#` comments allowed).
    #[arg(long, conflicts_with_all = ["source", "dest"])]
    pub from_file: Option<PathBuf>,
    /// Copy only this platform of an index (`os/arch[/variant]`); repeatable. Changes the
    /// index and therefore its digest.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Do not copy referrers and cosign signature/attestation/SBOM tags.
    #[arg(long)]
    pub no_referrers: bool,
    /// Talk plain HTTP to this registry host; repeatable. Loopback hosts always use HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// `HOST=FILE`: trust the PEM CA certificates in FILE for this registry host besides
    /// the system's roots (a private CA; the host is then reached over HTTPS, loopback
    /// too); repeatable.
    #[arg(long = "registry-ca", value_name = "HOST=FILE")]
    pub registry_ca: Vec<String>,
    /// Concurrent images with --from-file, and concurrent blob transfers unless
    /// --blob-jobs says otherwise.
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// Concurrent blob transfers, shared by every image (default: --jobs). Over a long
    /// round trip, more transfers than images keep each image's blobs moving at once.
    #[arg(long)]
    pub blob_jobs: Option<usize>,
    /// Attempts per registry request (retries use exponential backoff with full jitter
    /// and honour Retry-After).
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// Upload blobs in chunks of this many bytes instead of one request.
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// Docker config file for credentials (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Basic credentials for the source and the target registry.
    #[command(flatten)]
    pub creds: CredArgs,
    /// `text` (one line per image) or `json` (one JSON object per verified image on
    /// stdout: source, target, digest, outcome, bytes, blobs, referrers, seconds).
    /// Failures go to stderr either way.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How `copy` reports verified images on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One human-readable line per image.
    Text,
    /// One JSON object per image, one per line (for scripts).
    Json,
}

/// The credential flags of `regrelay copy`.
#[derive(Debug, Args)]
pub struct CredArgs {
    /// User name for the source registry (with --src-password-env or --src-password-file).
    #[arg(long)]
    pub src_username: Option<String>,
    /// Environment variable holding the source registry password.
    #[arg(long)]
    pub src_password_env: Option<String>,
    /// File holding the source registry password.
    #[arg(long)]
    pub src_password_file: Option<PathBuf>,
    /// User name for the target registry.
    #[arg(long)]
    pub dest_username: Option<String>,
    /// Environment variable holding the target registry password.
    #[arg(long)]
    pub dest_password_env: Option<String>,
    /// File holding the target registry password.
    #[arg(long)]
    pub dest_password_file: Option<PathBuf>,
}

/// What the binary knows about its surroundings that `copy` needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The docker config file used when `--authfile` is not given and a host has no
    /// `--src-*`/`--dest-*` credentials.
    pub docker_config: PathBuf,
    /// Show a progress line on stderr (a terminal is attached).
    pub progress: bool,
}

/// Why `copy` did not start: bad usage or configuration (exit code 64); nothing was
/// contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// How the copies went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Images attempted.
    pub total: usize,
    /// Images whose copy failed (the rest are verified at their target).
    pub failed: usize,
}

/// Copy every pair named by `args` and verify each target; print one line per verified
/// image on stdout and one `error: …` line per failure on stderr.
pub async fn run(args: CopyArgs, ctx: Context) -> Result<Summary, UsageError> {
    if args.jobs == 0 {
        return Err(UsageError("--jobs must be at least 1".into()));
    }
    if args.blob_jobs == Some(0) {
        return Err(UsageError("--blob-jobs must be at least 1".into()));
    }
    let pairs = pairs(&args).map_err(UsageError)?;
    let configs = registry_configs(&args, &ctx.docker_config, &pairs).map_err(UsageError)?;
    let opts = Options {
        platforms: args.platforms.clone(),
        referrers: !args.no_referrers,
        blob_jobs: args.blob_jobs.unwrap_or(args.jobs),
        ..Options::default()
    };
    let engine = app::replicator(configs, opts).map_err(|e| UsageError(e.to_string()))?;
    let bar = ctx.progress.then(|| progress_bar(&engine));
    let tasks: Vec<Task> = pairs.into_iter().map(|(s, d)| Task::from_refs(s, &d)).collect();
    let timed: Vec<(Task, Result<Outcome, replicate::Error>, f64)> = futures_util::stream::iter(tasks)
        .map(|t| {
            let engine = engine.clone();
            async move {
                let started = tokio::time::Instant::now();
                let r = engine.replicate(&t).await;
                (t, r, started.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(args.jobs)
        .collect()
        .await;
    let seconds: Vec<f64> = timed.iter().map(|(_, _, s)| *s).collect();
    let results: Vec<(Task, Result<Outcome, replicate::Error>)> = timed.into_iter().map(|(t, r, _)| (t, r)).collect();
    if let Some((bar, handle)) = bar {
        handle.abort();
        bar.finish_and_clear();
    }
    Ok(report(
        &results,
        Reporting {
            format: args.output,
            seconds: &seconds,
        },
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}

/// How [`report`] prints: the format, and each result's wall time (same order; missing
/// entries count as 0).
#[derive(Debug, Clone, Copy)]
struct Reporting<'a> {
    format: OutputFormat,
    seconds: &'a [f64],
}

/// Print each result (verified images to `out`, errors and the many-images total to
/// `err`) and count them.
fn report(
    results: &[(Task, Result<Outcome, replicate::Error>)],
    how: Reporting<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Summary {
    let total = results.len();
    let mut failed = 0;
    // A closed stdout or stderr (`| head`) must not turn verified copies into a failure.
    for (i, (task, result)) in results.iter().enumerate() {
        match result {
            Ok(o) if how.format == OutputFormat::Json => {
                let s = o.stats();
                let outcome = if matches!(o, Outcome::AlreadyPresent { .. }) {
                    "already_present"
                } else {
                    "replicated"
                };
                let line = serde_json::json!({
                    "source": task.source.to_string(),
                    "target": task.target_ref(),
                    "digest": o.digest().to_string(),
                    "outcome": outcome,
                    "bytes": s.bytes_copied,
                    "blobs": {
                        "uploaded": s.blobs_uploaded,
                        "mounted": s.blobs_mounted,
                        "skipped": s.blobs_skipped,
                    },
                    "referrers": s.referrers_copied,
                    "seconds": how.seconds.get(i).copied().unwrap_or(0.0),
                });
                let _ = writeln!(out, "{line}");
            }
            Ok(o) => {
                let s = o.stats();
                let what = if matches!(o, Outcome::AlreadyPresent { .. }) {
                    "already present"
                } else {
                    "replicated"
                };
                let _ = writeln!(
                    out,
                    "{} {what} {}@{} (verified; {} bytes copied, blobs: {} uploaded, {} mounted, {} skipped; {} referrers)",
                    task.source,
                    task.target_ref(),
                    o.digest(),
                    s.bytes_copied,
                    s.blobs_uploaded,
                    s.blobs_mounted,
                    s.blobs_skipped,
                    s.referrers_copied
                );
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(err, "error: {e}");
            }
        }
    }
    if total > 1 {
        let _ = writeln!(err, "{} of {total} copies verified, {failed} failed", total - failed);
    }
    Summary { total, failed }
}

/// Parse the `SRC DST` pairs from the arguments or the file.
fn pairs(args: &CopyArgs) -> Result<Vec<(Reference, Reference)>, String> {
    let raw: Vec<(usize, String, String)> = match &args.from_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            pairs_in(path, &text)?
        }
        None => vec![(
            0,
            args.source.clone().unwrap_or_default(),
            args.dest.clone().unwrap_or_default(),
        )],
    };
    let at = |line: usize| match &args.from_file {
        Some(p) => format!("{}:{line}: ", p.display()),
        None => String::new(),
    };
    raw.into_iter()
        .map(|(line, s, d)| {
            let src: Reference = s.parse().map_err(|e| format!("{}source: {e}", at(line)))?;
            let dst: Reference = d.parse().map_err(|e| format!("{}target: {e}", at(line)))?;
            if src.tag.is_none() && src.digest.is_none() {
                return Err(format!("{}source {src} needs a tag or a digest", at(line)));
            }
            if dst.digest.is_some() {
                return Err(format!(
                    "{}target {dst} must not carry a digest: the digest is the source's",
                    at(line)
                ));
            }
            Ok((src, dst))
        })
        .collect()
}

/// The `(line, SRC, DST)` pairs of a `--from-file` file's `text`.
fn pairs_in(path: &Path, text: &str) -> Result<Vec<(usize, String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(d), None) => out.push((i + 1, s.to_owned(), d.to_owned())),
            _ => return Err(format!("{}:{}: expected `SRC DST`", path.display(), i + 1)),
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no `SRC DST` pairs", path.display()));
    }
    Ok(out)
}

/// The password given by `--{what}-password-env` or `--{what}-password-file`, if any.
fn password(what: &str, env: &Option<String>, file: &Option<PathBuf>) -> Result<Option<Secret>, String> {
    let source = match (env, file) {
        (Some(_), Some(_)) => return Err(format!("give {what} password as an env var or a file, not both")),
        (Some(v), None) => SecretSource::Env(v.clone()),
        (None, Some(f)) => SecretSource::File(f.clone()),
        (None, None) => return Ok(None),
    };
    source
        .resolve(&format!("{what} password"))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Registry configs for every host named in the pairs: the `--src-*` credentials for
/// source hosts, `--dest-*` for target hosts (the first one given wins for a host that is
/// both), the docker config file for the rest.
fn registry_configs(
    args: &CopyArgs,
    docker_config: &Path,
    pairs: &[(Reference, Reference)],
) -> Result<Vec<RegistryConfig>, String> {
    let c = &args.creds;
    let src_pw = password("--src", &c.src_password_env, &c.src_password_file)?;
    let dst_pw = password("--dest", &c.dest_password_env, &c.dest_password_file)?;
    let basic = |user: &Option<String>, pw: Option<Secret>, side: &str| -> Result<Option<Auth>, String> {
        match (user, pw) {
            (Some(u), Some(p)) => Ok(Some(Auth::Basic {
                username: u.clone(),
                password: p,
            })),
            (None, None) => Ok(None),
            _ => Err(format!(
                "--{side}-username and a --{side}-password-* option go together"
            )),
        }
    };
    let src_auth = basic(&c.src_username, src_pw, "src")?;
    let dst_auth = basic(&c.dest_username, dst_pw, "dest")?;
    let docker = Auth::DockerConfig {
        path: args.authfile.clone().unwrap_or_else(|| docker_config.to_path_buf()),
    };
    let mut hosts: Vec<(String, Option<Auth>)> = Vec::new();
    for (s, d) in pairs {
        for (host, auth) in [(&s.registry, &src_auth), (&d.registry, &dst_auth)] {
            match hosts.iter_mut().find(|(h, _)| h == host) {
                Some((_, existing)) => {
                    if existing.is_none() {
                        *existing = auth.clone();
                    }
                }
                None => hosts.push((host.clone(), auth.clone())),
            }
        }
    }
    let retry = RetryPolicy {
        attempts: args.retries.max(1),
        ..RetryPolicy::cli()
    };
    let cas = super::registry_cas(&args.registry_ca)?;
    Ok(hosts
        .into_iter()
        .map(|(host, auth)| {
            let mut cfg = RegistryConfig::new(host.clone());
            cfg.insecure = args.insecure.contains(&host);
            cfg.ca_file = cas.iter().find(|(h, _)| *h == host).map(|(_, f)| f.clone());
            cfg.auth = auth.unwrap_or_else(|| docker.clone());
            cfg.retry = retry.clone();
            cfg.chunk_size = args.chunk_size;
            cfg.max_in_flight = (args.jobs.max(args.blob_jobs.unwrap_or(0)) * 4).max(8);
            cfg
        })
        .collect())
}

type Bar = (indicatif::ProgressBar, tokio::task::JoinHandle<()>);

/// A spinner with bytes copied and blobs done, redrawn until its task is aborted.
fn progress_bar<S: Registries>(engine: &Arc<Replicator<S>>) -> Bar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let progress = engine.progress();
    let b = bar.clone();
    let handle = tokio::spawn(async move {
        loop {
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let done = progress.blobs_done.load(Ordering::Relaxed);
            let total = progress.blobs_total.load(Ordering::Relaxed);
            b.set_message(format!("{} copied, blobs {done}/{total}", indicatif::HumanBytes(bytes)));
            b.tick();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    (bar, handle)
}

#[cfg(test)]
mod tests;
