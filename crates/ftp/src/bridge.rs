//! Adapters that plug Ferry into libunftp's extension points: its `slog` logging, and the
//! socket binding of passive data ports.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use async_trait::async_trait;
use tokio::net::TcpSocket;
use tracing::{debug, trace, warn};

/// Returns a libunftp logger that forwards to `tracing` with the connection id attached,
/// because libunftp logs from tasks of its own that carry no tracing span.
///
/// libunftp logs routine events (every command, a client's wrong path) at info and warn,
/// so they are lowered one step: its errors become warnings, its warnings and infos
/// become debug lines, and its debug lines become trace lines.
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
        let message = record.msg();
        match record.level() {
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

/// Binds passive data listeners inside the configured port range.
///
/// libunftp's own binder gives up after nine random ports, so a busy range fails PASV while
/// free ports remain. This one starts at a random port and tries every port of the range
/// once before it reports that none is free.
#[derive(Debug)]
pub(crate) struct PassivePortBinder;

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
                Ok(()) => return Ok(socket),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use libunftp::options::Binder;

    use super::*;

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
            let socket = PassivePortBinder.bind(ip, low..=high).await.unwrap();
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
        let error = PassivePortBinder.bind(ip, port..=port).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }
}
