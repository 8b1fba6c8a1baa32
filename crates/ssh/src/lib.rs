//! SSH server: authentication, the SFTP subsystem and SCP. (Being built.)

pub mod sftp;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// One address to listen on.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub address: String,
    pub port: u16,
}

/// The `[sftpd]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bindings: Vec<Binding>,
}

impl Default for Config {
    fn default() -> Self {
        Config { bindings: vec![Binding { address: "127.0.0.1".into(), port: 2022 }] }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, _base: &Path) {}
    pub fn validate(&self, _section: &str, _errors: &mut Vec<String>) {}
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the SSH server is not built yet")]
    NotBuilt,
}

pub struct Server {
    addrs: Vec<SocketAddr>,
}

impl Server {
    pub async fn bind(_config: Config, _logins: ferry_users::Logins, _state_dir: &Path) -> Result<Server, Error> {
        Err(Error::NotBuilt)
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    pub async fn serve(self, shutdown: CancellationToken, _grace: Duration) {
        shutdown.cancelled().await;
    }
}
