//! Shutdown signals: the first SIGTERM or SIGINT cancels the returned token, which makes
//! the pipeline stop pulling and drain within its grace period.
//!
//! Must never: exit the process or abort work by itself; `main` maps the result to an
//! exit code after the drain.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancel `token` on the first SIGTERM or SIGINT; a second signal is logged (the drain
/// is already bounded by the grace period).
pub fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                s = term.recv() => { if s.is_none() { return; } "SIGTERM" }
                s = int.recv() => { if s.is_none() { return; } "SIGINT" }
            };
            if first {
                tracing::info!(signal = name, "shutting down: no new messages; draining in-flight work");
                token.cancel();
                first = false;
            } else {
                tracing::info!(signal = name, "already shutting down");
            }
        }
    });
    Ok(())
}
