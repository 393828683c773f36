//! When to try a failed delivery again.

use std::time::Duration;

/// How much of each delay is random, so that many waiting messages (or many services) do not retry in step.
const JITTER: f64 = 0.2;

/// When to try a failed delivery again: `initial` after the first failure, twice as long after each further one,
/// never more than `max` apart. Both come from `[email]` (`retry_initial`, `retry_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
}

impl RetryPolicy {
    /// `max` below `initial` is raised to it (configuration refuses that anyway).
    pub fn new(initial: Duration, max: Duration) -> RetryPolicy {
        RetryPolicy { initial, max: max.max(initial) }
    }

    /// The wait after the `failures`-th failed attempt (1 for the first): the doubled delay, capped, less up to
    /// 20% at random. The cap holds even with the jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        base.mul_f64(1.0 - rand::random::<f64>() * JITTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy::new(Duration::from_secs(5), Duration::from_secs(3600));
        for failures in 1..=10u32 {
            let base =
                Duration::from_secs(5 * 2u64.pow(failures - 1)).min(Duration::from_secs(3600));
            for _ in 0..20 {
                let got = policy.delay(failures);
                assert!(
                    got <= base && got >= base.mul_f64(1.0 - JITTER),
                    "failure {failures}: {got:?} against {base:?}"
                );
            }
        }
        for failures in [11, 40, u32::MAX] {
            assert!(policy.delay(failures) <= Duration::from_secs(3600));
            assert!(policy.delay(failures) >= Duration::from_secs(2880));
        }
    }

    #[test]
    fn a_test_policy_is_as_short_as_configured() {
        let policy = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(100));
        assert!(policy.delay(1) <= Duration::from_millis(20));
        assert!(policy.delay(100) <= Duration::from_millis(100));
        let raised = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(1)).delay(5);
        assert!(
            raised <= Duration::from_secs(10) && raised >= Duration::from_secs(8),
            "{raised:?}"
        );
    }
}
