//! The listeners and the accept loop.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_hooks::ProxyMode;
use ferry_users::Logins;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{MethodKind, MethodSet, Preferred, SshId, cipher};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, MethodPolicy};
use crate::connection::{self, Shared};
use crate::{Error, host_keys};

/// Host key and user key signature algorithms, strongest first. `ssh-rsa` signatures use
/// SHA-1 and are left out; RSA keys sign with SHA-256 or SHA-512 instead.
/// Ciphers in order of preference: russh's default list with `aes128-gcm@openssh.com` added.
/// OpenSSH offers it, and a client configured with only that cipher could not connect.
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

const KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

/// Initial window of each channel: what the client may send before it waits for an
/// adjustment. russh grants more as data arrives, so this sets the burst size.
const WINDOW_SIZE: u32 = 8 * 1024 * 1024;
/// Messages queued per channel, and between the session and its channel tasks, before the
/// session stops reading from the socket. Larger queues keep a busy transfer flowing while
/// its task writes to disk.
const QUEUE_SIZE: usize = 256;
/// Time that connections still open when the shutdown grace ended get to close.
const FORCED_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The SSH server: bound listeners, host keys and the shared login machinery.
pub struct Server {
    listeners: Vec<(TcpListener, ProxyMode)>,
    shared: Arc<Shared>,
}

impl Server {
    /// Validates the configuration, loads or generates the host keys and binds every
    /// listener (port 0 picks a free port). Generated keys live under `state_dir/ssh/`.
    pub async fn bind(config: Config, logins: Logins, state_dir: &Path) -> Result<Server, Error> {
        let mut problems = Vec::new();
        config.validate("sftpd", &mut problems);
        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        let policy = config.method_policy().map_err(|name| {
            Error::Config(vec![format!("sftpd.login_methods contains {name:?}")])
        })?;
        let keys = host_keys::load(&config.host_keys, state_dir).await?;
        let ssh = Arc::new(russh_config(&config, &policy, keys));

        let mut listeners = Vec::new();
        for binding in &config.bindings {
            let address = binding.socket_addr().ok_or_else(|| {
                Error::Config(vec![format!("invalid address {:?}", binding.address)])
            })?;
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| Error::Bind { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| Error::Bind { address, source })?;
            info!(protocol = "SSH", address = %local, "listening");
            listeners.push((listener, Config::proxy_mode(binding)));
        }
        Ok(Server {
            listeners,
            shared: Arc::new(Shared {
                logins,
                ssh,
                policy,
                max_auth_tries: config.max_auth_tries,
                login_timeout: config.login_timeout(),
                proxy_allowed: config.proxy_allowed,
            }),
        })
    }

    /// Returns the bound addresses, with the ports the system picked for port 0.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(listener, _)| listener.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and gives open connections
    /// up to `grace` to finish before closing them.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        let connections = TaskTracker::new();
        let force_close = CancellationToken::new();
        let mut accept_loops = tokio::task::JoinSet::new();
        for (listener, proxy_mode) in self.listeners {
            accept_loops.spawn(accept_loop(
                listener,
                proxy_mode,
                Arc::clone(&self.shared),
                connections.clone(),
                shutdown.clone(),
                force_close.clone(),
            ));
        }
        while accept_loops.join_next().await.is_some() {}
        connections.close();

        if !connections.is_empty() {
            info!(
                protocol = "SSH",
                open = connections.len(),
                grace_secs = grace.as_secs(),
                "waiting for open connections to finish"
            );
        }
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            info!(
                protocol = "SSH",
                open = connections.len(),
                "shutdown grace over; closing open connections"
            );
            force_close.cancel();
            if tokio::time::timeout(FORCED_CLOSE_WAIT, connections.wait())
                .await
                .is_err()
            {
                warn!(
                    protocol = "SSH",
                    open = connections.len(),
                    "connections still open after being closed; stopping without them"
                );
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy_mode: ProxyMode,
    shared: Arc<Shared>,
    connections: TaskTracker,
    shutdown: CancellationToken,
    force_close: CancellationToken,
) {
    let address = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection::serve(
                    Arc::clone(&shared),
                    stream,
                    peer,
                    proxy_mode,
                    force_close.clone(),
                ));
            }
            Err(error) => {
                // Running out of file descriptors is the usual cause; accepting again at
                // once would spin.
                warn!(protocol = "SSH", %address, %error, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    info!(protocol = "SSH", %address, "listener stopped");
}

fn russh_config(
    config: &Config,
    policy: &MethodPolicy,
    keys: Vec<russh::keys::PrivateKey>,
) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    for (allowed, kind) in [
        (policy.allows_any_publickey(), MethodKind::PublicKey),
        (
            policy.allows(ferry_hooks::LoginMethod::Password),
            MethodKind::Password,
        ),
        (
            policy.allows(ferry_hooks::LoginMethod::KeyboardInteractive),
            MethodKind::KeyboardInteractive,
        ),
    ] {
        if allowed {
            methods.push(kind);
        }
    }
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed("SSH-2.0-Ferry")),
        methods,
        // The first request of OpenSSH clients is the `none` probe, which is not an attempt
        // and is rejected at once. Every rejection after it takes at least a second, so
        // that the reply time does not tell a wrong password from an unknown user.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        window_size: WINDOW_SIZE,
        channel_buffer_size: QUEUE_SIZE,
        event_buffer_size: QUEUE_SIZE,
        preferred: Preferred {
            key: Cow::Borrowed(KEY_ALGORITHMS),
            cipher: Cow::Borrowed(CIPHERS),
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Preferred::default()
        },
        // Failed attempts are counted and limited by the authenticator, which tells attempts
        // from probes. russh would also count the `none` probe.
        max_auth_attempts: 0,
        inactivity_timeout: config.idle_timeout(),
        nodelay: true,
        ..russh::server::Config::default()
    }
}
