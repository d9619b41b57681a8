//! `regrelay watch`: run the `[[watch]]` blocks of a configuration without an event source,
//! once (`--once`, for a Kubernetes CronJob or a systemd timer) or at their intervals.
//!
//! Must never: run beside another instance polling the same watches (document: one
//! replica, or one scheduled job); exit the process (the binary maps the result).

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::watch::TagOutcome;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Digests promoted.
    pub promoted: usize,
    /// Digests rejected by a gate.
    pub rejected: usize,
    /// Digests left for the next run (a gate asked to retry, a copy failed).
    pub deferred: usize,
    /// Tags that could not be polled.
    pub errors: usize,
}

/// Run the watches of `config`: one poll of each with `once`, else until SIGTERM/SIGINT.
/// With `retry_rejected`, digests a gate rejected earlier are gated again.
pub async fn run(config: Config, once: bool, retry_rejected: bool) -> Result<Summary, crate::app::Error> {
    if config.watch.watches.is_empty() {
        return Err(crate::app::Error::Config(
            "the configuration has no [[watch]] blocks".into(),
        ));
    }
    let watcher = crate::app::watcher(&config)?;
    if retry_rejected {
        watcher.forget_rejections().await;
    }
    if !once {
        let shutdown = CancellationToken::new();
        crate::shutdown::on_signal(shutdown.clone())
            .map_err(|e| crate::app::Error::Startup(format!("cannot install signal handlers: {e}")))?;
        watcher.run(shutdown).await;
        return Ok(Summary::default());
    }
    let mut s = Summary::default();
    for (watch, report) in watcher.run_once().await {
        for (tag, outcome) in report {
            let line = match &outcome {
                TagOutcome::Promoted(d) => {
                    s.promoted += 1;
                    format!("promoted {d}")
                }
                TagOutcome::Rejected(d) => {
                    s.rejected += 1;
                    format!("rejected {d}")
                }
                TagOutcome::Deferred(d) => {
                    s.deferred += 1;
                    format!("deferred {d}")
                }
                TagOutcome::Error(e) => {
                    s.errors += 1;
                    format!("error: {e}")
                }
                TagOutcome::Unchanged => "unchanged".into(),
                TagOutcome::Gone => "tag not found upstream".into(),
                TagOutcome::Backoff => "skipped (rate limit)".into(),
            };
            println!("{watch} {tag}: {line}");
        }
    }
    Ok(s)
}
