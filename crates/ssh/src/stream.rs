//! A TCP stream that the server can cut off from outside the SSH session task.
//!
//! russh runs each session in a task of its own and offers no way to abort it. A disconnect
//! request through its handle waits behind queued channel data, so a session whose client
//! stopped reading could keep its socket forever. Every read and write of a
//! [`CutoffStream`] fails once its token is cancelled, which wakes the session loop and ends
//! it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(crate) struct CutoffStream<S> {
    inner: S,
    cutoff: Pin<Box<WaitForCancellationFutureOwned>>,
    cut: bool,
}

impl<S> CutoffStream<S> {
    pub(crate) fn new(inner: S, token: CancellationToken) -> CutoffStream<S> {
        CutoffStream {
            inner,
            cutoff: Box::pin(token.cancelled_owned()),
            cut: false,
        }
    }

    /// Returns whether the token was cancelled, registering the task to be woken when it is.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.cut && self.cutoff.as_mut().poll(cx).is_ready() {
            self.cut = true;
        }
        self.cut
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the server",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for CutoffStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CutoffStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pending_read_fails_on_cutoff() {
        let (client, server) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut stream = CutoffStream::new(server, token.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            stream.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        token.cancel();
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        drop(client);
    }

    #[tokio::test]
    async fn data_passes_before_cutoff() {
        let (mut client, server) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut stream = CutoffStream::new(server, token.clone());
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        token.cancel();
        assert!(stream.write_all(b"x").await.is_err());
    }
}
