//! Ordering of requests that run concurrently.
//!
//! Requests start in the order they arrive, and each one runs as soon as nothing it
//! conflicts with is still running ahead of it. Two requests conflict when at least one
//! of them writes and their byte ranges overlap. So reads of one file run in parallel, and
//! so do writes to different ranges, while a CLOSE covers the whole file and therefore waits
//! for every earlier READ and WRITE on its handle. The bookkeeping happens synchronously in
//! the dispatcher, in arrival order; only the waiting is asynchronous. Replies to requests on
//! one handle also go out in arrival order (see [`ReplyOrder`]).

use std::ops::Range;

use tokio_util::sync::{CancellationToken, DropGuard};

/// Whether a request only observes or also changes what it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The byte range a request touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span(Range<u64>);

impl Span {
    /// Returns the span of every byte, for requests such as CLOSE, FSTAT or appends.
    pub fn whole() -> Span {
        Span(0..u64::MAX)
    }

    /// `len` bytes from `offset`; the end saturates at `u64::MAX`.
    pub fn bytes(offset: u64, len: u64) -> Span {
        Span(offset..offset.saturating_add(len))
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.0.start < other.0.end && other.0.start < self.0.end
    }
}

struct Entry {
    access: Access,
    span: Span,
    done: CancellationToken,
}

/// The requests still running on one handle, or on the file namespace.
#[derive(Default)]
pub struct Tracker {
    running: Vec<Entry>,
}

impl Tracker {
    /// Registers a request and returns the gate it must pass before it runs. Call in arrival
    /// order; the request counts as running until its gate is dropped.
    pub fn enter(&mut self, access: Access, span: Span) -> Gate {
        self.running.retain(|entry| !entry.done.is_cancelled());
        let waits = self
            .running
            .iter()
            .filter(|entry| {
                (entry.access == Access::Write || access == Access::Write)
                    && entry.span.overlaps(&span)
            })
            .map(|entry| entry.done.clone())
            .collect();
        let done = CancellationToken::new();
        self.running.push(Entry {
            access,
            span,
            done: done.clone(),
        });
        Gate {
            waits,
            _done: done.drop_guard(),
        }
    }

    /// Returns the number of registered requests that have not finished.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.running
            .iter()
            .filter(|entry| !entry.done.is_cancelled())
            .count()
    }
}

/// A request's place in a [`Tracker`]: [`wait`](Gate::wait) returns once every earlier
/// conflicting request has finished, and dropping the gate marks this one finished.
pub struct Gate {
    waits: Vec<CancellationToken>,
    _done: DropGuard,
}

impl Gate {
    /// Returns a gate with nothing to wait for, for requests that need no ordering.
    pub fn open() -> Gate {
        Gate {
            waits: Vec::new(),
            _done: CancellationToken::new().drop_guard(),
        }
    }

    pub async fn wait(&mut self) {
        for token in self.waits.drain(..) {
            token.cancelled().await;
        }
    }
}

/// Keeps the replies to the requests on one handle in arrival order, whatever order the
/// requests finish in. OpenSSH's client needs this: it truncates an `scp` download, or
/// refuses to resume one, at the first READ reply that arrives ahead of an earlier one.
#[derive(Default)]
pub struct ReplyOrder {
    last: Option<CancellationToken>,
}

impl ReplyOrder {
    /// Takes the next place in line. Call in arrival order.
    pub fn next(&mut self) -> Turn {
        let sent = CancellationToken::new();
        let previous = self.last.replace(sent.clone());
        Turn {
            previous,
            _sent: sent.drop_guard(),
        }
    }
}

/// A reply's place in a [`ReplyOrder`]: [`wait`](Turn::wait) returns once the reply before
/// it has been queued for sending, and dropping the turn lets the next reply go.
pub struct Turn {
    previous: Option<CancellationToken>,
    _sent: DropGuard,
}

impl Turn {
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            previous.cancelled().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Returns whether the gate opens within a short time.
    async fn opens(gate: &mut Gate) -> bool {
        tokio::time::timeout(Duration::from_millis(50), gate.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn reads_run_together() {
        let mut tracker = Tracker::default();
        let _first = tracker.enter(Access::Read, Span::bytes(0, 100));
        let mut second = tracker.enter(Access::Read, Span::bytes(0, 100));
        assert!(opens(&mut second).await);
    }

    #[tokio::test]
    async fn disjoint_writes_run_together() {
        let mut tracker = Tracker::default();
        let _first = tracker.enter(Access::Write, Span::bytes(0, 100));
        let mut second = tracker.enter(Access::Write, Span::bytes(100, 100));
        assert!(opens(&mut second).await);
    }

    #[tokio::test]
    async fn overlapping_write_waits() {
        let mut tracker = Tracker::default();
        let first = tracker.enter(Access::Write, Span::bytes(0, 100));
        let mut second = tracker.enter(Access::Write, Span::bytes(99, 10));
        assert!(!opens(&mut second).await);
        drop(first);
        assert!(opens(&mut second).await);
    }

    #[tokio::test]
    async fn read_waits_for_overlapping_write() {
        let mut tracker = Tracker::default();
        let write = tracker.enter(Access::Write, Span::bytes(50, 10));
        let mut read = tracker.enter(Access::Read, Span::bytes(0, 100));
        assert!(!opens(&mut read).await);
        drop(write);
        assert!(opens(&mut read).await);
    }

    #[tokio::test]
    async fn close_waits_for_every_earlier_request() {
        let mut tracker = Tracker::default();
        let first = tracker.enter(Access::Write, Span::bytes(0, 10));
        let second = tracker.enter(Access::Read, Span::bytes(1000, 10));
        let mut close = tracker.enter(Access::Write, Span::whole());
        drop(first);
        assert!(!opens(&mut close).await);
        drop(second);
        assert!(opens(&mut close).await);
    }

    #[tokio::test]
    async fn later_request_waits_for_close() {
        let mut tracker = Tracker::default();
        let close = tracker.enter(Access::Write, Span::whole());
        let mut read = tracker.enter(Access::Read, Span::bytes(0, 1));
        assert!(!opens(&mut read).await);
        drop(close);
        assert!(opens(&mut read).await);
    }

    #[tokio::test]
    async fn finished_entries_are_pruned() {
        let mut tracker = Tracker::default();
        for _ in 0..1000 {
            drop(tracker.enter(Access::Write, Span::whole()));
        }
        let _gate = tracker.enter(Access::Read, Span::whole());
        assert_eq!(tracker.running(), 1);
        assert_eq!(tracker.running.len(), 1);
    }

    #[tokio::test]
    async fn replies_wait_for_earlier_ones() {
        let mut order = ReplyOrder::default();
        let mut first = order.next();
        let mut second = order.next();
        let mut third = order.next();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first.wait())
                .await
                .is_ok()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), third.wait())
                .await
                .is_err()
        );
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.wait())
                .await
                .is_ok()
        );
        drop(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), third.wait())
                .await
                .is_ok()
        );
    }

    #[test]
    fn span_end_saturates() {
        let span = Span::bytes(u64::MAX - 1, 10);
        assert!(span.overlaps(&Span::bytes(u64::MAX - 1, 1)));
        assert!(!span.overlaps(&Span::bytes(0, u64::MAX - 1)));
    }
}
