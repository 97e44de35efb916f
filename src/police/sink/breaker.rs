//! A circuit breaker for a sink: after a run of failed attempts it refuses further attempts for
//! a while, so a CMS that is down is not hammered by every waiting delivery and the worker
//! learns at once that it should come back later.
//!
//! States: **closed** (attempts pass; `failures_to_open` consecutive failures open it) →
//! **open** (every attempt is refused until `open_for` has passed) → **half-open** (exactly one
//! trial attempt passes; its success closes the circuit, its failure opens it again for
//! `open_for`). While the trial is in flight other attempts are refused.
//!
//! Time is passed in by the caller (`now`), so tests drive the clock. A trial whose permit is
//! dropped without a verdict (its future was cancelled) frees the way for the next caller at
//! once; a trial that never ends stops blocking others after `open_for`. Verdicts from permits
//! granted in an earlier state (an attempt that started before the circuit opened) are ignored:
//! only the trial decides how a half-open circuit ends.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest open period; longer ones are cut to this so `now + open_for` cannot overflow.
const MAX_OPEN: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where the circuit stands, as of the last call that touched it (an open circuit whose period
/// has passed reads as open until the next attempt makes it half-open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts pass; `failures` consecutive ones have failed so far.
    Closed { failures: u32 },
    /// Attempts are refused until `until`.
    Open { until: Instant },
    /// One trial attempt, started at `trial_started`, is in flight.
    HalfOpen { trial_started: Instant },
}

/// A change of state caused by a verdict, for the caller to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened (from closed, or again from half-open) and refuses until `until`.
    Opened { until: Instant },
    /// The trial succeeded and the circuit closed.
    Closed,
}

/// Thread-safe; share it by reference (or in an `Arc`) between concurrent attempts.
#[derive(Debug)]
pub struct CircuitBreaker {
    failures_to_open: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Number of the latest trial, so a verdict from an abandoned earlier trial is ignored.
    trial: u64,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `failures_to_open` consecutive failures (at least 1)
    /// and stays open for `open_for` (at most a year).
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            failures_to_open: failures_to_open.max(1),
            open_for: open_for.min(MAX_OPEN),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed { failures: 0 },
                trial: 0,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Asks to make an attempt at `now`. `Err(until)`: refused, ask again at `until` at the
    /// earliest. The permit must be given the attempt's verdict.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Instant> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed { .. } => {
                return Ok(Permit {
                    breaker: self,
                    trial: None,
                })
            }
            BreakerState::Open { until } if now < until => return Err(until),
            BreakerState::HalfOpen { trial_started } => {
                let until = trial_started + self.open_for;
                if now < until {
                    return Err(until);
                }
            }
            BreakerState::Open { .. } => {}
        }
        inner.trial += 1;
        inner.state = BreakerState::HalfOpen { trial_started: now };
        Ok(Permit {
            breaker: self,
            trial: Some(inner.trial),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single assignment, so a panic elsewhere cannot leave the state torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, trial: Option<u64>, verdict: Verdict, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let current_trial = inner.trial;
        match (inner.state, trial) {
            (BreakerState::Closed { failures }, None) => match verdict {
                Verdict::Succeeded => {
                    inner.state = BreakerState::Closed { failures: 0 };
                    None
                }
                Verdict::Failed if failures + 1 >= self.failures_to_open => {
                    let until = now + self.open_for;
                    inner.state = BreakerState::Open { until };
                    Some(Transition::Opened { until })
                }
                Verdict::Failed => {
                    inner.state = BreakerState::Closed {
                        failures: failures + 1,
                    };
                    None
                }
                Verdict::Abandoned => None,
            },
            (BreakerState::HalfOpen { trial_started }, Some(trial)) if trial == current_trial => {
                match verdict {
                    Verdict::Succeeded => {
                        inner.state = BreakerState::Closed { failures: 0 };
                        Some(Transition::Closed)
                    }
                    Verdict::Failed => {
                        let until = now + self.open_for;
                        inner.state = BreakerState::Open { until };
                        Some(Transition::Opened { until })
                    }
                    // Back to open with its period already over: the next caller is the trial.
                    Verdict::Abandoned => {
                        inner.state = BreakerState::Open {
                            until: trial_started,
                        };
                        None
                    }
                }
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Verdict {
    Succeeded,
    Failed,
    Abandoned,
}

/// Leave to make one attempt. Dropping it without a verdict counts as neither success nor
/// failure.
#[derive(Debug)]
#[must_use = "give the permit the attempt's verdict"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    /// `Some` for the single trial of a half-open circuit.
    trial: Option<u64>,
}

impl Permit<'_> {
    /// Whether this is the trial attempt of a half-open circuit.
    pub fn is_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// The attempt showed the other side healthy.
    pub fn succeeded(mut self, now: Instant) -> Option<Transition> {
        // Taking the trial number leaves nothing for `drop` to abandon.
        let trial = self.trial.take();
        self.breaker.settle(trial, Verdict::Succeeded, now)
    }

    /// The attempt showed the other side unhealthy.
    pub fn failed(mut self, now: Instant) -> Option<Transition> {
        let trial = self.trial.take();
        self.breaker.settle(trial, Verdict::Failed, now)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial.is_some() {
            // `now` is not used by an abandoned verdict.
            self.breaker
                .settle(self.trial, Verdict::Abandoned, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(3, OPEN_FOR)
    }

    fn fail(breaker: &CircuitBreaker, now: Instant) -> Option<Transition> {
        breaker.try_acquire(now).unwrap().failed(now)
    }

    fn open(breaker: &CircuitBreaker, now: Instant) {
        for _ in 0..3 {
            fail(breaker, now);
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: now + OPEN_FOR
            }
        );
    }

    #[test]
    fn a_new_breaker_is_closed_and_lets_attempts_through() {
        let breaker = breaker();
        let now = Instant::now();
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        let permit = breaker.try_acquire(now).unwrap();
        assert!(!permit.is_trial());
        assert_eq!(permit.succeeded(now), None);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn failures_below_the_threshold_keep_it_closed_and_a_success_resets_the_count() {
        let breaker = breaker();
        let now = Instant::now();
        assert_eq!(fail(&breaker, now), None);
        assert_eq!(fail(&breaker, now), None);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
        breaker.try_acquire(now).unwrap().succeeded(now);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(fail(&breaker, now), None);
        assert_eq!(fail(&breaker, now), None);
        assert!(
            breaker.try_acquire(now).is_ok(),
            "not consecutive: still closed"
        );
    }

    #[test]
    fn the_threshold_th_consecutive_failure_opens_it_and_attempts_are_refused_until_the_period_ends(
    ) {
        let breaker = breaker();
        let now = Instant::now();
        fail(&breaker, now);
        fail(&breaker, now);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            fail(&breaker, later),
            Some(Transition::Opened {
                until: later + OPEN_FOR
            })
        );
        assert_eq!(breaker.try_acquire(later).unwrap_err(), later + OPEN_FOR);
        let just_before = later + OPEN_FOR - Duration::from_millis(1);
        assert_eq!(
            breaker.try_acquire(just_before).unwrap_err(),
            later + OPEN_FOR
        );
    }

    #[test]
    fn after_the_open_period_exactly_one_trial_passes_and_the_others_are_refused() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let after = now + OPEN_FOR;
        let trial = breaker.try_acquire(after).unwrap();
        assert!(trial.is_trial());
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen {
                trial_started: after
            }
        );
        let meanwhile = after + Duration::from_secs(1);
        assert_eq!(
            breaker.try_acquire(meanwhile).unwrap_err(),
            after + OPEN_FOR
        );
        drop(trial);
    }

    #[test]
    fn a_successful_trial_closes_it() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let after = now + OPEN_FOR;
        let trial = breaker.try_acquire(after).unwrap();
        assert_eq!(trial.succeeded(after), Some(Transition::Closed));
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        let next = breaker.try_acquire(after).unwrap();
        assert!(!next.is_trial());
        let other = breaker.try_acquire(after).unwrap();
        assert!(!other.is_trial(), "closed: concurrent attempts pass");
    }

    #[test]
    fn a_failed_trial_opens_it_again_for_a_full_period() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let after = now + OPEN_FOR + Duration::from_secs(5);
        let trial = breaker.try_acquire(after).unwrap();
        let failed_at = after + Duration::from_secs(2);
        assert_eq!(
            trial.failed(failed_at),
            Some(Transition::Opened {
                until: failed_at + OPEN_FOR
            })
        );
        assert_eq!(
            breaker
                .try_acquire(failed_at + Duration::from_secs(1))
                .unwrap_err(),
            failed_at + OPEN_FOR
        );
        assert!(breaker
            .try_acquire(failed_at + OPEN_FOR)
            .unwrap()
            .is_trial());
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_caller_try_at_once() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let after = now + OPEN_FOR;
        drop(breaker.try_acquire(after).unwrap());
        let next = breaker
            .try_acquire(after + Duration::from_millis(1))
            .unwrap();
        assert!(next.is_trial());
        assert_eq!(next.succeeded(after), Some(Transition::Closed));
    }

    #[test]
    fn a_trial_that_never_ends_stops_blocking_after_one_open_period() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let first_at = now + OPEN_FOR;
        let first = breaker.try_acquire(first_at).unwrap();
        let second = breaker.try_acquire(first_at + OPEN_FOR).unwrap();
        assert!(second.is_trial());
        // The first trial's late verdict, and its drop, no longer count: only the latest does.
        assert_eq!(first.succeeded(first_at + OPEN_FOR), None);
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen {
                trial_started: first_at + OPEN_FOR
            }
        );
        assert_eq!(
            second.succeeded(first_at + OPEN_FOR),
            Some(Transition::Closed)
        );
    }

    #[test]
    fn verdicts_of_attempts_that_started_before_it_opened_are_ignored() {
        let breaker = breaker();
        let now = Instant::now();
        let early_success = breaker.try_acquire(now).unwrap();
        let early_failure = breaker.try_acquire(now).unwrap();
        open(&breaker, now);
        assert_eq!(early_success.succeeded(now), None);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        let after = now + OPEN_FOR;
        let trial = breaker.try_acquire(after).unwrap();
        assert_eq!(early_failure.failed(after), None);
        assert!(matches!(breaker.state(), BreakerState::HalfOpen { .. }));
        assert_eq!(trial.succeeded(after), Some(Transition::Closed));
    }

    #[test]
    fn a_threshold_of_zero_opens_on_the_first_failure() {
        let breaker = CircuitBreaker::new(0, OPEN_FOR);
        let now = Instant::now();
        assert!(matches!(
            fail(&breaker, now),
            Some(Transition::Opened { .. })
        ));
    }

    #[test]
    fn concurrent_callers_of_a_half_open_circuit_get_one_trial_between_them() {
        let breaker = breaker();
        let now = Instant::now();
        open(&breaker, now);
        let after = now + OPEN_FOR;
        // The permits stay alive until the end: dropping the trial would free its slot.
        let answers: Vec<Result<Permit<'_>, Instant>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| scope.spawn(|| breaker.try_acquire(after)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 1);
    }
}
