//! The `regrelay` binary: parses the command line, sets up logging, hands each command to
//! its library front end (`run` to [`regrelay::app`], `copy`, `explain`, `promote`,
//! `snapshot`, `sync` and `watch` to [`regrelay::cli`], `check-config` to
//! [`regrelay::config`]) and maps the result to an exit code.
//!
//! Exit codes: 0 = success (every copy verified, a clean shutdown); 1 = at least one copy
//! or line failed, or startup failed; 2 = `promote --check` found work pending or
//! `sync --check` found differences; 64 = bad usage or configuration (nothing was
//! contacted, except by a `sync` whose pattern rule the registry's catalog cannot
//! enumerate).
//!
//! This is the only place that reads the process environment for defaults (`DOCKER_CONFIG`,
//! `HOME`, systemd's `NOTIFY_SOCKET`); secrets come only from variables and files the
//! operator names (config `*_env`/`*_file`, `--*-password-env`/`--*-password-file`).

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use regrelay::cli::copy::{self, CopyArgs};
use regrelay::cli::explain::{self, ExplainArgs};
use regrelay::cli::promote::{self, PromoteArgs};
use regrelay::cli::snapshot::{self, SnapshotArgs};
use regrelay::cli::sync::{self as sync_cmd, SyncArgs};

/// Exit code for bad usage or configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// `0.1.0 (3f9a2c1e4b5d)`: the crate version and the git commit it was built from
/// (`unknown` when built outside a git checkout; see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("REGRELAY_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "regrelay",
    version = VERSION,
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
    /// Promote images as Kubernetes image promoter (cip) manifests say: dry run by default,
    /// `--confirm` acts, `--check` exits 2 when work is pending, `--lint` checks offline.
    Promote(Box<PromoteArgs>),
    /// Print what a registry prefix holds in cip's images.yaml (or CSV) format.
    Snapshot(SnapshotArgs),
    /// Run the daemon: pull registry events from the configured source, replicate, verify,
    /// and acknowledge each message only once its targets are verified.
    Run(RunArgs),
    /// Decode one event and print, for each route, the rule, the target and what would
    /// happen. Contacts nothing unless --resolve (HEAD requests, never a write).
    Explain(ExplainArgs),
    /// Converge the targets of the configured rules on their sources once, without events
    /// (backfill, repair); `--dry-run`/`--check` only report. Exit 0 in sync or repaired,
    /// 1 on errors, 2 when `--check` finds differences, 64 on bad usage or configuration.
    Sync(SyncArgs),
    /// Validate a configuration file and print the effective configuration (secrets
    /// redacted). Exit 0 when valid, 64 when not. Contacts nothing.
    CheckConfig(ConfigArgs),
    /// Run the `[[watch]]` blocks (buffered base images) without an event source: poll
    /// each watched tag, gate new digests in staging, promote them. `--once` for a CronJob.
    Watch(WatchArgs),
    /// Print the version and the git commit it was built from (also `--version`).
    Version,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Plan and log every route of every message, write nothing, and hand each message
    /// back to the broker at once (nack; nothing is acked or rejected).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct ConfigArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = "REGRELAY_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Poll every watch once and exit: 0 unless a tag could not be polled.
    #[arg(long)]
    once: bool,
    /// Gate again the digests a gate rejected earlier (as recorded in the state file).
    #[arg(long)]
    retry_rejected: bool,
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
            println!("regrelay {VERSION}");
            ExitCode::SUCCESS
        }
        Command::Copy(args) => {
            let ctx = copy::Context {
                docker_config: default_docker_config(),
                progress: std::io::stderr().is_terminal(),
            };
            block_on(async move {
                match copy::run(*args, ctx).await {
                    Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
                    Ok(_) => ExitCode::FAILURE,
                    Err(e) => usage_error(e),
                }
            })
        }
        Command::Promote(args) => {
            let ctx = promote::Context {
                docker_config: default_docker_config(),
            };
            block_on(async move {
                match promote::run(*args, ctx).await {
                    Ok(report) => ExitCode::from(report.exit_code()),
                    Err(e) => usage_error(e),
                }
            })
        }
        Command::Snapshot(args) => block_on(async move {
            match snapshot::run(args, default_docker_config()).await {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(Ok(e)) => usage_error(e),
                Err(Err(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Sync(args) => block_on(async move {
            match sync_cmd::run(args).await {
                Ok(exit) => ExitCode::from(exit.code()),
                Err(e) => usage_error(e),
            }
        }),
        Command::CheckConfig(args) => match regrelay::config::load(&args.config) {
            Ok(cfg) => {
                print!("{}", regrelay::config::render(&cfg));
                eprintln!("{}: valid", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        },
        Command::Watch(args) => {
            let cfg = match regrelay::config::load(&args.config.config) {
                Ok(c) => c,
                Err(e) => return usage_error(e),
            };
            block_on(watch(cfg, args.once, args.retry_rejected))
        }
        Command::Run(args) => {
            // Validate everything before anything binds or connects.
            let mut cfg = match regrelay::config::load(&args.config.config) {
                Ok(c) => c,
                Err(e) => return usage_error(e),
            };
            cfg.pipeline.dry_run = args.dry_run;
            block_on(run(cfg))
        }
        Command::Explain(args) => block_on(async move {
            let mut stdout = std::io::stdout().lock();
            match explain::run(args, &mut std::io::stdin().lock(), &mut stdout).await {
                Ok(s) if s.resolve_failures == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => usage_error(e),
            }
        }),
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

/// `regrelay watch`: 0 unless a watched tag could not be polled; 64 for a bad configuration.
async fn watch(cfg: regrelay::config::Config, once: bool, retry_rejected: bool) -> ExitCode {
    match regrelay::cli::watch::run(cfg, once, retry_rejected).await {
        Ok(s) if s.errors == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(regrelay::app::Error::Config(e)) => usage_error(e),
        Err(e) => {
            eprintln!("error: {e}");
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

/// The docker config file `copy` falls back to: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn default_docker_config() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    home.join(".docker").join("config.json")
}
