//! When to try a failed step again: exponential backoff from an initial delay, capped, with up
//! to 20 % jitter so that workers retrying the same outage do not retry in lockstep.

use chrono::{DateTime, Utc};

/// Backoff settings: the first delay and the cap, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// When to try again after `attempts` failed attempts (0 for the first failure).
    pub fn retry_at(self, attempts: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::milliseconds(
            self.delay_ms(attempts, rand::random_range(0..=20)) as i64
        )
    }

    /// The delay with `jitter_percent` (0–20) added.
    fn delay_ms(self, attempts: i64, jitter_percent: u64) -> u64 {
        let exponent = attempts.clamp(0, 20) as u32;
        let base = self
            .initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_ms);
        base + base / 100 * jitter_percent.min(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_cap_and_jitter_adds_at_most_a_fifth() {
        let backoff = Backoff {
            initial_ms: 500,
            max_ms: 60_000,
        };
        let delays: Vec<u64> = (0..10).map(|n| backoff.delay_ms(n, 0)).collect();
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(backoff.delay_ms(0, 20), 600);
        assert_eq!(backoff.delay_ms(0, 90), 600, "jitter is capped at 20 %");
        assert_eq!(backoff.delay_ms(i64::MAX, 0), 60_000);
        assert_eq!(backoff.delay_ms(-3, 0), 500);
        let now = Utc::now();
        let at = backoff.retry_at(1, now);
        assert!(at >= now + chrono::Duration::milliseconds(1_000));
        assert!(at <= now + chrono::Duration::milliseconds(1_200));
    }
}
