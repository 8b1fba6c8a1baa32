//! Bandwidth limits: a token bucket per user and direction, shared by all of the user's
//! sessions.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The share of a second of traffic that may pass at once after a pause. A small burst keeps
/// short transfers close to the limit too.
const BURST_SECS: f64 = 0.25;

/// A token bucket that limits a byte rate.
///
/// Every transfer takes its bytes from the bucket and may take more than it contains. The
/// caller then pays the debt by waiting, and later callers wait behind it. So callers that
/// share the bucket take turns, and together they stay within the rate over time.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now; negative while callers wait for bytes already taken.
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    /// Creates a limit of `bytes_per_second` (at least 1) with a full bucket.
    pub fn new(bytes_per_second: u64) -> RateLimit {
        let rate = bytes_per_second.max(1);
        RateLimit {
            bytes_per_second: AtomicU64::new(rate),
            bucket: Mutex::new(Bucket {
                tokens: burst(rate),
                updated: Instant::now(),
            }),
        }
    }

    /// Creates a limit from KiB per second, the unit of the users file; 0 means no limit.
    pub fn from_kib_per_second(kib: u64) -> Option<RateLimit> {
        (kib > 0).then(|| RateLimit::new(kib.saturating_mul(1024)))
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second.load(Ordering::Relaxed)
    }

    /// Changes the rate, for example after the users file was reloaded.
    pub fn set_bytes_per_second(&self, bytes_per_second: u64) {
        self.bytes_per_second
            .store(bytes_per_second.max(1), Ordering::Relaxed);
    }

    /// Takes `bytes` from the bucket and returns how long the caller must wait before the
    /// bytes may pass.
    pub fn reserve(&self, bytes: u64) -> Duration {
        let rate = self.bytes_per_second() as f64;
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst(rate as u64));
        bucket.updated = now;
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }

    /// Puts back bytes that were taken but did not pass, such as the unused part of a read.
    pub fn refund(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let rate = self.bytes_per_second();
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.tokens = (bucket.tokens + bytes as f64).min(burst(rate));
    }

    /// Returns the maximum bytes that one read or write should take at once: one burst, so
    /// that no single wait is much longer than [`BURST_SECS`] beyond the queue.
    pub fn chunk_size(&self) -> usize {
        let chunk = burst(self.bytes_per_second()) as u64;
        usize::try_from(chunk.max(MIN_CHUNK)).unwrap_or(usize::MAX)
    }

    /// Takes `bytes` from the bucket and waits until they may pass. Large amounts are taken
    /// one chunk at a time, so the user's other transfers get their turns in between.
    ///
    /// # Cancel safety
    ///
    /// Cancelling the wait keeps the bytes of the current chunk taken, so the next caller
    /// waits for them.
    pub async fn acquire(&self, bytes: u64) {
        let mut left = bytes;
        while left > 0 {
            let chunk = left.min(self.chunk_size() as u64);
            left -= chunk;
            let wait = self.reserve(chunk);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The smallest chunk, so that very low rates still move data in useful pieces.
const MIN_CHUNK: u64 = 1024;

fn burst(bytes_per_second: u64) -> f64 {
    (bytes_per_second as f64 * BURST_SECS).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_passes_without_wait() {
        let limit = RateLimit::new(1000);
        assert_eq!(limit.reserve(250), Duration::ZERO);
    }

    #[test]
    fn debt_is_waited_for() {
        let limit = RateLimit::new(1000);
        // 250 bytes of burst, then 750 bytes owed at 1000 bytes per second.
        let wait = limit.reserve(1000);
        assert!(wait >= Duration::from_millis(700), "{wait:?}");
        assert!(wait <= Duration::from_millis(760), "{wait:?}");
    }

    #[test]
    fn later_callers_wait_behind_earlier_debt() {
        let limit = RateLimit::new(1000);
        let first = limit.reserve(1250);
        let second = limit.reserve(500);
        assert!(
            second >= first + Duration::from_millis(450),
            "{first:?} {second:?}"
        );
    }

    #[test]
    fn refund_returns_unused_bytes() {
        let limit = RateLimit::new(1000);
        assert!(limit.reserve(500) > Duration::ZERO);
        limit.refund(300);
        assert_eq!(limit.reserve(50), Duration::ZERO);
    }

    #[test]
    fn chunk_is_one_burst() {
        assert_eq!(RateLimit::new(1_000_000).chunk_size(), 250_000);
        assert_eq!(RateLimit::new(100).chunk_size(), 1024);
    }

    #[test]
    fn zero_kib_means_unlimited() {
        assert!(RateLimit::from_kib_per_second(0).is_none());
        let limit = RateLimit::from_kib_per_second(2).unwrap();
        assert_eq!(limit.bytes_per_second(), 2048);
    }

    #[tokio::test]
    async fn acquire_holds_the_rate() {
        let limit = RateLimit::new(100_000);
        let started = Instant::now();
        for _ in 0..10 {
            limit.acquire(10_000).await;
        }
        // 100 kB at 100 kB/s, less the 25 kB burst: at least 0.75 s.
        assert!(started.elapsed() >= Duration::from_millis(700));
    }
}
