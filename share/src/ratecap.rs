//! An upload (seeding) rate cap: a token bucket in bytes that may go into debt and says how long
//! to wait before sending. Plain state, time passed in; the engine sleeps as told.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateCap {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateCap {
    /// `bytes_per_s` on average; a burst of a quarter second (at least 64 KiB) may go at once.
    pub fn new(bytes_per_s: u64, now: Instant) -> RateCap {
        let rate = bytes_per_s.max(1) as f64;
        let burst = (rate / 4.0).max(65536.0);
        RateCap {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `n` bytes are about to be sent: how long to wait first.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// `n` bytes taken with [`take`](Self::take) were not sent after all (the connection
    /// closed while they waited): give them back, so a dead connection does not hold up the
    /// live ones.
    pub fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_holds() {
        let t0 = Instant::now();
        let mut c = RateCap::new(500_000, t0);
        let mut now = t0;
        let mut sent = 0u64;
        // 16 KiB blocks for 20 s of simulated time
        while now < t0 + Duration::from_secs(20) {
            now += c.take(16384, now);
            sent += 16384;
        }
        let rate = sent as f64 / 20.0;
        assert!((rate - 500_000.0).abs() / 500_000.0 < 0.03, "{rate}");
    }

    #[test]
    fn burst_goes_at_once_then_waits() {
        let t0 = Instant::now();
        let mut c = RateCap::new(1_000_000, t0);
        assert_eq!(c.take(250_000, t0), Duration::ZERO);
        let w = c.take(100_000, t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn refunded_bytes_do_not_delay_the_next_sender() {
        let t0 = Instant::now();
        let mut c = RateCap::new(1_000_000, t0);
        assert_eq!(c.take(250_000, t0), Duration::ZERO);
        // 1 s of debt for a connection that then closed
        assert!(c.take(1_000_000, t0) > Duration::ZERO);
        c.refund(1_000_000);
        let w = c.take(100_000, t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-6, "{w:?}");
    }
}
