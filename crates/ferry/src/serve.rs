//! `ferry serve`: start every enabled service, handle signals, shut down in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_hooks::Hooks;
use ferry_users::{Logins, UserStore};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config;

/// Time given to queued post-login events after the services stopped.
const HOOK_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let validated = config::load(config_path)?;
    // libunftp, reqwest and russh all use rustls; pin one provider for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(validated))
}

async fn serve(validated: config::Validated) -> anyhow::Result<()> {
    let config = &validated.config;
    let grace = validated.shutdown_timeout();
    std::fs::create_dir_all(&config.common.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.common.state_dir.display()
        )
    })?;

    let users = Arc::new(UserStore::load(&config.data_provider.users_file)?);
    let hooks = Hooks::new(validated.hooks.clone(), &config.httpclient)?;
    let logins = Logins::new(Arc::clone(&users), hooks.clone(), config.common.upload_mode);

    let shutdown = CancellationToken::new();
    let mut services = JoinSet::new();
    let mut started = Vec::new();
    let proxy_allowed: Vec<_> = config
        .common
        .proxy_allowed
        .iter()
        .filter_map(|s| ferry_hooks::parse_net(s))
        .collect();
    if !config.sftpd.bindings.is_empty() {
        let mut sftpd = config.sftpd.clone();
        sftpd.proxy_allowed = proxy_allowed.clone();
        let server = ferry_ssh::Server::bind(sftpd, logins.clone(), &config.common.state_dir)
            .await
            .context("cannot start the SSH service")?;
        services.spawn(server.serve(shutdown.clone(), grace));
        started.push("SSH");
    }
    if !config.ftpd.bindings.is_empty() {
        let mut ftpd = config.ftpd.clone();
        ftpd.proxy_allowed = proxy_allowed.clone();
        let server = ferry_ftp::Server::bind(ftpd, logins.clone())
            .await
            .context("cannot start the FTP service")?;
        services.spawn(server.serve(shutdown.clone(), grace));
        started.push("FTP");
    }
    if !config.webdavd.bindings.is_empty() {
        let server = ferry_dav::Server::bind(config.webdavd.clone(), logins.clone())
            .await
            .context("cannot start the WebDAV service")?;
        services.spawn(server.serve(shutdown.clone(), grace));
        started.push("DAV");
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %validated.path.display(),
        users = users.len(),
        services = %started.join(","),
        "ferry started"
    );
    if started.is_empty() {
        warn!("no service has bindings; nothing to serve until one is configured");
    }

    wait_for_stop(&users).await?;
    info!(
        grace_secs = grace.as_secs(),
        "shutting down; open connections may finish"
    );
    shutdown.cancel();
    while let Some(result) = services.join_next().await {
        if let Err(e) = result {
            error!(error = %e, "a service task failed during shutdown");
        }
    }
    hooks.shutdown(HOOK_FLUSH_TIMEOUT).await;
    info!("ferry stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM, reloading the users file on every SIGHUP meanwhile.
async fn wait_for_stop(users: &UserStore) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => { info!(signal = "SIGINT", "stop requested"); return Ok(()); }
            _ = terminate.recv() => { info!(signal = "SIGTERM", "stop requested"); return Ok(()); }
            _ = hangup.recv() => match users.reload() {
                Ok(count) => info!(users = count, file = %users.path().display(), "users file reloaded"),
                Err(e) => error!(error = %e, "users file not reloaded; the previous users stay in effect"),
            },
        }
    }
}
