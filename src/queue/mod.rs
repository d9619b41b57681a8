//! Backend-agnostic message sources: the [`Source`] trait, a received [`Delivery`], and
//! the [`AckHandle`] that settles it.
//!
//! Role: hide Pub/Sub, Service Bus and the file source behind one shape, so that the
//! pipeline handles every backend the same way.
//!
//! Must never: settle a message by itself. Only the pipeline calls [`AckHandle::ack`],
//! [`AckHandle::nack`] or [`AckHandle::reject`]. A handle dropped without a settlement
//! nacks (the message comes back) and is counted in `regrelay_deliveries_dropped_total`.
//!
//! Invariants: a handle settles at most once (the methods consume it and it is neither
//! `Clone` nor `Copy`); `Drop` never blocks or awaits.

use std::time::SystemTime;

use bytes::Bytes;

use crate::config::RejectMode;
use crate::metrics;

pub mod file;
#[cfg(test)]
pub mod memory;
pub mod pubsub;
pub mod servicebus;

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done and verified: remove the message.
    Ack,
    /// Not done: deliver it again (after the broker's backoff).
    Nack,
    /// Permanently failed: the source applies its [`RejectMode`] (ack and count, or nack
    /// so that the broker's dead-letter policy takes it).
    Reject,
}

/// The settle callback a backend installs in each handle.
type SettleFn = Box<dyn FnOnce(Settlement) + Send>;

/// The right to settle one delivery. Consumed by settling; dropping it nacks.
#[must_use = "dropping an AckHandle nacks the message"]
pub struct AckHandle {
    settle: Option<SettleFn>,
}

impl std::fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckHandle")
            .field("settled", &self.settle.is_none())
            .finish()
    }
}

impl AckHandle {
    /// A handle that calls `settle` exactly once: with the pipeline's settlement, or with
    /// [`Settlement::Nack`] when dropped unsettled.
    pub fn new(settle: impl FnOnce(Settlement) + Send + 'static) -> AckHandle {
        AckHandle {
            settle: Some(Box::new(settle)),
        }
    }

    fn settle(mut self, s: Settlement) {
        if let Some(f) = self.settle.take() {
            f(s);
        }
    }

    /// The work is verified: remove the message.
    pub fn ack(self) {
        self.settle(Settlement::Ack);
    }

    /// Deliver the message again later.
    pub fn nack(self) {
        self.settle(Settlement::Nack);
    }

    /// The message can never succeed; the source applies its reject mode.
    pub fn reject(self) {
        self.settle(Settlement::Reject);
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(f) = self.settle.take() {
            metrics::global().delivery_dropped();
            f(Settlement::Nack);
        }
    }
}

/// One received message.
#[derive(Debug)]
pub struct Delivery {
    /// The broker's message id (for logs only; duplicates may carry new ids).
    pub id: String,
    /// The message body.
    pub payload: Bytes,
    /// When the broker accepted the message, when it says.
    pub published: Option<SystemTime>,
    /// Delivery attempt (1 = first), when the broker reports it.
    pub attempt: Option<u32>,
    /// The settlement right.
    pub handle: AckHandle,
}

/// A source-level failure (the source keeps trying; the pipeline reports not-ready).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker refused or dropped the connection or stream.
    #[error("{source_kind} receive failed: {reason}")]
    Receive {
        /// `pubsub`, `file`, ...
        source_kind: &'static str,
        /// What went wrong (never a credential).
        reason: String,
    },
}

/// A stream of deliveries.
pub trait Source: Send + 'static {
    /// `pubsub`, `file`, ... (a closed set; used as a metric label).
    fn kind(&self) -> &'static str;

    /// The next delivery. `None` = the source is exhausted (end of file); a streaming
    /// source only returns `None` after [`Source::close`]. An `Err` means the source is
    /// not connected right now; the caller backs off and calls again.
    fn next(&mut self) -> impl Future<Output = Option<Result<Delivery, Error>>> + Send;

    /// Stop receiving and flush pending settlements to the broker. Call after every
    /// handle has been settled or dropped.
    fn close(self) -> impl Future<Output = ()> + Send;

    /// The grace period is over but work is still running: hand every message still held
    /// back to the broker and close. `cancel` stops the unfinished work (its dropped
    /// handles nack); `drained` resolves once that work has ended.
    ///
    /// The default cancels, waits, then closes (which flushes the nacks). A source whose
    /// close itself hands back every leased message overrides this to close *first*, so the
    /// broker cannot redeliver the nacked messages into this process in between.
    fn abort(
        self,
        cancel: tokio_util::sync::CancellationToken,
        drained: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move {
            cancel.cancel();
            drained.await;
            self.close().await;
        }
    }

    /// Does a nacked message come back later (a broker)? Then the pipeline holds a failed
    /// message for its retry delay before nacking it. A source without redelivery (the file
    /// source: a nacked line has failed) is settled at once.
    fn redelivers(&self) -> bool {
        true
    }
}

/// What a Reject means for a broker without per-message dead-lettering.
pub fn reject_as(mode: RejectMode) -> Settlement {
    match mode {
        RejectMode::Ack => Settlement::Ack,
        RejectMode::Nack => Settlement::Nack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording() -> (AckHandle, Arc<Mutex<Vec<Settlement>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (AckHandle::new(move |x| s.lock().unwrap().push(x)), seen)
    }

    #[test]
    fn explicit_settlement_happens_once() {
        let (h, seen) = recording();
        h.ack();
        assert_eq!(*seen.lock().unwrap(), vec![Settlement::Ack]);
        let (h, seen) = recording();
        h.reject();
        assert_eq!(*seen.lock().unwrap(), vec![Settlement::Reject]);
    }

    #[test]
    fn dropped_handle_is_nacked_and_counted() {
        let before = metrics::global().render();
        let (h, seen) = recording();
        drop(h);
        assert_eq!(*seen.lock().unwrap(), vec![Settlement::Nack]);
        let after = metrics::global().render();
        assert_ne!(before, after, "the drop must be counted");
    }

    #[test]
    fn reject_mode_maps_to_ack_or_nack() {
        assert_eq!(reject_as(RejectMode::Ack), Settlement::Ack);
        assert_eq!(reject_as(RejectMode::Nack), Settlement::Nack);
    }
}
