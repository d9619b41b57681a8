//! `regrelay snapshot HOST[/PREFIX]`: print what a registry prefix holds in cip's
//! `images.yaml` format (or its CSV format): a first manifest for a registry that exists,
//! or the offline inventory for `promote --lint --snapshot`.
//!
//! Must never: write to a registry; contact any host but the one named.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::config::{Auth, RegistryConfig, RetryPolicy};
use crate::promote::manifest::RegistryName;
use crate::promote::snapshot;
use crate::registry::HttpRegistry;

/// The snapshot's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// cip's images.yaml.
    Yaml,
    /// `name@digest,name:tag` (or `name@digest,-`) lines.
    Csv,
}

/// The arguments of `regrelay snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The registry and prefix: HOST[/PREFIX].
    pub registry: String,
    /// A repository under the prefix (repeatable); without it, the registry's catalog.
    #[arg(long = "repository")]
    pub repositories: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub format: Format,
    /// Leave out digests that are only child manifests of an index.
    #[arg(long)]
    pub minimal: bool,
    /// A regrelay configuration whose `[registries]` entry for the host gives its
    /// credentials and settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Docker config file for credentials.
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Talk plain HTTP to the registry. Loopback hosts always use HTTP.
    #[arg(long)]
    pub insecure: bool,
}

/// Why `snapshot` did not start: bad usage (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Take the snapshot and return its text; `Err(Ok(..))` is a usage error, `Err(Err(..))`
/// a failure while reading the registry.
pub async fn run(args: SnapshotArgs, docker_config: PathBuf) -> Result<String, Result<UsageError, snapshot::Error>> {
    let name = RegistryName::parse(&args.registry).map_err(|e| Ok(UsageError(e)))?;
    let cfg = match &args.config {
        Some(p) => crate::config::load(p)
            .map_err(|e| Ok(UsageError(e.to_string())))?
            .registries
            .into_iter()
            .find(|c| c.host == name.host),
        None => None,
    };
    let cfg = cfg.unwrap_or_else(|| {
        let mut c = RegistryConfig::new(name.host.clone());
        c.insecure = args.insecure;
        c.auth = Auth::DockerConfig {
            path: args.authfile.clone().unwrap_or(docker_config),
        };
        c.retry = RetryPolicy::cli();
        c
    });
    let reg = HttpRegistry::new(cfg).map_err(|e| Ok(UsageError(e.to_string())))?;
    let mut snap = snapshot::take(&reg, &name, &args.repositories).await.map_err(Err)?;
    if args.minimal {
        snap = snap.minimal();
    }
    Ok(match args.format {
        Format::Yaml => snap.to_yaml(),
        Format::Csv => snap.to_csv(),
    })
}
