//! Limits on what a client may send on the control connection, enforced from outside
//! libunftp.
//!
//! libunftp reads the control connection itself and buffers a command line until it reads
//! `\n`, with no limit, so a client that never sends a newline grows the server's memory
//! without bound. Ferry cannot see the bytes before libunftp does: `Server::service` takes
//! the `TcpStream` itself, and after `AUTH TLS` the bytes are encrypted anyway. What the
//! kernel does show are the connection's byte counters (`TCP_INFO`): bytes received from the
//! client and bytes sent to it. libunftp replies to every command line it parses, so the bytes
//! a client sent since the server last replied bound the length of the line libunftp is
//! still buffering. [`CommandLineGuard`] closes the connection when that count passes
//! [`MAX_COMMAND_LINE_BYTES`].

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::TcpStream;
use tracing::debug;

/// Bytes a client may send on the control connection without getting a reply. RFC 959
/// command lines are short. The longest a client sends in practice contains one path of up
/// to 4096 bytes (Linux's `PATH_MAX`). The count includes TLS record overhead after `AUTH TLS`,
/// and may include the previous command line when the guard observed both at once.
pub(crate) const MAX_COMMAND_LINE_BYTES: u64 = 8192;

/// Time between two looks at the sent-bytes counter while waiting for a reply.
const REPLY_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The byte counters of one TCP connection, from `TCP_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpCounters {
    /// Bytes received from the peer, in order (`tcpi_bytes_received`).
    pub(crate) received: u64,
    /// Bytes sent to the peer, retransmissions included (`tcpi_bytes_sent`, Linux 5.5 and
    /// later).
    pub(crate) sent: u64,
}

/// Reads the byte counters of a TCP socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn tcp_counters(socket: &impl AsFd) -> io::Result<TcpCounters> {
    use std::os::fd::AsRawFd;

    // SAFETY: `tcp_info` contains only integers, so all zero bytes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which lives until the call returns.
    // The kernel writes at most `len` bytes and stores the length it wrote in `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_sent) + size_of::<u64>();
    if (len as usize) < needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("TCP_INFO of {len} bytes has no tcpi_bytes_sent; Linux 5.5 or later has it"),
        ));
    }
    Ok(TcpCounters {
        received: info.tcpi_bytes_received,
        sent: info.tcpi_bytes_sent,
    })
}

/// Reads the byte counters of a TCP socket; this system offers none.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn tcp_counters(_socket: &impl AsFd) -> io::Result<TcpCounters> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP byte counters are read only on Linux",
    ))
}

/// Waits until the server sent more than `sent_before` bytes on the connection, which shows
/// that a reply went out, or until `timeout` passed. Returns whether a reply went out.
pub(crate) async fn wait_for_reply(
    socket: &impl AsFd,
    sent_before: u64,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match tcp_counters(socket) {
            Ok(counters) if counters.sent > sent_before => return true,
            Ok(_) => {}
            Err(error) => {
                debug!(%error, "cannot read the control connection's byte counters");
                return false;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(REPLY_POLL_INTERVAL).await;
    }
}

/// Counts the bytes a client sends on the control connection without getting a reply.
///
/// It keeps a second registration of the control socket with the runtime, as
/// [`crate::connection::ControlWatch`] does, and reads the counters each time new bytes
/// arrive. It never reads from the socket.
pub(crate) struct CommandLineGuard {
    /// `None` when the socket or its counters are not available; the guard then waits
    /// forever.
    socket: Option<TcpStream>,
    tally: ReplyTally,
}

impl CommandLineGuard {
    /// Starts counting from the bytes the connection has received so far, such as a PROXY
    /// protocol header.
    pub(crate) fn new(control: &socket2::Socket) -> CommandLineGuard {
        let registered = control
            .try_clone()
            .and_then(|socket| TcpStream::from_std(socket.into()))
            .and_then(|socket| tcp_counters(&socket).map(|counters| (socket, counters)));
        match registered {
            Ok((socket, counters)) => CommandLineGuard {
                socket: Some(socket),
                tally: ReplyTally::new(counters),
            },
            Err(error) => {
                debug!(%error, "command line length not enforced on this connection");
                CommandLineGuard {
                    socket: None,
                    tally: ReplyTally::new(TcpCounters {
                        received: 0,
                        sent: 0,
                    }),
                }
            }
        }
    }

    /// Resolves with the count of unanswered bytes once it passes
    /// [`MAX_COMMAND_LINE_BYTES`]. Once the client closed its side, it never resolves.
    ///
    /// # Cancel safety
    /// Cancel safe: the counts live in `self`, and readiness that arrived before a cancel
    /// is still seen by the next call.
    pub(crate) async fn exceeded(&mut self) -> u64 {
        let Some(socket) = &self.socket else {
            return std::future::pending().await;
        };
        loop {
            let ready = match socket.ready(Interest::READABLE).await {
                Ok(ready) => ready,
                Err(error) => {
                    debug!(%error, "cannot watch the control connection");
                    return std::future::pending().await;
                }
            };
            if ready.is_read_closed() {
                // The readiness stays set after the client's FIN, so waiting again would
                // spin; libunftp reads to the end and closes the connection.
                return std::future::pending().await;
            }
            // Clear the readiness before reading the counters, so that bytes arriving
            // meanwhile wake the next wait.
            let _ = socket.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            let counters = match tcp_counters(socket) {
                Ok(counters) => counters,
                Err(error) => {
                    debug!(%error, "cannot read the control connection's byte counters");
                    return std::future::pending().await;
                }
            };
            let unanswered = self.tally.observe(counters);
            if unanswered > MAX_COMMAND_LINE_BYTES {
                return unanswered;
            }
        }
    }
}

/// The bytes received since the server last replied, from successive readings of the
/// connection's counters.
#[derive(Debug)]
struct ReplyTally {
    last: TcpCounters,
    /// Bytes received before the server's latest reply.
    answered: u64,
}

impl ReplyTally {
    fn new(start: TcpCounters) -> ReplyTally {
        ReplyTally {
            last: start,
            answered: start.received,
        }
    }

    /// Takes a new reading and returns the bytes received that no reply followed yet.
    ///
    /// When the server sent something since the previous reading, a command line ended
    /// before the reply. The bytes received up to the previous reading count as replied to.
    /// The bytes that came after it may belong to a line that is still open, so they stay
    /// counted.
    fn observe(&mut self, now: TcpCounters) -> u64 {
        if now.sent != self.last.sent {
            self.answered = self.last.received;
        }
        self.last = now;
        now.received.saturating_sub(self.answered)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn counters(received: u64, sent: u64) -> TcpCounters {
        TcpCounters { received, sent }
    }

    #[test]
    fn tally_grows_without_reply() {
        let mut tally = ReplyTally::new(counters(0, 0));
        assert_eq!(tally.observe(counters(1000, 30)), 1000);
        assert_eq!(tally.observe(counters(5000, 30)), 5000);
        assert_eq!(tally.observe(counters(9000, 30)), 9000);
    }

    #[test]
    fn tally_keeps_only_bytes_after_reply() {
        let mut tally = ReplyTally::new(counters(20, 0));
        // USER arrives; the greeting went out before it.
        assert_eq!(tally.observe(counters(32, 30)), 12);
        // PASS arrives after the reply to USER.
        assert_eq!(tally.observe(counters(50, 60)), 18);
        // PWD arrives after the reply to PASS.
        assert_eq!(tally.observe(counters(55, 90)), 5);
    }

    #[test]
    fn tally_counts_line_after_answered_command() {
        let mut tally = ReplyTally::new(counters(0, 30));
        // A command and the start of an endless line arrive together.
        assert_eq!(tally.observe(counters(4000, 30)), 4000);
        // The reply to the command went out; the open line keeps growing.
        assert_eq!(tally.observe(counters(7000, 60)), 3000);
        assert_eq!(tally.observe(counters(12000, 60)), 8000);
    }

    #[tokio::test]
    async fn counters_follow_traffic() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0; 5];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"hi").await.unwrap();
        let counters = tcp_counters(&server).unwrap();
        assert_eq!(counters.received, 5);
        assert_eq!(counters.sent, 2);
    }
}
