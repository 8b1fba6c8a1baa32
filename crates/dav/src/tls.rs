//! The TLS configuration of HTTPS bindings.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Loads the certificate chain and its key, and builds the server configuration. HTTP/2 and
/// HTTP/1.1 are offered through ALPN. The aws-lc-rs provider is named here rather than taken
/// from the process default, so the result does not depend on which provider another crate
/// installed first.
pub(crate) fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, Error> {
    let cert_pem = read(cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(cert_file, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(certificate_error(
            cert_file,
            "no CERTIFICATE block found".into(),
        ));
    }

    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| certificate_error(key_file, format!("no usable private key: {e}")))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| certificate_error(cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            certificate_error(
                key_file,
                format!("does not match {}: {e}", cert_file.display()),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| certificate_error(path, e.to_string()))
}

fn certificate_error(path: &Path, reason: String) -> Error {
    Error::Certificate {
        path: path.to_path_buf(),
        reason,
    }
}
