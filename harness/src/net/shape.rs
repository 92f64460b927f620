//! Pure traffic shaping for the link proxy: latency with jitter that never reorders, and a token bucket.
//!
//! No I/O here: callers pass the current instant, so the arithmetic is tested without sockets or clocks.

use std::time::Duration;

use rand_core::RngCore;
use serde::Serialize;
use tokio::time::Instant;

/// What a link does to the bytes crossing it in one direction. `Default` is a clean link.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Toxics {
    /// Every chunk is held this long before it is forwarded.
    pub latency: Duration,
    /// Each chunk's delay is `latency ± jitter`, drawn uniformly (never below zero).
    pub jitter: Duration,
    /// Cap on the bytes forwarded per second in this direction, across all connections of the link.
    pub bandwidth_bytes_per_s: Option<u64>,
}

impl Toxics {
    pub fn latency(latency: Duration) -> Toxics {
        Toxics { latency, ..Toxics::default() }
    }

    pub fn bandwidth(bytes_per_s: u64) -> Toxics {
        Toxics { bandwidth_bytes_per_s: Some(bytes_per_s), ..Toxics::default() }
    }

    pub fn is_clean(&self) -> bool {
        *self == Toxics::default()
    }

    /// This chunk's delay: `latency` plus a uniform draw in `[-jitter, +jitter]`, floored at zero.
    pub fn delay(&self, rng: &mut dyn RngCore) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let span = self.jitter.as_nanos().min(u64::MAX as u128 / 2) as u64;
        let draw = rng.next_u64() % (2 * span + 1);
        if draw >= span {
            self.latency + Duration::from_nanos(draw - span)
        } else {
            self.latency.saturating_sub(Duration::from_nanos(span - draw))
        }
    }
}

/// Release times for one direction of one connection. A chunk leaves at `arrival + delay`, but never before the
/// chunk ahead of it: jitter stretches gaps, it never reorders the byte stream (TCP cannot either).
#[derive(Debug, Default)]
pub struct ReleaseClock {
    last: Option<Instant>,
}

impl ReleaseClock {
    pub fn release(&mut self, arrival: Instant, delay: Duration) -> Instant {
        let at = arrival + delay;
        let at = match self.last {
            Some(last) if last > at => last,
            _ => at,
        };
        self.last = Some(at);
        at
    }
}

/// The burst a bucket of this rate allows: a tenth of a second of traffic (at least one byte). Small enough that
/// a cap shows within a second, big enough that a paced sender is not throttled below the rate by timer slack.
pub fn burst_bytes(bytes_per_s: u64) -> u64 {
    (bytes_per_s / 10).max(1)
}

/// A reservation token bucket: `reserve(n)` takes `n` tokens at once (the balance may go negative) and says how
/// long to wait before sending them. Starting full, it lets at most `burst + rate × t` bytes leave in any time `t`
/// after its first reservation, so sending `N` bytes takes at least `(N − burst) / rate`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(bytes_per_s: u64, now: Instant) -> TokenBucket {
        let burst = burst_bytes(bytes_per_s) as f64;
        TokenBucket { rate: bytes_per_s.max(1) as f64, burst, tokens: burst, last: now }
    }

    /// Takes `n` tokens and returns how long the caller must wait before sending those `n` bytes.
    pub fn reserve(&mut self, n: usize, now: Instant) -> Duration {
        if now > self.last {
            let refill = (now - self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last = now;
        }
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // Round up to whole nanoseconds so a wait is never shorter than the debt.
        Duration::from_nanos((-self.tokens / self.rate * 1e9).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn delay_stays_within_latency_plus_minus_jitter() {
        let t = Toxics { latency: Duration::from_millis(50), jitter: Duration::from_millis(20), ..Toxics::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..10_000).map(|_| t.delay(&mut rng)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_millis(30) && *d <= Duration::from_millis(70)));
        // Both halves of the range are used: jitter really varies the delay.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(40)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(60)));
    }

    #[test]
    fn delay_is_floored_at_zero() {
        let t = Toxics { latency: Duration::from_millis(1), jitter: Duration::from_millis(10), ..Toxics::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!((0..1000).any(|_| t.delay(&mut rng).is_zero()));
    }

    #[test]
    fn release_clock_never_goes_backwards() {
        let t0 = Instant::now();
        let mut clock = ReleaseClock::default();
        let a = clock.release(t0, Duration::from_millis(40));
        // Arrives later but with a shorter delay: waits for the chunk ahead of it.
        let b = clock.release(t0 + Duration::from_millis(1), Duration::from_millis(5));
        let c = clock.release(t0 + Duration::from_millis(100), Duration::ZERO);
        assert_eq!(a, t0 + Duration::from_millis(40));
        assert_eq!(b, a);
        assert_eq!(c, t0 + Duration::from_millis(100));
    }

    #[test]
    fn bucket_allows_burst_then_paces_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert_eq!(burst_bytes(1000), 100);
        assert_eq!(b.reserve(100, t0), Duration::ZERO);
        // 50 more bytes at once: a debt of 50 bytes at 1000 B/s.
        assert_eq!(b.reserve(50, t0), Duration::from_millis(50));
        // Half a second later the debt is paid and 450 tokens accrued, capped at the 100-byte burst.
        assert_eq!(b.reserve(100, t0 + Duration::from_millis(550)), Duration::ZERO);
        assert_eq!(b.reserve(1, t0 + Duration::from_millis(550)), Duration::from_millis(1));
    }

    #[test]
    fn bucket_total_time_is_at_least_bytes_minus_burst_over_rate() {
        let t0 = Instant::now();
        let rate = 64 * 1024;
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        for _ in 0..16 {
            now += b.reserve(16 * 1024, now);
        }
        let min = (256.0 * 1024.0 - burst_bytes(rate) as f64) / rate as f64;
        assert!((now - t0).as_secs_f64() >= min);
    }
}
