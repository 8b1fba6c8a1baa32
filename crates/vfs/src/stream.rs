//! Tokio streams over open files that apply the user's bandwidth limits and quota.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::bandwidth::RateLimit;
use crate::quota::Charge;

/// A tokio file that waits for the user's bandwidth limits and reserves quota for the bytes
/// it writes, returned by [`FileReader::into_stream`](crate::FileReader::into_stream) and
/// [`FileWriter::stream`](crate::FileWriter::stream).
///
/// A limited stream lets each read or write through at once and then waits for the bytes it
/// passed before the next read, write, flush or shutdown, so the last bytes of a transfer are
/// waited for too. A write that would pass the quota fails with an `io::Error` that
/// `VfsError::from` turns into [`VfsError::QuotaExceeded`](crate::VfsError::QuotaExceeded).
pub struct FileStream {
    file: tokio::fs::File,
    read_limit: Option<Arc<RateLimit>>,
    write_limit: Option<Arc<RateLimit>>,
    charge: Option<Arc<Charge>>,
    /// The file offset of the next write; kept only while a quota applies. In append mode it
    /// starts at the end of the file.
    position: u64,
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

    /// Waits for the bytes of the previous read or write.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        Poll::Ready(())
    }

    fn start_wait(&mut self, limit: Option<&Arc<RateLimit>>, bytes: usize) {
        let Some(limit) = limit else { return };
        let wait = limit.reserve(bytes as u64);
        if wait > Duration::ZERO {
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
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
        ready!(this.poll_wait(cx));
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.file).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        let limit = this.read_limit.clone();
        this.start_wait(limit.as_ref(), read);
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
        ready!(this.poll_wait(cx));
        if let Some(charge) = &this.charge {
            // The reservation covers the whole buffer; a repeated poll for the same buffer
            // reserves nothing more because the position moves only once bytes are accepted.
            if charge
                .write_until(this.position.saturating_add(buf.len() as u64))
                .is_err()
            {
                return Poll::Ready(Err(crate::VfsError::quota_io_error()));
            }
        }
        let written = ready!(Pin::new(&mut this.file).poll_write(cx, buf))?;
        if this.charge.is_some() {
            this.position = this.position.saturating_add(written as u64);
        }
        let limit = this.write_limit.clone();
        this.start_wait(limit.as_ref(), written);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_wait(cx));
        Pin::new(&mut this.file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_wait(cx));
        Pin::new(&mut this.file).poll_shutdown(cx)
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
