//! The one retry schedule of the crate: exponential backoff (backon's builder) with our
//! jitter, used by every retry loop (registry requests, blob transfers, Service Bus receive
//! and settle, the pipeline's source reconnects), so that delays, caps and attempt counts
//! mean the same everywhere.
//!
//! Must never: sleep by itself (callers sleep, so they can race a cancellation), or import
//! anything from the crate.

use std::time::Duration;

use backon::BackoffBuilder as _;

/// How a scheduled delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere in `[0, d]` ("full jitter"): for retries of one request, where spreading
    /// matters more than waiting.
    Full,
    /// Anywhere in `[d/2, d]`: for reconnects, which should not come back too soon.
    Half,
}

/// A retry schedule: delays from `min` doubling up to `max`, at most `retries` of them
/// (`None`: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    min: Duration,
    max: Duration,
    retries: Option<usize>,
    jitter: Jitter,
}

impl Schedule {
    /// Delays from `min` doubling to `max`, unbounded, full jitter.
    pub const fn new(min: Duration, max: Duration) -> Schedule {
        Schedule {
            min,
            max,
            retries: None,
            jitter: Jitter::Full,
        }
    }

    /// At most `attempts` attempts in all (so `attempts - 1` delays).
    pub const fn attempts(mut self, attempts: u32) -> Schedule {
        self.retries = Some(attempts.saturating_sub(1) as usize);
        self
    }

    /// The jitter to apply.
    pub const fn jitter(mut self, jitter: Jitter) -> Schedule {
        self.jitter = jitter;
        self
    }

    /// A fresh backoff following this schedule.
    pub fn start(&self) -> Backoff {
        Backoff {
            schedule: *self,
            inner: self.builder().build(),
        }
    }

    fn builder(&self) -> backon::ExponentialBuilder {
        let b = backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max.max(self.min))
            .with_factor(2.0);
        match self.retries {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        }
    }
}

/// The delays of one retry loop.
#[derive(Debug)]
pub struct Backoff {
    schedule: Schedule,
    inner: backon::ExponentialBackoff,
}

impl Backoff {
    /// The next (jittered) delay, or `None` when the attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let d = self.inner.next()?;
        Some(match self.schedule.jitter {
            Jitter::Full => d.mul_f64(fastrand::f64()),
            Jitter::Half => d / 2 + d.mul_f64(fastrand::f64() / 2.0),
        })
    }

    /// Start over from the first delay (after a success).
    pub fn reset(&mut self) {
        self.inner = self.schedule.builder().build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_attempts() {
        let s = Schedule::new(100 * MS, 400 * MS).attempts(5).jitter(Jitter::Half);
        let mut b = s.start();
        let caps = [100, 200, 400, 400];
        for cap in caps {
            let d = b.next_delay().expect("a delay");
            assert!(d >= cap * MS / 2 && d <= cap * MS, "{d:?} for {cap}");
        }
        assert_eq!(b.next_delay(), None, "5 attempts = 4 delays");
        b.reset();
        assert!(b.next_delay().unwrap() <= 100 * MS);
    }

    #[test]
    fn full_jitter_stays_under_the_schedule_and_unbounded_never_ends() {
        let mut b = Schedule::new(10 * MS, 20 * MS).start();
        for _ in 0..100 {
            assert!(b.next_delay().unwrap() <= 20 * MS);
        }
        assert_eq!(Schedule::new(MS, MS).attempts(1).start().next_delay(), None);
    }
}
