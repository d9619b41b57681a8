//! The `regrelay` binary: parses the command line, sets up logging, builds the registry
//! clients and the copy engine, and maps results to exit codes.
//!
//! Exit codes: 0 = every copy verified; 1 = at least one copy failed; 64 = bad usage or
//! configuration (nothing was contacted).
//!
//! This is the only place that reads environment variables and operator-named files
//! (besides docker config files, read lazily by `registry::auth`).

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt as _;

use regrelay::config::{Auth, RegistryConfig, RetryPolicy, Secret, SecretSource};
use regrelay::oci::Reference;
use regrelay::registry::RegistrySet;
use regrelay::replicate::{Options, Outcome, Replicator, Task};

/// Exit code for bad usage or configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "regrelay",
    about = "Verified, digest-preserving replication of container images between OCI registries"
)]
struct Cli {
    /// Log format on stderr: `text` or `json` (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy an image (index, children, blobs, referrers, signatures) and verify the target.
    Copy(Box<CopyArgs>),
    /// Run the daemon: pull registry events from the configured source, replicate, verify,
    /// and acknowledge each message only once its targets are verified.
    Run(ConfigArgs),
    /// Validate a configuration file and print the effective configuration (secrets
    /// redacted). Exit 0 when valid, 64 when not. Contacts nothing.
    CheckConfig(ConfigArgs),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct ConfigArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = "REGRELAY_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct CopyArgs {
    /// Source reference: HOST/REPOSITORY[:TAG][@DIGEST].
    #[arg(required_unless_present = "from_file")]
    source: Option<String>,
    /// Target reference: HOST/REPOSITORY[:TAG]. Without a tag, the source tag is used.
    #[arg(required_unless_present = "from_file")]
    dest: Option<String>,
    /// Copy many images: a file with one `SRC DST` pair per line (`#` comments allowed).
    #[arg(long, conflicts_with_all = ["source", "dest"])]
    from_file: Option<PathBuf>,
    /// Copy only this platform of an index (`os/arch[/variant]`); repeatable. Changes the
    /// index and therefore its digest.
    #[arg(long = "platform")]
    platforms: Vec<String>,
    /// Do not copy referrers and cosign signature/attestation/SBOM tags.
    #[arg(long)]
    no_referrers: bool,
    /// Talk plain HTTP to this registry host; repeatable. Loopback hosts always use HTTP.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Concurrent blob transfers, and concurrent images with --from-file.
    #[arg(long, short = 'j', default_value_t = 4)]
    jobs: usize,
    /// Attempts per registry request (retries use exponential backoff with full jitter
    /// and honour Retry-After).
    #[arg(long, default_value_t = 6)]
    retries: u32,
    /// Upload blobs in chunks of this many bytes instead of one request.
    #[arg(long)]
    chunk_size: Option<u64>,
    /// Docker config file for credentials (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long)]
    authfile: Option<PathBuf>,
    #[command(flatten)]
    creds: CredArgs,
}

#[derive(Args)]
struct CredArgs {
    /// User name for the source registry (with --src-password-env or --src-password-file).
    #[arg(long)]
    src_username: Option<String>,
    /// Environment variable holding the source registry password.
    #[arg(long)]
    src_password_env: Option<String>,
    /// File holding the source registry password.
    #[arg(long)]
    src_password_file: Option<PathBuf>,
    /// User name for the target registry.
    #[arg(long)]
    dest_username: Option<String>,
    /// Environment variable holding the target registry password.
    #[arg(long)]
    dest_password_env: Option<String>,
    /// File holding the target registry password.
    #[arg(long)]
    dest_password_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format.as_deref());
    match cli.command {
        Command::Version => {
            println!("regrelay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Copy(args) => block_on(copy(*args)),
        Command::CheckConfig(args) => match regrelay::config::load(&args.config) {
            Ok(cfg) => {
                print!("{}", regrelay::config::render(&cfg));
                eprintln!("{}: valid", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        },
        Command::Run(args) => {
            // Validate everything before anything binds or connects.
            let cfg = match regrelay::config::load(&args.config) {
                Ok(c) => c,
                Err(e) => return usage_error(e),
            };
            block_on(run(cfg))
        }
    }
}

fn block_on(fut: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(fut);
            // Everything has finished; do not wait for a blocking read that can never end
            // (the file source's stdin reader after SIGTERM).
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `regrelay run`: 0 after a clean shutdown (or a file source fully verified), 1 when
/// lines of a file source failed or startup failed, 64 for a bad configuration.
async fn run(cfg: regrelay::config::Config) -> ExitCode {
    // systemd's Type=notify protocol; both are unset outside systemd.
    let notifier = regrelay::notify::Notifier::new(
        std::env::var("NOTIFY_SOCKET").ok().as_deref(),
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
    );
    match regrelay::app::run(cfg, notifier).await {
        Ok(regrelay::app::Finished::Stopped) => ExitCode::SUCCESS,
        Ok(regrelay::app::Finished::Exhausted { acked, failed }) => {
            eprintln!("{acked} events verified or ignored, {failed} failed");
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(regrelay::app::Error::Config(e)) => usage_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGRELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("regrelay=info"));
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// Parse the `SRC DST` pairs from the arguments or the file.
fn pairs(args: &CopyArgs) -> Result<Vec<(Reference, Reference)>, String> {
    let raw: Vec<(usize, String, String)> = match &args.from_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
            out
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

fn default_docker_config() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    home.join(".docker").join("config.json")
}

/// Registry configs for every host named in the pairs.
fn registry_configs(args: &CopyArgs, pairs: &[(Reference, Reference)]) -> Result<Vec<RegistryConfig>, String> {
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
        path: args.authfile.clone().unwrap_or_else(default_docker_config),
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
    Ok(hosts
        .into_iter()
        .map(|(host, auth)| {
            let mut cfg = RegistryConfig::new(host.clone());
            cfg.insecure = args.insecure.contains(&host);
            cfg.auth = auth.unwrap_or_else(|| docker.clone());
            cfg.retry = retry.clone();
            cfg.chunk_size = args.chunk_size;
            cfg.max_in_flight = (args.jobs * 4).max(8);
            cfg
        })
        .collect())
}

async fn copy(args: CopyArgs) -> ExitCode {
    if args.jobs == 0 {
        return usage_error("--jobs must be at least 1");
    }
    let pairs = match pairs(&args) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    let configs = match registry_configs(&args, &pairs) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let registries = match RegistrySet::from_configs(configs) {
        Ok(r) => Arc::new(r),
        Err(e) => return usage_error(e),
    };
    let opts = Options {
        platforms: args.platforms.clone(),
        referrers: !args.no_referrers,
        blob_jobs: args.jobs,
        ..Options::default()
    };
    let engine = Arc::new(Replicator::new(registries, opts));
    let bar = progress_bar(&engine);
    let tasks: Vec<Task> = pairs.into_iter().map(|(s, d)| Task::from_refs(s, &d)).collect();
    let total = tasks.len();
    let results: Vec<(Task, Result<Outcome, regrelay::replicate::Error>)> = futures_util::stream::iter(tasks)
        .map(|t| {
            let engine = engine.clone();
            async move {
                let r = engine.replicate(&t).await;
                (t, r)
            }
        })
        .buffer_unordered(args.jobs)
        .collect()
        .await;
    if let Some((bar, handle)) = bar {
        handle.abort();
        bar.finish_and_clear();
    }
    let mut failed = 0;
    for (task, result) in &results {
        match result {
            Ok(o) => {
                let s = o.stats();
                let what = if matches!(o, Outcome::AlreadyPresent { .. }) {
                    "already present"
                } else {
                    "replicated"
                };
                println!(
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
                eprintln!("error: {e}");
            }
        }
    }
    if total > 1 {
        eprintln!("{} of {total} copies verified, {failed} failed", total - failed);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type Bar = (indicatif::ProgressBar, tokio::task::JoinHandle<()>);

/// A bytes-and-blobs progress bar, only when stderr is a terminal.
fn progress_bar<S: regrelay::registry::Registries>(engine: &Replicator<S>) -> Option<Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
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
    Some((bar, handle))
}
