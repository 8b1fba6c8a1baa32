//! Host keys: loaded from the configured files, or generated once under the state directory.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};
use tracing::{info, warn};

use crate::Error;

/// Size of generated RSA host keys, in bits.
const RSA_BITS: usize = 3072;

/// The keys generated when no host key is configured, with their file names under
/// `<state_dir>/ssh/`.
const GENERATED: [(&str, Algorithm); 3] = [
    ("ssh_host_ed25519_key", Algorithm::Ed25519),
    (
        "ssh_host_ecdsa_key",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    ),
    ("ssh_host_rsa_key", Algorithm::Rsa { hash: None }),
];

/// Loads the configured host keys, or when there are none, loads the generated keys under
/// `state_dir`, generating those that do not exist yet.
pub(crate) async fn load(
    configured: &[PathBuf],
    state_dir: &Path,
) -> Result<Vec<PrivateKey>, Error> {
    let configured = configured.to_vec();
    let state_dir = state_dir.to_path_buf();
    // RSA key generation takes a noticeable time; keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        if configured.is_empty() {
            load_generated(&state_dir)
        } else {
            configured.iter().map(|path| load_file(path)).collect()
        }
    })
    .await
    .map_err(|e| Error::HostKey {
        path: PathBuf::new(),
        reason: format!("host key task failed: {e}"),
    })?
}

fn load_generated(state_dir: &Path) -> Result<Vec<PrivateKey>, Error> {
    let dir = state_dir.join("ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::HostKey {
            path: dir.clone(),
            reason: format!("cannot create the host key folder: {e}"),
        })?;
    let mut keys = Vec::new();
    for (name, algorithm) in GENERATED {
        let path = dir.join(name);
        let key = if path.exists() {
            load_file(&path)?
        } else {
            generate(&path, algorithm)?
        };
        keys.push(key);
    }
    Ok(keys)
}

fn load_file(path: &Path) -> Result<PrivateKey, Error> {
    let error = |reason: String| Error::HostKey {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => {
            error("the key is encrypted; host keys must have no passphrase".into())
        }
        other => error(format!("not a private key in OpenSSH or PEM form: {other}")),
    })?;
    check_mode(path);
    info!(
        path = %path.display(),
        algorithm = %key.algorithm(),
        fingerprint = %key.public_key().fingerprint(HashAlg::Sha256),
        "host key loaded"
    );
    Ok(key)
}

/// Warns when a key file can be read by other users.
fn check_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "host key file is accessible to other users; run chmod 600 on it"
        );
    }
}

fn generate(path: &Path, algorithm: Algorithm) -> Result<PrivateKey, Error> {
    let error = |reason: String| Error::HostKey {
        path: path.to_path_buf(),
        reason,
    };
    let mut rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
    let key = match &algorithm {
        Algorithm::Rsa { .. } => RsaKeypair::random(&mut rng, RSA_BITS)
            .map(KeypairData::from)
            .and_then(|pair| PrivateKey::new(pair, "")),
        other => PrivateKey::random(&mut rng, other.clone()),
    }
    .map_err(|e| error(format!("cannot generate a {algorithm} key: {e}")))?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| error(format!("cannot encode the key: {e}")))?;
    write_new(path, pem.as_bytes(), 0o600).map_err(|e| error(format!("cannot write: {e}")))?;
    if let Ok(public) = key.public_key().to_openssh() {
        let public_path = path.with_extension("pub");
        if let Err(e) = write_new(&public_path, format!("{public}\n").as_bytes(), 0o644) {
            warn!(path = %public_path.display(), error = %e, "cannot write the public host key");
        }
    }
    info!(
        path = %path.display(),
        algorithm = %key.algorithm(),
        fingerprint = %key.public_key().fingerprint(HashAlg::Sha256),
        "host key generated"
    );
    Ok(key)
}

/// Writes a file that must not exist yet, with `mode`, through a temporary name so that a
/// crash never leaves a truncated key behind.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_once_then_reused() {
        let state = tempfile::tempdir().unwrap();
        let first = load(&[], state.path()).await.unwrap();
        let algorithms: Vec<String> = first.iter().map(|k| k.algorithm().to_string()).collect();
        assert_eq!(
            algorithms,
            ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
        );
        let rsa_bits = match first[2].key_data() {
            KeypairData::Rsa(pair) => pair.public().n().as_positive_bytes().map(|b| b.len() * 8),
            _ => None,
        };
        assert_eq!(rsa_bits, Some(RSA_BITS));

        use std::os::unix::fs::PermissionsExt;
        for (name, _) in GENERATED {
            let mode = std::fs::metadata(state.path().join("ssh").join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        let second = load(&[], state.path()).await.unwrap();
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.public_key(), b.public_key());
        }
    }

    #[tokio::test]
    async fn unreadable_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing_key");
        let err = load(std::slice::from_ref(&missing), dir.path())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing_key"), "{err}");
    }

    #[tokio::test]
    async fn garbage_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage_key");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = load(std::slice::from_ref(&path), dir.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("garbage_key"), "{text}");
        assert!(text.contains("not a private key"), "{text}");
    }
}
