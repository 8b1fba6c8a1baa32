//! Password logins: the libunftp authenticator that does every check, and the report of a
//! connection that ended without any attempt.
//!
//! libunftp reports no failed logins and no reliable disconnects, and can refuse a login
//! after its authenticator accepted it. So the authenticator of each connection runs the
//! whole login through [`Logins::login_with_password`] (password, account rules, session
//! limit, home directory) and reports the outcome itself. By the time it returns `Ok`,
//! nothing that libunftp checks afterwards can fail.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ferry_hooks::{Hooks, LoginEvent, LoginMethod, Protocol};
use ferry_users::{LoginContext, LoginError, Logins};
use tracing::Instrument;
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

/// Checks `USER`/`PASS` for one control connection.
pub(crate) struct PasswordAuthenticator {
    logins: Logins,
    state: Arc<ConnectionState>,
    attempts: Arc<AttemptTracker>,
}

impl PasswordAuthenticator {
    pub(crate) fn new(
        logins: Logins,
        state: Arc<ConnectionState>,
        attempts: Arc<AttemptTracker>,
    ) -> PasswordAuthenticator {
        PasswordAuthenticator {
            logins,
            state,
            attempts,
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
        span.record("user", username);
        span.record("method", LoginMethod::Password.as_str());
        async {
            let context = LoginContext {
                ip: self.state.ip,
                protocol: Protocol::Ftp,
                method: LoginMethod::Password,
            };
            // libunftp passes no password only for a TLS client-certificate login, which
            // this server does not enable.
            let password = credentials.password.as_deref().unwrap_or_default();
            match self
                .logins
                .login_with_password(username, password, &context, &self.state.id)
                .await
            {
                Ok(session) => {
                    // What libunftp checks after this cannot fail: `DefaultUser` is always
                    // enabled, the storage's `enter` does nothing, and no command holds
                    // the storage before login.
                    self.state.start_session(session);
                    Ok(Principal {
                        username: username.to_owned(),
                    })
                }
                Err(LoginError::InvalidCredentials) => Err(AuthenticationError::BadPassword),
                Err(error) => Err(AuthenticationError::new(error.to_string())),
            }
        }
        .instrument(span)
        .await
    }

    fn name(&self) -> &str {
        "ferry-users"
    }
}
