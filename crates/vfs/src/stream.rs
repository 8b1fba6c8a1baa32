//! Tokio streams over open files that apply the user's bandwidth limits and quota.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::bandwidth::RateLimit;
use crate::quota::Charge;

/// A tokio file that waits for the user's bandwidth limits and reserves quota for the bytes
/// it writes, returned by [`FileReader::into_stream`](crate::FileReader::into_stream) and
/// [`FileWriter::stream`](crate::FileWriter::stream).
///
/// Under a limit, each read or write takes at most one chunk of the limit's bucket and waits
/// until those bytes may pass before it touches the file. A read that returns fewer bytes
/// puts the rest back. A write that would pass the quota fails with an `io::Error` that
/// `VfsError::from` turns into [`VfsError::QuotaExceeded`](crate::VfsError::QuotaExceeded).
pub struct FileStream {
    file: tokio::fs::File,
    read_limit: Option<Arc<RateLimit>>,
    write_limit: Option<Arc<RateLimit>>,
    charge: Option<Arc<Charge>>,
    /// The file offset of the next write; kept only while a quota applies. In append mode it
    /// starts at the end of the file.
    position: u64,
    /// Bytes taken from a bucket for the read or write in progress, which may have to be
    /// polled again.
    reserved: Option<usize>,
    wait: Option<Pin<Box<Sleep>>>,
}

impl FileStream {
    pub(crate) fn new(file: tokio::fs::File) -> FileStream {
        FileStream {
            file,
            read_limit: None,
            write_limit: None,
            charge: None,
            position: 0,
            reserved: None,
            wait: None,
        }
    }

    pub(crate) fn read_limit(mut self, limit: Option<Arc<RateLimit>>) -> FileStream {
        self.read_limit = limit;
        self
    }

    pub(crate) fn write_limit(mut self, limit: Option<Arc<RateLimit>>) -> FileStream {
        self.write_limit = limit;
        self
    }

    /// Reserves quota through `charge` for every write; `position` is the file offset where
    /// the next write lands.
    pub(crate) fn charge(mut self, charge: Option<Arc<Charge>>, position: u64) -> FileStream {
        self.charge = charge;
        self.position = position;
        self
    }

    /// Takes up to `wanted` bytes (at most one chunk) from `limit` unless the operation in
    /// progress already did, and returns the bytes taken.
    fn reserve(&mut self, limit: &RateLimit, wanted: usize) -> usize {
        if let Some(reserved) = self.reserved {
            return reserved;
        }
        let reserved = wanted.min(limit.chunk_size());
        let wait = limit.reserve(reserved as u64);
        if !wait.is_zero() {
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
        self.reserved = Some(reserved);
        reserved
    }

    /// Waits until the bytes taken may pass.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        Poll::Ready(())
    }

    /// Ends the operation in progress and puts back the bytes taken that did not pass.
    fn settle(&mut self, limit: &RateLimit, passed: usize) {
        if let Some(reserved) = self.reserved.take() {
            limit.refund(reserved.saturating_sub(passed) as u64);
        }
    }

    /// Reserves quota for writing `len` bytes at the current position.
    fn charge_write(&self, len: usize) -> io::Result<()> {
        match &self.charge {
            // A repeated poll for the same bytes reserves nothing more, because the position
            // moves only once bytes are accepted.
            Some(charge) => charge
                .write_until(self.position.saturating_add(len as u64))
                .map_err(|_| crate::VfsError::quota_io_error()),
            None => Ok(()),
        }
    }
}

impl AsyncRead for FileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(limit) = this.read_limit.clone() else {
            return Pin::new(&mut this.file).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let reserved = this.reserve(&limit, buf.remaining());
        ready!(this.poll_wait(cx));
        // The file gets a buffer of the reserved size, so it cannot read more than was paid.
        let (result, read) = {
            let space = buf.initialize_unfilled_to(reserved.min(buf.remaining()));
            let mut part = ReadBuf::new(space);
            let result = ready!(Pin::new(&mut this.file).poll_read(cx, &mut part));
            let read = part.filled().len();
            (result, read)
        };
        this.settle(&limit, read);
        result?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(limit) = this.write_limit.clone() else {
            this.charge_write(buf.len())?;
            let written = ready!(Pin::new(&mut this.file).poll_write(cx, buf))?;
            this.position = this.position.saturating_add(written as u64);
            return Poll::Ready(Ok(written));
        };
        if buf.is_empty() {
            return Pin::new(&mut this.file).poll_write(cx, buf);
        }
        let len = buf.len().min(limit.chunk_size());
        if let Err(error) = this.charge_write(len) {
            this.settle(&limit, 0);
            return Poll::Ready(Err(error));
        }
        let reserved = this.reserve(&limit, len);
        ready!(this.poll_wait(cx));
        let part = buf.get(..reserved.min(buf.len())).unwrap_or(buf);
        let result = ready!(Pin::new(&mut this.file).poll_write(cx, part));
        let written = *result.as_ref().unwrap_or(&0);
        this.settle(&limit, written);
        this.position = this.position.saturating_add(written as u64);
        Poll::Ready(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for FileStream {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let position = ready!(Pin::new(&mut this.file).poll_complete(cx))?;
        this.position = position;
        Poll::Ready(Ok(position))
    }
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream")
            .field("read_limited", &self.read_limit.is_some())
            .field("write_limited", &self.write_limit.is_some())
            .field("quota", &self.charge.is_some())
            .finish()
    }
}
