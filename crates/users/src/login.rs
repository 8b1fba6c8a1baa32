//! The login steps every protocol shares once a credential has been checked.

use std::sync::Arc;

use ferry_hooks::{Hooks, LoginEvent};
use ferry_vfs::{UploadMode, Vfs, VfsError};

use crate::{Denied, LoginContext, SessionGuard, User, UserStore};

/// Why a login failed. Clients are told only that it failed; the reason is logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("{0}")]
    Denied(#[from] Denied),
    #[error("cannot open home directory: {0}")]
    Home(VfsError),
}

/// A logged-in user: the account, their file view, and the counted session.
pub struct Session {
    pub user: Arc<User>,
    pub vfs: Vfs,
    _guard: SessionGuard,
}

/// Users plus hooks: turns verified credentials into sessions and reports each outcome.
#[derive(Clone)]
pub struct Logins {
    store: Arc<UserStore>,
    hooks: Hooks,
    upload_mode: UploadMode,
}

impl Logins {
    pub fn new(store: Arc<UserStore>, hooks: Hooks, upload_mode: UploadMode) -> Logins {
        Logins {
            store,
            hooks,
            upload_mode,
        }
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Applies the account rules to a verified user, counts the session and opens the home
    /// directory (creating it when missing) with the user's quota and bandwidth limits. The
    /// first session of a user with a quota computes the quota usage first. Reports no
    /// event; see [`Logins::report`].
    pub async fn open_session(
        &self,
        user: Arc<User>,
        context: &LoginContext,
    ) -> Result<Session, LoginError> {
        if self.hooks.is_banned(context.ip) {
            return Err(Denied::AddressBanned.into());
        }
        self.store.authorize(&user, context)?;
        let guard = self.store.open_session(&user)?;
        let vfs = Vfs::open_with_limits(
            &user.home_dir,
            user.permissions.clone(),
            self.upload_mode,
            guard.limits().clone(),
        )
        .await
        .map_err(|error| {
            tracing::error!(
                user = %user.username, home = %user.home_dir.display(), %error,
                "cannot open home directory"
            );
            LoginError::Home(error)
        })?;
        Ok(Session {
            user,
            vfs,
            _guard: guard,
        })
    }

    /// Checks a password and opens the session, then reports the outcome as one event.
    pub async fn login_with_password(
        &self,
        username: &str,
        password: &str,
        context: &LoginContext,
        connection_id: &str,
    ) -> Result<Session, LoginError> {
        let result = match self.store.verify_password(username, password).await {
            Some(user) => self.open_session(user, context).await,
            None => Err(LoginError::InvalidCredentials),
        };
        self.report(username, context, connection_id, result.as_ref().err());
        result
    }

    /// Reports one login outcome: the log line, and the post-login hook event. A failure's
    /// reason goes to the debug log only for invalid credentials, which are common.
    pub fn report(
        &self,
        username: &str,
        context: &LoginContext,
        connection_id: &str,
        error: Option<&LoginError>,
    ) {
        if let Some(error) = error
            && !matches!(error, LoginError::InvalidCredentials)
        {
            tracing::info!(
                protocol = %context.protocol, ip = %context.ip, user = username,
                method = %context.method, connection_id, reason = %error,
                "login refused after the credentials were verified"
            );
        }
        self.hooks.login(LoginEvent {
            username: username.to_owned(),
            ip: context.ip,
            method: context.method,
            success: error.is_none(),
            protocol: context.protocol,
            connection_id: connection_id.to_owned(),
        });
    }
}
