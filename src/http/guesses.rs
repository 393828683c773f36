//! Admin token guessing, limited per client address: the operator page's `POST /login` and the admin API's bearer
//! check count their failures here, together (both are guesses at an admin token).
//!
//! After [`MAX_FAILURES`] failures from one address within [`WINDOW`], every admin attempt from it is answered
//! `429` with `Retry-After` until the window has passed, a correct token included (otherwise the guessing would go
//! on). One log line per address and window says what happened, instead of one per failure. The address is the
//! TCP peer: behind a reverse proxy every client shares the proxy's address, and so its limit.
//!
//! It knows nothing of HTTP: handlers ask it and shape the answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts an address may make within a window.
pub const MAX_FAILURES: u32 = 10;
/// How long failures count, from the first of them.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Above this many addresses, windows that have passed are dropped, so that the table stays small.
const PRUNE_ABOVE: usize = 4096;

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The failure counts, per address.
#[derive(Debug, Default)]
pub struct Guesses {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

/// An address that is refused for now: ask again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub retry_after: Duration,
}

impl Guesses {
    /// Whether `address` may try now.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), Locked> {
        let by_address = self.by_address.lock().expect("guesses lock");
        match by_address.get(&address) {
            Some(failures) if failures.count >= MAX_FAILURES && now < failures.since + WINDOW => {
                Err(Locked {
                    retry_after: (failures.since + WINDOW - now).max(Duration::from_secs(1)),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt, logging the first of each window (and the moment the address is locked out).
    pub fn failed(&self, address: IpAddr, what: &str, now: Instant) {
        let mut by_address = self.by_address.lock().expect("guesses lock");
        if by_address.len() > PRUNE_ABOVE {
            by_address.retain(|_, failures| now < failures.since + WINDOW);
        }
        let failures = by_address.entry(address).or_insert(Failures { since: now, count: 0 });
        if now >= failures.since + WINDOW {
            *failures = Failures { since: now, count: 0 };
        }
        failures.count += 1;
        if failures.count == 1 {
            tracing::warn!(client = %address, window = ?WINDOW, "{what} refused: a wrong admin token (further failures from this address in this window are counted, not logged)");
        } else if failures.count == MAX_FAILURES {
            tracing::warn!(client = %address, failures = failures.count, window = ?WINDOW, "too many wrong admin tokens: this address is refused until its window ends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_after_too_many_failures_until_its_window_ends() {
        let guesses = Guesses::default();
        let (attacker, operator): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let start = Instant::now();
        for n in 0..MAX_FAILURES {
            assert_eq!(guesses.check(attacker, start), Ok(()), "attempt {n}");
            guesses.failed(attacker, "login", start);
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(
            guesses.check(attacker, later),
            Err(Locked { retry_after: WINDOW - Duration::from_secs(60) })
        );
        assert_eq!(guesses.check(operator, later), Ok(()), "other addresses are not affected");
        assert_eq!(guesses.check(attacker, start + WINDOW), Ok(()), "the window ends");
        guesses.failed(attacker, "login", start + WINDOW);
        assert_eq!(
            guesses.check(attacker, start + WINDOW),
            Ok(()),
            "a new window starts from nothing"
        );
    }
}
