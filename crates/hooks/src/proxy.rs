//! The PROXY protocol (HAProxy, versions 1 and 2) in front of SSH and FTP listeners, so that
//! events and bans see the real client address behind a TCP load balancer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::canonical_ip;

/// Whether a listener expects a PROXY protocol header (`proxy_protocol` in a binding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// Setting 0: no header is read; the TCP peer is the client.
    #[default]
    Off,
    /// Setting 1: a header from an allowed proxy is used when present.
    Optional,
    /// Setting 2: every connection must come from an allowed proxy with a header.
    Required,
}

impl ProxyMode {
    pub fn from_setting(value: u8) -> Option<ProxyMode> {
        match value {
            0 => Some(ProxyMode::Off),
            1 => Some(ProxyMode::Optional),
            2 => Some(ProxyMode::Required),
            _ => None,
        }
    }
}

/// Why a connection was closed while reading its PROXY header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("PROXY header required but the peer {0} is not in proxy_allowed")]
    UntrustedPeer(IpAddr),
    #[error("PROXY header sent by {0}, which is not in proxy_allowed")]
    UntrustedHeader(IpAddr),
    #[error("PROXY header required but none arrived")]
    Missing,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("failed to read the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// How long a required header may take to arrive. Proxies send it at once, so this only
/// bounds a peer that connects and stays silent.
const REQUIRED_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for an optional header from an allowed proxy. An FTP client talks only
/// after the server's greeting, so a direct FTP client from an allowed address waits this long.
const OPTIONAL_WAIT: Duration = Duration::from_millis(500);
/// A version 2 header with TLVs can be longer than this, but no proxy in common use sends
/// more; a longer header is rejected rather than buffered.
const MAX_HEADER: usize = 1024;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the PROXY header at the start of `stream` as `mode` and `allowed` say, consumes it,
/// and returns the client's address: the header's source address, or the TCP peer when there
/// is no header (or a `LOCAL` version 2 header from a health check).
pub async fn read_client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    mode: ProxyMode,
    allowed: &[IpNet],
) -> Result<SocketAddr, ProxyError> {
    if mode == ProxyMode::Off {
        return Ok(peer);
    }
    let peer_ip = canonical_ip(peer.ip());
    let trusted = allowed.iter().any(|net| net.contains(&peer_ip));
    if mode == ProxyMode::Required && !trusted {
        return Err(ProxyError::UntrustedPeer(peer_ip));
    }
    let wait = match (mode, trusted) {
        (ProxyMode::Required, _) => REQUIRED_WAIT,
        (_, true) => OPTIONAL_WAIT,
        // An untrusted peer only gets a look at what already arrived, so that a header it
        // sent right away is rejected without delaying ordinary clients.
        (_, false) => Duration::ZERO,
    };

    let mut buf = vec![0u8; MAX_HEADER];
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = 0;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(result) => result?,
            Err(_) => seen,
        };
        let data = &buf[..peeked];
        if !could_be_header(data) {
            return match mode {
                ProxyMode::Required => Err(ProxyError::Missing),
                _ => Ok(peer),
            };
        }
        if !trusted {
            return Err(ProxyError::UntrustedHeader(peer_ip));
        }
        match parse(data) {
            Parsed::Complete { len, source } => {
                stream.read_exact(&mut buf[..len]).await?;
                return Ok(source.unwrap_or(peer));
            }
            Parsed::Invalid(reason) => return Err(ProxyError::Invalid(reason)),
            Parsed::Incomplete if peeked >= MAX_HEADER => {
                return Err(ProxyError::Invalid(format!(
                    "header longer than {MAX_HEADER} bytes"
                )));
            }
            Parsed::Incomplete if peeked == seen && tokio::time::Instant::now() >= deadline => {
                return match (peeked, mode) {
                    // A silent client, such as an FTP client waiting for the greeting.
                    (0, ProxyMode::Optional) => Ok(peer),
                    (0, _) => Err(ProxyError::Missing),
                    _ => Err(ProxyError::Invalid("incomplete header".into())),
                };
            }
            Parsed::Incomplete => {
                if peeked == seen {
                    // Nothing new arrived; peek again after a short pause rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = peeked;
            }
        }
    }
}

/// Returns whether `data` (possibly empty) is the start of a version 1 or 2 header.
fn could_be_header(data: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        let n = data.len().min(prefix.len());
        data[..n] == prefix[..n]
    };
    starts(V1_PREFIX) || starts(V2_SIGNATURE)
}

enum Parsed {
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    Incomplete,
    Invalid(String),
}

fn parse(data: &[u8]) -> Parsed {
    use ppp::PartialResult;

    if data.is_empty() {
        return Parsed::Incomplete;
    }
    let result = ppp::HeaderResult::parse(data);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        ppp::HeaderResult::V1(Ok(header)) => {
            let source = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Complete {
                len: header.header.len(),
                source,
            }
        }
        ppp::HeaderResult::V2(Ok(header)) => {
            let source = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, _) => None,
            };
            Parsed::Complete {
                len: header.len(),
                source,
            }
        }
        ppp::HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("{e:?}")),
        ppp::HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("{e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn connect(first_bytes: &'static [u8]) -> (TcpStream, SocketAddr, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(first_bytes).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (server, peer, client)
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[tokio::test]
    async fn v1_header_consumed() {
        let (mut server, peer, _c) =
            connect(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 22\r\nSSH-2.0-x\r\n").await;
        let addr = read_client_address(&mut server, peer, ProxyMode::Required, &loopback())
            .await
            .unwrap();
        assert_eq!(addr, "203.0.113.7:40000".parse().unwrap());
        let mut rest = [0u8; 9];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"SSH-2.0-x");
    }

    #[tokio::test]
    async fn v2_header_consumed() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 21,
        ]);
        header.extend(b"USER x");
        let bytes: &'static [u8] = Box::leak(header.into_boxed_slice());
        let (mut server, peer, _c) = connect(bytes).await;
        let addr = read_client_address(&mut server, peer, ProxyMode::Optional, &loopback())
            .await
            .unwrap();
        assert_eq!(addr, "198.51.100.9:40000".parse().unwrap());
        let mut rest = [0u8; 6];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"USER x");
    }

    #[tokio::test]
    async fn optional_without_header_uses_peer() {
        let (mut server, peer, _c) = connect(b"SSH-2.0-x\r\n").await;
        let addr = read_client_address(&mut server, peer, ProxyMode::Optional, &loopback())
            .await
            .unwrap();
        assert_eq!(addr, peer);
    }

    #[tokio::test]
    async fn optional_silent_client_uses_peer() {
        let (mut server, peer, _c) = connect(b"").await;
        let addr = read_client_address(&mut server, peer, ProxyMode::Optional, &loopback())
            .await
            .unwrap();
        assert_eq!(addr, peer);
    }

    #[tokio::test]
    async fn required_from_untrusted_peer_rejected() {
        let (mut server, peer, _c) =
            connect(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 22\r\n").await;
        let err = read_client_address(&mut server, peer, ProxyMode::Required, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::UntrustedPeer(_)), "{err}");
    }

    #[tokio::test]
    async fn optional_header_from_untrusted_peer_rejected() {
        let (mut server, peer, _c) =
            connect(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 22\r\n").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = read_client_address(&mut server, peer, ProxyMode::Optional, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::UntrustedHeader(_)), "{err}");
    }

    #[tokio::test]
    async fn required_but_silent_peer_rejected() {
        let (mut server, peer, _c) = connect(b"").await;
        let err = read_client_address(&mut server, peer, ProxyMode::Required, &loopback())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Missing), "{err}");
    }

    #[tokio::test]
    async fn garbage_header_rejected() {
        let (mut server, peer, _c) = connect(b"PROXY NONSENSE\r\n").await;
        let err = read_client_address(&mut server, peer, ProxyMode::Required, &loopback())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Invalid(_)), "{err}");
    }
}
