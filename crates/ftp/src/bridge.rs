//! Adapters that plug Ferry into libunftp's extension points: its `slog` logging, and the
//! socket binding of passive data ports.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

/// Time a passive listener stays open for the client's data connection. libunftp 0.24 waits
/// 15 seconds for it and then drops its handle; the extra second lets libunftp give up
/// first.
const PASSIVE_LISTEN_TIME: Duration = Duration::from_secs(16);

/// The start of libunftp's message when the accept on a passive listener fails, which is
/// what happens when [`PassiveListener`] closes a listener that is still waiting.
const PASSIVE_ACCEPT_FAILED: &str = "Error waiting for data connection";

/// Returns a libunftp logger that forwards to `tracing` with the connection id attached,
/// because libunftp logs from tasks of its own that carry no tracing span.
///
/// libunftp logs routine events (every command, a client's wrong path) at info and warn,
/// so they are lowered one step: its errors become warnings, its warnings and infos
/// become debug lines, and its debug lines become trace lines. Its messages contain
/// client text such as user names, so control characters in them are escaped.
pub(crate) fn libunftp_logger(connection_id: &str) -> slog::Logger {
    slog::Logger::root(
        TracingDrain {
            connection_id: connection_id.to_owned(),
        },
        slog::o!(),
    )
}

struct TracingDrain {
    connection_id: String,
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _values: &slog::OwnedKVList) -> Result<(), Self::Err> {
        let id = self.connection_id.as_str();
        let message = escape_controls(&record.msg().to_string());
        let level = if message.starts_with(PASSIVE_ACCEPT_FAILED) {
            slog::Level::Info
        } else {
            record.level()
        };
        match level {
            slog::Level::Critical | slog::Level::Error => {
                warn!(target: "ferry_ftp::libunftp", connection_id = id, "{message}");
            }
            slog::Level::Warning | slog::Level::Info => {
                debug!(target: "ferry_ftp::libunftp", connection_id = id, "{message}");
            }
            slog::Level::Debug | slog::Level::Trace => {
                trace!(target: "ferry_ftp::libunftp", connection_id = id, "{message}");
            }
        }
        Ok(())
    }
}

/// Escapes control characters such as CR, LF and NUL, so that text from a client cannot
/// start a new log line or hide part of one.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// The passive data listener of one control connection.
///
/// libunftp waits for the data connection of each PASV or EPSV in a task of its own. That task
/// keeps the listener open for 15 seconds, even after a newer PASV or the end of the control
/// connection, so one client could take every port of the range. The binder therefore keeps
/// a duplicate of each listener here. Shutting the duplicate down makes libunftp's pending
/// accept fail, which ends its task and frees the port.
#[derive(Debug, Default)]
pub(crate) struct PassiveListener {
    current: Mutex<Option<CancellationToken>>,
}

impl PassiveListener {
    /// Tracks a newly bound listener and closes the previous one. The listener is closed
    /// after [`PASSIVE_LISTEN_TIME`] at the latest, whether or not a client connected.
    fn replace(&self, listener: socket2::Socket) {
        let token = CancellationToken::new();
        if let Some(previous) = self.lock().replace(token.clone()) {
            previous.cancel();
        }
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(PASSIVE_LISTEN_TIME) => {}
            }
            if let Err(error) = listener.shutdown(Shutdown::Both) {
                debug!(%error, "passive listener already closed");
            }
        });
    }

    /// Closes the current listener, if any.
    pub(crate) fn close(&self) {
        if let Some(current) = self.lock().take() {
            current.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Binds passive data listeners inside the configured port range, for one control
/// connection.
///
/// libunftp's own binder gives up after nine random ports, so a busy range fails PASV while
/// free ports remain. This one starts at a random port and tries every port of the range
/// once before it reports that none is free.
///
/// libunftp accepts one connection on a passive listener and closes the listener, even
/// when that connection came from another address than the control connection and is
/// then dropped. So each listener gets a socket filter that drops packets from any other
/// address: a third party can no longer take the client's data connection away.
#[derive(Debug)]
pub(crate) struct PassivePortBinder {
    /// The peer address of the control connection, which libunftp also requires of the
    /// data connection. Behind a PROXY protocol load balancer this is the balancer.
    pub(crate) peer_ip: IpAddr,
    pub(crate) listener: Arc<PassiveListener>,
}

#[async_trait]
impl libunftp::options::Binder for PassivePortBinder {
    async fn bind(
        &mut self,
        local_ip: IpAddr,
        ports: RangeInclusive<u16>,
    ) -> io::Result<TcpSocket> {
        let (start, end) = (u32::from(*ports.start()), u32::from(*ports.end()));
        if start > end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("empty passive port range {start}-{end}"),
            ));
        }
        let count = end - start + 1;
        let first = rand::random_range(0..count);
        for step in 0..count {
            let Ok(port) = u16::try_from(start + (first + step) % count) else {
                continue;
            };
            let socket = match local_ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            match socket.bind(SocketAddr::new(local_ip, port)) {
                Ok(()) => {
                    self.track(&socket)?;
                    return Ok(socket);
                }
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => continue,
                Err(error) => return Err(error),
            }
        }
        warn!(%local_ip, start, end, "no free port in the passive port range");
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free port in the passive port range {start}-{end}"),
        ))
    }
}

impl PassivePortBinder {
    /// Filters the new listener's packets by address and hands a duplicate of it to
    /// [`PassiveListener`].
    fn track(&self, socket: &TcpSocket) -> io::Result<()> {
        let socket = socket2::SockRef::from(socket);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(error) = socket.attach_filter(&peer_filter(self.peer_ip)) {
            debug!(%error, "cannot restrict the passive listener to the client's address");
        }
        self.listener.replace(socket.try_clone()?);
        Ok(())
    }
}

/// Builds a classic BPF socket filter that accepts packets from `peer` and drops all
/// others. An accepted data connection inherits the filter, which passes all its packets,
/// since they come from the same peer.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_filter(peer: IpAddr) -> Vec<socket2::SockFilter> {
    use socket2::SockFilter;

    // Instruction codes from linux/filter.h and linux/bpf_common.h.
    const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    // Offsets from SKF_NET_OFF address the network header rather than the TCP segment.
    const NETWORK_HEADER: u32 = (-0x10_0000_i32) as u32;
    const ACCEPT: u32 = u32::MAX;
    const DROP: u32 = 0;

    // The source address of an IPv4 header starts at byte 12, of an IPv6 header at byte 8.
    // A client with an IPv4-mapped address sends IPv4 packets to a dual-stack socket.
    let (offset, words): (u32, Vec<u32>) = match peer.to_canonical() {
        IpAddr::V4(ip) => (12, vec![u32::from(ip)]),
        IpAddr::V6(ip) => (
            8,
            (0..4)
                .map(|i| (u128::from(ip) >> (96 - 32 * i)) as u32)
                .collect(),
        ),
    };
    // Each word is a load and a comparison that jumps to DROP on a mismatch; ACCEPT
    // follows the last comparison.
    let count = words.len();
    let mut program = Vec::with_capacity(2 * count + 2);
    for (i, word) in words.into_iter().enumerate() {
        let load_at = NETWORK_HEADER.wrapping_add(offset + 4 * i as u32);
        let to_drop = u8::try_from(2 * (count - i) - 1).unwrap_or(u8::MAX);
        program.push(SockFilter::new(LOAD_WORD, 0, 0, load_at));
        program.push(SockFilter::new(JUMP_IF_EQUAL, 0, to_drop, word));
    }
    program.push(SockFilter::new(RETURN, 0, 0, ACCEPT));
    program.push(SockFilter::new(RETURN, 0, 0, DROP));
    program
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use libunftp::options::Binder;

    use super::*;

    fn binder() -> PassivePortBinder {
        PassivePortBinder {
            peer_ip: "127.0.0.1".parse().unwrap(),
            listener: Arc::new(PassiveListener::default()),
        }
    }

    #[tokio::test]
    async fn binder_finds_last_free_port() {
        let in_use = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = in_use.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);
        let (low, high) = (port.min(free_port), port.max(free_port));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Every port between the two may be in use by others; only the outcome for the two
        // known ports matters.
        for _ in 0..4 {
            let socket = binder().bind(ip, low..=high).await.unwrap();
            let bound = socket.local_addr().unwrap().port();
            assert_ne!(bound, port, "bound a port that is in use");
            assert!((low..=high).contains(&bound));
        }
    }

    #[tokio::test]
    async fn binder_reports_full_range() {
        let in_use = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = in_use.local_addr().unwrap().port();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let error = binder().bind(ip, port..=port).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    /// Binds and listens on a free port with `binder`, as libunftp does after PASV.
    async fn passive_listener(binder: &mut PassivePortBinder) -> tokio::net::TcpListener {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let socket = binder.bind(ip, 1024..=65535).await.unwrap();
        socket.listen(16).unwrap()
    }

    #[tokio::test]
    async fn listener_drops_other_addresses() {
        let mut binder = binder();
        let listener = passive_listener(&mut binder).await;
        let address = listener.local_addr().unwrap();

        let stranger = TcpSocket::new_v4().unwrap();
        stranger.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let attempt =
            tokio::time::timeout(Duration::from_millis(500), stranger.connect(address)).await;
        assert!(attempt.is_err(), "a connection from 127.0.0.2 was accepted");

        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        drop(accepted);
    }

    #[tokio::test]
    async fn new_listener_closes_previous() {
        let mut binder = binder();
        let first = passive_listener(&mut binder).await;
        let _second = passive_listener(&mut binder).await;
        let accepted = tokio::time::timeout(Duration::from_secs(5), first.accept()).await;
        assert!(
            matches!(accepted, Ok(Err(_))),
            "the first listener is still open: {accepted:?}"
        );
    }

    #[tokio::test]
    async fn close_ends_listener() {
        let mut binder = binder();
        let listener = passive_listener(&mut binder).await;
        binder.listener.close();
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(matches!(accepted, Ok(Err(_))), "{accepted:?}");
    }

    #[test]
    fn controls_escaped() {
        assert_eq!(escape_controls("user a\rb\n\0c"), "user a\\rb\\n\\0c");
        assert_eq!(escape_controls("Grüße /x"), "Grüße /x");
    }
}
