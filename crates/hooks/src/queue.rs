//! The bounded queue between the login path and hook deliveries.
//!
//! Logins never wait for a hook: they push an event and return. A fixed number of workers
//! deliver events, so a flood of failed logins runs at most that many programs or requests
//! at once. When the queue is full the oldest event is dropped, counted, and logged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::event::LoginEvent;

/// Delivery counters, reported at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    /// Events the hook accepted (exit status 0, or a 2xx response).
    pub delivered: u64,
    /// Events that failed after every attempt.
    pub failed: u64,
    /// HTTP retries made, over all events.
    pub retried: u64,
    /// Events dropped because the queue was full or closed.
    pub dropped: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> HookStats {
        HookStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

struct State {
    events: VecDeque<LoginEvent>,
    closed: bool,
    /// Drops not yet reported in a log line, and when the last line was written.
    unreported_drops: u64,
    last_drop_log: Option<Instant>,
}

pub(crate) struct Queue {
    state: Mutex<State>,
    capacity: usize,
    ready: Notify,
}

/// Drop reports are summarised to one line per interval so that a flood cannot flood the log
/// as well; every event was already logged once when it was emitted.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                events: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
                unreported_drops: 0,
                last_drop_log: None,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent, so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an event, dropping the oldest one when the queue is full.
    pub(crate) fn push(&self, event: LoginEvent, counters: &Counters) {
        let mut state = self.lock();
        if state.closed {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                protocol = %event.protocol, ip = %event.ip, user = %crate::LogName(&event.username),
                method = %event.method, connection_id = %event.connection_id,
                "post-login hook event dropped because the server is shutting down"
            );
            return;
        }
        if state.events.len() >= self.capacity
            && let Some(oldest) = state.events.pop_front()
        {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            state.unreported_drops += 1;
            let due = state
                .last_drop_log
                .is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL);
            if due {
                tracing::warn!(
                    dropped = state.unreported_drops,
                    total_dropped = counters.dropped.load(Ordering::Relaxed),
                    queue_size = self.capacity,
                    protocol = %oldest.protocol, ip = %oldest.ip, user = %crate::LogName(&oldest.username),
                    method = %oldest.method, connection_id = %oldest.connection_id,
                    "post-login hook queue full; oldest events dropped"
                );
                state.unreported_drops = 0;
                state.last_drop_log = Some(Instant::now());
            }
        }
        state.events.push_back(event);
        drop(state);
        self.ready.notify_one();
    }

    /// Waits for the next event; returns `None` once the queue is closed and empty.
    pub(crate) async fn pop(&self) -> Option<LoginEvent> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if let Some(event) = state.events.pop_front() {
                    return Some(event);
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Stops accepting events; workers finish what is queued and then exit.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if state.unreported_drops > 0 {
            tracing::warn!(
                dropped = state.unreported_drops,
                "post-login hook events dropped"
            );
            state.unreported_drops = 0;
        }
        drop(state);
        self.ready.notify_waiters();
    }

    /// Empties the queue, counting what it held as dropped; used when shutdown runs out of time.
    pub(crate) fn drain_as_dropped(&self, counters: &Counters) -> u64 {
        let mut state = self.lock();
        let left = state.events.len() as u64;
        state.events.clear();
        counters.dropped.fetch_add(left, Ordering::Relaxed);
        left
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Protocol;

    fn event(n: u8) -> LoginEvent {
        LoginEvent::no_auth_tried(std::net::IpAddr::from([192, 0, 2, n]), Protocol::Ssh, "c")
    }

    #[tokio::test]
    async fn full_queue_drops_oldest() {
        let queue = Queue::new(2);
        let counters = Counters::default();
        queue.push(event(1), &counters);
        queue.push(event(2), &counters);
        queue.push(event(3), &counters);
        assert_eq!(queue.len(), 2);
        assert_eq!(counters.snapshot().dropped, 1);
        assert_eq!(queue.pop().await.unwrap().ip, event(2).ip);
        assert_eq!(queue.pop().await.unwrap().ip, event(3).ip);
    }

    #[tokio::test]
    async fn closed_queue_drains_then_ends() {
        let queue = Queue::new(4);
        let counters = Counters::default();
        queue.push(event(1), &counters);
        queue.close();
        assert!(queue.pop().await.is_some());
        assert!(queue.pop().await.is_none());
        queue.push(event(2), &counters);
        assert_eq!(counters.snapshot().dropped, 1);
    }
}
