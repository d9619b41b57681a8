//! Composition root of `regrelay run`: build the registry clients, the copy engine, the
//! pipeline, the admin server and the source from a validated [`Config`], run until the
//! source ends or a signal arrives, and report how it went. `regrelay copy`
//! ([`crate::cli::copy`]) builds its engine here too ([`replicator`]), and `regrelay
//! sync` ([`crate::cli::sync`]) its runner ([`syncer`]).
//!
//! Must never: start anything before the configuration is fully validated (the caller
//! passes a [`Config`], which only exists validated), or exit the process itself.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, RegistryConfig, SourceConfig};
use crate::engine::{Executor, Guarded, Memory};
use crate::health::Health;
use crate::notify::Notifier;
use crate::pipeline::Pipeline;
use crate::queue::file::FileSource;
use crate::queue::pubsub::PubSubSource;
use crate::queue::servicebus::ServiceBusSource;
use crate::registry::RegistrySet;
use crate::replicate::{Options, Replicator};
use crate::sync::sweep::Sweep;
use crate::sync::{DeletePolicy, Syncer};
use crate::{admin, metrics, shutdown};

/// Why `run` could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (exit code 64).
    #[error("{0}")]
    Config(String),
    /// Something needed at startup failed (exit code 1): a port in use, a file missing.
    #[error("{0}")]
    Startup(String),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// A signal (or the end of a streaming source) stopped a clean run.
    Stopped,
    /// A file source was read to the end; `failed` lines were not verified.
    Exhausted {
        /// Lines acked.
        acked: u64,
        /// Lines nacked or rejected.
        failed: u64,
    },
}

/// Run the daemon with `config` until a signal or the end of the input, telling systemd
/// (when `notifier` has a socket) when it is ready, alive and stopping.
pub async fn run(config: Config, notifier: Notifier) -> Result<Finished, Error> {
    let shutdown_token = CancellationToken::new();
    shutdown::on_signal(shutdown_token.clone())
        .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
    let health = health(&config);
    let notify_task = spawn_notifier(notifier, health.clone(), shutdown_token.clone());
    let result = run_with(config, health, shutdown_token).await;
    notify_task.abort();
    result
}

/// `READY=1` the first time the pipeline reports ready, `WATCHDOG=1` at half the
/// watchdog interval for as long as the runtime runs, `STOPPING=1` when shutdown begins.
fn spawn_notifier(notifier: Notifier, health: Arc<Health>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    const TICK: std::time::Duration = std::time::Duration::from_millis(100);
    tokio::spawn(async move {
        if !notifier.enabled() {
            return;
        }
        let (mut ready_sent, mut stopping_sent) = (false, false);
        let mut next_watchdog = tokio::time::Instant::now();
        // One task, aborted with the run: nothing outlives it.
        loop {
            if !ready_sent && !stop.is_cancelled() && health.ready() {
                notifier.ready();
                ready_sent = true;
            }
            if !stopping_sent && stop.is_cancelled() {
                notifier.stopping();
                stopping_sent = true;
            }
            if let Some(every) = notifier.watchdog_interval()
                && tokio::time::Instant::now() >= next_watchdog
            {
                notifier.watchdog();
                next_watchdog += every;
            }
            if stopping_sent {
                tokio::time::sleep(TICK).await;
            } else {
                // Wake at once on shutdown, so STOPPING=1 goes out before the drain ends.
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    })
}

/// The health state of a run of `config`: its registries, and each rule's source and
/// targets (to tell when no rule can make progress).
fn health(config: &Config) -> Arc<Health> {
    let routes = config
        .rules
        .iter()
        .map(|r| {
            let targets = r.targets.iter().map(|t| t.registry.clone()).collect();
            (r.source_registry.clone(), targets)
        })
        .collect();
    Arc::new(Health::new(
        config.registries.iter().map(|r| r.host.clone()),
        routes,
        config.pipeline.pause_min,
        config.pipeline.pause_max,
    ))
}

/// The copy engine over one client per registry in `registries` (each with its
/// credentials), and no other host: what `regrelay run` and `regrelay copy` both build.
/// An unusable registry configuration is an [`Error::Config`].
pub fn replicator(registries: Vec<RegistryConfig>, opts: Options) -> Result<Arc<Replicator<RegistrySet>>, Error> {
    let set = RegistrySet::from_configs(registries).map_err(|e| Error::Config(e.to_string()))?;
    Ok(Arc::new(Replicator::new(Arc::new(set), opts)))
}

/// The executor every front end of one process shares (events, sync, the sweep, watches):
/// one copy per (target, digest), the tag locks and the recently-verified memory span them.
pub type SharedExecutor = Guarded<Executor<RegistrySet>>;

/// The watcher `regrelay run` and `regrelay watch` build: every copy and tag write through
/// the guarded executor.
pub type AppWatcher = crate::watch::Watcher<SharedExecutor, RegistrySet>;

/// The watcher of `config`'s `[[watch]]` blocks, with its own executor (`regrelay watch`).
pub fn watcher(config: &Config) -> Result<Arc<AppWatcher>, Error> {
    let (replicator, executor) = engine(config, health(config))?;
    watcher_over(config, executor, replicator.registries().clone())
}

fn watcher_over(
    config: &Config,
    executor: Arc<SharedExecutor>,
    registries: Arc<RegistrySet>,
) -> Result<Arc<AppWatcher>, Error> {
    crate::watch::Watcher::from_settings(&config.watch, executor, registries)
        .map(Arc::new)
        .map_err(|e| Error::Config(e.to_string()))
}

/// The copy engine and the guarded executor over it, from `config` (what `run` builds).
fn engine(config: &Config, health: Arc<Health>) -> Result<(Arc<Replicator<RegistrySet>>, Arc<SharedExecutor>), Error> {
    let opts = Options {
        platforms: Vec::new(),
        referrers: config.pipeline.referrers,
        blob_jobs: config.pipeline.blob_jobs,
        ..Options::default()
    };
    let replicator = replicator(config.registries.clone(), opts)?;
    let memory = Memory {
        ttl: config.pipeline.dedup_ttl,
        max_entries: config.pipeline.dedup_max_entries,
    };
    // `[gates.NAME]`: what rules' `require` runs before writing a target tag.
    let gates = crate::gates::GateSet::from_config(&config.watch.gates).map_err(|e| Error::Config(e.to_string()))?;
    let executor = Executor::new(replicator.clone(), memory).with_gates(Arc::new(gates));
    let executor = Arc::new(Guarded::new(executor, health));
    Ok((replicator, executor))
}

/// The delete settings of `config`, shared by event deletes and sync prunes.
fn delete_policy(config: &Config) -> DeletePolicy {
    DeletePolicy {
        dry_run: config.pipeline.delete_dry_run,
        fallback: config.pipeline.tag_delete_fallback,
    }
}

/// The sync runner of `regrelay sync`: the same engine and guarded executor `run` builds,
/// with at most `jobs` requests or items in flight.
pub fn syncer(config: &Config, jobs: usize) -> Result<Syncer<RegistrySet, SharedExecutor>, Error> {
    let health = health(config);
    let (replicator, executor) = engine(config, health.clone())?;
    Ok(Syncer::new(replicator, executor, delete_policy(config), jobs).with_health(health))
}

/// [`run`] with an external shutdown token (for embedding and tests).
pub async fn run_until(config: Config, shutdown_token: CancellationToken) -> Result<Finished, Error> {
    let health = health(&config);
    run_with(config, health, shutdown_token).await
}

async fn run_with(config: Config, health: Arc<Health>, shutdown_token: CancellationToken) -> Result<Finished, Error> {
    metrics::global().set_ready(false);
    // The closed `rule` and `target` label sets of the copy metrics.
    metrics::global().configure_routes(
        config
            .rules
            .iter()
            .flat_map(|r| r.targets.iter().map(move |t| (r.name.as_str(), t.registry.as_str()))),
    );
    let hosts: Vec<String> = config.registries.iter().map(|r| r.host.clone()).collect();
    let (replicator, executor) = engine(&config, health.clone())?;
    let registries = replicator.registries().clone();
    // `[[watch]]` blocks run beside the event source, over the same executor.
    let watch_task = if config.watch.watches.is_empty() {
        None
    } else {
        let w = watcher_over(&config, executor.clone(), registries.clone())?;
        Some(tokio::spawn(w.run(shutdown_token.clone())))
    };
    // The sweep repairs through the pipeline's executor: one copy per (target, digest)
    // across both front ends. It stops with the pipeline.
    let sweep_stop = shutdown_token.child_token();
    let sweep_task = config.reconcile.interval.map(|interval| {
        let syncer = Syncer::new(
            replicator.clone(),
            executor.clone(),
            delete_policy(&config),
            config.reconcile.jobs,
        )
        .with_health(health.clone());
        let sweep = Sweep::new(syncer, config.rules.clone(), interval, config.reconcile.prune);
        tokio::spawn(sweep.run(sweep_stop.clone()))
    });
    let origin = match &config.origin {
        Some(o) => crate::event::Origin::new(&o.registry, &o.repository),
        None => crate::event::Origin::none(),
    };
    let pipeline = Arc::new(
        Pipeline::new(
            executor,
            health.clone(),
            config.rules.clone(),
            hosts,
            config.pipeline.clone(),
        )
        .with_origin(origin),
    );

    let admin_stop = CancellationToken::new();
    let admin_task = match config.admin_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Startup(format!("cannot listen on {addr} for /metrics: {e}")))?;
            let local = listener.local_addr().map_err(|e| Error::Startup(e.to_string()))?;
            tracing::info!(listen = %local, "admin endpoints: /metrics /healthz /readyz");
            let stop = admin_stop.clone();
            let health = health.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = admin::serve(listener, health, stop).await {
                    tracing::error!(error = %e, "admin server failed");
                }
            }))
        }
        None => None,
    };

    tracing::info!(
        source = config.source.kind(),
        rules = config.rules.len(),
        registries = config.registries.len(),
        workers = config.pipeline.workers,
        dry_run = config.pipeline.dry_run,
        "regrelay started"
    );
    let finished = match &config.source {
        SourceConfig::PubSub(cfg) => {
            let source = PubSubSource::connect(cfg, config.pipeline.reject_mode)
                .await
                .map_err(|e| Error::Startup(e.to_string()))?;
            pipeline.run(source, shutdown_token.clone()).await;
            Finished::Stopped
        }
        SourceConfig::ServiceBus(cfg) => {
            // `reject_mode` already holds the Service Bus default (abandon) unless configured.
            let source = ServiceBusSource::connect(cfg, config.pipeline.reject_mode)
                .await
                .map_err(|e| Error::Startup(e.to_string()))?;
            pipeline.run(source, shutdown_token.clone()).await;
            Finished::Stopped
        }
        SourceConfig::None => {
            // Only `[[watch]]` blocks run: ready (no source to wait for) until shutdown.
            health.set_running(true);
            shutdown_token.cancelled().await;
            health.set_running(false);
            Finished::Stopped
        }
        SourceConfig::File(cfg) => {
            let source = FileSource::open(cfg.path.as_ref())
                .await
                .map_err(|e| Error::Startup(e.to_string()))?;
            let tally = source.tally();
            pipeline.run(source, shutdown_token.clone()).await;
            Finished::Exhausted {
                acked: tally.acked(),
                failed: tally.failed(),
            }
        }
    };
    sweep_stop.cancel();
    if let Some(t) = sweep_task {
        let _ = t.await;
    }
    // Copies dropped at shutdown cancel their upload sessions in the background: let those
    // DELETEs out (bounded) before the runtime goes away (issue 9).
    if let Some(t) = watch_task {
        shutdown_token.cancel();
        let _ = t.await;
    }
    registries.wait_for_cancels(crate::registry::CANCEL_TIMEOUT).await;
    admin_stop.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    tracing::info!(?finished, "regrelay stopped");
    Ok(finished)
}
