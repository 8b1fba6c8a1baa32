//! The russh handler of one connection: authentication callbacks, session channels, and the
//! rejection of everything this server does not offer (shells, forwarding, agents, X11).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug};

use crate::auth::{Authenticator, TooManyFailures};
use crate::channel;

/// Session channels one connection may have open at once. A channel's slot is released when
/// its task ends, whether the client or the server closed it.
const MAX_CHANNELS: usize = 10;

/// The reason a session ended from inside the handler.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    #[error("too many failed authentication attempts")]
    TooManyFailures,
}

impl From<TooManyFailures> for SessionError {
    fn from(_: TooManyFailures) -> Self {
        SessionError::TooManyFailures
    }
}

pub(crate) struct Handler {
    auth: Authenticator,
    span: Span,
    connection_id: String,
    /// Cancelled when the server cuts the connection off; channel tasks stop then.
    cutoff: CancellationToken,
    /// Session channels whose tasks are running, shared with those tasks.
    channels: Arc<Mutex<Channels>>,
    /// Memory limits shared by the SFTP sessions of this connection.
    sftp_budget: crate::sftp::ConnectionBudget,
}

/// The session channels of one connection.
#[derive(Default)]
struct Channels {
    /// Open channels, each mapped to whether it already received an `exec`, `shell` or
    /// `subsystem` request.
    open: HashMap<ChannelId, bool>,
}

/// A session channel's entry in [`Channels`], removed when the channel's task ends.
struct ChannelSlot {
    id: ChannelId,
    channels: Arc<Mutex<Channels>>,
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        lock(&self.channels).open.remove(&self.id);
    }
}

fn lock(channels: &Mutex<Channels>) -> std::sync::MutexGuard<'_, Channels> {
    // The table is updated in single statements, so a poisoned lock still holds valid data.
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Handler {
    pub(crate) fn new(
        auth: Authenticator,
        span: Span,
        connection_id: String,
        cutoff: CancellationToken,
    ) -> Handler {
        Handler {
            auth,
            span,
            connection_id,
            cutoff,
            channels: Arc::default(),
            sftp_budget: crate::sftp::ConnectionBudget::new(),
        }
    }

    /// Accepts the first program request on a channel and rejects any later one, because a
    /// session channel runs one program.
    fn start_request(
        &mut self,
        id: ChannelId,
        kind: &str,
        session: &mut Session,
    ) -> Result<bool, SessionError> {
        let _span = self.span.enter();
        let first = match lock(&self.channels).open.get_mut(&id) {
            Some(started) => !std::mem::replace(started, true),
            None => false,
        };
        if !first {
            debug!(
                channel = id.number(),
                kind, "second program request on a channel rejected"
            );
            session.channel_failure(id)?;
            return Ok(false);
        }
        session.channel_success(id)?;
        Ok(true)
    }
}

impl russh::server::Handler for Handler {
    type Error = SessionError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        let _entered = span.enter();
        Ok(self.auth.none(user)?)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        Ok(self.auth.password(user, password).instrument(span).await?)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        let _entered = span.enter();
        Ok(self
            .auth
            .publickey_offered(user, offer.public_key, offer.algorithm)?)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        Ok(self
            .auth
            .publickey_verified(user, key.public_key)
            .instrument(span)
            .await?)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        let _entered = span.enter();
        Ok(self.auth.certificate(user, certificate)?)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let span = self.span.clone();
        let auth = match response {
            None => {
                let _entered = span.enter();
                self.auth.keyboard_interactive_start(user)?
            }
            Some(response) => {
                self.auth
                    .keyboard_interactive_answer(user, response)
                    .instrument(span)
                    .await?
            }
        };
        Ok(auth)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let span = self.span.clone();
        let Some(vfs) = self.auth.session().map(|s| s.vfs.clone()) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let id = channel.id();
        let open = {
            let mut channels = lock(&self.channels);
            let open = channels.open.len();
            if open < MAX_CHANNELS {
                channels.open.insert(id, false);
            }
            open
        };
        if open >= MAX_CHANNELS {
            debug!(parent: &span, open, "session channel rejected: too many open");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let slot = ChannelSlot {
            id,
            channels: Arc::clone(&self.channels),
        };
        reply.accept().await;
        debug!(parent: &span, channel = id.number(), "session channel opened");
        let task = channel::run(
            channel,
            vfs,
            self.connection_id.clone(),
            self.cutoff.clone(),
            self.sftp_budget.clone(),
        );
        tokio::spawn(
            async move {
                task.await;
                debug!(channel = id.number(), "channel task ended (tmp)");
                // The slot is released however the channel ended: closed by the client, by
                // the server after its program finished, or cut off with the connection.
                drop(slot);
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel task receives the command itself and runs or rejects it.
        self.start_request(channel, "exec", session)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, "shell", session)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, "subsystem", session)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(parent: &self.span, channel = channel.number(), "pseudo-terminal request rejected");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(parent: &self.span, channel = channel.number(), "X11 forwarding rejected");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(parent: &self.span, channel = channel.number(), variable_name, "environment variable ignored");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        debug!(parent: &self.span, channel = channel.number(), "agent forwarding rejected");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        debug!(parent: &self.span, address, port = *port, "remote port forwarding rejected");
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        debug!(parent: &self.span, socket_path, "remote socket forwarding rejected");
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(parent: &self.span, host_to_connect, port_to_connect, "local port forwarding rejected");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(parent: &self.span, socket_path, "local socket forwarding rejected");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}
