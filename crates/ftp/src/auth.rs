//! Password logins: the libunftp authenticator that does every check, and the report of a
//! connection that ended without any attempt.
//!
//! libunftp reports no failed logins and no reliable disconnects, and can refuse a login
//! after its authenticator accepted it. So the authenticator of each connection runs the
//! whole login through [`Logins::login_with_password`] (password, account rules, session
//! limit, home directory) and reports the outcome itself. By the time it returns `Ok`,
//! nothing that libunftp checks afterwards can fail.
//!
//! libunftp accepts `USER` and `PASS` again after every failure, and starts checking a
//! `PASS` that arrives while the previous one is still being checked. The authenticator
//! therefore counts the attempts itself and closes the connection after
//! `max_login_attempts` failures.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use ferry_hooks::{Hooks, LoginEvent, LoginMethod, Protocol};
use ferry_users::{LoginContext, LoginError, Logins};
use tracing::{Instrument, debug, info};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};

use crate::connection::ConnectionState;

/// Reports a connection that closed without any login attempt, exactly once: when the last
/// holder drops it. The connection task and the authenticator hold it, so a `PASS` that
/// libunftp is still checking when the client disconnects counts as an attempt.
pub(crate) struct AttemptTracker {
    hooks: Hooks,
    ip: IpAddr,
    connection_id: String,
    attempted: AtomicBool,
}

impl AttemptTracker {
    pub(crate) fn new(hooks: Hooks, ip: IpAddr, connection_id: &str) -> AttemptTracker {
        AttemptTracker {
            hooks,
            ip,
            connection_id: connection_id.to_owned(),
            attempted: AtomicBool::new(false),
        }
    }

    fn record_attempt(&self) {
        self.attempted.store(true, Ordering::SeqCst);
    }
}

impl Drop for AttemptTracker {
    fn drop(&mut self) {
        if !self.attempted.load(Ordering::SeqCst) {
            self.hooks.login(LoginEvent::no_auth_tried(
                self.ip,
                Protocol::Ftp,
                &self.connection_id,
            ));
        }
    }
}

/// The reply sent before the connection closes after too many failed logins.
const TOO_MANY_ATTEMPTS: &str = "421 Too many failed login attempts, closing control connection.";

/// Checks `USER`/`PASS` for one control connection.
pub(crate) struct PasswordAuthenticator {
    logins: Logins,
    state: Arc<ConnectionState>,
    attempts: Arc<AttemptTracker>,
    max_attempts: u32,
    /// `PASS` commands received, checked or not.
    started: AtomicU32,
    failed: AtomicU32,
}

impl PasswordAuthenticator {
    pub(crate) fn new(
        logins: Logins,
        state: Arc<ConnectionState>,
        attempts: Arc<AttemptTracker>,
        max_attempts: u32,
    ) -> PasswordAuthenticator {
        PasswordAuthenticator {
            logins,
            state,
            attempts,
            max_attempts,
            started: AtomicU32::new(0),
            failed: AtomicU32::new(0),
        }
    }

    /// Counts a failed attempt, and after the last allowed one closes the connection once
    /// libunftp sent its `530` reply. `sent_before` is the control connection's sent-bytes
    /// count from before that reply.
    fn record_failure(&self, sent_before: Option<u64>) {
        let failures = self.failed.fetch_add(1, Ordering::SeqCst) + 1;
        if failures == self.max_attempts {
            info!(
                max_login_attempts = self.max_attempts,
                "too many failed login attempts; closing the connection"
            );
            self.state.close_after_reply(sent_before, TOO_MANY_ATTEMPTS);
        }
    }
}

impl fmt::Debug for PasswordAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordAuthenticator")
            .field("connection_id", &self.state.id)
            .finish()
    }
}

#[async_trait]
impl Authenticator for PasswordAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        credentials: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        self.attempts.record_attempt();
        let span = self.state.span.clone();
        let attempt = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt > self.max_attempts {
            // Only a client that sends PASS again before the reply to the last allowed
            // attempt gets here. The connection is about to close.
            span.in_scope(|| debug!(attempt, "login attempt over the limit; not checked"));
            return Err(AuthenticationError::BadPassword);
        }
        async {
            let context = LoginContext {
                ip: self.state.ip,
                protocol: Protocol::Ftp,
                method: LoginMethod::Password,
            };
            // libunftp passes no password only for a TLS client-certificate login, which
            // this server does not enable.
            let password = credentials.password.as_deref().unwrap_or_default();
            let sent_before = self.state.bytes_sent();
            let outcome = self
                .logins
                .login_with_password(username, password, &context, &self.state.id)
                .await;
            match outcome {
                Ok(session) => {
                    // What libunftp checks after this cannot fail: `DefaultUser` is always
                    // enabled, the storage's `enter` does nothing, and no command holds
                    // the storage before login.
                    self.state.start_session(session);
                    // Recorded once: the span keeps every value recorded on it.
                    self.state.span.record("user", username);
                    self.state
                        .span
                        .record("method", LoginMethod::Password.as_str());
                    Ok(Principal {
                        username: username.to_owned(),
                    })
                }
                Err(error) => {
                    self.record_failure(sent_before);
                    match error {
                        LoginError::InvalidCredentials => Err(AuthenticationError::BadPassword),
                        error => Err(AuthenticationError::new(error.to_string())),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn name(&self) -> &str {
        "ferry-users"
    }
}
