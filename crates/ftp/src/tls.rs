//! The rustls configuration for explicit FTPS (AUTH TLS), built once when the server binds.
//!
//! Clients such as FileZilla refuse a data connection that does not resume the TLS session of
//! the control connection, so the configuration keeps a server-side session cache (TLS 1.2
//! session ids) and issues session tickets (TLS 1.2 and 1.3). Both are shared by every
//! connection. Resumption is offered, never enforced, so clients that start a fresh session
//! on each data connection (Python's `ftplib.FTP_TLS`) work too.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Sessions kept for TLS 1.2 resumption by session id; the oldest is evicted beyond this.
const SESSION_CACHE_SIZE: usize = 4096;

/// Reads every certificate of a PEM file; fails when there is none.
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(describe_pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(describe_pem_error)?;
    if certificates.is_empty() {
        return Err("no PEM certificate found in the file".into());
    }
    Ok(certificates)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key found in the file".to_owned()
        }
        other => describe_pem_error(other),
    })
}

fn describe_pem_error(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read the file: {io}"),
        other => format!("invalid PEM: {other}"),
    }
}

/// The TLS settings shared by every FTPS connection.
#[derive(Clone)]
pub(crate) struct Tls {
    base: Arc<ServerConfig>,
}

impl Tls {
    /// Loads the certificate chain and key and builds the rustls configuration.
    pub(crate) fn load(certificate_file: &Path, key_file: &Path) -> Result<Tls, Error> {
        let certificates =
            load_certificates(certificate_file).map_err(|reason| Error::Certificate {
                path: certificate_file.to_path_buf(),
                reason,
            })?;
        let key = load_private_key(key_file).map_err(|reason| Error::Certificate {
            path: key_file.to_path_buf(),
            reason,
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(Error::Tls)?;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(Error::Tls)?;
        Ok(Tls {
            base: Arc::new(config),
        })
    }

    /// Returns a configuration for one control connection and its data connections. It shares
    /// the session cache and ticket keys of every other connection, and counts the TLS
    /// handshakes made with it.
    pub(crate) fn for_connection(&self) -> (Arc<ServerConfig>, Arc<HandshakeCounter>) {
        let counter = Arc::new(HandshakeCounter::default());
        let mut config = (*self.base).clone();
        config.key_log = Arc::clone(&counter) as Arc<dyn rustls::KeyLog>;
        config.ticketer = Arc::new(ControlConnectionTickets {
            inner: Arc::clone(&self.base.ticketer),
            handshakes: Arc::clone(&counter),
        });
        (Arc::new(config), counter)
    }
}

/// Issues session tickets on the control connection only.
///
/// A TLS 1.3 server sends its tickets after the handshake. On an upload the client only
/// writes to the data connection, so some clients (rclone, for one) never read
/// the tickets, and closing a socket with unread data sends a TCP reset instead of a FIN,
/// which fails the upload. Clients resume data connections from the control connection's
/// session, so tickets on data connections serve no one. The first handshake of a
/// connection's configuration is the control connection's (AUTH TLS).
#[derive(Debug)]
struct ControlConnectionTickets {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    handshakes: Arc<HandshakeCounter>,
}

impl rustls::server::ProducesTickets for ControlConnectionTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    /// Returns no ticket after the first handshake, which makes rustls skip a TLS 1.3
    /// ticket and send an empty TLS 1.2 one.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        if self.handshakes.count() <= 1 {
            self.inner.encrypt(plain)
        } else {
            None
        }
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner.decrypt(cipher)
    }
}

/// Counts the TLS handshakes of one FTP connection.
///
/// libunftp terminates TLS itself without reporting it to the storage layer, and it
/// enforces a protected data connection only for PASV, not for EPSV. rustls reports every
/// handshake, full or resumed, to the configured key log, once per derived secret with the
/// handshake's client random. This type implements that interface only to count distinct
/// client randoms; it drops the secrets without storing or logging them.
#[derive(Debug, Default)]
pub(crate) struct HandshakeCounter {
    last_client_random: Mutex<Vec<u8>>,
    handshakes: AtomicU64,
}

impl HandshakeCounter {
    /// Returns how many handshakes were made so far.
    pub(crate) fn count(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl rustls::KeyLog for HandshakeCounter {
    fn log(&self, _label: &str, client_random: &[u8], _secret: &[u8]) {
        let mut last = self
            .last_client_random
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.as_slice() != client_random {
            last.clear();
            last.extend_from_slice(client_random);
            self.handshakes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use rustls::KeyLog;

    use super::*;

    #[test]
    fn counter_counts_distinct_client_randoms() {
        let counter = HandshakeCounter::default();
        counter.log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", &[1; 32], &[9; 32]);
        counter.log("SERVER_HANDSHAKE_TRAFFIC_SECRET", &[1; 32], &[9; 32]);
        assert_eq!(counter.count(), 1);
        counter.log("CLIENT_RANDOM", &[2; 32], &[9; 48]);
        assert_eq!(counter.count(), 2);
    }

    #[test]
    fn missing_certificate_file_named() {
        let error = load_certificates(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert!(error.starts_with("cannot read the file"), "{error}");
    }

    #[test]
    fn empty_key_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key\n").unwrap();
        assert_eq!(
            load_private_key(&path).unwrap_err(),
            "no PEM private key found in the file"
        );
    }
}
