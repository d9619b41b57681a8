//! Delayed hand-back: a message that failed with a Transient or Systemic error is held
//! (its Pub/Sub lease extended, its Service Bus lock renewed) for a retry delay that grows
//! with its delivery count, and only then handed back to the broker.
//!
//! Role: keep a short outage from turning into a hot redelivery loop that exhausts the
//! broker's max delivery count and dead-letters messages. Brokers redeliver a nacked
//! message at once (Service Bus always; Pub/Sub without a subscription retry policy).
//!
//! Must never: hold a worker while a message waits (the pipeline hands the message over
//! and moves on); hold more than `max_waiting` messages (a caller waits for a slot, which
//! slows pulling down); keep a message past shutdown ([`HandBack::release_all`] hands every
//! waiting message back at once); settle anything other than a nack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::queue::AckHandle;

/// Most message ids whose failures are counted locally (for brokers that report no
/// delivery count); the memory is cleared when it grows past this.
const MAX_COUNTED: usize = 10_000;

/// Holds failed messages until their retry delay ends.
#[derive(Debug)]
pub struct HandBack {
    min: Duration,
    max: Duration,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    release: CancellationToken,
    /// Failures seen in this process per message id, for brokers that do not report a
    /// delivery count (Pub/Sub without a dead-letter policy).
    failures: Mutex<HashMap<String, u32>>,
}

impl HandBack {
    /// Delays from `min` doubling to `max`; at most `max_waiting` messages held at once.
    /// A zero `min` hands messages back at once.
    pub fn new(min: Duration, max: Duration, max_waiting: usize) -> HandBack {
        HandBack {
            min,
            max: max.max(min),
            slots: Arc::new(Semaphore::new(max_waiting.max(1))),
            tracker: TaskTracker::new(),
            release: CancellationToken::new(),
            failures: Mutex::default(),
        }
    }

    /// The delivery count to base the delay on: the broker's when it reports one, else the
    /// number of failures of this message id seen by this process (this one included).
    pub fn attempt(&self, message_id: &str, broker: Option<u32>) -> u32 {
        let mut seen = self.failures.lock().expect("hand-back counts poisoned");
        if seen.len() >= MAX_COUNTED && !seen.contains_key(message_id) {
            seen.clear();
        }
        let local = seen.entry(message_id.to_string()).or_insert(0);
        *local = local.saturating_add(1);
        broker.unwrap_or(*local).max(1)
    }

    /// The message succeeded or was settled for good: forget its local failure count.
    pub fn forget(&self, message_id: &str) {
        self.failures
            .lock()
            .expect("hand-back counts poisoned")
            .remove(message_id);
    }

    /// The scheduled delay after the `attempt`-th delivery failed (1-based), before jitter:
    /// `min · 2^(attempt-1)`, capped at `max`.
    pub fn schedule(&self, attempt: u32) -> Duration {
        if self.min.is_zero() {
            return Duration::ZERO;
        }
        let doublings = attempt.saturating_sub(1).min(30);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }

    /// The delay to wait: the schedule plus up to 20 % random extra, so that messages that
    /// failed together do not all come back at the same instant. Never shorter than the
    /// schedule (the outage table in the README is computed from the schedule).
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.schedule(attempt);
        d + d.mul_f64(fastrand::f64() * 0.2)
    }

    /// How long a failed message waits before it goes back: zero for a source without
    /// redelivery (`redelivers == false`: a nacked file line has simply failed), else the
    /// [`HandBack::delay`] for its delivery count ([`HandBack::attempt`]).
    pub fn retry_delay(&self, message_id: &str, broker_attempt: Option<u32>, redelivers: bool) -> Duration {
        if redelivers {
            self.delay(self.attempt(message_id, broker_attempt))
        } else {
            Duration::ZERO
        }
    }

    /// Hold `handle` for `delay`, then nack it. Waits for a free slot when `max_waiting`
    /// messages are already held; returns once the message is parked (the caller's worker
    /// is free again). A zero delay, or a hand-back after [`HandBack::release_all`], nacks
    /// at once.
    pub async fn park(&self, handle: AckHandle, delay: Duration) {
        if delay.is_zero() || self.release.is_cancelled() {
            handle.nack();
            return;
        }
        let slot = tokio::select! {
            s = self.slots.clone().acquire_owned() => s.expect("hand-back slots never closed"),
            () = self.release.cancelled() => {
                handle.nack();
                return;
            }
        };
        let release = self.release.clone();
        let waiting = metrics::global().message_waiting();
        self.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = release.cancelled() => {}
            }
            handle.nack();
            drop((waiting, slot));
        });
    }

    /// Messages held right now.
    pub fn waiting(&self) -> usize {
        self.tracker.len()
    }

    /// Shutdown: hand every waiting message back now, and any parked later at once; wait
    /// until all of them are nacked.
    pub async fn release_all(&self) {
        self.release.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Settlement;

    type Seen = Arc<Mutex<Vec<(Settlement, tokio::time::Instant)>>>;

    fn recording() -> (AckHandle, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h = AckHandle::new(move |x| s.lock().unwrap().push((x, tokio::time::Instant::now())));
        (h, seen)
    }

    #[test]
    fn schedule_doubles_up_to_the_cap() {
        let h = HandBack::new(Duration::from_secs(15), Duration::from_secs(300), 10);
        let secs: Vec<u64> = (1..=8).map(|a| h.schedule(a).as_secs()).collect();
        assert_eq!(secs, [15, 30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(h.schedule(u32::MAX), Duration::from_secs(300));
        for a in 1..=8 {
            let d = h.delay(a);
            assert!(d >= h.schedule(a) && d <= h.schedule(a).mul_f64(1.2), "{d:?} for {a}");
        }
        let off = HandBack::new(Duration::ZERO, Duration::from_secs(300), 10);
        assert_eq!(off.delay(5), Duration::ZERO);
    }

    #[test]
    fn attempt_prefers_the_broker_count_and_else_counts_locally() {
        let h = HandBack::new(Duration::from_secs(1), Duration::from_secs(8), 10);
        assert_eq!(h.attempt("m1", Some(7)), 7);
        assert_eq!(h.attempt("m2", None), 1);
        assert_eq!(h.attempt("m2", None), 2);
        assert_eq!(h.attempt("m2", None), 3);
        h.forget("m2");
        assert_eq!(h.attempt("m2", None), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_message_is_nacked_after_its_delay() {
        let h = HandBack::new(Duration::from_secs(10), Duration::from_secs(60), 10);
        let (handle, seen) = recording();
        let start = tokio::time::Instant::now();
        h.park(handle, Duration::from_secs(10)).await;
        assert_eq!(h.waiting(), 1);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(seen.lock().unwrap().is_empty(), "nacked before the delay ended");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = seen.lock().unwrap().clone();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, Settlement::Nack);
        assert!(s[0].1 - start >= Duration::from_secs(10));
        assert_eq!(h.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn release_all_hands_everything_back_at_once() {
        let h = HandBack::new(Duration::from_secs(10), Duration::from_secs(600), 10);
        let mut all = Vec::new();
        for _ in 0..3 {
            let (handle, seen) = recording();
            h.park(handle, Duration::from_secs(600)).await;
            all.push(seen);
        }
        let start = tokio::time::Instant::now();
        h.release_all().await;
        for seen in &all {
            let s = seen.lock().unwrap().clone();
            assert_eq!(s.len(), 1, "each message settled exactly once");
            assert_eq!(s[0].0, Settlement::Nack);
            assert!(s[0].1 - start < Duration::from_secs(1), "not handed back at once");
        }
        // Parked after release: nacked on the spot.
        let (handle, seen) = recording();
        h.park(handle, Duration::from_secs(600)).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_number_waiting_is_bounded() {
        let h = Arc::new(HandBack::new(Duration::from_secs(10), Duration::from_secs(60), 2));
        let (a, _) = recording();
        let (b, _) = recording();
        h.park(a, Duration::from_secs(30)).await;
        h.park(b, Duration::from_secs(30)).await;
        let (c, seen_c) = recording();
        let third = tokio::spawn({
            let h = h.clone();
            async move { h.park(c, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "a third message was parked beyond max_waiting");
        assert_eq!(h.waiting(), 2);
        tokio::time::sleep(Duration::from_secs(30)).await;
        third.await.unwrap();
        assert_eq!(h.waiting(), 1);
        assert!(seen_c.lock().unwrap().is_empty());
    }
}
